"""The training loop: epochs of steps, evaluation, metrics.jsonl, checkpoints, results.json.

It knows nothing of any method: a method adds its behaviour through the hooks of
:class:`lstsd.methods.base.Method`. The trainer owns its state (:meth:`Trainer.state_dict`,
:meth:`Trainer.load_state_dict`: what a checkpoint holds); the parts with a job of their own sit beside it: the
step statistics (:mod:`.step_stats`), the checkpoint files (:mod:`.checkpoint`), the stop-signal guard
(:mod:`.signals`), evaluation (:mod:`.evaluation`) and the run folder (:mod:`lstsd.training.rundir`).
:class:`Callback` is the one seam into a fit (``run(cfg, callbacks=[...])``).
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import random
import time
from pathlib import Path
from typing import Callable, ContextManager, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from lstsd import distributed
from lstsd.config.identity import fingerprint
from lstsd.training import checkpoint, console
from lstsd.training.evaluation import evaluate
from lstsd.training.provenance import provenance
from lstsd.training.rundir import RunDir, results_record
from lstsd.training.schedules import Schedule
from lstsd.training.signals import StopGuard
from lstsd.training.step_stats import StepStats, non_finite_error
from lstsd.training.trackers import NoTracker, Tracker

log = logging.getLogger("lstsd.training")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device_type: str, precision: str) -> Callable[[], ContextManager]:
    """The context of a forward pass in ``precision`` (``trainer.precision``): autocast to bf16 or fp16 with
    float32 parameters, optimiser state and loss reduction; nothing to enter for fp32."""
    dtype = PRECISIONS[precision]
    return (lambda: torch.autocast(device_type, dtype=dtype)) if dtype else contextlib.nullcontext


class Callback:
    """A seam into a fit: each hook gets the trainer (the default does nothing). An exception a hook raises ends
    the fit as that exception; what was checkpointed before stays."""

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        """Before epoch ``epoch`` (0-based) trains, after the checkpoints of the epochs before it."""

    def on_step_end(self, trainer: "Trainer") -> None:
        """After each optimisation step (``trainer.global_step`` counts it)."""

    def on_checkpoint(self, trainer: "Trainer") -> None:
        """After ``last.pt`` was written (``trainer.start_epoch``: the epochs it holds)."""

    def on_stop(self, trainer: "Trainer", where: str) -> None:
        """After a stop signal's checkpoint, before the signal goes on to its previous handler (which ends the
        process, or requeues the job)."""


class Trainer:
    def __init__(self, cfg, model, method, data, optimizer, scheduler, run_dir: Path, identity: Optional[dict] = None,
                 tracker: Optional[Tracker] = None, callbacks: Sequence[Callback] = ()):
        """``identity``: the run's identity (:func:`lstsd.config.identity.run_identity`), saved in checkpoints
        and results; ``tracker``: where epochs are reported besides the files (rank 0's)."""
        self.cfg, self.model, self.method, self.data = cfg, model, method, data
        self.optimizer, self.scheduler, self.tracker = optimizer, scheduler, tracker or NoTracker()
        self.files, self.epochs, self.identity = RunDir(run_dir), cfg.trainer.epochs, identity
        self.trained_as: list[int] = []  # earlier lengths of a run resumed with another one (force_resume)
        self.callbacks = list(callbacks)
        self.step_callbacks = [c for c in self.callbacks if type(c).on_step_end is not Callback.on_step_end]
        self.start_epoch = self.global_step = 0
        self.in_epoch = None  # the position inside an epoch of a checkpoint taken there (on a signal)
        self.method_state = None  # the method's state of such a checkpoint, applied after on_epoch_start
        self.history: list[dict] = []
        self.train_seconds = self.wall_seconds = 0.0
        self.provenance = provenance(next(model.parameters()).device)  # where this launch came from
        self.device = device = next(model.parameters()).device
        self.guard = StopGuard(device)
        self.autocast = autocast(device.type, cfg.trainer.precision)  # the method's teachers' forwards included
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.trainer.precision == "fp16")
        # per step, only what applies: no call (nor autocast context) for a method without an after_step of its
        # own, no buffer broadcast without a process group (set up before the trainer is built)
        self.after_step = method.after_step if method.steps_after else None
        self.parallel = distributed.active()
        self.steps_per_epoch = min(len(data.train), cfg.trainer.limit_batches or len(data.train))

    def step(self, batch, stats: StepStats) -> None:
        """One optimisation step; its statistics go to ``stats`` on the device (nothing is read back, a
        non-finite loss included: it is found at the end of the epoch, which is then not checkpointed)."""
        self.scheduler.step_update(self.global_step)
        with self.autocast():
            loss, logits, terms = self.method.training_step(batch)
        self.optimizer.zero_grad(set_to_none=True)
        clip = self.cfg.trainer.clip_grad_norm
        if self.scaler.is_enabled():  # fp16: the scaled loss, and an update skipped on non-finite gradients
            self.scaler.scale(loss).backward()
            if clip is not None:
                self.scaler.unscale_(self.optimizer)  # the norm of the true gradients
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
        if self.parallel:  # batch-norm statistics: rank 0's everywhere, before snapshots or EMA use them
            distributed.broadcast_buffers(self.model)
        if self.after_step is not None:
            with self.autocast():
                self.after_step(batch, logits)
        stats.record(loss, terms, logits, batch.y)
        self.global_step += 1
        for callback in self.step_callbacks:
            callback.on_step_end(self)

    def train_epoch(self, epoch: int) -> dict:
        self.model.train()
        self.method.on_epoch_start(epoch)
        start, lr = 0, None
        if self.in_epoch is not None:  # resumed inside this epoch
            self.method.load_state_dict(self.method_state[0])
            self.method.load_rank_state(self.method_state[1])
            start, lr = self.in_epoch["step"], self.in_epoch["lr"]
        stats = StepStats(self.device, self.global_step - start)
        if self.in_epoch is not None:  # each process goes on from its own rows of the steps done
            stats.load(self.in_epoch["stats"][distributed.rank()])
        batches = itertools.islice(self.data.train.epoch(epoch, start_step=start), self.steps_per_epoch - start)
        for i, batch in enumerate(batches, start=start):
            self.step(batch, stats)
            lr = self.optimizer.param_groups[0]["lr"] if lr is None else lr
            if self.guard.requested(self.global_step):
                totals, first_bad = stats.reduce()
                if first_bad >= 0:  # never checkpoint poisoned weights over the last good ones
                    raise non_finite_error(first_bad, epoch, totals, self.last_checkpoint())
                self.in_epoch = {"step": i + 1, "lr": lr, "stats": distributed.gather_objects(stats.state())}
                self.save_checkpoint()
                self.stop()
        self.in_epoch = None
        self.method.on_epoch_end(epoch)
        totals, first_bad = stats.reduce()
        count = totals.pop("count").item()
        means = {k: v.item() / count for k, v in totals.items()}  # the epoch's one read-back
        if first_bad >= 0:
            raise non_finite_error(first_bad, epoch, means, self.last_checkpoint())
        self.check_banks(epoch)
        return {"epoch": epoch + 1, "lr": lr, "train_loss": means.pop("loss"),
                "train_acc": 100.0 * means.pop("correct")} | means

    def evaluate_all(self, method_models: bool = True) -> dict:
        """The scores of the model on every evaluation split, and of the method's evaluated models (EMA teacher,
        snapshot ensemble) unless ``method_models`` is false."""
        row, models = {}, {"": self.model}
        if method_models:
            models |= {f"{k}_": m for k, m in self.method.evaluators().items()}
        for split, loader in self.data.evals.items():
            for prefix, model in models.items():
                scores = evaluate(model, loader, self.autocast, self.data.info.metrics(self.cfg.dataset.metrics),
                                  self.cfg.trainer.limit_batches)
                row |= {f"{prefix}{split}_{k}": v for k, v in scores.items()}
        return row

    def fit(self) -> dict:
        """Resume from ``last.pt`` where there is one, train the remaining epochs, write and return the results."""
        if distributed.broadcast(self.cfg.trainer.resume and self.files.checkpoint.exists()):  # rank 0's view
            self.resume(self.files.checkpoint)
        main = distributed.is_main()  # only rank 0 writes files and logs
        if main:
            self.files.write_metrics(self.history)
        bar = tqdm(total=self.epochs, initial=self.start_epoch, desc=self.method.cfg.label, dynamic_ncols=True,
                   disable=None if self.cfg.trainer.progress and main else True)  # None: on a terminal only
        console.bar_shown(not bar.disable)  # the bar shows the epochs: their lines stay off the console
        with self.guard, contextlib.ExitStack() as shown:
            shown.callback(console.bar_shown, False)
            for epoch in range(self.start_epoch, self.epochs):
                row = self.run_epoch(epoch, main)
                bar.update(1)
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", test_acc=f"{row['test_acc']:.2f}")
                log.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                         extra={console.EPOCH: True})
        bar.close()
        results = results_record(self.cfg, self.data.info, self.history, self.method,
                                 (self.train_seconds, self.wall_seconds), self.global_step)
        results |= {"world_size": distributed.world_size()} if distributed.active() else {}
        results |= {"fingerprint": fingerprint(self.identity)} if self.identity is not None else {}
        results |= {"trained_as_epochs": self.trained_as} if self.trained_as else {}
        results["provenance"] = self.provenance
        if main:
            self.files.write_results(results)
        return results

    def run_epoch(self, epoch: int, main: bool) -> dict:
        """Train and evaluate one epoch, record it (metrics.jsonl, the tracker, best.pt), checkpoint when due."""
        for callback in self.callbacks:
            callback.on_epoch_start(self, epoch)
        t0 = time.perf_counter()
        row = self.train_epoch(epoch)
        t1 = time.perf_counter()
        row |= self.evaluate_all()
        row["seconds"] = time.perf_counter() - t0
        self.train_seconds += t1 - t0
        self.wall_seconds += row["seconds"]
        self.history.append(row)
        if main:
            self.files.append_metrics(row)
            self.tracker.log_epoch(row)
        if self.cfg.trainer.save_best:
            checkpoint.save_best(self.history, self.cfg.dataset.headline, self.model.state_dict(), self.identity,
                                 self.files.best)
        self.start_epoch = epoch + 1
        stop = self.guard.requested(self.global_step, now=True)  # during the last steps or evaluation
        if stop or self.start_epoch % self.cfg.trainer.checkpoint_every == 0 or epoch + 1 == self.epochs:
            self.save_checkpoint()
        if stop:
            self.stop()
        return row

    def stop(self) -> None:
        """After a stop signal's checkpoint: the callbacks, then the signal to its previous handler."""
        where = self.position()
        for callback in self.callbacks:
            callback.on_stop(self, where)
        self.guard.stop(where)

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything the run needs to go on exactly (collective: with several processes every rank calls it):
        weights, optimiser, loss scale, the method's state (banks, snapshots, EMA teacher; per rank: DLB's last
        batch), every random generator, the history and the position (the epoch, and for a checkpoint taken
        inside an epoch the steps done in it and their statistics; the epoch's batch order and augmentation follow
        from (seed, epoch), so the position is enough), and the run's identity."""
        return {
            "epoch": self.start_epoch,
            "global_step": self.global_step,
            "in_epoch": self.in_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "method": self.method.state_dict(),
            "rank_states": distributed.gather_objects(self.method.rank_state()),
            "world_size": distributed.world_size(),
            "history": self.history,
            "rng_cpu": torch.get_rng_state(),
            "rng_python": random.getstate(),
            "rng_numpy": np.random.get_state(),
            # this process's device only: with several processes each rank restores its own GPU's stream
            "rng_cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
            "seconds": (self.train_seconds, self.wall_seconds),
            "config": self.identity,  # a relaunch of another configuration refuses this file
            "epochs": self.epochs,  # the length it was trained for, and its learning rates: a relaunch of
            "schedule": self.scheduler.spec(),  # another length resumes only where the rates so far agree
            "trained_as": self.trained_as,  # the lengths a forced resume left behind
            "provenance": self.provenance,
        }

    def load_state_dict(self, state: dict) -> None:
        """Put back a :meth:`state_dict` (a checkpoint taken inside an epoch needs the same number of processes)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("in_epoch") is not None and state["world_size"] != distributed.world_size():
            raise ValueError(f"it was taken inside an epoch by {state['world_size']} processes, not "
                             f"{distributed.world_size()}")
        rank = distributed.rank()
        rank_state = state["rank_states"][rank] if len(state["rank_states"]) > rank else {}
        self.method.load_state_dict(state["method"])
        self.method.load_rank_state(rank_state)
        if state.get("in_epoch") is not None:  # inside an epoch: applied again after on_epoch_start, which
            self.method_state = (state["method"], rank_state)  # sees the saved state but resets per-epoch parts
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch, self.global_step = state["epoch"], state["global_step"]
        self.in_epoch = state.get("in_epoch")
        self.history = state["history"]
        self.train_seconds, self.wall_seconds = state["seconds"]
        torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"])
        random.setstate(state["rng_python"])
        np.random.set_state(state["rng_numpy"])

    def resume(self, path: Path) -> None:
        """Load ``path``; any mismatch is a :class:`~lstsd.errors.TrainingError` saying how to start afresh."""
        from lstsd.errors import TrainingError

        state = checkpoint.load(path)  # its length was checked before the run began (check_relaunch)
        try:
            self.load_state_dict(state)
        except Exception as e:  # noqa: BLE001 - any failure here means the file does not fit this run
            raise TrainingError(f"cannot resume from {path}: {type(e).__name__}: {e} {checkpoint.START_AFRESH}") from e
        log.info(f"resumed from {path} after {self.position()}")

    def check_banks(self, epoch: int) -> None:
        """A bank keeps a sample's earlier row for a non-finite one (a float16 bank overflowing while the loss
        stays finite): the run ends before the epoch's checkpoint instead of training on stale rows (one read an
        epoch)."""
        from lstsd.errors import TrainingError

        if self.method.banks_refused():
            raise TrainingError(f"method {self.method.name}: non-finite predictions (NaN or inf, or beyond a float16 "
                                f"bank's range) were kept out of its per-sample banks in epoch {epoch + 1}; "
                                f"method.bank_dtype=float32 keeps larger logits; {self.last_checkpoint() or 'no'} "
                                "checkpoint holds the last good state")

    def check_relaunch(self) -> None:
        """Before anything is logged or written: the checkpoint a relaunch would resume fits this length
        (:meth:`check_length`, on the memory-mapped file)."""
        if self.cfg.trainer.resume and self.files.checkpoint.exists():
            self.check_length(checkpoint.peek(self.files.checkpoint), self.files.checkpoint)

    def check_length(self, state: dict, path: Path) -> None:
        """A checkpoint resumes into a run of another ``trainer.epochs`` only where that is the same run so far: not
        past its end, and with the learning rates of every update so far unchanged (a cosine or a step schedule
        has the shape of its length); ``trainer.force_resume=true`` resumes anyway and records both lengths."""
        from lstsd.errors import RefusedRelaunch

        done, old = state.get("epoch", 0), state.get("epochs", self.epochs)
        self.trained_as = list(state.get("trained_as", []))
        if done > self.epochs:
            raise RefusedRelaunch(f"trainer.epochs={self.epochs} is invalid: {path} has trained {done} epochs "
                                  f"(allowed {old}, or more where the learning rates so far stay those of {old} "
                                  "epochs; a shorter run is a new run folder)")
        first = Schedule.of_spec(state["schedule"]).first_difference(self.scheduler, state.get("global_step", 0)) \
            if old != self.epochs and "schedule" in state else None
        if first is None:
            return
        where = f"update {first} (epoch {first // max(1, self.steps_per_epoch) + 1})"
        if not self.cfg.trainer.force_resume:
            raise RefusedRelaunch(
                f"trainer.epochs={self.epochs} is invalid: {path} was trained as a run of {old} epochs, whose "
                f"learning rates differ from this length's from {where} on (schedule {self.cfg.schedule.name}); "
                f"allowed {old}, or trainer.force_resume=true to go on with this length's rates")
        log.warning(f"{path}: resumed as a run of {self.epochs} epochs; its first {done} epochs followed the learning "
                    f"rates of {old} epochs (they differ from {where})")
        self.trained_as = [*state.get("trained_as", []), old]

    def save_checkpoint(self) -> None:
        if self.cfg.trainer.checkpoint:
            checkpoint.save(self.state_dict(), self.files.checkpoint)
            for callback in self.callbacks:
                callback.on_checkpoint(self)

    def last_checkpoint(self):
        return self.files.checkpoint if self.cfg.trainer.checkpoint else None

    def position(self) -> str:
        """Where a checkpoint was taken: inside an epoch, or after one."""
        if self.in_epoch:
            return f"step {self.in_epoch['step']} of epoch {self.start_epoch + 1}"
        return f"the end of epoch {self.start_epoch}"
