"""The streaming loader: samples read from disk (or a table, or a dataset object) by DataLoader workers.

A split of a file-backed dataset is a :class:`Samples` object instead of a tensor: it holds only what locates
each sample (relative file names in a NumPy byte array, a memory-mapped Hugging Face table, a dataset object),
and its :meth:`Samples.read` decodes one sample. Labels stay in memory (one int64 per sample); images never do,
so host memory does not grow with the dataset (the file names aside: about 30 bytes a sample).

:class:`StreamLoader` presents the interface of :class:`~lstsd.data.loader.MemoryLoader` (``epoch``, ``get``,
``num_samples``, ``len``, ``augment``, ``y``, ``rank`` / ``world_size``), so the trainer and every method run on
it unchanged:

- each epoch's order is the in-memory loader's: a permutation drawn from the (seed, epoch) generator, every
  index once, the last partial batch kept, each global batch cut into ``world_size`` consecutive shards;
- ``dataset.num_workers`` processes decode and transform the samples of this rank's shards, batch by batch, in
  order; the batch is copied to the device as it is stored (uint8 pixels), then normalised there;
- the random draws of a sample's transforms come from a seed of its own, a hash of (seed, epoch, index), so an
  epoch's batches do not depend on the number of workers, and a run resumed inside an epoch
  (``epoch(epoch, start_step)``) gets exactly the batches the uninterrupted run got;
- when the training transforms are the pad-crop-flip of the in-memory path (``RandomCrop(size, padding=p)``
  and ``RandomHorizontalFlip()`` on images of that size), the workers only decode and the crop and flip run on
  the device with the in-memory loader's draws: both loaders then give the same batches, bit for bit.

Before training, :func:`check_samples` reads every file's header (``dataset.verify=header``), decodes every
file (``decode``) or trusts them (``none``); a file that fails stops the run with one line naming it
(``dataset.on_corrupt=error``), or is left out with a warning (``skip``). A file that fails later, while
training, stops the run naming the file (exit code 1).
"""
from __future__ import annotations

import io
import logging
import os
import random
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from lstsd.data.loader import Batch, EpochOrder, Splits, crop_flip, crop_flip_params, epoch_generator, pad_crop_flip
from lstsd.errors import ConfigError, TrainingError, one_line

log = logging.getLogger(__name__)

MASK = 2**64 - 1


