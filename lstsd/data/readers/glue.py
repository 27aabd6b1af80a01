"""``dataset=glue_rte | glue_mrpc | glue_sst2 | glue_cola``: four GLUE tasks (Wang et al. 2019), LSTSD Table 2.

Each task lives in one folder under ``dataset.root`` (``dataset.folder``: ``RTE``, ``MRPC``, ``SST-2``,
``CoLA``), in either of two forms:

- the official GLUE files, ``train.tsv`` and ``dev.tsv`` as the GLUE download script unpacks them. They are
  tab-separated with no quoting at all (a ``"`` inside a sentence is an ordinary character, so they are split on
  tabs, as GLUE's own readers do, and never parsed as CSV). RTE, MRPC and SST-2 have a header row; CoLA has
  none. RTE's labels are words (``entailment`` -> 0, ``not_entailment`` -> 1, the Hugging Face ids);
- a Hugging Face ``datasets`` copy saved with ``DatasetDict.save_to_disk`` (``dataset_dict.json`` with
  ``train`` and ``validation``), read with ``datasets.load_from_disk`` (the ``nlp`` extra).

The dev (``validation``) split is the evaluation set, as in the paper: it is this framework's ``test`` split
(GLUE's test labels are hidden). Samples stay raw sentences (or sentence pairs) here; the model's tokeniser
turns them into token ids once per run (:mod:`lstsd.data.text`, with an on-disk cache).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch
from omegaconf import MISSING

from lstsd.config import DatasetConfig
from lstsd.data.types import Splits
from lstsd.errors import ConfigError, import_extra, one_line, require
from lstsd.registry import register_dataset


@dataclass
class TextDatasetConfig(DatasetConfig):
    """A GLUE task: raw sentences, tokenised by the model's tokeniser (lstsd.data.text)."""
    kind: ClassVar[str] = "text"
    folder: str = MISSING  # the task's folder under root: official train.tsv/dev.tsv, or a save_to_disk copy
    pair: bool = False  # sentence pairs (RTE, MRPC); set by each task's config
    max_length: int = 128  # tokens per sample (pair: both sentences), longest-first truncation
    cache_dir: str = "${.root}/cache"  # tokenised splits, keyed by texts, tokeniser and max_length
    augment: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.max_length >= 8, "dataset.max_length", "an integer >= 8", self.max_length)
        if self.name in TASKS:  # the task decides; the key is there for the model check below
            require(self.pair == TASKS[self.name].pair, "dataset.pair", f"{TASKS[self.name].pair} for {self.name}",
                    self.pair)
        require(not self.augment, "dataset.augment", "false for text (there is no text augmentation)", self.augment)

    def inputs(self) -> list[str]:
        return super().inputs() or [str(Path(self.root) / self.folder)]


@dataclass(frozen=True)
class Task:
    folder: str  # the GLUE folder name
    pair: bool  # sentence pairs (RTE, MRPC) or single sentences (SST-2, CoLA)
    header: bool  # official TSV: a header row first
    columns: Callable[[list[str]], tuple]  # one TSV row -> (sentence1, sentence2 or None, label string)
    labels: dict  # label string -> id
    hf_columns: tuple  # the Hugging Face copy's text columns


BINARY = {"0": 0, "1": 1}
TASKS = {
    "glue_rte": Task("RTE", True, True, lambda r: (r[1], r[2], r[3]), {"entailment": 0, "not_entailment": 1},
                     ("sentence1", "sentence2")),
    # MRPC's header: Quality, #1 ID, #2 ID, #1 String, #2 String (Quality is the label)
    "glue_mrpc": Task("MRPC", True, True, lambda r: (r[3], r[4], r[0]), BINARY, ("sentence1", "sentence2")),
    "glue_sst2": Task("SST-2", False, True, lambda r: (r[0], None, r[1]), BINARY, ("sentence",)),
    # CoLA: source, label, the author's original judgement, sentence (no header)
    "glue_cola": Task("CoLA", False, False, lambda r: (r[3], None, r[1]), BINARY, ("sentence",)),
}
WIDTH = {"glue_rte": 4, "glue_mrpc": 5, "glue_sst2": 2, "glue_cola": 4}  # columns of an official TSV row


def not_glue(path: Path, task: Task, problem: str) -> ConfigError:
    return ConfigError(f"dataset.root: {path.resolve()} is not an official GLUE {task.folder} file: {problem}")


