"""The run's configuration schemas, shared by every component, and :func:`validate`.

Every YAML option under ``lstsd/conf/<group>/`` extends a schema stored in Hydra's ConfigStore as ``base_<name>``:
the run-wide ones here (optimisers, schedule, trainer, logger, the root :class:`Config`), and each dataset's,
model's and method's beside its code (registered with it, :mod:`lstsd.registry`), extending the bases here
(:class:`DatasetConfig`, :class:`ModelConfig`, :class:`MethodConfig`). Hydra rejects unknown keys and wrong
types while composing; :func:`validate` turns the composed config into dataclass objects, whose
``__post_init__`` checks the ranges. Any problem raises :class:`~lstsd.errors.ConfigError` (one line, exit 2).
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lstsd.errors import ConfigError, finite, one_line, require, require_choice
from lstsd.registry import DATASETS, METHODS, MODELS

__all__ = ["Config", "ConfigError", "DatasetConfig", "ModelConfig", "MethodConfig", "validate"]

# --------------------------------------------------------------------------- dataset
# accuracy, top-5 accuracy (added by itself above five classes), binary F1 of class 1, Matthews correlation; in %
METRICS = ("acc", "top5", "f1", "mcc")


@dataclass
class DatasetConfig:
    """Keys every dataset has; a dataset's own keys extend it in its module (e.g. lstsd.data.readers.mnist1d)."""
    kind: ClassVar[str] = "image"  # what it feeds the model: image (any tensor) or text (the model tokenises)
    name: str = MISSING  # the registered name (lstsd.registry.DATASETS), filled in by its schema
    root: str = "data"
    batch_size: int = 128
    eval_batch_size: int = 1000
    val_fraction: float = 0.0  # carved reproducibly from the training split (split_seed)
    split_seed: int = 0
    augment: bool = True
    download: bool = False  # torchvision download of the real files, when online
    # memory: the split on the training device; torchvision: DataLoader + transforms; stream: DataLoader workers
    # read the samples from disk (lstsd.data.loaders.stream)
    loader: str = "memory"
    num_workers: int = 2  # worker processes of the torchvision and stream loaders
    metrics: list[str] = field(default_factory=lambda: ["acc"])  # evaluated on every split: acc, f1, mcc
    headline: str = "acc"  # the metric that picks the best epoch and fills the tables

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "dataset.batch_size", "an integer >= 1", self.batch_size)
        require(set(self.metrics) <= set(METRICS) and "acc" in self.metrics, "dataset.metrics",
                "a list of " + ", ".join(METRICS) + " that holds acc", list(self.metrics))
        require_choice("dataset.headline", self.headline, tuple(self.metrics))
        require_choice("dataset.loader", self.loader, ("memory", "torchvision", "stream"))
        require(self.num_workers >= 0, "dataset.num_workers", "an integer >= 0", self.num_workers)
        require(self.eval_batch_size >= 1, "dataset.eval_batch_size", "an integer >= 1", self.eval_batch_size)
        require(0.0 <= self.val_fraction < 1.0, "dataset.val_fraction", "a number in [0, 1)", self.val_fraction)
        require(0 <= self.split_seed < 2**63, "dataset.split_seed", "an integer in [0, 2^63)", self.split_seed)

    def inputs(self) -> list[str]:
        """The files and folders this dataset reads, whose content is part of what identifies a run
        (:func:`lstsd.fileio.content_fingerprint`): ``dataset.path`` where the dataset has one; a dataset read from
        ``dataset.root`` names its own files (a generated one none: its keys say what it holds)."""
        path = getattr(self, "path", None)
        return [path] if isinstance(path, str) else []


# --------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    """Keys every model has; an architecture's own knobs (depth, width, ...) extend it in its module."""
    kind: ClassVar[str] = "image"  # image models read tensors; text models (kind text) tokenise sentences
    arch: str = MISSING  # the registered builder (lstsd.registry.MODELS), filled in by its schema
    name: str = MISSING  # display name (results, tables, folder names); for arch=timm the timm model name
    dropout: float = 0.0

    def __post_init__(self) -> None:
        require(0.0 <= self.dropout < 1.0, "model.dropout", "a number in [0, 1)", self.dropout)


