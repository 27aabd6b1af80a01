"""Per-iteration learning-rate schedules in closed form (``step_update(t)`` sets the rate of update t = 0, 1, ...,
total_steps - 1 on every parameter group, from the group's base rate lr0):

* ``constant``: lr0 throughout;
* ``step``: lr0 * gamma^k, k the milestones m (fractions of training) with round(m * steps) <= t (the LSTSD
  paper: divided by 10 at 25 %, 50 % and 75 %);
* ``cosine``: lr_min + (lr0 - lr_min) / 2 * (1 + cos(pi * t / T)) over T updates.

``warmup_epochs`` (null: none) prepends a linear warm-up to the run (not to each restart): update t < W (W its
updates) uses lr(t) * (t + 1) / W.

A method with mini-generations that restart the learning rate (``Method.lr_cycles``: Snapshot Ensembles,
Snapshot Distillation) gets the chosen schedule run afresh over each mini-generation, from the base rate: with
``cosine`` this is Snapshot Distillation's Eq. 5 and Snapshot Ensembles' cyclic cosine, lr0/2 * (1 + cos(pi *
t_k / L_k)) with t_k counted from 0 at the mini-generation's first update (Eq. 5 counts from 1, one update
later: a difference of one iteration per cycle). The values are those of timm's schedulers (tested step by
step); written out here, a run needs no import of timm.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from itertools import accumulate
from types import SimpleNamespace
from typing import Callable, Optional, Sequence

from torch.optim import Optimizer


def factor(cfg, steps: int) -> Callable[[int], float]:
    """The schedule of one cycle of ``steps`` updates as ``t -> lr(t) / lr0`` (cosine: with lr_min apart)."""
    if cfg.name == "constant":
        return lambda t: 1.0
    if cfg.name == "step":
        milestones = sorted(round(m * steps) for m in cfg.milestones)
        return lambda t: cfg.gamma ** bisect_right(milestones, t)
    return lambda t: 0.5 * (1.0 + math.cos(math.pi * t / steps))


class Schedule:
    """The rates of ``cfg`` over cycles of ``cycle_steps`` updates, each started afresh at the base rates."""

    def __init__(self, cfg, optimizer: Optimizer, cycle_steps: Sequence[int], warmup_steps: int = 0):
        self.optimizer, self.cfg, self.warmup = optimizer, cfg, warmup_steps
        self.base = [group["lr"] for group in optimizer.param_groups] if optimizer is not None else []
        self.cycle_steps = list(cycle_steps)
        self.starts = [0, *accumulate(cycle_steps)][:-1]
        self.cycles = [factor(cfg, n) for n in cycle_steps]

    def spec(self) -> dict:
        """What determines the rates (kept in a checkpoint, so that a resume can compare them)."""
        keys = ("name", "milestones", "gamma", "lr_min")
        return {"cfg": {k: (list(v) if k == "milestones" else v) for k in keys if (v := getattr(self.cfg, k, None))
                        is not None}, "base": list(self.base), "cycle_steps": self.cycle_steps, "warmup": self.warmup}

    @classmethod
    def of_spec(cls, spec: dict) -> "Schedule":
        """The schedule a :meth:`spec` describes, without an optimiser (its :meth:`rates` only)."""
        schedule = cls(SimpleNamespace(**spec["cfg"]), None, spec["cycle_steps"], spec["warmup"])
        schedule.base = list(spec["base"])
        return schedule

    def first_difference(self, other: "Schedule", steps: int) -> Optional[int]:
        """The first of updates 0 .. steps - 1 whose rates differ between the two schedules (None: they agree)."""
        for t in range(steps):
            if any(not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15) for a, b in zip(self.rates(t), other.rates(t))):
                return t
        return None

    def rates(self, t: int) -> list[float]:
        k = bisect_right(self.starts, t) - 1
        f = self.cycles[k](t - self.starts[k])
        if self.cfg.name == "cosine":
            rates = [self.cfg.lr_min + (lr0 - self.cfg.lr_min) * f for lr0 in self.base]
        else:
            rates = [lr0 * f for lr0 in self.base]
        return rates if t >= self.warmup else [lr * (t + 1) / self.warmup for lr in rates]

    def step_update(self, t: int) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.rates(t)):
            group["lr"] = lr


def build_schedule(cfg, optimizer: Optimizer, steps_per_epoch: int, epochs: int,
                   cycle_epochs: Optional[Sequence[int]] = None) -> Schedule:
    """The schedule of ``cfg`` over ``epochs``, or restarted in each cycle of ``cycle_epochs`` (summing to it)."""
    warmup = round((cfg.warmup_epochs or 0) * steps_per_epoch)
    return Schedule(cfg, optimizer, [e * steps_per_epoch for e in (cycle_epochs or [epochs])], warmup)
