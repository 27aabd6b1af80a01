"""A method's teacher, resolved by the run before it builds the method (:func:`resolve`), one source per branch
(:class:`~lstsd.methods.teacher.TeacherConfig` gives their order):

* :func:`from_module`: a module the caller gives (``run(cfg, teacher=...)``, ``lstsd.method(..., teacher=...)``);
* :func:`from_run`: the final model of a finished run (``results.json``, ``.hydra/config.yaml`` and ``last.pt``),
  its architecture read from that run's config, checked against the student's number of classes;
* :func:`from_checkpoint`: a file saved with ``torch.save`` (``method.teacher_checkpoint``: a state_dict, a whole
  module, or an lstsd ``last.pt``) for the architecture of ``method.teacher_model``;
* :func:`from_pretrained`: the pretrained weights of ``method.teacher_model`` (torchvision, timm);
* :func:`train_teacher`: a run trained first, composed from the method's teacher overrides into
  ``<cache>/<hash of the overrides>/`` unless a finished run is already there. Concurrent jobs of a sweep wait on
  a file lock for the one that trains it, so a sweep trains each teacher once. The caller's random generators are
  left as they were, so a student's run does not depend on whether its teacher was cached.

Every teacher comes back frozen (eval mode, no gradients) on the student's device, with its outputs checked for
the student's number of classes, as a :class:`~lstsd.methods.teacher.Teacher`; a method that maps samples to
inputs of its teacher's own (LW-KD's SynMNIST) gets that training split with it.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from lstsd import distributed
from lstsd.config.compose import import_modules
from lstsd.data import build_data
from lstsd.data.text import ENCODERS
from lstsd.data.types import DataInfo
from lstsd.errors import ConfigError, one_line, require
from lstsd.methods.teacher import Teacher, TeacherConfig
from lstsd.models import build_model, check_model, freeze, frozen_copy, not_logits, pretrained_classes
from lstsd.models.checkpoint_files import load_state, read_checkpoint
from lstsd.registry import DATASETS, MODELS
from lstsd.training.rundir import TEACHER_LOCK, RunDir

log = logging.getLogger(__name__)
Compose = Callable[[list[str]], DictConfig]  # a run's configuration from its overrides
Train = Callable[[DictConfig, Path, list[str]], object]  # trains that configuration into a folder


@dataclass(frozen=True)
class Student:
    """What a teacher is resolved for."""
    info: DataInfo
    device: torch.device
    probe: Optional[Tensor] = None  # two training inputs: a teacher's outputs are checked on them
    model: Optional[object] = None  # the student's model config: a teacher of text must read its tokens
    overrides: tuple = ()  # the student's command line: a teacher run starts from it
    dataset_root: str = "data"
    seed: int = 0


def resolve(cfg, student: Student, given: Optional[nn.Module] = None, compose: Optional[Compose] = None,
            train: Optional[Train] = None) -> Optional[Teacher]:
    """The teacher of method config ``cfg`` (None for a method without one), from the first source there is:
    ``given``, ``teacher_run``, ``teacher_checkpoint`` or pretrained ``teacher_model``, or the run ``teacher``
    describes, trained with ``train`` (the lstsd trainer) unless it is cached. ``compose`` composes a run's
    configuration (a teacher run's model and data); without it (a loop of one's own) a source that needs one is a
    :class:`ConfigError`."""
    if not isinstance(cfg, TeacherConfig):
        return None
    k = student.info.num_classes
    overrides = cfg.teacher_overrides(list(student.overrides), student.dataset_root, k, student.seed)
    if cfg.teacher_run is not None and given is None:
        return from_run(cfg.teacher_run, "method.teacher_run", student, cfg.own_inputs())
    if given is not None or cfg.teacher_checkpoint is not None or cfg.teacher_model is not None:
        composed = None  # the teacher run's configuration: its inputs, or the architecture of a bare state_dict
        if compose is not None and (cfg.own_inputs() or cfg.teacher_checkpoint is not None and cfg.teacher is not None):
            composed = composed_for(compose, [*where_components_are(student.overrides), *overrides], "method.teacher")
        inputs = build_data(OmegaConf.to_object(composed.dataset), 0, student.device).train \
            if cfg.own_inputs() and composed is not None else None
        probe = student.probe
        if inputs is not None:  # the teacher reads inputs of its own: their shape is its input shape
            probe = inputs.get(torch.arange(min(2, inputs.num_samples), device=student.device), None).x
            student = replace(student, info=replace(student.info, input_shape=tuple(probe.shape[1:])))
        if given is not None:
            return Teacher(from_module(given, probe, k, student.device), inputs=inputs)
        if cfg.teacher_checkpoint is None:
            return Teacher(from_pretrained(cfg.teacher_model, student, probe, compose), inputs=inputs)
        default = model_object(composed.model, "method.teacher") if composed is not None and cfg.teacher is not None \
            else student.model
        return Teacher(from_checkpoint(Path(str(cfg.teacher_checkpoint)).expanduser(), cfg.teacher_model, default,
                                       student, probe, compose), inputs=inputs)
    cfg.require_teacher()
    if train is None or compose is None:
        raise ConfigError(f"method.teacher={list(cfg.teacher)!r} is invalid here: a teacher run to train needs the "
                          "lstsd trainer (allowed a given teacher module, method.teacher_checkpoint or "
                          "method.teacher_model)")
    require_same_tokens(composed_for(compose, overrides, "method.teacher").model, student, "method.teacher",
                        str(list(cfg.teacher)))  # before it trains
    run_dir = train_teacher(overrides, cfg.teacher_cache, compose, train)
    return from_run(run_dir, "method.teacher", student, cfg.own_inputs())


# ------------------------------------------------------------------------------------------------- the sources
def from_module(given: nn.Module, probe, num_classes: int, device) -> nn.Module:
    teacher = frozen_copy(given).to(device)
    check_outputs(teacher, probe, num_classes, "the teacher module given to the run")
    return teacher


def from_run(run_dir: str | Path, key: str, student: Student, own_inputs: bool = False) -> Teacher:
    """The final model of a finished run; with ``own_inputs``, the training split of that run's data too. On text
    the student's tokens are the teacher's input, so the teacher must have the same tokeniser (the same text model
    and vocabulary)."""
    d = RunDir(Path(run_dir).expanduser())
    with d.reading(key):  # not while another process extends it: its results and weights read as one
        res = d.require_finished(key)
        try:
            state = torch.load(d.checkpoint, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - truncated, garbage, another pickle
            raise ConfigError(f"{key}={str(d.path)!r} is invalid: its last.pt is not readable ({type(e).__name__}: "
                              f"{one_line(e)})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ConfigError(f"{key}={str(d.path)!r} is invalid: its last.pt is not an lstsd checkpoint")
    if state.get("epoch", res.get("epochs")) != res.get("epochs"):
        raise ConfigError(f"{key}={str(d.path)!r} is invalid: its last.pt is at epoch {state.get('epoch')} but its "
                          f"results.json records {res.get('epochs')} (allowed a run whose checkpoint is its result)")
    k = student.info.num_classes
    require(res.get("num_classes") == k, key,
            f"a run with {k} classes like this dataset (it has {res.get('num_classes')})", str(d.path))
    model_cfg = load_section(d.path, "model")
    require_same_tokens(model_cfg, student, key, str(d.path))
    vocab = student.info.vocab if model_cfg.kind == "text" else None
    if vocab is not None:  # a textcnn teacher embeds the student's token ids: the same vocabulary, word for word
        require(res.get("vocab_sha256") == student.info.vocab_sha256, key, "a run with the student's vocabulary "
                "(the same task, training split and model.max_vocab)", str(d.path))
    shape = res.get("input_shape")
    require(isinstance(shape, list) and all(isinstance(n, int) and n >= 1 for n in shape), key,
            "a run whose results.json records its input_shape (a list of sizes)", str(d.path))
    model = build_model(model_cfg, k, shape, vocab)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ConfigError(f"{key}={str(d.path)!r} is invalid: its last.pt does not fit its config ({e})") from None
    inputs = build_data(load_section(d.path, "dataset"), 0, student.device).train if own_inputs else None
    teacher = freeze(model.to(student.device))
    check_outputs(teacher, None if own_inputs or vocab is not None else student.probe, k, f"{key}={str(d.path)!r}")
    return Teacher(teacher, str(run_dir), inputs, record=res)


def from_pretrained(value, student: Student, probe, compose: Optional[Compose]) -> nn.Module:
    """The pretrained weights of the model config ``value`` (``pretrained: true``), of the student's classes."""
    model_cfg = teacher_model_config(value, student, compose)
    k = student.info.num_classes
    require(getattr(model_cfg, "pretrained", False), "method.teacher_model", "a model with pretrained=true "
            "(torchvision's or timm's weights), or null with method.teacher_checkpoint a file", str(value))
    classes = pretrained_classes(model_cfg)
    if classes is not None and classes != k:
        raise ConfigError(f"method.teacher_model={model_cfg.name!r} is invalid: its pretrained weights have "
                          f"{classes} classes, the student's dataset {k} (a teacher needs the student's classes: "
                          "give method.teacher_checkpoint, a teacher trained on this dataset)")
    teacher = freeze(build_teacher_model(model_cfg, student)).to(student.device)
    check_outputs(teacher, probe, k, f"method.teacher_model={model_cfg.name}")
    return teacher