# --------------------------------------------------------------------------- optimiser (Hydra instantiate)
@dataclass
class OptimConfig:
    _target_: str = MISSING
    _partial_: bool = True
    lr: float = 0.1
    weight_decay: float = 0.0
    foreach: Optional[bool] = None  # null: torch's default (multi-tensor updates on CUDA)
    fused: Optional[bool] = None  # true: one fused kernel per step (CUDA, and CPU with recent torch)

    def __post_init__(self) -> None:
        require(self.lr > 0, "optim.lr", "a number > 0", self.lr)
        require(self.weight_decay >= 0, "optim.weight_decay", "a number >= 0", self.weight_decay)
        require(not (self.foreach and self.fused), "optim.fused", "false or null when optim.foreach=true",
                self.fused)


@dataclass
class SGDConfig(OptimConfig):
    _target_: str = "torch.optim.SGD"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 <= self.momentum < 1.0, "optim.momentum", "a number in [0, 1)", self.momentum)
        require(not self.nesterov or self.momentum > 0, "optim.nesterov", "false when optim.momentum=0",
                self.nesterov)


@dataclass
class AdamConfig(OptimConfig):
    _target_: str = "torch.optim.Adam"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas), "optim.betas",
                "[beta1, beta2], each in [0, 1)", list(self.betas))
        require(self.eps >= 0, "optim.eps", "a number >= 0", self.eps)


# --------------------------------------------------------------------------- learning-rate schedule
SCHEDULES = ("constant", "step", "cosine")


@dataclass
class ScheduleConfig:
    name: str = MISSING
    milestones: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])  # fractions of training (of a cycle)
    gamma: float = 0.1
    lr_min: float = 0.0
    # a linear warm-up over the run's first epochs, from lr0 / its updates to lr0, before the schedule; null: none
    warmup_epochs: Optional[float] = None

    def __post_init__(self) -> None:
        require_choice("schedule.name", self.name, SCHEDULES)
        require(self.warmup_epochs is None or self.warmup_epochs >= 0, "schedule.warmup_epochs",
                "null or a number of epochs >= 0", self.warmup_epochs)
        require(all(0 < m < 1 for m in self.milestones), "schedule.milestones", "fractions in (0, 1)",
                list(self.milestones))
        require(0 < self.gamma <= 1, "schedule.gamma", "a number in (0, 1]", self.gamma)
        require(self.lr_min >= 0, "schedule.lr_min", "a number >= 0", self.lr_min)