def sample_seed(base: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` from an epoch's ``base`` (SplitMix64's finaliser: neighbouring
    indices get unrelated seeds)."""
    z = (base + (index + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return (z ^ (z >> 31)) >> 1


class UnreadableSample(Exception):
    """A sample that cannot be read or decoded; ``where`` names it (a file, a table row, a dataset item)."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = where, problem


# --------------------------------------------------------------------------- decoding
def to_uint8(x: Tensor) -> Tensor:
    if x.dtype == torch.uint8:
        return x
    from torchvision.transforms.v2 import functional as TF

    return TF.to_dtype(x, torch.uint8, scale=True)


JPEG = b"\xff\xd8\xff"


def pillow_problem(e: Exception) -> str:
    """Why Pillow could not read an image, in a few words."""
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):
        return "is not an image (Pillow cannot identify its format)"
    if isinstance(e, OSError) and e.strerror:
        return f"cannot be read ({e.strerror})"
    return f"is not a readable image ({type(e).__name__}: {one_line(e)})"


def decode(data, channels: Optional[int], where: str) -> Tensor:
    """An encoded image (a file path, or its bytes) as a uint8 ``C x H x W`` tensor; ``channels`` 3 (RGB), 1
    (grey) or None (as stored). JPEG files are decoded by torchvision's ``decode_image`` (libjpeg-turbo), every
    other format (PNG, BMP, GIF, TIFF, WebP, ...) by Pillow, as torchvision's ImageFolder does: torchvision's
    PNG decoder can crash the process on a damaged file, where Pillow raises an error. :class:`UnreadableSample`
    naming ``where`` if the image cannot be read or decoded."""
    try:
        if isinstance(data, str):
            with open(data, "rb") as f:
                data = f.read()
    except OSError as e:
        raise UnreadableSample(where, f"cannot be read ({e.strerror or e})") from None
    if bytes(data[:3]) == JPEG:
        from torchvision.io import ImageReadMode, decode_image

        mode = {3: ImageReadMode.RGB, 1: ImageReadMode.GRAY, None: ImageReadMode.UNCHANGED}[channels]
        try:
            return to_uint8(decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode))
        except RuntimeError:
            pass  # a JPEG libjpeg-turbo refuses (a rare colour space, damage): Pillow decides
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert({3: "RGB", 1: "L"}[channels]) if channels else image
            x = TF.pil_to_tensor(image)
    except Exception as e:  # noqa: BLE001 - Pillow's parsers raise many kinds on damaged files
        raise UnreadableSample(where, pillow_problem(e).replace("is not a readable image", "cannot be decoded")) \
            from None
    return to_uint8(x[None] if x.dim() == 2 else x)


def verify_header(data, where: str) -> None:
    """Pillow's cheap check of an encoded image: the header, and the chunks' checksums of a PNG; no pixels are
    decoded. :class:`UnreadableSample` if it fails."""
    from PIL import Image

    try:
        with Image.open(data if isinstance(data, str) else io.BytesIO(data)) as image:
            image.verify()
    except Exception as e:  # noqa: BLE001 - Pillow's parsers raise many kinds on damaged files
        raise UnreadableSample(where, pillow_problem(e)) from None


def as_tensor(x, where: str) -> Tensor:
    """A dataset object's input (a PIL image, a NumPy array, a tensor) as a tensor; images ``C x H x W``."""
    if isinstance(x, Tensor):
        return x
    try:
        from PIL import Image

        if isinstance(x, Image.Image):
            from torchvision.transforms.v2 import functional as TF

            return TF.pil_to_tensor(x)
        arr = np.asarray(x)
        if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[-1] in (1, 3, 4) and arr.shape[0] not in (1, 3, 4):
            arr = arr.transpose(2, 0, 1)  # an H x W x C image
        elif arr.dtype == np.uint8 and arr.ndim == 2:
            arr = arr[None]  # a grey H x W image
        return torch.as_tensor(np.ascontiguousarray(arr))
    except Exception as e:  # noqa: BLE001 - an input of a type no tensor can be made of
        raise UnreadableSample(where, f"its input ({type(x).__name__}) is not an image, array or tensor "
                                      f"({type(e).__name__}: {one_line(e)})") from None


# --------------------------------------------------------------------------- samples
class Samples:
    """A split's inputs, read one at a time. Indexed by a tensor of positions (a validation split carved from
    it, :func:`lstsd.data.loader.carve_validation`) it gives a :class:`Subset`, read lazily as well."""

    encoded = False  # whether encoded_data(i) gives the encoded bytes or file of sample i (the header check)

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, i: int) -> Tensor:
        """Sample ``i``, decoded; :class:`UnreadableSample` naming it if it cannot be."""
        raise NotImplementedError

    def where(self, i: int) -> str:
        """Sample ``i``'s name in messages: its file, its row."""
        return f"sample {i}"

    def encoded_data(self, i: int):
        raise NotImplementedError

    def __getitem__(self, index) -> "Samples":
        return Subset(self, np.asarray(index.cpu() if isinstance(index, Tensor) else index, dtype=np.int64))


class Subset(Samples):
    def __init__(self, base: Samples, index: np.ndarray):
        if isinstance(base, Subset):
            base, index = base.base, base.index[index]
        self.base, self.index = base, index
        self.encoded = base.encoded

    def __len__(self) -> int:
        return len(self.index)

    def read(self, i: int) -> Tensor:
        return self.base.read(int(self.index[i]))

    def where(self, i: int) -> str:
        return self.base.where(int(self.index[i]))

    def encoded_data(self, i: int):
        return self.base.encoded_data(int(self.index[i]))


class ImageFiles(Samples):
    """Image files under ``folder``, by relative name (a NumPy byte-string array: shared by the forked
    workers without a copy, unlike a list of Python strings)."""

    encoded = True

    def __init__(self, folder: str, names: np.ndarray, channels: Optional[int] = 3):
        self.folder, self.names, self.channels = folder, names, channels

    def __len__(self) -> int:
        return len(self.names)

    def path(self, i: int) -> str:
        return os.path.join(self.folder, os.fsdecode(self.names[i]))

    def read(self, i: int) -> Tensor:
        path = self.path(i)
        return decode(path, self.channels, path)

    def where(self, i: int) -> str:
        return self.path(i)

    def encoded_data(self, i: int):
        return self.path(i)


class TableImages(Samples):
    """An image column of a Hugging Face ``datasets.Dataset`` (memory-mapped Arrow files): the encoded bytes of
    row ``i`` (or the file it names), decoded here."""

    encoded = True

    def __init__(self, table, column: str, channels: Optional[int], label: str):
        import datasets

        self.table = table.select_columns([column]).cast_column(column, datasets.Image(decode=False))
        self.column, self.channels, self.label = column, channels, label

    def __len__(self) -> int:
        return len(self.table)

    def where(self, i: int) -> str:
        return f"{self.label}, row {i} (column {self.column})"

    def encoded_data(self, i: int):
        cell = self.table[int(i)][self.column]
        if cell is None or (cell.get("bytes") is None and not cell.get("path")):
            raise UnreadableSample(self.where(i), "holds no image")
        return cell["bytes"] if cell.get("bytes") is not None else cell["path"]

    def read(self, i: int) -> Tensor:
        return decode(self.encoded_data(i), self.channels, self.where(i))


class ObjectSamples(Samples):
    """The inputs of a dataset object (``dataset[i] -> (input, label)``, torchvision's interface)."""

    def __init__(self, dataset, label: str):
        self.dataset, self.label = dataset, label

    def __len__(self) -> int:
        return len(self.dataset)

    def where(self, i: int) -> str:
        return f"{self.label}[{i}]"

    def read(self, i: int) -> Tensor:
        try:
            item = self.dataset[int(i)]
        except Exception as e:  # noqa: BLE001 - whatever the dataset's own reading raises
            raise UnreadableSample(self.where(i), f"cannot be read ({type(e).__name__}: {one_line(e)})") from None
        return as_tensor(item[0], self.where(i))


class ArraySamples(Samples):
    """Rows of an array or tensor already in memory (the streaming loader on an in-memory dataset)."""

    def __init__(self, x):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def read(self, i: int) -> Tensor:
        return torch.as_tensor(self.x[int(i)])


def as_samples(x) -> Samples:
    return x if isinstance(x, Samples) else ArraySamples(x)


# --------------------------------------------------------------------------- workers
class Failure:
    """A batch that could not be read: the worker hands back the message instead of raising, so that the run
    stops with one line naming the sample (DataLoader re-raises worker exceptions with their traceback)."""

    def __init__(self, message: str):
        self.message = message


class Reader(torch.utils.data.Dataset):
    """What each worker runs: read a batch of samples, transform each with its own seed, stack them."""

    def __init__(self, samples: Samples, transform: Optional[Callable]):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def one(self, i: int, base: Optional[int]) -> Tensor:
        x = self.samples.read(i)
        if self.transform is not None:
            if base is not None:  # the transforms draw from torch's and Python's generators: seeded per sample
                seed = sample_seed(base, i)
                torch.default_generator.manual_seed(seed)  # the CPU generator only (torch.manual_seed: 50x slower)
                random.seed(seed)
            x = self.transform(x)
        return x

    def __getitems__(self, keys: list) -> object:
        xs = []
        try:
            for i, base in keys:
                xs.append(self.one(i, base))
        except UnreadableSample as e:
            return Failure(f"dataset: {e.where} {e.problem}")
        except Exception as e:  # noqa: BLE001 - a transform that refuses its input
            i = keys[len(xs)][0]
            return Failure(f"dataset: the transforms failed on {self.samples.where(i)} "
                           f"({type(e).__name__}: {one_line(e)})")
        shapes = {tuple(x.shape) for x in xs}
        if len(shapes) > 1:
            first = xs[0].shape
            k = next(k for k, x in enumerate(xs) if x.shape != first)
            return Failure(f"dataset: samples of different shapes in one batch ({self.samples.where(keys[0][0])}: "
                           f"{'x'.join(map(str, first))}, {self.samples.where(keys[k][0])}: "
                           f"{'x'.join(map(str, xs[k].shape))}): give the transforms a fixed output size "
                           f"(Resize + CenterCrop, RandomResizedCrop)")
        return torch.stack(xs), torch.tensor([i for i, _ in keys])


def keep(batch):
    return batch  # __getitems__ already made the batch: the DataLoader's collate_fn hands it on


class Plan:
    """The batch sampler of one epoch on one rank: this rank's shards from ``start_step`` on, as lists of
    (index, seed base) keys, made lazily (no list of the whole epoch)."""

    def __init__(self, loader: "EpochOrder", order: Tensor, start_step: int, base: Optional[int]):
        self.loader, self.order, self.start_step, self.base = loader, order, start_step, base

    def __iter__(self):
        for positions in self.loader.shards(self.start_step):
            yield [(i, self.base) for i in self.order[positions].tolist()]

    def __len__(self) -> int:
        return max(0, len(self.loader) - self.start_step)


def read_batches(samples: Samples, batches, num_workers: int, transform: Optional[Callable] = None,
                 seed: int = 0, pin_memory: bool = False) -> Iterator:
    """``(x, index)`` of each batch of keys, read by ``num_workers`` processes (in the calling process when 0,
    its random generators left as they were); TrainingError naming the sample that could not be read."""
    loader = torch.utils.data.DataLoader(
        Reader(samples, transform), batch_sampler=batches, num_workers=num_workers, collate_fn=keep,
        pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed))  # no draw from the global one
    it = iter(loader)
    while True:
        if num_workers == 0:  # per-sample seeding would move the run's own generators: save and restore them
            states = torch.get_rng_state(), random.getstate()
        try:
            batch = next(it, None)
        finally:
            if num_workers == 0:
                torch.set_rng_state(states[0])
                random.setstate(states[1])
        if batch is None:
            return
        if isinstance(batch, Failure):
            raise TrainingError(batch.message)
        yield batch


# --------------------------------------------------------------------------- checks before training
class Check(torch.utils.data.Dataset):
    def __init__(self, samples: Samples, how: str):
        self.samples, self.how = samples, how

    def __len__(self) -> int:
        return len(self.samples)

    def __getitems__(self, keys: list) -> list:
        problems = []
        for i in keys:
            try:
                if self.how == "header" and self.samples.encoded:
                    verify_header(self.samples.encoded_data(i), self.samples.where(i))
                else:
                    self.samples.read(i)
            except UnreadableSample as e:
                problems.append((i, e.where, e.problem))
        return problems


class Chunks:
    """Batches of consecutive indices ``[0, n)``, ``size`` at a time, made as they are asked for."""

    def __init__(self, n: int, size: int):
        self.n, self.size = n, size

    def __iter__(self):
        for start in range(0, self.n, self.size):
            yield list(range(start, min(start + self.size, self.n)))

    def __len__(self) -> int:
        return -(-self.n // self.size)


def check_samples(samples: Samples, how: str, on_corrupt: str, key: str, num_workers: int = 0) -> Samples:
    """The samples that can be read, by ``how`` (header, decode, none). A bad one raises ConfigError naming it
    (``on_corrupt=error``), or is left out with a warning (``skip``; the others keep their order)."""
    if how == "none" or not len(samples):
        return samples
    n = len(samples)
    chunk = 64
    batches = Chunks(n, chunk)
    workers = num_workers if n > 4 * chunk else 0  # a small folder is checked faster than workers start
    loader = torch.utils.data.DataLoader(Check(samples, how), batch_sampler=batches, num_workers=workers,
                                         collate_fn=keep, generator=torch.Generator().manual_seed(0))
    bad = [p for problems in loader for p in problems]
    if not bad:
        return samples
    if on_corrupt == "error":
        i, where, problem = bad[0]
        more = f" ({len(bad) - 1} more unreadable)" if len(bad) > 1 else ""
        raise ConfigError(f"{key}: {where} {problem}{more}: remove it, or set dataset.on_corrupt=skip to leave "
                          f"unreadable images out with a warning")
    for i, where, problem in bad[:10]:
        log.warning(f"dataset: left out {where}: it {problem}")
    if len(bad) > 10:
        log.warning(f"dataset: left out {len(bad) - 10} more unreadable images")
    drop = np.zeros(n, dtype=bool)
    drop[[i for i, _, _ in bad]] = True
    if drop.all():
        raise ConfigError(f"{key}: none of its {n} images can be read (the first: {bad[0][1]} {bad[0][2]})")
    return samples[np.flatnonzero(~drop)]


def materialise(samples: Samples, num_workers: int, key: str) -> Tensor:
    """Every sample read into one tensor (the in-memory loaders on a file-backed split); they must share a
    shape. ConfigError naming the sample that cannot be read or does not fit."""
    n = len(samples)
    batches = [[(i, None) for i in range(s, min(s + 256, n))] for s in range(0, n, 256)]
    out, first = None, None
    try:
        for x, index in read_batches(samples, batches, num_workers if n > 1024 else 0):
            if out is None:
                out, first = torch.empty((n, *x.shape[1:]), dtype=x.dtype), int(index[0])
            elif x.shape[1:] != out.shape[1:]:
                raise TrainingError(f"dataset: samples of different shapes ({samples.where(first)}: "
                                    f"{'x'.join(map(str, out.shape[1:]))}, a sample of the batch from "
                                    f"{samples.where(int(index[0]))}: {'x'.join(map(str, x.shape[1:]))})")
            out[index] = x
    except TrainingError as e:
        message = f"{key}: {str(e).removeprefix('dataset: ')}"
        if "different shapes" in message:
            message = (message.split(": give ")[0] + ": dataset.loader=memory and torchvision keep the images as "
                       "decoded, in one tensor; use dataset.loader=stream with transforms that give one size")
        raise ConfigError(message) from None
    return out


# --------------------------------------------------------------------------- the loader
class StreamLoader(EpochOrder):
    """The in-memory loader's interface over :class:`Samples` read by ``num_workers`` DataLoader processes (see
    the module docstring). ``y`` is on the training device; batches are normalised there."""

    def __init__(self, name: str, splits: Splits, batch_size: int, device, augment: bool, shuffle: bool,
                 seed: int, channels_last: bool = False, rank: int = 0, world_size: int = 1, num_workers: int = 2):
        x, y = splits.sets[name]
        self.samples = as_samples(x)
        self.device = torch.device(device)
        self.y = y.to(self.device)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.fast = augment and splits.augment == "crop_flip"  # the pad-crop-flip, on the device
        self.augment = self.fast or (augment and splits.augment == "transforms")
        self.pad = splits.pad
        self.transform = splits.train_transform if self.augment and not self.fast else splits.eval_transform
        self.random = self.augment and not self.fast  # per-sample seeded transforms
        self.channels_last = channels_last
        self.norm = None
        if splits.mean is not None:
            try:
                stored = self.samples.read(0).dtype
            except UnreadableSample as e:
                raise ConfigError(f"dataset: {e.where} {e.problem}") from None
            # stored integers (uint8 pixels) are in units of splits.scale; a transform that made them float
            # (v2.ToDtype(torch.float32, scale=True)) put them in [0, 1]
            self.integer_stored = not stored.is_floating_point
            mean, std = (torch.tensor(v, dtype=torch.float32, device=self.device) for v in (splits.mean, splits.std))
            self.norm = {scale: (mean * scale, std * scale) for scale in {splits.scale, 1.0}}
            self.scale = splits.scale

    def batch(self, index: Tensor, x: Tensor, params=None) -> Batch:
        x = x.to(self.device, non_blocking=x.is_pinned())
        if params is not None:
            x = crop_flip(x, *params, self.pad)
        if self.norm is not None:
            scale = 1.0 if self.integer_stored and x.is_floating_point() else self.scale
            mean, std = self.norm[scale]
            shape = (1, -1) + (1,) * (x.dim() - 2)
            x = (x.float() - mean.view(shape)) / std.view(shape)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return Batch(x, self.y[index.to(self.y.device)], index.to(self.y.device))

    def get(self, index: Tensor, generator: Optional[torch.Generator]) -> Batch:
        """The samples ``index``, read in this process, augmented with draws from ``generator`` when training
        (with the in-memory loader's crop and flip on the fast path), normalised."""
        cpu = index.cpu()
        base = int(torch.randint(2**62, (1,), generator=generator)) if self.random else None
        keys = [[(i, base) for i in cpu.tolist()]]
        x, _ = next(read_batches(self.samples, keys, 0, self.transform))
        if self.fast:
            x = pad_crop_flip(x.to(self.device), generator, self.pad)
        return self.batch(cpu, x)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """The epoch's batches from batch ``start_step`` on: the same batches whether the run was resumed
        inside the epoch or not, for any number of workers."""
        g = epoch_generator(self.seed, epoch)
        order = self.order(g)
        params = crop_flip_params(self.num_samples, g, self.pad) if self.fast else None
        base = int(torch.randint(2**62, (1,), generator=g)) if self.random else None
        plan = Plan(self, order, start_step, base)
        batches = read_batches(self.samples, plan, self.num_workers, self.transform,
                               seed=int(torch.randint(2**62, (1,), generator=g)),
                               pin_memory=self.device.type == "cuda")
        for positions, (x, index) in zip(self.shards(start_step), batches):
            yield self.batch(index, x, None if params is None else [p[positions] for p in params])

    @property
    def input_shape(self) -> tuple:
        """The shape of one training input, as the model sees it (after the transforms)."""
        index = torch.zeros(1, dtype=torch.long)
        return tuple(self.get(index, torch.Generator().manual_seed(0)).x.shape[1:])
