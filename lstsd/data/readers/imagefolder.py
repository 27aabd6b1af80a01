"""``dataset=imagefolder`` and ``dataset=imagenet``: torchvision's ImageFolder layout under ``dataset.root``.

``<root>/<train_dir>/<class>/<image>`` for training and ``<root>/<test_dir>/<class>/<image>`` for evaluation
(``train`` and ``val`` by default), images in any format torchvision's ImageFolder lists (JPEG, PNG, BMP, PPM,
PGM, TIFF, WebP). Classes are the training folder's sub-folders in sorted order, as ImageFolder numbers them
(at least 2); the evaluation folder must hold the same class folders, so that a class has the same number in
both. ImageNet is this layout with its 1,000 synset folders (the validation images moved into class folders, as
torchvision's reference scripts expect).

The tree is scanned here as torchvision's ``find_classes`` and ``make_dataset`` scan it (the same files, the same
order, links to folders followed), except that nothing is left out silently: a folder that cannot be listed, a
link back into the tree (a loop), and an image name that is not a regular, readable file (a FIFO, a broken link,
no read permission) are refused by name before training. Nothing is decoded here but what ``dataset.verify``
asks: the splits are lists of files (:class:`~lstsd.data.samples.ImageFiles`), read by the streaming loader's
workers while training.
"""
from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lstsd.data.readers.images import FileImagesConfig, image_splits
from lstsd.data.types import Splits
from lstsd.data.samples import ImageFiles
from lstsd.data.workers import check_samples
from lstsd.errors import ConfigError, require
from lstsd.registry import register_dataset

log = logging.getLogger(__name__)


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

    def inputs(self) -> list[str]:
        return [str(Path(self.root) / self.train_dir), str(Path(self.root) / self.test_dir)]


def layout(root: Path, cfg) -> str:
    return (f"expected the ImageFolder layout {root}/{cfg.train_dir}/<class>/<image> and "
            f"{root}/{cfg.test_dir}/<class>/<image>")


def listing(folder: str) -> list:
    """The entries of ``folder`` sorted by name; ConfigError naming it when it cannot be listed (no read or
    search permission: ``os.walk``, torchvision's scan, leaves such a folder out without a word)."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as e:
        raise ConfigError(f"dataset.root: {folder} cannot be listed ({e.strerror or type(e).__name__}): allowed "
                          f"folders the run can read (fix their permissions)") from None


def inside(real: str, tree: str) -> bool:
    return real == tree or real.startswith(tree.rstrip(os.sep) + os.sep)


def walk(top: str, tree: str, seen: set) -> list[tuple[str, list]]:
    """(folder, [(file, its problem or None)]) of the class folder ``top`` and of every folder below it (the
    entries with an image extension), links to folders followed as torchvision's scan follows them, sorted by
    folder path as ``make_dataset`` sorts them. A link to a folder inside ``tree`` (the split folder) or to one
    already ``seen`` (real paths) is refused naming it: a loop, or the same images listed twice."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    tree_real, found = os.path.realpath(tree), []
    stack = [(top, os.path.realpath(top), top if os.path.islink(top) else None)]
    while stack:
        path, real, via = stack.pop()
        if real in seen or (via is not None and inside(real, tree_real)):
            raise ConfigError(f"dataset.root: {via or path} is a link back to {real}, a folder the scan of {tree} "
                              f"reaches anyway (a loop, or the same images listed twice): allowed links to "
                              f"folders outside it")
        seen.add(real)
        files, folders = [], []
        for entry in listing(path):
            if entry.is_dir():  # follows links, as os.walk(followlinks=True)
                link = entry.is_symlink()
                folders.append((entry.path, os.path.realpath(entry.path) if link else os.path.join(real, entry.name),
                                entry.path if link else via))
            elif entry.name.lower().endswith(IMG_EXTENSIONS):  # a readable regular file, or why it is not
                ok = entry.is_file() and os.access(entry.path, os.R_OK)
                files.append((entry.path, None if ok else file_problem(entry)))
        found.append((path, files))
        stack.extend(reversed(folders))
    return sorted(found, key=lambda f: f[0])


def file_problem(entry: os.DirEntry) -> Optional[str]:
    """Why an entry with an image extension is no image file the workers can read, or None: not a regular file
    (a FIFO, a socket, a device: never opened, since opening a FIFO waits for a writer forever), a broken link,
    or no read permission (``os.access``: one call per file, as cheap as the scan's own listing)."""
    try:
        if entry.is_file():  # follows links
            return None if os.access(entry.path, os.R_OK) else "cannot be read (permission denied)"
        mode = os.stat(entry.path).st_mode
    except OSError as e:  # a broken link, a loop of links
        return f"cannot be read ({e.strerror or type(e).__name__})"
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else \
        "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file"
    return f"is {kind}, not a regular file (never opened)"