# --------------------------------------------------------------------------- trainer, logger, method
@dataclass
class TrainerConfig:
    epochs: int = 30
    device: str = "auto"
    resume: bool = True  # continue from last.pt in the run directory when it exists
    checkpoint: bool = True
    # epochs between checkpoints (the last epoch and a stop signal always write one): tiny models whose epoch
    # takes a fraction of a second spend a tenth of their time writing last.pt after every epoch
    checkpoint_every: int = 1
    # also keep best.pt: the weights of the best epoch so far (the headline metric on the validation split when
    # there is one, else on the test split), with that epoch and score
    save_best: bool = False
    progress: bool = True
    skip_completed: bool = True  # a run directory with a completed results.json is not trained again
    # resume a run folder (or its last.pt) that belongs to another configuration (see RELAUNCH_KEYS): the
    # folder then holds this configuration, its history continued
    force_resume: bool = False
    precision: str = "fp32"  # fp32, bf16 or fp16: autocast with fp32 master weights (fp16 adds a GradScaler)
    channels_last: bool = False  # NHWC model and inputs (faster convolutions with tensor cores)
    compile: bool = False  # torch.compile the model (module.compile(): state_dict keys unchanged)
    # torch's intra-op CPU threads for this run; null: 1 on the CPU (a CPU run's numbers depend on its thread count,
    # so the same command gives the same numbers on any machine, and a busy core cannot stall a step), torch's
    # default on a GPU; a sweep's launcher shares the cores out among the jobs that leave it null
    threads: Optional[int] = None
    # at most this many training batches an epoch and evaluation batches a split (a quick smoke run of one's own
    # configuration); null: all
    limit_batches: Optional[int] = None
    clip_grad_norm: Optional[float] = None  # clip the gradients' total L2 norm to this before each step; null: no

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "trainer.epochs", "an integer >= 1", self.epochs)
        require(self.limit_batches is None or self.limit_batches >= 1, "trainer.limit_batches",
                "null or an integer >= 1", self.limit_batches)
        require(self.clip_grad_norm is None or self.clip_grad_norm > 0, "trainer.clip_grad_norm",
                "null or a number > 0", self.clip_grad_norm)
        require(self.checkpoint_every >= 1, "trainer.checkpoint_every", "an integer >= 1 (epochs)",
                self.checkpoint_every)
        require_choice("trainer.device", self.device, ("auto", "cpu", "cuda"))
        require_choice("trainer.precision", self.precision, ("fp32", "bf16", "fp16"))
        require(self.threads is None or self.threads >= 1, "trainer.threads", "null or an integer >= 1",
                self.threads)


@dataclass
class LoggerConfig:
    """Where a run reports besides its files. Each tracker is a switch of its own, so that the options of the
    logger group merge instead of replacing one another: ``logger=[wandb,tensorboard]`` turns both on, and
    ``logger=none`` none."""
    TRACKERS: ClassVar[tuple[str, ...]] = ("wandb", "tensorboard", "csv")  # the group's options besides none
    wandb: bool = False  # a Weights & Biases run per job (the keys below)
    tensorboard: bool = False  # event files under <run_dir>/tensorboard/
    csv: bool = False  # <run_dir>/metrics.csv: a row per epoch, the columns of metrics.jsonl
    project: str = "lstsd"
    entity: Optional[str] = None
    group: Optional[str] = None  # null: <experiment name>/<sweep folder>, or <experiment name>/<run folder>
    job_type: Optional[str] = None  # null: the method's label
    run_name: Optional[str] = None  # null: the run directory's name
    tags: list[str] = field(default_factory=list)
    mode: Optional[str] = None  # online, offline, disabled; null: WANDB_MODE or wandb's default

    def __post_init__(self) -> None:
        require(self.mode in (None, "online", "offline", "disabled"), "logger.mode",
                "null, online, offline or disabled", self.mode)

    def trackers(self) -> tuple[str, ...]:
        """The trackers this run reports to, in the order of :attr:`TRACKERS`."""
        return tuple(t for t, on in zip(self.TRACKERS, (self.wandb, self.tensorboard, self.csv)) if on)


@dataclass
class MethodConfig:
    """Keys every method has; a method's hyper-parameters extend it beside its code (lstsd.methods.*)."""
    name: str = MISSING  # the registered name (lstsd.registry.METHODS), filled in by its schema
    label: str = "${.name}"  # how results and tables name this configuration (variants override it)
    # the learning-rate schedule this method prescribes, replacing schedule.name (SD and SE: cosine, restarted in
    # each mini-generation); null: the run's schedule
    schedule: Optional[str] = None

    def __post_init__(self) -> None:
        require(self.schedule is None or self.schedule in SCHEDULES, "method.schedule",
                "null or one of " + ", ".join(SCHEDULES), self.schedule)

    def check(self, cfg: "Config") -> None:
        """Checks that need the rest of the run's configuration (e.g. trainer.epochs); override as needed."""


ADJUSTMENTS = ("holm", "bh", "none")


