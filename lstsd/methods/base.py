"""The method interface: everything a training policy adds to plain supervised training.

The trainer calls, per epoch, ``on_epoch_start``; per step ``training_step`` (forward and loss), backward and
the optimiser step, then ``after_step`` (bank writes, EMA updates, all without gradients); ``on_epoch_end``
(snapshots); evaluates the student and every model of ``evaluators()``; and checkpoints ``state_dict()``.
A method whose mini-generations restart the learning rate sets ``lr_cycles`` (their lengths in epochs).

A training loop of one's own drives the same object (built from plain arguments by :func:`lstsd.method`)
through :meth:`Method.compute_loss` (logits, targets and sample ids instead of a
:class:`~lstsd.data.types.Batch`) and :meth:`Method.after_optimizer_step` in place of the two per-step hooks,
and the same epoch, evaluation and state hooks. These two check their arguments and their order (a clear
exception instead of a silent wrong result); the trainer's hooks check nothing that costs a device-to-host sync.
A method states what it needs beyond logits, targets and sample ids in :meth:`Method.requires`.

What the results record and ``lstsd-bench`` report about a method, it declares here, the same way for every
method: ``bank_bytes()``, ``teacher_dir`` (the run its teacher came from), ``minigen_ends`` (the epochs its
mini-generations end at), ``teacher_forwards`` and ``images_per_step`` (its inherent extra work per step).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstsd.data.types import Batch, DataInfo, TrainingSet
from lstsd.methods.teacher import Teacher


@dataclass(kw_only=True)
class RunContext:
    """What a method is built with (by keyword)."""
    model: Optional[nn.Module]  # the network trained (None: a method that never reads it, built by lstsd.method)
    info: DataInfo
    device: torch.device
    epochs: int
    steps_per_epoch: Optional[int] = None  # None: not known (a loop of one's own)
    # the training split: re-read by sample id (``get``), its size and whether re-reads are augmented afresh
    train: Optional[TrainingSet] = None
    seed: int = 0
    net: Optional[nn.Module] = None  # the training forward: the model's DDP wrapper with several processes
    teacher: Optional[Teacher] = None  # the teacher the run resolved for a method that distils from one
    autocast: Callable[[], ContextManager] = contextlib.nullcontext  # the training precision's forward context
    eval_batch_size: int = 1000  # batch size of a pass over the whole training set (precomputed teacher outputs)


class Method:
    """A training policy: plain supervised training (cross-entropy) that subclasses extend through the hooks
    below. The trainer (:class:`lstsd.training.trainer.Trainer`) and one's own loop (:func:`lstsd.method`, driven by
    :meth:`compute_loss` and :meth:`after_optimizer_step`) call the same hooks of the same object."""
    name = "base"
    lr_cycles: Optional[list[int]] = None  # epochs per learning-rate cycle; None: one schedule over the run
    teacher_dir: Optional[str] = None  # the finished run the teacher was loaded from (KD, LW-KD)
    minigen_ends: Optional[list[int]] = None  # epochs at which mini-generations end (snapshots)
    teacher_forwards = 0  # forward passes of the student's architecture a step adds (lstsd-bench's inherent cost)
    images_per_step = 1  # images a step trains on per new image (lstsd-bench)
    steps_after = False  # whether after_step does anything (the trainer calls it only then); set per subclass

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.steps_after = cls.after_step is not Method.after_step

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
