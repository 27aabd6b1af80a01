"""Long Short-Term Sample Distillation (Jiang, Wen, Liang, Wang, de Melo et al., AAAI 2020): Algorithm 1 and Eq. 1.

Training is split into mini-generations of E = ``minigen_epochs`` epochs. Every training sample i has

* a short-term teacher z_i^S: what the model predicted for i when i was trained on in the previous epoch
  (Algorithm 1 line 14: written for every sample at every step that trains on it);
* a long-term teacher z_i^L: what the model predicted for i in the last epoch of the previous mini-generation
  (line 16: written only when e = E, then held fixed through the next mini-generation).

In the first mini-generation the loss is cross-entropy only (line 11); from the second on (lines 7-9, Eq. 1)

    L = CE + lambda^L * KD(f(x), z^L) + lambda^S * KD(f(x), z^S)

with the one KD term of :mod:`lstsd.methods.losses`, by default as Eq. 1 and lines 7-8 print it: KL[f(x) || z], the
student's distribution first (``kl_direction=reverse``), with no T^2 factor (``t2_scale=false``), both at the
temperature T = 2 the text gives ("we divided the teacher and student signal ... by a temperature coefficient
T = 2"). ``lstsd_hinton`` is the other reading of "following Hinton, Vinyals, and Dean": Hinton's whole KD term,
T^2 KL(teacher || student) (docs/methods.md, "How a default is chosen"). A term whose weight is 0 is neither
stored nor computed.

``bank_source``: ``train_forward`` (default) stores the logits of the forward pass that trained on the sample,
taken just before the update, so the banks cost one scatter per step and no extra computation, the point of the
paper. ``post_update`` re-computes f(x; theta) after the update, as line 14 reads literally: one extra forward
pass per step (about a third more step time), in eval mode so that batch-norm running statistics are not
updated twice.

``lstsd_single`` (Table 3, "LSTSD (single)"): one teacher pair for all samples, the long-term teacher a frozen
copy of the model at the end of the previous mini-generation and the short-term one a frozen copy at the end
of the previous epoch; both run forward on each batch without gradients, by default in train mode
(``snapshot_mode=train``), as the forward passes LSTSD's banks record are, so that the comparison of Table 3
changes the teachers and nothing else (batch statistics and dropout included); ``snapshot_mode=eval`` runs them
as fixed models (running statistics, no dropout).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstsd.methods.banks import BANK_DTYPES, SampleBank
from lstsd.config import MethodConfig
from lstsd.errors import require, require_choice
from lstsd.methods.losses import KD_DIRECTIONS, kd_loss, log_probs, teacher_probs
from lstsd.methods.base import Method
from lstsd.methods.teacher import TeacherOutputs
from lstsd.models import frozen_copy
from lstsd.registry import register_method

log = logging.getLogger(__name__)


@dataclass
class LSTSDConfig(MethodConfig):
    lambda_long: float = 2.4  # lambda^L, the long-term teacher's weight (Eq. 1)
    lambda_short: float = 4.0  # lambda^S, the short-term teacher's weight (Eq. 1)
    minigen_epochs: int = 6  # E, the epochs of a mini-generation
    temperature: float = 2.0  # T of both KD terms
    kl_direction: str = "reverse"  # reverse: KL(student || teacher), Eq. 1 as printed; forward: Hinton's
    t2_scale: bool = False  # Eq. 1 prints no T^2; true: Hinton's factor (lstsd_hinton)
    bank_dtype: str = "float32"
    bank_store: str = "logits"  # logits, or probs = softmax(logits / temperature)
    bank_source: str = "train_forward"  # or post_update (Algorithm 1 line 14 literally; one extra forward)
    bank_topk: int = 0  # k > 0: keep each row's k largest probabilities and their classes (needs bank_store=probs)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.lambda_long >= 0, "method.lambda_long", "a number >= 0", self.lambda_long)
        require(self.lambda_short >= 0, "method.lambda_short", "a number >= 0", self.lambda_short)
        require(self.minigen_epochs >= 1, "method.minigen_epochs", "an integer >= 1", self.minigen_epochs)
        require(self.temperature > 0, "method.temperature", "a number > 0", self.temperature)
        require_choice("method.kl_direction", self.kl_direction, KD_DIRECTIONS)
        require_choice("method.bank_dtype", self.bank_dtype, tuple(BANK_DTYPES))
        require_choice("method.bank_store", self.bank_store, ("logits", "probs"))
        require_choice("method.bank_source", self.bank_source, ("train_forward", "post_update"))
        require(self.bank_topk >= 0, "method.bank_topk", "an integer >= 0", self.bank_topk)
        require(self.bank_topk == 0 or self.bank_store == "probs", "method.bank_topk",
                "0 unless method.bank_store=probs (top-k keeps probabilities)", self.bank_topk)


@dataclass
class LSTSDSingleConfig(LSTSDConfig):
    snapshot_mode: str = "train"  # train: like the forward passes LSTSD's banks record; eval: fixed models

    def __post_init__(self) -> None:
        super().__post_init__()
        require_choice("method.snapshot_mode", self.snapshot_mode, ("train", "eval"))


@register_method("lstsd", LSTSDConfig)
class LSTSD(Method):
    """Algorithm 1 with Eq. 1: per-sample short-term (line 14) and long-term (line 16) banks; CE alone in the first
    mini-generation (line 11), CE + lambda^L KD(z^L) + lambda^S KD(z^S) from the second on (lines 7-9)."""
    teachers_are_probs = False

    def __init__(self, cfg: LSTSDConfig, ctx):
        super().__init__(cfg, ctx)
        self.weights = {"long": cfg.lambda_long, "short": cfg.lambda_short}
        self.distil = self.record_long = False
        if cfg.minigen_epochs >= ctx.epochs:
            log.warning(f"method.minigen_epochs={cfg.minigen_epochs} is not shorter than the run's {ctx.epochs} epochs: "
                        "the first mini-generation never ends, so this run never distils (it equals vanilla "
                        "training)")
        self.setup_teachers()

    @classmethod
    def requires(cls, cfg: LSTSDConfig) -> frozenset[str]:
        """The banks need logits and sample ids only; ``post_update`` re-runs the network on the inputs."""
        return frozenset({"model", "inputs"}) if cfg.bank_source == "post_update" else frozenset()

    def setup_teachers(self) -> None:
        n, c = self.ctx.info.num_train, self.ctx.info.num_classes
        self.teachers_are_probs = self.cfg.bank_store == "probs"
        require(self.cfg.bank_topk < c, "method.bank_topk", f"an integer in [0, {c}) (the number of classes)",
                self.cfg.bank_topk)
        self.banks = {k: SampleBank(n, c, self.cfg.bank_dtype, self.ctx.device, self.cfg.bank_topk)
                      for k, w in self.weights.items() if w > 0}

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        e = self.cfg.minigen_epochs
        self.distil = epoch >= e  # mini-generation m = epoch // E > 0 (Algorithm 1 line 6)
        self.record_long = (epoch + 1) % e == 0  # last epoch of the mini-generation (line 15)

    def teacher(self, kind: str, batch) -> Tensor:
        return self.banks[kind].read(batch.index)

    def loss(self, batch, logits: Tensor) -> tuple[Tensor, dict]:
        ce = F.cross_entropy(logits, batch.y)
        loss, terms = ce, {"ce": ce}
        if self.distil:
            student = log_probs(logits, self.cfg.temperature)  # shared by both terms
            for kind, weight in self.weights.items():
                if weight > 0:
                    kd = kd_loss(logits, self.teacher(kind, batch), self.cfg.temperature, self.cfg.kl_direction,
                                 self.cfg.t2_scale, teacher_is_probs=self.teachers_are_probs,
                                 student_log_probs=student)
                    terms[f"kd_{kind}"] = kd
                    loss = loss + weight * kd
        return loss, terms

    @torch.no_grad()
    def after_step(self, batch, logits: Tensor) -> None:
        if self.cfg.bank_source == "post_update":
            self.model.eval()
            logits = self.model(batch.x)
            self.model.train()
        rows = teacher_probs(logits, self.cfg.temperature) if self.teachers_are_probs else logits
        if "short" in self.banks:
            self.banks["short"].write(batch.index, rows)
        if "long" in self.banks and self.record_long:
            self.banks["long"].write(batch.index, rows)

    def bank_bytes(self) -> int:
        return sum(b.nbytes for b in self.banks.values())

    def state_dict(self) -> dict:
        return {k: b.state_dict() for k, b in self.banks.items()}

    def load_state_dict(self, state: dict) -> None:
        for k, b in self.banks.items():
            b.load_state_dict(state[k])


@register_method("lstsd_single", LSTSDSingleConfig)
class LSTSDSingle(LSTSD):
    """Table 3's LSTSD (single): the same loss, teachers are two frozen whole-model snapshots."""
    teacher_forwards = 2

    @classmethod
    def requires(cls, cfg: LSTSDSingleConfig) -> frozenset[str]:
        """Snapshots of the network, run on the batch's inputs."""
        return frozenset({"model", "inputs"})

    def setup_teachers(self) -> None:
        self.snapshots = {}
        train_mode = self.cfg.snapshot_mode == "train"
        self.outputs = {kind: TeacherOutputs(self.ctx, train_mode=train_mode) for kind, w in self.weights.items()
                        if w > 0}

    def teacher(self, kind: str, batch) -> Tensor:
        return self.outputs[kind](batch)

    def after_step(self, batch, logits: Tensor) -> None:
        pass

    def snapshot(self):
        """A frozen copy of the model; in train mode its batch norm uses each batch's statistics and keeps its
        running ones (momentum 0), so a snapshot stays the model it was taken from."""
        copy = frozen_copy(self.model)
        if self.cfg.snapshot_mode == "train":
            for m in copy.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.momentum = 0.0
        return copy

    def on_epoch_end(self, epoch: int) -> None:
        kinds = ["short", "long"] if self.record_long else ["short"]
        for kind in kinds:
            if self.weights[kind] > 0:
                self.snapshots[kind] = self.snapshot()
                self.outputs[kind].set(self.snapshots[kind])

    def bank_bytes(self) -> int:
        return 0

    def state_dict(self) -> dict:
        return {k: m.state_dict() for k, m in self.snapshots.items()}

    def load_state_dict(self, state: dict) -> None:
        for kind, weights in state.items():
            self.snapshots[kind] = self.snapshot()
            self.snapshots[kind].load_state_dict(weights)
            self.outputs[kind].set(self.snapshots[kind])
