"""The run directory, one owner: its file names, the results record, and reading a finished or failed run.

A run's folder (Hydra's output directory of one job) holds:

* ``.hydra/config.yaml``: the composed configuration (Hydra writes it; a run through the API writes it here);
* ``metrics.jsonl``: one JSON row per finished epoch;
* ``last.pt``: the checkpoint a run resumes from (:mod:`lstsd.engine.checkpoint`);
* ``results.json``: the run's record, :func:`results_record` for a completed run, :func:`failure_record`
  for a failed one (``status``: completed or failed).

The engine, the teachers, ``lstsd-report`` and ``lstsd-bench`` read and write these through this module only.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from lstsd.errors import ConfigError

CONFIG = ".hydra/config.yaml"
OVERRIDES = ".hydra/overrides.yaml"
HYDRA = ".hydra/hydra.yaml"
METRICS = "metrics.jsonl"
RESULTS = "results.json"
CHECKPOINT = "last.pt"


def write_json(obj, path: Path) -> None:
    """Write through a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


class RunDir:
    """The files of one run's folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config, self.overrides, self.hydra = (self.path / n for n in (CONFIG, OVERRIDES, HYDRA))
        self.metrics, self.results, self.checkpoint = (self.path / n for n in (METRICS, RESULTS, CHECKPOINT))

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------ reading
    def read_results(self) -> Optional[dict]:
        return json.loads(self.results.read_text()) if self.results.exists() else None

    def completed(self) -> Optional[dict]:
        """The results of a finished run, or None."""
        results = self.read_results()
        return results if results is not None and results.get("status") == "completed" else None

    def read_config(self):
        return OmegaConf.load(self.config) if self.config.exists() else None

    def read_overrides(self) -> list[str]:
        return list(OmegaConf.load(self.overrides)) if self.overrides.exists() else []

    def read_metrics(self) -> list[dict]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def require_finished(self, key: str) -> dict:
        """The results of a completed run with its config and checkpoint (a teacher), or a ConfigError naming
        ``key`` and what is missing."""
        missing = [n for n, f in ((RESULTS, self.results), (CONFIG, self.config), (CHECKPOINT, self.checkpoint))
                   if not f.exists()]
        if missing:
            raise ConfigError(f"{key}={str(self.path)!r} is invalid: allowed the directory of a finished lstsd run "
                              f"(missing: {', '.join(missing)})")
        results = self.read_results()
        if results.get("status") != "completed":
            raise ConfigError(f"{key}={str(self.path)!r} is invalid: allowed a completed run (its status is "
                              f"{results.get('status')})")
        return results

    # ------------------------------------------------------------------ writing
    def save_config(self, cfg) -> None:
        """The composed config, unless Hydra (or an earlier launch) wrote it already."""
        if not self.config.exists():
            self.config.parent.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(cfg, self.config)

    def write_metrics(self, rows: list[dict]) -> None:
        self.metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def append_metrics(self, row: dict) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")

    def write_results(self, record: dict) -> None:
        write_json(record, self.results)


def identity(config) -> dict:
    """What identifies a run in tables: experiment, method (its label), method_name, model, dataset, seed; from a
    validated :class:`~lstsd.config.Config` or a saved config (``.hydra/config.yaml``)."""
    method = config.method
    return {"experiment": getattr(config, "name", None) or "default",
            "method": getattr(method, "label", None) or method.name, "method_name": method.name,
            "model": config.model.name, "dataset": config.dataset.name, "seed": config.seed}


def failure_record(config, error: BaseException) -> dict:
    return {"status": "failed", "error": f"{type(error).__name__}: {error}", **identity(config)}


def results_record(config, info, history: list[dict], method, seconds: tuple[float, float], steps: int) -> dict:
    """The record of a completed run: its identity, the final and best scores, timing, and what every method
    reports the same way: its per-sample bank bytes, its teacher run (directory, test accuracy, dataset), its
    mini-generation ends and each one's scores, the final scores of its extra evaluated models.

    The best epoch is the one of the highest ``dataset.headline`` metric (accuracy unless the task names
    another, e.g. Matthews correlation for CoLA): ``test_<metric>_final`` and ``_best`` for every metric, and
    ``headline`` naming the one tables show. With a validation split, the best validation epoch and the test
    scores there too."""
    h, metrics, metric = history, tuple(config.dataset.metrics), config.dataset.headline
    train_seconds, wall_seconds = seconds
    best = max(h, key=lambda r: r[f"test_{metric}"])
    out = {"status": "completed", **identity(config), "num_classes": info.num_classes,
           "input_shape": list(info.input_shape), "epochs": config.trainer.epochs, "headline": metric,
           "best_epoch": best["epoch"], "train_loss_final": h[-1]["train_loss"], "wall_seconds": wall_seconds,
           "train_seconds": train_seconds, "steps_per_second": steps / max(train_seconds, 1e-9)}
    for m in metrics:
        out |= {f"test_{m}_final": h[-1][f"test_{m}"], f"test_{m}_best": best[f"test_{m}"]}
    if f"val_{metric}" in h[-1]:
        best_val = max(h, key=lambda r: r[f"val_{metric}"])
        out["best_val_epoch"] = best_val["epoch"]
        for m in metrics:
            out |= {f"val_{m}_final": h[-1][f"val_{m}"], f"val_{m}_best": best_val[f"val_{m}"],
                    f"test_{m}_at_best_val": best_val[f"test_{m}"]}
    if info.vocab is not None:  # a teacher reading this run's token ids must have the same vocabulary
        out["vocab_sha256"] = info.vocab_sha256
    suffixes = tuple(f"_{m}" for m in metrics)
    for key in h[-1]:  # extra evaluated models (EMA teacher, ensembles): the final score of each
        if key.endswith(suffixes) and not key.startswith(("train_", "test_", "val_")):
            out[f"{key}_final"] = h[-1][key]
    out["bank_bytes"] = method.bank_bytes()
    if method.teacher_dir is not None:
        teacher = RunDir(method.teacher_dir).read_results() or {}
        out |= {"teacher_dir": str(method.teacher_dir), "teacher_test_acc": teacher.get("test_acc_final"),
                "teacher_dataset": teacher.get("dataset")}
    if method.minigen_ends:
        rows = [h[e - 1] for e in method.minigen_ends if e <= len(h)]
        out["minigen_end_epochs"] = list(method.minigen_ends)
        for m in metrics:
            out[f"minigen_test_{m}"] = [r[f"test_{m}"] for r in rows]  # each mini-generation's last model
            if rows and f"val_{m}" in rows[0]:
                out[f"minigen_val_{m}"] = [r[f"val_{m}"] for r in rows]
    return out

