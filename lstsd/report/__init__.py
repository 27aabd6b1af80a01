"""Tables and plots over many runs: ``lstsd-report PATH...`` and the table printed at the end of every multirun.

Every job folder below the given paths is one run: completed and failed runs by their ``results.json``
(``status``), runs still going (or killed) by a ``.hydra/config.yaml`` without results, and, for a sweep folder
with its ``multirun.yaml``, runs that never started by comparing the sweep's combinations of overrides with the
job folders present. Runs are grouped by (experiment, dataset, model, method label) and variant (the job
overrides, seed aside, whose values differ inside that group: one row per cell of a lambda grid). Each row gives,
in the group's headline ``metric`` (the dataset's: accuracy, or Matthews correlation for CoLA), over its n
completed runs (seeds): the final and the best epoch's test score (%), the final validation score when the runs
held out a validation split, the snapshot ensemble's score, the task's other metrics; the paired difference to
the ``baseline`` method (vanilla) over the seeds both ran, with its 95 % confidence interval and the paired
t-test's p-value (:mod:`lstsd.report.stats`); the published numbers of the papers (``experiments/reference``),
each in the column of its own definition (final, best, ensemble or unstated) and only beside runs trained with
its setting; and the runs that failed, are running or never started.

The rows are kept as numbers (:func:`summarize`); :func:`markdown` formats them ("±" only for two runs or more)
and :func:`to_csv` writes them as numeric columns. ``--out DIR`` writes report.md, report.csv and the plots
(PNG): the test score per epoch of every method (mean and a band of one standard deviation over seeds), and the
test score against the mini-generation length (LSTSD Figure 2) when a group of LSTSD runs varies it, with the
baseline's mean as a horizontal line.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import re
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from lstsd.report.reference import cells, published
from lstsd.report.stats import describe, paired
from lstsd.errors import ConfigError
from lstsd.rundir import CONFIG, RESULTS, RunDir, identity

KEYS = ("experiment", "dataset", "model", "method")
BASELINE = "vanilla"


def natural_key(path: Path) -> list:
    """Sort job folders 0, 1, 2, ..., 10 rather than 0, 1, 10, 2."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def launch_order(d: Path) -> tuple:
    """Sort key of a job folder: its sweep folder, then Hydra's job number (the order of the sweep's axes, e.g.
    vanilla before lstsd as the experiment lists them), then the name (0, 1, 2, ..., 10)."""
    try:
        num = OmegaConf.select(OmegaConf.load(RunDir(d).hydra), "hydra.job.num")
    except Exception:  # noqa: BLE001 - absent or unreadable: the folder sorts by its name
        num = None
    return natural_key(d.parent), num if isinstance(num, int) else -1, natural_key(d)


def job_dirs(path: Path) -> list[Path]:
    marks = {p.parent for p in path.rglob(RESULTS)} | {p.parent.parent for p in path.rglob(CONFIG)}
    return sorted(marks, key=launch_order)


def read_run(d: Path) -> dict:
    """One run: results.json when there is one, else what its saved config says, with its status; ``config`` is
    its saved config (None when absent)."""
    files = RunDir(d)
    config = files.read_config()
    run = files.read_results() or {"status": "running", **identity(config)}
    run["run_dir"], run["config"] = str(d), config
    # the job's command-line overrides (Hydra writes them)
    run["overrides"] = dict(o.lstrip("+~").partition("=")[::2] for o in files.read_overrides())
    if files.metrics.exists():
        run["epochs_done"] = len(files.read_metrics())
    return run


