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

Before training, each split is probed (:func:`probe`): item 0, the last item and up to :data:`PROBES` evenly
spaced between (66 items at most: a sample, not every item, which is read only where the labels are) must be
readable ``(input, label)`` pairs with finite inputs (NaN and inf refused), and their inputs must share one shape
as the loader will see them (after the transforms the split gets); a split of len() 0, a len() that counts more
items than the dataset gives (item ``len - 1`` raising IndexError), and samples of several sizes are refused
naming the class.
"""
from __future__ import annotations

import builtins
import importlib
import inspect
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import MISSING

from lstsd.data.readers.images import ImageDataConfig, image_splits
from lstsd.data.types import Splits, inferred_classes, labels
from lstsd.data.samples import ObjectSamples, UnreadableSample, as_tensor
from lstsd.errors import ConfigError, one_line, require
from lstsd.registry import register_dataset

log = logging.getLogger(__name__)

PROBES = 64  # items read from each split before training besides the first and the last (evenly spaced)


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
    """The split's labels: its ``targets`` (or ``labels``) attribute where it has one of the right length, else
    every item's label (each item read with :func:`read_item`'s checks)."""
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
        label = read_item(ds, i, target, role)[1]
        out.append(int(label) if isinstance(label, torch.Tensor) and label.numel() == 1 else label)
    return np.asarray(out)


def read_item(ds, i: int, target: str, role: str):
    """Item ``i`` of a split, an ``(input, label)`` pair; ConfigError naming the class when it cannot be read (an
    IndexError before the end of its len(): a len() that counts items the dataset does not give)."""
    try:
        item = ds[i]
    except Exception as e:  # noqa: BLE001 - whatever its reading raises
        if isinstance(e, IndexError) and i > 0:
            raise ConfigError(f"dataset._target_={target}: its {role} split has len() {len(ds)}, but item {i} "
                              f"cannot be read (IndexError: {one_line(e)}): allowed a len() that counts the items "
                              f"it gives") from None
        raise ConfigError(f"dataset._target_={target}: item {i} of its {role} split cannot be read "
                          f"({type(e).__name__}: {one_line(e)})") from None
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise ConfigError(f"dataset._target_={target!r} is invalid: item {i} of its {role} split is a "
                          f"{type(item).__name__}, not (input, label)")
    return item


def probe_indices(n: int) -> list[int]:
    """Item 0, the last item and up to :data:`PROBES` evenly spaced between, in order, each once."""
    return sorted({int(i) for i in np.linspace(0, n - 1, min(n, PROBES + 2)).round()})


def probe(ds, target: str, role: str) -> list[tuple[int, torch.Tensor]]:
    """(index, input as a tensor) of the items :func:`probe_indices` picks, each a readable ``(input, label)``
    whose input is an image, an array or a tensor of finite numbers (NaN and inf refused naming the item)."""
    out = []
    for i in probe_indices(len(ds)):
        x = read_item(ds, i, target, role)[0]
        try:
            x = as_tensor(x, f"{target} ({role})[{i}]")
        except UnreadableSample as e:
            raise ConfigError(f"dataset._target_={target!r} is invalid: {e.where}: {e.problem}") from None
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ConfigError(f"dataset._target_={target}: item {i} of its {role} split holds {bad} non-finite "
                              f"input values (NaN or inf): allowed finite numbers")
        out.append((i, x))
    return out


def loader_transform(splits: Splits, cfg, role: str):
    """The per-sample transform the loader gives ``role``'s inputs (the streaming loader's choice); None for the
    in-memory loaders, which transform nothing (the pad-crop-flip keeps the shape)."""
    if cfg.loader != "stream":
        return None
    if role == "train" and cfg.augment and splits.augment == "transforms":
        return splits.train_transform
    return splits.eval_transform


def same_shapes(inputs: list, transform, target: str, role: str) -> None:
    """The probed inputs of a split have one shape as the loader sees them (after ``transform``, drawn from a
    generator seeded here, the run's own left as they were), and are tensors: samples of several sizes are
    refused naming two items, before training rather than at the first batch that mixes them."""
    shapes, state = [], random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(0)
        random.seed(0)
        for i, x in inputs:
            try:
                y = x if transform is None else transform(x)
            except Exception as e:  # noqa: BLE001 - a transform that refuses its input
                raise ConfigError(f"dataset: the transforms failed on {target} ({role})[{i}] ({type(e).__name__}: "
                                  f"{one_line(e)})") from None
            if not isinstance(y, torch.Tensor):
                kind = f"{type(y).__module__}.{type(y).__qualname__}"
                raise ConfigError(f"dataset: the transforms return a {kind} for {target} ({role})[{i}], not a "
                                  f"tensor: allowed transforms that return a tensor (no ToPILImage last)")
            shapes.append((i, "x".join(map(str, y.shape))))
    random.setstate(state)
    other = next(((i, s) for i, s in shapes if s != shapes[0][1]), None)
    if other is not None:
        after = " after the transforms" if transform is not None else ""
        raise ConfigError(f"dataset._target_={target}: items of its {role} split have different shapes{after} "
                          f"(item {shapes[0][0]}: {shapes[0][1]}, item {other[0]}: {other[1]}): allowed one shape "
                          f"per split (dataset.loader=stream with transforms of a fixed output size, such as "
                          f"Resize + CenterCrop)")


def class_count(datasets: dict, sets: dict, target: str) -> int:
    """``len(ds.classes)`` of the splits that have it, else the largest label + 1 (:func:`inferred_classes`)."""
    named = [len(n) for ds in datasets.values() if isinstance(n := getattr(ds, "classes", None), (list, tuple))]
    if any(named):
        return max(named)
    ints = {role: int(y.max()) for role, (_, y) in sets.items() if isinstance(y, torch.Tensor) and y.numel()}
    if not ints:
        return 2
    role = max(ints, key=ints.get)
    return inferred_classes(ints[role], sum(len(y) for _, y in sets.values()), f"dataset._target_={target}: its "
                            f"{role} split")


@register_dataset("torchvision", ClassDatasetConfig)
def load_class(cfg: ClassDatasetConfig) -> Splits:
    """Both splits of the class, each probed before training (see the module docstring)."""
    target = cfg._target_
    cls = locate(target)
    datasets, sets, probed = {}, {}, {}
    splits = (("train", {"train": True} if cfg.train_kwargs is None else cfg.train_kwargs),
              ("test", {"train": False} if cfg.test_kwargs is None else cfg.test_kwargs))
    for role, split_kwargs in splits:
        ds = datasets[role] = call(cls, target, cfg, split_kwargs, role)
        if not len(ds):
            raise ConfigError(f"dataset._target_={target}: its {role} split is empty (len() is 0): allowed at least "
                              f"one item")
        probed[role] = probe(ds, target, role)
        sets[role] = (ObjectSamples(ds, f"{target} ({role})"), labels(labels_of(ds, target, role)))
    result = image_splits(cfg, sets, class_count(datasets, sets, target))
    for role, inputs in probed.items():
        same_shapes(inputs, loader_transform(result, cfg, role), target, role)
    return result
