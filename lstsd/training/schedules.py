"""Per-iteration learning-rate schedules, built on timm's schedulers (``step_update(t)`` sets the rate of update
t = 0, 1, ..., total_steps - 1):

* ``constant``: the base rate throughout;
* ``step``: multiplied by ``gamma`` (0.1) at each milestone, given as fractions of training (the LSTSD paper:
  divided by 10 at 25 %, 50 % and 75 %);
* ``cosine``: lr_min + (lr0 - lr_min) / 2 * (1 + cos(pi * t / T)) over T updates.

A method with mini-generations that restart the learning rate (``Method.lr_cycles``: Snapshot Ensembles,
Snapshot Distillation) gets the chosen schedule run afresh over each mini-generation, from the base rate: with
``cosine`` this is Snapshot Distillation's Eq. 5 and Snapshot Ensembles' cyclic cosine, lr0/2 * (1 + cos(pi *
t_k / L_k)) with t_k counted from 0 at the mini-generation's first update (Eq. 5 counts from 1, one update
later: a difference of one iteration per cycle).
"""
from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
from typing import Optional, Sequence

from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler
from timm.scheduler.scheduler import Scheduler
from torch.optim import Optimizer


class ConstantScheduler(Scheduler):
    def __init__(self, optimizer: Optimizer):
        super().__init__(optimizer, param_group_field="lr", t_in_epochs=False)

    def _get_lr(self, t: int) -> list:
        return list(self.base_values)


class Restarted(Scheduler):
    """One schedule per cycle of ``cycle_steps`` updates, each started afresh at the base rate."""

    def __init__(self, optimizer: Optimizer, cycles: list[Scheduler], cycle_steps: Sequence[int]):
        self.cycles, self.starts = cycles, [0, *accumulate(cycle_steps)][:-1]
        super().__init__(optimizer, param_group_field="lr", t_in_epochs=False)

    def _get_lr(self, t: int) -> list:
        k = bisect_right(self.starts, t) - 1
        return self.cycles[k]._get_lr(t - self.starts[k])


def one_cycle(cfg, optimizer: Optimizer, steps: int) -> Scheduler:
    if cfg.name == "constant":
        return ConstantScheduler(optimizer)
    if cfg.name == "step":
        # timm counts the milestones <= t + 1 (its epoch convention); shift by one so that update t uses the
        # decayed rate exactly from step round(m * steps) on.
        milestones = [round(m * steps) + 1 for m in cfg.milestones]
        return MultiStepLRScheduler(optimizer, decay_t=milestones, decay_rate=cfg.gamma, t_in_epochs=False)
    return CosineLRScheduler(optimizer, t_initial=steps, lr_min=cfg.lr_min, t_in_epochs=False)


def build_schedule(cfg, optimizer: Optimizer, steps_per_epoch: int, epochs: int,
                   cycle_epochs: Optional[Sequence[int]] = None) -> Scheduler:
    """The schedule of ``cfg`` over ``epochs``, or restarted in each cycle of ``cycle_epochs`` (summing to it)."""
    steps = [e * steps_per_epoch for e in (cycle_epochs or [epochs])]
    return Restarted(optimizer, [one_cycle(cfg, optimizer, n) for n in steps], steps)
