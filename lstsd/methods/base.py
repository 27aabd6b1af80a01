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

The order every driver keeps, checked for both (:func:`guarded`: no device work): ``on_epoch_start(e)`` with
0 <= e < ``epochs``, each epoch once and going forward; per step ``compute_loss`` then ``after_optimizer_step``
(one's own loop; the trainer's ``training_step`` and ``after_step`` instead); ``on_epoch_end(e)`` of the epoch
started. ``load_state_dict`` puts the method where the state was taken, so the next ``on_epoch_start`` may start
any epoch (a resume, or a roll-back after a failure); an epoch open at that moment stays open (the trainer resumes
inside one: ``on_epoch_start``, ``load_state_dict``, the rest of its steps, ``on_epoch_end``). ``load_rank_state``
refuses a state that is not of the form ``rank_state()`` returns. Non-finite numbers never reach a bank:
:meth:`Method.compute_loss` refuses non-finite logits within the read-back it already makes, before anything is
recorded, and a bank keeps its earlier row for any non-finite row written to it
(:meth:`~lstsd.methods.banks.SampleBank.write`, on the device), which one's own loop hears of at its next
``compute_loss`` or ``on_epoch_end``.

What the results record and ``lstsd-bench`` report about a method, it declares here, the same way for every
method: ``bank_bytes()``, ``teacher_dir`` (the run its teacher came from), ``minigen_ends`` (the epochs its
mini-generations end at), ``teacher_forwards`` and ``images_per_step`` (its inherent extra work per step).
"""
from __future__ import annotations

import contextlib
import functools
import numbers
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstsd.data.types import Batch, DataInfo, TrainingSet
from lstsd.errors import ConfigError
from lstsd.methods.banks import SampleBank
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
    teacher_record: Optional[dict] = None  # that run's results.json, read with the weights
    minigen_ends: Optional[list[int]] = None  # epochs at which mini-generations end (snapshots)
    teacher_forwards = 0  # forward passes of the student's architecture a step adds (lstsd-bench's inherent cost)
    images_per_step = 1  # images a step trains on per new image (lstsd-bench)
    steps_after = False  # whether after_step does anything (the trainer calls it only then); set per subclass

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.steps_after = cls.after_step is not Method.after_step
        for name in GUARDED:  # a subclass's own hooks get the order checks (once per call: see guarded)
            if name in cls.__dict__:
                setattr(cls, name, guarded(name, cls.__dict__[name]))

    def __init__(self, cfg, ctx: RunContext):
        self.cfg, self.ctx, self.model = cfg, ctx, ctx.model
        self.net = ctx.net if ctx.net is not None else ctx.model  # training forwards (gradients synchronised)
        self.epoch = 0
        self.started = False  # on_epoch_start has run (compute_loss refuses to run before it)
        self.pending: Optional[tuple[Batch, Tensor]] = None  # compute_loss's step, awaiting after_optimizer_step
        self.terms: dict[str, Tensor] = {}  # the named loss terms of the last compute_loss
        # the order of the calls (guarded): the epoch between on_epoch_start and on_epoch_end, the last epoch started
        # (None: any may start next, as after load_state_dict), steps done in the epoch, and whether they came
        # through compute_loss (one's own loop: the banks' refused rows are reported, at on_epoch_end too)
        self.open_epoch: Optional[int] = None
        self.last_started: Optional[int] = None
        self.steps_done = 0
        self.own_loop = False
        self.in_hook = False  # inside a guarded hook: a subclass's super() call is not checked again
        self.bank_list: Optional[list[SampleBank]] = None  # the method's per-sample banks, found at the first step

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

        Raises ``RuntimeError`` when called out of order (or when the banks refused non-finite rows of the last
        :meth:`after_optimizer_step`), ``TypeError`` for a non-integer ``index`` or ``targets`` and ``ValueError``
        for shapes, class counts, ids out of range or non-finite logits (all checked with one device-to-host read
        per call), each before anything is recorded."""
        self.check_loss_order()
        if inputs is None and "inputs" in self.requires(self.cfg):
            raise ValueError(f"method {self.name}: compute_loss() needs inputs= (the batch's inputs: its teacher "
                             "runs on them)")
        banks = self.banks_found()
        finite, *refused = check_step(logits, targets, index, self.ctx.info.num_train, self.ctx.info.num_classes,
                                      self.name, [b.refused for b in banks])
        if any(refused):
            for bank in banks:
                bank.clear_refused()
            raise RuntimeError(refused_rows_error(self.name, "compute_loss()", self.epoch, self.steps_done))
        if not finite:
            raise ValueError(non_finite_logits_error(self.name, logits, self.epoch, self.steps_done))
        batch = Batch(inputs, targets, index.to(self.ctx.device, torch.long))
        loss, self.terms = self.loss(batch, logits)
        self.pending, self.own_loop = (batch, logits), True
        return loss

    def check_loss_order(self) -> None:
        """compute_loss is called inside an epoch, once per step."""
        if not self.started:
            raise RuntimeError(f"method {self.name}: compute_loss() before the first on_epoch_start(epoch): call "
                               "on_epoch_start(epoch) at the start of every epoch (0, 1, ...), then compute_loss()")
        if self.open_epoch is None:
            raise RuntimeError(f"method {self.name}: compute_loss() after on_epoch_end({self.epoch}), outside an "
                               "epoch: it runs between on_epoch_start(epoch) and on_epoch_end(epoch); next: "
                               f"{next_epoch(self.epoch, self.ctx.epochs)}")
        if self.pending is not None:
            raise RuntimeError(f"method {self.name}: compute_loss() twice without after_optimizer_step(): call "
                               "after_optimizer_step() once after each optimizer.step()")

    def banks_found(self) -> list[SampleBank]:
        """The method's per-sample banks (attributes, or dicts of them), found once."""
        if self.bank_list is None:
            values = [v for a in vars(self).values() for v in (a.values() if isinstance(a, dict) else (a,))]
            self.bank_list = [v for v in values if isinstance(v, SampleBank)]
        return self.bank_list

    def banks_refused(self) -> bool:
        """Whether a bank kept a non-finite row out since its flag was cleared (one device-to-host read)."""
        flags = [b.refused for b in self.banks_found()]
        return bool(flags) and bool(torch.stack([f.to(flags[0].device) for f in flags]).any())

    def after_optimizer_step(self) -> None:
        """The step's bookkeeping (bank writes, EMA update, the last batch) after ``optimizer.step()`` of the step
        whose loss :meth:`compute_loss` gave, without gradients. A bank keeps its earlier row for a non-finite row
        (a model whose weights became non-finite, a logit beyond a float16 bank's range); the next
        :meth:`compute_loss` or :meth:`on_epoch_end` raises ``RuntimeError`` for it (no read-back here)."""
        if self.pending is None:
            raise RuntimeError(f"method {self.name}: after_optimizer_step() without a compute_loss() before it: "
                               "call compute_loss() once per step, then after_optimizer_step() after the step")
        (batch, logits), self.pending = self.pending, None
        with torch.no_grad():
            self.after_step(batch, logits.detach())
        self.steps_done += 1

    # ------------------------------------------------------------------------------ the order of the hooks
    def before_on_epoch_start(self, epoch: int) -> None:
        where = f"method {self.name}: on_epoch_start({epoch!r})"
        check_epoch(where, epoch, self.ctx.epochs)
        if self.last_started is None:  # the first epoch, or the first after load_state_dict: any
            return
        if self.open_epoch is not None:
            again = "twice" if epoch == self.open_epoch else f"while epoch {self.open_epoch} is open"
            raise RuntimeError(f"{where} {again}: call on_epoch_end({self.open_epoch}) after the last step of epoch "
                               f"{self.open_epoch}, then {next_epoch(self.open_epoch, self.ctx.epochs)}")
        if epoch <= self.last_started:
            raise RuntimeError(f"{where} after epoch {self.last_started} has run: epochs go forward, each once; "
                               f"next: {next_epoch(self.last_started, self.ctx.epochs)}; to go back, "
                               "load_state_dict() a state saved then")

    def after_on_epoch_start(self, epoch: int) -> None:
        self.open_epoch = self.last_started = int(epoch)
        self.steps_done, self.own_loop = 0, False

    def before_on_epoch_end(self, epoch: int) -> None:
        where = f"method {self.name}: on_epoch_end({epoch!r})"
        check_epoch(where, epoch, self.ctx.epochs)
        if self.open_epoch is None:
            last = f"epoch {self.epoch} has ended" if self.started else "no epoch has started"
            raise RuntimeError(f"{where} without a matching on_epoch_start({epoch}) ({last}): call "
                               "on_epoch_start(epoch) before an epoch's first step and on_epoch_end(epoch) after its "
                               "last")
        if epoch != self.open_epoch:
            raise RuntimeError(f"{where} while epoch {self.open_epoch} is open: on_epoch_end takes the epoch of "
                               f"the matching on_epoch_start({self.open_epoch})")
        if self.own_loop and self.pending is not None:
            raise RuntimeError(f"{where} with the last compute_loss() awaiting after_optimizer_step(): call "
                               "after_optimizer_step() after the step's optimizer.step(), then on_epoch_end()")
        if self.own_loop and self.banks_refused():  # the epoch's one read-back, before the epoch's end updates
            for bank in self.banks_found():
                bank.clear_refused()
            raise RuntimeError(refused_rows_error(self.name, f"on_epoch_end({epoch})", epoch, self.steps_done))

    def after_on_epoch_end(self, epoch: int) -> None:
        self.open_epoch = None

    def before_load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise ConfigError(f"method {self.name}: load_state_dict(state): state is a {type(state).__name__}, "
                              "allowed the dict that state_dict() returns")

    def after_load_state_dict(self, state: dict) -> None:
        """The method is where the state was taken: any epoch may start next; a step of one's own loop in flight
        (compute_loss without after_optimizer_step yet) is dropped."""
        self.last_started = None
        if self.own_loop:
            self.pending = None

    def before_load_rank_state(self, state: dict) -> None:
        check_rank_state(f"method {self.name}: load_rank_state(state)", state, self.rank_state(),
                         self.ctx.info.num_train, self.ctx.info.num_classes)

    def after_load_rank_state(self, state: dict) -> None:
        pass


