"""Pretrained weights of torchvision and timm models (``model.pretrained=true``), from the local cache first.

Nothing is downloaded when ``HF_HUB_OFFLINE=1`` (the variable Hugging Face's hub and timm honour; here it stops
torchvision's downloads too): weights that are not in the local cache are then a :class:`ConfigError` of one line
naming the model, the weights and the cache file expected. Otherwise missing weights are downloaded once into
that cache (torchvision: ``$TORCH_HOME/hub/checkpoints/``; timm: the Hugging Face cache, ``$HF_HOME/hub/``), and a
failed download is the same one-line error. The checks run before the data is loaded (:func:`check_pretrained`),
so a run without its weights stops at once.

A student whose number of classes differs from the weights' (ImageNet's 1,000) gets every weight but the
classifier's, which is initialised afresh (fine-tuning); a teacher's classes must be the weights' own
(:func:`pretrained_classes`), since a classifier initialised afresh teaches nothing.
"""
from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlparse

from torch import nn

from lstsd.errors import ConfigError, one_line

log = logging.getLogger(__name__)


def offline() -> bool:
    """Whether downloads are off: ``HF_HUB_OFFLINE`` set to 1 (true, yes, on)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def torchvision_weights(fn: Callable, name: Optional[str], key: str, what: str):
    """The weights enum entry of a torchvision model builder ``fn`` (``name``: one of its weights, e.g.
    IMAGENET1K_V2; None: DEFAULT); None when ``fn`` is not a torchvision builder with weights."""
    try:
        from torchvision.models import get_model_weights

        enum = get_model_weights(fn)
    except Exception:  # noqa: BLE001 - not one of torchvision's registered builders
        return None
    choice = name or "DEFAULT"
    try:
        return enum[choice]
    except KeyError:
        allowed = ", ".join(dict.fromkeys(["DEFAULT", *enum.__members__]))
        raise ConfigError(f"{key}={name!r} is invalid: allowed one of {allowed} (the weights of {what})") from None


def hub_file(url: str) -> Path:
    """Where torch.hub keeps the file of ``url``: ``<torch.hub.get_dir()>/checkpoints/<file name>``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def fetch_torchvision(weights, key: str) -> Path:
    """The cached file of torchvision ``weights``: downloaded first unless offline; a :class:`ConfigError`
    where it is not there and cannot be had."""
    path = hub_file(weights.url)
    if path.is_file():
        return path
    label = f"torchvision's {type(weights).__name__}.{weights.name}"
    if offline():
        raise ConfigError(f"{key}=true is invalid: {label} is not in the local cache ({path}) and HF_HUB_OFFLINE=1 "
                          f"allows no download: download it where there is a network (it goes to "
                          f"$TORCH_HOME/hub/checkpoints/) or copy {path.name} there")
    import torch.hub

    try:
        torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - no network, a proxy, a full disk: one line
        raise ConfigError(f"{key}=true is invalid: {label} is not in the local cache ({path}) and could not be "
                          f"downloaded ({type(e).__name__}: {one_line(e)})") from None
    return path


def load_torchvision(model: nn.Module, weights, key: str, keep_head: bool) -> None:
    """Load ``weights`` (from the cache) into ``model``, a torchvision model built without weights. Tensors whose
    shape differs (the classifier of another number of classes) keep their fresh initialisation, unless
    ``keep_head``: then they are a :class:`ConfigError`."""
    import torch

    path = fetch_torchvision(weights, key)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file in the cache
        raise ConfigError(f"{key}=true is invalid: {path} is not a readable weights file ({type(e).__name__}: "
                          f"{one_line(e)}): delete it to download it again") from None
    own = model.state_dict()
    fresh = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if fresh and keep_head:
        raise ConfigError(f"{key}=true is invalid: the weights do not fit ({', '.join(fresh[:3])} differ in shape)")
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=False)
    if unexpected or set(missing) - set(fresh):
        raise ConfigError(f"{key}=true is invalid: {path.name} does not fit the model (missing "
                          f"{', '.join(sorted(set(missing) - set(fresh))[:3]) or 'nothing'}, unexpected "
                          f"{', '.join(unexpected[:3]) or 'nothing'})")
    initialised = f"; initialised afresh: {', '.join(fresh)}" if fresh else ""
    log.info(f"pretrained weights {type(weights).__name__}.{weights.name} from {path}{initialised}")


def timm_weights_cached(name: str) -> Optional[bool]:
    """Whether the default pretrained weights of timm model ``name`` are in the local cache (None: timm names no
    file for them)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        return any(isinstance(try_to_load_from_cache(repo, f, revision=revision or None), str) for f in files)
    if cfg.file:
        return Path(cfg.file).is_file()
    if cfg.url:
        return hub_file(cfg.url).is_file()
    return None


def check_timm(name: str, key: str) -> None:
    """Offline, the weights of timm model ``name`` must be in the cache."""
    if offline() and timm_weights_cached(name) is False:
        raise ConfigError(f"{key}=true is invalid: the timm weights of {name} are not in the local cache "
                          f"(Hugging Face's, $HF_HOME/hub) and HF_HUB_OFFLINE=1 allows no download: run "
                          f"timm.create_model({name!r}, pretrained=True) once where there is a network")


def timm_classes(name: str) -> Optional[int]:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return None if cfg is None else cfg.num_classes


def accepts(fn: Callable, name: str) -> bool:
    """Whether ``fn`` (a function, or a class: its constructor) takes the keyword ``name``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def call_failed(e: BaseException) -> str:
    """The cause of a failed ``hydra.utils.instantiate`` as one line (Hydra wraps it in its own message)."""
    cause = e.__cause__ or e
    return f"{type(cause).__name__}: {one_line(cause)}"


def describe(obj: Any) -> str:
    return type(obj).__name__ if not isinstance(obj, type) else f"the class {obj.__name__}"
