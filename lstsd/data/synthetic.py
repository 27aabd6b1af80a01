"""``dataset=synthetic``: random float tensors of a configurable shape, class count and size, for tests and
benchmarks. Each class has a random mean pattern; a sample is its class's pattern plus Gaussian noise
(``dataset.noise``), so models can learn it. Drawn from ``dataset.data_seed`` alone. ``dataset.pixels=uint8``
stores them as 8-bit images with CIFAR's augmentation (benchmarks of the input pipeline)."""
from __future__ import annotations

import torch

from lstsd.data import register_dataset
from lstsd.data.loader import Splits


@register_dataset("synthetic")
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
