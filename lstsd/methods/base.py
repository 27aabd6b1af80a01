"""The method interface: everything a training policy adds to plain supervised training.

The trainer calls, per epoch, ``on_epoch_start``; per step ``training_step`` (forward and loss), backward and
the optimiser step, then ``after_step`` (bank writes, EMA updates, all without gradients); ``on_epoch_end``
(snapshots); evaluates the student and every model of ``evaluators()``; and checkpoints ``state_dict()``.
A method whose mini-generations restart the learning rate sets ``lr_cycles`` (their lengths in epochs).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstsd.data import DataInfo
from lstsd.data.loader import Batch


@dataclass
class RunContext:
    model: nn.Module
    info: DataInfo
    device: torch.device
    epochs: int
    steps_per_epoch: int
    train: Optional[object] = None  # the training loader (``get(index, generator)`` re-reads samples)
    seed: int = 0
    overrides: tuple = ()  # the run's command-line overrides (teachers trained on the fly start from them)
    config: Optional[object] = None  # the run's validated Config
    net: Optional[nn.Module] = None  # the training forward: the model's DDP wrapper with several processes


def frozen_copy(model: nn.Module) -> nn.Module:
    """A teacher snapshot: a copy in eval mode with no gradients."""
    teacher = copy.deepcopy(model).eval()
    return teacher.requires_grad_(False)


class Method:
    name = "base"
    lr_cycles: Optional[list[int]] = None  # epochs per learning-rate cycle; None: one schedule over the run

    def __init__(self, cfg, ctx: RunContext):
        self.cfg, self.ctx, self.model = cfg, ctx, ctx.model
        self.net = ctx.net if ctx.net is not None else ctx.model  # training forwards (gradients synchronised)
        self.epoch = 0

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def training_step(self, batch: Batch) -> tuple[Tensor, Tensor, dict]:
        """Forward the batch; return (loss, logits, named loss terms)."""
        logits = self.net(batch.x)
        loss, terms = self.loss(batch, logits)
        return loss, logits, terms

    def loss(self, batch: Batch, logits: Tensor) -> tuple[Tensor, dict]:
        ce = F.cross_entropy(logits, batch.y)
        return ce, {"ce": ce}

    @torch.no_grad()
    def after_step(self, batch: Batch, logits: Tensor) -> None:
        pass

    def on_epoch_end(self, epoch: int) -> None:
        pass

    def evaluators(self) -> dict[str, nn.Module]:
        """Extra models evaluated every epoch beside the student (EMA teachers, ensembles)."""
        return {}

    def summary(self, history: list[dict]) -> dict:
        """Extra entries for results.json, given the metrics rows of every epoch."""
        return {}

    def bank_bytes(self) -> int:
        """Device memory of the method's per-sample banks (results.json and lstsd-bench report it)."""
        return 0

    def state_dict(self) -> dict:
        """The method's state, the same on every process (banks, snapshots, EMA teachers)."""
        return {}

    def rank_state(self) -> dict:
        """State that differs between processes (DLB's previous batch); checkpointed for each rank."""
        return {}

    def load_rank_state(self, state: dict) -> None:
        pass

    def load_state_dict(self, state: dict) -> None:
        pass