@dataclass
class ReportConfig:
    """What the report of a sweep tests and shows (the table printed at its end; ``lstsd-report`` reads the same
    keys from the runs' saved configs). None of it changes what is trained."""
    # the comparisons declared before the runs, "A:B" (A minus B on the seeds both ran, method labels), tested as
    # one family; null: none declared, every row against the baseline as an exploratory family; []: no tests
    compare: Optional[list[str]] = None
    baseline: str = "vanilla"  # the row every Δ column is taken to
    adjust: str = "holm"  # the family-wise adjustment beside each raw p: holm, bh (Benjamini-Hochberg q), none
    # mark the variant of each method picked by a statistic, as selected after looking (no p-value): val (the
    # mean final validation score: a grid search's pick) or final (the mean final test score)
    select: Optional[str] = None
    note: Optional[str] = None  # a line printed above the table (e.g. "exploratory: 5 seeds")
    sort: str = "launch"  # row order: launch (the sweep's order) or final (mean final score, best first)
    out: Optional[str] = None  # a folder inside the sweep folder for report.md, report.csv and the plots
    # rows "NAME": whichever of the listed method labels has the higher mean best score (LSTSD Table 1's SD cell)
    better_of: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for pair in self.compare or []:
            a, sep, b = str(pair).partition(":")
            require(bool(sep and a and b and ":" not in b and a != b), "report.compare",
                    "a list of A:B (two different method labels)", pair)
        require_choice("report.adjust", self.adjust, ADJUSTMENTS)
        require(self.select in (None, "val", "final"), "report.select", "null, val or final", self.select)
        require_choice("report.sort", self.sort, ("launch", "final"))
        for name, labels in self.better_of.items():
            require(len(labels) >= 2, f"report.better_of.{name}", "a list of two or more method labels",
                    list(labels))

    def pairs(self) -> Optional[list[tuple[str, str]]]:
        """The declared comparisons as (A, B), or None when none are declared."""
        return None if self.compare is None else [tuple(p.split(":")) for p in self.compare]


@dataclass
class Config:
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    method: MethodConfig = MISSING
    schedule: ScheduleConfig = MISSING
    optim: OptimConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    seed: int = 0
    name: str = "default"  # experiment name: output folders and grouping
    # modules imported in every process before the configuration is validated (and, given on the command line,
    # before it is composed): a user's own datasets, models and methods, registered by their decorators
    imports: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        require_finite(self)
        require(0 <= self.seed < 2**63, "seed", "an integer in [0, 2^63)", self.seed)
        require_name(self.name)
        for registry, value in ((DATASETS, self.dataset.name), (MODELS, self.model.arch),
                                (METHODS, self.method.name)):
            registry.get(value)  # a name changed on the command line (method.name=...) must be registered too
        text_data, text_model = self.dataset.kind == "text", self.model.kind == "text"
        if text_data != text_model:
            kind = "a text model (model=textcnn, model=bert)" if text_data else "an image model (not textcnn, bert)"
            raise ConfigError(f"model={self.model.name} is invalid for dataset={self.dataset.name}: allowed {kind}")
        if text_data and self.dataset.pair:
            require(self.model.text_input == "pair", "model.text_input",
                    f"pair (dataset={self.dataset.name} is a sentence-pair task)", self.model.text_input)
        if self.method.schedule is not None:  # the method's own schedule is the one this run trains with
            self.schedule.name = self.method.schedule
        require(self.schedule.warmup_epochs is None or self.schedule.warmup_epochs < self.trainer.epochs,
                "schedule.warmup_epochs", f"fewer epochs than the run's {self.trainer.epochs}",
                self.schedule.warmup_epochs)
        self.method.check(self)


