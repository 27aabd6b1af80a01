"""Checkpoint files: a trainer's state (:meth:`lstsd.training.trainer.Trainer.state_dict`) written atomically by
rank 0 with every rank stopping together on a failure (:func:`save`), read back with one line naming what is wrong
(:func:`load`), the identity a checkpoint was written with (:func:`stored_identity`), and ``best.pt``
(:func:`save_best`)."""
from __future__ import annotations

import io
from pathlib import Path

import torch

from lstsd import distributed
from lstsd.errors import ConfigError, TrainingError, one_line
from lstsd.fileio import atomic_write

NOT_READABLE = "(delete it, or set trainer.resume=false to start afresh)"
START_AFRESH = "(delete it or set trainer.resume=false to start afresh)"


def atomic_save(obj, path: Path) -> None:
    """:func:`~lstsd.fileio.atomic_write`: a crash or a failed write (a full disk) never leaves a half-written
    checkpoint, and the previous one stays until the new one is complete."""
    buffer = io.BytesIO()  # serialised first: torch.save's own writer reports a full disk as a RuntimeError
    torch.save(obj, buffer)  # without the OS error, a plain write of the bytes gives the OSError (errno, path)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()), binary=True)


def stored_identity(path: Path):
    """The run identity (:func:`lstsd.config.identity.run_identity`) a checkpoint was written with (None when it has
    none), read without loading its tensors; a file that is not a checkpoint is a ConfigError naming it."""
    return peek(path).get("config")


def peek(path: Path) -> dict:
    """A checkpoint's state with its tensors memory-mapped, not read (its position, identity, schedule); a file that
    is not a checkpoint is a ConfigError naming it."""
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
    return state


def save(state: dict, path: Path) -> None:
    """Rank 0 writes ``state``; every rank learns whether it could, so that all go on or all stop together."""
    error = None
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


def save_best(history: list[dict], headline: str, weights: dict, identity, path: Path) -> None:
    """After an epoch: when it is the best so far of ``history`` (the first of equal scores, like
    ``results.json``'s ``best_epoch`` and ``best_val_epoch``), write ``best.pt``: the model's ``weights``
    (``"model"``, a state_dict), ``"epoch"`` (1-based), ``"metric"`` and ``"value"``, and the run's identity. Rank 0
    writes it; derived from the history, so a resumed or extended run goes on choosing from all its epochs."""
    metric = selection_metric(history, headline)
    best = max(history, key=lambda row: row[metric])
    if best is not history[-1]:  # every rank has the same history: all decide alike
        return
    error = None
    if distributed.is_main():
        state = {"model": weights, "epoch": best["epoch"], "metric": metric, "value": best[metric],
                 "config": identity}
        try:
            atomic_save(state, path)
        except OSError as e:  # the previous best.pt, if any, is kept
            error = f"cannot write {path}: {e.strerror or e} (errno {e.errno})"
    error = distributed.broadcast(error)  # all ranks stop together
    if error is not None:
        raise TrainingError(error)


def load(path: Path) -> dict:
    """The state in ``path``; a file that cannot be read is a :class:`TrainingError` saying how to start afresh."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - truncated, garbage: the run cannot go on from it
        raise TrainingError(f"cannot resume from {path}: {type(e).__name__}: {e} {START_AFRESH}") from e
