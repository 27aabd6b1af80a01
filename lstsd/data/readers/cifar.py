"""``dataset=cifar10`` / ``dataset=cifar100``: the standard CIFAR python-pickle folders under ``dataset.root``
(``cifar-10-batches-py/data_batch_1..5, test_batch`` and ``cifar-100-python/train, test``, fine labels).

With ``dataset.download=true`` torchvision fetches and unpacks the archive when the machine is online; the
files are always read by the reader below. Training augmentation is the standard pad-4 crop and flip.

Each file is a pickled dict (read with ``encoding="latin1"``, as the official archive needs) whose keys are
str (``"data"``, ``"labels"`` / ``"fine_labels"``, the official files) or bytes (``b"data"``, ...: the
archive re-saved by Python 3 tools). Every file is checked before training: it must unpickle to a dict with
the data and label keys, the data must be uint8 pixels (integers in 0..255) shaped N x 3072 (or
N x 3 x 32 x 32), and the labels N integers in [0, classes). Anything else is refused with a one-line
:class:`~lstsd.config.ConfigError` that names the file and the problem.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lstsd.config import DatasetConfig
from lstsd.data.types import Splits, tensors
from lstsd.errors import ConfigError
from lstsd.registry import register_dataset

# name: (folder, training files, test files, label key, classes, mean, std, torchvision class)
CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10,
                (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100,
                 (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "CIFAR100"),
}
PIXELS = 3 * 32 * 32
_ABSENT = object()


def _flat(text: object) -> str:
    """One line: any whitespace run (newlines included) becomes one space."""
    return " ".join(str(text).split())


def _lookup(entry: dict, key: str):
    """``entry[key]`` under the str key or its bytes twin; ``_ABSENT`` when neither is there."""
    for k in (key, key.encode("latin1")):
        if k in entry:
            return entry[k]
    return _ABSENT


def _keys(entry: dict) -> str:
    names = sorted((repr(k) for k in entry), key=lambda r: r.lstrip("b"))
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
    return shown or "none"


def _load_entry(path: Path):
    """The unpickled object, or a one-line problem (str) when the file cannot be read as a pickle."""
    try:
        if path.stat().st_size == 0:
            return None, "the file is empty"
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1"), None
    except OSError as e:
        return None, f"it cannot be read ({_flat(e.strerror or e)})"
    except Exception as e:  # noqa: BLE001 - whatever unpickling raises, the file is not a readable batch
        detail = f"{type(e).__name__}: {_flat(e)}"
        if isinstance(e, EOFError) or "truncated" in str(e):
            return None, f"the pickle is truncated ({detail})"
        return None, f"not a readable pickle ({detail})"


def check_batch(entry, label_key: str, classes: int):
    """``((images uint8 N x 3 x 32 x 32, labels: N integers), None)`` from one unpickled batch, or
    ``(None, problem)`` with a one-line problem (str)."""
    if not isinstance(entry, dict):
        return None, f"the pickle holds a {type(entry).__name__}, not a dict"
    for key in ("data", label_key):
        if _lookup(entry, key) is _ABSENT:
            return None, f"it has no {key!r} key (str or bytes); its keys: {_keys(entry)}"
    try:
        data = np.asarray(_lookup(entry, "data"))
    except Exception:  # noqa: BLE001 - e.g. a ragged list
        return None, "data is not an array of pixels"
    if data.size == 0:
        return None, "data holds no images"
    if data.dtype != np.uint8:
        if data.dtype.kind not in "iu":
            return None, f"data has dtype {data.dtype}: allowed uint8 pixels (integers in 0..255)"
        if data.min() < 0 or data.max() > 255:
            return None, f"data holds values in {data.min()}..{data.max()}: allowed uint8 pixels (0..255)"
    if not ((data.ndim == 2 and data.shape[1] == PIXELS) or (data.ndim == 4 and data.shape[1:] == (3, 32, 32))):
        return None, (f"data has shape {tuple(data.shape)}: allowed N x {PIXELS} values "
                      f"(N images of 3 x 32 x 32, channel-major)")
    n = data.shape[0]
    try:
        labels = np.asarray(_lookup(entry, label_key))
    except Exception:  # noqa: BLE001 - e.g. a ragged list
        return None, f"{label_key} is not a list of integers"
    if labels.ndim != 1:
        return None, f"{label_key} has shape {tuple(labels.shape)}: allowed a list of {n} integers"
    if labels.shape[0] != n:
        return None, f"{label_key} hold {labels.shape[0]} values for {n} images"
    if labels.dtype.kind not in "iu":
        return None, f"{label_key} have dtype {labels.dtype}: allowed integers in [0, {classes})"
    bad = labels[(labels < 0) | (labels >= classes)]
    if bad.size:
        return None, f"{label_key} hold {bad.size} value(s) outside [0, {classes}) (the first: {bad[0]})"
    return (np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32), labels), None


def read_batches(folder: Path, files: list, label_key: str, classes: int | None = None,
                 title: str = "CIFAR") -> tuple:
    """The images and labels of ``files`` in order, each file checked (see the module docstring)."""
    if classes is None:
        classes = next(c[4] for c in CIFAR.values() if c[3] == label_key)
    xs, ys = [], []
    for name in files:
        path = folder / name
        entry, problem = _load_entry(path)
        if problem is None:
            batch, problem = check_batch(entry, label_key, classes)
        if problem is not None:
            raise ConfigError(f"dataset.root: {path.resolve()} is not a {title} batch: {problem}")
        x, y = batch
        xs.append(x)
        ys.append(y)
    return tensors(np.concatenate(xs), np.concatenate(ys))


def load_cifar(cfg, name: str) -> Splits:
    folder_name, train_files, test_files, label_key, classes, mean, std, tv_class = CIFAR[name]
    root = Path(cfg.root).expanduser()
    folder = root / folder_name
    complete = lambda: all((folder / f).is_file() for f in train_files + test_files)  # noqa: E731
    if not complete() and cfg.download:
        import torchvision

        getattr(torchvision.datasets, tv_class)(str(root), download=True)
    if not complete():
        raise ConfigError(
            f"dataset.root: {name} not found: expected the python-pickle folder {folder.resolve()} with "
            f"{', '.join(train_files + test_files)}; set dataset.root=<folder containing {folder_name}> "
            f"or dataset.download=true (needs internet)"
        )
    title = f"CIFAR-{name[len('cifar'):]}"
    sets = {split: read_batches(folder, files, label_key, classes, title)
            for split, files in (("train", train_files), ("test", test_files))}
    return Splits(sets, classes, mean, std, scale=255.0, augment="crop_flip")


@dataclass
class CIFARConfig(DatasetConfig):
    """CIFAR's keys are every dataset's; its files are the python-pickle folder under ``dataset.root``."""

    def inputs(self) -> list[str]:
        return [str(Path(self.root) / CIFAR[self.name][0])]


for _name in CIFAR:
    register_dataset(_name, CIFARConfig)(lambda cfg, _name=_name: load_cifar(cfg, _name))
