"""``run(cfg) -> results``: the single entry the CLI, the tests, sweeps and benchmarks call.

The composition root of a run: it validates the config once (one typed :class:`~lstsd.config.Config` from
here on), builds data and model, resolves the method's teacher (:func:`lstsd.training.teachers.resolve`: a teacher
run is trained by this same function), then builds the method with it, the optimiser and the schedule into a
:class:`~lstsd.training.trainer.Trainer`.
"""
from __future__ import annotations

import contextlib
import logging
import random
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from lstsd import distributed, machine
from lstsd.config import Config, compose, validate
from lstsd.config.identity import differences, run_identity
from lstsd.data import build_data
from lstsd.training import checkpoint, optimizers
from lstsd.training.trainer import Callback, Trainer, autocast
from lstsd.fileio import content_fingerprint
from lstsd.errors import EXTRAS, ConfigError, RefusedRelaunch, TrainingError, need_extra, one_line
from lstsd.training.trackers import build_trackers
from lstsd.methods import build_method
from lstsd.methods.base import RunContext
from lstsd.methods.teacher import TeacherConfig
from lstsd.models import build_model, check_model, not_logits
from lstsd.training.console import sweep_line
from lstsd.training.rundir import RunDir, failure_record, read_json, sweep_progress, write_json
from lstsd.training.schedules import build_schedule
from lstsd.training import teachers

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda is invalid: no CUDA device is available (allowed auto, cpu)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def hydra_job():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def check_before_data(conf: Config, teacher: Optional[torch.nn.Module] = None) -> None:
    """What can be checked before the data is loaded beyond the schemas: the model's builder (a torchvision or
    timm name, an import path, pretrained weights in the cache), the optional packages its trackers and metrics
    need (a missing one names its extra) and a method's teacher source (none is needed where the caller gives the
    teacher, ``teacher``)."""
    for name in conf.logger.trackers():
        if name in EXTRAS:
            need_extra(name, f"logger={name}")
    if {"f1", "mcc"} & set(conf.dataset.metrics):
        need_extra("sklearn", f"dataset.metrics={list(conf.dataset.metrics)}")
    check_model(conf.model)
    if teacher is None and isinstance(conf.method, TeacherConfig):
        conf.method.require_teacher()


def assemble(conf: Config, run_dir: Path, overrides: list[str], teacher: Optional[torch.nn.Module] = None,
             identity: Optional[dict] = None, callbacks: Sequence[Callback] = ()) -> Trainer:
    """Seed, then build data, model, optimiser, the method (with the teacher it resolves first), schedule and
    trackers into a :class:`Trainer` (ready to fit; nothing trained yet but a teacher run)."""
    check_before_data(conf, teacher)
    device = distributed.local_device(resolve_device(conf.trainer.device))
    threads = conf.trainer.threads or (1 if device.type == "cpu" else None)  # see TrainerConfig.threads
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cpu":
        machine.keep_freed_memory()
    seed_everything(conf.seed)
    data = build_data(conf.dataset, conf.seed, device, channels_last=conf.trainer.channels_last,
                      rank=distributed.rank(), world_size=distributed.world_size(), model_cfg=conf.model)
    model = build_model(conf.model, data.info.num_classes, data.info.input_shape, data.info.vocab).to(device)
    dry_forward(model, data, conf)
    if conf.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if conf.trainer.compile:
        model.compile()  # in place: checkpoints and frozen copies keep the plain parameter names
    net = model  # what the training forward runs: the model, or its DDP wrapper (gradients averaged)
    if distributed.active():
        # buffers are broadcast after each step instead (Trainer.step), so snapshots and EMA teachers agree
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                                        broadcast_buffers=False)
    try:
        optimizer = optimizers.build(instantiate(conf.optim, _convert_="all"), model.parameters())
    except (ValueError, TypeError) as e:  # the optimiser's own argument checks, beyond the schema's
        raise ConfigError(f"optim: {conf.optim._target_} refuses its arguments: {one_line(e)}") from None
    steps = min(len(data.train), conf.trainer.limit_batches or len(data.train))  # updates an epoch
    probe = data.train.get(torch.arange(min(2, data.info.num_train), device=device), None).x
    student = teachers.Student(data.info, device, probe, conf.model, tuple(overrides), conf.dataset.root, conf.seed)
    resolved = teachers.resolve(conf.method, student, teacher, compose.compose, run)  # before the method exists
    ctx = RunContext(model=model, info=data.info, device=device, epochs=conf.trainer.epochs, steps_per_epoch=steps,
                     train=data.train, seed=conf.seed, net=net, teacher=resolved,
                     autocast=autocast(device.type, conf.trainer.precision),
                     eval_batch_size=conf.dataset.eval_batch_size)
    method = build_method(conf.method, ctx)
    scheduler = build_schedule(conf.schedule, optimizer, steps, conf.trainer.epochs, method.lr_cycles)
    tracker = build_trackers(conf, run_dir) if distributed.is_main() else None  # only rank 0 reports
    return Trainer(conf, model, method, data, optimizer, scheduler, run_dir, identity, tracker, callbacks)


