"""The method interface: everything a training policy adds to plain supervised training.

The trainer calls, per epoch, ``on_epoch_start``; per step ``training_step`` (forward and loss), backward and
the optimiser step, then ``after_step`` (bank writes, EMA updates, all without gradients); ``on_epoch_end``
(snapshots); evaluates the student and every model of ``evaluators()``; and checkpoints ``state_dict()``.
A method whose mini-generations restart the learning rate sets ``lr_cycles`` (their lengths in epochs).

A training loop of one's own drives the same object (built from plain arguments by :func:`lstsd.method`)
through :meth:`Method.compute_loss` (logits, targets and sample ids instead of a
:class:`~lstsd.data.loader.Batch`) and :meth:`Method.after_optimizer_step` in place of the two per-step hooks,
and the same epoch, evaluation and state hooks. These two check their arguments and their order (a clear
exception instead of a silent wrong result); the trainer's hooks check nothing that costs a device-to-host sync.
A method states what it needs beyond logits, targets and sample ids in :meth:`Method.requires`.

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
    model: Optional[nn.Module]  # the network trained (None: a method that never reads it, built by lstsd.method)
    info: DataInfo
    device: torch.device
    epochs: int
    steps_per_epoch: Optional[int] = None  # None: not known (a loop of one's own)
    # the training loader, or an lstsd.IndexedDataset: ``get(index, generator)`` re-reads samples as a Batch,
    # ``num_samples``, ``augment`` (whether a re-read sample is augmented afresh), ``rank``
    train: Optional[object] = None
    seed: int = 0
    overrides: tuple = ()  # the run's command-line overrides (teachers trained on the fly start from them)
    config: Optional[object] = None  # the run's validated Config
    net: Optional[nn.Module] = None  # the training forward: the model's DDP wrapper with several processes
    runner: Optional[TeacherRunner] = None  # how teachers are composed and trained (given by lstsd.run)
    teacher: Optional[nn.Module] = None  # a given teacher network (KD-style methods), instead of a teacher run


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
    """A training policy: plain supervised training (cross-entropy) that subclasses extend through the hooks
    below. The trainer (:class:`lstsd.engine.Trainer`) and one's own loop (:func:`lstsd.method`, driven by
    :meth:`compute_loss` and :meth:`after_optimizer_step`) call the same hooks of the same object."""
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
        self.started = False  # on_epoch_start has run (compute_loss refuses to run before it)
        self.pending: Optional[tuple[Batch, Tensor]] = None  # compute_loss's step, awaiting after_optimizer_step
        self.terms: dict[str, Tensor] = {}  # the named loss terms of the last compute_loss

    @classmethod
    def requires(cls, cfg) -> frozenset[str]:
        """What the method needs, with the settings ``cfg``, beyond logits, targets and sample ids when a loop of
        one's own drives it (:func:`lstsd.method` and :meth:`compute_loss` refuse to go on without it):
        ``"model"`` (the network trained: snapshots, EMA teachers and re-computed predictions are taken from it),
        ``"inputs"`` (a teacher runs on the batch's inputs) and ``"dataset"`` (samples are re-read by index). A
        setting that only the trainer can run raises :class:`~lstsd.errors.ConfigError` naming its key."""
        return frozenset()

    def on_epoch_start(self, epoch: int) -> None:
        """Before the first step of ``epoch`` (0-based): per-epoch state (ramp-ups, which teachers apply)."""
        self.epoch = epoch
        self.started = True

    def training_step(self, batch: Batch) -> tuple[Tensor, Tensor, dict]:
        """Forward the batch; return (loss, logits, named loss terms)."""
        logits = self.net(batch.x)
        loss, terms = self.loss(batch, logits)
        return loss, logits, terms

    def loss(self, batch: Batch, logits: Tensor) -> tuple[Tensor, dict]:
        """The loss of the student's ``logits`` for ``batch`` and its named terms (cross-entropy here)."""
        ce = F.cross_entropy(logits, batch.y)
        return ce, {"ce": ce}

    @torch.no_grad()
    def after_step(self, batch: Batch, logits: Tensor) -> None:
        """After the optimiser step, without gradients: bank writes, EMA updates (nothing here)."""

    def on_epoch_end(self, epoch: int) -> None:
        """After the last step of ``epoch``: snapshots at the end of a mini-generation (nothing here)."""

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
        """Put back this process's :meth:`rank_state`."""

    def load_state_dict(self, state: dict) -> None:
        """Put back the :meth:`state_dict` of a checkpoint."""

    # ----------------------------------------------------------------------------- a training loop of one's own
    def compute_loss(self, logits: Tensor, targets: Tensor, index: Tensor, inputs: Optional[Tensor] = None) -> Tensor:
        """The method's loss for one training step of a loop of one's own: ``logits`` (batch x classes, the
        network's output on ``inputs``, with gradients), ``targets`` (the labels) and ``index`` (each sample's id
        in ``[0, num_samples)``: its row in the per-sample banks), both integer tensors of the batch's length;
        ``inputs`` where :meth:`requires` names them (a teacher runs on them). The named terms go to
        :attr:`terms`. Call it once per step, between :meth:`on_epoch_start` and :meth:`on_epoch_end`, and
        :meth:`after_optimizer_step` after the step's ``optimizer.step()``.

        Raises ``RuntimeError`` when called out of order, ``TypeError`` for a non-integer ``index`` or
        ``targets`` and ``ValueError`` for shapes, class counts or ids out of range (checked with one
        device-to-host read per call)."""
        if not self.started:
            raise RuntimeError(f"method {self.name}: compute_loss() before the first on_epoch_start(epoch): call "
                               "on_epoch_start(epoch) at the start of every epoch (0, 1, ...), then compute_loss()")
        if self.pending is not None:
            raise RuntimeError(f"method {self.name}: compute_loss() twice without after_optimizer_step(): call "
                               "after_optimizer_step() once after each optimizer.step()")
        if inputs is None and "inputs" in self.requires(self.cfg):
            raise ValueError(f"method {self.name}: compute_loss() needs inputs= (the batch's inputs: its teacher "
                             "runs on them)")
        index = check_step(logits, targets, index, self.ctx.info.num_train, self.ctx.info.num_classes, self.name)
        batch = Batch(inputs, targets, index.to(self.ctx.device, torch.long))
        loss, self.terms = self.loss(batch, logits)
        self.pending = (batch, logits)
        return loss

    def after_optimizer_step(self) -> None:
        """The step's bookkeeping (bank writes, EMA update, the last batch) after ``optimizer.step()`` of the step
        whose loss :meth:`compute_loss` gave, without gradients."""
        if self.pending is None:
            raise RuntimeError(f"method {self.name}: after_optimizer_step() without a compute_loss() before it: "
                               "call compute_loss() once per step, then after_optimizer_step() after the step")
        (batch, logits), self.pending = self.pending, None
        with torch.no_grad():
            self.after_step(batch, logits.detach())


INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def check_step(logits: Tensor, targets: Tensor, index: Tensor, num_samples: int, num_classes: int,
               name: str) -> Tensor:
    """The checks of :meth:`Method.compute_loss`: shapes and dtypes, then the ranges of ``index`` and
    ``targets`` in one read-back; returns ``index``."""
    where = f"method {name}: compute_loss()"
    for key, t in (("logits", logits), ("targets", targets), ("index", index)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {key} is a {type(t).__name__}, expected a tensor")
    if logits.dim() != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"{where}: logits of shape {tuple(logits.shape)}, expected (batch, {num_classes}): the "
                         f"method was built with num_classes={num_classes}")
    for key, t in (("targets", targets), ("index", index)):
        if t.dtype not in INTEGER_DTYPES:
            raise TypeError(f"{where}: {key} of dtype {t.dtype}, expected an integer tensor (torch.int64)")
        if tuple(t.shape) != (len(logits),):
            raise ValueError(f"{where}: {key} of shape {tuple(t.shape)}, expected ({len(logits)},): one per row of "
                             "the logits")
    if not len(logits):
        raise ValueError(f"{where}: an empty batch")
    (ids, labels) = torch.stack([torch.stack(t.long().aminmax()).to(logits.device) for t in (index, targets)]).tolist()
    if ids[0] < 0 or ids[1] >= num_samples:
        raise ValueError(f"{where}: sample ids from {ids[0]} to {ids[1]}, expected ids in [0, {num_samples}) "
                         f"(num_samples={num_samples}: each sample's index in the training set)")
    if labels[0] < 0 or labels[1] >= num_classes:
        raise ValueError(f"{where}: targets from {labels[0]} to {labels[1]}, expected classes in "
                         f"[0, {num_classes})")
    return index
