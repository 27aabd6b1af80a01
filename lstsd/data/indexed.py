"""Sample ids for any map-style dataset: :class:`IndexedDataset` turns ``dataset[i] = (input, target)`` into
``(input, target, i)``, the id the per-sample methods key their banks by, and re-reads samples by id for the
methods that need them again (DLB's repeated half, Mean Teacher's own input, teachers' outputs computed once):
the same ``get(index, generator)`` the framework's loaders offer."""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, default_collate

from lstsd.data.types import Batch
from lstsd.errors import ConfigError


class IndexedDataset(Dataset):
    """``(input, target, index)`` for each item ``(input, target)`` of ``dataset``, ``index`` its position in
    ``[0, len(dataset))``; a ``DataLoader`` collates the ids into an int64 tensor.

    ``augment``: whether reading a sample again gives a new augmentation (``dataset`` applies random
    transforms). True is always correct; False (a dataset that returns the same tensors each time) lets the
    teachers of SD, LSTSD (single) and KD compute their outputs on the whole training set once, instead of on
    each batch, and lets Mean Teacher's ``teacher_input=own`` read the student's batch instead of re-reading it.

    Raises :class:`~lstsd.errors.ConfigError` for a ``dataset`` that is not map-style (None, an
    ``IterableDataset``, an object without ``len()`` and ``[i]``) and an ``augment`` that is not a bool.
    """

    rank, world_size = 0, 1  # a loop of one's own reads every sample in one process (the TrainingSet protocol)

    def __init__(self, dataset: Dataset, augment: bool = True):
        allowed = "allowed a map-style dataset: len(dataset) samples, dataset[i] = (input, target)"
        if isinstance(dataset, IterableDataset):
            raise ConfigError(f"IndexedDataset(dataset): dataset is an IterableDataset ({type(dataset).__name__}), "
                              f"which has no sample ids (it is read in order, not by index): {allowed}")
        if dataset is None or not (hasattr(type(dataset), "__len__") and hasattr(type(dataset), "__getitem__")):
            what = "None" if dataset is None else f"of type {type(dataset).__name__}, without len() or [i]"
            raise ConfigError(f"IndexedDataset(dataset): dataset is {what}: {allowed}")
        if not isinstance(augment, bool):
            raise ConfigError(f"IndexedDataset(dataset, augment={augment!r}): augment is invalid: allowed True or "
                              "False (whether reading a sample again gives a new augmentation)")
        self.dataset, self.augment = dataset, augment

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Any, Any, int]:
        item = self.dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"IndexedDataset: item {i} of {type(self.dataset).__name__} is a "
                            f"{type(item).__name__}{f' of {len(item)}' if isinstance(item, (tuple, list)) else ''}, "
                            "expected an (input, target) pair")
        return item[0], item[1], int(i)

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def get(self, index: Tensor, generator: Optional[torch.Generator] = None) -> Batch:
        """The samples ``index`` as a :class:`~lstsd.data.types.Batch` on ``index``'s device (inputs collated by
        ``default_collate``). With ``augment``, random transforms drawing from torch's global generator draw from
        one seeded by ``generator`` instead (a reproducible re-read); the global generator is left as it was
        (transforms drawing from Python's or NumPy's generators are not covered)."""
        with torch.random.fork_rng(devices=[]):
            if generator is not None and self.augment:
                torch.default_generator.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            x, y = default_collate([self.dataset[i] for i in index.tolist()])
        device = index.device
        return Batch(x.to(device) if isinstance(x, Tensor) else x, torch.as_tensor(y, device=device), index)
