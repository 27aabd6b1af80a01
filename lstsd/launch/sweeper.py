"""``hydra/sweeper=lstsd`` (the default; its class is declared in ``hydra_plugins/lstsd_sweeper/lstsd_sweeper.py``, as
Hydra finds plugins only there, and is this module's :class:`SweeperParts` on top of Hydra's ``BasicSweeper``): Hydra's basic grid sweeper, with three differences.

* **Keys of some methods.** A sweep over several methods may set keys that only some of them have
  (``lstsd -m method=vanilla,lstsd method.minigen_epochs=1,6``): each key is applied to the methods whose config
  has it and dropped from the others' jobs, and jobs that end up with the same overrides run once (vanilla above
  runs once, lstsd twice). A key that no method of the sweep has stays an error, as for a single run.
* **It says where it goes.** At the launch it prints the sweep folder and the number of jobs.
* **Its claims are declared.** The comparisons of ``report.compare`` (``A:B``, method labels) must name methods the
  experiment's sweep runs: a label it does not run is refused before anything trains (:func:`check_declared`). A
  sweep narrowed on the command line (``-m experiment=demo method=lstsd,vanilla seed=0``) runs the comparisons whose
  methods it has; the report lists the others as not run.
* **A failed job never hides the others.** Every job runs; the jobs that failed are counted, the end-of-sweep
  table marks them with their error, and ``lstsd`` exits with code 1 after it (:func:`failed_jobs`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from omegaconf import OmegaConf, open_dict

from lstsd.errors import ConfigError

log = logging.getLogger(__name__)
FAILED: list[str] = []  # "job overrides: error" of the jobs of the last sweep that failed


def method_of(job: list[str]) -> Optional[str]:
    return next((o.split("=", 1)[1] for o in job if o.lstrip("+~").split("=", 1)[0] == "method"), None)


def method_key(override: str) -> Optional[str]:
    """``method.minigen_epochs`` of ``method.minigen_epochs=6`` (``+``/``~`` prefixes aside); None otherwise."""
    key = override.lstrip("+~").split("=", 1)[0]
    return key if key.startswith("method.") else None


def fit_to_methods(jobs: list[list[str]], has_key) -> list[list[str]]:
    """Drop from each job the ``method.<key>`` overrides its method lacks (``has_key(method, key)``), then the
    jobs that repeat an earlier one; the order is kept. A key that no job's method has is an error."""
    out, seen, used, asked = [], set(), set(), {}
    for job in jobs:
        method = method_of(job)
        kept = []
        for o in job:
            key = method_key(o)
            if key is not None and method is not None and not o.startswith(("+", "~")):
                asked.setdefault(key, set()).add(method)
                if not has_key(method, key):
                    continue
                used.add(key)
            kept.append(o)
        if tuple(kept) not in seen:
            seen.add(tuple(kept))
            out.append(kept)
    for key in sorted(set(asked) - used):
        raise ConfigError(f"{key} is invalid: none of the swept methods ({', '.join(sorted(asked[key]))}) has it")
    return out


def sweep_jobs(params: list[str], config_loader, master_config) -> list[list[str]]:
    """The jobs of a grid sweep: Hydra's Cartesian product of ``params`` (parsed by its own parser), fitted to
    the methods (:func:`fit_to_methods`); what the sweeper launches and what the report expects."""
    parser = OverridesParser.create(config_loader=config_loader)
    jobs = BasicSweeper.split_arguments(parser.parse_overrides(params), None)[0]
    if len({method_of(job) for job in jobs} - {None}) < 2:
        return jobs
    keys: dict = {}

    def has_key(method: str, key: str) -> bool:
        if method not in keys:  # the method's own config: its schema and YAML decide which keys it has
            keys[method] = config_loader.load_sweep_config(master_config, [f"method={method}"]).method
        return OmegaConf.select(keys[method], key.removeprefix("method."), default=MISSING_KEY) is not MISSING_KEY

    return fit_to_methods(jobs, has_key)


MISSING_KEY = object()


def job_labels(jobs: list[list[str]], config_loader, master_config) -> set[str]:
    """The method labels (``method.label``: how tables name a configuration) the jobs of a sweep run, each
    distinct method composed once."""
    labels, seen = set(), set()
    for job in jobs:
        key = tuple(o for o in job if o.lstrip("+~").split("=", 1)[0] in ("method", "method.label"))
        if key not in seen:
            seen.add(key)
            labels.add(str(config_loader.load_sweep_config(master_config, list(key)).method.label))
    return labels


def check_declared(pairs, labels: set[str]) -> None:
    """Each method a declared comparison (``report.compare``) names is one the sweep runs."""
    for pair in pairs or []:
        for label in str(pair).split(":"):
            if label not in labels:
                raise ConfigError(f"report.compare={pair} is invalid: the sweep runs no method labelled {label} "
                                  f"(allowed labels: {', '.join(sorted(labels))})")


