"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017) and Temporal Ensembling (Laine & Aila, ICLR 2017), the
LSTSD paper's one-generation baselines. Both add a consistency term to the cross-entropy,

    L = CE(f(x), y) + w(e) * C(f(x), target),    w(e) = weight * exp(-5 (1 - e / R)^2) for epoch e < R, else weight

(the sigmoid-shaped ramp-up of both papers, R = ``rampup_epochs``; R = 0 switches it off), with C the KL term
of :func:`lstsd.methods.losses.kd_loss` or the softmax MSE (``loss``), both at ``temperature``.

``mean_teacher``: the target is the prediction of a teacher whose weights are an exponential moving average of
the student's, theta' <- a * theta' + (1 - a) * theta after every update with a = ``decay`` (the formula the
LSTSD paper prints in its Section "Baselines"; MT Eq. 1), or a = min(1 - 1/(s + 1), decay) at update
s = 1, 2, ... with ``decay_warmup`` (the MT code's warm-up). As in the MT
paper (Section 2: "both the student and the teacher model evaluate the input applying noise (eta, eta')") and
its code (``ema_model.train()``, ``ema_input``, ``update_ema_variables``), by default the teacher runs without
gradients in train mode (``teacher_mode``: batch statistics, dropout) on its own augmentation of the batch
(``teacher_input=own``: the training samples drawn again with a generator of its own, seeded by (seed, epoch))
and the average covers the parameters only (``average=parameters``: the teacher's batch-norm statistics come
from its own train-mode passes). ``teacher_mode=eval``, ``teacher_input=student`` and ``average=all`` (buffers
averaged too) are the other choices. The teacher is evaluated each epoch as ``ema``.

``temporal_ensembling``: each sample's training-pass prediction z_i = softmax(f(x_i) / T) is kept in a
per-sample bank through the epoch; at the epoch's end Z <- a Z + (1 - a) z (a = ``alpha``, 0.6), and the next
epochs' target is the bias-corrected z_hat = Z / (1 - a^t) after t such updates (Laine & Aila, Algorithm 2).
There is no target in the first epoch, so w = 0 there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstsd import distributed
from lstsd.methods.banks import BANK_DTYPES, SampleBank
from lstsd.config import MethodConfig
from lstsd.data.loaders.memory import epoch_generator
from lstsd.errors import require, require_choice
from lstsd.methods.losses import CONSISTENCY_LOSSES, consistency_loss, teacher_probs
from lstsd.methods.base import Method
from lstsd.models import frozen_copy
from lstsd.registry import register_method

TEACHER_STREAM = 2  # epoch_generator stream of the Mean Teacher's own augmentation (DLB's repeated half is 1)


def sigmoid_rampup(epoch: float, length: int) -> float:
    """exp(-5 (1 - t)^2) with t = epoch / length clipped to [0, 1]; 1 when length is 0."""
    if length <= 0:
        return 1.0
    t = min(max(epoch / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


@dataclass
class ConsistencyConfig(MethodConfig):
    weight: float = 1.0  # lambda: the consistency weight after ramp-up
    loss: str = "kl"  # kl: T^2 KL(target || student), or mse of the probability vectors
    temperature: float = 1.0
    rampup_epochs: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.weight >= 0, "method.weight", "a number >= 0", self.weight)
        require_choice("method.loss", self.loss, CONSISTENCY_LOSSES)
        require(self.temperature > 0, "method.temperature", "a number > 0", self.temperature)
        require(self.rampup_epochs >= 0, "method.rampup_epochs", "an integer >= 0", self.rampup_epochs)


@dataclass
class MeanTeacherConfig(ConsistencyConfig):
    loss: str = "mse"  # the MT paper's consistency cost J (its Section 2): squared error of the softmax outputs
    weight: float = 100.0  # the MT code's CIFAR-10 value (neither paper gives one for a fully labelled run)
    decay: float = 0.999  # alpha of the EMA (the LSTSD paper's value)
    decay_warmup: bool = False  # true: min(1 - 1/(s+1), decay), the MT code's warm-up
    teacher_mode: str = "train"  # train (the MT paper's noisy teacher, its code's ema_model.train()) or eval
    teacher_input: str = "own"  # own: its own augmentation of the batch (eta'); student: the student's batch
    average: str = "parameters"  # parameters (the MT code), or all: parameters and buffers

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 < self.decay < 1.0, "method.decay", "a number in (0, 1)", self.decay)
        require_choice("method.teacher_mode", self.teacher_mode, ("train", "eval"))
        require_choice("method.teacher_input", self.teacher_input, ("own", "student"))
        require_choice("method.average", self.average, ("parameters", "all"))


@dataclass
class TemporalEnsemblingConfig(ConsistencyConfig):
    alpha: float = 0.6  # ensemble momentum (Laine & Aila; the LSTSD paper)
    loss: str = "mse"
    weight: float = 30.0  # w_max of Laine & Aila (CIFAR-10), all labels used
    rampup_epochs: int = 80
    bank_dtype: str = "float32"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 < self.alpha < 1.0, "method.alpha", "a number in (0, 1)", self.alpha)
        require_choice("method.bank_dtype", self.bank_dtype, tuple(BANK_DTYPES))


