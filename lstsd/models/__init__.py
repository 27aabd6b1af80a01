"""Model registry: every architecture is built by name (``model.arch``) through :func:`build_model`."""
from __future__ import annotations

from typing import Callable, Optional

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Decorator registering ``fn(cfg, num_classes, in_channels) -> nn.Module`` under ``name``."""

    def wrap(fn):
        MODELS[name] = fn
        return fn

    return wrap


def build_model(cfg, num_classes: int, in_channels: int, vocab: Optional[list[str]] = None) -> nn.Module:
    """``vocab``: a text dataset's vocabulary, for models whose tokeniser is built from the data (textcnn)."""
    extra = {} if vocab is None else {"vocab": vocab}
    return MODELS[cfg.arch](cfg=cfg, num_classes=num_classes, in_channels=in_channels, **extra)


# registration
from lstsd.models import cifar_resnet, cifar_zoo, densenet, lenet, small, text, timm_adapter  # noqa: E402,F401
