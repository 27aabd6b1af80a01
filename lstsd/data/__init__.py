"""Datasets: every batch is ``(input, target, index)``, ``index`` the stable id in ``[0, N)`` of a training
sample (its row in the per-sample banks). Each dataset is a reader registered with its schema
(``@register_dataset(name, Schema)``, one module per family) that returns the raw splits; :func:`build_data`
carves the optional validation split and wraps the splits in loaders."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from lstsd.data.loader import MemoryLoader, TorchvisionLoader, carve_validation
from lstsd.data.text import encode_splits, vocab_fingerprint
from lstsd.registry import DATASETS

@dataclass
class DataInfo:
    name: str
    num_classes: int
    input_shape: tuple
    num_train: int
    num_val: int
    num_test: int
    vocab: Optional[list] = None  # a text dataset's vocabulary, where the model's tokeniser is built from it

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    @property
    def vocab_sha256(self) -> Optional[str]:
        return None if self.vocab is None else vocab_fingerprint(self.vocab)


@dataclass
class Data:
    info: DataInfo
    train: MemoryLoader
    evals: dict  # split name ("val", "test") -> MemoryLoader


def build_data(cfg, seed: int, device, channels_last: bool = False, rank: int = 0, world_size: int = 1,
               model_cfg=None) -> Data:
    """The splits of ``cfg`` in loaders; with several processes the training loader gives each ``rank`` its
    shard of every global batch, and every rank evaluates the whole evaluation splits. Text is tokenised by the
    tokeniser of ``model_cfg`` (after the validation split is carved, so a vocabulary sees training text only)."""
    splits = DATASETS[cfg.name](cfg)
    splits = carve_validation(splits, cfg.val_fraction, cfg.split_seed)
    vocab = None
    if splits.text is not None:
        splits, vocab = encode_splits(splits, cfg, model_cfg)
    def loader(split: str, batch_size: int, train: bool) -> MemoryLoader:
        kwargs = dict(augment=train and cfg.augment, shuffle=train, seed=seed, channels_last=channels_last)
        if train:
            kwargs |= dict(rank=rank, world_size=world_size)
        if cfg.loader == "torchvision":
            return TorchvisionLoader(split, splits, batch_size, device, num_workers=cfg.num_workers, **kwargs)
        return MemoryLoader(split, splits, batch_size, device, **kwargs)

    evals = {name: loader(name, cfg.eval_batch_size, False) for name in ("val", "test") if name in splits.sets}
    info = DataInfo(
        name=cfg.name,
        num_classes=splits.num_classes,
        input_shape=tuple(splits.sets["train"][0].shape[1:]),
        num_train=len(splits.sets["train"][1]),
        num_val=len(splits.sets["val"][1]) if "val" in splits.sets else 0,
        num_test=len(splits.sets["test"][1]),
        vocab=vocab,
    )
    return Data(info, loader("train", cfg.batch_size, True), evals)


def tensors(x, y) -> tuple:
    return torch.as_tensor(x), torch.as_tensor(y, dtype=torch.int64)