def usable(files: list, on_corrupt: str) -> np.ndarray:
    """Which of ``files`` ((path, problem or None)) are regular, readable files; the others are refused naming
    the first (``dataset.on_corrupt=error``) or left out with a warning (``skip``), as unreadable images are."""
    bad = [(path, problem) for path, problem in files if problem is not None]
    keep = np.fromiter((problem is None for _, problem in files), dtype=bool, count=len(files))
    if not bad:
        return keep
    if on_corrupt == "error":
        path, problem = bad[0]
        more = f" ({len(bad) - 1} more such files)" if len(bad) > 1 else ""
        raise ConfigError(f"dataset.root: {path} {problem}{more}: allowed regular, readable image files (remove "
                          f"it, or set dataset.on_corrupt=skip to leave such files out with a warning)")
    for path, problem in bad[:10]:
        log.warning(f"dataset: left out {path}: it {problem}")
    if len(bad) > 10:
        log.warning(f"dataset: left out {len(bad) - 10} more files that are not regular, readable files")
    return keep


def scan(folder: Path, classes: list, allow_empty: bool, on_corrupt: str) -> tuple[np.ndarray, np.ndarray]:
    """(relative file names as bytes, class numbers) of the images under ``folder``: torchvision's
    ``make_dataset`` (ImageFolder's scan, its extensions, its order), with :func:`walk`'s and :func:`usable`'s
    checks; a class folder without any image file is refused in the training folder."""
    base, seen = str(folder), {os.path.realpath(folder)}
    files, labels, empty = [], [], []
    for c, name in enumerate(classes):
        top = os.path.join(base, name)
        if not os.path.isdir(top):
            continue  # a class of the training folder absent here: refused before the scan
        count = len(files)
        for _, found in walk(top, base, seen):
            files += found
            labels += [c] * len(found)
        if len(files) == count:
            empty.append(name)
    if empty and not allow_empty:
        raise ConfigError(f"dataset.root: {folder}: class folder {empty[0]!r} holds no image file"
                          + (f" ({len(empty) - 1} more)" if len(empty) > 1 else "") +
                          ": allowed folders of images with the extensions torchvision's ImageFolder reads")
    keep = usable(files, on_corrupt)
    cut = len(os.path.join(base, ""))  # every path is base/<class>/...: the relative name is its tail
    names = np.array([os.fsencode(path[cut:]) for (path, _), k in zip(files, keep) if k], dtype=np.bytes_)
    return names, np.asarray(labels, dtype=np.int64)[keep]


def classes_of(folder: Path, least: int = 1) -> list[str]:
    """Its sub-folders (links to folders count), sorted: torchvision's ``find_classes``; at least ``least``."""
    classes = sorted(e.name for e in listing(str(folder)) if e.is_dir())
    if not classes:
        raise ConfigError(f"dataset.root: {folder} has no class folders: expected one sub-folder per class, "
                          f"holding its images")
    if len(classes) < least:
        raise ConfigError(f"dataset.root: {folder} holds 1 class folder ({classes[0]!r}): allowed at least 2 "
                          f"class folders (one per class, holding its images)")
    return classes


def same_classes(classes: list, test_classes: list, folders: dict) -> None:
    """The training and evaluation folders hold the same class folders (their sorted order numbers them)."""
    for mine, other, here, there in ((classes, test_classes, "train", "test"),
                                     (test_classes, classes, "test", "train")):
        missing = sorted(set(mine) - set(other))
        if missing:
            raise ConfigError(f"dataset.root: class folder {missing[0]!r} is in {folders[here]} but not in "
                              f"{folders[there]}" + (f" ({len(missing) - 1} more)" if len(missing) > 1 else "") +
                              ": both must hold the same class folders (their sorted order numbers the classes)")


@register_dataset("imagefolder", ImageFolderConfig)
@register_dataset("imagenet", ImageFolderConfig)
def load_imagefolder(cfg: ImageFolderConfig) -> Splits:
    """The tree's two splits; the refused trees: see the module docstring, :func:`classes_of`, :func:`scan`."""
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"dataset.root: {root} not found: {layout(root, cfg)}")
    folders = {split: root / sub for split, sub in (("train", cfg.train_dir), ("test", cfg.test_dir))}
    for split, folder in folders.items():
        if not folder.is_dir():
            raise ConfigError(f"dataset.root: {root} has no {folder.name}/ folder: {layout(root, cfg)}")
    classes = classes_of(folders["train"], least=2)
    same_classes(classes, classes_of(folders["test"]), folders)
    sets = {}
    for split, folder in folders.items():
        names, labels = scan(folder, classes, allow_empty=split == "test", on_corrupt=cfg.on_corrupt)
        files = ImageFiles(str(folder), names, cfg.channels)
        kept = check_samples(files, cfg.verify, cfg.on_corrupt, "dataset.root", cfg.num_workers)
        if kept is not files:
            labels = labels[kept.index]
        sets[split] = (kept, torch.from_numpy(labels))
    return image_splits(cfg, sets, len(classes))