def dry_forward(model, data, conf: Config) -> None:
    """One forward pass of two training samples in eval mode (no statistics updated, no random draw taken): a
    model that does not fit the input is refused before training, naming the model and the input shape."""
    index = torch.arange(min(2, data.info.num_train), device=data.train.y.device)
    batch = data.train.get(index, torch.Generator().manual_seed(0))
    shape = "x".join(map(str, data.info.input_shape))
    where = f"model={conf.model.name} does not fit the input of dataset={conf.dataset.name} (shape {shape})"
    model.eval()
    try:
        with torch.no_grad():
            out = model(batch.x)
    except Exception as e:  # noqa: BLE001 - whatever the layers raise: the shapes do not fit
        raise ConfigError(f"{where}: {type(e).__name__}: {one_line(e)}") from None
    finally:
        model.train()
    if (what := not_logits(out)) is not None:
        raise ConfigError(f"{where}: it returns {what}, not a floating-point tensor of logits (batch, "
                          f"{data.info.num_classes}) (a model returning several outputs: wrap it to return the "
                          "logits alone)")
    if tuple(out.shape) != (len(index), data.info.num_classes):
        raise ConfigError(f"{where}: it gives outputs of shape {tuple(out.shape)}, not (batch, "
                          f"{data.info.num_classes})")


HOW = ("relaunch it with its own overrides (.hydra/overrides.yaml), launch into a new folder (another name= or "
       "hydra.run.dir=), or set trainer.force_resume=true to resume it anyway")


def listed(diff: list[str]) -> str:
    """The first differences of two run identities, for a one-line message."""
    return "; ".join(diff[:4]) + ("; ..." if len(diff) > 4 else "")


def inputs_identity(conf: Config) -> dict:
    """What a run reads, by content rather than by path: its data files and folders
    (:meth:`~lstsd.config.DatasetConfig.inputs`, :func:`~lstsd.fileio.content_fingerprint`), a teacher run's own
    fingerprint, length, status, score and weights (its last.pt's content), a teacher file's content. Recorded in
    the folder's .hydra/inputs.json."""
    out = {"data": content_fingerprint(conf.dataset.inputs())}
    teacher_run = getattr(conf.method, "teacher_run", None)
    if teacher_run is not None:
        teacher = RunDir(Path(str(teacher_run)).expanduser())
        record = teacher.read_results() or {}
        out["teacher_run"] = {k: record.get(k) for k in ("status", "fingerprint", "epochs", "test_acc_final")}
        out["teacher_run"]["weights"] = content_fingerprint([teacher.checkpoint])  # "missing" where it has none
    if getattr(conf.method, "teacher_checkpoint", None) is not None:
        out["teacher_checkpoint"] = content_fingerprint([str(conf.method.teacher_checkpoint)])
    return out


def claim_inputs(files: RunDir, conf: Config, trained: bool) -> None:
    """Refuse a folder that has trained on other inputs (:func:`inputs_identity`), then record this run's."""
    inputs = inputs_identity(conf)
    if trained and not files.inputs.exists() and not conf.trainer.force_resume:
        log.warning(f"{files.path} was trained before lstsd recorded a run's inputs: they are not checked, nor "
                    "recorded now (trainer.force_resume=true records this launch's)")
        return
    saved = read_json(files.inputs) if trained and files.inputs.exists() else None
    diff = differences(saved, inputs, "inputs") if saved is not None else []
    if diff and not conf.trainer.force_resume:
        read = [*conf.dataset.inputs(), *(str(getattr(conf.method, k)) for k in ("teacher_run", "teacher_checkpoint")
                                          if getattr(conf.method, k, None) is not None)]
        raise ConfigError(f"{files.path} holds a run of other inputs ({listed(diff)}: the content of "
                          f"{', '.join(read)} differs from its first launch's): {HOW}")
    if saved != inputs:
        files.inputs.parent.mkdir(parents=True, exist_ok=True)
        write_json(inputs, files.inputs)


