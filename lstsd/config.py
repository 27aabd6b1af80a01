"""Structured-config schemas (Hydra ConfigStore) and the one place where configurations are validated.

Every YAML option under ``conf/<group>/`` starts from a schema stored here as ``base_<option>`` (for the
method group, one per registered method), so Hydra rejects unknown keys and wrong types while composing;
:func:`validate` then turns the composed config into dataclass objects, whose ``__post_init__`` checks the
ranges. Any problem raises :class:`ConfigError`, which the CLI prints as one line with exit code 2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A bad configuration or input: reported as one line, exit code 2, before training starts."""


def require(ok: bool, key: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: allowed {allowed}")


def require_choice(key: str, value: Any, choices: tuple) -> None:
    require(value in choices, key, "one of " + ", ".join(map(str, choices)), value)


def finite(*values: float) -> bool:
    """Whether every value is a finite number (NaN and +-inf are not)."""
    return all(math.isfinite(v) for v in values)


# --------------------------------------------------------------------------- dataset
METRICS = ("acc", "f1", "mcc")  # accuracy, binary F1 of class 1, Matthews correlation; all in % (x 100)


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str = "data"
    batch_size: int = 128
    eval_batch_size: int = 1000
    val_fraction: float = 0.0  # carved reproducibly from the training split (split_seed)
    split_seed: int = 0
    augment: bool = True
    download: bool = False  # torchvision download of the real files, when online
    loader: str = "memory"  # memory: the split on the training device; torchvision: DataLoader + transforms
    num_workers: int = 2  # worker processes of the torchvision loader
    metrics: list[str] = field(default_factory=lambda: ["acc"])  # evaluated on every split: acc, f1, mcc
    headline: str = "acc"  # the metric that picks the best epoch and fills the tables

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "dataset.batch_size", "an integer >= 1", self.batch_size)
        require(set(self.metrics) <= set(METRICS) and "acc" in self.metrics, "dataset.metrics",
                "a list of " + ", ".join(METRICS) + " that holds acc", list(self.metrics))
        require_choice("dataset.headline", self.headline, tuple(self.metrics))
        require_choice("dataset.loader", self.loader, ("memory", "torchvision"))
        require(self.num_workers >= 0, "dataset.num_workers", "an integer >= 0", self.num_workers)
        require(self.eval_batch_size >= 1, "dataset.eval_batch_size", "an integer >= 1", self.eval_batch_size)
        require(0.0 <= self.val_fraction < 1.0, "dataset.val_fraction", "a number in [0, 1)", self.val_fraction)


@dataclass
class SyntheticConfig(DatasetConfig):
    num_train: int = 512
    num_test: int = 256
    num_classes: int = 10
    shape: list[int] = field(default_factory=lambda: [3, 32, 32])
    noise: float = 1.0  # std of the per-sample noise around each class's mean pattern
    data_seed: int = 0
    pixels: str = "float"  # float, or uint8: stored like CIFAR (8-bit pixels, pad-crop-flip augmentation)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_train >= 1 and self.num_test >= 1, "dataset.num_train/num_test", "integers >= 1",
                (self.num_train, self.num_test))
        require(self.num_classes >= 2, "dataset.num_classes", "an integer >= 2", self.num_classes)
        require_choice("dataset.pixels", self.pixels, ("float", "uint8"))
        require(len(self.shape) == 3 and min(self.shape) >= 1, "dataset.shape", "[channels, height, width]",
                list(self.shape))


