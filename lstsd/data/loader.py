"""The in-memory loader used by every dataset that fits in memory (digits, synthetic, CIFAR).

The split is kept as one tensor on the training device in its stored dtype (uint8 images stay uint8). Each
epoch draws its order and its augmentation from a generator seeded by (seed, epoch) alone, so an epoch is the
same whether the run was resumed or not, and the last partial batch is kept: every index appears exactly once
per epoch. Augmentation is the standard CIFAR one (zero-pad 4, random crop, horizontal flip with p = 0.5),
applied to the stored pixels before normalisation as torchvision's pipeline does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


class Batch(NamedTuple):
    x: Tensor
    y: Tensor
    index: Tensor


@dataclass
class Splits:
    sets: dict  # "train", "test" (and "val") -> (x, y) tensors
    num_classes: int
    mean: tuple  # per-channel normalisation of x / scale
    std: tuple
    scale: float = 1.0  # 255 for uint8 images
    augment: str = "none"  # "crop_flip" for the CIFAR pipeline


def carve_validation(splits: Splits, fraction: float, split_seed: int) -> Splits:
    """Move a reproducible ``fraction`` of the training split to ``val``; the rest keeps its order."""
    if fraction <= 0:
        return splits
    x, y = splits.sets["train"]
    n_val = max(1, int(round(fraction * len(y))))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    val, train = perm[:n_val].sort().values, perm[n_val:].sort().values
    sets = dict(splits.sets, train=(x[train], y[train]), val=(x[val], y[val]))
    return Splits(sets, splits.num_classes, splits.mean, splits.std, splits.scale, splits.augment)


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A generator determined by (seed, epoch); other ``stream`` values give independent ones."""
    state = np.random.SeedSequence([seed, epoch, stream] if stream else [seed, epoch]).generate_state(
        1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def pad_crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Random ``pad``-pixel zero-padded crop of the input size and a horizontal flip with p = 0.5."""
    n, c, h, w = x.shape
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = oy[:, None] + torch.arange(h)
    cols = ox[:, None] + torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    return padded[
        torch.arange(n, device=dev)[:, None, None, None],
        torch.arange(c, device=dev)[None, :, None, None],
        rows.to(dev)[:, None, :, None],
        cols.to(dev)[:, None, None, :],
    ]


class MemoryLoader:
    def __init__(self, name: str, splits: Splits, batch_size: int, device, augment: bool, shuffle: bool,
                 seed: int):
        x, y = splits.sets[name]
        self.x, self.y = x.to(device), y.to(device)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.augment = augment and splits.augment == "crop_flip"
        shape = (1, -1) + (1,) * (x.dim() - 2)
        self.mean = torch.tensor(splits.mean, device=device).view(shape) * splits.scale
        self.std = torch.tensor(splits.std, device=device).view(shape) * splits.scale

    @property
    def num_samples(self) -> int:
        return len(self.y)

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def order(self, generator: torch.Generator) -> Tensor:
        if self.shuffle:
            return torch.randperm(self.num_samples, generator=generator)
        return torch.arange(self.num_samples)

    def get(self, index: Tensor, generator: torch.Generator) -> Batch:
        """The samples ``index`` (on the device), augmented with ``generator`` when training, normalised."""
        x = self.x[index]
        if self.augment:
            x = pad_crop_flip(x, generator)
        return Batch((x.float() - self.mean) / self.std, self.y[index], index)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        g = epoch_generator(self.seed, epoch)
        for index in self.order(g).split(self.batch_size):
            yield self.get(index.to(self.y.device), g)
