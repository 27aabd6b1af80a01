"""Teacher-based and teacher-free distillation baselines.

``kd`` (Hinton et al. 2015): distillation from a fixed teacher,

    L = (1 - alpha) * CE(f(x), y) + alpha * T^2 * KL( softmax(t/T) || softmax(f(x)/T) )

with the one KD term of :mod:`lstsd.methods.losses`. The teacher, in this order of precedence: the module the caller
gives (``run(cfg, teacher=...)``); ``teacher_run`` (a finished run's directory: its architecture is read from
that run's config); ``teacher_checkpoint`` (a file saved with ``torch.save``, a state_dict or a whole module, for
the model config ``teacher_model``: by default the model ``teacher`` names, else the student's); the pretrained
weights of ``teacher_model`` (torchvision or timm, ``pretrained: true``); or a run trained first from ``teacher``
(overrides of the student's own command line, with method=vanilla; trained once into ``teacher_cache`` and
reused by every job that asks for the same teacher). The run resolves it before it builds the method
(:func:`lstsd.training.teachers.resolve`: its outputs are checked for the student's number of classes) and hands it
over as ``ctx.teacher``. It runs in eval mode, without gradients, on the student's augmented batch.

``multiplier`` (null by default: Hinton's term above) scales the KD term as the Tf-KD code does,
``multiplier * nn.KLDivLoss()(...)``: ``nn.KLDivLoss()`` averages over the batch *and* the K classes, so the term
here is the batch-mean KL times multiplier / K, exact for any K.

``tfkd_self`` (Yuan et al., CVPR 2020, Tf-KD_self; the official ``loss_kd_self``) is ``kd`` whose teacher is a
pre-trained model of the student's own architecture, with the official code's ResNet-18 setting (alpha 0.95,
T 6, multiplier 50); its config trains that teacher with no further overrides.

``label_smoothing`` (Szegedy et al. 2016): CE against (1 - eps) * one-hot + eps / K (torch's
``label_smoothing``).

``tfkd_reg`` (Tf-KD_reg): a virtual teacher p^d with probability a on the correct class and (1 - a)/(K - 1) on
each other, softened as softmax(p^d / tau), the student untempered (the official code; ``student_temperature``
sets another), and the term scaled by ``multiplier``:

    L = (1 - alpha) * CE + alpha * multiplier / K * KL( softmax(p^d / tau) || softmax(f(x) / T_s) )

(the official ``loss_kd_regularization``: ``multiplier * nn.KLDivLoss()``, a mean over batch and classes; the KL
here is the batch mean, hence the 1 / K). ``multiplier`` is in the official code's units, so its per-model
settings apply as they are, for any number of classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from lstsd.config import MethodConfig
from lstsd.errors import ConfigError, finite, require
from lstsd.methods.base import Method
from lstsd.methods.losses import kd_loss
from lstsd.methods.teacher import TeacherConfig, TeacherOutputs
from lstsd.registry import register_method


@dataclass
class KDConfig(TeacherConfig):
    alpha: float = 0.9
    temperature: float = 4.0
    t2_scale: bool = True
    multiplier: Optional[float] = None  # null: Hinton's term; m: the Tf-KD code's m * nn.KLDivLoss() (m / K here)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 <= self.alpha <= 1.0, "method.alpha", "a number in [0, 1]", self.alpha)
        require(finite(self.temperature) and self.temperature > 0, "method.temperature", "a finite number > 0",
                self.temperature)
        require(self.multiplier is None or (finite(self.multiplier) and self.multiplier >= 0), "method.multiplier",
                "null or a finite number >= 0", self.multiplier)


@register_method("kd", KDConfig)
class KD(Method):
    teacher_forwards = 1

    @classmethod
    def requires(cls, cfg: KDConfig) -> frozenset[str]:
        """The batch's inputs: the teacher runs on them."""
        return frozenset({"inputs"})

    def __init__(self, cfg: KDConfig, ctx):
        super().__init__(cfg, ctx)
        if ctx.teacher is None:
            raise ConfigError(f"method={cfg.name} needs a teacher: give teacher= (a module), or "
                              "teacher_checkpoint= with teacher_model=")
        self.teacher, self.teacher_dir = ctx.teacher.module, ctx.teacher.run_dir
        self.teacher_record = ctx.teacher.record  # its run's results, read with its weights
        self.teacher_outputs = TeacherOutputs(ctx, self.teacher)

    def loss(self, batch, logits: Tensor) -> tuple[Tensor, dict]:
        ce = F.cross_entropy(logits, batch.y)
        t = self.teacher_outputs(batch)
        kd = kd_loss(logits, t, self.cfg.temperature, "forward", self.cfg.t2_scale)
        if self.cfg.multiplier is not None:  # the Tf-KD code's class-averaged KL, scaled
            kd = kd * (self.cfg.multiplier / logits.shape[1])
        return (1 - self.cfg.alpha) * ce + self.cfg.alpha * kd, {"ce": ce, "kd": kd}

    def evaluators(self):
        return {"teacher": self.teacher} if self.epoch == 0 else {}



@dataclass
class LabelSmoothingConfig(MethodConfig):
    epsilon: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 <= self.epsilon < 1.0, "method.epsilon", "a number in [0, 1)", self.epsilon)


@register_method("label_smoothing", LabelSmoothingConfig)
class LabelSmoothing(Method):
    def loss(self, batch, logits: Tensor) -> tuple[Tensor, dict]:
        ce = F.cross_entropy(logits, batch.y, label_smoothing=self.cfg.epsilon)
        return ce, {"ce": ce}


@dataclass
class TfKDRegConfig(MethodConfig):
    alpha: float = 0.1
    temperature: float = 20.0  # tau, softens the virtual teacher
    correct_prob: float = 0.99  # a
    multiplier: float = 100.0  # the official code's units (its ResNet-18 setting): m / K times the batch-mean KL
    student_temperature: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 <= self.alpha <= 1.0, "method.alpha", "a number in [0, 1]", self.alpha)
        require(self.temperature > 0, "method.temperature", "a number > 0", self.temperature)
        require(self.student_temperature > 0, "method.student_temperature", "a number > 0",
                self.student_temperature)
        require(0.0 < self.correct_prob < 1.0, "method.correct_prob", "a number in (0, 1)", self.correct_prob)
        require(self.multiplier >= 0, "method.multiplier", "a number >= 0", self.multiplier)


@register_method("tfkd_reg", TfKDRegConfig)
class TfKDReg(Method):
    def virtual_teacher(self, y: Tensor, num_classes: int) -> Tensor:
        """p^d: a on the label, (1 - a)/(K - 1) elsewhere."""
        a = self.cfg.correct_prob
        p = torch.full((len(y), num_classes), (1 - a) / (num_classes - 1), device=y.device)
        return p.scatter_(1, y[:, None], a)

    def loss(self, batch, logits: Tensor) -> tuple[Tensor, dict]:
        cfg = self.cfg
        ce = F.cross_entropy(logits, batch.y)
        # p^d is softened as if it were logits: softmax(p^d / tau), as the official code does
        reg = kd_loss(logits, self.virtual_teacher(batch.y, logits.shape[1]), cfg.temperature, "forward",
                      t2_scale=False, student_temperature=cfg.student_temperature)
        reg = reg * (cfg.multiplier / logits.shape[1])  # the official multiplier over a class-averaged KL
        return (1 - cfg.alpha) * ce + cfg.alpha * reg, {"ce": ce, "reg": reg}
