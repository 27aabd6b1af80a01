"""``dataset=npz``: one NumPy ``.npz`` file (``dataset.path``) holding the arrays ``x_train``, ``y_train``,
``x_test`` and ``y_test`` (``numpy.savez`` or ``savez_compressed``).

Inputs, by ``dataset.layout`` (``auto``):

- ``N x C x H x W`` or ``N x H x W x C`` images (auto: channels last when the last axis has 1, 3 or 4 entries and
  the second has not); ``N x H x W`` uint8 images (one channel);
- ``N x C x L`` float sequences (as MNIST-1D's), ``N x D`` vectors (read as ``N x 1 x D``).

uint8 arrays stay uint8 (pixels, normalised on the device); other numbers become float32: finite, and within
float32's range. Labels are one integer >= 0 per sample, in ``[0, classes)``, ``classes`` being
``dataset.num_classes`` or the largest label + 1 (refused above :data:`~lstsd.data.types.MAX_CLASSES`, or above
:data:`~lstsd.data.types.CLASSES_PER_SAMPLE` per sample when inferred). No split may be empty; an array named
like a split the reader does not read (``x_val``) is refused rather than left out, other names (``classes``) are
ignored. Every refusal names the file and the array. ``dataset.mean`` and
``dataset.std`` default to the training split's per-channel statistics. The arrays are read into memory, so the
in-memory loader is the default; ``dataset.loader=stream`` applies any ``dataset.train_transforms``.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from omegaconf import MISSING

from lstsd.data.readers.images import ImageDataConfig, image_splits
from lstsd.data.types import MAX_CLASSES, Splits, inferred_classes, tensors
from lstsd.errors import ConfigError, one_line, require, require_choice
from lstsd.registry import register_dataset

ARRAYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass
class NpzConfig(ImageDataConfig):
    """Arrays in one .npz file: x_train, y_train, x_test, y_test."""
    path: str = MISSING  # the .npz file
    layout: str = "auto"  # auto, channels_first, channels_last (4-D image arrays)
    num_classes: Optional[int] = None  # null: the largest label + 1
    loader: str = "memory"

    def __post_init__(self) -> None:
        super().__post_init__()
        require_choice("dataset.layout", self.layout, ("auto", "channels_first", "channels_last"))
        require(self.num_classes is None or 2 <= self.num_classes <= MAX_CLASSES, "dataset.num_classes",
                f"null or an integer in [2, {MAX_CLASSES}]", self.num_classes)


def check_names(path: Path, names: list) -> None:
    """The four arrays are there, and no other array is named like a split (``x_val``, ``y_valid``: data the
    reader would leave out without a word); other names (``classes``, notes) are ignored."""
    missing = [k for k in ARRAYS if k not in names]
    if missing:
        raise ConfigError(f"dataset.path: {path} has no array {missing[0]!r} (it holds "
                          f"{', '.join(names) or 'no arrays'}): expected {', '.join(ARRAYS)}")
    unread = [k for k in names if k[:2].lower() in ("x_", "y_") and k not in ARRAYS]
    if unread:
        raise ConfigError(f"dataset.path: {path} holds the array {unread[0]!r}, which dataset=npz does not read: "
                          f"allowed {', '.join(ARRAYS)} (a validation split is carved from x_train by "
                          f"dataset.val_fraction)")


def read_npz(path: Path) -> dict:
    """The four arrays of the file; ConfigError naming it when it is missing, unreadable, or an entry is not a
    .npy array (another member of the zip, which NumPy hands over as raw bytes)."""
    if not path.is_file():
        raise ConfigError(f"dataset.path: {path} not found: expected an .npz file with the arrays "
                          f"{', '.join(ARRAYS)}")
    try:
        with np.load(path, allow_pickle=False) as f:
            check_names(path, list(f.files))
            arrays = {k: f[k] for k in ARRAYS}
    except ConfigError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ConfigError(f"dataset.path: {path} is not a readable .npz file ({type(e).__name__}: "
                          f"{one_line(e)})") from None
    for k, v in arrays.items():
        if not isinstance(v, np.ndarray):
            raise ConfigError(f"dataset.path: {path}: {k} is not a .npy array (a member of the zip of another "
                              f"kind, {type(v).__name__}): allowed arrays written by numpy.savez")
    return arrays


def check_finite(x: np.ndarray, name: str, path: Path) -> None:
    """A float array holds finite numbers that float32 can hold (inputs become float32): NaN, +-inf and
    float64 values beyond float32's range are refused naming the array. Vectorised, once per run."""
    if x.dtype.kind != "f":
        return
    bad = x.size - int(np.count_nonzero(np.isfinite(x)))
    if bad:
        raise ConfigError(f"dataset.path: {path}: {name} holds {bad} non-finite values (NaN or inf): allowed "
                          f"finite numbers")
    top = float(np.finfo(np.float32).max)
    largest = max(float(x.max()), -float(x.min())) if x.dtype.itemsize > 4 and x.size else 0.0  # no copy
    if largest > top:
        over = int(np.count_nonzero(x > top)) + int(np.count_nonzero(x < -top))
        raise ConfigError(f"dataset.path: {path}: {name} holds {over} values beyond float32's range (the largest "
                          f"magnitude {largest:.3g}): allowed finite numbers within +-{top:.4g} (inputs are read "
                          f"as float32)")


