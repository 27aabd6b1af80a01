"""Samples read by DataLoader worker processes, batch by batch (:func:`read_batches`: each sample's transforms
seeded by a hash of (seed, epoch, index), so the batches do not depend on the number of workers), and the checks
before training (:func:`check_samples`: every file's header or whole decoding; :func:`materialise`: a split
decoded into one tensor for the in-memory loaders)."""
from __future__ import annotations

import logging
import os
import random
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from lstsd.data.samples import Samples, UnreadableSample, verify_header
from lstsd.errors import ConfigError, TrainingError, one_line, require

log = logging.getLogger(__name__)

MASK = 2**64 - 1


def sample_seed(base: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` from an epoch's ``base`` (SplitMix64's finaliser: neighbouring
    indices get unrelated seeds)."""
    z = (base + (index + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return (z ^ (z >> 31)) >> 1


# --------------------------------------------------------------------------- workers
def most_workers() -> int:
    """The most worker processes ``dataset.num_workers`` may ask for: 4 per CPU of this machine, and 64 at least
    (a project bound): it refuses a typo (1000, 100000: as many forked copies of the process, each holding torch,
    before the first batch) and still runs a configuration written for a bigger machine on a smaller one."""
    return max(64, 4 * (os.cpu_count() or 1))


def check_workers(num_workers: int) -> int:
    """``num_workers``, checked where workers are started (the checks before training, the loaders): ConfigError
    naming ``dataset.num_workers`` and the allowed range unless it is in ``[0, most_workers()]``."""
    top = most_workers()
    require(isinstance(num_workers, int) and 0 <= num_workers <= top, "dataset.num_workers",
            f"an integer in [0, {top}] (4 per CPU of this machine's {os.cpu_count() or 1}, and 64 at least)",
            num_workers)
    return num_workers


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
    check_workers(num_workers)
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
    check_workers(num_workers)
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
