"""``dataset=cifar10`` / ``dataset=cifar100``: the standard CIFAR python-pickle folders under ``dataset.root``
(``cifar-10-batches-py/data_batch_1..5, test_batch`` and ``cifar-100-python/train, test``, fine labels).

With ``dataset.download=true`` torchvision fetches and unpacks the archive when the machine is online; the
files are always read by the reader below. Training augmentation is the standard pad-4 crop and flip.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from lstsd.data import register_dataset, tensors
from lstsd.data.loader import Splits

# name: (folder, training files, test files, label key, classes, mean, std, torchvision class)
CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10,
                (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100,
                 (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "CIFAR100"),
}


def read_batches(folder: Path, files: list, label_key: str) -> tuple:
    xs, ys = [], []
    for name in files:
        with open(folder / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.extend(entry[label_key])
    return tensors(np.concatenate(xs), np.asarray(ys))


def load_cifar(cfg, name: str) -> Splits:
    from lstsd.config import ConfigError

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
    sets = {"train": read_batches(folder, train_files, label_key), "test": read_batches(folder, test_files, label_key)}
    return Splits(sets, classes, mean, std, scale=255.0, augment="crop_flip")


for _name in CIFAR:
    register_dataset(_name)(lambda cfg, _name=_name: load_cifar(cfg, _name))
