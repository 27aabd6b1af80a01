"""``lstsd`` (= ``python -m lstsd``): the Hydra application.

Exit codes: 0 success; 2 bad configuration or input (one line on stderr, no traceback); 1 a failure during
training. Hydra would exit 1 for both kinds, so errors are re-raised to this wrapper, which tells them apart;
``HYDRA_FULL_ERROR=1`` keeps full tracebacks for debugging.
"""
from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from pathlib import Path

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lstsd.config import ConfigError, one_line, register_configs
from lstsd.engine import TrainingError

def sweep_uid() -> str:
    """A short id of this launch (host, process, time), the same for every job of a sweep, including jobs run in
    other processes (submitit, SLURM), which inherit it through the environment: two sweeps started in the same
    second get different directories."""
    if "LSTSD_SWEEP_UID" not in os.environ:
        seed = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        os.environ["LSTSD_SWEEP_UID"] = hashlib.sha1(seed.encode()).hexdigest()[:6]
    return os.environ["LSTSD_SWEEP_UID"]


def proportion(value: float, of: float, total: float) -> int:
    """``value`` out of ``of`` epochs, scaled to a run of ``total`` epochs (a ramp-up a paper gives for its own
    schedule length): ``${lstsd_proportion:80,300,${trainer.epochs}}``."""
    return int(round(float(value) * float(total) / float(of)))


def parallel_jobs(threads) -> int:
    """How many jobs one machine runs at once without oversubscribing it: its cores divided by each job's
    threads (``trainer.threads``; null counts as all cores)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(threads)) if threads else 1


OmegaConf.register_new_resolver("lstsd_uid", sweep_uid, replace=True)
OmegaConf.register_new_resolver("lstsd_proportion", proportion, replace=True)
OmegaConf.register_new_resolver("lstsd_parallel", parallel_jobs, replace=True)
register_configs()
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")  # the repository's conf/ (editable install)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def app(cfg: DictConfig) -> float:
    from lstsd.run import run

    try:
        results = run(cfg)
    except ConfigError as e:  # stop here, before Hydra wraps it in a multi-line job report
        if os.environ.get("LSTSD_DEBUG") == "1" or in_sweep():
            raise  # a sweep's job: marked failed with this error, and the other jobs go on
        print(f"lstsd: error: {e}", file=sys.stderr)
        sys.exit(2)
    metric = results.get("headline", "acc")  # what a hyper-parameter sweeper maximises: the headline metric
    return results.get(f"val_{metric}_final", results[f"test_{metric}_final"])


def in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def is_multirun(argv: list[str]) -> bool:
    """Whether ``argv`` launches a sweep: ``-m``, or a mode set by an experiment (composed only when it matters:
    with single-valued method keys, see :func:`lstsd.sweeper.as_one_value_sweeps`)."""
    from lstsd.sweeper import single_method_keys

    if {"-m", "--multirun", "hydra.mode=MULTIRUN"} & set(argv):
        return True
    skip = set(single_method_keys(argv))
    if not skip or any(a.startswith("-") for a in argv):
        return False
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            cfg = compose("config", [a for i, a in enumerate(argv) if i not in skip], return_hydra_config=True)
        return str(cfg.hydra.mode) == "MULTIRUN"
    except Exception:  # noqa: BLE001 - the real launch reports the problem
        return False


def main() -> None:
    from lstsd.sweeper import as_one_value_sweeps, failed_jobs

    sys.argv[1:] = as_one_value_sweeps(sys.argv[1:], is_multirun(sys.argv[1:]))
    debug = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["LSTSD_DEBUG"] = "1" if debug else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
        if failed_jobs():  # the sweep ran every job and printed its table: its exit code says some failed
            sys.exit(1)
    except (ConfigError, HydraException, OmegaConfBaseException) as e:
        if debug:
            raise
        cause = e.__cause__ if isinstance(e.__cause__, (ConfigError, OmegaConfBaseException)) else None
        detail = one_line(e) + (f" ({one_line(cause)})" if cause is not None and str(cause) not in str(e) else "")
        if "hydra/sweeper=optuna" in detail:  # the Optuna plugin is not installed
            detail += "; experiment=hparams_search needs the search extra: pip install -e '.[search]'"
        print(f"lstsd: error: {detail}", file=sys.stderr)
        sys.exit(2)
    except TrainingError as e:
        if debug:
            raise
        print(f"lstsd: training failed: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