def check_labels(y: np.ndarray, name: str, n: int, path: Path) -> None:
    """``y_train`` / ``y_test``: one integer >= 0 per sample of its inputs (``n``), refused naming the array
    (floats are refused, never truncated)."""
    x = "x_" + name.removeprefix("y_")
    if y.dtype.kind not in "iu":
        raise ConfigError(f"dataset.path: {path}: {name} has dtype {y.dtype}: allowed integer labels >= 0 (class "
                          f"numbers)")
    if y.ndim != 1:
        raise ConfigError(f"dataset.path: {path}: {name} has shape {y.shape}: allowed one integer label per "
                          f"sample (shape ({n},))")
    if len(y) != n:
        raise ConfigError(f"dataset.path: {path}: {name} holds {len(y)} labels for the {n} samples of {x}: allowed "
                          f"one label per sample")
    negative = y[y < 0] if y.dtype.kind == "i" else y[:0]
    if negative.size:
        raise ConfigError(f"dataset.path: {path}: {name} holds {negative.size} negative labels (the first: "
                          f"{negative[0]}): allowed integers >= 0")


def as_inputs(x: np.ndarray, layout: str, name: str, path: Path) -> torch.Tensor:
    if x.dtype.kind not in "uif" or x.dtype == np.bool_:
        raise ConfigError(f"dataset.path: {path}: {name} has dtype {x.dtype}: allowed numbers (uint8 pixels, "
                          f"integers or floats)")
    if x.ndim == 2:
        x = x[:, None]
    elif x.ndim == 3 and x.dtype == np.uint8:
        x = x[:, None]
    elif x.ndim == 4:
        last = layout == "channels_last" or (layout == "auto" and x.shape[-1] in (1, 3, 4) and
                                             x.shape[1] not in (1, 3, 4))
        if last:
            x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 3:
        raise ConfigError(f"dataset.path: {path}: {name} has shape {x.shape}: allowed N x D, N x C x L, N x H x W "
                          f"(uint8) or N x C x H x W / N x H x W x C")
    if not x.shape[0]:
        raise ConfigError(f"dataset.path: {path}: {name} holds no samples (shape {x.shape}): allowed at least one")
    check_finite(x, name, path)
    x = np.ascontiguousarray(x)
    return torch.from_numpy(x if x.dtype == np.uint8 else x.astype(np.float32))


@register_dataset("npz", NpzConfig)
def load_npz(cfg: NpzConfig) -> Splits:
    path = Path(cfg.path).expanduser()
    arrays = read_npz(path)
    sets = {}
    for split in ("train", "test"):
        x = as_inputs(arrays[f"x_{split}"], cfg.layout, f"x_{split}", path)
        check_labels(arrays[f"y_{split}"], f"y_{split}", len(x), path)
        sets[split] = tensors(x, arrays[f"y_{split}"])
    if sets["train"][0].shape[1:] != sets["test"][0].shape[1:]:
        raise ConfigError(f"dataset.path: {path}: x_train has samples of shape "
                          f"{tuple(sets['train'][0].shape[1:])} and x_test {tuple(sets['test'][0].shape[1:])}")
    classes = cfg.num_classes
    if classes is None:
        tops = {name: int(arrays[name].max()) for name in ("y_train", "y_test")}
        largest = max(tops, key=tops.get)
        classes = inferred_classes(tops[largest], sum(len(y) for _, y in sets.values()),
                                   f"dataset.path: {path}: {largest}")
    mean = std = None
    if cfg.mean is None:
        x = sets["train"][0]
        pixels = x.float() / (255.0 if x.dtype == torch.uint8 else 1.0)
        dims = [d for d in range(pixels.dim()) if d != 1]
        mean, std = pixels.mean(dims).tolist(), pixels.std(dims).clamp_min(1e-6).tolist()
    return image_splits(cfg, sets, classes, mean, std)
