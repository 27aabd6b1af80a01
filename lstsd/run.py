"""``run(cfg) -> results``: the single entry the CLI, the tests, sweeps and benchmarks call."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from lstsd.config import ConfigError, validate
from lstsd.data import build_data
from lstsd.engine import Trainer
from lstsd.methods import build_method
from lstsd.methods.base import RunContext
from lstsd.models import build_model
from lstsd.schedules import build_schedule


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


def output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def run(cfg: DictConfig, run_dir: Optional[str | Path] = None) -> dict:
    """Validate ``cfg``, build data, model, method, optimiser and schedule, train; return results.json's dict.

    ``run_dir`` defaults to Hydra's output directory. Raises :class:`ConfigError` for bad input, before any
    training.
    """
    conf = validate(cfg)
    run_dir = Path(run_dir) if run_dir is not None else output_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(conf.trainer.device)
    seed_everything(conf.seed)
    data = build_data(conf.dataset, conf.seed, device)
    model = build_model(conf.model, data.info.num_classes, data.info.in_channels).to(device)
    optimizer = instantiate(cfg.optim, _convert_="all")(model.parameters())
    steps = len(data.train)
    method = build_method(conf.method, RunContext(model, data.info, device, conf.trainer.epochs, steps))
    scheduler = build_schedule(conf.schedule, optimizer, steps, conf.trainer.epochs, method.lr_cycles)
    return Trainer(conf, model, method, data, optimizer, scheduler, run_dir).fit()
