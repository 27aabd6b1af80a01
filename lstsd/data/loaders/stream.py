"""The streaming loader: the in-memory loader's interface (``epoch``, ``get``, ``num_samples``, ``augment``,
``y``, ``rank``; :class:`~lstsd.data.types.TrainingSet`) over a file-backed split read by DataLoader workers
(:mod:`lstsd.data.workers`): the same epoch order and sharding, each sample's transforms seeded by (seed, epoch,
index) so the batches do not depend on the number of workers and a run resumes exactly inside an epoch, and the
pad-crop-flip on the device bit for bit as the in-memory loader's. docs/own-data.md, "The streaming loader"."""
from __future__ import annotations

import logging
from typing import Iterator, Optional

import torch
from torch import Tensor

from lstsd.data.loaders.memory import EpochOrder, crop_flip, crop_flip_params, epoch_generator, pad_crop_flip
from lstsd.data.samples import UnreadableSample, as_samples
from lstsd.data.types import Batch, Splits
from lstsd.data.workers import check_workers, read_batches
from lstsd.errors import ConfigError

log = logging.getLogger(__name__)


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
        self.rank, self.world_size, self.num_workers = rank, world_size, check_workers(num_workers)
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
