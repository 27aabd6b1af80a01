"""Published numbers of the papers (``experiments/reference/*.json``), each cell with its definition.

A cell names the table cell it reproduces, ``(experiment, dataset, model, method label)`` (``experiment`` "*":
any experiment, e.g. MNIST-1D's benchmark numbers), its ``value`` (accuracy %, SD's errors already turned into
100 - error), and what the number is:

* ``statistic``: ``final`` (the last epoch), ``best`` (the best epoch), ``ensemble`` (the snapshots' ensemble),
  or ``unstated`` (the paper does not say; the report shows it beside both the final and the best column);
* ``setting``: config keys the published run was trained with (``schedule.name``, ``method.temperature``,
  ``dataset.shuffle_seq``...): the report sets the cell beside a group of runs only when their saved configs
  match it, and lists it as not run otherwise;
* ``source`` and ``note``: where it comes from (e.g. "LSTSD Table 1 = SD Table 3 BL, best epoch").
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "experiments" / "reference"
STATISTICS = ("final", "best", "ensemble", "unstated")


@dataclass(frozen=True)
class Cell:
    experiment: str
    dataset: str
    model: str
    method: str
    value: float
    statistic: str
    source: str
    setting: dict = field(default_factory=dict, hash=False, compare=False)
    note: str = ""

    def matches(self, config) -> bool:
        """Whether a run's saved config (an OmegaConf node) has this cell's setting."""
        from omegaconf import OmegaConf

        for key, value in self.setting.items():
            mine = OmegaConf.select(config, key, default=None)
            if mine != value and not (isinstance(value, float) and isinstance(mine, (int, float))
                                      and float(mine) == value):
                return False
        return True

    def describe(self) -> str:
        setting = ", ".join(f"{k}={v}" for k, v in self.setting.items())
        return f"{self.source}" + (f"; trained with {setting}" if setting else "") + (f"; {self.note}" if self.note
                                                                                        else "")


@lru_cache(maxsize=1)
def cells() -> tuple[Cell, ...]:
    out = []
    for path in sorted(REFERENCE_DIR.glob("*.json")):
        paper = json.loads(path.read_text())
        for c in paper.get("cells", []):  # a cell without its own source or note has the file's
            if c["statistic"] not in STATISTICS:
                raise ValueError(f"{path}: statistic {c['statistic']!r} is not one of {', '.join(STATISTICS)}")
            out.append(Cell(c.get("experiment", "*"), c["dataset"], c["model"], c["method"], float(c["value"]),
                            c["statistic"], c.get("source", paper.get("source", path.stem)), c.get("setting", {}),
                            c.get("note", paper.get("definition", ""))))
    return tuple(out)


def published(experiment: str, dataset: str, model: str, method: str) -> list[Cell]:
    """The cells of one (experiment, dataset, model, method label) group: its experiment's, and those of any
    experiment ("*")."""
    return [c for c in cells() if c.experiment in (experiment, "*") and (c.dataset, c.model, c.method) ==
            (dataset, model, method)]
