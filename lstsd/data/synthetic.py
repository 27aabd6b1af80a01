"""``dataset=synthetic``: random float tensors of a configurable shape, class count and size, for tests and
benchmarks. Each class has a random mean pattern; a sample is its class's pattern plus Gaussian noise
(``dataset.noise``), so models can learn it. Drawn from ``dataset.data_seed`` alone."""
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
    return Splits(sets, cfg.num_classes, mean=(0.0,) * shape[0], std=(1.0,) * shape[0])
