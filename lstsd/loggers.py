"""Where a run reports besides its run directory: ``logger=none`` (files only) or ``logger=wandb``.

``logger=wandb`` opens one wandb run per Hydra job (``reinit="finish_previous"``: a multirun never appends to
the previous job's run) with the resolved config, ``group`` = the experiment name and ``job_type`` = the
method's label unless set, logs every epoch's metrics row (step = epoch) and the results as the run's summary,
and is finished in any case, with exit code 1 when training failed. ``WANDB_MODE`` (offline, disabled) and the
other ``WANDB_*`` variables are honoured; ``logger.mode`` overrides ``WANDB_MODE`` only when set.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional


class NoLogger:
    def log_epoch(self, row: dict) -> None:
        pass

    def finish(self, results: Optional[dict], failed: bool) -> None:
        pass


class WandbLogger(NoLogger):
    def __init__(self, cfg, conf, run_dir: Path):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=cfg.project, entity=cfg.entity, group=cfg.group or conf.name,
            job_type=cfg.job_type or conf.method.label, name=cfg.run_name or Path(run_dir).name,
            tags=list(cfg.tags), mode=cfg.mode, dir=str(run_dir),
            config=dataclasses.asdict(conf), reinit="finish_previous",
        )

    def log_epoch(self, row: dict) -> None:
        self.run.log({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])

    def finish(self, results: Optional[dict], failed: bool) -> None:
        if results:
            self.run.summary.update({k: v for k, v in results.items() if isinstance(v, (int, float, str))})
        self.run.finish(exit_code=1 if failed else 0)


def build_logger(conf, run_dir: Path):
    if conf.logger.name == "wandb":
        return WandbLogger(conf.logger, conf, run_dir)
    return NoLogger()
