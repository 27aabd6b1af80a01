"""The run directory, one owner: its file names, the results record, and reading a finished or failed run.

A run's folder (Hydra's output directory of one job) holds:

* ``.hydra/config.yaml``: the composed configuration (Hydra writes it; a run through the API writes it here);
* ``.hydra/inputs.json``: what the run read, by content (its data files, its teacher run or file:
  :func:`lstsd.training.run.inputs_identity`), so that a relaunch on other data or another teacher is refused;
* ``metrics.jsonl``: one JSON row per finished epoch;
* ``last.pt``: the checkpoint a run resumes from (:mod:`lstsd.training.checkpoint`);
* ``best.pt`` (``trainer.save_best=true``): the weights of the best epoch so far, with the epoch, the metric that
  chose it and its value (:func:`lstsd.training.checkpoint.save_best`);
* ``results.json``: the run's record, :func:`results_record` for a completed run, :func:`failure_record`
  for a failed one (``status``: completed or failed);
* ``.lock``: held by the one process that runs in the folder (:meth:`RunDir.lock`), with its pid and host.

The engine, the teachers, ``lstsd-report`` and ``lstsd-bench`` read and write these through this module only.
Every file is written through a temporary file unique to the process and a rename
(:func:`lstsd.fileio.atomic_write`);
every reader names the file and what is wrong with it (:class:`~lstsd.errors.ConfigError`).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from lstsd.errors import ConfigError, one_line
from lstsd.fileio import atomic_write

log = logging.getLogger(__name__)

CONFIG = ".hydra/config.yaml"
OVERRIDES = ".hydra/overrides.yaml"
HYDRA = ".hydra/hydra.yaml"
INPUTS = ".hydra/inputs.json"
METRICS = "metrics.jsonl"
RESULTS = "results.json"
CHECKPOINT = "last.pt"
BEST = "best.pt"
LOCK = ".lock"
TEACHER_LOCK = ".teacher.lock"  # a teacher cache folder's: the sweep's jobs wait there for the one that trains it


def write_json(obj, path: Path) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2) + "\n"))


def read_json(path: Path):
    """The JSON object in ``path``, or a ConfigError naming the file and what is wrong."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable JSON file ({type(e).__name__}: {one_line(e)})") from None


def lock_holder(fd: int) -> str:
    """Who holds a folder's lock, as its holder wrote it into the lock file (``process <pid> on <host> since ...``)."""
    return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"


class RunDir:
    """The files of one run's folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config, self.overrides, self.hydra, self.inputs = (self.path / n for n in
                                                                (CONFIG, OVERRIDES, HYDRA, INPUTS))
        self.metrics, self.results, self.checkpoint, self.best = (self.path / n for n in
                                                                  (METRICS, RESULTS, CHECKPOINT, BEST))

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------ reading
    def read_results(self) -> Optional[dict]:
        if not self.results.exists():
            return None
        results = read_json(self.results)
        if not isinstance(results, dict) or results.get("status") not in ("completed", "failed"):
            raise ConfigError(f"{self.results}: not a run's record (allowed a JSON object whose status is "
                              f"completed or failed)")
        return results

    def completed(self) -> Optional[dict]:
        """The results of a finished run, or None."""
        results = self.read_results()
        return results if results is not None and results.get("status") == "completed" else None

    def read_config(self):
        return self._yaml(self.config, dict) if self.config.exists() else None

    def read_overrides(self) -> list[str]:
        return list(self._yaml(self.overrides, list)) if self.overrides.exists() else []

    def _yaml(self, path: Path, kind: type):
        try:
            node = OmegaConf.load(path)
        except Exception as e:  # noqa: BLE001 - YAML, Unicode and OS errors alike: the file is unreadable
            raise ConfigError(f"{path}: not a readable YAML file ({type(e).__name__}: {one_line(e)})") from None
        if not isinstance(OmegaConf.to_container(node), kind):
            raise ConfigError(f"{path}: holds a {type(OmegaConf.to_container(node)).__name__}, not a {kind.__name__}")
        return node

    def read_metrics(self) -> list[dict]:
        if not self.metrics.exists():
            return []
        rows = []
        try:
            lines = self.metrics.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{self.metrics}: not readable ({type(e).__name__}: {one_line(e)})") from None
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise ConfigError(f"{self.metrics}:{number}: not a JSON row ({one_line(e)})") from None
                if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                    raise ConfigError(f"{self.metrics}:{number}: not an epoch's row (a JSON object with an epoch)")
                rows.append(row)
        return rows

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

    # ------------------------------------------------------------------ one configuration, one process
    @contextlib.contextmanager
    def lock(self, name: str = LOCK, wait: bool = False):
        """Hold the folder's ``.lock`` (or the lock file ``name``) for the block: a second process (another launch
        into the same folder) gets a ConfigError naming the holder, or with ``wait`` waits for it to end. A POSIX
        record lock (``lockf``), which the kernel releases when its holder dies, so a lock is never stale, and
        which the holder's forked children (data-loader workers) do not inherit, so a run stopped by a signal
        frees its folder at once, not when its orphaned workers exit; NFS (v4, or v3 with lockd) shares it
        with other clients; on a file system without locks a warning says that nothing is enforced. Written with
        fcntl rather than the filelock package, which truncates the lock file before it tries the lock and so
        would erase the holder's pid that the message names."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    log.warning(f"{self.path / name}: this file system has no file locks ({e.strerror}): "
                                "nothing stops a second process from running in this folder")
                else:
                    holder = lock_holder(fd)
                    raise ConfigError(f"{self.path} is in use by {holder}: one process per run folder; wait for it "
                                      "to end, or launch into another folder (another name= or hydra.run.dir=)")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()} since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
            yield self
        finally:
            os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def reading(self, key: str):
        """Hold a shared lock on the folder's ``.lock`` while its files are read (a teacher run): refused with a
        ConfigError naming ``key`` and the holder while a process runs in it (it may be writing a newer
        checkpoint). A folder that was never locked, or cannot be opened for reading, is read as it is."""
        try:
            fd = os.open(self.path / LOCK, os.O_RDONLY)
        except OSError:
            yield self
            return
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    holder = lock_holder(fd)
                    raise ConfigError(f"{key}={str(self.path)!r} is invalid now: the run is in use by {holder} "
                                      "(allowed a run no process is writing; wait for it to end)") from None
            yield self
        finally:
            os.close(fd)

    def write_hydra(self, cfg, overrides: list[str], hydra=None) -> None:
        """``.hydra/``: the composed config, the overrides and Hydra's own config (Hydra's files, written here
        instead of by Hydra so that the folder's record of its configuration is written once: a relaunch never
        overwrites it). Nothing is written when ``config.yaml`` exists."""
        if self.config.exists():
            return
        self.config.parent.mkdir(parents=True, exist_ok=True)
        if hydra is not None:
            atomic_write(self.hydra, lambda f: f.write(OmegaConf.to_yaml({"hydra": hydra})))
        atomic_write(self.overrides, lambda f: f.write(OmegaConf.to_yaml(list(overrides))))
        atomic_write(self.config, lambda f: f.write(OmegaConf.to_yaml(cfg)))

    # ------------------------------------------------------------------ writing
    def write_metrics(self, rows: list[dict]) -> None:
        atomic_write(self.metrics, lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows)))

    def append_metrics(self, row: dict) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")

    def write_results(self, record: dict) -> None:
        write_json(record, self.results)