@dataclass
class MNIST1DConfig(DatasetConfig):
    """MNIST-1D (lstsd.data.mnist1d): the arguments of ``mnist1d.data.make_dataset``, with the package's defaults
    (``get_dataset_args()``), which generate the published dataset; ``data_seed`` is its ``seed``."""
    batch_size: int = 100  # the reference train.py's
    augment: bool = False
    num_samples: int = 5000
    train_split: float = 0.8
    template_len: int = 12
    padding: list[int] = field(default_factory=lambda: [36, 60])
    scale_coeff: float = 0.4
    max_translation: int = 48
    corr_noise_scale: float = 0.25
    iid_noise_scale: float = 0.02
    shear_scale: float = 0.75
    shuffle_seq: bool = False
    final_seq_length: int = 40
    data_seed: int = 42

    def __post_init__(self) -> None:
        super().__post_init__()
        require(not self.augment, "dataset.augment", "false for mnist1d (the benchmark has no augmentation)",
                self.augment)
        require(self.num_samples >= 10, "dataset.num_samples", "an integer >= 10 (one sequence per class)",
                self.num_samples)
        require(0.0 < self.train_split < 1.0, "dataset.train_split", "a number in (0, 1)", self.train_split)
        n = self.num_samples // 10 * 10
        require(1 <= int(n * self.train_split) < n, "dataset.train_split",
                f"a fraction that leaves both splits non-empty ({n} sequences)", self.train_split)
        require(self.template_len >= 1, "dataset.template_len", "an integer >= 1", self.template_len)
        require(len(self.padding) == 2 and 0 <= self.padding[0] <= self.padding[1], "dataset.padding",
                "[low, high] with 0 <= low <= high", list(self.padding))
        require(finite(self.scale_coeff) and 0.0 <= self.scale_coeff < 2.0, "dataset.scale_coeff",
                "a number in [0, 2)", self.scale_coeff)
        require(self.max_translation >= 1, "dataset.max_translation", "an integer >= 1", self.max_translation)
        for key in ("corr_noise_scale", "iid_noise_scale", "shear_scale"):
            value = getattr(self, key)
            require(finite(value) and value >= 0, f"dataset.{key}", "a finite number >= 0", value)
        require(self.final_seq_length >= self.template_len, "dataset.final_seq_length",
                f"an integer >= dataset.template_len={self.template_len}", self.final_seq_length)
        require(0 <= self.data_seed < 2**32, "dataset.data_seed", "an integer in [0, 2^32)", self.data_seed)


@dataclass
class SynMNISTConfig(DatasetConfig):
    num_classes: int = 10  # K: set it to the target dataset's number of classes
    num_train: int = 60000  # spread evenly over the classes (Algorithm 1's E_k)
    num_test: int = 10000
    size: int = 28
    data_seed: int = 0
    augment: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_classes >= 2, "dataset.num_classes", "an integer >= 2", self.num_classes)
        require(self.num_train >= self.num_classes, "dataset.num_train", "an integer >= dataset.num_classes",
                self.num_train)
        require(self.num_test >= 1, "dataset.num_test", "an integer >= 1", self.num_test)
        require(self.size >= 4, "dataset.size", "an integer >= 4", self.size)


@dataclass
class TextDatasetConfig(DatasetConfig):
    """A GLUE task (lstsd.data.glue): raw sentences, tokenised by the model's tokeniser (lstsd.data.text)."""
    folder: str = MISSING  # the task's folder under root: official train.tsv/dev.tsv, or a save_to_disk copy
    pair: bool = False  # sentence pairs (RTE, MRPC); set by each task's config
    max_length: int = 128  # tokens per sample (pair: both sentences), longest-first truncation
    cache_dir: str = "${.root}/cache"  # tokenised splits, keyed by texts, tokeniser and max_length
    augment: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.max_length >= 8, "dataset.max_length", "an integer >= 8", self.max_length)
        from lstsd.data.glue import TASKS

        if self.name in TASKS:  # the task decides; the key is there for the model check below
            require(self.pair == TASKS[self.name].pair, "dataset.pair", f"{TASKS[self.name].pair} for {self.name}",
                    self.pair)
        require(not self.augment, "dataset.augment", "false for text (there is no text augmentation)", self.augment)


# --------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    arch: str = MISSING  # key of lstsd.models.MODELS
    name: str = MISSING  # display name; for arch=timm the timm model name
    depth: Optional[int] = None
    width: Optional[int] = None  # widening factor / base width where an architecture has one (WRN, ResNeXt)
    cardinality: Optional[int] = None  # groups of a ResNeXt block
    growth_rate: Optional[int] = None
    compression: float = 0.5
    dropout: float = 0.0
    pretrained: bool = False

    def __post_init__(self) -> None:
        from lstsd.models import MODELS

        require_choice("model.arch", self.arch, tuple(MODELS))
        require(0.0 <= self.dropout < 1.0, "model.dropout", "a number in [0, 1)", self.dropout)


