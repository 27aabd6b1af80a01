"""The trainer: epochs of steps, evaluation, metrics.jsonl, results.json and an atomic checkpoint with resume.

It knows nothing of any method: a method adds its behaviour through the hooks of
:class:`lstsd.methods.base.Method`. Step statistics are accumulated on the device and read back once per
epoch, so the step itself never waits for the host.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lstsd import distributed

log = logging.getLogger(__name__)

CHECKPOINT = "last.pt"
SIGNAL_CHECK_STEPS = 20  # with several processes: how often they agree on a stop signal
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)  # SLURM preemption; --signal before the time
# limit (submitit asks for USR2 and requeues the job in its handler, which runs after the checkpoint)


class TrainingError(RuntimeError):
    """A failure during training (exit code 1)."""


def atomic_save(obj, path: Path) -> None:
    """Write to a temporary file, fsync, then rename over the previous checkpoint: a crash or a failed write
    never leaves a half-written one, and the previous one stays until the new one is complete."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


@torch.no_grad()
def evaluate(model, loader, autocast=contextlib.nullcontext, metrics=("acc",)) -> dict:
    """Mean cross-entropy (``loss``) and ``metrics`` in % of ``model`` over ``loader`` (forward passes under
    ``autocast``, the training precision; the loss in float32). ``acc`` is counted on the device; ``f1`` (of
    class 1) and ``mcc`` (Matthews correlation) are scikit-learn's, from the predictions read back once."""
    was_training = model.training
    model.eval()
    loss, correct, preds = torch.zeros(()), torch.zeros((), dtype=torch.long), []
    for batch in loader.epoch(0):
        with autocast():
            logits = model(batch.x).float()
        loss += F.cross_entropy(logits, batch.y, reduction="sum").float().cpu()
        correct += (logits.argmax(1) == batch.y).sum().cpu()
        if len(metrics) > 1:
            preds.append(logits.argmax(1))
    model.train(was_training)
    n = loader.num_samples
    out = {"loss": loss.item() / n, "acc": 100.0 * correct.item() / n}
    if len(metrics) > 1:
        from sklearn.metrics import f1_score, matthews_corrcoef

        y, p = loader.y.cpu().numpy(), torch.cat(preds).cpu().numpy()  # evaluation loaders keep their order
        scores = {"f1": lambda: f1_score(y, p, zero_division=0.0), "mcc": lambda: matthews_corrcoef(y, p)}
        out |= {m: 100.0 * float(scores[m]()) for m in metrics if m in scores}
    return out


