"""Datasets: every batch is ``(input, target, index)``, ``index`` the stable id in ``[0, N)`` of a training
sample (its row in the per-sample banks). Each dataset is a reader registered with its schema
(``@register_dataset(name, Schema)``, one module per family) that returns the raw splits; :func:`build_data`
checks them (:func:`check_splits`), carves the optional validation split and wraps the splits in loaders:
``dataset.loader`` memory (the split on the training device), torchvision (a DataLoader over the split in host
memory) or stream (:mod:`lstsd.data.stream`: workers read the samples from disk)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import torch

from lstsd.data.loader import MemoryLoader, Splits, TorchvisionLoader, carve_validation
from lstsd.data.stream import Samples, StreamLoader, materialise
from lstsd.data.text import encode_splits, vocab_fingerprint
from lstsd.errors import ConfigError, TrainingError
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

    def metrics(self, configured) -> tuple:
        """The metrics to evaluate: ``dataset.metrics`` (``configured``), with top-5 accuracy (``top5``) added
        where the dataset has more than five classes (with five or fewer it is always 100 %)."""
        configured = tuple(configured)
        return configured + (("top5",) if self.num_classes > 5 and "top5" not in configured else ())

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
    check_splits(splits, cfg.name)
    n = len(splits.sets["train"][1])
    splits = carve_validation(splits, cfg.val_fraction, cfg.split_seed)
    if not len(splits.sets["train"][1]):
        raise ConfigError(f"dataset.val_fraction={cfg.val_fraction} is invalid: it leaves 0 training samples of {n} "
                          f"(all {n} go to the validation split): allowed a smaller fraction")
    vocab = None
    if splits.text is not None:
        splits, vocab = encode_splits(splits, cfg, model_cfg)
    if cfg.loader != "stream":
        splits = in_memory(splits, cfg)

    def loader(split: str, batch_size: int, train: bool) -> MemoryLoader:
        kwargs = dict(augment=train and cfg.augment, shuffle=train, seed=seed, channels_last=channels_last)
        if train:
            kwargs |= dict(rank=rank, world_size=world_size)
        if cfg.loader == "stream":
            return StreamLoader(split, splits, batch_size, device, num_workers=cfg.num_workers, **kwargs)
        if cfg.loader == "torchvision":
            return TorchvisionLoader(split, splits, batch_size, device, num_workers=cfg.num_workers, **kwargs)
        return MemoryLoader(split, splits, batch_size, device, **kwargs)

    train = loader("train", cfg.batch_size, True)
    evals = {name: loader(name, cfg.eval_batch_size, False) for name in ("val", "test") if name in splits.sets}
    input_shape = tuple(splits.sets["train"][0].shape[1:]) if cfg.loader != "stream" else shape_of(train)
    if cfg.loader == "stream":
        for name, ev in evals.items():
            shape = shape_of(ev)
            if shape != input_shape:
                made = "dataset.train_transforms" if cfg.augment else "dataset.augment=false: the evaluation ones"
                raise ConfigError(
                    f"dataset.eval_transforms: the {name} inputs are {'x'.join(map(str, shape))} and the training "
                    f"inputs {'x'.join(map(str, input_shape))} ({made}): allowed transforms that give one shape")
    info = DataInfo(
        name=cfg.name,
        num_classes=splits.num_classes,
        input_shape=input_shape,
        num_train=len(splits.sets["train"][1]),
        num_val=len(splits.sets["val"][1]) if "val" in splits.sets else 0,
        num_test=len(splits.sets["test"][1]),
        vocab=vocab,
    )
    return Data(info, train, evals)


def shape_of(loader: StreamLoader) -> tuple:
    """The shape of one input of a streaming loader, its first sample read and transformed here: a sample that
    cannot be, or transforms that refuse it, are bad input (ConfigError), found before training."""
    try:
        return loader.input_shape
    except TrainingError as e:
        raise ConfigError(str(e)) from None


def in_memory(splits: Splits, cfg) -> Splits:
    """The splits for the in-memory loaders (``dataset.loader`` memory, torchvision): file-backed splits
    decoded into one tensor each. These loaders augment with the pad-crop-flip on the device only and transform
    nothing else: other transforms need the streaming loader."""
    if cfg.augment and splits.augment == "transforms":
        raise ConfigError(f"dataset.loader={cfg.loader} is invalid with these dataset.train_transforms (the "
                          f"in-memory loaders run RandomCrop(<image size>, padding=p) + RandomHorizontalFlip() on "
                          f"the device, and no other transform): allowed stream")
    if splits.eval_transform is not None:
        raise ConfigError(f"dataset.loader={cfg.loader} is invalid with dataset.eval_transforms (the in-memory "
                          f"loaders transform nothing): allowed stream, or dataset.eval_transforms=[]")
    sets = {name: (materialise(x, cfg.num_workers, f"dataset {cfg.name}: split {name}") if isinstance(x, Samples)
                   else x, y) for name, (x, y) in splits.sets.items()}
    return replace(splits, sets=sets)


def labels(y):
    """Labels as a reader hands them to :class:`Splits`: integers become an int64 tensor; other labels (floats,
    booleans, strings) are kept as they are, so that :func:`check_splits` refuses them instead of a cast quietly
    truncating them (1.7 -> 1)."""
    y = np.asarray(y)
    return torch.as_tensor(y, dtype=torch.int64) if y.dtype.kind in "iu" else y


def tensors(x, y) -> tuple:
    """Inputs and labels as a reader hands them to :class:`Splits` (see :func:`labels`)."""
    return torch.as_tensor(x), labels(y)


def check_splits(splits: Splits, name: str) -> None:
    """Every split of a reader's result: as many inputs (images, sequences, sentences) as labels, at least one
    sample, and labels that are integers in ``[0, num_classes)``; a one-line ConfigError naming the dataset and
    the split otherwise. Readers check their own files; this holds for every reader, present and future, before
    any loader, model or metric relies on it."""
    classes = splits.num_classes
    for split, (x, y) in splits.sets.items():
        where = f"dataset {name}: split {split}"
        try:
            labels = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
        except ValueError:  # a ragged list
            raise ConfigError(f"{where} has labels that are not a list of integers") from None
        if labels.ndim != 1:
            raise ConfigError(f"{where} has labels of shape {tuple(labels.shape)}: allowed one integer per sample")
        if len(x) != len(labels):
            raise ConfigError(f"{where} has {len(x)} inputs and {len(labels)} labels")
        if not len(labels):
            raise ConfigError(f"{where} is empty: allowed at least one sample")
        if labels.dtype.kind not in "iu":
            raise ConfigError(f"{where} has labels of dtype {labels.dtype}: allowed integers in [0, {classes})")
        bad = labels[(labels < 0) | (labels >= classes)]
        if bad.size:
            raise ConfigError(f"{where} has {bad.size} label(s) outside [0, {classes}) (the first: {bad[0]})")

