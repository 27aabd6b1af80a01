"""The teacher as a method sees it: the keys that name its source (:class:`TeacherConfig`, declared once for KD,
Tf-KD_self and LW-KD), the value the run hands the method (:class:`Teacher`: the run resolves it before it builds
the method, :func:`lstsd.training.teachers.resolve`), and its outputs for each training batch
(:class:`TeacherOutputs`, also used by snapshot teachers)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from lstsd.config import MethodConfig
from lstsd.data.types import Batch, TrainingSet
from lstsd.errors import require

NO_TEACHER = ("a run directory, or null with method.teacher a list of overrides (a teacher run to train first), "
              "method.teacher_checkpoint a file saved with torch.save, method.teacher_model pretrained weights, or "
              "a teacher module given to the run (teacher=...)")


@dataclass
class TeacherConfig(MethodConfig):
    """Where a method's teacher comes from, in this order of precedence: a module given to the run (``run(cfg,
    teacher=...)``, ``lstsd.method(..., teacher=...)``); ``teacher_run``; ``teacher_checkpoint`` (for
    ``teacher_model``); the pretrained weights of ``teacher_model``; a run trained first from ``teacher``."""
    teacher_run: Optional[str] = None  # directory of a finished run
    teacher: Optional[list[str]] = None  # or: overrides of a teacher run to train first (cached)
    teacher_cache: str = "outputs/teachers"  # relative to the working directory
    # or: a file saved with torch.save (a state_dict, a whole module, an lstsd last.pt) for teacher_model
    teacher_checkpoint: Optional[str] = None
    # the teacher's model config, in any form the student's takes: a model option (resnet56), a mapping of model
    # keys ({_target_: torchvision.models.resnet50, pretrained: true}); null: the model of method.teacher, else
    # the student's. With pretrained: true and no checkpoint, its pretrained weights are the teacher.
    teacher_model: Optional[Any] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.teacher_checkpoint is None or self.teacher_run is None, "method.teacher_checkpoint",
                "null when method.teacher_run names the teacher", self.teacher_checkpoint)
        require(self.teacher_checkpoint is None or str(self.teacher_checkpoint).strip() != "",
                "method.teacher_checkpoint", "null or a file", self.teacher_checkpoint)
        require(self.teacher_model is None or self.teacher_run is None, "method.teacher_model",
                "null when method.teacher_run names the teacher (its architecture is the run's)", self.teacher_model)

    def require_teacher(self) -> None:
        """Some source of a teacher (checked before the data is loaded, unless the caller gives the teacher)."""
        require(self.teacher_run is not None or self.teacher is not None or self.teacher_checkpoint is not None or
                self.teacher_model is not None, "method.teacher_run", NO_TEACHER, self.teacher_run)

    def teacher_overrides(self, student: list[str], dataset_root: str, num_classes: int, seed: int) -> list[str]:
        """The overrides of the teacher run trained when no other source is given: the student's command line
        with method=vanilla and ``teacher`` (:func:`student_overrides`)."""
        return student_overrides(student, list(self.teacher or []))

    def own_inputs(self) -> bool:
        """Whether the teacher reads inputs of its own (LW-KD's SynMNIST twins) rather than the student's batch:
        the run then hands the method that training split too (:attr:`Teacher.inputs`)."""
        return False


def student_overrides(student: list[str], teacher: list[str]) -> list[str]:
    """The student's command line without its method and Hydra settings (but its config search path, where its
    own YAML options may be), then method=vanilla and ``teacher``."""
    keep = [o for o in student if not o.lstrip("+~").split("=")[0].split(".")[0] in ("method", "hydra")
            or o.lstrip("+~").split("=")[0] == "hydra.searchpath"]
    return keep + ["method=vanilla", *teacher]


@dataclass(frozen=True)
class Teacher:
    """A method's teacher, resolved before the method is built."""
    module: nn.Module  # frozen (eval mode, no gradients), on the run's device
    run_dir: Optional[str] = None  # the finished run it came from, where it is one (results.json: teacher_dir)
    inputs: Optional[TrainingSet] = None  # the training split of its own inputs (TeacherConfig.own_inputs)
    record: Optional[dict] = None  # its run's results.json, read with its weights (results.json: teacher_test_acc)


# layers whose output is the same in train and eval mode (a whitelist: anything else may differ)
MODE_INVARIANT = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid,
                  nn.Flatten, nn.Identity, nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.MaxPool1d, nn.MaxPool2d,
                  nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.LayerNorm,
                  nn.GroupNorm, nn.Embedding)


def mode_invariant(model: nn.Module, x: Tensor) -> bool:
    """Whether ``model`` computes the same in train and eval mode: only layers of :data:`MODE_INVARIANT` and
    recurrent layers without dropout as leaves (no batch norm, no dropout module), and, against functional dropout
    or normalisation in a model's own code, the same outputs for ``x`` in eval mode and twice in train mode (on a
    copy, the random generators left as they were)."""
    for m in model.modules():
        leaf = not list(m.children())
        if isinstance(m, nn.RNNBase) and m.dropout or leaf and not isinstance(m, (*MODE_INVARIANT, nn.RNNBase)):
            return False
    probe = copy.deepcopy(model)
    with torch.no_grad(), torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        reference = probe.eval()(x)
        return all(torch.equal(probe.train()(x), reference) for _ in range(2))


class TeacherOutputs:
    """What a frozen teacher (no gradients) predicts for each training batch, in eval mode or, with
    ``train_mode``, in train mode (batch statistics, dropout: the teacher then runs on each batch).

    In eval mode (or in train mode for a model without batch norm or dropout, :func:`mode_invariant`), when the
    training inputs are the same in every epoch (the loader does not augment: MNIST-1D, digits, text), the
    teacher's outputs on the whole training set are computed once, in evaluation-sized batches, whenever the
    teacher changes (:meth:`set`), and read by sample index: one teacher forward per step becomes one index read,
    with the same values (a sample's output then does not depend on its batch).
    With augmentation the teacher runs on each (augmented) batch. The forward passes run in the training
    precision (``ctx.autocast``)."""

    def __init__(self, ctx, teacher: Optional[nn.Module] = None, train_mode: bool = False):
        self.ctx, self.teacher, self.bank, self.train_mode = ctx, None, None, train_mode
        self.precompute = ctx.train is not None and not ctx.train.augment and \
            (not train_mode or mode_invariant(ctx.model, ctx.train.get(torch.arange(min(8, ctx.train.num_samples),
                                                                                   device=ctx.device), None).x))
        self.set(teacher)

    def set(self, teacher: Optional[nn.Module]) -> None:
        self.teacher = teacher
        self.bank = self.compute(teacher) if teacher is not None and self.precompute else None

    @torch.no_grad()
    def compute(self, teacher: nn.Module) -> Tensor:
        loader = self.ctx.train
        out = None
        for index in torch.arange(loader.num_samples, device=self.ctx.device).split(self.ctx.eval_batch_size):
            batch = loader.get(index, None)
            with self.ctx.autocast():
                logits = teacher(batch.x)
            if out is None:
                out = torch.empty(loader.num_samples, *logits.shape[1:], dtype=logits.dtype, device=logits.device)
            out[index.to(out.device)] = logits
        return out

    def __call__(self, batch: Batch) -> Tensor:
        if self.bank is not None:
            return self.bank[batch.index]
        teacher = self.teacher.train() if self.train_mode else self.teacher  # a frozen copy is in eval mode
        with torch.no_grad():
            return teacher(batch.x)

    @property
    def nbytes(self) -> int:
        return 0 if self.bank is None else self.bank.numel() * self.bank.element_size()
