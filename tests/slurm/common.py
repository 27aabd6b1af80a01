"""Helpers of the SLURM tests: launch ``lstsd`` with ``hydra/launcher=slurm`` on the test cluster, watch its
queue, read the run folders."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# the preset on a GPU-free single node: partition debug, one CPU and 1 GB per run
SLURM = ("hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1")
FAST = ("trainer.threads=1", "trainer.progress=false")


def environment(cluster: dict) -> dict:
    env = {**os.environ, **cluster, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    for var in ("HYDRA_FULL_ERROR", "LSTSD_SWEEP_UID", "SLURM_JOB_ID", "SLURM_JOBID", "SLURM_ARRAY_JOB_ID"):
        env.pop(var, None)
    return env


def lstsd(cluster: dict, *args: str, log: Path | None = None) -> subprocess.Popen:
    """``python -m lstsd ARGS`` in the background, stdout and stderr together into ``log`` (or a pipe)."""
    out = open(log, "w") if log is not None else subprocess.PIPE
    return subprocess.Popen([sys.executable, "-m", "lstsd", *args], cwd=REPO, env=environment(cluster),
                            stdout=out, stderr=subprocess.STDOUT, text=True)


def sweep(cluster: dict, sweep_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``lstsd -m hydra/launcher=slurm ... ARGS hydra.sweep.dir=SWEEP_DIR``, waited for."""
    r = subprocess.run([sys.executable, "-m", "lstsd", "-m", *SLURM, *FAST, *args, f"hydra.sweep.dir={sweep_dir}"],
                       cwd=REPO, env=environment(cluster), capture_output=True, text=True, timeout=timeout)
    return r


def squeue(cluster: dict) -> list[tuple[str, str, str]]:
    """(job id, state, reason) of every job of the cluster, array tasks one per line."""
    r = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%r"],
                       env=environment(cluster), capture_output=True, text=True, timeout=60)
    return [tuple(line.split("|")) for line in r.stdout.splitlines() if line.count("|") == 2]


class QueueWatch(threading.Thread):
    """Polls squeue while a sweep runs: the most jobs seen RUNNING at once, and the reasons jobs were pending."""

    def __init__(self, cluster: dict, every: float = 0.3):
        super().__init__(daemon=True)
        self.cluster, self.every = cluster, every
        self.max_running, self.reasons, self.polls = 0, set(), 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            jobs = squeue(self.cluster)
            self.polls += 1
            self.max_running = max(self.max_running, sum(state == "RUNNING" for _, state, _ in jobs))
            self.reasons |= {reason for _, state, reason in jobs if state == "PENDING"}
            time.sleep(self.every)


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir() and not p.name.startswith("."))


def results(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())


def untimed(res: dict) -> dict:
    """results.json without its timings (wall_seconds, train_seconds, steps_per_second) and without the command line
    in its provenance (a job's is submitit's entry point, a local run's is lstsd's)."""
    out = {k: v for k, v in res.items() if "second" not in k}
    if "provenance" in out:
        out["provenance"] = {k: v for k, v in out["provenance"].items() if k != "argv"}
    return out


def metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def run_log(run_dir: Path) -> str:
    """The run's own log (Hydra's job log, cli.log): appended to by every piece of a requeued run."""
    return "".join(p.read_text() for p in sorted(Path(run_dir).glob("*.log")))


def slurm_job_ids(sweep_dir: Path) -> list[str]:
    """The SLURM ids of a sweep's jobs (``12`` for a single job, ``12_0``, ``12_1``... for an array's), from
    submitit's rank-0 logs ``<id>_0_log.out``."""
    return sorted({p.name[:-len("_0_log.out")] for p in Path(sweep_dir).glob(".submitit/*/*_0_log.out")})


def job_spans(sweep_dir: Path) -> dict[str, tuple[float, float]]:
    """Each job's process in the allocation, start to end (rank 0), from submitit's own log lines ("Starting with
    JobEnvironment", then "Exiting after successful completion")."""
    import datetime

    stamp = r"submitit INFO \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\) - "
    spans = {}
    for path in Path(sweep_dir).glob(".submitit/*/*_0_log.out"):
        text = path.read_text(errors="replace")
        start = re.search(stamp + "Starting with JobEnvironment", text)
        end = re.findall(stamp + "Exiting after", text)
        if start and end:
            seconds = [datetime.datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f").timestamp() for t in (start[1], end[-1])]
            spans[path.name[:-len("_0_log.out")]] = (seconds[0], seconds[1])
    return spans


def wait_until(condition, timeout: float, what: str, every: float = 0.1, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the launcher ended (exit {proc.returncode}) before {what}: "
                                 f"{(proc.stdout.read() if proc.stdout else '')[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout:.0f}s")
        time.sleep(every)


def checkpointed_epochs(run_dir: Path) -> int:
    """The epochs the run's last.pt holds (0: none yet); written by atomic rename, so never read half-written."""
    import torch

    path = Path(run_dir) / "last.pt"
    try:
        return torch.load(path, weights_only=False)["epoch"] if path.exists() else 0
    except Exception:  # noqa: BLE001 - replaced between exists() and the read
        return 0


RESUMED = re.compile(r"resumed from \S*last\.pt after (step (\d+) of epoch (\d+)|epoch (\d+))")