class Consistency(Method):
    """CE + w(e) * C(f(x), target(batch)); subclasses give the target."""

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.w = self.cfg.weight * sigmoid_rampup(epoch, self.cfg.rampup_epochs)

    def target(self, batch) -> tuple[Tensor, bool] | None:
        """(logits or probabilities, whether probabilities), or None when there is no target yet."""
        raise NotImplementedError

    def loss(self, batch, logits: Tensor) -> tuple[Tensor, dict]:
        ce = F.cross_entropy(logits, batch.y)
        target = self.target(batch)
        if target is None:
            return ce, {"ce": ce}
        cons = consistency_loss(logits, target[0], self.cfg.loss, self.cfg.temperature, teacher_is_probs=target[1])
        return ce + self.w * cons, {"ce": ce, "consistency": cons}


@register_method("mean_teacher", MeanTeacherConfig)
class MeanTeacher(Consistency):
    """MT Eq. 1 (the EMA of the weights) and the consistency loss above, the teacher's target."""
    teacher_forwards = 1

    @classmethod
    def requires(cls, cfg: MeanTeacherConfig) -> frozenset[str]:
        """The EMA of the network, run on the batch's inputs (or on its own re-read of the samples, when a dataset
        that augments is given: ``teacher_input=own``)."""
        return frozenset({"model", "inputs"})

    def __init__(self, cfg: MeanTeacherConfig, ctx):
        super().__init__(cfg, ctx)
        self.teacher = frozen_copy(self.model)  # theta', a copy of the student's initial weights
        self.updates = 0
        self.own_input = cfg.teacher_input == "own" and ctx.train is not None and ctx.train.augment
        self.generator: Optional[torch.Generator] = None

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        if self.own_input:  # each process its own draws, as DLB's repeated half
            self.generator = epoch_generator(self.ctx.seed, epoch, TEACHER_STREAM + 1000 * self.ctx.train.rank)

    @property
    def decay(self) -> float:
        """The decay the next update uses: ``decay``, or min(1 - 1/(s + 1), decay) for update s = updates + 1."""
        s = self.updates + 1
        return min(1.0 - 1.0 / (s + 1), self.cfg.decay) if self.cfg.decay_warmup else self.cfg.decay

    def target(self, batch):
        x = self.ctx.train.get(batch.index, self.generator).x if self.own_input else batch.x
        teacher = self.teacher.train(self.cfg.teacher_mode == "train")
        with torch.no_grad():
            return teacher(x), False

    @torch.no_grad()
    def after_step(self, batch, logits: Tensor) -> None:
        """theta' <- a theta' + (1 - a) theta (one fused lerp): over the parameters (the MT code's
        update_ema_variables: the teacher's batch-norm statistics stay its own), or over every floating tensor of
        the state, integer buffers copied (``average=all``)."""
        if self.cfg.average == "parameters":
            pairs = list(zip(self.teacher.parameters(), self.model.parameters()))
        else:
            pairs = []
            for mine, theirs in zip(self.teacher.state_dict().values(), self.model.state_dict().values()):
                if mine.is_floating_point():
                    pairs.append((mine, theirs))
                else:
                    mine.copy_(theirs)
        torch._foreach_lerp_([t for t, _ in pairs], [s.detach() for _, s in pairs], 1.0 - self.decay)
        self.updates += 1
        if distributed.active() and self.cfg.average == "parameters":  # statistics from each rank's own passes
            distributed.broadcast_buffers(self.teacher)

    def rank_state(self) -> dict:
        """The teacher's own augmentation generator, inside an epoch (each process its own)."""
        return {"generator": None if self.generator is None else self.generator.get_state()}

    def load_rank_state(self, state: dict) -> None:
        if state.get("generator") is not None and self.generator is not None:
            self.generator.set_state(state["generator"])

    def evaluators(self) -> dict[str, nn.Module]:
        return {"ema": self.teacher}

    def state_dict(self) -> dict:
        return {"ema": self.teacher.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.teacher.load_state_dict(state["ema"])
        self.updates = state["updates"]


@register_method("temporal_ensembling", TemporalEnsemblingConfig)
class TemporalEnsembling(Consistency):
    """Laine & Aila, Algorithm 2 (temporal ensembling): Z <- a Z + (1 - a) z, target Z / (1 - a^t)."""

    def __init__(self, cfg: TemporalEnsemblingConfig, ctx):
        super().__init__(cfg, ctx)
        n, c = ctx.info.num_train, ctx.info.num_classes
        self.current = SampleBank(n, c, cfg.bank_dtype, ctx.device)  # z: this epoch's predictions
        self.accumulated = SampleBank(n, c, cfg.bank_dtype, ctx.device)  # Z
        self.updates = 0  # t: epochs accumulated into Z

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        if self.updates == 0:
            self.w = 0.0

    def target(self, batch):
        if self.updates == 0:
            return None
        return self.accumulated.read(batch.index) / (1.0 - self.cfg.alpha ** self.updates), True

    @torch.no_grad()
    def after_step(self, batch, logits: Tensor) -> None:
        self.current.write(batch.index, teacher_probs(logits, self.cfg.temperature))

    @torch.no_grad()
    def on_epoch_end(self, epoch: int) -> None:
        z, acc = self.current.values, self.accumulated.values
        acc.copy_((self.cfg.alpha * acc.float() + (1.0 - self.cfg.alpha) * z.float()).to(acc.dtype))
        self.updates += 1

    def bank_bytes(self) -> int:
        return self.current.nbytes + self.accumulated.nbytes

    def state_dict(self) -> dict:
        return {"current": self.current.state_dict(), "accumulated": self.accumulated.state_dict(),
                "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.current.load_state_dict(state["current"])
        self.accumulated.load_state_dict(state["accumulated"])
        self.updates = state["updates"]
