"""The stop-signal guard: a preemption or time-limit signal, or Ctrl-C, ends a run at a step boundary, after a
checkpoint."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import torch

from lstsd import distributed
from lstsd.errors import TrainingError

log = logging.getLogger("lstsd.training")

CHECK_STEPS = 20  # with several processes: how often they agree on a stop signal
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)  # SLURM preemption; --signal
# before the time limit (submitit asks for USR2 and requeues the job in its handler, which runs after the
# checkpoint); Ctrl-C (a second one stops at once, without the checkpoint)


class StopGuard:
    """SIGTERM / SIGUSR1 / SIGUSR2 (what SLURM sends before a preemption or the time limit) set a flag; the
    trainer asks :meth:`requested` after each step, checkpoints, then calls :meth:`stop`, which hands the signal
    to whoever handled it before (submitit requeues the job). Used as a context manager around training."""

    def __init__(self, device):
        self.device = device
        self.signum = None
        self.previous: dict = {}

    def __enter__(self) -> "StopGuard":
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self.previous[sig] = signal.signal(sig, self.request)
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def request(self, signum, frame=None) -> None:
        """The signal handler: remember the signal; the current step finishes first. A second Ctrl-C does not wait."""
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def requested(self, global_step: int, now: bool = False) -> bool:
        """Whether a stop signal arrived. With several processes they must agree on the step, so the flag is
        summed over ranks every ``CHECK_STEPS`` global steps and at the end of each epoch (``now``): one tiny
        all-reduce; none in one process."""
        if not distributed.active():
            return self.signum is not None
        if global_step % CHECK_STEPS and not now:
            return False
        flag = torch.tensor(float(self.signum is not None), device=self.device)
        if distributed.sum_(flag).item() > 0:
            self.signum = self.signum or signal.SIGTERM
            return True
        return False

    def stop(self, where: str) -> None:
        """After the checkpoint: re-raise the signal for the previous handler (or the default action)."""
        name = signal.Signals(self.signum).name
        log.warning(f"{name}: checkpointed at {where}; stopping")
        self.restore()
        if self.signum == signal.SIGINT:  # Ctrl-C: the command line ends with one line (exit code 130)
            raise KeyboardInterrupt
        if distributed.is_main():  # the console's one line (the log has the warning above)
            print(f"lstsd: stopped by {name} after checkpointing at {where}; the same command resumes",
                  file=sys.stderr, flush=True)
        os.kill(os.getpid(), self.signum)
        raise TrainingError(f"stopped by {name} after checkpointing")