def expected_jobs(sweep: Path) -> list[str]:
    """The job folder names of a grid sweep: the jobs the lstsd sweeper launched (its ``jobs.yaml``), or, for
    Hydra's basic sweeper, its multirun.yaml's sweep expanded (Hydra's own parser and expansion, so quoting,
    ``range(...)`` and ``choice(...)`` read exactly as when launched), named as Hydra names them. Empty when the
    job folders are not named by their overrides or the sweep has no fixed set of jobs (an Optuna study)."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = OmegaConf.load(sweep / "multirun.yaml")
    names = cfg.hydra.job.config.override_dirname
    if OmegaConf.to_container(cfg.hydra.sweep)["subdir"] != "${hydra.job.override_dirname}":
        return []
    parser = OverridesParser.create()
    target = str(cfg.hydra.sweeper.get("_target_", ""))
    if (sweep / "jobs.yaml").exists():
        jobs = OmegaConf.to_container(OmegaConf.load(sweep / "jobs.yaml"))
    elif target.endswith("BasicSweeper"):
        params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
        jobs = BasicSweeper.split_arguments(parser.parse_overrides(params + list(cfg.hydra.overrides.task)), None)[0]
    else:
        return []
    return [get_overrides_dirname(parser.parse_overrides(job), list(names.exclude_keys), names.item_sep,
                                  names.kv_sep) for job in jobs]


def collect(paths) -> tuple[list[dict], list[str], list[str]]:
    """All runs under ``paths``, the jobs of their sweeps that never started, and the folders whose files cannot
    be read (``<folder>: <what is wrong>``; the report lists them and goes on). A path that does not exist is a
    ConfigError."""
    runs, missing, unreadable = [], [], []
    for path in map(Path, paths):
        if not path.exists():
            raise ConfigError(f"{path}: no such file or directory (allowed a run or sweep folder)")
        if path.name == RESULTS:
            path = path.parent
        for d in job_dirs(path):
            try:
                runs.append(read_run(d))
            except ConfigError as e:
                unreadable.append(str(e))
        for sweep in sorted({p.parent for p in path.glob("**/multirun.yaml")}):
            present = {p.name for p in sweep.iterdir() if p.is_dir()}
            missing += [str(sweep / name) for name in expected_jobs(sweep) if name not in present]
    return runs, missing, unreadable


def headline(run: dict) -> str:
    """The metric a run's tables show (results.json's ``headline``; accuracy for runs that predate it)."""
    return run.get("headline", "acc")


def short(value: str) -> str:
    """An override's value for a row label: numbers with at most 4 significant digits (Optuna's suggestions)."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() or len(value) <= 6 else f"{number:.4g}"


def variants(runs: list[dict]) -> dict:
    """Split one (experiment, dataset, model, method) group by the overrides whose values differ among its runs
    (seed aside): a lambda grid gives one row per (lambda_short, lambda_long), a seed-only sweep one row."""
    keys = sorted({k for r in runs for k in r.get("overrides", {})} - {"seed"})
    varying = [k for k in keys if len({r.get("overrides", {}).get(k) for r in runs}) > 1]
    out: dict = {}
    for r in runs:
        label = " ".join(f"{k}={short(r['overrides'].get(k, '(default)'))}" for k in varying) or "-"
        out.setdefault(label, []).append(r)
    return out


def by_seed(runs: list[dict], key: str) -> dict:
    """A statistic of each seed (the mean where a seed ran more than once)."""
    seeds: dict = {}
    for r in runs:
        if key in r:
            seeds.setdefault(r.get("seed", 0), []).append(r[key])
    return {s: sum(v) / len(v) for s, v in seeds.items()}


STATS = ("final", "best", "val", "ensemble")


def statistic_key(stat: str, metric: str) -> str:
    return {"final": f"test_{metric}_final", "best": f"test_{metric}_best", "val": f"val_{metric}_final",
            "ensemble": f"ensemble_test_{metric}_final"}[stat]


