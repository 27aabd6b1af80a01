"""Finding runs: every job folder below the given paths is one run. Completed and failed runs are read from their
``results.json`` (``status``), runs still going (or killed) from a ``.hydra/config.yaml`` without results, and,
for a sweep folder with its ``multirun.yaml``, the runs that never started are found by comparing the sweep's
combinations of overrides with the job folders present."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from omegaconf import OmegaConf

from lstsd.errors import ConfigError, one_line
from lstsd.training.rundir import CONFIG, RESULTS, RunDir, labels

MULTIRUN = "multirun.yaml"
JOBS = "jobs.yaml"
IDENTITY = ("experiment", "dataset", "model", "method")  # the strings a run's rows are grouped by


class BadScore(ConfigError):
    """A completed run whose record holds a score that is not a finite number: the report refuses it (exit 2)
    rather than leave the run out of its row's mean, which could favour the method whose runs went wrong."""


def shown(value) -> str:
    """A value as its file writes it (JSON: NaN, null, "abc")."""
    return json.dumps(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value, default=str)


def message(e: BaseException) -> str:
    """An error's message on one line, without OmegaConf's ``full_key: ...`` and ``object_type=...`` lines."""
    lines = [line.strip() for line in str(getattr(e, "msg", None) or e).splitlines()]
    return " ".join(line for line in lines if line and not line.startswith(("full_key:", "object_type=")))


def is_score(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
    its saved config (None when absent). A ConfigError names a file that is unreadable or not a run's (the
    report lists the run as unreadable); :class:`BadScore` a completed run's score that is not a finite number."""
    files = RunDir(d)
    config = files.read_config()
    run = files.read_results() or {"status": "running", **identity(files, config)}
    check_identity(run, files.results if files.results.exists() else files.config)
    run["run_dir"], run["config"] = str(d), config
    # the job's command-line overrides (Hydra writes them)
    overrides = files.read_overrides()
    for o in overrides:
        if not isinstance(o, str):
            raise ConfigError(f"{files.overrides}: {shown(o)} is not an override: allowed a list of key=value strings")
    run["overrides"] = dict(o.lstrip("+~").partition("=")[::2] for o in overrides)
    rows = files.read_metrics() if files.metrics.exists() else None
    if rows is not None:
        run["epochs_done"] = len(rows)
    if run["status"] == "completed":
        check_scores(run, files, rows or [])
    return run


def identity(files: RunDir, config) -> dict:
    """What a run without results.json is, from its saved config (:func:`labels`), or a ConfigError naming it."""
    try:
        return labels(config)
    except Exception as e:  # noqa: BLE001 - a missing key, a value of the wrong shape, an interpolation
        raise ConfigError(f"{files.config}: not a run's saved config ({type(e).__name__}: {message(e)}): allowed "
                          "the config.yaml lstsd saves, with name, method, model, dataset and seed") from None


def check_identity(run: dict, path: Path) -> None:
    """The keys a run's rows are grouped and paired by: strings, an integer seed, a metric's name as headline."""
    for key in IDENTITY:
        if key in run and not (isinstance(run[key], str) and run[key]):
            raise ConfigError(f"{path}: {key}={shown(run[key])} is invalid: allowed a non-empty string")
    if "seed" in run and not (isinstance(run["seed"], int) and not isinstance(run["seed"], bool)):
        raise ConfigError(f"{path}: seed={shown(run['seed'])} is invalid: allowed an integer")
    if "headline" in run and not (isinstance(run["headline"], str) and re.fullmatch(r"\w+", run["headline"])):
        raise ConfigError(f"{path}: headline={shown(run['headline'])} is invalid: allowed a metric's name (acc, "
                          "f1, mcc, ...)")


def check_scores(run: dict, files: RunDir, rows: list[dict]) -> None:
    """A completed run's scores, each a finite number (not NaN, inf, null, a string or true): those of
    results.json the tables average and test, and its headline test score in every row of metrics.jsonl (the
    curves), or :class:`BadScore` naming the file, the key and the value."""
    for key, value in run.items():
        if key.startswith(("test_", "val_", "ensemble_test_")) and key.endswith(("_final", "_best")) \
                and not is_score(value):
            raise BadScore(f"{files.results}: {key}={shown(value)} is invalid: allowed a finite number (a completed "
                           "run's score; rerun the run, or move its folder away to leave it out)")
    key = f"test_{headline(run)}"
    for number, row in enumerate(rows, 1):
        if not is_score(row.get(key)):
            value = shown(row[key]) if key in row else "(missing)"
            raise BadScore(f"{files.metrics}:{number}: {key}={value} is invalid: allowed a finite number (the "
                           "test score of each epoch of a completed run)")


def load_yaml(path: Path, kind: type, allowed: str):
    """The YAML file ``path`` as plain data of type ``kind`` (interpolations left as written), or a ConfigError
    naming it and what is allowed."""
    try:
        data = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as e:  # noqa: BLE001 - YAML, Unicode and OS errors alike: the file is unreadable
        raise ConfigError(f"{path}: not a readable YAML file ({type(e).__name__}: {one_line(e)}): allowed "
                          f"{allowed}") from None
    if not isinstance(data, kind):
        raise ConfigError(f"{path}: holds a {type(data).__name__}, not a {'mapping' if kind is dict else 'list'}: "
                          f"allowed {allowed}")
    return data


