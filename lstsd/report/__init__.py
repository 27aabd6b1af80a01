"""Tables and plots over many runs: ``lstsd-report PATH...`` and the table printed at the end of every multirun.

Every job folder below the given paths is one run: completed and failed runs by their ``results.json``
(``status``), runs still going (or killed) by a ``.hydra/config.yaml`` without results, and, for a sweep folder
with its ``multirun.yaml``, runs that never started by comparing the sweep's combinations of overrides with the
job folders present. Runs are grouped by (experiment, dataset, model, method label) and variant (the job
overrides, seed aside, whose values differ inside that group: one row per cell of a lambda grid); each group
shows n completed runs and, in its headline ``metric`` (the dataset's: accuracy, or Matthews correlation for
CoLA), mean ± sample std over them of the final and the best epoch's test score (%; published tables differ on
which they report, so both are given, labelled), the final validation score when the runs held out a validation
split, the task's other metrics (``final f1``), the published number of the paper beside them when the
experiment reproduces a table (``experiments/reference``), and the runs that are failed, running or missing.
``--out DIR`` writes report.md, report.csv and the plots (PNG): the test score against the mini-generation
length (LSTSD Figure 2) when a group of LSTSD runs varies it, and training curves per method.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import statistics
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from lstsd.report.reference import published

KEYS = ("experiment", "dataset", "model", "method")


def natural_key(path: Path) -> list:
    """Sort job folders 0, 1, 2, ..., 10 rather than 0, 1, 10, 2."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def launch_order(d: Path) -> tuple:
    """Sort key of a job folder: its sweep folder, then Hydra's job number (the order of the sweep's axes, e.g.
    vanilla before lstsd as the experiment lists them), then the name (0, 1, 2, ..., 10)."""
    hydra_yaml = d / ".hydra" / "hydra.yaml"
    num = OmegaConf.load(hydra_yaml).hydra.job.get("num") if hydra_yaml.exists() else None
    return natural_key(d.parent), -1 if num is None else int(num), natural_key(d)


def job_dirs(path: Path) -> list[Path]:
    marks = {p.parent for p in path.rglob("results.json")} | {p.parent.parent for p in path.rglob(".hydra/config.yaml")}
    return sorted(marks, key=launch_order)


def read_run(d: Path) -> dict:
    """One run: results.json when there is one, else what its saved config says, with its status."""
    if (d / "results.json").exists():
        run = json.loads((d / "results.json").read_text())
    else:
        cfg = OmegaConf.load(d / ".hydra" / "config.yaml")
        run = {"status": "running", "experiment": cfg.get("name", "default"), "dataset": cfg.dataset.name,
               "model": cfg.model.name, "method": cfg.method.get("label") or cfg.method.name, "seed": cfg.seed}
    run["run_dir"] = str(d)
    overrides = d / ".hydra" / "overrides.yaml"  # the job's command-line overrides (Hydra writes them)
    run["overrides"] = dict(o.lstrip("+~").partition("=")[::2] for o in
                            (OmegaConf.load(overrides) if overrides.exists() else []))
    if (d / "metrics.jsonl").exists():
        run["epochs_done"] = sum(1 for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip())
    return run


