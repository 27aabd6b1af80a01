"""``run(cfg) -> results``: the single entry the CLI, the tests, sweeps and benchmarks call.

The composition root of a run: it validates the config once (one typed :class:`~lstsd.config.Config` from
here on), builds data, model, optimiser, method and schedule into a :class:`~lstsd.engine.Trainer`, and hands
every method the :class:`~lstsd.teachers.TeacherRunner` it trains teachers with (this same function).
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from lstsd import compose, distributed
from lstsd.config import Config, validate
from lstsd.data import build_data
from lstsd.engine import Trainer
from lstsd.errors import ConfigError
from lstsd.loggers import build_logger
from lstsd.methods import build_method
from lstsd.methods.base import RunContext
from lstsd.models import build_model
from lstsd.rundir import RunDir, failure_record
from lstsd.schedules import build_schedule
from lstsd.teachers import TeacherRunner

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


def hydra_job():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def assemble(conf: Config, run_dir: Path, overrides: list[str]) -> Trainer:
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
    optimizer = instantiate(conf.optim, _convert_="all")(model.parameters())
    steps = len(data.train)
    ctx = RunContext(model=model, info=data.info, device=device, epochs=conf.trainer.epochs, steps_per_epoch=steps,
                     train=data.train, seed=conf.seed, overrides=tuple(overrides), config=conf, net=net,
                     runner=TeacherRunner(compose=compose.compose, run=run))
    method = build_method(conf.method, ctx)
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
        files = RunDir(distributed.broadcast(str(run_dir)))
        if distributed.is_main():
            files.save_config(cfg)
        results = run_validated(conf, files, overrides)
        ok = True
        return results
    finally:
        if joined:
            distributed.teardown(synchronise=ok)  # after a failure the other ranks may never reach a barrier


def run_validated(conf: Config, files: RunDir, overrides: list[str]) -> dict:
    done = distributed.broadcast(files.completed())  # rank 0's view, for every rank
    if done is not None and conf.trainer.skip_completed:
        log.warning(f"{files.path} already holds a completed run: skipped (trainer.skip_completed=false reruns it)")
        return done
    trainer, results, failed = None, None, True
    try:
        trainer = assemble(conf, files.path, overrides)
        if distributed.is_main():  # only rank 0 writes files and logs
            trainer.logger = build_logger(conf, files.path)
        results = trainer.fit()
        failed = False
        return results
    except Exception as e:  # a bad input found while building (missing data, a teacher that does not fit) too
        if distributed.is_main():
            files.write_results(failure_record(conf, e))
        raise
    finally:
        if trainer is not None:
            trainer.logger.finish(results, failed)
        del trainer  # the traceback of a failure keeps this frame: the DDP model and optimiser must not outlive
        # the process group (gloo can abort at exit)
