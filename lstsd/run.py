"""``run(cfg) -> results``: the single entry the CLI, the tests, sweeps and benchmarks call."""
from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lstsd import distributed
from lstsd.config import ConfigError, validate
from lstsd.data import build_data
from lstsd.engine import Trainer, write_json
from lstsd.loggers import build_logger
from lstsd.methods import build_method
from lstsd.methods.base import RunContext
from lstsd.models import build_model
from lstsd.schedules import build_schedule

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda is invalid: no CUDA device is available (allowed auto, cpu)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def completed(run_dir: Path) -> Optional[dict]:
    """The results of a finished run in ``run_dir``, or None."""
    path = Path(run_dir) / "results.json"
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    return results if results.get("status") == "completed" else None


def hydra_job():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def assemble(conf, cfg: DictConfig, run_dir: Path, overrides: list[str]) -> Trainer:
    """Seed, then build data, model, optimiser, method and schedule into a :class:`Trainer` (no logger)."""
    device = resolve_device(conf.trainer.device)
    if conf.trainer.threads is not None:
        torch.set_num_threads(conf.trainer.threads)
    seed_everything(conf.seed)
    data = build_data(conf.dataset, conf.seed, device, channels_last=conf.trainer.channels_last,
                      rank=distributed.rank(), world_size=distributed.world_size(), model_cfg=conf.model)
    model = build_model(conf.model, data.info.num_classes, data.info.input_shape, data.info.vocab).to(device)
    if conf.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if conf.trainer.compile:
        model.compile()  # in place: checkpoints and frozen copies keep the plain parameter names
    net = model  # what the training forward runs: the model, or its DDP wrapper (gradients averaged)
    if distributed.active():
        # buffers are broadcast after each step instead (Trainer.step), so snapshots and EMA teachers agree
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                                        broadcast_buffers=False)
    optimizer = instantiate(cfg.optim, _convert_="all")(model.parameters())
    steps = len(data.train)
    method = build_method(conf.method, RunContext(model, data.info, device, conf.trainer.epochs, steps,
                                                    data.train, conf.seed, tuple(overrides), conf, net=net))
    scheduler = build_schedule(conf.schedule, optimizer, steps, conf.trainer.epochs, method.lr_cycles)
    return Trainer(conf, model, method, data, optimizer, scheduler, run_dir)


def run(cfg: DictConfig, run_dir: Optional[str | Path] = None, overrides: Optional[list[str]] = None) -> dict:
    """Validate ``cfg``, build data, model, method, optimiser and schedule, train; return results.json's dict.

    ``run_dir`` and ``overrides`` (the command line ``cfg`` was composed with; a teacher trained on the fly
    starts from it) default to Hydra's output directory and task overrides. Raises :class:`ConfigError` for
    bad input, before any training.
    """
    conf = validate(cfg)
    job = hydra_job()
    if run_dir is None:
        run_dir = job.runtime.output_dir
    if overrides is None:
        overrides = list(job.overrides.task) if job is not None else []
    joined = distributed.setup(conf.trainer.device)  # several processes (torchrun, SLURM tasks): one group
    ok = False
    try:
        results = run_assembled(conf, cfg, Path(distributed.broadcast(str(run_dir))), overrides)
        ok = True
        return results
    finally:
        if joined:
            distributed.teardown(synchronise=ok)  # after a failure the other ranks may never reach a barrier


def run_assembled(conf, cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict:
    done = distributed.broadcast(completed(run_dir))  # rank 0's view, for every rank
    if done is not None and conf.trainer.skip_completed:
        log.warning(f"{run_dir} already holds a completed run: skipped (trainer.skip_completed=false reruns it)")
        return done
    saved = run_dir / ".hydra" / "config.yaml"  # Hydra writes it; a run through the API writes it here
    if not saved.exists() and distributed.is_main():
        saved.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, saved)
    trainer, results, failed = None, None, True
    try:
        trainer = assemble(conf, cfg, run_dir, overrides)
        if distributed.is_main():  # only rank 0 writes files and logs
            trainer.logger = build_logger(conf, cfg, run_dir)
        results = trainer.fit()
        failed = False
        return results
    except Exception as e:  # a bad input found while building (missing data, a teacher that does not fit) too
        if distributed.is_main():
            write_json({"status": "failed", "error": f"{type(e).__name__}: {e}", "method": conf.method.label,
                        "method_name": conf.method.name, "model": conf.model.name, "dataset": conf.dataset.name,
                        "seed": conf.seed, "experiment": conf.name}, run_dir / "results.json")
        raise
    finally:
        if trainer is not None:
            trainer.logger.finish(results, failed)
        del trainer  # the traceback of a failure keeps this frame: the DDP model and optimiser must not outlive
        # the process group (gloo can abort at exit)