@dataclass
class TextModelConfig(ModelConfig):
    """textcnn (Kim 2014) and bert (a local transformers checkpoint): lstsd.models.text."""
    text_input: str = "pair"  # pair: sentence pairs accepted (textcnn: s1 <sep> s2; bert: segments); single
    path: Optional[str] = None  # bert: a local model directory (config.json, weights, tokeniser files)
    download: bool = False  # bert: allow a hub name in path (network); off: nothing is fetched
    embed_dim: int = 300  # textcnn
    embeddings: Optional[str] = None  # textcnn: word2vec/GloVe text file to initialise the embeddings
    filter_widths: list[int] = field(default_factory=lambda: [3, 4, 5])
    num_filters: int = 100
    max_vocab: Optional[int] = None  # textcnn: keep the most frequent words of the training split

    def __post_init__(self) -> None:
        from lstsd.data.text import ENCODERS

        super().__post_init__()
        require_choice("model.arch", self.arch, tuple(ENCODERS))
        require_choice("model.text_input", self.text_input, ("pair", "single"))
        if self.arch == "bert":
            from lstsd.data.text import model_dir

            model_dir(self)  # a local checkpoint directory, or a hub name with download=true
        require(self.embed_dim >= 1 and self.num_filters >= 1, "model.embed_dim/num_filters", "integers >= 1",
                (self.embed_dim, self.num_filters))
        require(len(self.filter_widths) >= 1 and min(self.filter_widths) >= 1, "model.filter_widths",
                "a non-empty list of integers >= 1", list(self.filter_widths))
        require(self.max_vocab is None or self.max_vocab >= 1, "model.max_vocab", "null or an integer >= 1",
                self.max_vocab)


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


# --------------------------------------------------------------------------- learning-rate schedule
SCHEDULES = ("constant", "step", "cosine")


@dataclass
class ScheduleConfig:
    name: str = MISSING
    milestones: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])  # fractions of training (of a cycle)
    gamma: float = 0.1
    lr_min: float = 0.0

    def __post_init__(self) -> None:
        require_choice("schedule.name", self.name, SCHEDULES)
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
    progress: bool = True
    skip_completed: bool = True  # a run directory with a completed results.json is not trained again
    precision: str = "fp32"  # fp32, bf16 or fp16: autocast with fp32 master weights (fp16 adds a GradScaler)
    channels_last: bool = False  # NHWC model and inputs (faster convolutions with tensor cores)
    compile: bool = False  # torch.compile the model (module.compile(): state_dict keys unchanged)
    threads: Optional[int] = None  # torch's intra-op CPU threads for this run; null: torch's default (all cores)

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "trainer.epochs", "an integer >= 1", self.epochs)
        require(self.checkpoint_every >= 1, "trainer.checkpoint_every", "an integer >= 1 (epochs)",
                self.checkpoint_every)
        require_choice("trainer.device", self.device, ("auto", "cpu", "cuda"))
        require_choice("trainer.precision", self.precision, ("fp32", "bf16", "fp16"))
        require(self.threads is None or self.threads >= 1, "trainer.threads", "null or an integer >= 1",
                self.threads)


@dataclass
class LoggerConfig:
    name: str = "none"  # none, or wandb
    project: str = "lstsd"
    entity: Optional[str] = None
    group: Optional[str] = None  # null: the experiment name
    job_type: Optional[str] = None  # null: the method's label
    run_name: Optional[str] = None  # null: the run directory's name
    tags: list[str] = field(default_factory=list)
    mode: Optional[str] = None  # online, offline, disabled; null: WANDB_MODE or wandb's default

    def __post_init__(self) -> None:
        require_choice("logger.name", self.name, ("none", "wandb"))
        require(self.mode in (None, "online", "offline", "disabled"), "logger.mode",
                "null, online, offline or disabled", self.mode)


