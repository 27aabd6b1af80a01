"""Datasets: every batch is ``(input, target, index)``, ``index`` the stable id in ``[0, N)`` of a training
sample (its row in the per-sample banks). Each dataset is a reader registered with its schema
(``@register_dataset(name, Schema)``, one module per family) that returns the raw splits; :func:`build_data`
checks them (:func:`check_splits`), carves the optional validation split and wraps the splits in loaders:
``dataset.loader`` memory (the split on the training device), torchvision (a DataLoader over the split in host
memory) or stream (:mod:`lstsd.data.loaders.stream`: workers read the samples from disk)."""
from __future__ import annotations

from dataclasses import replace

from lstsd.data.loaders.memory import MemoryLoader, TorchvisionLoader, carve_validation
from lstsd.data.loaders.stream import StreamLoader
from lstsd.data.samples import Samples
from lstsd.data.text import encode_splits
from lstsd.data.types import Data, DataInfo, Splits, check_splits
from lstsd.data.workers import materialise
from lstsd.errors import ConfigError, TrainingError
from lstsd.registry import DATASETS


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


