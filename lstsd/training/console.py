"""What a run prints (a leaf: imports nothing of lstsd).

Every run logs one INFO line per epoch (``lstsd.training``), its folder at the start and a summary at the end.
On a terminal the progress bar shows the epochs instead, so :class:`EpochLines` keeps the epoch lines off the
console while a bar is shown; piped to a file, in a submitit or SLURM job log, and in the run's own log file,
every line is written. The levels are Hydra's job-logging options: ``hydra/job_logging=quiet`` (warnings and
errors only) and ``hydra/job_logging=verbose`` (debug, and the epoch lines beside the bar).
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