@dataclass
class MethodConfig:
    name: str = MISSING  # key of lstsd.methods.METHODS
    label: str = "${.name}"  # how results and tables name this configuration (variants override it)
    # the learning-rate schedule this method prescribes, replacing schedule.name (SD and SE: cosine, restarted in
    # each mini-generation); null: the run's schedule
    schedule: Optional[str] = None

    def __post_init__(self) -> None:
        from lstsd.methods import METHODS

        require_choice("method.name", self.name, tuple(METHODS))
        require(self.schedule is None or self.schedule in SCHEDULES, "method.schedule",
                "null or one of " + ", ".join(SCHEDULES), self.schedule)

    def check(self, cfg: "Config") -> None:
        """Checks that need the rest of the run's configuration (e.g. trainer.epochs); override as needed."""


@dataclass
class Config:
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    method: MethodConfig = MISSING
    schedule: ScheduleConfig = MISSING
    optim: OptimConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    name: str = "default"  # experiment name: output folders and grouping

    def __post_init__(self) -> None:
        text_data = isinstance(self.dataset, TextDatasetConfig)
        text_model = isinstance(self.model, TextModelConfig)
        if text_data != text_model:
            kind = "a text model (model=textcnn, model=bert)" if text_data else "an image model (not textcnn, bert)"
            raise ConfigError(f"model={self.model.name} is invalid for dataset={self.dataset.name}: allowed {kind}")
        if text_data and self.dataset.pair:
            require(self.model.text_input == "pair", "model.text_input",
                    f"pair (dataset={self.dataset.name} is a sentence-pair task)", self.model.text_input)
        if self.method.schedule is not None:  # the method's own schedule is the one this run trains with
            self.schedule.name = self.method.schedule
        self.method.check(self)


def register_configs() -> None:
    """Store the schemas; YAML options extend them through their defaults list (``- base_<option>``)."""
    from lstsd.methods import METHODS

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for name, node in {"digits": DatasetConfig, "cifar": DatasetConfig, "synthetic": SyntheticConfig,
                       "mnist1d": MNIST1DConfig, "synmnist": SynMNISTConfig, "glue": TextDatasetConfig}.items():
        cs.store(group="dataset", name=f"base_{name}", node=node)
    cs.store(group="model", name="base_model", node=ModelConfig)
    cs.store(group="model", name="base_text_model", node=TextModelConfig)
    cs.store(group="optim", name="base_sgd", node=SGDConfig)
    cs.store(group="optim", name="base_adam", node=AdamConfig)
    cs.store(group="schedule", name="base_schedule", node=ScheduleConfig)
    cs.store(group="trainer", name="base_trainer", node=TrainerConfig)
    cs.store(group="logger", name="base_logger", node=LoggerConfig)
    for name, (_, schema) in METHODS.items():
        cs.store(group="method", name=f"base_{name}", node=schema)


def validate(cfg: DictConfig) -> Config:
    """Check a composed config; return it as typed objects or raise :class:`ConfigError` (one line)."""
    try:
        obj = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except OmegaConfBaseException as e:
        cause = e.__cause__ if isinstance(e.__cause__, ConfigError) else None
        if cause is not None:
            raise cause from None
        raise ConfigError(one_line(e)) from None
    if not isinstance(obj, Config):
        raise ConfigError("the configuration does not follow the lstsd schema (compose it from conf/config.yaml)")
    return obj


def one_line(e: BaseException) -> str:
    """Hydra and OmegaConf errors span several lines; the CLI reports exactly one."""
    options, missing = getattr(e, "options", None), getattr(e, "missing_cfg_file", None)
    if options and missing and "/" in missing:  # an unknown option of a config group
        group, option = missing.rsplit("/", 1)
        choices = [o for o in options if not o.startswith("base_")]  # schemas are not user options
        return f"{group}={option} is invalid: allowed one of {', '.join(choices)}"
    key = getattr(e, "full_key", None)
    msg = getattr(e, "msg", None) or str(e)
    text = " ".join(part.strip() for part in str(msg).splitlines() if part.strip())
    text = text.replace("\t", " ")
    return f"{key}: {text}" if key and key not in text else text
