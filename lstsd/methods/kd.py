"""Teacher-based and teacher-free distillation baselines.

``kd`` (Hinton et al. 2015): distillation from a fixed teacher,

    L = (1 - alpha) * CE(f(x), y) + alpha * T^2 * KL( softmax(t/T) || softmax(f(x)/T) )

with the one KD term of :mod:`lstsd.losses`. The teacher, in this order of precedence: the module the caller
gives (``run(cfg, teacher=...)``); ``teacher_run`` (a finished run's directory: its architecture is read from
that run's config); ``teacher_checkpoint`` (a file saved with ``torch.save``, a state_dict or a whole module, for
the model config ``teacher_model``: by default the model ``teacher`` names, else the student's); the pretrained
weights of ``teacher_model`` (torchvision or timm, ``pretrained: true``); or a run trained first from ``teacher``
(overrides of the student's own command line, with method=vanilla; trained once into ``teacher_cache`` and
reused by every job that asks for the same teacher). Teachers from outside must have the student's number of
classes (:func:`lstsd.teachers.external_teacher`). It runs in eval mode, without gradients, on the student's
augmented batch.

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
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from lstsd.config import MethodConfig
from lstsd.errors import ConfigError, finite, require
from lstsd.losses import kd_loss
from lstsd.methods.base import Method, TeacherOutputs
from lstsd.registry import register_method
from lstsd.teachers import (compose_for, external_teacher, load_teacher, model_object, require_same_tokens,
                            teacher_overrides, train_teacher)

NO_TEACHER = ("a run directory, or null with method.teacher a list of overrides (a teacher run to train first), "
              "method.teacher_checkpoint a file saved with torch.save, method.teacher_model pretrained weights, or "
              "a teacher module given to the run (teacher=...)")


def check_external_keys(cfg) -> None:
    """The teacher keys that exclude one another, and what a teacher from outside needs."""
    require(cfg.teacher_checkpoint is None or cfg.teacher_run is None, "method.teacher_checkpoint",
            "null when method.teacher_run names the teacher", cfg.teacher_checkpoint)
    require(cfg.teacher_checkpoint is None or str(cfg.teacher_checkpoint).strip() != "", "method.teacher_checkpoint",
            "null or a file", cfg.teacher_checkpoint)
    require(cfg.teacher_model is None or cfg.teacher_run is None, "method.teacher_model",
            "null when method.teacher_run names the teacher (its architecture is the run's)", cfg.teacher_model)


@dataclass
class KDConfig(MethodConfig):
    teacher_run: Optional[str] = None  # directory of a finished run
    teacher: Optional[list[str]] = None  # or: overrides of a teacher run to train first (cached)
    teacher_cache: str = "outputs/teachers"  # relative to the working directory
    # or: a file saved with torch.save (a state_dict, a whole module, an lstsd last.pt) for teacher_model
    teacher_checkpoint: Optional[str] = None
    # the teacher's model config, in any form the student's takes: a model option (resnet56), a mapping of model
    # keys ({_target_: torchvision.models.resnet50, pretrained: true}); null: the model of method.teacher, else
    # the student's. With pretrained: true and no checkpoint, its pretrained weights are the teacher.
    teacher_model: Optional[Any] = None
    alpha: float = 0.9
    temperature: float = 4.0
    t2_scale: bool = True
    multiplier: Optional[float] = None  # null: Hinton's term; m: the Tf-KD code's m * nn.KLDivLoss() (m / K here)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_external_keys(self)
        require(0.0 <= self.alpha <= 1.0, "method.alpha", "a number in [0, 1]", self.alpha)
        require(finite(self.temperature) and self.temperature > 0, "method.temperature", "a finite number > 0",
                self.temperature)
        require(self.multiplier is None or (finite(self.multiplier) and self.multiplier >= 0), "method.multiplier",
                "null or a finite number >= 0", self.multiplier)

    def require_teacher(self) -> None:
        """Some source of a teacher (checked before the data is loaded, unless the caller gives the teacher)."""
        require(self.teacher_run is not None or self.teacher is not None or self.teacher_checkpoint is not None or
                self.teacher_model is not None, "method.teacher_run", NO_TEACHER, self.teacher_run)


@register_method("kd", KDConfig)
class KD(Method):
    teacher_forwards = 1

    @classmethod
    def requires(cls, cfg: KDConfig) -> frozenset[str]:
        """The batch's inputs: the teacher runs on them."""
        return frozenset({"inputs"})

    def __init__(self, cfg: KDConfig, ctx):
        super().__init__(cfg, ctx)
        external = None
        if cfg.teacher_run is None or getattr(ctx, "teacher", None) is not None:
            probe = None if ctx.train is None else \
                ctx.train.get(torch.arange(min(2, ctx.info.num_train), device=ctx.device), None).x
            external = external_teacher(cfg, ctx, lambda: self.default_model(), probe, ctx.info.num_classes,
                                        ctx.info.input_shape, ctx.device)
        if external is not None:
            self.teacher = external
        elif cfg.teacher_run is not None:  # given explicitly, it replaces the config's default teacher source
            self.teacher = load_teacher(cfg.teacher_run, "method.teacher_run", ctx.info.num_classes, ctx.device, ctx)
            self.teacher_dir = str(cfg.teacher_run)
        else:
            cfg.require_teacher()
            overrides = teacher_overrides(list(ctx.overrides), list(cfg.teacher))
            key = "method.teacher"
            # before it trains
            require_same_tokens(ctx.runner.compose(overrides).model, ctx, key, str(list(cfg.teacher)))
            run_dir = train_teacher(overrides, cfg.teacher_cache, ctx.runner)
            self.teacher = load_teacher(run_dir, key, ctx.info.num_classes, ctx.device, ctx)
            self.teacher_dir = str(run_dir)
        self.teacher_outputs = TeacherOutputs(ctx, self.teacher)

    def default_model(self):
        """The architecture of a checkpoint without method.teacher_model: the model method.teacher would train,
        else the student's."""
        if self.cfg.teacher is None or self.ctx.runner is None:
            if self.ctx.config is None:  # built outside a run (lstsd.method): no student's model config to reuse
                raise ConfigError(f"method.teacher_checkpoint={self.cfg.teacher_checkpoint!r} holds a state_dict: "
                                  "give method.teacher_model too (a mapping of model keys, e.g. {_target_: "
                                  "torchvision.models.resnet50}), or save the whole module")
            return self.ctx.config.model
        overrides = teacher_overrides(list(self.ctx.overrides), list(self.cfg.teacher))
        return model_object(compose_for(self.ctx, overrides, "method.teacher").model, "method.teacher")

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