GUARDED = ("on_epoch_start", "on_epoch_end", "load_state_dict", "load_rank_state")


def guarded(name: str, hook: Callable) -> Callable:
    """``hook`` (one of :data:`GUARDED`) between the method's ``before_<name>`` check and ``after_<name>`` update of
    the call order. Only the outermost call is checked: a subclass's ``super().<name>()``, or a patched hook that
    calls the original, goes straight through. The checks touch no device memory (but ``on_epoch_end`` in one's
    own loop: one read of the banks' refused rows per epoch)."""
    if getattr(hook, "guarded", False):
        return hook

    @functools.wraps(hook)
    def call(self, *args, **kwargs):
        if self.__dict__.get("in_hook"):
            return hook(self, *args, **kwargs)
        getattr(self, f"before_{name}")(*args, **kwargs)
        self.in_hook = True
        try:
            result = hook(self, *args, **kwargs)
        finally:
            self.in_hook = False
        getattr(self, f"after_{name}")(*args, **kwargs)
        return result

    call.guarded = True
    return call


for _name in GUARDED:
    setattr(Method, _name, guarded(_name, getattr(Method, _name)))
del _name


def next_epoch(epoch: int, epochs: int) -> str:
    """What starts after ``epoch``: ``on_epoch_start(epoch + 1)``, or nothing after the last epoch."""
    return f"call on_epoch_start({epoch + 1})" if epoch + 1 < epochs else \
        f"end training (epoch {epoch} is the last of the epochs={epochs} the method was built for)"