def from_checkpoint(path: Path, value, default, student: Student, probe, compose: Optional[Compose]) -> nn.Module:
    """The weights of ``path`` in the model config ``value`` (null: ``default``, the model the teacher run would
    train, else the student's); a whole module saved without ``value`` is the teacher as it is."""
    key, k = "method.teacher_checkpoint", student.info.num_classes
    loaded = read_checkpoint(path, key)
    model_cfg = teacher_model_config(value, student, compose) if value is not None else None
    if isinstance(loaded, nn.Module) and model_cfg is None:
        teacher = freeze(loaded).to(student.device)
        check_outputs(teacher, probe, k, f"{key}={str(path)!r}")
        return teacher
    if model_cfg is None:
        if default is None:
            raise ConfigError(f"{key}={str(path)!r} holds a state_dict: give method.teacher_model too (a mapping of "
                              "model keys, e.g. {_target_: torchvision.models.resnet50}), or save the whole module")
        model_cfg = default
        require_same_tokens(model_cfg, student, key, str(path))
    described = f"model={model_cfg.name}" + (f" ({model_cfg._target_})" if getattr(model_cfg, "_target_", None) and
                                              model_cfg._target_ != model_cfg.name else "")
    if getattr(model_cfg, "pretrained", False):  # the checkpoint's weights replace them
        model_cfg = replace(model_cfg, pretrained=False)
    teacher = build_teacher_model(model_cfg, student)
    state = loaded.state_dict() if isinstance(loaded, nn.Module) else loaded
    load_state(teacher, state, key, path, described, k)
    teacher = freeze(teacher).to(student.device)
    check_outputs(teacher, probe, k, f"{key}={str(path)!r}")
    return teacher


