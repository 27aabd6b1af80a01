"""The method interface: everything a training policy adds to plain supervised training.

The trainer calls, per epoch, ``on_epoch_start``; per step ``training_step`` (forward and loss), backward and
the optimiser step, then ``after_step`` (bank writes, EMA updates, all without gradients); ``on_epoch_end``
(snapshots); evaluates the student and every model of ``evaluators()``; and checkpoints ``state_dict()``.
A method whose mini-generations restart the learning rate sets ``lr_cycles`` (their lengths in epochs).

What the results record and ``lstsd-bench`` report about a method, it declares here, the same way for every
method: ``bank_bytes()``, ``teacher_dir`` (the run its teacher came from), ``minigen_ends`` (the epochs its
mini-generations end at), ``teacher_forwards`` and ``images_per_step`` (its inherent extra work per step).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstsd.data import DataInfo
from lstsd.data.loader import Batch
from lstsd.teachers import TeacherRunner


@dataclass(kw_only=True)
class RunContext:
    """What a method is built with (by keyword)."""
    model: nn.Module
    info: DataInfo
    device: torch.device
    epochs: int
    steps_per_epoch: int
    train: Optional[object] = None  # the training loader (``get(index, generator)`` re-reads samples)
    seed: int = 0
    overrides: tuple = ()  # the run's command-line overrides (teachers trained on the fly start from them)
    config: Optional[object] = None  # the run's validated Config
    net: Optional[nn.Module] = None  # the training forward: the model's DDP wrapper with several processes
    runner: Optional[TeacherRunner] = None  # how teachers are composed and trained (given by lstsd.run)


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
    precision."""

    def __init__(self, ctx: RunContext, teacher: Optional[nn.Module] = None, train_mode: bool = False):
        self.ctx, self.teacher, self.bank, self.train_mode = ctx, None, None, train_mode
        self.precompute = ctx.train is not None and not getattr(ctx.train, "augment", True) and \
            (not train_mode or mode_invariant(ctx.model, ctx.train.get(torch.arange(min(8, ctx.train.num_samples),
                                                                                   device=ctx.device), None).x))
        self.set(teacher)

    def set(self, teacher: Optional[nn.Module]) -> None:
        self.teacher = teacher
        self.bank = self.compute(teacher) if teacher is not None and self.precompute else None

    @torch.no_grad()
    def compute(self, teacher: nn.Module) -> Tensor:
        loader, config = self.ctx.train, self.ctx.config
        chunk = config.dataset.eval_batch_size if config is not None else 1000
        precision = config.trainer.precision if config is not None else "fp32"
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        out = None
        for index in torch.arange(loader.num_samples, device=self.ctx.device).split(chunk):
            batch = loader.get(index, None)
            with torch.autocast(self.ctx.device.type, dtype=dtype, enabled=dtype is not None):
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


class Method:
    name = "base"
    lr_cycles: Optional[list[int]] = None  # epochs per learning-rate cycle; None: one schedule over the run
    teacher_dir: Optional[str] = None  # the finished run the teacher was loaded from (KD, LW-KD)
    minigen_ends: Optional[list[int]] = None  # epochs at which mini-generations end (snapshots)
    teacher_forwards = 0  # forward passes of the student's architecture a step adds (lstsd-bench's inherent cost)
    images_per_step = 1  # images a step trains on per new image (lstsd-bench)

    def __init__(self, cfg, ctx: RunContext):
        self.cfg, self.ctx, self.model = cfg, ctx, ctx.model
        self.net = ctx.net if ctx.net is not None else ctx.model  # training forwards (gradients synchronised)
        self.epoch = 0

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def training_step(self, batch: Batch) -> tuple[Tensor, Tensor, dict]:
        """Forward the batch; return (loss, logits, named loss terms)."""
        logits = self.net(batch.x)
        loss, terms = self.loss(batch, logits)
        return loss, logits, terms

    def loss(self, batch: Batch, logits: Tensor) -> tuple[Tensor, dict]:
        ce = F.cross_entropy(logits, batch.y)
        return ce, {"ce": ce}

    @torch.no_grad()
    def after_step(self, batch: Batch, logits: Tensor) -> None:
        pass

    def on_epoch_end(self, epoch: int) -> None:
        pass

    def evaluators(self) -> dict[str, nn.Module]:
        """Extra models evaluated every epoch beside the student (EMA teachers, ensembles)."""
        return {}

    def bank_bytes(self) -> int:
        """Device memory of the method's per-sample banks (results.json and lstsd-bench report it)."""
        return 0

    def state_dict(self) -> dict:
        """The method's state, the same on every process (banks, snapshots, EMA teachers)."""
        return {}

    def rank_state(self) -> dict:
        """State that differs between processes (DLB's previous batch); checkpointed for each rank."""
        return {}

    def load_rank_state(self, state: dict) -> None:
        pass

    def load_state_dict(self, state: dict) -> None:
        pass
