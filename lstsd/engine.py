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
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

log = logging.getLogger(__name__)

CHECKPOINT = "last.pt"


class TrainingError(RuntimeError):
    """A failure during training (exit code 1)."""


def atomic_save(obj, path: Path) -> None:
    """Write to a temporary file, fsync, then rename: a crash never leaves a half-written checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


@torch.no_grad()
def evaluate(model, loader, autocast=contextlib.nullcontext) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (%) of ``model`` over ``loader`` (forward passes under ``autocast``, the
    training precision; the loss in float32)."""
    was_training = model.training
    model.eval()
    loss, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
    for batch in loader.epoch(0):
        with autocast():
            logits = model(batch.x).float()
        loss += F.cross_entropy(logits, batch.y, reduction="sum").float().cpu()
        correct += (logits.argmax(1) == batch.y).sum().cpu()
    model.train(was_training)
    n = loader.num_samples
    return loss.item() / n, 100.0 * correct.item() / n


class Trainer:
    def __init__(self, cfg, model, method, data, optimizer, scheduler, run_dir: Path, logger=None):
        from lstsd.loggers import NoLogger

        self.cfg, self.model, self.method, self.data = cfg, model, method, data
        self.logger = logger or NoLogger()
        self.optimizer, self.scheduler = optimizer, scheduler
        self.run_dir = Path(run_dir)
        self.epochs = cfg.trainer.epochs
        self.start_epoch, self.global_step = 0, 0
        self.history: list[dict] = []
        self.train_seconds = self.wall_seconds = 0.0
        device = next(model.parameters()).device
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.trainer.precision]
        # autocast runs the forward passes (the method's teachers' included) in the low precision; parameters,
        # optimiser state and the loss reduction stay in float32
        self.autocast = lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        return {
            "epoch": self.start_epoch,
            "global_step": self.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "method": self.method.state_dict(),
            "history": self.history,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "seconds": (self.train_seconds, self.wall_seconds),
        }

    def load_checkpoint(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.method.load_state_dict(state["method"])
            self.scaler.load_state_dict(state.get("scaler", {}))
        except Exception as e:  # noqa: BLE001 - any failure here means the file does not fit this run
            raise TrainingError(f"cannot resume from {path}: {type(e).__name__}: {e} "
                                "(delete it or set trainer.resume=false to start afresh)") from e
        self.start_epoch, self.global_step = state["epoch"], state["global_step"]
        self.history = state["history"]
        self.train_seconds, self.wall_seconds = state["seconds"]
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        log.info(f"resumed from {path} after epoch {self.start_epoch}")

    # ------------------------------------------------------------------ loop
    def step(self, batch, sums: dict) -> None:
        """One optimisation step on ``batch``; its statistics are added to ``sums`` on the device (no host
        synchronisation: nothing is read back here)."""
        self.scheduler.step_update(self.global_step)
        with self.autocast():
            loss, logits, terms = self.method.training_step(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with self.autocast():
            self.method.after_step(batch, logits)
        n = batch.y.numel()
        sums["loss"] += loss.detach() * n
        for name, value in terms.items():
            sums[f"loss_{name}"] += value.detach() * n
        sums["correct"] += (logits.detach().argmax(1) == batch.y).sum()
        self.global_step += 1

    def train_epoch(self, epoch: int) -> dict:
        model, method, opt = self.model, self.method, self.optimizer
        model.train()
        method.on_epoch_start(epoch)
        device = next(model.parameters()).device
        sums: dict = defaultdict(lambda: torch.zeros((), device=device))
        lr = None
        for batch in self.data.train.epoch(epoch):
            self.step(batch, sums)
            lr = opt.param_groups[0]["lr"] if lr is None else lr
        method.on_epoch_end(epoch)
        n = self.data.train.num_samples
        stats = {k: v.item() / n for k, v in sums.items()}  # the epoch's one read-back
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": stats.pop("loss"),
               "train_acc": 100.0 * stats.pop("correct")}
        if not math.isfinite(row["train_loss"]):
            terms = ", ".join(f"{k}={v:.4g}" for k, v in stats.items())
            raise TrainingError(f"non-finite training loss in epoch {epoch + 1} ({terms}); "
                                f"the last good checkpoint is {self.run_dir / CHECKPOINT}")
        return row | stats

    def evaluate_all(self) -> dict:
        row = {}
        models = {"": self.model} | {f"{k}_": m for k, m in self.method.evaluators().items()}
        for split, loader in self.data.evals.items():
            for prefix, model in models.items():
                loss, acc = evaluate(model, loader, self.autocast)
                row[f"{prefix}{split}_loss"], row[f"{prefix}{split}_acc"] = loss, acc
        return row

    def fit(self) -> dict:
        ckpt = self.run_dir / CHECKPOINT
        if self.cfg.trainer.resume and ckpt.exists():
            self.load_checkpoint(ckpt)
        metrics_path = self.run_dir / "metrics.jsonl"
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in self.history))
        bar = tqdm(total=self.epochs, initial=self.start_epoch, desc=f"{self.method.cfg.label}",
                   disable=None if self.cfg.trainer.progress else True,  # None: only on a terminal
                   dynamic_ncols=True, leave=False)
        for epoch in range(self.start_epoch, self.epochs):
            t0 = time.perf_counter()
            row = self.train_epoch(epoch)
            t1 = time.perf_counter()
            row |= self.evaluate_all()
            row["seconds"] = time.perf_counter() - t0
            self.train_seconds += t1 - t0
            self.wall_seconds += row["seconds"]
            self.history.append(row)
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            self.logger.log_epoch(row)
            self.start_epoch = epoch + 1
            if self.cfg.trainer.checkpoint:
                atomic_save(self.state_dict(), ckpt)
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", test_acc=f"{row['test_acc']:.2f}")
            log.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        bar.close()
        results = self.results()
        write_json(results, self.run_dir / "results.json")
        return results

    def results(self) -> dict:
        cfg, h = self.cfg, self.history
        best = max(h, key=lambda r: r["test_acc"])
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
            "test_acc_final": h[-1]["test_acc"],
            "test_acc_best": best["test_acc"],
            "best_epoch": best["epoch"],
            "train_loss_final": h[-1]["train_loss"],
            "wall_seconds": self.wall_seconds,
            "train_seconds": self.train_seconds,
            "steps_per_second": self.global_step / max(self.train_seconds, 1e-9),
        }
        if "val_acc" in h[-1]:
            best_val = max(h, key=lambda r: r["val_acc"])
            out |= {"val_acc_final": h[-1]["val_acc"], "val_acc_best": best_val["val_acc"],
                    "best_val_epoch": best_val["epoch"], "test_acc_at_best_val": best_val["test_acc"]}
        for key in h[-1]:  # extra evaluators (EMA teacher, ensembles): final accuracy of each
            if key.endswith("_acc") and key not in ("train_acc", "test_acc", "val_acc"):
                out[f"{key}_final"] = h[-1][key]
        return out | self.method.summary(h)
