"""Models from anywhere: ``model._target_=<a callable that returns an nn.Module>`` and ``model=torchvision``.

* ``model=target`` (chosen by itself when the command line gives ``model._target_=...`` and no model option):
  the callable ``model._target_`` — a function or a class, by its import path: ``torchvision.models.resnet18``,
  ``timm.create_model``, ``mypkg.nets.MyNet`` — called through Hydra's ``instantiate`` with ``model.kwargs`` and,
  under the keywords it takes, the number of classes (``model.num_classes_key``, ``num_classes`` by default) and
  the input channels (``model.in_channels_key``; ``auto``: the first of ``in_channels``, ``in_chans``,
  ``input_channels``, ``num_channels`` its signature names, else none). The target is imported when the
  configuration is validated (a bad one stops with one line before the data is loaded); what it returns must be
  an ``nn.Module``.
* ``model=torchvision model.name=resnet101``: any of torchvision's classification models
  (``torchvision.models.list_models(module=torchvision.models)``), ``model.kwargs`` passed on.

``model.pretrained=true`` loads the builder's weights: torchvision's (``model.weights``, DEFAULT when null) or,
for a callable that takes ``pretrained`` (``timm.create_model``), its own (:mod:`lstsd.models.pretrained`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING
from torch import nn

from lstsd.config import ModelConfig
from lstsd.errors import ConfigError, one_line, require
from lstsd.models import pretrained as weights_of
from lstsd.registry import register_model

CHANNEL_KEYS = ("in_channels", "in_chans", "input_channels", "num_channels")


@dataclass
class TargetConfig(ModelConfig):
    _target_: Optional[str] = MISSING  # the import path of a callable returning an nn.Module
    name: Optional[str] = "${._target_}"  # display name (results, tables): the target unless given
    kwargs: Optional[Any] = None  # further keyword arguments of the callable: model.kwargs={width: 64}
    num_classes_key: Optional[str] = "num_classes"  # the keyword of the number of classes; null: not passed
    in_channels_key: Optional[str] = "auto"  # the keyword of the input channels; auto: from the signature; null: none
    pretrained: bool = False  # the builder's pretrained weights (torchvision's, or a callable's pretrained=True)
    weights: Optional[str] = None  # torchvision: which weights (IMAGENET1K_V2, ...); null: DEFAULT

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self._target_), "model._target_", "the import path of a callable that returns an nn.Module "
                "(torchvision.models.resnet18, timm.create_model, mypkg.MyNet)", self._target_)
        check_kwargs(self.kwargs)
        locate(self._target_, "model._target_")


@dataclass
class TorchvisionConfig(ModelConfig):
    name: str = "resnet18"  # a torchvision classification model: torchvision.models.list_models(torchvision.models)
    kwargs: Optional[Any] = None  # further keyword arguments of its builder: model.kwargs={dropout: 0.2}
    pretrained: bool = False
    weights: Optional[str] = None  # which weights (IMAGENET1K_V1, IMAGENET1K_V2, ...); null: DEFAULT

    def __post_init__(self) -> None:
        super().__post_init__()
        check_kwargs(self.kwargs)


def check_kwargs(kwargs) -> None:
    require(kwargs is None or isinstance(kwargs, dict) and all(isinstance(k, str) for k in kwargs), "model.kwargs",
            "null or a mapping of keyword arguments: model.kwargs={width: 64}", kwargs)


def locate(path: str, key: str):
    """The callable at the import path ``path``; a :class:`ConfigError` naming ``key`` when it cannot be imported or
    is not callable."""
    import logging

    from hydra.utils import get_object

    allowed = "the import path of a callable that returns an nn.Module"
    quiet = logging.getLogger("hydra.utils")  # it logs the failure in several lines before raising it
    level, quiet.disabled = quiet.disabled, True
    try:
        obj = get_object(path)
    except Exception as e:  # noqa: BLE001 - ImportError, or whatever the module raises while importing
        cause = e.__cause__ or e
        detail = one_line(cause) if cause is not e else one_line(e).split(" Are you sure")[0]
        raise ConfigError(f"{key}={path!r} is invalid: allowed {allowed} ({type(cause).__name__}: {detail})") from None
    finally:
        quiet.disabled = level
    if not callable(obj):
        raise ConfigError(f"{key}={path!r} is invalid: allowed {allowed} (it is a {type(obj).__name__})")
    return obj


def torchvision_names() -> list[str]:
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)


def target_of(cfg) -> tuple[str, str]:
    """(import path, the key that names it) of a target or torchvision config."""
    if cfg.arch == "torchvision":
        return f"torchvision.models.{cfg.name}", "model.name"
    return cfg._target_, "model._target_"


def check(cfg) -> None:
    """Before the data is loaded: the torchvision name, the target, the pretrained weights (cached or fetched)."""
    if cfg.arch == "torchvision":
        names = torchvision_names()
        require(cfg.name in names, "model.name", "a torchvision classification model: one of " + ", ".join(names),
                cfg.name)
    path, key = target_of(cfg)
    fn = locate(path, key)
    if getattr(cfg, "pretrained", False):
        tv = weights_of.torchvision_weights(fn, cfg.weights, "model.weights", path)
        if tv is not None:
            weights_of.fetch_torchvision(tv, "model.pretrained")
        elif not weights_of.accepts(fn, "pretrained"):
            raise ConfigError(f"model.pretrained=true is invalid for {key}={path}: it offers no weights (neither a "
                              "torchvision model builder nor a callable that takes pretrained)")
        elif path == "timm.create_model" and "model_name" in (cfg.kwargs or {}):
            weights_of.check_timm(str(cfg.kwargs["model_name"]), "model.pretrained")
    elif getattr(cfg, "weights", None) is not None:
        raise ConfigError(f"model.weights={cfg.weights!r} is invalid: allowed null unless model.pretrained=true")


def pretrained_classes(cfg) -> Optional[int]:
    """The number of classes of the weights ``model.pretrained=true`` loads, where known."""
    path, key = target_of(cfg)
    fn = locate(path, key)
    tv = weights_of.torchvision_weights(fn, cfg.weights, "model.weights", path)
    if tv is not None:
        return len(tv.meta["categories"])
    if path == "timm.create_model" and "model_name" in (cfg.kwargs or {}):
        return weights_of.timm_classes(str(cfg.kwargs["model_name"]))
    return None


def build(cfg, num_classes: int, in_channels: int, keep_head: bool = False) -> nn.Module:
    """Call the target (or torchvision's builder) with the number of classes, the channels and ``model.kwargs``;
    load its pretrained weights where asked (``keep_head``: all of them, the classifier too, or an error)."""
    from hydra.utils import instantiate

    path, key = target_of(cfg)
    fn = locate(path, key)
    kwargs = dict(cfg.kwargs or {})
    classes_key = getattr(cfg, "num_classes_key", "num_classes")
    if classes_key:
        kwargs[classes_key] = num_classes
    channels_key = getattr(cfg, "in_channels_key", None)
    if channels_key == "auto":
        channels_key = next((k for k in CHANNEL_KEYS if weights_of.accepts(fn, k)), None)
    if channels_key:
        kwargs[channels_key] = in_channels
    tv = weights_of.torchvision_weights(fn, cfg.weights, "model.weights", path) if cfg.pretrained else None
    if cfg.pretrained and tv is None:
        if not weights_of.accepts(fn, "pretrained"):
            raise ConfigError(f"model.pretrained=true is invalid for {key}={path}: it offers no weights")
        kwargs["pretrained"] = True
    try:
        model = instantiate({"_target_": path, **kwargs}, _convert_="all")
    except Exception as e:  # noqa: BLE001 - the callable's own refusal: its arguments, a failed download
        raise ConfigError(f"{key}={path!r} is invalid: calling it failed ({weights_of.call_failed(e)})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{key}={path!r} is invalid: allowed a callable that returns an nn.Module (it returned "
                          f"{weights_of.describe(model)})")
    if tv is not None:
        weights_of.load_torchvision(model, tv, "model.pretrained", keep_head)
    return model


@register_model("target", TargetConfig)
def build_target(cfg, num_classes: int, in_channels: int) -> nn.Module:
    return build(cfg, num_classes, in_channels)


@register_model("torchvision", TorchvisionConfig)
def build_torchvision(cfg, num_classes: int, in_channels: int) -> nn.Module:
    return build(cfg, num_classes, in_channels)


build_target.check = build_torchvision.check = check
build_target.pretrained_classes = build_torchvision.pretrained_classes = pretrained_classes