def train_teacher(overrides: list[str], cache: str | Path, compose: Compose, train: Train) -> Path:
    """The folder of the finished teacher run of ``overrides`` in ``cache``: trained there first unless it is."""
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
            cfg = compose(overrides)
            if distributed.is_main():
                (d / "overrides.txt").write_text("\n".join(overrides) + "\n")
                log.warning(f"training the teacher {' '.join(overrides)} into {d}")
            states = random.getstate(), np.random.get_state()
            with torch.random.fork_rng(devices=[]):
                train(cfg, d, overrides)
            random.setstate(states[0])
            np.random.set_state(states[1])
    distributed.barrier()  # its files are complete before any process loads it
    return d


# ------------------------------------------------------------------------------------------------- helpers
def build_teacher_model(model_cfg, student: Student) -> nn.Module:
    try:
        check_model(model_cfg)
        vocab = student.info.vocab if model_cfg.kind == "text" else None
        return build_model(model_cfg, student.info.num_classes, student.info.input_shape, vocab)
    except ConfigError as e:
        raise ConfigError(f"method.teacher_model: {e}") from None


def require_same_tokens(teacher_model, student: Student, key: str, value: str) -> None:
    """On text the teacher reads the student's token rows, so it must be the student's kind of text model (same
    ``model.arch`` and ``model.path``); an image teacher cannot teach a text student, nor the reverse."""
    mine = student.model
    if teacher_model.arch in ENCODERS or getattr(mine, "kind", None) == "text":
        same = mine is not None and mine.arch == teacher_model.arch and \
            getattr(mine, "path", None) == getattr(teacher_model, "path", None)
        require(same, key, f"a run of the student's text model (model.arch={getattr(mine, 'arch', None)}, the "
                f"same model.path): the teacher reads the student's tokens", value)


