"""The loaders: the device-resident one (default), the torchvision DataLoader one (the reference) and the
streaming one (:mod:`lstsd.data.loaders.stream`: samples read from disk by worker processes).

:class:`MemoryLoader` serves every dataset that fits in memory (digits, synthetic, CIFAR).

The split is kept as one tensor on the training device in its stored dtype (uint8 images stay uint8). Each
epoch draws its order and its augmentation from a generator seeded by (seed, epoch) alone, so an epoch is the
same whether the run was resumed or not, and the last partial batch is kept: every index appears exactly once
per epoch. Augmentation is the standard CIFAR one (zero-pad 4, random crop, horizontal flip with p = 0.5),
applied to the stored pixels before normalisation as torchvision's pipeline does.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lstsd.data.types import Batch, Splits
from lstsd.data.workers import check_workers

log = logging.getLogger(__name__)


def carve_validation(splits: Splits, fraction: float, split_seed: int) -> Splits:
    """Move a reproducible ``fraction`` of the training split to ``val``; the rest keeps its order."""
    if fraction <= 0:
        return splits
    x, y = splits.sets["train"]
    n_val = max(1, int(round(fraction * len(y))))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    val, train = perm[:n_val].sort().values, perm[n_val:].sort().values
    # tensors and lazily read samples (lstsd.data.samples.Samples) are indexed by a tensor; lists of sentences
    take = (lambda idx: x[idx]) if not isinstance(x, list) else (lambda idx: [x[i] for i in idx.tolist()])
    return replace(splits, sets=dict(splits.sets, train=(take(train), y[train]), val=(take(val), y[val])))


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A generator determined by (seed, epoch); other ``stream`` values give independent ones."""
    state = np.random.SeedSequence([seed, epoch, stream] if stream else [seed, epoch]).generate_state(
        1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def crop_flip_params(n: int, generator: torch.Generator, pad: int = 4) -> tuple[Tensor, Tensor, Tensor]:
    """Offsets (row, column), each uniform over the 2 * pad + 1 positions, and flips with p = 0.5 for ``n``
    images: the distribution of torchvision's ``RandomCrop(size, padding=pad)`` + ``RandomHorizontalFlip()``."""
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return oy, ox, flip


def crop_flip(x: Tensor, oy: Tensor, ox: Tensor, flip: Tensor, pad: int = 4) -> Tensor:
    """Image i of ``x`` zero-padded by ``pad``, cropped back to its size at (oy[i], ox[i]) and flipped
    horizontally where flip[i]: one gather for the whole batch, on the batch's device."""
    n, c, h, w = x.shape
    dev = x.device
    oy, ox, flip = oy.to(dev), ox.to(dev), flip.to(dev)
    rows = oy[:, None] + torch.arange(h, device=dev)
    cols = ox[:, None] + torch.arange(w, device=dev)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    padded = F.pad(x, (pad, pad, pad, pad))
    return padded[
        torch.arange(n, device=dev)[:, None, None, None],
        torch.arange(c, device=dev)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def pad_crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Random ``pad``-pixel zero-padded crop of the input size and a horizontal flip with p = 0.5."""
    return crop_flip(x, *crop_flip_params(len(x), generator, pad), pad)


class EpochOrder:
    """What every loader shares: ``y`` (the labels), ``batch_size``, ``seed``, ``shuffle``, ``rank`` and
    ``world_size``; each epoch's order drawn from the (seed, epoch) generator, and each rank's shard of every
    global batch."""

    y: Tensor
    batch_size: int
    shuffle: bool
    rank: int = 0
    world_size: int = 1

    @property
    def num_samples(self) -> int:
        return len(self.y)

    def __len__(self) -> int:
        return -(-self.num_samples // (self.batch_size * self.world_size))

    def shards(self, start_step: int = 0, device=None) -> Iterator[Tensor]:
        """This rank's positions in the epoch order, batch by batch: global batch k is positions
        [k B W, (k + 1) B W), cut into W consecutive shards of B (W processes, B = batch_size). The last global
        batch is shared as evenly as possible, padded with positions from the start of the epoch (duplicates)
        so that every rank gets the same number of samples; with one process it is just the last partial batch."""
        n, b, w = self.num_samples, self.batch_size, self.world_size
        for start in range(start_step * b * w, n, b * w):
            size = min(b * w, n - start)
            per_rank = -(-size // w)
            first = start + self.rank * per_rank
            yield torch.arange(first, first + per_rank, device=device) % n  # made on the device: no copy

    def order(self, generator: torch.Generator) -> Tensor:
        if self.shuffle:
            return torch.randperm(self.num_samples, generator=generator)
        return torch.arange(self.num_samples)


class MemoryLoader(EpochOrder):
    def __init__(self, name: str, splits: Splits, batch_size: int, device, augment: bool, shuffle: bool,
                 seed: int, channels_last: bool = False, rank: int = 0, world_size: int = 1):
        x, y = splits.sets[name]
        self.x, self.y = x.to(device), y.to(device)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.augment = augment and splits.augment == "crop_flip"
        self.pad = splits.pad
        self.channels_last = channels_last and x.dim() == 4
        self.mean = self.std = None  # token ids are fed as they are
        if splits.mean is not None:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            self.mean = torch.tensor(splits.mean, device=device).view(shape) * splits.scale
            self.std = torch.tensor(splits.std, device=device).view(shape) * splits.scale

    def batch(self, index: Tensor, x: Tensor) -> Batch:
        if self.mean is not None:
            x = (x.float() - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return Batch(x, self.y[index], index)

    def get(self, index: Tensor, generator: torch.Generator) -> Batch:
        """The samples ``index`` (on the device), augmented with ``generator`` when training, normalised."""
        x = self.x[index]
        return self.batch(index, pad_crop_flip(x, generator, self.pad) if self.augment else x)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """The epoch's batches from batch ``start_step`` on (a run resumed inside an epoch). Its order and
        augmentation are drawn at once from the (seed, epoch) generator on the host and moved to the device in
        one copy, so no step waits for a host-to-device transfer."""
        g = epoch_generator(self.seed, epoch)
        dev = self.y.device
        order = self.order(g).to(dev)
        params = [p.to(dev) for p in crop_flip_params(self.num_samples, g, self.pad)] if self.augment else None
        for positions in self.shards(start_step, dev):
            index = order[positions]
            x = self.x[index]
            if params is not None:
                x = crop_flip(x, *(p[positions] for p in params), self.pad)
            yield self.batch(index, x)


class Standardize:
    """uint8 or float pixels -> (x - mean) / std in float32 (a picklable transform for worker processes)."""

    def __init__(self, mean: Tensor, std: Tensor):
        self.mean, self.std = mean, std

    def __call__(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.std


class SplitDataset(torch.utils.data.Dataset):
    def __init__(self, x: Tensor, y: Tensor, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.transform(self.x[i]), self.y[i], i


class TorchvisionLoader(MemoryLoader):
    """The classic input pipeline, kept as the reference for the device path and for data that does not fit on
    the device: the split stays on the host; a ``torch.utils.data.DataLoader`` with ``num_workers`` processes
    applies torchvision's ``RandomCrop(size, padding=4)`` and ``RandomHorizontalFlip()`` per image, then the
    batch is copied to the device (pinned memory on CUDA). The same (seed, epoch) order as the device path; the
    augmentation draws come from the workers' seeded generators, so a run is reproducible for a fixed
    ``num_workers`` but differs from the device path's draws."""

    def __init__(self, name: str, splits: Splits, batch_size: int, device, augment: bool, shuffle: bool,
                 seed: int, channels_last: bool = False, rank: int = 0, world_size: int = 1, num_workers: int = 2):
        from torchvision.transforms import v2

        check_workers(num_workers)  # before the split is copied
        super().__init__(name, splits, batch_size, "cpu", augment, shuffle, seed, channels_last, rank, world_size)
        self.device = torch.device(device)
        size = list(self.x.shape[-2:])
        steps = [v2.RandomCrop(size, padding=self.pad), v2.RandomHorizontalFlip()] if self.augment else []
        standardize = [] if self.mean is None else [Standardize(self.mean[0], self.std[0])]
        self.transform = v2.Compose([*steps, *standardize]) if steps or standardize else v2.Identity()
        self.dataset = SplitDataset(self.x, self.y, self.transform)
        self.num_workers = num_workers

    def to_device(self, x: Tensor, y: Tensor, index: Tensor) -> Batch:
        pinned = x.is_pinned()
        x, y, index = (t.to(self.device, non_blocking=pinned) for t in (x, y, index))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return Batch(x, y, index)

    def get(self, index: Tensor, generator: torch.Generator) -> Batch:
        index = index.cpu()
        with torch.random.fork_rng(devices=[]):
            if generator is not None:
                # the CPU generator only (fork_rng restores it): torch.manual_seed would also reseed CUDA's
                torch.default_generator.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            x = torch.stack([self.transform(self.x[i]) for i in index.tolist()])
        return self.to_device(x, self.y[index], index)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """As the device path's; resumed inside an epoch, the remaining batches get other augmentation draws."""
        g = epoch_generator(self.seed, epoch)
        order = self.order(g)
        batches = [order[positions].tolist() for positions in self.shards(start_step)]
        workers = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=g)))
        loader = iter(torch.utils.data.DataLoader(
            self.dataset, batch_sampler=batches, num_workers=self.num_workers, generator=workers,
            pin_memory=self.device.type == "cuda"))
        # without workers the transforms draw from the global generator: they get a private state, swapped in
        # around each batch, so the model's own random draws (dropout) do not depend on the loader
        private = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=workers))).get_state()
        while True:
            if self.num_workers == 0:
                outer = torch.get_rng_state()
                torch.set_rng_state(private)
            try:
                batch = next(loader, None)
            finally:
                if self.num_workers == 0:
                    private = torch.get_rng_state()
                    torch.set_rng_state(outer)
            if batch is None:
                return
            yield self.to_device(*batch)
