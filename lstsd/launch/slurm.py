"""SLURM support for ``hydra/launcher=slurm`` (``lstsd/conf/hydra/launcher/slurm.yaml``), in the launching process.

submitit follows an array's jobs with ``sacct``. On a cluster without accounting (no slurmdbd: small clusters,
the throwaway test cluster of ``tools/slurm/cluster.sh``) every poll fails: sacct writes "Slurm accounting storage
is disabled" to the terminal and submitit logs "Bypassing sacct error ..., status may be inaccurate" in three lines
(twice in its own format, once in Hydra's) at every poll (12 lines for a 30-second sweep of 4 jobs, then more every 10
minutes), and a job that ends without a result file (cancelled, killed) stays "UNKNOWN", i.e. running, for ever.
:class:`SlurmStateWatcher` asks sacct quietly and, where it fails, reads the states from ``squeue --states=all``
(slurmctld keeps finished jobs for ``MinJobAge``, 300 s by default), saying so once per sweep. With accounting it
changes nothing: the same sacct call, the same parsing.

When a job ends without a result (cancelled, killed), submitit's launcher raises at that job and stops waiting
for the others, with a traceback. :func:`every_return` waits for every job of the launch instead and gives such a
job a failed result naming its SLURM state, so the sweep goes on as with any failed job: the table at the end,
exit code 1, and a re-launch into the same folder resumes or runs what did not finish.

Both are used by the preset's launcher class, ``lstsd.launch.launcher.LstsdSlurmLauncher``
(Hydra takes launchers only from the ``hydra_plugins`` package), in the launching process.
"""
from __future__ import annotations

import logging
import subprocess
import time
from typing import Optional

from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

log = logging.getLogger(__name__)

# states submitit knows (``InfoWatcher.is_done``: the first five are "not finished"); squeue shows a few more,
# transient ones (CONFIGURING, SUSPENDED, REQUEUE_HOLD...), which are "not finished" too
KNOWN_STATES = {"PENDING", "RUNNING", "COMPLETING", "REQUEUED", "PREEMPTED", "COMPLETED", "CANCELLED", "FAILED",
                "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def squeue_states(job_ids: list[str], timeout: float = 60) -> str:
    """The states of the given jobs (array tasks one per line) from squeue, as sacct's ``--parsable2`` table
    (``JobID|State|NodeList``); only the header when squeue knows none of them (or fails)."""
    lines = ["JobID|State|NodeList"]
    try:
        out = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%N",
                              f"--jobs={','.join(job_ids)}"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return lines[0]
    for line in out.stdout.splitlines() if out.returncode == 0 else []:
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[0]:
            state = parts[1].split()[0] if parts[1] else "UNKNOWN"
            lines.append("|".join([parts[0], state if state in KNOWN_STATES else "RUNNING", parts[2]]))
    return "\n".join(lines)


class SlurmStateWatcher(SlurmInfoWatcher):
    """submitit's sacct watcher, with sacct's errors caught (its stderr included) and squeue asked instead."""

    sacct_failure: Optional[str] = None  # why sacct failed, once it has (it is then said once)

    def update(self) -> None:
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        try:
            run = subprocess.run(command, capture_output=True, timeout=120)
            failure = None if run.returncode == 0 else \
                (run.stderr.decode(errors="replace").strip() or f"exit status {run.returncode}")
        except (OSError, subprocess.SubprocessError) as e:
            run, failure = None, f"{type(e).__name__}: {e}"
        if failure is None:
            self._output = run.stdout
        else:
            if self.sacct_failure is None:
                self.sacct_failure = failure.splitlines()[0]
                log.warning(f"sacct failed ({self.sacct_failure}): this sweep reads the job states from squeue "
                            "instead (not said again)")
            self._output = squeue_states([c for c in command[command.index("-j"):] if c != "-j"]).encode()
        self._info_dict.update(self.read_info(self._output))
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:  # as submitit's update: cache the finished ones
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)


def install_state_watcher() -> SlurmStateWatcher:
    """A new :class:`SlurmStateWatcher` for submitit's SLURM jobs of this process (the jobs submitted from now on:
    one watcher per sweep, so the fallback is said once per sweep). Returns it."""
    watcher = SlurmStateWatcher(delay_s=SlurmJob.watcher._delay_s)
    SlurmJob.watcher = watcher
    return watcher


class JobEnded(RuntimeError):
    """A job that ended without returning a result: cancelled, killed (out of memory, node failure), or stopped
    by submitit itself; on SLURM, or on this machine (``hydra/launcher=workstation``)."""


def array_index(job_id: str) -> int:
    """The task index of an array job's id (``12_3`` -> 3); 0 for a job that is no array (``12``)."""
    return int(job_id.split("_", 1)[1]) if "_" in job_id else 0


def every_return(folder: str, job_ids: list[str], overrides: list[list[str]], waited: Optional[str] = None) -> list:
    """The result of each of a launch's jobs once it has ended, in the order of ``overrides``: the job's own
    (a ``JobReturn``, completed or failed) where it wrote one, else a failed ``JobReturn`` whose error says how
    the job ended (its SLURM state) and where its log is. ``job_ids`` are the launch's SLURM ids (an array's
    ``<id>_<index>``, or one id), ``folder`` the submitit folder (``.../.submitit/%j``); ``waited``: a job already
    known to have ended without a result file (submitit waited 15 s for it once: not again)."""
    from hydra.core.utils import JobReturn, JobStatus
    from submitit.core.utils import FailedJobError, UncompletedJobError

    by_index = {array_index(j): j for j in job_ids}
    returns = []
    for index, job_overrides in enumerate(overrides):
        job_id = by_index.get(index)
        if job_id is None:
            error = JobEnded(f"job {index} of the sweep was never submitted")
        else:
            job = SlurmJob(folder=folder, job_id=job_id)
            if job_id == waited:
                job._results_timeout_s = 0
            try:
                returns.append(job.results()[0])
                continue
            except (UncompletedJobError, FailedJobError) as e:
                state = SlurmJob.watcher.get_state(job_id, mode="force")
                detail = "" if isinstance(e, UncompletedJobError) else \
                    f": {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}"
                error = JobEnded(f"SLURM job {job_id} ended without a result (state: {state}){detail}; its log: "
                                 f"{job.paths.stdout}")
        returns.append(JobReturn(overrides=list(job_overrides), status=JobStatus.FAILED, _return_value=error))
    return returns
