"""``dataset=mnist1d``: MNIST-1D (Greydanus & Kobak, "Scaling down deep learning with MNIST-1D", ICML 2024).

Generated offline by the ``mnist1d`` package: ``mnist1d.data.make_dataset`` with the package's documented
arguments (``get_dataset_args()``: 5,000 sequences of length 40, 10 classes, data seed 42, the first 80 % for
training) reproduces the published dataset, 4,000 training and 1,000 test sequences. Every generator argument
is a dataset key with the package's default (``dataset.num_samples``, ``train_split``, ``template_len``,
``padding``, ``scale_coeff``, ``max_translation``, ``corr_noise_scale``, ``iid_noise_scale``, ``shear_scale``,
``shuffle_seq``, ``final_seq_length``, ``data_seed``). ``get_dataset`` is not used: it would try a download.

Generation takes seconds, so the arrays are cached under ``dataset.root/mnist1d/`` in an ``.npz`` file named by
a hash of the arguments and the package version; a cache file that cannot be read, or whose arrays do not fit
the arguments, is generated again, never trusted. With the canonical arguments, a user's copy of the published
``mnist1d_data.pkl`` directly under ``dataset.root`` is read instead (through an unpickler that only builds
NumPy arrays; a corrupt copy stops with one line naming the file).

The sequences are ``N x 1 x L`` float32 (one channel): the package already standardises the whole dataset
(mean 0, std 1), so nothing more is normalised. The split is fixed; there is no augmentation.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from lstsd.config import DatasetConfig
from lstsd.data.types import Splits, write_cache
from lstsd.errors import ConfigError, finite, one_line, require
from lstsd.registry import register_dataset


@dataclass
class MNIST1DConfig(DatasetConfig):
    """MNIST-1D (lstsd.data.readers.mnist1d): the arguments of ``mnist1d.data.make_dataset``, with the package's defaults
    (``get_dataset_args()``), which generate the published dataset; ``data_seed`` is its ``seed``."""
    batch_size: int = 100  # the reference train.py's
    augment: bool = False
    num_samples: int = 5000
    train_split: float = 0.8
    template_len: int = 12
    padding: list[int] = field(default_factory=lambda: [36, 60])
    scale_coeff: float = 0.4
    max_translation: int = 48
    corr_noise_scale: float = 0.25
    iid_noise_scale: float = 0.02
    shear_scale: float = 0.75
    shuffle_seq: bool = False
    final_seq_length: int = 40
    data_seed: int = 42

    def __post_init__(self) -> None:
        super().__post_init__()
        require(not self.augment, "dataset.augment", "false for mnist1d (the benchmark has no augmentation)",
                self.augment)
        require(self.num_samples >= 10, "dataset.num_samples", "an integer >= 10 (one sequence per class)",
                self.num_samples)
        require(0.0 < self.train_split < 1.0, "dataset.train_split", "a number in (0, 1)", self.train_split)
        n = self.num_samples // 10 * 10
        require(1 <= int(n * self.train_split) < n, "dataset.train_split",
                f"a fraction that leaves both splits non-empty ({n} sequences)", self.train_split)
        require(self.template_len >= 1, "dataset.template_len", "an integer >= 1", self.template_len)
        require(len(self.padding) == 2 and 0 <= self.padding[0] <= self.padding[1], "dataset.padding",
                "[low, high] with 0 <= low <= high", list(self.padding))
        require(finite(self.scale_coeff) and 0.0 <= self.scale_coeff < 2.0, "dataset.scale_coeff",
                "a number in [0, 2)", self.scale_coeff)
        require(self.max_translation >= 1, "dataset.max_translation", "an integer >= 1", self.max_translation)
        for key in ("corr_noise_scale", "iid_noise_scale", "shear_scale"):
            value = getattr(self, key)
            require(finite(value) and value >= 0, f"dataset.{key}", "a finite number >= 0", value)
        require(self.final_seq_length >= self.template_len, "dataset.final_seq_length",
                f"an integer >= dataset.template_len={self.template_len}", self.final_seq_length)
        require(0 <= self.data_seed < 2**32, "dataset.data_seed", "an integer in [0, 2^32)", self.data_seed)

    def inputs(self) -> list[str]:
        """The published pickle where it is read (its generator's keys otherwise say what the data is)."""
        published = Path(self.root).expanduser() / PUBLISHED_PICKLE
        return [str(published)] if GeneratorArgs.of(self).canonical and published.is_file() else []


log = logging.getLogger(__name__)

NUM_CLASSES = 10
CACHE_VERSION = 1  # bump when the cached file's layout changes
PUBLISHED_PICKLE = "mnist1d_data.pkl"


@dataclass(frozen=True)
class GeneratorArgs:
    """``mnist1d.data.get_dataset_args()``'s fields (``seed`` is ``dataset.data_seed``), with its defaults."""
    num_samples: int = 5000
    train_split: float = 0.8
    template_len: int = 12
    padding: tuple = (36, 60)
    scale_coeff: float = 0.4
    max_translation: int = 48
    corr_noise_scale: float = 0.25
    iid_noise_scale: float = 2e-2
    shear_scale: float = 0.75
    shuffle_seq: bool = False
    final_seq_length: int = 40
    seed: int = 42

    @classmethod
    def of(cls, cfg) -> "GeneratorArgs":
        return cls(**{f: getattr(cfg, f) for f in cls.__dataclass_fields__ if f != "seed"}, seed=cfg.data_seed) \
            .normalised()

    def normalised(self) -> "GeneratorArgs":
        return GeneratorArgs(**(asdict(self) | {"padding": tuple(int(p) for p in self.padding)}))

    @property
    def canonical(self) -> bool:
        return self == GeneratorArgs()

    @property
    def sizes(self) -> tuple[int, int]:
        """(training, test) sizes as ``make_dataset`` splits them."""
        n = (self.num_samples // NUM_CLASSES) * NUM_CLASSES
        split = int(n * self.train_split)
        return split, n - split

    def key(self) -> str:
        from importlib.metadata import version

        text = json.dumps(asdict(self) | {"mnist1d": version("mnist1d"), "format": CACHE_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def generate(args: GeneratorArgs) -> dict:
    """``make_dataset`` with ``args``; the global NumPy and Python generators it seeds are restored after."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    states = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(ObjectView(asdict(args) | {"padding": list(args.padding)}))
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
    return {k: data[k] for k in ("x", "y", "x_test", "y_test")}


def check_arrays(data: dict, args: GeneratorArgs, source: str) -> dict:
    """The four arrays, with the shapes, dtypes and labels ``args`` implies; ValueError naming ``source``."""
    missing = [k for k in ("x", "y", "x_test", "y_test") if k not in data]
    if missing:
        raise ValueError(f"{source} lacks {', '.join(missing)}")
    n_train, n_test = args.sizes
    out = {}
    for key, n in (("x", n_train), ("x_test", n_test)):
        x = np.asarray(data[key])
        if x.shape != (n, args.final_seq_length) or not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{source}: {key} is {x.dtype} {x.shape}, expected float ({n}, {args.final_seq_length})")
        if not np.isfinite(x).all():
            raise ValueError(f"{source}: {key} holds non-finite values")
        out[key] = x.astype(np.float32)
    for key, n in (("y", n_train), ("y_test", n_test)):
        y = np.asarray(data[key])
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= NUM_CLASSES:
            raise ValueError(f"{source}: {key} is {y.dtype} {y.shape}, expected ({n},) integer labels in "
                             f"[0, {NUM_CLASSES})")
        out[key] = y.astype(np.int64)
    return out


class NumpyOnly(pickle.Unpickler):
    """Builds NumPy arrays and plain containers only: a pickle cannot run code through it."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("builtins", "slice")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, not only NumPy arrays")
        return super().find_class(module, name)


def read_published(path: Path, args: GeneratorArgs) -> dict:
    """The published ``mnist1d_data.pkl`` (a dict of NumPy arrays: x, y, x_test, y_test, t, templates). The
    user's own file, not derived data: anything else is a one-line ConfigError naming it."""
    try:
        data = NumpyOnly(io.BytesIO(path.read_bytes()), encoding="latin1").load()
        if not isinstance(data, dict):
            raise ValueError(f"it holds a {type(data).__name__}, not a dict of arrays")
        return check_arrays(data, args, "it")
    except Exception as e:  # noqa: BLE001 - any failure: the file is not the published dataset
        raise ConfigError(f"dataset.root: {path.resolve()} is not a readable copy of the published MNIST-1D "
                          f"({type(e).__name__}: {one_line(e)}); remove it to generate the dataset instead") from None


def read_cache(path: Path, args: GeneratorArgs) -> dict | None:
    """The cached arrays, or None (logged as a warning naming the file) when the file cannot be read or its
    arrays do not fit ``args``: a cache is derived data, generated again and replaced."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return check_arrays({k: f[k] for k in f.files}, args, str(path))
    except Exception as e:  # noqa: BLE001 - an unreadable or foreign cache is generated again
        log.warning(f"{path} is not a usable MNIST-1D cache ({type(e).__name__}: {one_line(e)}): generating it "
                    f"again")
        return None


def save_cache(path: Path, data: dict) -> None:
    """Written atomically under a name of this process; a read-only root still trains (the cache only saves the
    next run a few seconds)."""
    write_cache(path, lambda f: np.savez(f, **data), "MNIST-1D")  # a file object: np.savez adds no ".npz"


def load_arrays(cfg) -> dict:
    args = GeneratorArgs.of(cfg)
    root = Path(cfg.root).expanduser()
    published = root / PUBLISHED_PICKLE
    if args.canonical and published.is_file():
        log.info(f"MNIST-1D: reading the published {published}")
        return read_published(published, args)
    cache = root / "mnist1d" / f"{args.key()}.npz"
    data = read_cache(cache, args) if cache.is_file() else None
    if data is None:
        log.info(f"MNIST-1D: generating {args} into {cache}")
        data = check_arrays(generate(args), args, "the generated dataset")
        save_cache(cache, data)
    return data


@register_dataset("mnist1d", MNIST1DConfig)
def load_mnist1d(cfg) -> Splits:
    data = load_arrays(cfg)
    sets = {"train": (torch.from_numpy(data["x"])[:, None], torch.from_numpy(data["y"])),
            "test": (torch.from_numpy(data["x_test"])[:, None], torch.from_numpy(data["y_test"]))}
    return Splits(sets, NUM_CLASSES, mean=None, std=None)