def summarize(runs: list[dict], baseline: str = BASELINE, sort: str = "launch", better_of: dict | None = None
              ) -> list[dict]:
    """One row of numbers per group and variant (see the module's docstring); ``sort="final"`` orders the rows
    of each (experiment, dataset, model) block by their mean final score, best first. ``better_of`` maps a row
    name to method labels, e.g. ``{"sd (better T)": ["sd", "sd_t3"]}``: in each block, a copy of whichever of
    those rows has the higher mean best-epoch score, named so (LSTSD Table 1's SD cell is the better of SD's two
    temperatures, chosen on the test set as the paper did)."""
    groups: dict = {}
    for r in runs:
        groups.setdefault(tuple(r.get(k, "?") for k in KEYS), []).append(r)
    cells = [(key, variant, group) for key, whole in groups.items() for variant, group in variants(whole).items()]
    done_of = {(key, variant): [r for r in group if r.get("status") == "completed"] for key, variant, group in cells}
    table = []
    for key, variant, group in cells:
        done = done_of[(key, variant)]
        metric = headline(done[0]) if done else "acc"
        row = dict(zip(KEYS, key)) | {"variant": variant, "metric": metric, "n": len(done)}
        for stat in STATS:
            values = [r[statistic_key(stat, metric)] for r in done if statistic_key(stat, metric) in r]
            if values:
                row |= {f"{stat}_{k}": v for k, v in describe(values).items() if k != "n"}
        others = sorted({k[5:-6] for r in done for k in r if k.startswith("test_") and k.endswith("_final")}
                        - {metric})  # the task's other metrics (MRPC's F1 beside its accuracy)
        for m in others:
            row |= {f"final_{m}_{k}": v for k, v in describe([r[f"test_{m}_final"] for r in done
                                                              if f"test_{m}_final" in r]).items() if k != "n"}
        base = done_of.get(((*key[:3], baseline), variant)) or done_of.get(((*key[:3], baseline), "-"))
        if base and key[3] != baseline:
            for stat in ("final", "best"):
                name = statistic_key(stat, metric)
                diff = paired(by_seed(done, name), by_seed(base, name))
                if diff is not None:
                    row |= {f"vs_{baseline}_{stat}_{k}": v for k, v in diff.items()}
        row |= published_columns(key, done)
        row["failed"] = sum(r.get("status") == "failed" for r in group)
        row["running"] = sum(r.get("status") == "running" for r in group)
        row["errors"] = [f"{r['run_dir']}: {r.get('error', '?')}" for r in group if r.get("status") == "failed"]
        table.append(row)
    for name, labels in (better_of or {}).items():
        blocks: dict = {}
        for row in table:
            if row["method"] in labels and row.get("best_mean") is not None:
                blocks.setdefault(tuple(row[k] for k in KEYS[:3]) + (row["variant"],), []).append(row)
        for rows in blocks.values():
            chosen = max(rows, key=lambda r: r["best_mean"])
            table.append({k: v for k, v in chosen.items() if not k.startswith("paper")} |
                         {"method": name, "variant": f"= {chosen['method']}" + (
                             "" if chosen["variant"] == "-" else f" {chosen['variant']}")})
    if sort == "final":
        blocks: dict = {}
        for row in table:
            blocks.setdefault(tuple(row[k] for k in KEYS[:3]), []).append(row)
        table = [row for block in blocks.values() for row in
                 sorted(block, key=lambda r: -r["final_mean"] if r.get("final_mean") is not None else math.inf)]
    return table


def published_columns(key: tuple, done: list[dict]) -> dict:
    """The published cells of a group whose setting all its completed runs have, by their definition:
    ``paper_<statistic>`` (final, best, ensemble, unstated), and their descriptions (``paper_sources``)."""
    out: dict = {}
    configs = [r["config"] for r in done if r.get("config") is not None]
    for cell in published(*key):
        if configs and all(cell.matches(c) for c in configs):
            out[f"paper_{cell.statistic}"] = cell.value
            out.setdefault("paper_sources", []).append(f"{cell.value:g} ({cell.statistic}): {cell.describe()}")
            out.setdefault("paper_cells", []).append(cell)
    return out


def not_compared(table: list[dict]) -> list:
    """The published cells of the (experiment, dataset, model) blocks in ``table`` that no row was set beside:
    a method the runs did not run, or runs trained with another setting (schedule, temperature, ...)."""
    placed = {id(c) for row in table for c in row.get("paper_cells", [])}
    blocks = {tuple(row[k] for k in KEYS[:3]) for row in table}
    return [c for c in cells() if id(c) not in placed and any(
        c.experiment in (b[0], "*") and (c.dataset, c.model) == b[1:] for b in blocks)]


