"""``model=timm``: any architecture of the timm library, built by name (``model.name``)."""
from __future__ import annotations

from dataclasses import dataclass

from lstsd.config import ModelConfig
from lstsd.errors import ConfigError
from lstsd.registry import register_model


@dataclass
class TimmConfig(ModelConfig):
    pretrained: bool = False  # weights are only fetched when asked for and the hub is reachable


@register_model("timm", TimmConfig)
def build_timm(cfg, num_classes: int, in_channels: int):
    import timm  # here, not at the top: importing timm takes a second that runs without it need not pay

    if not timm.is_model(cfg.name):
        raise ConfigError(f"model.name={cfg.name!r} is invalid: not a timm model (see timm.list_models())")
    return timm.create_model(cfg.name, pretrained=cfg.pretrained, num_classes=num_classes, in_chans=in_channels)
