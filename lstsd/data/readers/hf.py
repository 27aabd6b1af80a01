"""``dataset=hf`` (images) and ``dataset=hf_text`` (sentences): a Hugging Face ``datasets`` dataset.

``dataset.path`` is a ``DatasetDict`` saved with ``save_to_disk`` (read with ``datasets.load_from_disk``:
memory-mapped Arrow files), or, with ``dataset.download=true`` on a machine that is online, a dataset name on
the Hub (``datasets.load_dataset``, cached in Hugging Face's cache). ``dataset.train_split`` and
``dataset.test_split`` name its splits; the columns are named by keys:

- ``hf``: ``dataset.image_key`` (an ``Image`` column: the encoded bytes are decoded by the streaming loader's
  workers, as files are for ``imagefolder``) and ``dataset.label_key``;
- ``hf_text``: ``dataset.text_key`` (and ``dataset.text_pair_key`` for sentence pairs) and
  ``dataset.label_key``; the sentences are tokenised by the model's tokeniser, as GLUE's are.

Labels are integers (a ``ClassLabel`` column gives the number of classes; otherwise the largest label + 1).
Needs the ``hf`` extra (``pip install -e ".[hf]"``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from omegaconf import MISSING

from lstsd.data.readers.glue import TextDatasetConfig
from lstsd.data.readers.images import FileImagesConfig, image_splits
from lstsd.data.types import Splits
from lstsd.data.samples import TableImages
from lstsd.data.workers import check_samples
from lstsd.errors import ConfigError, import_extra, one_line, require
from lstsd.registry import register_dataset


@dataclass
class HFImagesConfig(FileImagesConfig):
    """A Hugging Face image dataset: a save_to_disk folder (or a Hub name with download=true)."""
    path: str = MISSING
    train_split: str = "train"
    test_split: str = "test"
    image_key: str = "image"
    label_key: str = "label"


@dataclass
class HFTextConfig(TextDatasetConfig):
    """A Hugging Face text classification dataset: a save_to_disk folder (or a Hub name with download=true)."""
    folder: str = ""  # unused (GLUE's task folder)
    path: str = MISSING
    train_split: str = "train"
    test_split: str = "test"
    text_key: str = "text"
    text_pair_key: Optional[str] = None  # the second sentence of a pair task
    label_key: str = "label"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.pair == (self.text_pair_key is not None), "dataset.pair",
                f"{self.text_pair_key is not None} (true exactly when dataset.text_pair_key is set)", self.pair)


def open_dataset(cfg):
    """The DatasetDict of ``cfg.path``; ConfigError naming the path when it cannot be read."""
    datasets = import_extra("datasets", f"dataset={cfg.name}")
    folder = Path(cfg.path).expanduser()
    if folder.is_dir():
        try:
            data = datasets.load_from_disk(str(folder))
        except Exception as e:  # noqa: BLE001 - not a save_to_disk folder, damaged files
            raise ConfigError(f"dataset.path: {folder} is not a Hugging Face dataset saved with save_to_disk "
                              f"({type(e).__name__}: {one_line(e)})") from None
    elif cfg.download:
        try:
            data = datasets.load_dataset(cfg.path)
        except Exception as e:  # noqa: BLE001 - offline, an unknown name
            raise ConfigError(f"dataset.path={cfg.path!r} is invalid: datasets.load_dataset failed "
                              f"({type(e).__name__}: {one_line(e)})") from None
    else:
        raise ConfigError(f"dataset.path: {folder} not found: expected a Hugging Face dataset saved with "
                          f"DatasetDict.save_to_disk, or a Hub name with dataset.download=true (needs internet)")
    if not isinstance(data, datasets.DatasetDict):
        raise ConfigError(f"dataset.path: {cfg.path} holds one split ({type(data).__name__}): allowed a "
                          f"DatasetDict with the splits dataset.train_split={cfg.train_split!r} and "
                          f"dataset.test_split={cfg.test_split!r}")
    return data


def splits_of(cfg, data) -> dict:
    out = {}
    for key, role in (("train_split", "train"), ("test_split", "test")):
        name = getattr(cfg, key)
        if name not in data:
            raise ConfigError(f"dataset.{key}={name!r} is invalid: allowed one of {', '.join(data)} (the splits of "
                              f"{cfg.path})")
        out[role] = data[name]
    return out


def column(cfg, table, key: str, role: str):
    """The feature of the column ``dataset.<key>`` names; ConfigError listing the columns when it is absent."""
    name = getattr(cfg, key)
    if name not in table.column_names:
        raise ConfigError(f"dataset.{key}={name!r} is invalid: allowed a column of {cfg.path} (split "
                          f"{getattr(cfg, role + '_split')}: {', '.join(table.column_names)})")
    return table.features[name]


def read_labels(cfg, parts: dict) -> tuple[dict, int]:
    """Each split's labels (int64 when they are integers; check_splits refuses the rest) and the classes."""
    import datasets

    labels, classes = {}, None
    for role, table in parts.items():
        feature = column(cfg, table, "label_key", role)
        if isinstance(feature, datasets.ClassLabel):
            classes = feature.num_classes
        values = np.asarray(table.select_columns([cfg.label_key]).with_format("numpy")[cfg.label_key])
        labels[role] = torch.as_tensor(values, dtype=torch.int64) if values.dtype.kind in "iu" else values
    if classes is None:
        ints = [y for y in labels.values() if isinstance(y, torch.Tensor) and y.numel()]
        classes = max(2, max(int(y.max()) for y in ints) + 1) if ints else 2
    return labels, classes


@register_dataset("hf", HFImagesConfig)
def load_hf_images(cfg: HFImagesConfig) -> Splits:
    import datasets

    parts = splits_of(cfg, open_dataset(cfg))
    labels, classes = read_labels(cfg, parts)
    sets = {}
    for role, table in parts.items():
        feature = column(cfg, table, "image_key", role)
        if not isinstance(feature, datasets.Image):
            raise ConfigError(f"dataset.image_key={cfg.image_key!r} is invalid: column {cfg.image_key} of "
                              f"{cfg.path} holds {type(feature).__name__}, not images (allowed an Image column)")
        samples = TableImages(table, cfg.image_key, cfg.channels, f"{cfg.path} split {getattr(cfg, role + '_split')}")
        kept = check_samples(samples, cfg.verify, cfg.on_corrupt, "dataset.path", cfg.num_workers)
        y = labels[role]
        if kept is not samples:
            y = y[torch.from_numpy(kept.index)] if isinstance(y, torch.Tensor) else y[kept.index]
        sets[role] = (kept, y)
    return image_splits(cfg, sets, classes)


@register_dataset("hf_text", HFTextConfig)
def load_hf_text(cfg: HFTextConfig) -> Splits:
    import datasets

    parts = splits_of(cfg, open_dataset(cfg))
    labels, classes = read_labels(cfg, parts)
    sets = {}
    for role, table in parts.items():
        keys = ["text_key"] + (["text_pair_key"] if cfg.text_pair_key is not None else [])
        for key in keys:
            feature = column(cfg, table, key, role)
            if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
                raise ConfigError(f"dataset.{key}={getattr(cfg, key)!r} is invalid: column {getattr(cfg, key)} of "
                                  f"{cfg.path} holds {feature}, not text (allowed a string column)")
        first = table[cfg.text_key]
        second = table[cfg.text_pair_key] if cfg.text_pair_key is not None else [None] * len(table)
        sets[role] = ([(a, b) for a, b in zip(first, second)], labels[role])
    return Splits(sets, classes, mean=None, std=None, text="pair" if cfg.pair else "single")
