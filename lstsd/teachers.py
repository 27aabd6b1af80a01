"""Teachers: runs of this framework (loaded from a finished run's directory, or trained once and cached), or
teachers from outside it (a checkpoint file, pretrained weights, a module the caller gives).

* :func:`load_teacher`: the final model of a finished run (``results.json``, ``.hydra/config.yaml`` and
  ``last.pt``), its architecture read from that run's config, checked against the student's number of classes;
  returned frozen (eval mode, no gradients).
* :func:`train_teacher`: the run composed from ``lstsd/conf/config.yaml`` and a list of overrides, trained into
  ``<cache>/<hash of the overrides>/`` unless a finished run is already there, through the
  :class:`TeacherRunner` the composition root (:mod:`lstsd.run`) hands to every method. Concurrent jobs of a
  sweep wait on a file lock for the one that trains it, so a sweep trains each teacher once. The caller's
  random generators are left as they were, so a student's run does not depend on whether its teacher was
  cached.
* :func:`external_teacher`: a teacher that is no run of this framework, for KD and LW-KD: the module the caller
  gives (``run(cfg, teacher=...)``, the run context's ``teacher``), a file saved with ``torch.save``
  (``method.teacher_checkpoint``: a state_dict, a whole module, or an lstsd ``last.pt``) for the architecture of
  ``method.teacher_model``, or the pretrained weights of ``method.teacher_model`` (torchvision, timm). Its number of
  classes is checked against the student's before training.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lstsd import distributed
from lstsd.data.text import ENCODERS
from lstsd.errors import ConfigError, one_line, require
from lstsd.models import build_model, check_model, frozen_copy, pretrained_classes
from lstsd.registry import DATASETS, MODELS
from lstsd.rundir import TEACHER_LOCK, RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherRunner:
    """How a method gets a teacher run: ``compose(overrides)`` gives the run's config, ``run(cfg, run_dir,
    overrides)`` trains it into ``run_dir``."""
    compose: Callable[[list[str]], DictConfig]
    run: Callable[[DictConfig, Path, list[str]], dict]


def load_teacher(run_dir: str | Path, key: str, num_classes: int, device, student=None) -> nn.Module:
    """``student``: the student's RunContext; on text its tokens are the teacher's input, so the teacher must
    have the same tokeniser (the same text model and vocabulary)."""
    d = RunDir(Path(run_dir).expanduser())
    res = d.require_finished(key)
    require(res.get("num_classes") == num_classes, key,
            f"a run with {num_classes} classes like this dataset (it has {res.get('num_classes')})", str(d.path))
    model_cfg = load_section(d.path, "model")
    require_same_tokens(model_cfg, student, key, str(d.path))
    vocab = student.info.vocab if model_cfg.kind == "text" else None
    if vocab is not None:  # a textcnn teacher embeds the student's token ids: the same vocabulary, word for word
        require(res.get("vocab_sha256") == student.info.vocab_sha256, key, "a run with the student's vocabulary "
                "(the same task, training split and model.max_vocab)", str(d.path))
    model = build_model(model_cfg, num_classes, res["input_shape"], vocab)
    state = torch.load(d.checkpoint, map_location="cpu", weights_only=False)["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ConfigError(f"{key}={str(d.path)!r} is invalid: its last.pt does not fit its config ({e})") from None
    return frozen_copy(model.to(device))


def require_same_tokens(teacher_model, student, key: str, value: str) -> None:
    """On text the teacher reads the student's token rows, so it must be the student's kind of text model (same
    ``model.arch`` and ``model.path``); an image teacher cannot teach a text student, nor the reverse."""
    mine = student.config.model if student is not None and student.config is not None else None
    if teacher_model.arch in ENCODERS or getattr(mine, "kind", None) == "text":
        same = mine is not None and mine.arch == teacher_model.arch and \
            getattr(mine, "path", None) == getattr(teacher_model, "path", None)
        require(same, key, f"a run of the student's text model (model.arch={getattr(mine, 'arch', None)}, the "
                f"same model.path): the teacher reads the student's tokens", value)


def load_section(run_dir: Path, section: str):
    """The ``model`` or ``dataset`` section of a run's saved config as its registered schema's object (the
    modules of the run's ``imports`` imported first: a run of a user's own model)."""
    config = RunDir(run_dir).read_config()
    for module in config.get("imports") or []:
        try:
            importlib.import_module(str(module))
        except Exception as e:  # noqa: BLE001 - the run's own components are not importable here
            raise ConfigError(f"{run_dir}: its imports module {module} cannot be imported ({type(e).__name__}: "
                              f"{one_line(e)})") from None
    saved = config[section]
    registry, name = (MODELS, saved.arch) if section == "model" else (DATASETS, saved.name)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(registry.get(name).schema), saved))


def teacher_overrides(student_overrides: list[str], teacher: list[str]) -> list[str]:
    """The student's command line without its method and Hydra settings (but its config search path, where its
    own YAML options may be), then method=vanilla and ``teacher``."""
    keep = [o for o in student_overrides if not o.lstrip("+~").split("=")[0].split(".")[0] in ("method", "hydra")
            or o.lstrip("+~").split("=")[0] == "hydra.searchpath"]
    return keep + ["method=vanilla", *teacher]


def where_components_are(student_overrides) -> list[str]:
    """The overrides of the student's command line that make its own components composable: ``imports`` and
    ``hydra.searchpath``."""
    return [o for o in student_overrides if o.lstrip("+~").split("=")[0] in ("imports", "hydra.searchpath")]


def compose_for(ctx, overrides: list[str], key: str):
    """The configuration ``overrides`` compose (through the run's composition), any failure a :class:`ConfigError`
    naming ``key``."""
    try:
        return ctx.runner.compose(list(overrides))
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from None
    except Exception as e:  # noqa: BLE001 - Hydra's composition errors: an unknown option or key
        raise ConfigError(f"{key}: {one_line(e)}") from None


def model_object(node, key: str):
    """A model config (a composed node or a mapping of model keys) as its registered schema's object."""
    if not OmegaConf.is_config(node) or OmegaConf.get_type(node) in (dict, None):
        node = OmegaConf.create(node)
        if "_target_" in node and "arch" not in node:
            node.arch = "target"
        if "arch" not in node:
            raise ConfigError(f"{key}={OmegaConf.to_container(node)!r} is invalid: allowed a model option (resnet56), "
                              "or a mapping of model keys with _target_ or arch")
        try:
            node = OmegaConf.merge(OmegaConf.structured(MODELS.get(str(node.arch)).schema), node)
        except ConfigError as e:
            raise ConfigError(f"{key}: {e}") from None
        except Exception as e:  # noqa: BLE001 - OmegaConf's unknown keys, wrong types
            raise ConfigError(f"{key}: {one_line(e)}") from None
    try:
        return OmegaConf.to_object(node)
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from None
    except Exception as e:  # noqa: BLE001
        cause = e.__cause__ if isinstance(e.__cause__, ConfigError) else e
        raise ConfigError(f"{key}: {one_line(cause)}") from None


def teacher_model_config(value, ctx, key: str = "method.teacher_model"):
    """``method.teacher_model`` as a model config object: a model config already (``+model@method.teacher_model=
    resnet56`` composes one), the name of a model option (``resnet56``: composed as ``model=resnet56`` with the
    student's imports and search path), or a mapping of model keys (``{_target_: torchvision.models.resnet50,
    pretrained: true}``, ``{arch: cifar_resnet, depth: 56, name: resnet56}``)."""
    if dataclasses_like(value):
        return value
    if isinstance(value, str):
        if ctx.runner is None:
            raise ConfigError(f"{key}={value!r} is invalid here: a model option needs the composition (give a "
                              "mapping of model keys)")
        try:
            node = ctx.runner.compose([*where_components_are(ctx.overrides), f"model={value}"]).model
        except ConfigError as e:
            raise ConfigError(f"{key}: {e}") from None
        except Exception as e:  # noqa: BLE001 - Hydra's unknown option
            options = one_line(e).partition("allowed one of ")[2]
            raise ConfigError(f"{key}={value!r} is invalid: allowed a model option" +
                              (f" (one of {options})" if options else f" ({one_line(e)})") +
                              ", or a mapping of model keys with _target_ or arch") from None
        return model_object(node, key)
    return model_object(value, key)


def dataclasses_like(value) -> bool:
    import dataclasses

    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def frozen(model: nn.Module, device) -> nn.Module:
    return model.to(device).eval().requires_grad_(False)


def check_outputs(teacher: nn.Module, x, num_classes: int, what: str) -> None:
    """One forward pass of ``x`` in eval mode: the teacher gives ``num_classes`` scores per sample, or a
    :class:`ConfigError` names ``what`` (nothing to check without ``x``)."""
    if x is None:
        return
    try:
        with torch.no_grad():
            out = teacher.eval()(x)
    except Exception as e:  # noqa: BLE001 - whatever the layers raise: the shapes do not fit
        raise ConfigError(f"{what} does not fit the student's input (shape {'x'.join(map(str, x.shape[1:]))}): "
                          f"{type(e).__name__}: {one_line(e)}") from None
    if out.ndim != 2 or out.shape[1] != num_classes:
        raise ConfigError(f"{what} is invalid: it gives outputs of shape {tuple(out.shape)}, not (batch, "
                          f"{num_classes}): a teacher of another number of classes than the student's "
                          f"{num_classes}")


def read_checkpoint(path: Path, key: str):
    """A ``torch.save`` file: a whole module, or a state_dict (also inside an lstsd checkpoint, ``model``, or
    under ``state_dict``; ``module.`` and ``_orig_mod.`` prefixes, of DDP and torch.compile, removed)."""
    import pickle

    from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

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


def external_teacher(cfg, ctx, default_model: Callable[[], object], probe, num_classes: int, input_shape,
                     device) -> Optional[nn.Module]:
    """The teacher that is no run of this framework, frozen on ``device``, or None where the configuration names
    a run (``teacher_run``) or a run to train (``teacher``): the run context's ``teacher`` (given to
    ``run(cfg, teacher=...)``), else ``cfg.teacher_checkpoint`` (for the model of ``cfg.teacher_model``, by default
    ``default_model()``; a whole module as it is), else the pretrained weights of ``cfg.teacher_model``.
    ``probe``: a batch of the teacher's input (its outputs are checked for ``num_classes`` scores), or None."""
    given = getattr(ctx, "teacher", None)
    if given is not None:
        teacher = frozen_copy(given).to(device)
        check_outputs(teacher, probe, num_classes, "the teacher module given to the run")
        return teacher
    checkpoint, model_value = getattr(cfg, "teacher_checkpoint", None), getattr(cfg, "teacher_model", None)
    if checkpoint is None and model_value is None:
        return None
    model_cfg = teacher_model_config(model_value, ctx) if model_value is not None else None
    if model_cfg is not None:
        try:
            check_model(model_cfg)
        except ConfigError as e:
            raise ConfigError(f"method.teacher_model: {e}") from None
        require_same_tokens(model_cfg, ctx, "method.teacher_model", str(model_value))
    vocab = ctx.info.vocab if model_cfg is not None and model_cfg.kind == "text" else None
    if checkpoint is None:  # pretrained weights by name
        require(getattr(model_cfg, "pretrained", False), "method.teacher_model", "a model with pretrained=true "
                "(torchvision's or timm's weights), or null with method.teacher_checkpoint a file", str(model_value))
        classes = pretrained_classes(model_cfg)
        if classes is not None and classes != num_classes:
            raise ConfigError(f"method.teacher_model={model_cfg.name!r} is invalid: its pretrained weights have "
                              f"{classes} classes, the student's dataset {num_classes} (a teacher needs the student's "
                              "classes: give method.teacher_checkpoint, a teacher trained on this dataset)")
        try:
            teacher = build_model(model_cfg, num_classes, input_shape, vocab)
        except ConfigError as e:
            raise ConfigError(f"method.teacher_model: {e}") from None
        teacher = frozen(teacher, device)
        check_outputs(teacher, probe, num_classes, f"method.teacher_model={model_cfg.name}")
        return teacher
    path = Path(str(checkpoint)).expanduser()
    key = "method.teacher_checkpoint"
    loaded = read_checkpoint(path, key)
    if isinstance(loaded, nn.Module) and model_cfg is None:  # the whole module is the teacher
        teacher = frozen(loaded, device)
        check_outputs(teacher, probe, num_classes, f"{key}={str(path)!r}")
        return teacher
    state = loaded.state_dict() if isinstance(loaded, nn.Module) else loaded
    if model_cfg is None:
        model_cfg = default_model()
        require_same_tokens(model_cfg, ctx, key, str(path))
        vocab = ctx.info.vocab if model_cfg.kind == "text" else None
    described = f"model={model_cfg.name}" + (f" ({model_cfg._target_})" if getattr(model_cfg, "_target_", None) and
                                              model_cfg._target_ != model_cfg.name else "")
    model_cfg = copy_without_weights(model_cfg)
    try:
        teacher = build_model(model_cfg, num_classes, input_shape, vocab)
    except ConfigError as e:
        raise ConfigError(f"method.teacher_model: {e}") from None
    load_state(teacher, state, key, path, described, num_classes)
    teacher = frozen(teacher, device)
    check_outputs(teacher, probe, num_classes, f"{key}={str(path)!r}")
    return teacher


def copy_without_weights(model_cfg):
    """The same model config, without pretrained weights (a checkpoint's replace them)."""
    import dataclasses

    if getattr(model_cfg, "pretrained", False):
        return dataclasses.replace(model_cfg, pretrained=False)
    return model_cfg


def train_teacher(overrides: list[str], cache: str | Path, runner: TeacherRunner) -> Path:
    # a teacher trained by W processes saw W times larger global batches: not the same teacher as one process's
    scale = [f"world_size={distributed.world_size()}"] if distributed.world_size() > 1 else []
    # the same teacher whatever the order of its overrides: Hydra applies group choices before values, and of a
    # key given twice the last one, so the last value of each key, sorted, is what composes the run
    last = {o.split("=", 1)[0]: o for o in overrides}
    key = hashlib.sha256("\n".join(sorted(last.values()) + scale).encode()).hexdigest()[:16]
    d = Path(cache).expanduser() / key
    d.mkdir(parents=True, exist_ok=True)
    # one process holds the lock (rank 0 of several, which then train the teacher together, as one DDP run)
    # (not the run folder's own .lock, which the teacher's run takes without waiting)
    lock = RunDir(d).lock(TEACHER_LOCK, wait=True) if distributed.is_main() else contextlib.nullcontext()
    with lock:
        if distributed.broadcast(RunDir(d).completed() is None):
            cfg = runner.compose(overrides)
            if distributed.is_main():
                (d / "overrides.txt").write_text("\n".join(overrides) + "\n")
                log.warning(f"training the teacher {' '.join(overrides)} into {d}")
            states = random.getstate(), np.random.get_state()
            with torch.random.fork_rng(devices=[]):
                runner.run(cfg, d, overrides)
            random.setstate(states[0])
            np.random.set_state(states[1])
    distributed.barrier()  # its files are complete before any process loads it
    return d
