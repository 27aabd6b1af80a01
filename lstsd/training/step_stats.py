"""An epoch's step statistics, kept on the training device and reduced once per epoch."""
from __future__ import annotations

import math

import torch

from lstsd import distributed
from lstsd.errors import TrainingError


class StepStats:
    """An epoch's steps, each kept as it came on the training device: its number of samples, its loss and named
    loss terms (detached) and its predicted classes with their labels. A step only appends references (no
    arithmetic, nothing read back: the step's own time is the trainer's); :meth:`reduce` sums the rows once, at the
    end of the epoch or at a checkpoint taken inside it. Such a checkpoint saves the rows (:meth:`state`), so an
    epoch resumed from it (:meth:`load`) reduces the same rows as an uninterrupted one, to the same bits."""

    def __init__(self, device, first_step: int = 0):
        self.device, self.first_step = device, first_step  # first_step: the global step before the epoch's first
        self.counts: list[int] = []
        self.losses: list[torch.Tensor] = []
        self.terms: list[dict] = []
        self.predicted: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def record(self, loss: torch.Tensor, terms: dict, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.counts.append(y.numel())
        self.losses.append(loss.detach())
        self.terms.append({k: v.detach() for k, v in terms.items()})
        self.predicted.append(logits.detach().argmax(1))
        self.labels.append(y)

    def names(self) -> list[str]:
        """The loss terms in the order they first appeared (DLB's distillation term starts at its second step)."""
        return list(dict.fromkeys(k for step in self.terms for k in step))

    def totals(self) -> dict:
        """Each sum as a float32 tensor on the device: ``loss``, ``loss_<term>`` (weighted by the steps' numbers
        of samples; 0 for a step without the term), ``correct`` and ``count``."""
        if not self.counts:
            return {"correct": torch.zeros((), device=self.device), "count": torch.zeros((), device=self.device)}
        n = torch.tensor(self.counts, dtype=torch.float32, device=self.device)
        zero = torch.zeros((), device=self.device)
        out = {"loss": (torch.stack(self.losses).float() * n).sum()}
        for k in self.names():
            out[f"loss_{k}"] = (torch.stack([step.get(k, zero) for step in self.terms]).float() * n).sum()
        correct = (torch.cat(self.predicted) == torch.cat(self.labels).to(self.device)).sum()
        return out | {"correct": correct.float(), "count": n.sum()}

    def first_non_finite(self) -> int:
        """The global step (1-based) of the first step with a non-finite loss, or -1 (one read-back)."""
        if not self.losses:
            return -1
        bad = ~torch.isfinite(torch.stack(self.losses))
        return self.first_step + int(bad.nonzero()[0, 0]) + 1 if bool(bad.any()) else -1

    def reduce(self) -> tuple[dict, int]:
        """The epoch's sums totalled over processes (no-op in one), and the first non-finite step of any rank
        (-1: none)."""
        first_bad = distributed.gather(torch.tensor([self.first_non_finite()], device=self.device))
        first_bad = int(first_bad[first_bad >= 0].min().item()) if (first_bad >= 0).any() else -1
        return {k: distributed.sum_(v) for k, v in self.totals().items()}, first_bad

    def state(self) -> dict:
        """This process's rows so far, on the host (a checkpoint taken inside the epoch)."""
        host = lambda ts: [t.cpu() for t in ts]  # noqa: E731
        return {"counts": list(self.counts), "losses": host(self.losses), "predicted": host(self.predicted),
                "labels": host(self.labels), "terms": [{k: v.cpu() for k, v in step.items()} for step in self.terms]}

    def load(self, state: dict) -> None:
        """Go on from the rows of :meth:`state`."""
        device = lambda ts: [t.to(self.device) for t in ts]  # noqa: E731
        self.counts, self.losses = list(state["counts"]), device(state["losses"])
        self.predicted, self.labels = device(state["predicted"]), device(state["labels"])
        self.terms = [{k: v.to(self.device) for k, v in step.items()} for step in state["terms"]]


def non_finite_error(first_bad: int, epoch: int, sums: dict, checkpoint) -> TrainingError:
    """The error of a non-finite loss: its step, epoch and terms, and the last good checkpoint when there is one."""
    count = float(sums.get("count", 1))
    terms = ", ".join(f"{k.removeprefix('loss_')}={float(v) / count:.4g}" for k, v in sums.items()
                      if k.startswith("loss") and not math.isfinite(float(v)))
    last = f"the last good checkpoint is {checkpoint}" if checkpoint is not None and checkpoint.exists() else \
        "no checkpoint was written before it"
    return TrainingError(f"non-finite loss at step {first_bad} (epoch {epoch + 1}; non-finite terms: {terms}); {last}")
