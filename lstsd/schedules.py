"""Per-iteration learning-rate schedules, built on timm's schedulers (``step_update(t)`` sets the rate of update
t = 0, 1, ..., total_steps - 1):

* ``constant``: the base rate throughout;
* ``step``: multiplied by ``gamma`` (0.1) at each milestone, given as fractions of training (the LSTSD paper:
  divided by 10 at 25 %, 50 % and 75 %);
* ``cosine``: lr_min + (lr0 - lr_min) / 2 * (1 + cos(pi * t / T)) over the whole run;
* ``cyclic_cosine``: the same within each of ``cycles`` equal cycles, restarting at lr0 (Snapshot Ensembles,
  Snapshot Distillation Eq. 5).
"""
from __future__ import annotations

from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler
from timm.scheduler.scheduler import Scheduler
from torch.optim import Optimizer


class ConstantScheduler(Scheduler):
    def __init__(self, optimizer: Optimizer):
        super().__init__(optimizer, param_group_field="lr", t_in_epochs=False)

    def _get_lr(self, t: int) -> list:
        return list(self.base_values)


def build_schedule(cfg, optimizer: Optimizer, total_steps: int) -> Scheduler:
    if cfg.name == "constant":
        return ConstantScheduler(optimizer)
    if cfg.name == "step":
        # timm counts the milestones <= t + 1 (its epoch convention); shift by one so that update t uses the
        # decayed rate exactly from step round(m * total_steps) on.
        milestones = [round(m * total_steps) + 1 for m in cfg.milestones]
        return MultiStepLRScheduler(optimizer, decay_t=milestones, decay_rate=cfg.gamma, t_in_epochs=False)
    cycles = cfg.cycles if cfg.name == "cyclic_cosine" else 1
    return CosineLRScheduler(optimizer, t_initial=total_steps // cycles, lr_min=cfg.lr_min, cycle_limit=cycles,
                             t_in_epochs=False)
