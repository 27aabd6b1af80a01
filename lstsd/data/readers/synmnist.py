"""``dataset=synmnist``: SynMNIST, the synthetic digit dataset of LW-KD (Algorithm 1) for a K-class task.

Class k is written with the decimal digits of k, zero-padded to the width of K - 1 ("03" is class 3 of 100):
each sample concatenates, left to right, one randomly drawn handwritten image of each digit and resizes the
strip to ``size`` x ``size`` (area interpolation). ``num_train`` and ``num_test`` samples are split evenly over
the classes (the first ``num % K`` classes get one more), drawn from ``data_seed``.

The digit images come from MNIST when its IDX files are under ``dataset.root`` (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte`` and the ``t10k-`` pair for the test split, optionally ``.gz``, directly there or
in torchvision's ``MNIST/raw/``). Otherwise, offline, from scikit-learn's bundled 8 x 8 digits (1,797 images,
pixels 0..16 rescaled to 0..255; even-numbered images feed the training split and odd ones the test split):
far fewer and coarser source images than MNIST's 70,000 at 28 x 28, so the same K gives a less varied
dataset. The run's log names the source used. ``digits`` chooses: ``auto`` (as above), ``mnist`` (MNIST or a
one-line error: the paper's SynMNIST, which LW-KD's table experiments require) or ``sklearn``.
"""
from __future__ import annotations

import gzip
import logging
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lstsd.config import DatasetConfig
from lstsd.data.types import Splits
from lstsd.errors import ConfigError, import_extra, one_line, require, require_choice
from lstsd.registry import register_dataset


@dataclass
class SynMNISTConfig(DatasetConfig):
    num_classes: int = 10  # K: set it to the target dataset's number of classes
    num_train: int = 60000  # spread evenly over the classes (Algorithm 1's E_k)
    num_test: int = 10000
    size: int = 28
    data_seed: int = 0
    augment: bool = False
    digits: str = "auto"  # the handwritten digit images: auto (MNIST if found, else scikit-learn's), mnist, sklearn

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_classes >= 2, "dataset.num_classes", "an integer >= 2", self.num_classes)
        require(self.num_train >= self.num_classes, "dataset.num_train", "an integer >= dataset.num_classes",
                self.num_train)
        require(self.num_test >= 1, "dataset.num_test", "an integer >= 1", self.num_test)
        require(self.size >= 4, "dataset.size", "an integer >= 4", self.size)
        require_choice("dataset.digits", self.digits, DIGITS)

    def inputs(self) -> list[str]:
        """MNIST's IDX files where they are read."""
        found = find_mnist(Path(self.root).expanduser()) if self.digits != "sklearn" else None
        return [str(p) for paths in (found or {}).values() for p in paths]


log = logging.getLogger(__name__)

DIGITS = ("auto", "mnist", "sklearn")
MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_array(data: bytes, ndim: int | None):
    """``(array, None)`` from the bytes of an IDX file (of ``ndim`` dimensions unless None), or
    ``(None, problem)`` with a one-line problem."""
    if not data:
        return None, "the file is empty"
    if len(data) < 4:
        return None, f"its header is truncated ({len(data)} bytes)"
    if data[:2] != b"\x00\x00":
        return None, f"it starts with the bytes {data[:4].hex(' ')}, not an IDX header (00 00 08 <dimensions>)"
    if data[2] != 0x08:
        return None, f"its data type code is 0x{data[2]:02x}: allowed 0x08 (unsigned bytes, as MNIST's)"
    n = data[3]
    if ndim is not None and n != ndim:
        return None, f"it has {n} dimension(s): allowed {ndim} ({'images' if ndim == 3 else 'labels'})"
    start = 4 + 4 * n
    if len(data) < start:
        return None, f"its header is truncated ({len(data)} bytes, {start} needed for {n} dimensions)"
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(n))
    if len(data) - start != math.prod(shape):
        return None, (f"its header says {' x '.join(map(str, shape))} values, the file holds {len(data) - start} "
                      f"bytes after the header")
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(shape).copy(), None


