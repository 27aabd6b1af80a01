"""The ``hydra/sweeper=lstsd`` plugin (Hydra loads plugins only from the ``hydra_plugins`` namespace): what it
does is documented and implemented in :mod:`lstsd.sweeper`."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobStatus
from omegaconf import OmegaConf, open_dict

from lstsd.sweeper import FAILED, check_declared, job_labels, sweep_jobs

log = logging.getLogger("lstsd.sweeper")


def launch_line(jobs: int, sweep_dir: Path) -> str:
    """What every sweep says as it starts, whatever its launcher: where its job folders go and how many jobs
    it has (the table at the end is printed from that folder; ``lstsd-report`` reads it meanwhile)."""
    return f"lstsd: sweep of {jobs} job{'s' if jobs != 1 else ''} into {sweep_dir}"


class LstsdSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose every job and check it as a run would (:func:`lstsd.config.validate`, after importing its
        ``imports``; a method's teacher source): a bad value in any job stops the sweep before anything trains,
        with the job named."""
        from lstsd.compose import import_modules
        from lstsd.config import ConfigError, validate

        for overrides in batch:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                del cfg["hydra"]  # as the job sees it
            try:
                import_modules(cfg.get("imports") or [])
                conf = validate(cfg)
                require_teacher = getattr(conf.method, "require_teacher", None)
                if require_teacher is not None:
                    require_teacher()
            except ConfigError as e:
                raise ConfigError(f"{e} (in the job {' '.join(overrides)})") from None

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        params = [*self._parse_config(), *arguments]
        jobs = sweep_jobs(params, self.hydra_context.config_loader, self.config)
        declared = OmegaConf.select(self.config, "report.compare")
        if declared:
            check_declared(declared, job_labels(jobs, self.hydra_context.config_loader, self.config))
        size = self.max_batch_size or len(jobs) or 1
        self.overrides = [jobs[i:i + size] for i in range(0, len(jobs), size)]
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


