"""``model=timm``: any architecture of the timm library, built by name (``model.name``).

``model.pretrained=true`` loads timm's weights for it (from the local Hugging Face cache when offline; see
:mod:`lstsd.models.pretrained`); timm initialises a classifier of another number of classes afresh and adapts the
first convolution to the input's channels."""
from __future__ import annotations

from dataclasses import dataclass

from lstsd.config import ModelConfig
from lstsd.errors import ConfigError, import_extra
from lstsd.models import pretrained as weights_of
from lstsd.registry import register_model


@dataclass
class TimmConfig(ModelConfig):
    pretrained: bool = False  # timm's weights for model.name (from the local cache when offline)


def check(cfg) -> None:
    """Before the data is loaded: a timm model name, and its weights where asked (in the cache when offline)."""
    timm = import_extra("timm", "model=timm")  # here, not at the top: a second that runs without it need not pay

    if not timm.is_model(cfg.name):
        raise ConfigError(f"model.name={cfg.name!r} is invalid: not a timm model (see timm.list_models())")
    if cfg.pretrained:
        if not timm.is_model_pretrained(cfg.name):
            raise ConfigError(f"model.pretrained=true is invalid: timm has no pretrained weights for {cfg.name}")
        weights_of.check_timm(cfg.name, "model.pretrained")


def pretrained_classes(cfg):
    return weights_of.timm_classes(cfg.name)


@register_model("timm", TimmConfig)
def build_timm(cfg, num_classes: int, in_channels: int):
    check(cfg)  # timm installed, the name and the weights
    import timm

    try:
        return timm.create_model(cfg.name, pretrained=cfg.pretrained, num_classes=num_classes, in_chans=in_channels)
    except Exception as e:  # noqa: BLE001 - a failed download of the weights: one line
        if not cfg.pretrained:
            raise
        raise ConfigError(f"model.pretrained=true is invalid: timm's weights of {cfg.name} could not be loaded "
                          f"({weights_of.call_failed(e)})") from None


build_timm.check, build_timm.pretrained_classes = check, pretrained_classes
