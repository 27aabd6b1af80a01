"""``dataset=npz``: one NumPy ``.npz`` file (``dataset.path``) holding the arrays ``x_train``, ``y_train``,
``x_test`` and ``y_test`` (``numpy.savez`` or ``savez_compressed``).

Inputs, by ``dataset.layout`` (``auto``):

- ``N x C x H x W`` or ``N x H x W x C`` images (auto: channels last when the last axis has 1, 3 or 4 entries and
  the second has not); ``N x H x W`` uint8 images (one channel);
- ``N x C x L`` float sequences (as MNIST-1D's), ``N x D`` vectors (read as ``N x 1 x D``).

uint8 arrays stay uint8 (pixels, normalised on the device); other numbers become float32. Labels are integers
in ``[0, classes)``, ``classes`` being ``dataset.num_classes`` or the largest label + 1. ``dataset.mean`` and
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

from lstsd.data.types import tensors
from lstsd.data.readers.images import ImageDataConfig, image_splits
from lstsd.data.types import Splits
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
        require(self.num_classes is None or self.num_classes >= 2, "dataset.num_classes", "null or an integer >= 2",
                self.num_classes)


def read_npz(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"dataset.path: {path} not found: expected an .npz file with the arrays "
                          f"{', '.join(ARRAYS)}")
    try:
        with np.load(path, allow_pickle=False) as f:
            names = list(f.files)
            missing = [k for k in ARRAYS if k not in names]
            if missing:
                raise ConfigError(f"dataset.path: {path} has no array {missing[0]!r} (it holds "
                                  f"{', '.join(names) or 'no arrays'}): expected {', '.join(ARRAYS)}")
            return {k: f[k] for k in ARRAYS}
    except ConfigError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ConfigError(f"dataset.path: {path} is not a readable .npz file ({type(e).__name__}: "
                          f"{one_line(e)})") from None


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
    x = np.ascontiguousarray(x)
    return torch.from_numpy(x if x.dtype == np.uint8 else x.astype(np.float32))


@register_dataset("npz", NpzConfig)
def load_npz(cfg: NpzConfig) -> Splits:
    path = Path(cfg.path).expanduser()
    arrays = read_npz(path)
    sets = {}
    for split in ("train", "test"):
        x = as_inputs(arrays[f"x_{split}"], cfg.layout, f"x_{split}", path)
        sets[split] = tensors(x, arrays[f"y_{split}"])
    if sets["train"][0].shape[1:] != sets["test"][0].shape[1:]:
        raise ConfigError(f"dataset.path: {path}: x_train has samples of shape "
                          f"{tuple(sets['train'][0].shape[1:])} and x_test {tuple(sets['test'][0].shape[1:])}")
    classes = cfg.num_classes
    if classes is None:
        ys = [y for _, y in sets.values() if isinstance(y, torch.Tensor) and y.numel()]
        classes = max(2, int(max(int(y.max()) for y in ys)) + 1) if ys else 2
    mean = std = None
    if cfg.mean is None:
        x = sets["train"][0]
        pixels = x.float() / (255.0 if x.dtype == torch.uint8 else 1.0)
        dims = [d for d in range(pixels.dim()) if d != 1]
        mean, std = pixels.mean(dims).tolist(), pixels.std(dims).clamp_min(1e-6).tolist()
    return image_splits(cfg, sets, classes, mean, std)
