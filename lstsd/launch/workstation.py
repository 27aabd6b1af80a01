"""``hydra/launcher=workstation``: a sweep's jobs share one machine, at most ``max_parallel`` at a time, each with
its thread count and its own GPUs (the count: :func:`lstsd.machine.plan`); the next job starts as soon as one
ends, and a job that ended without a result is counted as failed instead of stopping the launch. The policy:
docs/clusters.md, "Launchers"."""
from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

def threads_override(overrides: Sequence[str]) -> Optional[str]:
    """The value a job's overrides give ``trainer.threads`` (``trainer.threads=2``, ``++trainer.threads=2``), or
    None where they give none."""
    for o in overrides:
        key, eq, value = o.partition("=")
        if eq and key.lstrip("+") == "trainer.threads":
            return value
    return None


class GpuPool:
    """The GPUs of a launch, handed to the jobs as they start: each job gets the ``per_job`` least used ones
    (so one each, exclusively, while there are enough) and gives them back when it ends."""

    def __init__(self, gpus: Sequence[str], per_job: int):
        self.use = {g: 0 for g in gpus}
        self.per_job = per_job

    def take(self) -> list[str]:
        chosen = sorted(self.use, key=lambda g: self.use[g])[:self.per_job]  # stable: the first GPUs first
        for g in chosen:
            self.use[g] += 1
        return chosen

    def give_back(self, gpus: Sequence[str]) -> None:
        for g in gpus:
            self.use[g] -= 1


def run_at_most(count: int, max_parallel: int, start: Callable[[int], Any], ended: Callable[[Any], bool],
                finish: Callable[[int, Any], None], poll_s: float = 0.2) -> None:
    """Start jobs ``0 .. count-1`` in order, ``start(i) -> handle``, never more than ``max_parallel`` of them
    running, the next one as soon as one has ended (``ended(handle)``), and ``finish(i, handle)`` each one once it
    has. Returns when every job has ended. An exception (``KeyboardInterrupt`` included) goes to the caller at
    once: the jobs not yet started never start, and the running ones are the caller's to stop."""
    running: dict[int, Any] = {}
    following = 0
    while following < count or running:
        for i, handle in list(running.items()):
            if ended(handle):
                del running[i]
                finish(i, handle)
        while following < count and len(running) < max_parallel:
            running[following] = start(following)
            following += 1
        if running:
            time.sleep(poll_s)


def job_return(job: Any, overrides: list[str], index: int) -> Any:
    """The ``JobReturn`` of a local job that has ended: its own (completed, or failed with the run's error) where
    it wrote one, else a failed one whose error says how it ended and where its log is. submitit raises instead
    (a job killed, or one that raised outside Hydra's job wrapper), which would stop the launcher at that job
    and hide every other job's result."""
    from hydra.core.utils import JobReturn, JobStatus
    from submitit.core.utils import FailedJobError, UncompletedJobError

    from lstsd.launch.slurm import JobEnded

    job._results_timeout_s = 2  # its process has exited: the result file, if any, is written
    try:
        return job.results()[0]
    except FailedJobError as e:  # a subclass of UncompletedJobError: first
        trace = str(e).split("-" * 22)
        lines = trace[1].strip().splitlines() if len(trace) > 2 else []
        error = JobEnded(f"job #{index} failed outside the run: {lines[-1] if lines else 'no traceback'}; its log: "
                         f"{job.paths.stderr}")
    except UncompletedJobError:
        error = JobEnded(f"job #{index} ended without a result (killed, or its process exited early); its log: "
                         f"{job.paths.stdout}")
    return JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=error)
