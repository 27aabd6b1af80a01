"""``model=timm``: any architecture of the timm library, built by name (``model.name``)."""
from __future__ import annotations

import timm

from lstsd.config import ConfigError
from lstsd.models import register_model


@register_model("timm")
def build_timm(cfg, num_classes: int, in_channels: int):
    if not timm.is_model(cfg.name):
        raise ConfigError(f"model.name={cfg.name!r} is invalid: not a timm model (see timm.list_models())")
    # Weights are only fetched when asked for (model.pretrained=true) and the hub is reachable.
    return timm.create_model(cfg.name, pretrained=cfg.pretrained, num_classes=num_classes, in_chans=in_channels)
