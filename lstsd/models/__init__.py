"""Models: every architecture is a builder registered with its schema (``@register_model(arch, Schema)``, one
module per family) and built by name (``model.arch``) through :func:`build_model`. A builder may carry a
``check(cfg)`` that runs before the data is loaded (:func:`check_model`: a model name, an import path, pretrained
weights in the cache) and a ``pretrained_classes(cfg)`` (the number of classes of the weights it loads)."""
from __future__ import annotations

import copy
import inspect
from typing import Optional

from torch import Tensor, nn

from lstsd.registry import MODELS


def build_model(cfg, num_classes: int, input_shape, vocab: Optional[list[str]] = None) -> nn.Module:
    """``fn(cfg, num_classes, in_channels) -> nn.Module`` of ``cfg.arch``; a builder that also takes
    ``input_shape`` (one sample's shape, channels first, e.g. (1, 40)) or ``vocab`` (a text dataset's vocabulary,
    for models whose tokeniser is built from the data: textcnn) gets them."""
    fn = MODELS[cfg.arch]
    wanted = inspect.signature(fn).parameters
    extra = {k: v for k, v in (("input_shape", tuple(input_shape)), ("vocab", vocab)) if k in wanted and v is not None}
    return fn(cfg=cfg, num_classes=num_classes, in_channels=input_shape[0], **extra)


def check_model(cfg) -> None:
    """The builder's own checks of ``cfg`` (:class:`~lstsd.errors.ConfigError`), before the data is loaded."""
    check = getattr(MODELS[cfg.arch], "check", None)
    if check is not None:
        check(cfg)


def pretrained_classes(cfg) -> Optional[int]:
    """The number of classes of the pretrained weights ``cfg`` loads (``model.pretrained=true``), where known."""
    if not getattr(cfg, "pretrained", False):
        return None
    count = getattr(MODELS[cfg.arch], "pretrained_classes", None)
    return None if count is None else count(cfg)


def not_logits(out) -> Optional[str]:
    """What a model's output is when it is not a floating-point tensor of logits (``a tuple``, ``a tensor of
    torch.int64``), or None: the check of a student's dry forward pass and of a teacher's."""
    if isinstance(out, Tensor):
        return None if out.is_floating_point() else f"a tensor of {out.dtype}"
    return f"a {type(out).__name__}"


def freeze(model: nn.Module) -> nn.Module:
    """``model`` as a teacher: in eval mode, with no gradients (in place; returned)."""
    return model.eval().requires_grad_(False)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A teacher snapshot: a frozen copy (:func:`freeze`)."""
    return freeze(copy.deepcopy(model))
