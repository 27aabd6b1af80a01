"""What the launchers of the presets add to hydra-submitit-launcher's. Hydra takes launcher classes only from the
``hydra_plugins`` package, so the classes are declared there (``hydra_plugins/lstsd_sweeper/lstsd_launcher.py``),
each one line: this module's behaviour on top of hydra-submitit-launcher's class.

* ``hydra/launcher=slurm`` (``lstsd/conf/hydra/launcher/slurm.yaml``): :class:`SlurmLaunch`, which reads job states
  from squeue where sacct fails and waits for every job of a launch, a job that ended without a result counted
  as failed (:mod:`lstsd.launch.slurm`), printing each job's line as it ends.
* ``hydra/launcher=workstation`` (``lstsd/conf/hydra/launcher/workstation.yaml``): :class:`WorkstationLaunch`,
  which runs at most ``max_parallel`` jobs at a time, each with its thread count and its GPUs
  (:mod:`lstsd.launch.workstation`), and counts a job that ended without a result as failed instead of stopping
  at it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn

log = logging.getLogger(__name__)


def show_job_line(result: JobReturn, done: int) -> None:
    """The finished job's line on the launching console (``[3/4] method=lstsd seed=0: 94.90 final (23 s); ...``):
    the job's own console is its log file."""
    if result.hydra_cfg is not None:
        show_job_line_of(Path(result.hydra_cfg.hydra.runtime.output_dir), done)