class StepStats:
    """An epoch's running sums on the training device: each step adds its loss and named loss terms (weighted by
    its number of samples) and its correct predictions, and keeps its loss for the non-finite check: a few in-place
    operations, nothing read back. The sums accumulate in step order, so an epoch resumed from a checkpoint taken
    inside it adds up exactly as an uninterrupted one."""

    def __init__(self, device, first_step: int = 0, steps: int = 1):
        self.device, self.first_step = device, first_step
        self.names: list[str] = []  # "loss", then "loss_<term>" in the order the terms first appeared
        self.sums = torch.zeros(0, device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.count = 0
        self.losses = torch.zeros(max(steps, 1), device=device)  # each step's loss
        self.steps = 0
        self.zero = torch.zeros((), device=device)

    def record(self, loss: torch.Tensor, terms: dict, logits: torch.Tensor, y: torch.Tensor) -> None:
        values = {"loss": loss, **{f"loss_{k}": v for k, v in terms.items()}}
        if list(values) != self.names:
            new = [k for k in values if k not in self.names]  # a term that starts mid-epoch (DLB's first step)
            self.names += new
            self.sums = torch.cat([self.sums, torch.zeros(len(new), device=self.device)])
        n = y.numel()
        self.sums.add_(torch.stack([values.get(k, self.zero).detach().float() for k in self.names]), alpha=n)
        self.correct.add_((logits.detach().argmax(1) == y).sum())
        if self.steps == len(self.losses):
            self.losses = torch.cat([self.losses, torch.zeros_like(self.losses)])
        self.losses[self.steps].copy_(loss.detach())
        self.steps += 1
        self.count += n

    def totals(self) -> dict:
        """Each sum as a float32 tensor on the device: ``loss``, ``loss_<term>``, ``correct`` and ``count``."""
        out = {k: self.sums[j].clone() for j, k in enumerate(self.names)}
        return out | {"correct": self.correct.float(), "count": torch.tensor(float(self.count), device=self.device)}

    def load_totals(self, totals: dict) -> None:
        """Go on from the sums of the steps done before a checkpoint taken inside the epoch."""
        totals = dict(totals)
        self.count = int(totals.pop("count").item())
        self.correct = totals.pop("correct").to(self.device, torch.long)
        self.names = list(totals)
        self.sums = torch.stack([totals[k].float() for k in self.names]).to(self.device) if totals else self.sums

    def first_non_finite(self) -> int:
        """The global step (1-based) of the first step with a non-finite loss, or -1 (one read-back)."""
        bad = ~torch.isfinite(self.losses[:self.steps])
        return self.first_step + int(bad.nonzero()[0, 0]) + 1 if bool(bad.any()) else -1


class Trainer:
    def __init__(self, cfg, model, method, data, optimizer, scheduler, run_dir: Path, logger=None):
        from lstsd.loggers import NoLogger

        self.cfg, self.model, self.method, self.data = cfg, model, method, data
        self.logger = logger or NoLogger()
        self.optimizer, self.scheduler = optimizer, scheduler
        self.run_dir = Path(run_dir)
        self.epochs = cfg.trainer.epochs
        self.start_epoch, self.global_step = 0, 0
        self.in_epoch = None  # the position inside an epoch of a checkpoint taken there (on a signal)
        self.method_state = None
        self.stop_signal = None
        self.previous_handlers: dict = {}
        self.history: list[dict] = []
        self.train_seconds = self.wall_seconds = 0.0
        self.device = device = next(model.parameters()).device
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.trainer.precision]
        # autocast runs the forward passes (the method's teachers' included) in the low precision; parameters,
        # optimiser state and the loss reduction stay in float32
        self.autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else \
            contextlib.nullcontext  # fp32: no autocast context to enter and leave around every forward
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        """Everything a run needs to go on exactly: weights, optimiser, loss scale, method state (banks,
        snapshots, EMA teacher, DLB's last batch), every random generator, the history and the position (the
        epoch, and for a checkpoint taken inside an epoch the steps done in it and their running sums; the
        epoch's batch order and augmentation follow from (seed, epoch), so the position is enough to go on)."""
        return {
            "epoch": self.start_epoch,
            "global_step": self.global_step,
            "in_epoch": self.in_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "method": self.method.state_dict(),
            "rank_states": distributed.gather_objects(self.method.rank_state()),  # collective: every rank calls
            "world_size": distributed.world_size(),
            "history": self.history,
            "rng_cpu": torch.get_rng_state(),
            "rng_python": random.getstate(),
            "rng_numpy": np.random.get_state(),
            # this process's device only: with several processes each rank restores its own GPU's stream
            "rng_cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
            "seconds": (self.train_seconds, self.wall_seconds),
        }

    def load_checkpoint(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if state.get("in_epoch") is not None and state["world_size"] != distributed.world_size():
                raise ValueError(f"it was taken inside an epoch by {state['world_size']} processes, not "
                                 f"{distributed.world_size()}")
            rank_state = state["rank_states"][distributed.rank()] if len(state["rank_states"]) > distributed.rank() \
                else {}
            self.method.load_state_dict(state["method"])
            self.method.load_rank_state(rank_state)
            if state.get("in_epoch") is not None:  # inside an epoch: applied again after on_epoch_start, which
                self.method_state = (state["method"], rank_state)  # sees the saved state but resets per-epoch parts
            self.scaler.load_state_dict(state.get("scaler", {}))
            self.start_epoch, self.global_step = state["epoch"], state["global_step"]
            self.in_epoch = state.get("in_epoch")
            self.history = state["history"]
            self.train_seconds, self.wall_seconds = state["seconds"]
            torch.set_rng_state(state["rng_cpu"])
            if state.get("rng_cuda") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["rng_cuda"])
            if "rng_python" in state:  # absent from checkpoints written before they were saved
                random.setstate(state["rng_python"])
                np.random.set_state(state["rng_numpy"])
        except Exception as e:  # noqa: BLE001 - any failure here means the file does not fit this run
            raise TrainingError(f"cannot resume from {path}: {type(e).__name__}: {e} "
                                "(delete it or set trainer.resume=false to start afresh)") from e
        where = f"step {self.in_epoch['step']} of epoch {self.start_epoch + 1}" if self.in_epoch else \
            f"epoch {self.start_epoch}"
        log.info(f"resumed from {path} after {where}")

    def save_checkpoint(self) -> None:
        """Rank 0 writes; every rank learns whether it could, so that all go on or all stop together."""
        if not self.cfg.trainer.checkpoint:
            return
        state, error = self.state_dict(), None
        if distributed.is_main():
            try:
                atomic_save(state, self.run_dir / CHECKPOINT)
            except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
                error = e
        failure = distributed.broadcast(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        if failure is not None:
            raise TrainingError(f"rank 0 could not write the checkpoint: {failure}")

    # ------------------------------------------------------------------ signals
    def request_stop(self, signum, frame) -> None:
        """SIGTERM / SIGUSR1 (what SLURM sends before a preemption or the time limit): finish the current step,
        checkpoint, then hand the signal to whoever handled it before (submitit requeues the job)."""
        self.stop_signal = signum

    def stop_requested(self, now: bool = False) -> bool:
        """Whether a stop signal arrived. With several processes they must agree on the step, so the flag is
        summed over ranks every ``SIGNAL_CHECK_STEPS`` global steps and at the end of each epoch (``now``): one
        tiny all-reduce; none in one process."""
        if not distributed.active():
            return self.stop_signal is not None
        if self.global_step % SIGNAL_CHECK_STEPS and not now:
            return False
        flag = torch.tensor(float(self.stop_signal is not None), device=self.device)
        if distributed.sum_(flag).item() > 0:
            self.stop_signal = self.stop_signal or signal.SIGTERM
            return True
        return False

    def stop_now(self) -> None:
        signum = self.stop_signal
        where = f"step {self.in_epoch['step']} of epoch {self.start_epoch + 1}" if self.in_epoch else \
            f"the end of epoch {self.start_epoch}"
        log.warning(f"{signal.Signals(signum).name}: checkpointed at {where}; stopping")
        self.restore_signals()
        os.kill(os.getpid(), signum)  # the previous handler (or the default action) now runs
        raise TrainingError(f"stopped by {signal.Signals(signum).name} after checkpointing")

    def install_signals(self) -> None:
        self.previous_handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self.previous_handlers[sig] = signal.signal(sig, self.request_stop)

    def restore_signals(self) -> None:
        for sig, handler in self.previous_handlers.items():
            signal.signal(sig, handler)
        self.previous_handlers = {}

    # ------------------------------------------------------------------ loop
    def step(self, batch, stats: "StepStats") -> None:
        """One optimisation step on ``batch``; its statistics go to ``stats`` on the device (nothing is read back
        here, a non-finite loss included: it is found at the end of the epoch, which is then not checkpointed)."""
        self.scheduler.step_update(self.global_step)
        with self.autocast():
            loss, logits, terms = self.method.training_step(batch)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler.is_enabled():  # fp16: the scaled loss, and an update skipped on non-finite gradients
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        if distributed.active():  # batch-norm statistics: rank 0's everywhere, before snapshots or EMA use them
            distributed.broadcast_buffers(self.model)
        with self.autocast():
            self.method.after_step(batch, logits)
        stats.record(loss, terms, logits, batch.y)
        self.global_step += 1

    def train_epoch(self, epoch: int) -> dict:
        model, method, opt = self.model, self.method, self.optimizer
        model.train()
        method.on_epoch_start(epoch)
        start, lr = 0, None
        stats = StepStats(self.device, self.global_step, len(self.data.train))
        if self.in_epoch is not None:  # resumed inside this epoch
            method.load_state_dict(self.method_state[0])
            method.load_rank_state(self.method_state[1])
            start, lr = self.in_epoch["step"], self.in_epoch["lr"]
            if distributed.is_main():  # the saved sums are the totals over all ranks: counted once
                stats.load_totals(self.in_epoch["sums"])
        for i, batch in enumerate(self.data.train.epoch(epoch, start_step=start), start=start):
            self.step(batch, stats)
            lr = opt.param_groups[0]["lr"] if lr is None else lr
            if self.stop_requested():
                totals, first_bad = self.reduce(stats)
                if first_bad >= 0:  # never checkpoint poisoned weights over the last good ones
                    self.non_finite(first_bad, epoch, totals)
                self.in_epoch = {"step": i + 1, "lr": lr, "sums": {k: v.cpu() for k, v in totals.items()}}
                self.save_checkpoint()
                self.stop_now()
        self.in_epoch = None
        method.on_epoch_end(epoch)
        totals, first_bad = self.reduce(stats)
        count = totals.pop("count").item()
        means = {k: v.item() / count for k, v in totals.items()}  # the epoch's one read-back
        if first_bad >= 0:
            self.non_finite(first_bad, epoch, means)
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": means.pop("loss"),
               "train_acc": 100.0 * means.pop("correct")}
        return row | means

    @staticmethod
    def reduce(stats: "StepStats") -> tuple[dict, int]:
        """The epoch's sums totalled over processes (no-op in one), and the first non-finite step of any rank
        (-1: none)."""
        first_bad = distributed.gather(torch.tensor([stats.first_non_finite()], device=stats.device))
        first_bad = int(first_bad[first_bad >= 0].min().item()) if (first_bad >= 0).any() else -1
        return {k: distributed.sum_(v) for k, v in stats.totals().items()}, first_bad

    def non_finite(self, first_bad: int, epoch: int, sums: dict) -> None:
        count = float(sums.get("count", 1))
        terms = ", ".join(f"{k.removeprefix('loss_')}={float(v) / count:.4g}" for k, v in sums.items()
                          if k.startswith("loss") and not math.isfinite(float(v)))
        raise TrainingError(f"non-finite loss at step {first_bad} (epoch {epoch + 1}; non-finite terms: "
                            f"{terms}); the last good checkpoint is {self.run_dir / CHECKPOINT}")

    def evaluate_all(self) -> dict:
        row = {}
        models = {"": self.model} | {f"{k}_": m for k, m in self.method.evaluators().items()}
        for split, loader in self.data.evals.items():
            for prefix, model in models.items():
                scores = evaluate(model, loader, self.autocast, tuple(self.cfg.dataset.metrics))
                row |= {f"{prefix}{split}_{k}": v for k, v in scores.items()}
        return row

    def fit(self) -> dict:
        ckpt = self.run_dir / CHECKPOINT
        if distributed.broadcast(self.cfg.trainer.resume and ckpt.exists()):  # rank 0's view, for every rank
            self.load_checkpoint(ckpt)
        metrics_path = self.run_dir / "metrics.jsonl"
        if distributed.is_main():
            metrics_path.write_text("".join(json.dumps(r) + "\n" for r in self.history))
        bar = tqdm(total=self.epochs, initial=self.start_epoch, desc=f"{self.method.cfg.label}",
                   disable=None if self.cfg.trainer.progress and distributed.is_main() else True,  # None: a tty
                   dynamic_ncols=True, leave=False)
        self.install_signals()
        try:
            return self.train(metrics_path, bar)
        finally:
            self.restore_signals()

    def train(self, metrics_path: Path, bar) -> dict:
        for epoch in range(self.start_epoch, self.epochs):
            t0 = time.perf_counter()
            row = self.train_epoch(epoch)
            t1 = time.perf_counter()
            row |= self.evaluate_all()
            row["seconds"] = time.perf_counter() - t0
            self.train_seconds += t1 - t0
            self.wall_seconds += row["seconds"]
            self.history.append(row)
            if distributed.is_main():
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                self.logger.log_epoch(row)
            self.start_epoch = epoch + 1
            stop = self.stop_requested(now=True)  # a signal during the epoch's last steps or its evaluation
            if stop or self.start_epoch % self.cfg.trainer.checkpoint_every == 0 or self.start_epoch == self.epochs:
                self.save_checkpoint()
            if stop:
                self.stop_now()
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", test_acc=f"{row['test_acc']:.2f}")
            log.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        bar.close()
        results = self.results() | ({"world_size": distributed.world_size()} if distributed.active() else {})
        if distributed.is_main():
            write_json(results, self.run_dir / "results.json")
        return results

    def results(self) -> dict:
        """The summary of the run. The best epoch is the one of the highest ``dataset.headline`` metric
        (accuracy unless the task names another, e.g. Matthews correlation for CoLA): ``test_<metric>_final``
        and ``_best`` for every metric, and ``headline`` naming the one tables show."""
        cfg, h = self.cfg, self.history
        metric = cfg.dataset.headline
        best = max(h, key=lambda r: r[f"test_{metric}"])
        out = {
            "status": "completed",
            "experiment": cfg.name,
            "method": cfg.method.label,
            "method_name": cfg.method.name,
            "model": cfg.model.name,
            "dataset": cfg.dataset.name,
            "num_classes": self.data.info.num_classes,
            "input_shape": list(self.data.info.input_shape),
            "seed": cfg.seed,
            "epochs": self.epochs,
            "headline": metric,
            "best_epoch": best["epoch"],
            "train_loss_final": h[-1]["train_loss"],
            "wall_seconds": self.wall_seconds,
            "train_seconds": self.train_seconds,
            "steps_per_second": self.global_step / max(self.train_seconds, 1e-9),
        }
        for m in cfg.dataset.metrics:
            out |= {f"test_{m}_final": h[-1][f"test_{m}"], f"test_{m}_best": best[f"test_{m}"]}
        if f"val_{metric}" in h[-1]:
            best_val = max(h, key=lambda r: r[f"val_{metric}"])
            out |= {"best_val_epoch": best_val["epoch"]}
            for m in cfg.dataset.metrics:
                out |= {f"val_{m}_final": h[-1][f"val_{m}"], f"val_{m}_best": best_val[f"val_{m}"],
                        f"test_{m}_at_best_val": best_val[f"test_{m}"]}
        if self.data.info.vocab is not None:
            from lstsd.data.text import vocab_fingerprint

            out["vocab_sha256"] = vocab_fingerprint(self.data.info.vocab)
        suffixes = tuple(f"_{m}" for m in cfg.dataset.metrics)
        for key in h[-1]:  # extra evaluators (EMA teacher, ensembles): final scores of each
            if key.endswith(suffixes) and not key.startswith(("train_", "test_", "val_")):
                out[f"{key}_final"] = h[-1][key]
        return out | self.method.summary(h)