def load_section(run_dir: Path, section: str):
    """The ``model`` or ``dataset`` section of a run's saved config as its registered schema's object (the
    modules of the run's ``imports`` imported first: a run of a user's own model)."""
    config = RunDir(run_dir).read_config()
    try:
        import_modules(config.get("imports") or [])
    except ConfigError as e:
        raise ConfigError(f"{run_dir}: {e}") from None
    saved = config[section]
    registry, name = (MODELS, saved.arch) if section == "model" else (DATASETS, saved.name)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(registry.get(name).schema), saved))


def where_components_are(student_overrides) -> list[str]:
    """The overrides of the student's command line that make its own components composable: ``imports`` and
    ``hydra.searchpath``."""
    return [o for o in student_overrides if o.lstrip("+~").split("=")[0] in ("imports", "hydra.searchpath")]


def composed_for(compose: Compose, overrides: list[str], key: str):
    """The configuration ``overrides`` compose, any failure a :class:`ConfigError` naming ``key``."""
    try:
        return compose(list(overrides))
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


def teacher_model_config(value, student: Student, compose: Optional[Compose], key: str = "method.teacher_model"):
    """``method.teacher_model`` as a model config object: a model config already (``+model@method.teacher_model=
    resnet56`` composes one), the name of a model option (``resnet56``: composed as ``model=resnet56`` with the
    student's imports and search path), or a mapping of model keys (``{_target_: torchvision.models.resnet50,
    pretrained: true}``, ``{arch: cifar_resnet, depth: 56, name: resnet56}``)."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        model_cfg = value
    elif isinstance(value, str):
        if compose is None:
            raise ConfigError(f"{key}={value!r} is invalid here: a model option needs the composition (give a "
                              "mapping of model keys)")
        try:
            node = compose([*where_components_are(student.overrides), f"model={value}"]).model
        except ConfigError as e:
            raise ConfigError(f"{key}: {e}") from None
        except Exception as e:  # noqa: BLE001 - Hydra's unknown option
            options = one_line(e).partition("allowed one of ")[2]
            raise ConfigError(f"{key}={value!r} is invalid: allowed a model option" +
                              (f" (one of {options})" if options else f" ({one_line(e)})") +
                              ", or a mapping of model keys with _target_ or arch") from None
        model_cfg = model_object(node, key)
    else:
        model_cfg = model_object(value, key)
    try:
        check_model(model_cfg)
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from None
    require_same_tokens(model_cfg, student, key, str(value))
    return model_cfg


def check_outputs(teacher: nn.Module, x, num_classes: int, what: str) -> None:
    """The teacher's weights are finite, and one forward pass of ``x`` in eval mode gives ``num_classes`` finite
    scores per sample, or a :class:`ConfigError` names ``what`` (no pass without ``x``)."""
    tensors = [*teacher.named_parameters(), *teacher.named_buffers()]
    bad = [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ConfigError(f"{what} is invalid: its weights hold non-finite values (NaN or inf) in "
                          f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}: allowed finite weights")
    if x is None:
        return
    try:
        with torch.no_grad():
            out = teacher.eval()(x)
    except Exception as e:  # noqa: BLE001 - whatever the layers raise: the shapes do not fit
        raise ConfigError(f"{what} does not fit the student's input (shape {'x'.join(map(str, x.shape[1:]))}): "
                          f"{type(e).__name__}: {one_line(e)}") from None
    if (kind := not_logits(out)) is not None:
        raise ConfigError(f"{what} is invalid: it returns {kind}, not a floating-point tensor of logits")
    if out.ndim != 2 or out.shape[1] != num_classes:
        raise ConfigError(f"{what} is invalid: it gives outputs of shape {tuple(out.shape)}, not (batch, "
                          f"{num_classes}): a teacher of another number of classes than the student's "
                          f"{num_classes}")
    if not bool(torch.isfinite(out).all()):
        raise ConfigError(f"{what} is invalid: its outputs on the student's first samples are not finite (NaN or "
                          "inf): allowed a teacher whose logits are finite numbers")
