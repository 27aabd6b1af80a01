"""Models: every architecture is a builder registered with its schema (``@register_model(arch, Schema)``, one
module per family) and built by name (``model.arch``) through :func:`build_model`."""
from __future__ import annotations

import copy
import inspect
from typing import Optional

from torch import nn

from lstsd.registry import MODELS


def build_model(cfg, num_classes: int, input_shape, vocab: Optional[list[str]] = None) -> nn.Module:
    """``fn(cfg, num_classes, in_channels) -> nn.Module`` of ``cfg.arch``; a builder that also takes
    ``input_shape`` (one sample's shape, channels first, e.g. (1, 40)) or ``vocab`` (a text dataset's vocabulary,
    for models whose tokeniser is built from the data: textcnn) gets them."""
    fn = MODELS[cfg.arch]
    wanted = inspect.signature(fn).parameters
    extra = {k: v for k, v in (("input_shape", tuple(input_shape)), ("vocab", vocab)) if k in wanted and v is not None}
    return fn(cfg=cfg, num_classes=num_classes, in_channels=input_shape[0], **extra)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A teacher snapshot: a copy in eval mode with no gradients."""
    teacher = copy.deepcopy(model).eval()
    return teacher.requires_grad_(False)