def claim(files: RunDir, cfg: DictConfig, conf: Config, overrides: list[str], job) -> dict:
    """Check that the run folder belongs to this configuration, then record it there (``.hydra/``, once); return
    the run's identity. Another configuration's folder (once it has trained: a checkpoint, an epoch's metrics
    or results) or checkpoint is refused before anything is written: a :class:`ConfigError` that says what
    differs (:data:`lstsd.config.identity.RELAUNCH_KEYS` may differ)."""
    ident, force = run_identity(cfg), conf.trainer.force_resume
    saved = files.read_config()
    trained = bool(files.checkpoint.exists() or files.read_metrics() or files.completed())
    if saved is not None and not trained:
        files.config.unlink()  # a run that failed before its first epoch (a bad input) holds nothing to keep
        saved = None
    diff = differences(run_identity(saved), ident) if saved is not None else []
    if diff and not force:
        raise ConfigError(f"{files.path} holds a run of another configuration ({listed(diff)}): {HOW}")
    if conf.trainer.resume and files.checkpoint.exists() and not force:
        stored = checkpoint.stored_identity(files.checkpoint)
        foreign = ["it records none"] if stored is None else differences(run_identity(stored), ident)
        if foreign:
            raise ConfigError(f"{files.checkpoint} is a checkpoint of another configuration ({listed(foreign)}): "
                              f"delete it, or {HOW}")
    claim_inputs(files, conf, trained)
    if diff and not (files.completed() is not None and conf.trainer.skip_completed):  # forced onto another run
        log.warning(f"{files.path}: resumed with another configuration (trainer.force_resume=true); its .hydra/ "
                    "now records this one")
        files.config.unlink()
    files.write_hydra(cfg, overrides, job)
    return ident


def run(cfg: DictConfig, run_dir: Optional[str | Path] = None, overrides: Optional[list[str]] = None,
        teacher: Optional[torch.nn.Module] = None, callbacks: Sequence[Callback] = ()) -> dict:
    """Validate ``cfg``, build data, model, method, optimiser and schedule, train; return results.json's dict.

    ``run_dir`` and ``overrides`` (the command line ``cfg`` was composed with; a teacher trained on the fly
    starts from it) default to Hydra's output directory and task overrides. ``teacher``: a teacher module for
    the methods that distil from one (KD, LW-KD), in place of the teacher their configuration names. ``callbacks``:
    hooks into the fit (:class:`~lstsd.training.trainer.Callback`). The modules
    of ``cfg.imports`` are imported first, in whatever process runs this. Raises :class:`ConfigError` for bad
    input, before any training.
    """
    compose.import_modules(cfg.get("imports") or [])
    conf = validate(cfg)
    job = hydra_job()
    own_job = run_dir is None  # Hydra's job itself, not a run inside it (a teacher) or through the API
    if own_job:
        run_dir = job.runtime.output_dir
    if overrides is None:
        overrides = list(job.overrides.task) if job is not None else []
    joined = distributed.setup(conf.trainer.device)  # several processes (torchrun, SLURM tasks): one group
    ok = False
    try:
        if not distributed.is_main():
            only_rank_0_writes_logs()
        files = RunDir(distributed.broadcast(str(run_dir)))
        with contextlib.ExitStack() as held:
            problem, ident = None, run_identity(cfg)
            if distributed.is_main():  # rank 0 holds the folder's lock for the run's lifetime
                try:
                    held.enter_context(files.lock())
                    ident = claim(files, cfg, conf, overrides, job if own_job else None)
                except OSError as e:  # an unwritable or read-only run folder
                    problem = ConfigError(f"the run folder {files.path} is not writable: {e.strerror or e} "
                                          f"({e.filename or files.path})")
                except ConfigError as e:
                    problem = e
            refused = distributed.broadcast(None if problem is None else str(problem))
            if problem is not None:
                raise problem
            if refused is not None:
                raise ConfigError(refused)
            results = run_validated(conf, files, overrides, ident, teacher, callbacks)
        ok = True
        return results
    finally:
        if joined:
            distributed.teardown(synchronise=ok)  # after a failure the other ranks may never reach a barrier


def summary(results: dict, folder: Path) -> str:
    """The line that ends a run: the headline metric's final and best test scores, the time, the folder."""
    m = results["headline"]
    return (f"done in {results['wall_seconds']:.1f} s: test {m} final {results[f'test_{m}_final']:.2f}, best "
            f"{results[f'test_{m}_best']:.2f} (epoch {results['best_epoch']}): {folder}")