def expected_jobs(sweep: Path) -> list[str]:
    """The job folder names a basic-sweeper multirun implies: its multirun.yaml's sweep expanded and named the
    way Hydra names them (Hydra's own parser, expansion and override_dirname, so quoting, ``range(...)`` and
    ``choice(...)`` read exactly as when launched). Empty when the job folders are not named by their overrides or
    the sweeper is not the grid one (an Optuna study has no fixed set of jobs)."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = OmegaConf.load(sweep / "multirun.yaml")
    names = cfg.hydra.job.config.override_dirname
    if (OmegaConf.to_container(cfg.hydra.sweep)["subdir"] != "${hydra.job.override_dirname}"
            or not str(cfg.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper")):
        return []
    parser = OverridesParser.create()
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    jobs = BasicSweeper.split_arguments(parser.parse_overrides(params + list(cfg.hydra.overrides.task)), None)[0]
    return [get_overrides_dirname(parser.parse_overrides(job), list(names.exclude_keys), names.item_sep,
                                  names.kv_sep) for job in jobs]


def collect(paths) -> tuple[list[dict], list[str]]:
    """All runs under ``paths``, and the jobs of their sweeps that never started."""
    runs, missing = [], []
    for path in map(Path, paths):
        if path.name == "results.json":
            path = path.parent
        runs += [read_run(d) for d in job_dirs(path)]
        for sweep in sorted({p.parent for p in path.glob("**/multirun.yaml")}):
            present = {p.name for p in sweep.iterdir() if p.is_dir()}
            missing += [str(sweep / name) for name in expected_jobs(sweep) if name not in present]
    return runs, missing


def mean_std(values: list) -> str:
    """``mean ± sample std`` (0 for a single run), ``-`` for none."""
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {std:.2f}"


def fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def headline(run: dict) -> str:
    """The metric a run's tables show (results.json's ``headline``; accuracy for runs that predate it)."""
    return run.get("headline", "acc")


def variants(runs: list[dict]) -> dict:
    """Split one (experiment, dataset, model, method) group by the overrides whose values differ among its runs
    (seed aside): a lambda grid gives one row per (lambda_short, lambda_long), a seed-only sweep one row."""
    keys = sorted({k for r in runs for k in r.get("overrides", {})} - {"seed"})
    varying = [k for k in keys if len({r.get("overrides", {}).get(k) for r in runs}) > 1]
    out: dict = {}
    for r in runs:
        label = " ".join(f"{k}={r['overrides'].get(k, '(default)')}" for k in varying) or "-"
        out.setdefault(label, []).append(r)
    return out


def summarize(runs: list[dict]) -> list[dict]:
    groups: dict = {}
    for r in runs:
        groups.setdefault(tuple(r.get(k, "?") for k in KEYS), []).append(r)
    rows = [(key, variant, group) for key, whole in groups.items() for variant, group in variants(whole).items()]
    table = []
    for key, variant, group in rows:
        done = [r for r in group if r.get("status") == "completed"]
        paper = published(*key)
        metric = headline(done[0]) if done else "acc"
        scores = lambda name: mean_std([r[name] for r in done if name in r])  # noqa: E731
        row = dict(zip(KEYS, key)) | {
            "variant": variant,
            "n": len(done),
            "metric": metric,
            "final": scores(f"test_{metric}_final"),
            "best": scores(f"test_{metric}_best"),
            "paper final": fmt(paper.get("final")),
            "paper best": fmt(paper.get("best")),
            "val": scores(f"val_{metric}_final"),
        }
        others = sorted({k[5:-6] for r in done for k in r if k.startswith("test_") and k.endswith("_final")}
                        - {metric})  # the task's other metrics (MRPC's F1 beside its accuracy)
        row |= {f"final {m}": scores(f"test_{m}_final") for m in others}
        if any(f"ensemble_test_{metric}_final" in r for r in done) or paper.get("ensemble") is not None:
            row["ensemble"] = scores(f"ensemble_test_{metric}_final")
            row["paper ensemble"] = fmt(paper.get("ensemble"))
        others = {s: sum(r.get("status") == s for r in group) for s in ("failed", "running")}
        row["not completed"] = ", ".join(f"{n} {s}" for s, n in others.items() if n) or "-"
        table.append(row)
    return table


def columns(table: list[dict]) -> list[str]:
    """Every column of any row, "not completed" last; optional columns empty in every row are left out."""
    cols: list[str] = []
    for row in table:
        cols += [c for c in row if c not in cols]
    cols = [c for c in cols if c != "not completed"] + ["not completed"]
    fixed = set(KEYS) | {"n", "metric", "final", "best"}
    return [c for c in cols if c in fixed or any(row.get(c, "-") != "-" for row in table)]


def markdown(table: list[dict], missing: list[str] = ()) -> str:
    if not table:
        return "(no runs found)"
    cols = columns(table)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(row.get(c, "-")) for c in cols) + " |" for row in table]
    if missing:
        lines += ["", f"Missing ({len(missing)} jobs of the sweep never started):"]
        lines += [f"- {m}" for m in missing]
    return "\n".join(lines)


def to_csv(table: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns(table), restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(table)
    return out.getvalue()


def plots(runs: list[dict], out: Path) -> list[Path]:
    """PNG figures: Figure 2 (accuracy against mini-generation length) and training curves per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    done = [r for r in runs if r.get("status") == "completed"]
    by_length: dict = {}
    for r in done:
        if r.get("method_name") == "lstsd":
            cfg = OmegaConf.load(Path(r["run_dir"]) / ".hydra" / "config.yaml")
            by_length.setdefault(int(cfg.method.minigen_epochs), []).append(r[f"test_{headline(r)}_final"])
    if len(by_length) > 1:
        xs = sorted(by_length)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.errorbar(xs, [statistics.fmean(by_length[x]) for x in xs],
                    yerr=[statistics.stdev(by_length[x]) if len(by_length[x]) > 1 else 0 for x in xs], marker="o")
        ax.set(xlabel="mini-generation length (epochs)", ylabel="final test score (%)", title="LSTSD, Figure 2")
        files.append(out / "fig2_minigen_length.png")
        fig.tight_layout(), fig.savefig(files[-1], dpi=120), plt.close(fig)
    curves: dict = {}
    for r in done:
        rows = [json.loads(x) for x in (Path(r["run_dir"]) / "metrics.jsonl").read_text().splitlines() if x]
        curves.setdefault((r["dataset"], r["model"], headline(r)), {}).setdefault(r["method"], []).append(
            [row[f"test_{headline(r)}"] for row in rows])
    for (dataset, model, metric), methods in curves.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for method, series in methods.items():
            length = min(map(len, series))
            mean = [statistics.fmean(s[i] for s in series) for i in range(length)]
            ax.plot(range(1, length + 1), mean, label=f"{method} (n={len(series)})")
        ax.set(xlabel="epoch", ylabel=f"test {metric} (%)", title=f"{dataset} / {model}")
        ax.legend(fontsize=7)
        files.append(out / f"curves_{dataset}_{model}.png")
        fig.tight_layout(), fig.savefig(files[-1], dpi=120), plt.close(fig)
    return files


def report(paths, out=None) -> str:
    runs, missing = collect(paths)
    table = summarize(runs)
    text = markdown(table, missing)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(text + "\n")
        (out / "report.csv").write_text(to_csv(table))
        plots(runs, out)
    return text


class PrintReport(Callback):
    """Hydra callback: after a multirun, print the comparison table of its runs."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        print(f"\nResults of {sweep_dir} (test scores %, mean ± std over seeds):\n")
        print(report([sweep_dir]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="lstsd-report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run or sweep directories (searched recursively)")
    parser.add_argument("--out", help="also write report.md, report.csv and the plots here")
    args = parser.parse_args(argv)
    print(report(args.paths, args.out))


if __name__ == "__main__":
    main()
