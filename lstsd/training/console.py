"""What a run prints (a leaf: imports nothing of lstsd).

Every run logs one INFO line per epoch (``lstsd.training``), its folder at the start and a summary at the end.
On a terminal the progress bar shows the epochs instead, so :class:`EpochLines` keeps the epoch lines off the
console while a bar is shown; piped to a file, in a submitit or SLURM job log, and in the run's own log file,
every line is written. The levels are Hydra's job-logging options: ``hydra/job_logging=quiet`` (warnings and
errors only), ``hydra/job_logging=verbose`` (debug, and the epoch lines beside the bar) and
``hydra/job_logging=sweep`` (the console shows each job's start and its end, :func:`sweep_line`; the epochs stay
in the job's log: the main job's jobs run side by side on one console).
"""
from __future__ import annotations

import logging

EPOCH = "lstsd_epoch"  # the ``extra`` key that marks an epoch line
_bar_shown = False


def bar_shown(shown: bool) -> None:
    """Whether a progress bar is on the console now (set by the trainer around its epochs)."""
    global _bar_shown
    _bar_shown = shown


class EpochLines(logging.Filter):
    """Drops the epoch lines while a progress bar shows the epochs on the same terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_bar_shown and getattr(record, EPOCH, False))


class NoEpochLines(logging.Filter):
    """Drops every epoch line (``hydra/job_logging=sweep``: the console of jobs that run side by side shows their
    start and end lines; each job's own log keeps its epochs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, EPOCH, False)


def sweep_line(done: int, total: int, failed: int, job: str, score: str, seconds: float, elapsed: float) -> str:
    """``[12/45] method=lstsd seed=3: 94.90 final (23 s); 0 failed; about 6 min left``: a finished job of a sweep,
    the time left estimated from the sweep's pace so far."""
    left = elapsed * (total - done) / done if done else 0.0
    eta = f"about {left / 60:.0f} min left" if left >= 60 else (f"about {left:.0f} s left" if done < total else "done")
    return f"[{done}/{total}] {job}: {score} ({seconds:.0f} s); {failed} failed; {eta}"
