"""What the parts of the data package hand one another: a reader's :class:`Splits` (checked by
:func:`check_splits`), a loader's :class:`Batch`, a run's :class:`Data` and its :class:`DataInfo`; the helpers
readers build splits with (:func:`tensors`, :func:`labels`) and cache derived data with (:func:`write_cache`)."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional, Protocol

import numpy as np
import torch
from torch import Tensor

from lstsd.errors import ConfigError, one_line
from lstsd.fileio import atomic_write

log = logging.getLogger(__name__)

# A project bound on the number of classes: ImageNet-21k, among the largest label sets trained on, has 21,841;
# 100,000 classes already make a 2,048-wide head of 205 M weights. A larger label is an id, not a class number.
MAX_CLASSES = 100_000
# Where the number of classes is inferred from the labels (the largest + 1): at most 10 classes per labelled
# sample. More means labels that are ids or codes (1000, 2000, ...) rather than class numbers 0, 1, 2, ..., and a
# head made mostly of classes no sample has; dataset.num_classes, given, is taken as it is.
CLASSES_PER_SAMPLE = 10


class Batch(NamedTuple):
    x: Tensor
    y: Tensor
    index: Tensor


@dataclass
class Splits:
    sets: dict  # "train", "test" (and "val") -> (x, y) tensors
    num_classes: int
    mean: Optional[tuple]  # per-channel normalisation of x / scale; None: x is used as it is (token ids)
    std: Optional[tuple]
    scale: float = 1.0  # 255 for uint8 images
    augment: str = "none"  # "crop_flip": the CIFAR pipeline (on the device); "transforms": train_transform
    text: Optional[str] = None  # "single" or "pair": x is a list of raw (sentence1, sentence2 or None) until
    # the model's tokeniser encodes it (lstsd.data.text)
    pad: int = 4  # the zero padding of the crop_flip augmentation
    # per-sample transforms (torchvision.transforms.v2) of the streaming loader: train_transform draws the
    # training augmentation ("transforms"); eval_transform is applied to the evaluation splits (and to the
    # training split when it is not augmented); None: the samples as they are read
    train_transform: Optional[Callable] = None
    eval_transform: Optional[Callable] = None


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


def vocab_fingerprint(vocab: list[str]) -> str:
    """A vocabulary's identity (results.json's ``vocab_sha256``: a teacher must read the same word ids)."""
    return hashlib.sha256("\n".join(vocab).encode()).hexdigest()


class TrainingSet(Protocol):
    """A training split as the trainer and the methods read it, whichever loader holds it
    (:class:`~lstsd.data.loaders.memory.MemoryLoader`, its torchvision DataLoader path,
    :class:`~lstsd.data.loaders.stream.StreamLoader`; :class:`~lstsd.data.indexed.IndexedDataset` in a loop of
    one's own has ``get``, ``num_samples`` and ``augment``)."""
    y: Tensor  # the labels, on the training device
    augment: bool  # whether a re-read sample is augmented afresh (a teacher cannot precompute its outputs)
    rank: int
    world_size: int

    @property
    def num_samples(self) -> int: ...

    def __len__(self) -> int: ...  # steps per epoch

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]: ...  # this rank's batches of the epoch

    def get(self, index: Tensor, generator: Optional[torch.Generator]) -> Batch: ...  # samples re-read by id


class EvalSet(Protocol):
    """An evaluation split: its batches in order (every rank evaluates all of it)."""
    y: Tensor

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]: ...


@dataclass
class Data:
    info: DataInfo
    train: TrainingSet
    evals: dict[str, EvalSet]  # split name ("val", "test") -> its loader


def write_cache(path: Path, write: Callable, what: str) -> None:
    """Write a cache of derived data (tokenised text, a generated dataset) with
    :func:`~lstsd.fileio.atomic_write` (``write(file)``, binary). A place that cannot be written only costs the
    next run the speed-up: a warning, and the run goes on."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write, binary=True)
    except (OSError, RuntimeError) as e:  # RuntimeError: torch.save's writer failing (a full disk)
        log.warning(f"{what} not cached at {path} ({one_line(e)})")


def labels(y):
    """Labels as a reader hands them to :class:`Splits`: integers become an int64 tensor; other labels (floats,
    booleans, strings) are kept as they are, so that :func:`check_splits` refuses them instead of a cast quietly
    truncating them (1.7 -> 1)."""
    y = np.asarray(y)
    return torch.as_tensor(y, dtype=torch.int64) if y.dtype.kind in "iu" else y


def tensors(x, y) -> tuple:
    """Inputs and labels as a reader hands them to :class:`Splits` (see :func:`labels`)."""
    return torch.as_tensor(x), labels(y)


def inferred_classes(largest: int, samples: int, where: str) -> int:
    """The number of classes labels up to ``largest`` make, none being given: ``largest + 1``, 2 at least.
    ConfigError, ``where`` naming the array or split that holds ``largest``, when it is absurd: above
    :data:`MAX_CLASSES`, or above :data:`CLASSES_PER_SAMPLE` per labelled sample (``samples`` of all splits);
    refused before anything of that size is allocated."""
    classes = max(2, int(largest) + 1)
    if classes > MAX_CLASSES:
        raise ConfigError(f"{where} holds the label {largest}, which would make {classes} classes: allowed labels "
                          f"in [0, {MAX_CLASSES})")
    if classes > CLASSES_PER_SAMPLE * samples:
        raise ConfigError(f"{where} holds the label {largest}, which would make {classes} classes for {samples} "
                          f"samples: allowed at most {CLASSES_PER_SAMPLE} classes per sample (labels numbered 0, 1, "
                          f"2, ...), or give dataset.num_classes")
    return classes


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
