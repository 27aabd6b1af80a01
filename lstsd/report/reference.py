"""Published numbers of the papers (``experiments/reference/*.json``), by (experiment, dataset, model, method).

Each experiment of ``conf/experiment`` that reproduces a table maps to that table (LSTSD Table 2, GLUE with BERT
and TextCNN, is keyed ``lstsd_table2``, one dataset per task); a cell holds the published
``final`` accuracy and, where the paper gives them, ``best`` and ``ensemble`` (SD Table 3 publishes errors:
accuracy = 100 - error). Experiments without published numbers (demo, grids) have none.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "experiments" / "reference"


def _load(name: str) -> dict:
    path = REFERENCE_DIR / name
    return json.loads(path.read_text()) if path.exists() else {}


@lru_cache(maxsize=1)
def index() -> dict:
    out: dict = {}
    lstsd = _load("lstsd_aaai2020.json")
    if lstsd:
        t1 = lstsd["table1_cifar100"]
        for method, values in t1.items():
            if method == "columns":
                continue
            for model, v in zip(t1["columns"], values):
                exp = "lstsd_table1_densenet" if model == "densenet100" else "lstsd_table1"
                out[(exp, "cifar100", model, method)] = {"final": v, "source": "LSTSD Table 1"}
        t2 = lstsd["table2_glue"]
        at_t1 = {"lstsd": "lstsd_t1", "sd": "sd_t1"}  # Table 2 runs SD and LSTSD at T = 1: these configs
        for model, methods in t2.items():
            if model != "columns":
                for method, values in methods.items():
                    for task, v in zip(t2["columns"], values):
                        out[("lstsd_table2", task, model, at_t1.get(method, method))] = {"final": v,
                                                                                        "source": "LSTSD Table 2"}
        t3 = lstsd["table3_cifar100"]
        for method, values in t3.items():
            if method != "columns":
                for model, v in zip(t3["columns"], values):
                    out[("lstsd_table3", "cifar100", model, method)] = {"final": v, "source": "LSTSD Table 3"}
    sd = _load("sd_cvpr2019.json")
    for model, methods in sd.get("table3_cifar100", {}).items():
        if not isinstance(methods, dict):
            continue
        exp = "sd_table3_densenet" if model.startswith("densenet") else "sd_table3"
        for method, err in methods.items():
            acc = [None if e is None else round(100.0 - e, 2) for e in err]
            out[(exp, "cifar100", model, method)] = {"final": acc[3], "best": acc[4], "ensemble": acc[5],
                                         "source": "SD Table 3"}
    lw = _load("lwkd.json")
    for dataset, rows in lw.get("table3", {}).items():
        if dataset in ("columns", "note"):
            continue
        for model, values in rows.items():
            large = model in ("vgg19", "googlenet")
            exp = f"lwkd_table3_{dataset}" + ("_large" if large else "")
            teachers = ["kd_densenet121" if model == "vgg19" else "kd_resnext29", None] if large else \
                ["kd_resnet18", "kd_resnet50"]
            lwkd = "lwkd_c10" if dataset == "cifar10" else "lwkd"
            methods = ["vanilla", *teachers, "label_smoothing", "tfkd_reg", "kd_lenetw", lwkd]
            for method, v in zip(methods, values):
                if method and v is not None:
                    out[(exp, dataset, model, method)] = {"final": v, "source": "LW-KD Table 3"}
    for dataset, rows in lw.get("table7", {}).items():
        if dataset == "columns":
            continue
        for model, values in rows.items():
            for method, v in zip(lw["table7"]["columns"], values):
                out[(f"lwkd_table7_{dataset}", dataset, model, method)] = {"final": v, "source": "LW-KD Table 7"}
    return out


def published(experiment: str, dataset: str, model: str, method: str) -> dict:
    return index().get((experiment, dataset, model, method), {})
