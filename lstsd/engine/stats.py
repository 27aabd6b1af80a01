"""An epoch's step statistics, accumulated on the training device and read back once per epoch."""
from __future__ import annotations

import math

import torch

from lstsd import distributed
from lstsd.errors import TrainingError


class StepStats:
    """An epoch's running sums on the training device: each step adds its loss and named loss terms (weighted by
    its number of samples) and its correct predictions, and keeps its loss for the non-finite check: a few in-place
    operations, nothing read back. The sums accumulate in step order, so an epoch resumed from a checkpoint taken
    inside it adds up exactly as an uninterrupted one."""

    def __init__(self, device, first_step: int = 0, steps: int = 1):
        self.device, self.first_step = device, first_step
        self.names: list[str] = []  # "loss", then "loss_<term>" in the order the terms first appeared
        self.sums = torch.zeros(0, device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.count = 0
        self.losses = torch.zeros(max(steps, 1), device=device)  # each step's loss
        self.steps = 0
        self.zero = torch.zeros((), device=device)

    def record(self, loss: torch.Tensor, terms: dict, logits: torch.Tensor, y: torch.Tensor) -> None:
        values = {"loss": loss, **{f"loss_{k}": v for k, v in terms.items()}}
        if list(values) != self.names:
            new = [k for k in values if k not in self.names]  # a term that starts mid-epoch (DLB's first step)
            self.names += new
            self.sums = torch.cat([self.sums, torch.zeros(len(new), device=self.device)])
        n = y.numel()
        self.sums.add_(torch.stack([values.get(k, self.zero).detach().float() for k in self.names]), alpha=n)
        self.correct.add_((logits.detach().argmax(1) == y).sum())
        if self.steps == len(self.losses):
            self.losses = torch.cat([self.losses, torch.zeros_like(self.losses)])
        self.losses[self.steps].copy_(loss.detach())
        self.steps += 1
        self.count += n

    def totals(self) -> dict:
        """Each sum as a float32 tensor on the device: ``loss``, ``loss_<term>``, ``correct`` and ``count``."""
        out = {k: self.sums[j].clone() for j, k in enumerate(self.names)}
        return out | {"correct": self.correct.float(), "count": torch.tensor(float(self.count), device=self.device)}

    def load_totals(self, totals: dict) -> None:
        """Go on from the sums of the steps done before a checkpoint taken inside the epoch."""
        totals = dict(totals)
        self.count = int(totals.pop("count").item())
        self.correct = totals.pop("correct").to(self.device, torch.long)
        self.names = list(totals)
        self.sums = torch.stack([totals[k].float() for k in self.names]).to(self.device) if totals else self.sums

    def first_non_finite(self) -> int:
        """The global step (1-based) of the first step with a non-finite loss, or -1 (one read-back)."""
        bad = ~torch.isfinite(self.losses[:self.steps])
        return self.first_step + int(bad.nonzero()[0, 0]) + 1 if bool(bad.any()) else -1

    def reduce(self) -> tuple[dict, int]:
        """The epoch's sums totalled over processes (no-op in one), and the first non-finite step of any rank
        (-1: none)."""
        first_bad = distributed.gather(torch.tensor([self.first_non_finite()], device=self.device))
        first_bad = int(first_bad[first_bad >= 0].min().item()) if (first_bad >= 0).any() else -1
        return {k: distributed.sum_(v) for k, v in self.totals().items()}, first_bad


def non_finite_error(first_bad: int, epoch: int, sums: dict, checkpoint) -> TrainingError:
    """The error of a non-finite loss: its step, epoch and terms, and the last good checkpoint when there is one."""
    count = float(sums.get("count", 1))
    terms = ", ".join(f"{k.removeprefix('loss_')}={float(v) / count:.4g}" for k, v in sums.items()
                      if k.startswith("loss") and not math.isfinite(float(v)))
    last = f"the last good checkpoint is {checkpoint}" if checkpoint is not None and checkpoint.exists() else \
        "no checkpoint was written before it"
    return TrainingError(f"non-finite loss at step {first_bad} (epoch {epoch + 1}; non-finite terms: {terms}); {last}")