def sweep_progress(sweep: Path) -> tuple[int, int, int, float]:
    """(finished, failed, total, seconds since the launch) of a sweep folder: its jobs (``jobs.yaml``, which the
    lstsd sweeper writes) and the runs with a results.json."""
    total = len(OmegaConf.load(sweep / "jobs.yaml")) if (sweep / "jobs.yaml").exists() else 0
    statuses = [RunDir(d).read_results() for d in sweep.iterdir() if (d / RESULTS).is_file()]
    finished = [r for r in statuses if r is not None]
    elapsed = time.time() - (sweep / "multirun.yaml").stat().st_mtime if (sweep / "multirun.yaml").exists() else 0.0
    return len(finished), sum(r.get("status") == "failed" for r in finished), max(total, len(finished)), elapsed


def labels(config) -> dict:
    """What identifies a run in tables: experiment, method (its label), method_name, model, dataset, seed; from a
    validated :class:`~lstsd.config.Config` or a saved config (``.hydra/config.yaml``)."""
    method = config.method
    return {"experiment": getattr(config, "name", None) or "default",
            "method": getattr(method, "label", None) or method.name, "method_name": method.name,
            "model": config.model.name, "dataset": config.dataset.name, "seed": config.seed}


def failure_record(config, error: BaseException) -> dict:
    """The record of a failed run: ``status`` failed, the error's type and line, and the run's identity."""
    return {"status": "failed", "error": f"{type(error).__name__}: {error}", **labels(config)}


def results_record(config, info, history: list[dict], method, seconds: tuple[float, float], steps: int) -> dict:
    """The record of a completed run: its identity, the final and best scores, timing, and what every method
    reports the same way: its per-sample bank bytes, its teacher run (directory, test accuracy, dataset), its
    mini-generation ends and each one's scores, the final scores of its extra evaluated models.

    The best epoch is the one of the highest ``dataset.headline`` metric (accuracy unless the task names
    another, e.g. Matthews correlation for CoLA): ``test_<metric>_final`` and ``_best`` for every metric, and
    ``headline`` naming the one tables show. With a validation split, the best validation epoch and the test
    scores there too."""
    h, metric = history, config.dataset.headline
    metrics = info.metrics(config.dataset.metrics)  # the configured metrics, and top-5 where the dataset adds it
    train_seconds, wall_seconds = seconds
    best = max(h, key=lambda r: r[f"test_{metric}"])
    out = {"status": "completed", **labels(config), "num_classes": info.num_classes,
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
        # the record read with its weights (a run extended since would record another score)
        teacher = method.teacher_record or RunDir(method.teacher_dir).read_results() or {}
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

