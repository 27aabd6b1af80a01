"""``dataset=torchvision``: any torchvision-style dataset class, named by ``dataset._target_``.

The class (``torchvision.datasets.FashionMNIST``, ``torchvision.datasets.SVHN``, a class of one's own) is
imported and called once per split with ``dataset.kwargs`` plus ``dataset.train_kwargs`` (null:
``{train: true}``) or ``dataset.test_kwargs`` (null: ``{train: false}``; ``{split: test}`` for classes that
take a split name), and with ``root=dataset.root`` and ``download=dataset.download`` where its signature has
them. Each of the three is given whole (``dataset.test_kwargs={split:test}`` replaces the default). The
object must behave as torchvision's datasets do: ``len(ds)`` samples, ``ds[i] -> (input, label)`` with a PIL
image, an array or a tensor as input and an integer label.

Labels are read from its ``targets`` (or ``labels``) attribute when it has one of the right length, otherwise
from every sample once; the number of classes is ``len(ds.classes)`` when it has that, else the largest label
+ 1. Inputs are read by the streaming loader's workers (``ds[i]``), with ``dataset.train_transforms`` and
``dataset.eval_transforms`` applied to them as tensors; the class's own ``transform`` argument is not used.
"""
from __future__ import annotations

import builtins
import importlib
import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import MISSING

from lstsd.data.types import labels
from lstsd.data.readers.images import ImageDataConfig, image_splits
from lstsd.data.types import Splits
from lstsd.data.samples import ObjectSamples, UnreadableSample, as_tensor
from lstsd.errors import ConfigError, one_line, require
from lstsd.registry import register_dataset

log = logging.getLogger(__name__)


@dataclass
class ClassDatasetConfig(ImageDataConfig):
    """A torchvision-style dataset class: ``cls(**kwargs, **train_kwargs)`` and ``cls(**kwargs, **test_kwargs)``."""
    _target_: str = MISSING  # the class (or any callable returning such a dataset), by its import path
    # arguments (null: none; each given whole on the command line, dataset.kwargs={size:100}, which replaces it)
    kwargs: Any = None  # given to both splits (a dict)
    train_kwargs: Any = None  # null: {train: true}
    test_kwargs: Any = None  # null: {train: false}

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("kwargs", "train_kwargs", "test_kwargs"):
            value = getattr(self, key)
            require(value is None or isinstance(value, dict), f"dataset.{key}",
                    "null or the arguments as a dict ({name: value, ...})", value)


def import_path(path: str):
    """The object a dotted path names: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    if len(parts) == 1:
        return getattr(builtins, path)
    for i in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                continue  # a shorter prefix may be the module
            raise
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(f"No module named {parts[0]!r}", name=parts[0])


def locate(target: str):
    try:
        obj = import_path(target)
    except Exception as e:  # noqa: BLE001 - ImportError, AttributeError, a module that fails to import
        raise ConfigError(f"dataset._target_={target!r} is invalid: it cannot be imported ({type(e).__name__}: "
                          f"{one_line(e)})") from None
    if not callable(obj):
        raise ConfigError(f"dataset._target_={target!r} is invalid: it is a {type(obj).__name__}, not a class")
    return obj


def call(cls, target: str, cfg, split_kwargs: dict, role: str):
    kwargs = dict(cfg.kwargs or {}) | dict(split_kwargs)
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    for key, value in (("root", cfg.root), ("download", cfg.download)):
        if key in params and key not in kwargs:
            kwargs[key] = value
    try:
        ds = cls(**kwargs)
    except Exception as e:  # noqa: BLE001 - its own argument checks, missing files
        raise ConfigError(f"dataset._target_={target}: its {role} split cannot be made with "
                          f"{', '.join(f'{k}={v!r}' for k, v in kwargs.items()) or 'no arguments'} "
                          f"({type(e).__name__}: {one_line(e)})") from None
    if isinstance(ds, (str, bytes, Mapping)) or not (hasattr(ds, "__len__") and hasattr(ds, "__getitem__")):
        raise ConfigError(f"dataset._target_={target!r} is invalid: it returned a {type(ds).__name__}, not a "
                          f"dataset (allowed a class whose objects have len() and [i] -> (input, label))")
    return ds


def labels_of(ds, target: str, role: str) -> np.ndarray:
    n = len(ds)
    for attr in ("targets", "labels"):
        values = getattr(ds, attr, None)
        if values is not None and not callable(values):
            try:
                arr = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values)
            except Exception:  # noqa: BLE001 - an attribute of another meaning
                continue
            if arr.ndim == 1 and len(arr) == n:
                return arr
    log.info(f"dataset: {target} ({role}) has no targets attribute: reading its {n} labels sample by sample")
    out = []
    for i in range(n):
        item = first_item(ds, target, role) if i == 0 else ds[i]
        label = item[1]
        out.append(int(label) if isinstance(label, torch.Tensor) and label.numel() == 1 else label)
    return np.asarray(out)


def first_item(ds, target: str, role: str):
    try:
        item = ds[0]
    except Exception as e:  # noqa: BLE001 - whatever its reading raises
        raise ConfigError(f"dataset._target_={target}: item 0 of its {role} split cannot be read "
                          f"({type(e).__name__}: {one_line(e)})") from None
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise ConfigError(f"dataset._target_={target!r} is invalid: item 0 of its {role} split is a "
                          f"{type(item).__name__}, not (input, label)")
    try:
        as_tensor(item[0], f"{target} ({role})[0]")
    except UnreadableSample as e:
        raise ConfigError(f"dataset._target_={target!r} is invalid: {e.where}: {e.problem}") from None
    return item


@register_dataset("torchvision", ClassDatasetConfig)
def load_class(cfg: ClassDatasetConfig) -> Splits:
    target = cfg._target_
    cls = locate(target)
    sets, classes = {}, 0
    splits = (("train", {"train": True} if cfg.train_kwargs is None else cfg.train_kwargs),
              ("test", {"train": False} if cfg.test_kwargs is None else cfg.test_kwargs))
    for role, split_kwargs in splits:
        ds = call(cls, target, cfg, split_kwargs, role)
        if len(ds):
            first_item(ds, target, role)
        y = labels_of(ds, target, role)
        sets[role] = (ObjectSamples(ds, f"{target} ({role})"), labels(y))
        names = getattr(ds, "classes", None)
        if isinstance(names, (list, tuple)) and names:
            classes = max(classes, len(names))
    if not classes:
        ints = [y for _, y in sets.values() if isinstance(y, torch.Tensor) and y.numel()]
        classes = max(2, max(int(y.max()) for y in ints) + 1) if ints else 2
    return image_splits(cfg, sets, classes)
