"""Teachers are runs of this framework: loaded from a finished run's directory, or trained once and cached.

* :func:`load_teacher`: the final model of a finished run (``results.json``, ``.hydra/config.yaml`` and
  ``last.pt``), its architecture read from that run's config, checked against the student's number of classes;
  returned frozen (eval mode, no gradients).
* :func:`train_teacher`: the run composed from ``lstsd/conf/config.yaml`` and a list of overrides, trained into
  ``<cache>/<hash of the overrides>/`` unless a finished run is already there, through the
  :class:`TeacherRunner` the composition root (:mod:`lstsd.run`) hands to every method. Concurrent jobs of a
  sweep wait on a file lock for the one that trains it, so a sweep trains each teacher once. The caller's
  random generators are left as they were, so a student's run does not depend on whether its teacher was
  cached.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lstsd import distributed
from lstsd.data.text import ENCODERS
from lstsd.errors import ConfigError, require
from lstsd.models import build_model, frozen_copy
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
    """The ``model`` or ``dataset`` section of a run's saved config as its registered schema's object."""
    saved = RunDir(run_dir).read_config()[section]
    registry, name = (MODELS, saved.arch) if section == "model" else (DATASETS, saved.name)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(registry.get(name).schema), saved))


def teacher_overrides(student_overrides: list[str], teacher: list[str]) -> list[str]:
    """The student's command line without its method and Hydra settings, then method=vanilla and ``teacher``."""
    keep = [o for o in student_overrides if not o.lstrip("+~").split("=")[0].split(".")[0] in ("method", "hydra")]
    return keep + ["method=vanilla", *teacher]


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