# ---------------------------------------------------------------------------------------------------- rendering
def number(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def spread(row: dict, stat: str) -> str:
    """``mean ± std`` over two runs or more, the value of a single run, ``-`` for none."""
    mean = row.get(f"{stat}_mean")
    if mean is None:
        return "-"
    std = row.get(f"{stat}_std")
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def p_value(p) -> str:
    return "-" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def difference(row: dict, prefix: str) -> str:
    """``+1.23 [0.45, 2.01]``: a paired mean difference and its 95 % confidence interval."""
    mean = row.get(f"{prefix}_mean")
    if mean is None:
        return "-"
    return f"{mean:+.2f} [{row[f'{prefix}_ci_low']:+.2f}, {row[f'{prefix}_ci_high']:+.2f}]"


def display(table: list[dict], baseline: str = BASELINE) -> tuple[list[str], list[list[str]]]:
    """The Markdown columns and cells; optional columns empty in every row are left out."""
    others = sorted({k.split("_")[1] for row in table for k in row if k.startswith("final_") and k.endswith("_mean")
                     and k.count("_") == 2})
    columns = {
        "experiment": lambda r: r["experiment"], "dataset": lambda r: r["dataset"], "model": lambda r: r["model"],
        "method": lambda r: r["method"], "variant": lambda r: r["variant"], "n": lambda r: str(r["n"]),
        "metric": lambda r: r["metric"], "final": lambda r: spread(r, "final"), "best": lambda r: spread(r, "best"),
        "val": lambda r: spread(r, "val"), "ensemble": lambda r: spread(r, "ensemble"),
        **{f"final {m}": (lambda r, m=m: spread(r, f"final_{m}")) for m in others},
        f"Δ final vs {baseline} [95% CI]": lambda r: difference(r, f"vs_{baseline}_final"),
        "p": lambda r: p_value(r.get(f"vs_{baseline}_final_p")),
        **{f"paper {s}": (lambda r, s=s: number(r.get(f"paper_{s}"))) for s in ("final", "best", "ensemble",
                                                                                 "unstated")},
        "not completed": lambda r: ", ".join(f"{r[s]} {s}" for s in ("failed", "running") if r.get(s)) or "-",
    }
    always = {"experiment", "dataset", "model", "method", "n", "metric", "final", "best"}
    cells = {name: [fn(r) for r in table] for name, fn in columns.items()}
    keep = [name for name in columns if name in always or any(c != "-" for c in cells[name])]
    if "variant" in keep and all(c == "-" for c in cells["variant"]):
        keep.remove("variant")
    return keep, [[cells[name][i] for name in keep] for i in range(len(table))]


def markdown(table: list[dict], missing: list[str] = (), baseline: str = BASELINE, unreadable: list[str] = ()) -> str:
    lines = ["(no runs found)"]
    if table:
        cols, rows = display(table, baseline)
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    notes = [(r, s) for r in table for s in r.get("paper_sources", [])]
    if notes:
        lines += ["", "Published numbers (each beside the statistic of its definition):"]
        lines += [f"- {r['model']} {r['method']}: {s}" for r, s in notes]
    not_run = not_compared(table)
    if not_run:
        lines += ["", "Published numbers of these tables that no run here has the method or setting of (not "
                      "compared):"]
        lines += [f"- {c.model} {c.method}: {c.value:g} ({c.statistic}): {c.describe()}" for c in not_run]
    errors = [e for r in table for e in r.get("errors", [])]
    if errors:
        lines += ["", f"Failed ({len(errors)} runs):"] + [f"- {e}" for e in errors]
    if missing:
        lines += ["", f"Missing ({len(missing)} jobs of the sweep never started):"] + [f"- {m}" for m in missing]
    if unreadable:
        lines += ["", f"Unreadable ({len(unreadable)} run folders left out):"] + [f"- {u}" for u in unreadable]
    return "\n".join(lines)


def to_csv(table: list[dict]) -> str:
    """Every row's numbers as columns (means, standard deviations, extremes, paired differences, published
    values), lists joined by " | "."""
    fields: list[str] = []
    for row in table:
        fields += [k for k in row if k not in fields and k != "paper_cells"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({k: " | ".join(v) if isinstance(v, list) else ("" if v is None else v) for k, v in row.items()
                         if k != "paper_cells"})
    return out.getvalue()


# ---------------------------------------------------------------------------------------------------- plots
def plots(runs: list[dict], out: Path, baseline: str = BASELINE) -> list[Path]:
    """PNG figures: training curves per (dataset, model) with a band over seeds, and Figure 2 (the score against
    the mini-generation length) when LSTSD runs vary it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    files = []
    done = [r for r in runs if r.get("status") == "completed"]
    for (dataset, model), group in group_by(done, ("dataset", "model")).items():
        lengths: dict = {}
        for r in group:
            if r.get("method_name") == "lstsd" and r.get("config") is not None:
                lengths.setdefault(int(r["config"].method.minigen_epochs), []).append(r[f"test_{headline(r)}_final"])
        if len(lengths) > 1:
            xs = sorted(lengths)
            fig, ax = plt.subplots(figsize=(5.5, 3.8))
            ax.errorbar(xs, [np.mean(lengths[x]) for x in xs], yerr=[np.std(lengths[x], ddof=1) if
                        len(lengths[x]) > 1 else 0 for x in xs], marker="o", capsize=3, label="lstsd")
            base = [r[f"test_{headline(r)}_final"] for r in group if r["method"] == baseline]
            if base:
                ax.axhline(np.mean(base), color="grey", linestyle="--", label=f"{baseline} (n={len(base)})")
                if len(base) > 1:
                    ax.axhspan(np.mean(base) - np.std(base, ddof=1), np.mean(base) + np.std(base, ddof=1),
                               color="grey", alpha=0.15)
            ax.set_xscale("log")
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.set(xlabel="mini-generation length (epochs)", ylabel=f"final test {headline(group[0])} (%)",
                   title=f"LSTSD Figure 2: {dataset} / {model}")
            ax.legend(fontsize=8)
            files.append(out / f"fig2_minigen_length_{dataset}_{model}.png")
            fig.tight_layout(), fig.savefig(files[-1], dpi=120), plt.close(fig)
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for method, members in group_by(group, ("method",)).items():
            series = [[row[f"test_{headline(r)}"] for row in read_metrics(r)] for r in members]
            length = min(map(len, series))
            values = np.array([s[:length] for s in series])
            epochs = np.arange(1, length + 1)
            mean = values.mean(0)
            (line,) = ax.plot(epochs, mean, label=f"{method[0]} (n={len(series)})", linewidth=1.2)
            if len(series) > 1:
                std = values.std(0, ddof=1)
                ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel=f"test {headline(group[0])} (%)", title=f"{dataset} / {model}")
        ax.legend(fontsize=7)
        files.append(out / f"curves_{dataset}_{model}.png")
        fig.tight_layout(), fig.savefig(files[-1], dpi=120), plt.close(fig)
    return files


def group_by(runs: list[dict], keys: tuple) -> dict:
    out: dict = {}
    for r in runs:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def read_metrics(run: dict) -> list[dict]:
    return RunDir(run["run_dir"]).read_metrics()


def report(paths, out=None, baseline: str = BASELINE, sort: str = "launch", better_of: dict | None = None) -> str:
    runs, missing, unreadable = collect(paths)
    table = summarize(runs, baseline, sort, better_of)
    text = markdown(table, missing, baseline, unreadable)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(text + "\n")
        (out / "report.csv").write_text(to_csv(table))
        plots(runs, out, baseline)
    return text


class PrintReport(Callback):
    """Hydra callback: after a multirun, print the comparison table of its runs, as the sweep's ``report`` keys
    say (:class:`lstsd.config.ReportConfig`); with ``report.out`` (a folder inside the sweep folder) also write
    report.md, report.csv and the plots there."""

    def on_multirun_end(self, config, **kwargs) -> None:
        opts = config.get("report") or {}
        sweep_dir = Path(config.hydra.sweep.dir)
        out = sweep_dir / opts["out"] if opts.get("out") else None
        print(f"\nResults of {sweep_dir} (test scores %, mean ± std over seeds):\n")
        better_of = {k: list(v) for k, v in (opts.get("better_of") or {}).items()}
        print(report([sweep_dir], out, opts.get("baseline", BASELINE), opts.get("sort", "launch"), better_of))
        if out is not None:
            print(f"\nTables and plots: {out}")


def better_of_arg(value: str) -> tuple[str, list[str]]:
    """``--better-of 'NAME=A,B'`` -> (NAME, [A, B]); a malformed value is argparse's one-line error (exit 2)."""
    name, sep, labels = value.rpartition("=")
    rows = [x for x in labels.split(",") if x]
    if not sep or not name or len(rows) < 2:
        raise argparse.ArgumentTypeError(f"{value!r} is invalid: allowed NAME=A,B (a row name and two or more "
                                         "method labels)")
    return name, rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="lstsd-report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run or sweep directories (searched recursively)")
    parser.add_argument("--out", help="also write report.md, report.csv and the plots here")
    parser.add_argument("--baseline", default=BASELINE, help="the method label paired differences are taken to "
                                                             "(default: %(default)s)")
    parser.add_argument("--sort", choices=("launch", "final"), default="launch",
                        help="row order: the sweep's launch order, or by mean final score (default: %(default)s)")
    parser.add_argument("--better-of", action="append", default=[], metavar="NAME=A,B", type=better_of_arg,
                        help="add a row NAME: whichever of the rows A, B has the higher mean best score "
                             "(e.g. 'sd (better T)=sd,sd_t3', as LSTSD Table 1 picks SD's temperature)")
    args = parser.parse_args(argv)
    try:
        print(report(args.paths, args.out, args.baseline, args.sort, dict(args.better_of)))
    except ConfigError as e:
        parser.exit(2, f"lstsd-report: error: {e}\n")


if __name__ == "__main__":
    main()