def read_tsv(path: Path, name: str) -> tuple[list, torch.Tensor]:
    """Sentences (or pairs) and label ids of one official GLUE TSV file; a file that cannot be read, is not
    UTF-8, or has a row of another width or an unknown label is a one-line ConfigError naming it (a file without
    rows is refused by :func:`load_glue`, once the rows of both files are checked)."""
    task = TASKS[name]
    texts, labels = [], []
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise not_glue(path, task, f"it cannot be read ({one_line(e)})") from None
    try:
        text = raw.decode("utf-8-sig")  # utf-8-sig: some copies start with a BOM
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise not_glue(path, task, f"line {line} is not UTF-8 text (the byte 0x{raw[e.start]:02x})") from None
    lines = [line.removesuffix("\r") for line in text.split("\n")]  # not splitlines(): it also splits on
    # characters such as U+2028 that can occur inside a sentence
    for number, line in enumerate(lines[1:] if task.header else lines, start=2 if task.header else 1):
        if not line.strip():
            continue
        row = line.split("\t")
        if len(row) != WIDTH[name]:
            raise ConfigError(f"dataset.root: {path}:{number} has {len(row)} tab-separated fields, not "
                              f"{WIDTH[name]} as an official GLUE {task.folder} file")
        s1, s2, label = task.columns(row)
        if label not in task.labels:
            raise ConfigError(f"dataset.root: {path}:{number} has the label {label!r}: allowed one of "
                              f"{', '.join(task.labels)}")
        texts.append((s1, s2))
        labels.append(task.labels[label])
    return texts, torch.tensor(labels, dtype=torch.int64)


def read_hf(folder: Path, name: str) -> dict:
    """The ``train`` and ``validation`` splits of a ``save_to_disk`` copy (labels are already ids)."""
    datasets = import_extra("datasets", f"dataset.root: {folder} (a Hugging Face datasets copy)")
    copy = datasets.load_from_disk(str(folder))
    missing = [s for s in ("train", "validation") if s not in copy]
    if missing:
        raise ConfigError(f"dataset.root: {folder} lacks the split(s) {', '.join(missing)}: allowed a "
                          f"DatasetDict with train and validation")
    out, task = {}, TASKS[name]
    classes = len(set(task.labels.values()))
    for split, ours in (("train", "train"), ("validation", "test")):
        part = copy[split]
        needed = [*task.hf_columns, "label"]
        if not set(needed) <= set(part.column_names):
            raise ConfigError(f"dataset.root: {folder} ({split}) has the columns {', '.join(part.column_names)}: "
                              f"allowed a copy of GLUE {task.folder} with {', '.join(needed)}")
        y = torch.tensor(part["label"], dtype=torch.int64)
        if len(y) and not (0 <= int(y.min()) and int(y.max()) < classes):  # -1: GLUE's hidden test labels
            raise ConfigError(f"dataset.root: {folder} ({split}) has labels in [{int(y.min())}, {int(y.max())}]: "
                              f"allowed 0..{classes - 1} (a split with hidden labels cannot be evaluated)")
        cols = [part[c] for c in task.hf_columns]
        out[ours] = (list(zip(cols[0], cols[1] if len(cols) > 1 else [None] * len(part))), y)
    return out


def load_glue(cfg, name: str) -> Splits:
    task = TASKS[name]
    folder = Path(cfg.root).expanduser() / cfg.folder
    if (folder / "dataset_dict.json").is_file():
        sets = read_hf(folder, name)
    elif all((folder / f).is_file() for f in ("train.tsv", "dev.tsv")):
        files = {"train": folder / "train.tsv", "test": folder / "dev.tsv"}
        sets = {split: read_tsv(path, name) for split, path in files.items()}
        for split, path in files.items():  # after the rows of both files are checked
            if not sets[split][0]:
                blank = not path.read_text(encoding="utf-8-sig").strip()
                raise not_glue(path, task, "the file is empty" if blank else "it holds a header but no rows")
    else:
        raise ConfigError(
            f"dataset.root: GLUE {task.folder} not found: expected {folder.resolve()} holding the official "
            f"train.tsv and dev.tsv, or a Hugging Face datasets copy saved there with save_to_disk; set "
            f"dataset.root=<folder containing {cfg.folder}>")
    return Splits(sets, num_classes=len(set(task.labels.values())), mean=None, std=None,
                  text="pair" if task.pair else "single")


for _name in TASKS:
    register_dataset(_name, TextDatasetConfig)(lambda cfg, _name=_name: load_glue(cfg, _name))
