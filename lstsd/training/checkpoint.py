"""The checkpoint: everything a run needs to go on exactly, written atomically, and read back.

:func:`capture` gathers weights, optimiser, loss scale, method state (banks, snapshots, EMA teacher, DLB's
last batch, per rank), every random generator, the history and the position (the epoch, and for a checkpoint
taken inside an epoch the steps done in it and their statistics; the epoch's batch order and augmentation
follow from (seed, epoch), so the position is enough to go on). :func:`restore` puts it back.
"""
from __future__ import annotations

import io
import logging
import random
from pathlib import Path

import numpy as np
import torch

from lstsd import distributed
from lstsd.errors import ConfigError, TrainingError, one_line
from lstsd.fileio import atomic_write

log = logging.getLogger("lstsd.training")
NOT_READABLE = "(delete it, or set trainer.resume=false to start afresh)"


def atomic_save(obj, path: Path) -> None:
    """:func:`~lstsd.fileio.atomic_write`: a crash or a failed write (a full disk) never leaves a half-written
    checkpoint, and the previous one stays until the new one is complete."""
    buffer = io.BytesIO()  # serialised first: torch.save's own writer reports a full disk as a RuntimeError
    torch.save(obj, buffer)  # without the OS error, a plain write of the bytes gives the OSError (errno, path)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()), binary=True)


def stored_identity(path: Path):
    """The run identity (:func:`lstsd.config.identity.run_identity`) a checkpoint was written with (None when it has
    none), read without loading its tensors; a file that is not a checkpoint is a ConfigError naming it."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except RuntimeError:  # a file of torch's legacy format cannot be memory-mapped: read it whole
            state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - truncated, garbage, another pickle: not a checkpoint of this run
        raise ConfigError(f"{path}: not a readable checkpoint ({type(e).__name__}: {one_line(e)}) "
                          f"{NOT_READABLE}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ConfigError(f"{path}: not an lstsd checkpoint {NOT_READABLE}")
    return state.get("config")


def capture(t) -> dict:
    """The state of trainer ``t`` (collective: with several processes every rank calls it)."""
    return {
        "epoch": t.start_epoch,
        "global_step": t.global_step,
        "in_epoch": t.in_epoch,
        "model": t.model.state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "scaler": t.scaler.state_dict(),
        "method": t.method.state_dict(),
        "rank_states": distributed.gather_objects(t.method.rank_state()),
        "world_size": distributed.world_size(),
        "history": t.history,
        "rng_cpu": torch.get_rng_state(),
        "rng_python": random.getstate(),
        "rng_numpy": np.random.get_state(),
        # this process's device only: with several processes each rank restores its own GPU's stream
        "rng_cuda": torch.cuda.get_rng_state() if t.device.type == "cuda" else None,
        "seconds": (t.train_seconds, t.wall_seconds),
        "config": t.identity,  # the run's identity: a relaunch of another configuration refuses this file
    }


def save(t, path: Path) -> None:
    """Rank 0 writes; every rank learns whether it could, so that all go on or all stop together."""
    state, error = capture(t), None
    if distributed.is_main():
        try:
            atomic_save(state, path)
        except OSError as e:  # a full disk, a folder gone read-only: one line, the previous checkpoint kept
            error = TrainingError(f"cannot write the checkpoint {path}: {e.strerror or e} (errno {e.errno}); "
                                  "the previous checkpoint, if any, is kept")
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            error = e
    failure = distributed.broadcast(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    if failure is not None:
        raise TrainingError(f"rank 0 could not write the checkpoint: {failure}")


def selection_metric(history: list[dict], headline: str) -> str:
    """The score that picks the best epoch: the headline metric on the validation split when there is one (the
    test split's best epoch would be chosen on the test set), else on the test split."""
    return f"val_{headline}" if f"val_{headline}" in history[-1] else f"test_{headline}"


def save_best(t, path: Path) -> None:
    """After an epoch: when it is the best so far (the first of equal scores, like ``results.json``'s
    ``best_epoch`` and ``best_val_epoch``), write ``best.pt``: the model's weights (``"model"``, a state_dict),
    ``"epoch"`` (1-based), ``"metric"`` and ``"value"``, and the run's identity. Rank 0 writes it; derived from
    the history, so a resumed or extended run goes on choosing from all its epochs."""
    metric = selection_metric(t.history, t.cfg.dataset.headline)
    best = max(t.history, key=lambda row: row[metric])
    if best is not t.history[-1]:  # every rank has the same history: all decide alike
        return
    error = None
    if distributed.is_main():
        state = {"model": t.model.state_dict(), "epoch": best["epoch"], "metric": metric, "value": best[metric],
                 "config": t.identity}
        try:
            atomic_save(state, path)
        except OSError as e:  # the previous best.pt, if any, is kept
            error = f"cannot write {path}: {e.strerror or e} (errno {e.errno})"
    error = distributed.broadcast(error)  # all ranks stop together
    if error is not None:
        raise TrainingError(error)


def restore(t, path: Path) -> None:
    """Load ``path`` into trainer ``t``; any mismatch is a :class:`TrainingError` saying how to start afresh."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        t.model.load_state_dict(state["model"])
        t.optimizer.load_state_dict(state["optimizer"])
        if state.get("in_epoch") is not None and state["world_size"] != distributed.world_size():
            raise ValueError(f"it was taken inside an epoch by {state['world_size']} processes, not "
                             f"{distributed.world_size()}")
        if state.get("in_epoch") is not None and "stats" not in state["in_epoch"]:
            raise ValueError("it was taken inside an epoch by an earlier version of lstsd, without the epoch's "
                             "step statistics")
        rank = distributed.rank()
        rank_state = state["rank_states"][rank] if len(state["rank_states"]) > rank else {}
        t.method.load_state_dict(state["method"])
        t.method.load_rank_state(rank_state)
        if state.get("in_epoch") is not None:  # inside an epoch: applied again after on_epoch_start, which
            t.method_state = (state["method"], rank_state)  # sees the saved state but resets per-epoch parts
        t.scaler.load_state_dict(state.get("scaler", {}))
        t.start_epoch, t.global_step = state["epoch"], state["global_step"]
        t.in_epoch = state.get("in_epoch")
        t.history = state["history"]
        t.train_seconds, t.wall_seconds = state["seconds"]
        torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") is not None and t.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"])
        if "rng_python" in state:  # absent from checkpoints written before they were saved
            random.setstate(state["rng_python"])
            np.random.set_state(state["rng_numpy"])
    except Exception as e:  # noqa: BLE001 - any failure here means the file does not fit this run
        raise TrainingError(f"cannot resume from {path}: {type(e).__name__}: {e} "
                            "(delete it or set trainer.resume=false to start afresh)") from e
    where = f"step {t.in_epoch['step']} of epoch {t.start_epoch + 1}" if t.in_epoch else f"epoch {t.start_epoch}"
    log.info(f"resumed from {path} after {where}")
