"""This machine, as the jobs of a sweep share it: the cores this process may use and the GPUs it may see, counted
without importing torch or initialising CUDA (a resolver reads them while composing, ``--cfg`` included), and
:func:`plan`, how many jobs run at once with how many threads and GPUs each (``hydra/launcher=workstation`` and
the ``lstsd_parallel`` resolver, :mod:`lstsd.launch.workstation`)."""
from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

from lstsd.errors import ConfigError, require

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the driver gives this container


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity: a cgroup's or ``taskset``'s limit, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` names them for a child process: the
    entries of ``CUDA_VISIBLE_DEVICES`` where it is set (up to the first invalid one, as CUDA reads it; empty:
    none), else ``0 .. n-1`` for the n GPUs of the NVIDIA driver. Counted without importing torch or
    initialising CUDA."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        out = []
        for entry in (e.strip() for e in listed.split(",")):
            if not entry or entry.startswith("-"):
                break
            out.append(entry)
        return out
    try:
        return [str(i) for i in range(sum(1 for _ in NVIDIA_GPUS.iterdir()))]
    except OSError:  # no NVIDIA driver
        return []


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_FREED = 256 << 20  # bytes of freed memory the C heap keeps before returning its top to the system
FROM_HEAP = 32 << 20  # blocks up to this size come from the heap, not from a mapping of their own (glibc's maximum)


@functools.cache
def keep_freed_memory() -> bool:
    """Let the C library's allocator keep and reuse the memory of a CPU run's tensors instead of returning it to the
    system at each free: glibc maps every block over 128 KiB (an activation of a batch) afresh and gives the top of
    its heap back as soon as 128 KiB are free, so each step and evaluation pays the page faults of memory it freed
    a moment before. Measured on MNIST-1D's default run (docs/performance.md): the evaluation after every epoch
    takes half the CPU time, the steps about 2 % less. A project choice for speed; what a run computes is
    unchanged. Set once per process; False where the C library has no ``mallopt`` (macOS, Windows)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED)) and bool(mallopt(M_MMAP_THRESHOLD, FROM_HEAP))


class Plan(NamedTuple):
    """How a launch shares the machine: at most ``max_parallel`` jobs at once, ``threads`` torch threads for each
    job that does not set ``trainer.threads``, ``gpus_per_job`` of the ``gpus`` for each job."""

    max_parallel: int
    threads: int
    gpus_per_job: int
    gpus: tuple[str, ...]
    cores: int

    def describe(self, jobs: int) -> str:
        gpus = f"{self.gpus_per_job} of {len(self.gpus)} GPUs" if self.gpus_per_job else "no GPU"
        return (f"{jobs} job{'s' if jobs != 1 else ''}, at most {self.max_parallel} at a time; each {gpus}, "
                f"{self.threads} thread{'s' if self.threads != 1 else ''} unless it sets trainer.threads "
                f"({self.cores} cores)")


def plan(job_threads: Sequence[Optional[int]], max_parallel: Optional[int] = None,
         cpus_per_task: Optional[int] = None, gpus_per_node: Optional[int] = None, device: str = "auto",
         cores: Optional[int] = None, gpus: Optional[Sequence[str]] = None) -> Plan:
    """The :class:`Plan` of a launch of ``len(job_threads)`` jobs, each job's ``trainer.threads`` given (None where
    it leaves it null), under the launcher's keys and the jobs' ``trainer.device``; ``cores`` and ``gpus`` default
    to this machine's. A job asking for more GPUs than there are is a :class:`~lstsd.errors.ConfigError`."""
    cores = machine_cores() if cores is None else cores
    gpus = tuple(visible_gpus() if gpus is None else gpus) if device != "cpu" else ()
    require(max_parallel is None or max_parallel >= 1, "hydra.launcher.max_parallel", "null or an integer >= 1",
            max_parallel)
    require(cpus_per_task is None or cpus_per_task >= 1, "hydra.launcher.cpus_per_task",
            "null or an integer >= 1", cpus_per_task)
    per_job = (1 if gpus else 0) if gpus_per_node is None else int(gpus_per_node)
    if per_job > len(gpus):
        seen = "run on the CPU (trainer.device=cpu)" if device == "cpu" else f"can see {len(gpus)} GPU(s)"
        raise ConfigError(f"hydra.launcher.gpus_per_node={per_job} is invalid: the jobs {seen}")
    if max_parallel is None:
        if per_job:
            max_parallel = len(gpus) // per_job
        else:
            fixed = [int(t) for t in job_threads if t] + ([cpus_per_task] if cpus_per_task else [])
            max_parallel = cores // max(fixed, default=1)
    max_parallel = max(1, int(max_parallel))
    together = max(1, min(max_parallel, len(job_threads)))
    threads = cpus_per_task or max(1, cores // together)
    return Plan(max_parallel, int(threads), per_job, gpus if per_job else (), cores)