def check_epoch(where: str, epoch: Any, epochs: int) -> None:
    """An epoch is an integer in [0, epochs)."""
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral):
        raise ConfigError(f"{where} is invalid: the epoch is a {type(epoch).__name__}, allowed an integer in "
                          f"[0, {epochs})")
    if not 0 <= epoch < epochs:
        raise ConfigError(f"{where} is invalid: allowed an epoch in [0, {epochs}): the method was built for "
                          f"epochs={epochs} (0-based: the first epoch is 0, the last {epochs - 1})")


def non_finite_logits_error(name: str, logits: Tensor, epoch: int, step: int) -> str:
    """The message of non-finite logits (counted here: only on the way to the error)."""
    values = logits.detach()
    nan, inf = int(values.isnan().sum()), int(values.isinf().sum())
    return (f"method {name}: compute_loss() got non-finite logits at step {step} of epoch {epoch} (0-based; "
            f"{nan} NaN and {inf} infinite of {values.numel()} values): refused before anything was recorded, the "
            "banks are as they were. Skip the step (no optimizer.step() and no after_optimizer_step()), or "
            "load_state_dict() an earlier state and lower the learning rate")


def refused_rows_error(name: str, call: str, epoch: int, steps: int) -> str:
    """The message of bank rows refused for being non-finite, found at ``call``."""
    return (f"method {name}: {call} found non-finite rows (NaN or inf) that after_optimizer_step() wrote to the "
            f"banks in epoch {epoch} ({steps} step(s) done): refused, the banks kept their earlier "
            "rows. The model's weights or re-computed predictions are non-finite, or a logit exceeds a float16 "
            "bank's range: load_state_dict() an earlier state and lower the learning rate, or use "
            "bank_dtype='float32'")


RANK_STATE_FORMS = "None, a random generator's state or a batch (a tuple of tensors)"


