"""Model weights from a file saved with ``torch.save``: a whole module, or a state_dict (also inside an lstsd
checkpoint or under ``state_dict``), loaded into a model with one line saying why it does not fit (another number
of classes, another architecture)."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from lstsd.errors import ConfigError, one_line


def read_checkpoint(path: Path, key: str):
    """A ``torch.save`` file: a whole module, or a state_dict (also inside an lstsd checkpoint, ``model``, or
    under ``state_dict``; ``module.`` and ``_orig_mod.`` prefixes, of DDP and torch.compile, removed)."""
    if not path.is_file():
        raise ConfigError(f"{key}={str(path)!r} is invalid: allowed a file saved with torch.save (a state_dict or a "
                          "whole module): no such file")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # a whole module (or an lstsd last.pt): pickled objects, the user's own file
            obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - not a torch file, a class that is not importable here
        raise ConfigError(f"{key}={str(path)!r} is invalid: not a readable torch.save file ({type(e).__name__}: "
                          f"{one_line(e)})") from None
    if isinstance(obj, nn.Module):
        return obj
    for inner in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(inner), dict):
            obj = obj[inner]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{key}={str(path)!r} is invalid: allowed a state_dict or a whole module (it holds "
                          f"{type(obj).__name__})")
    state = dict(obj)
    for prefix in ("module.", "_orig_mod."):
        consume_prefix_in_state_dict_if_present(state, prefix)
    return state


def load_state(model: nn.Module, state: dict, key: str, path: Path, described: str, num_classes: int) -> None:
    """Load ``state`` into ``model``; one line saying why it does not fit: another number of classes, or another
    architecture (missing, unexpected and differently shaped tensors)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shaped = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if not missing and not unexpected and not shaped:
        model.load_state_dict(state)
        return
    where = f"{key}={str(path)!r} is invalid"
    heads = [k for k in shaped if own[k].shape[:1] == (num_classes,) and own[k].shape[1:] == state[k].shape[1:]]
    if not missing and not unexpected and shaped and shaped == heads:
        classes = state[heads[0]].shape[0]
        raise ConfigError(f"{where}: it holds a model of {classes} classes ({heads[0]}: "
                          f"{'x'.join(map(str, state[heads[0]].shape))}), the student's dataset has {num_classes}")
    def listed(keys: list[str], what: str) -> str:
        return f"{len(keys)} {what} ({', '.join(keys[:2])}{', ...' if len(keys) > 2 else ''})" if keys else ""

    parts = [listed(missing, "missing"), listed(unexpected, "unexpected"),
             f"{len(shaped)} of another shape ({shaped[0]}: {'x'.join(map(str, state[shaped[0]].shape))} in the file, "
             f"{'x'.join(map(str, own[shaped[0]].shape))} in the model)" if shaped else ""]
    raise ConfigError(f"{where}: it does not fit {described} (tensors: {'; '.join(p for p in parts if p)}): a "
                      "checkpoint of another architecture (set method.teacher_model to the teacher's model config)")