def failed_jobs() -> list[str]:
    """The failed jobs of the last sweep this process ran (empty after a single run)."""
    return list(FAILED)


def single_method_keys(argv: list[str]) -> list[int]:
    """Positions in ``argv`` of single-valued ``method.<key>=<value>`` overrides (not ``+``/``~`` ones, not sweeps)."""
    out = []
    for i, arg in enumerate(argv):
        key, eq, value = arg.partition("=")
        if eq and key.startswith("method.") and "," not in value and "(" not in value:
            out.append(i)
    return out


def as_one_value_sweeps(argv: list[str], multirun: bool) -> list[str]:
    """In a sweep, each single-valued ``method.<key>=<value>`` becomes ``method.<key>=choice(<value>)``: Hydra
    composes a sweep's base config with the default method, which may lack the key (``lstsd -m
    method=vanilla,lstsd method.minigen_epochs=1``); as a one-value sweep the key reaches each job instead, and
    :func:`fit_to_methods` keeps it for the methods that have it."""
    if not multirun:
        return list(argv)
    out = list(argv)
    for i in single_method_keys(argv):
        key, _, value = argv[i].partition("=")
        out[i] = f"{key}=choice({value})"
    return out


def distinct_folders(jobs: list[list[str]], hydra) -> list[list[str]]:
    """The jobs, each with ``hydra.sweep.subdir`` set where an excluded key varies across them
    (:func:`lstsd.config.identity.job_folders`): two jobs that differ only in ``dataset.root`` or
    ``method.teacher_run`` get a folder each. Hydra's names are kept otherwise, and a sweep with its own
    ``hydra.sweep.subdir`` keeps it."""
    from lstsd.config.identity import job_folders

    if OmegaConf.to_container(hydra.sweep)["subdir"] != "${hydra.job.override_dirname}":
        return jobs
    names = hydra.job.config.override_dirname
    keys = (list(names.exclude_keys), names.item_sep, names.kv_sep)
    out = []
    for job, folder in zip(jobs, job_folders(jobs, *keys)):
        if folder != job_folders([job], *keys)[0]:  # not Hydra's own name (a job alone varies in nothing)
            quoted = folder.replace("\\", "\\\\").replace("'", "\\'")
            job = [*job, f"hydra.sweep.subdir='{quoted}'"]
        out.append(job)
    return out


def launch_line(jobs: int, sweep_dir: Path) -> str:
    """What every sweep says as it starts, whatever its launcher: where its job folders go and how many jobs
    it has (the table at the end is printed from that folder; ``lstsd-report`` reads it meanwhile)."""
    return f"lstsd: sweep of {jobs} job{'s' if jobs != 1 else ''} into {sweep_dir}"


class SweeperParts:
    """What ``hydra/sweeper=lstsd`` adds to Hydra's ``BasicSweeper`` (the plugin class is declared in
    ``hydra_plugins/lstsd_sweeper/lstsd_sweeper.py``, as Hydra takes sweepers only from there)."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose every job and check it as a run would (:func:`lstsd.config.validate`, after importing its
        ``imports``; a method's teacher source): a bad value in any job stops the sweep before anything trains,
        with the job named."""
        from lstsd.config import ConfigError, validate
        from lstsd.config.compose import import_modules
        from lstsd.methods.teacher import TeacherConfig

        for overrides in batch:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                del cfg["hydra"]  # as the job sees it
            try:
                import_modules(cfg.get("imports") or [])
                conf = validate(cfg)
                if isinstance(conf.method, TeacherConfig):
                    conf.method.require_teacher()
            except ConfigError as e:
                raise ConfigError(f"{e} (in the job {' '.join(overrides)})") from None

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        params = [*self._parse_config(), *arguments]
        loader = self.hydra_context.config_loader
        jobs = sweep_jobs(params, loader, self.config)
        declared = OmegaConf.select(self.config, "report.compare")
        if declared:  # against the experiment's own axes: a sweep narrowed on the command line leaves some untested
            check_declared(declared, job_labels(jobs, loader, self.config) |
                           job_labels(sweep_jobs(self._parse_config(), loader, self.config), loader, self.config))
        size = self.max_batch_size or len(jobs) or 1
        named = distinct_folders(jobs, self.config.hydra)
        self.overrides = [named[i:i + size] for i in range(0, len(named), size)]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        OmegaConf.save(OmegaConf.create(jobs), sweep_dir / "jobs.yaml")  # what lstsd-report expects to find
        print(launch_line(len(jobs), sweep_dir), flush=True)
        FAILED.clear()
        returns, first = [], 0
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=first)
            for job, result in zip(batch, results):
                if result.status == JobStatus.FAILED:
                    error = result._return_value
                    FAILED.append(f"{' '.join(job)}: {type(error).__name__}: {error}".splitlines()[0])
            first += len(batch)
            returns.append(results)
        if FAILED:
            log.error(f"{len(FAILED)} of {len(jobs)} jobs failed:\n" + "\n".join(f"  {f}" for f in FAILED))
        return returns