def check_rank_state(where: str, state: Any, expected: dict, num_samples: int, num_classes: int) -> None:
    """``state`` has the form of ``expected`` (the method's own :meth:`Method.rank_state`): a dict of the same keys
    (``{}``: nothing to restore, a rank the checkpoint did not have), each value None, a random generator's state
    (a uint8 vector: :meth:`torch.Generator.get_state`) or a batch (a tuple of tensors of one length: sample ids
    in ``[0, num_samples)``, rows over the ``num_classes`` classes), of the kind and shapes of ``expected``'s."""
    if not isinstance(state, dict):
        what = "None" if state is None else f"a {type(state).__name__}"
        raise ConfigError(f"{where}: state is {what}, allowed the dict that rank_state() returns (keys: "
                          f"{', '.join(map(repr, expected)) or 'none'})")
    if not state:
        return
    missing, unexpected = [k for k in expected if k not in state], [k for k in state if k not in expected]
    if missing or unexpected:
        wrong = "; ".join(f"{what} key(s) {', '.join(map(repr, keys))}" for what, keys in
                          (("missing", missing), ("unexpected", unexpected)) if keys)
        raise ConfigError(f"{where}: {wrong}: allowed the keys rank_state() returns "
                          f"({', '.join(map(repr, expected)) or 'none'}), or {{}}")
    for key, value in state.items():
        check_rank_value(f"{where}: {key!r}", value, expected[key], num_samples, num_classes)


def rank_kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, Tensor):
        return "random generator's state" if value.dtype == torch.uint8 and value.dim() == 1 else "tensor"
    if isinstance(value, (tuple, list)) and value and all(isinstance(t, Tensor) for t in value):
        return "batch"
    return type(value).__name__


def check_rank_value(where: str, value: Any, expected: Any, num_samples: int, num_classes: int) -> None:
    """One value of :func:`check_rank_state`."""
    kind, want = rank_kind(value), rank_kind(expected)
    if kind == "None":
        return
    if kind not in ("random generator's state", "batch"):
        raise ConfigError(f"{where} is of type {kind}, allowed {RANK_STATE_FORMS}: what rank_state() returns")
    if want != "None" and kind != want:
        raise ConfigError(f"{where} is a {kind}, allowed None or a {want} (as this method's rank_state() holds)")
    if kind == "random generator's state":
        size = torch.Generator().get_state().numel()
        if value.numel() != size:
            raise ConfigError(f"{where} is a vector of {value.numel()} bytes, allowed a random generator's state "
                              f"(torch.Generator().get_state(): {size} bytes)")
        return
    check_rank_batch(where, value, expected if want == "batch" else None, num_samples, num_classes)


def check_rank_batch(where: str, value: tuple, expected: Optional[tuple], num_samples: int, num_classes: int) -> None:
    """A batch of :func:`check_rank_state`: tensors of one length, sample ids in range, rows of ``num_classes``."""
    shapes = [tuple(t.shape) for t in value]
    if any(not s for s in shapes) or len({s[0] for s in shapes}) != 1:
        raise ConfigError(f"{where} holds tensors of shapes {shapes}, allowed a batch: one row per sample in each")
    if expected is not None and [(t.dtype, t.shape[1:]) for t in value] != [(t.dtype, t.shape[1:]) for t in expected]:
        raise ConfigError(f"{where} holds tensors of shapes {shapes} and dtypes {[t.dtype for t in value]}, allowed "
                          f"those of this method's rank_state(): {[tuple(t.shape) for t in expected]} and "
                          f"{[t.dtype for t in expected]} (any batch size)")
    for t in value:
        if t.dim() == 1 and t.dtype in INTEGER_DTYPES and len(t) and not (0 <= int(t.min()) <= int(t.max()) <
                                                                         num_samples):
            raise ConfigError(f"{where}: sample ids from {int(t.min())} to {int(t.max())}, allowed ids in "
                              f"[0, {num_samples})")
        if t.dim() == 2 and t.shape[1] != num_classes:
            raise ConfigError(f"{where} holds rows of shape {tuple(t.shape)}, allowed {num_classes} columns (one "
                              "per class)")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ConfigError(f"{where} holds non-finite values (NaN or inf): allowed finite rows")


INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def check_step(logits: Tensor, targets: Tensor, index: Tensor, num_samples: int, num_classes: int,
               name: str, flags: list[Tensor] = ()) -> list[int]:
    """The checks of :meth:`Method.compute_loss`: shapes and dtypes, then the ranges of ``index`` and
    ``targets``, whether every logit is finite and the values of ``flags`` (0-d bool or integer tensors) in the
    one read-back; returns [1 if the logits are finite else 0, *flags as integers]."""
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
    device = logits.device
    read = [*index.long().aminmax(), *targets.long().aminmax(), torch.isfinite(logits.detach()).all(), *flags]
    id_min, id_max, y_min, y_max, *values = torch.stack([t.to(device, torch.long) for t in read]).tolist()
    if id_min < 0 or id_max >= num_samples:
        raise ValueError(f"{where}: sample ids from {id_min} to {id_max}, expected ids in [0, {num_samples}) "
                         f"(num_samples={num_samples}: each sample's index in the training set)")
    if y_min < 0 or y_max >= num_classes:
        raise ValueError(f"{where}: targets from {y_min} to {y_max}, expected classes in [0, {num_classes})")
    return values