def typed(saved) -> DictConfig:
    """A saved configuration (a run's ``.hydra/config.yaml``, resolved) as the typed configuration it was composed
    as: each group's node merged into its schema (a dataset's, model's and method's by its registered name), so
    that :func:`validate` checks it as it checked the run. A key the schemas do not know is a ConfigError, unless it
    is null (a key removed since, left at its null default, changed nothing)."""
    node = saved if isinstance(saved, DictConfig) else OmegaConf.create(saved)
    optims = (SGDConfig, AdamConfig)
    try:
        schemas = {"dataset": DATASETS.get(node.dataset.name).schema, "model": MODELS.get(node.model.arch).schema,
                   "method": METHODS.get(node.method.name).schema, "schedule": ScheduleConfig,
                   "trainer": TrainerConfig, "logger": LoggerConfig, "report": ReportConfig,
                   "optim": next((s for s in optims if set(node.optim) <= {f.name for f in dataclasses.fields(s)}),
                                 OptimConfig)}
        root = OmegaConf.structured(Config)
        for key in node:
            if key not in schemas:
                root[key] = node[key]
                continue
            known = {f.name for f in dataclasses.fields(schemas[key])}
            values = {k: v for k, v in OmegaConf.to_container(node[key]).items() if k in known or v is not None}
            root[key] = OmegaConf.merge(OmegaConf.structured(schemas[key]), values)  # a key removed since: if null
    except ConfigError:
        raise
    except OmegaConfBaseException as e:
        raise ConfigError(one_line(e)) from None
    return root


def require_finite(node, key: str = "") -> None:
    """Every number of a configuration is finite: NaN and +-inf are refused wherever they appear (a range check
    such as ``lr > 0`` lets ``inf`` through, and training would only fail later)."""
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            require_finite(getattr(node, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            require_finite(value, f"{key}[{i}]")
    elif isinstance(node, float):
        require(finite(node), key, "a finite number", node)


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=,-]*")


def require_name(name: str) -> None:
    """The experiment name is a folder under outputs/ and multirun/: nothing that climbs out of it or splits it."""
    require(bool(NAME.fullmatch(str(name))) and ".." not in str(name), "name",
            "letters, digits and . _ - + = , (a folder name, not a path)", name)


def unknown_key(key: str, known) -> ConfigError:
    """The error of a key the schema does not have, with the closest valid name (a misspelt key on the command
    line and an appended ``+key=value`` get the same line)."""
    parent, _, leaf = key.rpartition(".")
    known = sorted(known)
    close = difflib.get_close_matches(leaf, known, n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
    return ConfigError(f"{key} is not a configuration key: {hint}allowed keys of {parent or 'the root'}: "
                       f"{', '.join(known)}")


def check_keys(cfg: DictConfig, key: str = "") -> None:
    """Every key of ``cfg`` is a field of its schema: Hydra lets ``+key=value`` append to any node, and
    converting the config to objects would drop such a key without a word."""
    schema = OmegaConf.get_type(cfg)
    if dataclasses.is_dataclass(schema):
        known = {f.name for f in dataclasses.fields(schema)}
        for k in cfg.keys():
            if k not in known and not (not key and k == "hydra"):
                raise unknown_key(f"{key}.{k}" if key else str(k), known)
    for k in cfg.keys():
        child = cfg._get_node(k)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            check_keys(child, f"{key}.{k}" if key else str(k))


def validate(cfg: DictConfig) -> Config:
    """Check a composed config; return it as typed objects or raise :class:`ConfigError` (one line)."""
    check_keys(cfg)
    try:
        obj = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except OmegaConfBaseException as e:
        cause = e.__cause__ if isinstance(e.__cause__, ConfigError) else None
        if cause is not None:
            raise cause from None
        missing = re.search(r"[Mm]issing mandatory value: ([\w.]+)", str(e))
        if missing:  # a key the chosen option leaves without a value (???)
            key = missing.group(1)
            if "." not in key and getattr(e, "full_key", None):  # "... missing mandatory value: path", full_key
                key = str(e.full_key)
            raise ConfigError(f"{key} is missing: the chosen option has no value for it (give {key}=...)") from None
        raise ConfigError(one_line(e)) from None
    if not isinstance(obj, Config):
        raise ConfigError("the configuration does not follow the lstsd schema (compose it from lstsd/conf/config.yaml)")
    return obj
