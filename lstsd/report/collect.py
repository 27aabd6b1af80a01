"""Finding runs: every job folder below the given paths is one run. Completed and failed runs are read from their
``results.json`` (``status``), runs still going (or killed) from a ``.hydra/config.yaml`` without results, and,
for a sweep folder with its ``multirun.yaml``, the runs that never started are found by comparing the sweep's
combinations of overrides with the job folders present."""
from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

from lstsd.errors import ConfigError
from lstsd.training.rundir import CONFIG, RESULTS, RunDir, labels


def natural_key(path: Path) -> list:
    """Sort job folders 0, 1, 2, ..., 10 rather than 0, 1, 10, 2."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def launch_order(d: Path) -> tuple:
    """Sort key of a job folder: its sweep folder, then Hydra's job number (the order of the sweep's axes, e.g.
    vanilla before lstsd as the experiment lists them), then the name (0, 1, 2, ..., 10)."""
    try:
        num = OmegaConf.select(OmegaConf.load(RunDir(d).hydra), "hydra.job.num")
    except Exception:  # noqa: BLE001 - absent or unreadable: the folder sorts by its name
        num = None
    return natural_key(d.parent), num if isinstance(num, int) else -1, natural_key(d)


def job_dirs(path: Path) -> list[Path]:
    marks = {p.parent for p in path.rglob(RESULTS)} | {p.parent.parent for p in path.rglob(CONFIG)}
    return sorted(marks, key=launch_order)


def read_run(d: Path) -> dict:
    """One run: results.json when there is one, else what its saved config says, with its status; ``config`` is
    its saved config (None when absent)."""
    files = RunDir(d)
    config = files.read_config()
    run = files.read_results() or {"status": "running", **labels(config)}
    run["run_dir"], run["config"] = str(d), config
    # the job's command-line overrides (Hydra writes them)
    run["overrides"] = dict(o.lstrip("+~").partition("=")[::2] for o in files.read_overrides())
    if files.metrics.exists():
        run["epochs_done"] = len(files.read_metrics())
    return run


def expected_jobs(sweep: Path) -> list[str]:
    """The job folder names of a grid sweep: the jobs the lstsd sweeper launched (its ``jobs.yaml``), or, for
    Hydra's basic sweeper, its multirun.yaml's sweep expanded (Hydra's own parser and expansion, so quoting,
    ``range(...)`` and ``choice(...)`` read exactly as when launched), named as Hydra names them. Empty when the
    job folders are not named by their overrides or the sweep has no fixed set of jobs (an Optuna study)."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = OmegaConf.load(sweep / "multirun.yaml")
    names = cfg.hydra.job.config.override_dirname
    if OmegaConf.to_container(cfg.hydra.sweep)["subdir"] != "${hydra.job.override_dirname}":
        return []
    parser = OverridesParser.create()
    target = str(cfg.hydra.sweeper.get("_target_", ""))
    if (sweep / "jobs.yaml").exists():
        jobs = OmegaConf.to_container(OmegaConf.load(sweep / "jobs.yaml"))
    elif target.endswith("BasicSweeper"):
        params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
        jobs = BasicSweeper.split_arguments(parser.parse_overrides(params + list(cfg.hydra.overrides.task)), None)[0]
    else:
        return []
    return [get_overrides_dirname(parser.parse_overrides(job), list(names.exclude_keys), names.item_sep,
                                  names.kv_sep) for job in jobs]


def collect(paths) -> tuple[list[dict], list[str], list[str]]:
    """All runs under ``paths``, the jobs of their sweeps that never started, and the folders whose files cannot
    be read (``<folder>: <what is wrong>``; the report lists them and goes on). A path that does not exist is a
    ConfigError."""
    runs, missing, unreadable = [], [], []
    for path in map(Path, paths):
        if not path.exists():
            raise ConfigError(f"{path}: no such file or directory (allowed a run or sweep folder)")
        if path.name == RESULTS:
            path = path.parent
        for d in job_dirs(path):
            try:
                runs.append(read_run(d))
            except ConfigError as e:
                unreadable.append(str(e))
        for sweep in sorted({p.parent for p in path.glob("**/multirun.yaml")}):
            present = {p.name for p in sweep.iterdir() if p.is_dir()}
            missing += [str(sweep / name) for name in expected_jobs(sweep) if name not in present]
    return runs, missing, unreadable


def headline(run: dict) -> str:
    """The metric a run's tables show (results.json's ``headline``; accuracy for runs that predate it)."""
    return run.get("headline", "acc")


def by_seed(runs: list[dict], key: str) -> dict:
    """A statistic of each seed (the mean where a seed ran more than once)."""
    seeds: dict = {}
    for r in runs:
        if key in r:
            seeds.setdefault(r.get("seed", 0), []).append(r[key])
    return {s: sum(v) / len(v) for s, v in seeds.items()}


def read_metrics(run: dict) -> list[dict]:
    return RunDir(run["run_dir"]).read_metrics()