@contextlib.contextmanager
def job_lines_as_they_end(sweep_dir: Path, poll_s: float = 2.0):
    """While a launch waits for jobs it does not run itself (SLURM), print each job's line as its results.json
    appears (a thread that reads the sweep folder every ``poll_s`` seconds, and once more at the end)."""
    from lstsd.training.rundir import RESULTS

    def ended() -> set:
        return {p.parent for p in sweep_dir.glob(f"*/{RESULTS}")} if sweep_dir.is_dir() else set()

    before, shown, stop = ended(), set(), threading.Event()

    def show_new() -> None:
        for folder in sorted(ended() - before - shown):
            shown.add(folder)
            show_job_line_of(folder, len(before) + len(shown))

    def watch() -> None:
        while not stop.wait(poll_s):
            show_new()

    thread = threading.Thread(target=watch, name="lstsd-job-lines", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        show_new()


def show_job_line_of(folder: Path, done: int) -> None:
    from lstsd.training.run import job_line

    try:
        line = job_line(folder, done=done)
    except Exception:  # noqa: BLE001 - a results.json being written or damaged: the table at the end says so
        return
    if line is not None:
        log.info(line)


class SlurmLaunch:
    """On top of hydra-submitit-launcher's ``SlurmLauncher``."""

    def setup(self, **kwargs: Any) -> None:
        """In the launching process, once per sweep (the jobs get this launcher pickled, never set up)."""
        from lstsd.launch.slurm import install_state_watcher

        super().setup(**kwargs)
        install_state_watcher()

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from submitit.core.utils import FailedJobError, UncompletedJobError
        from submitit.slurm.slurm import SlurmJob

        from lstsd.launch.slurm import every_return

        before = set(SlurmJob.watcher._registered)  # the jobs of this launch: the ones registered from now on
        try:
            with job_lines_as_they_end(Path(str(self.config.hydra.sweep.dir))):
                return super().launch(job_overrides, initial_job_idx)
        except (UncompletedJobError, FailedJobError) as e:  # one job ended without a result: wait for all of them
            launched = sorted(set(SlurmJob.watcher._registered) - before)
            waited = re.match(r"Job (\S+) \(task", str(e))  # submitit's message: "Job <id> (task: 0) with path ..."
            return every_return(self.params["submitit_folder"], launched, [list(o) for o in job_overrides],
                                waited=waited.group(1) if waited else None)


class WorkstationLaunch:
    """On top of hydra-submitit-launcher's ``LocalLauncher``: the machine shared among a sweep's jobs as
    :mod:`lstsd.launch.workstation` describes."""

    def __init__(self, max_parallel: Optional[int] = None, **params: Any) -> None:
        """``max_parallel``: at most this many jobs at a time (None: as
        :func:`lstsd.machine.plan` decides); the other keys are hydra-submitit-launcher's."""
        super().__init__(**params)
        self.max_parallel = max_parallel

    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict, threads: Optional[int] = None,
                 gpus: Optional[Sequence[str]] = None) -> JobReturn:
        """In the job's process: the job as hydra-submitit-launcher runs it, seeing only its own ``gpus`` and, where
        its config leaves ``trainer.threads`` null, with ``threads`` torch threads."""
        import submitit
        from hydra.core.singleton import Singleton
        from hydra.core.utils import run_job, setup_globals
        from omegaconf import OmegaConf, open_dict

        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        if gpus is not None:  # before anything initialises CUDA in this process
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        Singleton.set_state(singleton_state)
        setup_globals()
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(sweep_overrides))
        with open_dict(sweep_config.hydra.job) as job:
            job.id = submitit.JobEnvironment().job_id
            sweep_config.hydra.job.num = job_num
        if threads is not None and OmegaConf.select(sweep_config, "trainer.threads", default=0) is None:
            sweep_config.trainer.threads = threads
        return run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=sweep_config,
                       job_dir_key=job_dir_key, job_subdir_key="hydra.sweep.subdir")

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Run the jobs, at most ``max_parallel`` at a time in the sweep's order, and return every job's result
        once all have ended; a job that ended without one gets a failed result saying so."""
        import submitit
        from hydra.core.singleton import Singleton
        from hydra.core.utils import filter_overrides

        from lstsd.launch.workstation import GpuPool, job_return, run_at_most

        p = self.plan(job_overrides)
        log.info(f"workstation: {p.describe(len(job_overrides))}")
        executor = submitit.AutoExecutor(cluster="local", folder=self.params["submitit_folder"])
        params = {k: v for k, v in self.params.items() if k != "submitit_folder"}
        params["gpus_per_node"] = 0  # each job sets the GPUs it was given itself (CUDA_VISIBLE_DEVICES)
        executor.update_parameters(**params)
        state = Singleton.get_state()
        pool = GpuPool(p.gpus, p.gpus_per_job)
        running: dict[int, tuple[Any, list[str]]] = {}
        returns: list[Optional[JobReturn]] = [None] * len(job_overrides)

        def start(i: int) -> Any:
            idx = initial_job_idx + i
            gpus = pool.take()
            on = f" (GPU {','.join(gpus)})" if gpus else ""
            log.info(f"\t#{idx} : {' '.join(filter_overrides(job_overrides[i]))}{on}")
            job = executor.submit(self, list(job_overrides[i]), "hydra.sweep.dir", idx, f"job_id_for_{idx}", state,
                                  p.threads, gpus)
            running[i] = (job, gpus)
            return job

        def finish(i: int, job: Any) -> None:
            pool.give_back(running.pop(i)[1])
            returns[i] = job_return(job, list(job_overrides[i]), initial_job_idx + i)
            show_job_line(returns[i], initial_job_idx + sum(r is not None for r in returns))

        try:
            run_at_most(len(job_overrides), p.max_parallel, start, lambda job: job.done(), finish)
        except BaseException:  # interrupted (Ctrl-C): the running jobs stop too, each run checkpointing first
            for job, _ in running.values():
                if job._process is not None:  # SIGTERM: a controller started in the background ignores SIGINT
                    job._process.send_signal(signal.SIGTERM)
            raise
        return returns

    def plan(self, job_overrides: Sequence[Sequence[str]]):
        """How the launch shares the machine (:func:`lstsd.machine.plan`), from each job's ``trainer.threads``
        (its override, else the sweep's) and ``trainer.device``."""
        from omegaconf import OmegaConf

        from lstsd.launch.workstation import threads_override
        from lstsd.machine import plan

        assert self.config is not None
        base_threads = OmegaConf.select(self.config, "trainer.threads")

        def own_threads(overrides: Sequence[str]) -> Optional[int]:
            value = threads_override(overrides)
            if value is None:
                return base_threads
            return int(value) if value.isdigit() else None

        device = str(OmegaConf.select(self.config, "trainer.device", default="auto"))
        return plan([own_threads(o) for o in job_overrides], self.max_parallel, self.params.get("cpus_per_task"),
                    self.params.get("gpus_per_node"), device)
