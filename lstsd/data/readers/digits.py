"""``dataset=digits``: scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes, pixels 0..16).

Real data available offline, the embedded default. Fixed split: ``train_test_split(test_size=500,
stratify=y, random_state=0)``, giving 1,297 training and 500 test images whatever the seed. No augmentation.
"""
from __future__ import annotations

import numpy as np

from lstsd.config import DatasetConfig
from lstsd.data.types import Splits, tensors
from lstsd.errors import import_extra
from lstsd.registry import register_dataset

NUM_TEST = 500


@register_dataset("digits", DatasetConfig)
def load_digits(cfg) -> Splits:
    sklearn_datasets = import_extra("sklearn.datasets", "dataset=digits")
    from sklearn.model_selection import train_test_split

    bunch = sklearn_datasets.load_digits()
    x = bunch.images.astype(np.uint8)[:, None]  # N x 1 x 8 x 8
    x_tr, x_te, y_tr, y_te = train_test_split(x, bunch.target, test_size=NUM_TEST, stratify=bunch.target,
                                              random_state=0)
    train = x_tr.astype(np.float64) / 16.0
    return Splits({"train": tensors(x_tr, y_tr), "test": tensors(x_te, y_te)}, num_classes=10,
                  mean=(float(train.mean()),), std=(float(train.std()),), scale=16.0)
