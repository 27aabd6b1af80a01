"""Snapshot Ensembles (Huang et al., ICLR 2017) and Snapshot Distillation (Yang et al., CVPR 2019).

Both split training into K mini-generations (``minigens`` equal parts of the run; when the epochs do not divide,
the first E mod K get one epoch more; or ``minigen_lengths`` in epochs) and, with ``restart_lr`` (default),
run the learning-rate schedule afresh in each, from the base rate. With ``schedule=cosine``, which both method
configs select, that is SE's cyclic cosine annealing, lr0/2 * (cos(pi * t_k / L_k) + 1), and SD's Eq. 5. The
model at the end of mini-generation k is the snapshot M_k.

``snapshot_ensembles`` has no teacher: the loss is cross-entropy, and the snapshots' ensemble is the mean of
their softmax outputs (SE Section 3). ``sd`` adds the teacher-student term of SD Eq. 3: in mini-generation
k > 1 every iteration is supervised by the frozen M_{k-1} (in the first, lambda^T = 0 and the loss is CE):

    L = lambda^S * CE(f(x), y) + lambda^T * KL( softmax(t / T) || softmax(f(x)) )

(Eq. 3 is printed with one leading minus over both terms, as if the KL term were also a log-likelihood; the
KL is a divergence to minimise, so it enters with a plus sign) with asymmetric distillation (Section 3.3.3:
the teacher's logits divided by T, the student's not),
lambda^S = 1 + 1/T and lambda^T = 1 (Section 4.1). Its ensemble multiplies the logits of M_k by T^(k-1) before
the softmax (Table 3's caption). results.json lists the accuracy at the end of each mini-generation
(``minigen_test_acc``, and each other metric of the dataset: the score of every snapshot), the best epoch, and the ensemble's accuracy.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstsd.config import MethodConfig
from lstsd.errors import require
from lstsd.methods.losses import kd_loss
from lstsd.methods.base import Method
from lstsd.methods.teacher import TeacherOutputs
from lstsd.models import frozen_copy
from lstsd.registry import register_method


@dataclass
class SnapshotConfig(MethodConfig):
    minigens: int = 4  # K: equal mini-generations
    minigen_lengths: Optional[list[int]] = None  # or their lengths in epochs (replaces minigens)
    restart_lr: bool = True  # run the schedule afresh in each mini-generation

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.minigens >= 1, "method.minigens", "an integer >= 1", self.minigens)
        if self.minigen_lengths is not None:
            require(len(self.minigen_lengths) >= 1 and min(self.minigen_lengths) >= 1, "method.minigen_lengths",
                    "null or a list of integers >= 1", list(self.minigen_lengths))

    def check(self, cfg) -> None:
        epochs = cfg.trainer.epochs
        if self.minigen_lengths is None:
            require(self.minigens <= epochs, "method.minigens",
                    f"an integer in [1, trainer.epochs={epochs}] (one epoch at least per mini-generation)",
                    self.minigens)
        else:
            require(sum(self.minigen_lengths) == epochs, "method.minigen_lengths",
                    f"lengths summing to trainer.epochs={epochs}", list(self.minigen_lengths))

    def lengths(self, epochs: int) -> list[int]:
        if self.minigen_lengths is not None:
            return list(self.minigen_lengths)
        q, r = divmod(epochs, self.minigens)
        return [q + (k < r) for k in range(self.minigens)]


@dataclass
class SDConfig(SnapshotConfig):
    temperature: float = 2.0  # T (the SD paper reports T = 2 and 3)
    lambda_ce: Optional[float] = None  # lambda^S; null: 1 + 1 / T
    lambda_teacher: float = 1.0  # lambda^T
    asymmetric: bool = True  # the student's logits untempered (SD 3.3.3); false: both divided by T (Hinton)
    t2_scale: bool = False  # multiply the KL term by T^2 (Hinton); Eq. 3 does not
    ensemble_scaling: bool = True  # M_k's logits times T^(k-1) in the ensemble (SD Table 3)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.temperature > 0, "method.temperature", "a number > 0", self.temperature)
        require(self.lambda_ce is None or self.lambda_ce >= 0, "method.lambda_ce", "null or a number >= 0",
                self.lambda_ce)
        require(self.lambda_teacher >= 0, "method.lambda_teacher", "a number >= 0", self.lambda_teacher)


class Ensemble(nn.Module):
    """log( mean_k softmax(scale_k * member_k(x)) ): log-probabilities, so cross-entropy and arg-max apply."""

    def __init__(self, members: list[nn.Module], scales: list[float]):
        super().__init__()
        self.members, self.scales = nn.ModuleList(members), list(scales)

    def forward(self, x: Tensor) -> Tensor:
        probs = torch.stack([F.softmax(s * m(x).float(), dim=-1) for m, s in zip(self.members, self.scales)])
        return probs.mean(0).clamp_min(torch.finfo(torch.float32).tiny).log()


@register_method("snapshot_ensembles", SnapshotConfig)
class SnapshotEnsembles(Method):
    """SE: a snapshot at the end of every cosine cycle (SE Eq. 2 with M = K cycles); ensemble = mean softmax."""

    @classmethod
    def requires(cls, cfg: SnapshotConfig) -> frozenset[str]:
        """Snapshots are copies of the network."""
        return frozenset({"model"})

    def __init__(self, cfg: SnapshotConfig, ctx):
        super().__init__(cfg, ctx)
        lengths = cfg.lengths(ctx.epochs)
        self.ends = list(accumulate(lengths))  # epochs completed when each mini-generation ends
        self.minigen_ends = self.ends  # results.json: each mini-generation's end epoch and its model's scores
        self.lr_cycles = lengths if cfg.restart_lr else None
        self.snapshots: list[nn.Module] = []
        self.snapshot_taken = False

    def minigen(self, epoch: int) -> int:
        """0-based mini-generation of a 0-based epoch."""
        return bisect_right(self.ends, epoch)

    def on_epoch_end(self, epoch: int) -> None:
        self.snapshot_taken = epoch + 1 in self.ends
        if self.snapshot_taken:
            self.snapshots.append(frozen_copy(self.model))

    def ensemble_scale(self, k: int) -> float:
        return 1.0

    def ensemble(self) -> Ensemble:
        return Ensemble(self.snapshots, [self.ensemble_scale(k) for k in range(len(self.snapshots))]).eval()

    def evaluators(self) -> dict[str, nn.Module]:
        """The ensemble of the snapshots so far, evaluated when a mini-generation ends (from the second on)."""
        return {"ensemble": self.ensemble()} if self.snapshot_taken and len(self.snapshots) > 1 else {}

    def state_dict(self) -> dict:
        return {"snapshots": [m.state_dict() for m in self.snapshots], "ends": self.ends}

    def load_state_dict(self, state: dict) -> None:
        if state["ends"] != self.ends:
            raise ValueError(f"the checkpoint's mini-generations end at epochs {state['ends']}, this run's at "
                             f"{self.ends}")
        self.snapshots = []
        for weights in state["snapshots"]:
            self.snapshots.append(frozen_copy(self.model))
            self.snapshots[-1].load_state_dict(weights)


@register_method("sd", SDConfig)
class SnapshotDistillation(SnapshotEnsembles):
    """SD Eq. 3 with the solution of Section 3.4: teacher M_{k-1} fixed for all of mini-generation k."""
    teacher_forwards = 1

    @classmethod
    def requires(cls, cfg: SDConfig) -> frozenset[str]:
        """Snapshots of the network, the teacher run on the batch's inputs."""
        return frozenset({"model", "inputs"})

    def __init__(self, cfg: SDConfig, ctx):
        super().__init__(cfg, ctx)
        t = cfg.temperature
        self.lambda_ce = 1.0 + 1.0 / t if cfg.lambda_ce is None else cfg.lambda_ce
        self.teacher_outputs = TeacherOutputs(ctx)

    @property
    def teacher(self) -> Optional[nn.Module]:
        """The last snapshot of the previous mini-generation; None in the first (c_l = 0)."""
        return self.snapshots[-1] if self.snapshots else None

    def on_epoch_end(self, epoch: int) -> None:
        super().on_epoch_end(epoch)
        if self.snapshot_taken:
            self.teacher_outputs.set(self.teacher)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.teacher_outputs.set(self.teacher)

    def loss(self, batch, logits: Tensor) -> tuple[Tensor, dict]:
        ce = F.cross_entropy(logits, batch.y)
        if self.teacher is None:  # lambda^S = 1, lambda^T = 0: Eq. 3 degenerates to Eq. 1
            return ce, {"ce": ce}
        teacher_logits = self.teacher_outputs(batch)
        cfg = self.cfg
        kd = kd_loss(logits, teacher_logits, cfg.temperature, "forward", cfg.t2_scale,
                     student_temperature=1.0 if cfg.asymmetric else None)
        return self.lambda_ce * ce + cfg.lambda_teacher * kd, {"ce": ce, "kd": kd}

    def ensemble_scale(self, k: int) -> float:
        return float(self.cfg.temperature) ** k if self.cfg.ensemble_scaling else 1.0
