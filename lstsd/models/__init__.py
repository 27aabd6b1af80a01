"""Model registry: every architecture is built by name (``model.arch``) through :func:`build_model`."""
from __future__ import annotations

import inspect
from typing import Callable, Optional

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Decorator registering ``fn(cfg, num_classes, in_channels) -> nn.Module`` under ``name``; a builder that
    also takes ``input_shape`` (a sample's shape, e.g. (1, 40)) or ``vocab`` gets them."""

    def wrap(fn):
        MODELS[name] = fn
        return fn

    return wrap


def build_model(cfg, num_classes: int, input_shape, vocab: Optional[list[str]] = None) -> nn.Module:
    """``input_shape``: one sample's shape (channels first); ``vocab``: a text dataset's vocabulary, for models
    whose tokeniser is built from the data (textcnn)."""
    fn = MODELS[cfg.arch]
    wanted = inspect.signature(fn).parameters
    extra = {k: v for k, v in (("input_shape", tuple(input_shape)), ("vocab", vocab)) if k in wanted and v is not None}
    return fn(cfg=cfg, num_classes=num_classes, in_channels=input_shape[0], **extra)


# registration
from lstsd.models import cifar_resnet, cifar_zoo, densenet, lenet, mnist1d, small, text, timm_adapter  # noqa: E402,F401,E501