RECORD = "the multirun.yaml Hydra writes into a sweep folder (a mapping with hydra.sweep, hydra.sweeper, " \
         "hydra.overrides and hydra.job)"


def at(record: dict, dotted: str, path: Path, kind: type = object):
    """``record``'s value at the dotted key, of type ``kind``, or a ConfigError naming the file and the key."""
    node = record
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"{path}: no {dotted}: allowed {RECORD}")
        node = node[key]
    if not isinstance(node, kind):
        raise ConfigError(f"{path}: {dotted}={shown(node)} is invalid: allowed {RECORD}")
    return node


def expected_jobs(sweep: Path) -> list[str]:
    """The job folder names of a grid sweep: the jobs the lstsd sweeper launched (its ``jobs.yaml``), or, for
    Hydra's basic sweeper, its multirun.yaml's sweep expanded (Hydra's own parser and expansion, so quoting,
    ``range(...)`` and ``choice(...)`` read exactly as when launched), named as Hydra names them. Empty when the
    job folders are not named by their overrides or the sweep has no fixed set of jobs (an Optuna study). A
    ConfigError names a multirun.yaml or jobs.yaml that cannot be read so."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lstsd.config.identity import job_folders

    path = sweep / MULTIRUN
    record = load_yaml(path, dict, RECORD)
    if at(record, "hydra.sweep.subdir", path) != "${hydra.job.override_dirname}":
        return []
    names = at(record, "hydra.job.config.override_dirname", path, dict)
    names = (at(record, "hydra.job.config.override_dirname.exclude_keys", path, list),
             str(names.get("item_sep", ",")), str(names.get("kv_sep", "=")))
    parser = OverridesParser.create()
    source, jobs = sweep_jobs(sweep, record, parser)
    try:
        if source.name == JOBS:  # the lstsd sweeper's names: a key excluded from them gets a hash where it varies
            return job_folders(jobs, *names)
        return [get_overrides_dirname(parser.parse_overrides(job), *names) for job in jobs]
    except Exception as e:  # noqa: BLE001 - an override Hydra cannot parse
        raise ConfigError(f"{source}: a job Hydra cannot parse ({type(e).__name__}: {one_line(e)}): allowed "
                          "lists of key=value overrides") from None


def sweep_jobs(sweep: Path, record: dict, parser) -> tuple[Path, list]:
    """The file that lists a sweep's jobs and its jobs, each a list of overrides (none where the sweeper has no
    fixed set: not the basic sweeper, and no jobs.yaml)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    if (sweep / JOBS).exists():
        allowed = "the list of jobs (lists of key=value overrides) the lstsd sweeper writes"
        jobs = load_yaml(sweep / JOBS, list, allowed)
        if not all(isinstance(job, list) and all(isinstance(o, str) for o in job) for job in jobs):
            raise ConfigError(f"{sweep / JOBS}: holds something else than lists of overrides: allowed {allowed}")
        return sweep / JOBS, jobs
    path = sweep / MULTIRUN
    sweeper = at(record, "hydra.sweeper", path, dict)
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return path, []
    params = sweeper.get("params") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: hydra.sweeper.params={shown(params)} is invalid: allowed {RECORD}")
    task = at(record, "hydra.overrides.task", path, list)
    try:
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + list(map(str, task)))
        return path, BasicSweeper.split_arguments(overrides, None)[0]
    except Exception as e:  # noqa: BLE001 - a sweep Hydra cannot parse
        raise ConfigError(f"{path}: a sweep Hydra cannot parse ({type(e).__name__}: {one_line(e)}): allowed "
                          f"{RECORD}") from None


def run_path(path: Path) -> Path:
    """A path given to the report: a folder, or a run's results.json (its folder); a ConfigError otherwise."""
    if not path.exists():
        raise ConfigError(f"{path}: no such file or directory (allowed a run or sweep folder)")
    if path.name == RESULTS and path.is_file():
        return path.parent
    if not path.is_dir():
        raise ConfigError(f"{path}: not a folder: allowed a run or sweep folder, or a run's {RESULTS}")
    return path


def collect(paths) -> tuple[list[dict], list[str], list[str]]:
    """All runs under ``paths``, the jobs of their sweeps that never started, and the folders whose files cannot
    be read (``<folder>: <what is wrong>``; the report lists them and goes on). A ConfigError: a path that does
    not exist, or below which there is no run and no sweep, a sweep's unreadable multirun.yaml, and
    (:class:`BadScore`) a completed run whose score is not a finite number."""
    runs, missing, unreadable = [], [], []
    for path in map(run_path, map(Path, paths)):
        dirs, sweeps = job_dirs(path), sorted({p.parent for p in path.glob(f"**/{MULTIRUN}")})
        if not dirs and not sweeps:
            raise ConfigError(f"{path}: no runs below it (no {RESULTS}, {CONFIG} or {MULTIRUN}): allowed a run or "
                              "sweep folder, or a folder above them")
        for d in dirs:
            try:
                runs.append(read_run(d))
            except BadScore:
                raise
            except ConfigError as e:
                unreadable.append(str(e))
        for sweep in sweeps:
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
