"""What the datasets of one's own data share (``imagefolder``, ``imagenet``, ``npz``, ``hf``, ``torchvision``):
the schema with the transforms as config, and :func:`image_splits`, which builds them into a reader's
:class:`~lstsd.data.types.Splits`.

Transforms are lists of ``torchvision.transforms.v2`` transforms, each built with ``hydra.utils.instantiate``
(``{_target_: torchvision.transforms.v2.RandomResizedCrop, size: 224}``), applied per sample to the decoded uint8
``C x H x W`` image by the streaming loader's workers: ``dataset.train_transforms`` to the training split when
``dataset.augment`` is true, ``dataset.eval_transforms`` to the evaluation splits (and to the training split
when it is not augmented). Normalisation is not a transform: ``dataset.mean`` and ``dataset.std`` (per channel,
of pixels in [0, 1]) are applied on the training device to each batch, which travels there as uint8.

Where the training transforms are exactly the in-memory loader's augmentation, ``RandomCrop(size, padding=p)``
then ``RandomHorizontalFlip()`` (p = 0.5, zero fill) on images of that size, it runs on the device instead, in
every loader (the fast path): decided by what the config asks, whatever the dataset.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from lstsd.config import DatasetConfig
from lstsd.data.types import Splits
from lstsd.errors import ConfigError, one_line, require, require_choice

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class ImageDataConfig(DatasetConfig):
    """Images from one's own data: transforms as config (``torchvision.transforms.v2``, built by instantiate),
    normalisation on the device. ``loader``: stream (the default: workers decode from disk), memory or
    torchvision (the whole split decoded into one tensor first)."""
    loader: str = "stream"
    train_transforms: list[Any] = field(default_factory=list)
    eval_transforms: list[Any] = field(default_factory=list)
    mean: Optional[list[float]] = None  # per channel, of pixels in [0, 1]; null: see each dataset
    std: Optional[list[float]] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("train_transforms", "eval_transforms"):
            for i, spec in enumerate(getattr(self, key)):
                require(isinstance(spec, dict) and isinstance(spec.get("_target_"), str), f"dataset.{key}[{i}]",
                        "a transform given as {_target_: torchvision.transforms.v2.<Name>, <argument>: <value>}",
                        spec)
        require((self.mean is None) == (self.std is None), "dataset.std",
                "null when dataset.mean is null, a list when it is a list", self.std)
        if self.std is not None:
            require(len(self.std) == len(self.mean) and min(self.std) > 0, "dataset.std",
                    f"{len(self.mean)} numbers > 0 (one per channel, as dataset.mean)", list(self.std))


@dataclass
class FileImagesConfig(ImageDataConfig):
    """Encoded image files (or their bytes in a table): how they are decoded and checked before training."""
    channels: int = 3  # decode as RGB (3) or grey (1)
    verify: str = "header"  # before training: header (Pillow reads each header), decode (every image), none
    on_corrupt: str = "error"  # error: stop naming the file; skip: leave it out with a warning
    image_size: int = 224  # the default transforms' output size (their YAML refers to it)
    resize_size: int = 256  # the default evaluation transforms' resize before the centre crop
    mean: Optional[list[float]] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: Optional[list[float]] = field(default_factory=lambda: list(IMAGENET_STD))

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.channels in (1, 3), "dataset.channels", "1 (grey) or 3 (RGB)", self.channels)
        require_choice("dataset.verify", self.verify, ("header", "decode", "none"))
        require_choice("dataset.on_corrupt", self.on_corrupt, ("error", "skip"))
        require(self.image_size >= 1 and self.resize_size >= 1, "dataset.image_size/resize_size",
                "integers >= 1", (self.image_size, self.resize_size))


def build_transforms(specs: list, key: str) -> list:
    """The transform objects of a config list (``hydra.utils.instantiate`` of each)."""
    from hydra.utils import instantiate

    out = []
    for i, spec in enumerate(specs):
        try:
            t = instantiate(dict(spec), _convert_="all")
        except Exception as e:  # noqa: BLE001 - an unknown class, a refused argument
            cause = e.__cause__ or e
            raise ConfigError(f"dataset.{key}[{i}]: cannot build {spec.get('_target_')} ({type(cause).__name__}: "
                              f"{one_line(cause)})") from None
        if not callable(t):
            raise ConfigError(f"dataset.{key}[{i}]={spec.get('_target_')} is invalid: it built a "
                              f"{type(t).__name__}, not a transform (a callable)")
        out.append(t)
    return out


def compose(transforms: list):
    if not transforms:
        return None
    from torchvision.transforms import v2

    return transforms[0] if len(transforms) == 1 else v2.Compose(transforms)


def crop_flip_pad(transforms: list, size: tuple) -> Optional[int]:
    """p when ``transforms`` are ``RandomCrop(size, padding=p)`` (zero fill, same padding on every side) then
    ``RandomHorizontalFlip(0.5)`` on images of ``size`` (H, W), torchvision's v1 or v2: the pad-crop-flip the
    loaders run on the device. None otherwise."""
    from torchvision import transforms as v1
    from torchvision.transforms import v2

    if len(transforms) != 2:
        return None
    crop, flip = transforms
    if not (isinstance(crop, (v2.RandomCrop, v1.RandomCrop)) and isinstance(flip, (v2.RandomHorizontalFlip,
                                                                                    v1.RandomHorizontalFlip))):
        return None
    padding = crop.padding
    pads = [padding] if isinstance(padding, int) else list(padding or [0])
    if len(set(pads)) != 1 or pads[0] < 1:
        return None
    if tuple(crop.size) != tuple(size) or crop.pad_if_needed or crop.padding_mode != "constant" or \
            crop.fill not in (0, None) or flip.p != 0.5:
        return None
    return int(pads[0])


def first_sample(x) -> torch.Tensor:
    """The training split's first input (its shape and dtype decide the normalisation); ConfigError when the
    split is empty (every file left out, an empty array) or its first sample cannot be read."""
    from lstsd.data.samples import Samples, UnreadableSample

    if not len(x):
        raise ConfigError("dataset: the training split holds no samples: allowed at least one")
    if not isinstance(x, Samples):
        return torch.as_tensor(x[0])
    try:
        return x.read(0)
    except UnreadableSample as e:
        raise ConfigError(f"dataset: {e.where} {e.problem}") from None


def image_splits(cfg: ImageDataConfig, sets: dict, num_classes: int, mean=None, std=None) -> Splits:
    """A reader's splits with ``cfg``'s transforms and normalisation (``cfg.mean``/``cfg.std``, else ``mean``
    and ``std``, else none: pixels scaled to [0, 1]); the pad-crop-flip recognised for the device."""
    train = build_transforms(cfg.train_transforms, "train_transforms")
    evals = build_transforms(cfg.eval_transforms, "eval_transforms")
    first = first_sample(sets["train"][0])
    channels = first.shape[0] if first.dim() >= 2 else 1
    pad = crop_flip_pad(train, tuple(first.shape[-2:])) if first.dim() == 3 else None
    augment = "none" if not train else "crop_flip" if pad is not None else "transforms"
    scale = 255.0 if first.dtype == torch.uint8 else 1.0
    if cfg.mean is not None:
        mean, std = list(cfg.mean), list(cfg.std)
    if mean is None:
        mean, std = [0.0], [1.0]
    if len(mean) == 1:
        mean, std = list(mean) * channels, list(std) * channels
    require(len(mean) == channels, "dataset.mean", f"{channels} number(s), one per channel of the input "
            f"(shape {'x'.join(map(str, first.shape))}), or one for all", list(mean))
    return Splits(sets, num_classes, tuple(mean), tuple(std), scale=scale, augment=augment, pad=pad or 4,
                  train_transform=compose(train), eval_transform=compose(evals))
