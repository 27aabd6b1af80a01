"""``dataset=blobs``: a dataset of one's own (its YAML: ``conf/dataset/blobs.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lstsd.config import DatasetConfig
from lstsd.data.types import Splits
from lstsd.errors import require
from lstsd.registry import register_dataset


@dataclass
class BlobsConfig(DatasetConfig):
    """Keys of dataset=blobs, beside every dataset's (batch_size, val_fraction, ...)."""
    num_train: int = 600
    num_test: int = 200
    num_classes: int = 3
    features: int = 8
    spread: float = 4.0  # the standard deviation of each blob around its centre
    data_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_train >= 1 and self.num_test >= 1, "dataset.num_train", "integers >= 1", self.num_train)
        require(self.num_classes >= 2, "dataset.num_classes", "an integer >= 2", self.num_classes)
        require(self.features >= 1, "dataset.features", "an integer >= 1", self.features)
        require(self.spread > 0, "dataset.spread", "a number > 0", self.spread)


@register_dataset("blobs", BlobsConfig)
def make_blobs(cfg: BlobsConfig) -> Splits:
    """scikit-learn's isotropic Gaussian blobs, as ``N x 1 x features`` float tensors (one channel)."""
    from sklearn.datasets import make_blobs as blobs

    x, y = blobs(n_samples=cfg.num_train + cfg.num_test, n_features=cfg.features, centers=cfg.num_classes,
                 cluster_std=cfg.spread, random_state=cfg.data_seed)
    x = torch.tensor(x, dtype=torch.float32)[:, None, :]
    y = torch.tensor(y, dtype=torch.long)
    n = cfg.num_train
    sets = {"train": (x[:n], y[:n]), "test": (x[n:], y[n:])}
    mean, std = x[:n].mean().item(), x[:n].std().item()
    return Splits(sets, cfg.num_classes, mean=(mean,), std=(std,))
