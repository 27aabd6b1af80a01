"""``dataset=imagefolder`` and ``dataset=imagenet``: torchvision's ImageFolder layout under ``dataset.root``.

``<root>/<train_dir>/<class>/<image>`` for training and ``<root>/<test_dir>/<class>/<image>`` for evaluation
(``train`` and ``val`` by default), images in any format torchvision's ImageFolder lists (JPEG, PNG, BMP, PPM,
PGM, TIFF, WebP). Classes are the training folder's sub-folders in sorted order, as ImageFolder numbers them
(torchvision's own ``find_classes`` and ``make_dataset`` scan the tree); the evaluation folder must hold the same
class folders, so that a class has the same number in both. ImageNet is this layout with its 1,000 synset
folders (the validation images moved into class folders, as torchvision's reference scripts expect).

Nothing is decoded here but what ``dataset.verify`` asks: the splits are lists of files
(:class:`~lstsd.data.samples.ImageFiles`), read by the streaming loader's workers while training.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lstsd.data.readers.images import FileImagesConfig, image_splits
from lstsd.data.types import Splits
from lstsd.data.samples import ImageFiles
from lstsd.data.workers import check_samples
from lstsd.errors import ConfigError, require
from lstsd.registry import register_dataset


@dataclass
class ImageFolderConfig(FileImagesConfig):
    """An ImageFolder tree: ``root/train_dir/<class>/<image>``, ``root/test_dir/<class>/<image>``."""
    train_dir: str = "train"
    test_dir: str = "val"

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("train_dir", "test_dir"):
            value = getattr(self, key)
            require(bool(value) and not os.path.isabs(value) and ".." not in Path(value).parts, f"dataset.{key}",
                    "a folder name under dataset.root", value)


def layout(root: Path, cfg) -> str:
    return (f"expected the ImageFolder layout {root}/{cfg.train_dir}/<class>/<image> and "
            f"{root}/{cfg.test_dir}/<class>/<image>")


def scan(folder: Path, class_to_idx: dict, allow_empty: bool) -> tuple[np.ndarray, np.ndarray]:
    """(relative file names as bytes, class numbers) of the images under ``folder``, by torchvision's
    ``make_dataset`` (ImageFolder's scan, its extensions), in its order."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    try:
        found = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=allow_empty)
    except FileNotFoundError as e:  # a class folder without any image file
        raise ConfigError(f"dataset.root: {folder}: {' '.join(str(e).split())}") from None
    base = str(folder)
    names = np.array([os.fsencode(os.path.relpath(path, base)) for path, _ in found], dtype=np.bytes_)
    labels = np.fromiter((c for _, c in found), dtype=np.int64, count=len(found))
    return names, labels


def classes_of(folder: Path) -> list[str]:
    from torchvision.datasets.folder import find_classes

    try:
        return find_classes(str(folder))[0]
    except FileNotFoundError:
        raise ConfigError(f"dataset.root: {folder} has no class folders: expected one sub-folder per class, "
                          f"holding its images") from None


@register_dataset("imagefolder", ImageFolderConfig)
@register_dataset("imagenet", ImageFolderConfig)
def load_imagefolder(cfg: ImageFolderConfig) -> Splits:
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"dataset.root: {root} not found: {layout(root, cfg)}")
    folders = {split: root / sub for split, sub in (("train", cfg.train_dir), ("test", cfg.test_dir))}
    for split, folder in folders.items():
        if not folder.is_dir():
            raise ConfigError(f"dataset.root: {root} has no {folder.name}/ folder: {layout(root, cfg)}")
    classes = classes_of(folders["train"])
    test_classes = classes_of(folders["test"])
    missing = sorted(set(classes) - set(test_classes))
    if missing:
        raise ConfigError(f"dataset.root: class folder {missing[0]!r} is in {folders['train']} but not in "
                          f"{folders['test']}" + (f" ({len(missing) - 1} more)" if len(missing) > 1 else "") +
                          ": both must hold the same class folders (their sorted order numbers the classes)")
    extra = sorted(set(test_classes) - set(classes))
    if extra:
        raise ConfigError(f"dataset.root: class folder {extra[0]!r} is in {folders['test']} but not in "
                          f"{folders['train']}" + (f" ({len(extra) - 1} more)" if len(extra) > 1 else "") +
                          ": both must hold the same class folders (their sorted order numbers the classes)")
    class_to_idx = {c: i for i, c in enumerate(classes)}
    sets = {}
    for split, folder in folders.items():
        names, labels = scan(folder, class_to_idx, allow_empty=split == "test")
        files = ImageFiles(str(folder), names, cfg.channels)
        kept = check_samples(files, cfg.verify, cfg.on_corrupt, "dataset.root", cfg.num_workers)
        if kept is not files:
            labels = labels[kept.index]
        sets[split] = (kept, torch.from_numpy(labels))
    return image_splits(cfg, sets, len(classes))