def read_idx(path: Path, ndim: int | None = None) -> np.ndarray:
    """An IDX file (the MNIST format: magic 0x0000 08 <ndim>, big-endian sizes, uint8 data), gzipped or not, of
    ``ndim`` dimensions (None: as its header says); anything else is a one-line ConfigError naming the file."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            array, problem = idx_array(f.read(), ndim)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError; a cut gzip stream an EOFError
        array, problem = None, f"it cannot be read ({type(e).__name__}: {one_line(e)})"
    if problem is not None:
        raise ConfigError(f"dataset.root: {path.resolve()} is not an MNIST IDX file: {problem}")
    return array


def read_digits(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One split of MNIST: N x H x W images and their N labels, each digit 0..9 present (SynMNIST draws an
    image of every digit)."""
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    problem = None
    if len(labels) != len(images):
        problem = f"it holds {len(labels)} labels for the {len(images)} images of {images_path.name}"
    elif (labels > 9).any():
        problem = f"it holds the label {labels[labels > 9][0]}: allowed digits 0..9"
    elif missing := sorted(set(range(10)) - set(labels.tolist())):
        problem = f"it holds no image of the digit(s) {', '.join(map(str, missing))}"
    if problem is not None:
        raise ConfigError(f"dataset.root: {labels_path.resolve()} is not an MNIST label file: {problem}")
    return images, labels


def find_mnist(root: Path) -> dict | None:
    for folder in (root, root / "MNIST" / "raw"):
        found = {}
        for split, names in MNIST_FILES.items():
            paths = [next((folder / (n + ext) for ext in ("", ".gz") if (folder / (n + ext)).exists()), None)
                     for n in names]
            if None in paths:
                break
            found[split] = paths
        else:
            return found
    return None


def require_mnist(root: str, key: str) -> None:
    """A one-line ConfigError naming ``key`` when ``root`` holds no MNIST IDX files."""
    if find_mnist(Path(root).expanduser()) is None:
        raise ConfigError(f"{key}=mnist is invalid for dataset.root={root}: no MNIST IDX files there "
                          f"({', '.join(MNIST_FILES['train'] + MNIST_FILES['test'])}, optionally .gz, or in MNIST/raw/); "
                          "allowed auto or sklearn (SynMNIST from scikit-learn's 8 x 8 digits, not the paper's)")


def digit_sources(root: str, digits: str = "auto") -> tuple[dict, str]:
    """split -> (uint8 images N x H x W, labels N) of handwritten digits, and the source's name."""
    if digits == "mnist":
        require_mnist(root, "dataset.digits")
    files = find_mnist(Path(root).expanduser()) if digits != "sklearn" else None
    if files is not None:
        return {s: read_digits(i, l) for s, (i, l) in files.items()}, "mnist"
    bunch = import_extra("sklearn.datasets", "digits from scikit-learn (no MNIST under dataset.root)").load_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return {"train": (x[0::2], bunch.target[0::2]), "test": (x[1::2], bunch.target[1::2])}, "sklearn_digits"


def class_digits(k: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The decimal digits of each class id, zero-padded to the width of num_classes - 1 (N x width)."""
    width = len(str(num_classes - 1))
    powers = 10 ** torch.arange(width - 1, -1, -1)
    return (k[:, None] // powers) % 10


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    return torch.arange(n) % num_classes


def render(labels: torch.Tensor, num_classes: int, images: np.ndarray, digit_labels: np.ndarray,
           size: int, generator: torch.Generator, chunk: int = 4096) -> torch.Tensor:
    """Algorithm 1, lines 2-6, for every label: N x 1 x size x size uint8 images."""
    images, digit_labels = torch.as_tensor(images), torch.as_tensor(digit_labels)
    pools = [torch.nonzero(digit_labels == d).flatten() for d in range(10)]
    digits = class_digits(labels, num_classes)  # N x width
    picks = torch.empty_like(digits)
    for d in range(10):  # a random image of digit d at each place that needs one
        where = digits == d
        if where.any():
            picks[where] = pools[d][torch.randint(len(pools[d]), (int(where.sum()),), generator=generator)]
    out = []
    for start in range(0, len(labels), chunk):
        strip = images[picks[start:start + chunk]]  # n x width x h x w
        n, width, h, w = strip.shape
        strip = strip.permute(0, 2, 1, 3).reshape(n, 1, h, width * w).float()  # concatenated left to right
        out.append(F.interpolate(strip, size=(size, size), mode="area").round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


@register_dataset("synmnist", SynMNISTConfig)
def make_synmnist(cfg) -> Splits:
    sources, source = digit_sources(cfg.root, cfg.digits)
    log.info(f"SynMNIST-{cfg.num_classes}: digit images from {source}")
    g = torch.Generator().manual_seed(cfg.data_seed)
    sets = {}
    for split, n in (("train", cfg.num_train), ("test", cfg.num_test)):
        y = balanced_labels(n, cfg.num_classes)
        sets[split] = (render(y, cfg.num_classes, *sources[split], cfg.size, g), y)
    train = sets["train"][0].float() / 255.0
    return Splits(sets, cfg.num_classes, mean=(float(train.mean()),), std=(float(train.std()),), scale=255.0)