def job_done(folder: Path, results: dict) -> None:
    """In a sweep, one line for the finished job (:func:`job_line`)."""
    line = job_line(folder, results)
    if line is not None:
        log.info(line)


def job_line(folder: Path, results: Optional[dict] = None, done: Optional[int] = None) -> Optional[str]:
    """The line of a finished job of a sweep (None for a run outside one): how many of the sweep's jobs are done
    and failed, its score (or its error) and time, and the time left. A run prints it as it ends; a launcher whose
    jobs run in processes of their own prints it as each one ends (their consoles are their log files), with
    ``done`` its own count of the jobs ended (two ending together are then told apart)."""
    from lstsd.training.trackers import sweep_folder

    sweep = sweep_folder(folder)
    results = results if results is not None else RunDir(folder).read_results()
    if sweep is None or results is None:
        return None
    finished, failed, total, elapsed = sweep_progress(sweep)
    done = finished if done is None else done
    job = Path(folder).resolve().relative_to(sweep).as_posix().replace(",", " ")
    if results.get("status") != "completed":
        score = f"failed ({str(results.get('error', ''))[:100]})"
    else:
        score = f"{results['test_' + results['headline'] + '_final']:.2f} final"
    return sweep_line(done, total, failed, job, score, results.get("wall_seconds", 0.0), elapsed)


def only_rank_0_writes_logs() -> None:
    """Ranks other than 0 drop the log files their process was given (Hydra's ``<job>.log``): one copy of each
    line. Their console shows warnings only."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
        elif isinstance(handler, logging.StreamHandler):
            handler.setLevel(max(handler.level, logging.WARNING))


def run_validated(conf: Config, files: RunDir, overrides: list[str], ident: Optional[dict] = None,
                  teacher: Optional[torch.nn.Module] = None, callbacks: Sequence[Callback] = ()) -> dict:
    done = distributed.broadcast(files.completed())  # rank 0's view, for every rank
    if done is not None and done.get("epochs", conf.trainer.epochs) > conf.trainer.epochs:
        raise ConfigError(f"trainer.epochs={conf.trainer.epochs} is invalid: {files.path} holds a completed run of "
                          f"{done['epochs']} epochs (allowed {done['epochs']} or more, which extends it)")
    if done is not None and done.get("epochs", conf.trainer.epochs) < conf.trainer.epochs:
        log.warning(f"{files.path}: extending a completed run of {done['epochs']} epochs to {conf.trainer.epochs}")
        done = None
    if done is not None and conf.trainer.skip_completed:
        log.warning(f"{files.path} already holds a completed run: skipped (trainer.skip_completed=false reruns it)")
        return done
    trainer, results, failed = None, None, True
    try:
        try:
            trainer = assemble(conf, files.path, overrides, teacher, ident, callbacks)
        except OSError as e:  # an unreadable data file or folder: bad input
            raise ConfigError(f"{e.filename or 'a file'}: {e.strerror or e}") from None
        trainer.check_relaunch()  # every rank (each resumes from the file), before the first line: a refused
        # relaunch logs nothing
        if distributed.is_main():  # only rank 0 writes files and logs
            log.info(f"{conf.method.label} on {conf.dataset.name} / {conf.model.name}, seed {conf.seed}, "
                     f"{conf.trainer.epochs} epochs: {files.path}")
        try:
            results = trainer.fit()
            if distributed.is_main():
                log.info(summary(results, files.path))
                job_done(files.path, results)
        except OSError as e:  # a full disk or a folder gone read-only while training: one line
            raise TrainingError(f"cannot write {e.filename or files.path}: {e.strerror or e} (errno {e.errno})") from e
        failed = False
        return results
    except RefusedRelaunch:
        raise  # the folder's run is untouched: its results.json (if any) still describes it
    except Exception as e:  # a bad input found while building (missing data, a teacher that does not fit) too
        if distributed.is_main():
            try:
                files.write_results(failure_record(conf, e))
            except OSError as write_error:  # the disk that failed the run may not take this file either
                log.warning(f"could not mark {files.results} failed: {write_error.strerror or write_error}")
        raise
    finally:
        if trainer is not None:
            trainer.tracker.finish(results, failed)
        del trainer  # the traceback of a failure keeps this frame: the DDP model and optimiser must not outlive
        # the process group (gloo can abort at exit)
