"""Where a run reports besides metrics.jsonl and results.json: the trackers of the ``logger`` group (wandb,
tensorboard, csv, several at once), each one run per job in the job's run folder, fed every epoch's row and, at
the end, the results. What each records, and how a resumed run keeps one history: docs/clusters.md, "Trackers"."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import uuid
from pathlib import Path
from typing import Optional, Protocol

from lstsd.errors import import_extra, need_extra
from lstsd.fileio import atomic_write
from lstsd.training.rundir import RunDir

CSV_FILE = "metrics.csv"
WANDB_ID = "wandb_id"  # the id of the run folder's wandb run: a resumed run continues it
TENSORBOARD_DIR = "tensorboard"
SWEEP_FILE = "multirun.yaml"  # what Hydra's sweepers write into a sweep folder when it is launched


class Tracker(Protocol):
    """What every tracker implements: a row per epoch, and the end of the run (its results, or a failure)."""

    def log_epoch(self, row: dict) -> None: ...

    def finish(self, results: Optional[dict], failed: bool) -> None: ...


class NoTracker:
    """``logger=none``: files only."""

    def log_epoch(self, row: dict) -> None:
        pass

    def finish(self, results: Optional[dict], failed: bool) -> None:
        pass


class Trackers:
    """Several trackers at once (``logger=[wandb,tensorboard]``): each gets every row, and each is finished even
    when another one's finish fails (the first error is raised afterwards)."""

    def __init__(self, trackers: list):
        self.trackers = trackers

    def log_epoch(self, row: dict) -> None:
        for tracker in self.trackers:
            tracker.log_epoch(row)

    def finish(self, results: Optional[dict], failed: bool) -> None:
        error = None
        for tracker in self.trackers:
            try:
                tracker.finish(results, failed)
            except Exception as e:  # noqa: BLE001 - the other trackers are finished first
                error = error or e
        if error is not None:
            raise error


def sweep_folder(run_dir: Path) -> Optional[Path]:
    """The sweep folder that holds ``run_dir``, or None for a single run: Hydra's ``hydra.sweep.dir`` in a job of
    a multirun, or else the nearest folder above ``run_dir`` with Hydra's ``multirun.yaml`` (a job of a sweep
    launched again on its own, ``hydra.run.dir=<sweep>/<job>``, stays in its sweep's group)."""
    run_dir = Path(run_dir).resolve()
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get() if HydraConfig.initialized() else None
        if hc is not None and hc.mode == RunMode.MULTIRUN:
            sweep = Path(str(hc.sweep.dir)).resolve()
            if run_dir != sweep and run_dir.is_relative_to(sweep):  # this job's sweep, not a stale one's
                return sweep
    except ImportError:
        pass
    return next((p for p in run_dir.parents if (p / SWEEP_FILE).is_file()), None)


def default_group(conf, run_dir: Path) -> str:
    """wandb's group when ``logger.group`` is null: ``<experiment name>/<sweep folder name>`` for a job of a sweep,
    ``<experiment name>/<run folder name>`` for a single run. The default folders' names hold the launch time (and
    a sweep's a unique id), so runs of two launches are never grouped together."""
    return f"{conf.name}/{(sweep_folder(run_dir) or Path(run_dir).resolve()).name}"


class WandbTracker:
    """``logger=wandb``: one wandb run per job, whose id is kept in the run folder (``wandb_id``): a run resumed
    after a preemption, requeued or relaunched continues the same wandb run (``resume="allow"``). The epoch is
    its step."""

    def __init__(self, cfg, conf, run_dir: Path):
        wandb = import_extra("wandb", "logger=wandb")
        self.wandb = wandb
        self.run = wandb.init(
            id=wandb_id(run_dir), resume="allow",
            project=cfg.project, entity=cfg.entity, group=cfg.group or default_group(conf, run_dir),
            job_type=cfg.job_type or conf.method.label, name=cfg.run_name or Path(run_dir).name,
            tags=list(cfg.tags), mode=cfg.mode, dir=str(run_dir),
            config=dataclasses.asdict(conf), reinit="finish_previous",
        )
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")  # the charts' x axis: the epoch

    def log_epoch(self, row: dict) -> None:
        self.run.log(dict(row), step=row["epoch"])

    def finish(self, results: Optional[dict], failed: bool) -> None:
        if results:
            self.run.summary.update({k: v for k, v in results.items() if isinstance(v, (int, float, str))})
        self.run.finish(exit_code=1 if failed else 0)


def wandb_id(run_dir: Path) -> str:
    """The id of the run folder's wandb run: the one kept in ``<run_dir>/wandb_id``, else a new one, kept there."""
    path = Path(run_dir) / WANDB_ID
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    new = uuid.uuid4().hex[:12]  # wandb takes any id of lowercase letters and digits
    atomic_write(path, lambda f: f.write(new + "\n"))
    return new


def earlier_rows(run_dir: Path, epoch: int) -> list[dict]:
    """The metrics rows of the epochs before ``epoch`` (those of a resumed run's checkpoint), from metrics.jsonl."""
    return [row for row in RunDir(run_dir).read_metrics() if row["epoch"] < epoch]


def numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class TensorBoardTracker:
    """``logger=tensorboard``: every numeric key of each epoch's row as a scalar (step = epoch) in event files under
    ``<run_dir>/tensorboard/``. The writer opens at the first row, with ``purge_step`` = its epoch: the steps a
    resumed run trains again (the epochs after its checkpoint) are purged from the earlier event files. A folder
    without event files yet gets the earlier epochs first."""

    def __init__(self, run_dir: Path, conf=None):
        self.hparams = hyperparameters(conf) if conf is not None else {}
        need_extra("tensorboard", "logger=tensorboard")  # torch's writer needs the tensorboard package
        from torch.utils.tensorboard import SummaryWriter

        self.writer_class, self.run_dir, self.writer = SummaryWriter, Path(run_dir), None
        self.dir = self.run_dir / TENSORBOARD_DIR

    def add(self, row: dict) -> None:
        for key, value in row.items():
            if key != "epoch" and numeric(value):
                self.writer.add_scalar(tag(key), value, global_step=int(row["epoch"]))

    def log_epoch(self, row: dict) -> None:
        if self.writer is None:
            fresh = not any(self.dir.glob("events.out.tfevents.*"))
            self.writer = self.writer_class(log_dir=str(self.dir), purge_step=int(row["epoch"]))
            for earlier in earlier_rows(self.run_dir, int(row["epoch"])) if fresh else []:
                self.add(earlier)
        self.add(row)
        self.writer.flush()  # an epoch's scalars are on disk when the next epoch starts

    def finish(self, results: Optional[dict], failed: bool) -> None:
        if self.writer is not None:
            if results and self.hparams:  # the HParams view: this run's settings beside its final scores, in
                # tensorboard/hparams/ (its own event file, which the epochs' files never purge)
                finals = {f"hparams/{k}": v for k, v in results.items() if k.endswith(("_final", "_best"))
                          and numeric(v)}
                self.writer.add_hparams(self.hparams, finals, run_name="hparams")
            self.writer.close()


def tag(key: str) -> str:
    """An epoch row's key as a TensorBoard tag, grouped by split: ``train/loss``, ``train/loss_ce``, ``train/lr``,
    ``test/acc``, ``test/ema_acc`` (an evaluated model's), ``val/acc``, ``time/seconds``."""
    for split in ("train", "test", "val"):
        if key.startswith(f"{split}_"):
            return f"{split}/{key[len(split) + 1:]}"
        model, found, metric = key.partition(f"_{split}_")
        if found:
            return f"{split}/{model}_{metric}"
    if key.startswith("loss_") or key == "lr":
        return f"train/{key}"
    return f"time/{key}" if key == "seconds" else f"other/{key}"


def hyperparameters(conf) -> dict:
    """The run's settings as TensorBoard's HParams take them: every scalar of its configuration, flattened
    (``method.lambda_long``, ``optim.lr``, ``seed``, ...)."""
    out: dict = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            elif isinstance(value, (int, float, str, bool)) and not name.startswith(("report.", "logger.")):
                out[name] = value

    walk(dataclasses.asdict(conf), "")
    return out


class CSVTracker:
    """``logger=csv``: ``<run_dir>/metrics.csv``, one row per epoch, the keys of metrics.jsonl as columns (in
    their order of first appearance; a key an epoch lacks is an empty cell). Rows are appended; the file is
    written whole (atomically) at a launch's first row, from the earlier epochs of metrics.jsonl (a resumed run
    trains the later ones again), and when a row brings a new column."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.path = Path(run_dir), Path(run_dir) / CSV_FILE
        self.columns: list[str] = []
        self.rows: Optional[list[dict]] = None  # None until the launch's first row

    def write_all(self) -> None:
        def write(f):
            writer = csv.DictWriter(f, fieldnames=self.columns, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)

        atomic_write(self.path, write)

    def log_epoch(self, row: dict) -> None:
        rewrite = self.rows is None
        if rewrite:
            self.rows = earlier_rows(self.run_dir, int(row["epoch"]))
        self.rows.append(row)
        new = [k for r in (self.rows if rewrite else [row]) for k in r if k not in self.columns]
        self.columns += list(dict.fromkeys(new))
        if rewrite or new:
            self.write_all()
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns, restval="", extrasaction="ignore").writerow(row)

    def finish(self, results: Optional[dict], failed: bool) -> None:
        pass  # every row is on disk already


def build_trackers(conf, run_dir: Path) -> Tracker:
    """The trackers ``conf.logger`` turns on, for the run in ``run_dir``: one, several (:class:`Trackers`) or
    :class:`NoTracker`."""
    built = []
    try:
        for name in conf.logger.trackers():
            if name == "wandb":
                built.append(WandbTracker(conf.logger, conf, run_dir))
            elif name == "tensorboard":
                built.append(TensorBoardTracker(run_dir, conf))
            elif name == "csv":
                built.append(CSVTracker(run_dir))
    except BaseException:
        with contextlib.suppress(Exception):  # a wandb run already opened is not left running
            Trackers(built).finish(None, failed=True)
        raise
    if not built:
        return NoTracker()
    return built[0] if len(built) == 1 else Trackers(built)
