"""``dataset=synthetic``: random float tensors of a configurable shape, class count and size, for tests and
benchmarks. Each class has a random mean pattern; a sample is its class's pattern plus Gaussian noise
(``dataset.noise``), so models can learn it. Drawn from ``dataset.data_seed`` alone. ``dataset.pixels=uint8``
stores them as 8-bit images with CIFAR's augmentation (benchmarks of the input pipeline)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lstsd.config import DatasetConfig
from lstsd.data.types import Splits
from lstsd.errors import require, require_choice
from lstsd.registry import register_dataset


@dataclass
class SyntheticConfig(DatasetConfig):
    num_train: int = 512
    num_test: int = 256
    num_classes: int = 10
    shape: list[int] = field(default_factory=lambda: [3, 32, 32])
    noise: float = 1.0  # std of the per-sample noise around each class's mean pattern
    data_seed: int = 0
    pixels: str = "float"  # float, or uint8: stored like CIFAR (8-bit pixels, pad-crop-flip augmentation)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_train >= 1 and self.num_test >= 1, "dataset.num_train/num_test", "integers >= 1",
                (self.num_train, self.num_test))
        require(self.num_classes >= 2, "dataset.num_classes", "an integer >= 2", self.num_classes)
        require_choice("dataset.pixels", self.pixels, ("float", "uint8"))
        require(len(self.shape) == 3 and min(self.shape) >= 1, "dataset.shape", "[channels, height, width]",
                list(self.shape))


@register_dataset("synthetic", SyntheticConfig)
def make_synthetic(cfg) -> Splits:
    g = torch.Generator().manual_seed(cfg.data_seed)
    shape = tuple(cfg.shape)
    means = torch.randn((cfg.num_classes,) + shape, generator=g)

    def draw(n: int):
        y = torch.randint(0, cfg.num_classes, (n,), generator=g)
        return means[y] + cfg.noise * torch.randn((n,) + shape, generator=g), y

    sets = {"train": draw(cfg.num_train), "test": draw(cfg.num_test)}
    if cfg.pixels == "uint8":  # CIFAR-like storage: 8-bit pixels around mid-grey, crop-and-flip augmentation
        sets = {k: ((128 + 32 * x).round().clamp(0, 255).to(torch.uint8), y) for k, (x, y) in sets.items()}
        return Splits(sets, cfg.num_classes, mean=(0.5,) * shape[0], std=(0.18,) * shape[0], scale=255.0,
                      augment="crop_flip")
    return Splits(sets, cfg.num_classes, mean=(0.0,) * shape[0], std=(1.0,) * shape[0])
