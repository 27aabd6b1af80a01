"""The report's figures, each as PNG and PDF:

* ``curves_<dataset>_<model>``: the test score per epoch of every method, the mean over seeds with a band of
  +-1 standard deviation over seeds, the baseline in black; the right panel zooms on the last half of training;
* ``fig2_minigen_length_<dataset>_<model>`` (LSTSD Figure 2), when LSTSD runs vary the mini-generation length:
  the mean final score per length with error bars of +-1 standard deviation over seeds, the baseline's mean and
  band;
* ``grid_<dataset>_<model>_<method>``, when a method's variants sweep two keys (a lambda grid): each cell's mean
  final validation score (test score without a validation split), the selected cell framed;
* ``forest_<experiment>``: each comparison of a family, A - B with its 95 % confidence interval, sorted, a line
  at zero, and the adjusted p (or the exact p where there is no t-test) as its label.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from lstsd.report.collect import headline, read_metrics
from lstsd.report.render import LABELS, p_value
from lstsd.report.table import BASELINE


def plots(runs: list[dict], families: list[dict], out: Path, baseline: str = BASELINE,
          table: Sequence[dict] = ()) -> list[Path]:
    """Every figure of the runs, families and rows; the paths written (PNG and PDF)."""
    import matplotlib

    matplotlib.use("Agg")
    files: list[Path] = []
    done = [r for r in runs if r.get("status") == "completed"]
    for (dataset, model), group in group_by(done, ("dataset", "model")).items():
        files += fig2(group, out / f"fig2_minigen_length_{dataset}_{model}", baseline, f"{dataset} / {model}")
        files += curves(group, out / f"curves_{dataset}_{model}", baseline, f"{dataset} / {model}")
    for fam in families:
        suffix = "_compare" if "--compare" in fam["name"] else ""
        files += forest(fam, out / f"forest_{fam['experiment']}{suffix}")
    for key, rows in group_by([r for r in table if len(r.get("settings", {})) == 2],
                              ("experiment", "dataset", "model", "method")).items():
        files += heatmap(rows, out / f"grid_{'_'.join(key[1:])}")
    return files


def heatmap(rows: list[dict], stem: Path) -> list[Path]:
    """A grid of two swept keys (the lambda grid): each cell's mean final validation score (the test score where
    the runs held out none), the selected cell framed."""
    import matplotlib.pyplot as plt
    import numpy as np

    stat = "val" if all(r.get("val_mean") is not None for r in rows) else "final"
    (kx, ky) = sorted(rows[0]["settings"])
    xs = sorted({coordinate(r["settings"][kx]) for r in rows}, key=axis_order)
    ys = sorted({coordinate(r["settings"][ky]) for r in rows}, key=axis_order)
    grid = np.full((len(ys), len(xs)), np.nan)
    for r in rows:
        grid[ys.index(coordinate(r["settings"][ky])), xs.index(coordinate(r["settings"][kx]))] = r[f"{stat}_mean"]
    fig, ax = plt.subplots(figsize=(1.0 * len(xs) + 2.5, 0.8 * len(ys) + 1.6))
    image = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white")
    for r in rows:
        if r.get("selected"):
            j, i = xs.index(coordinate(r["settings"][kx])), ys.index(coordinate(r["settings"][ky]))
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    ax.set_xticks(range(len(xs)), [tick(x) for x in xs])
    ax.set_yticks(range(len(ys)), [tick(y) for y in ys])
    n = min(r["n"] for r in rows)
    ax.set(xlabel=kx, ylabel=ky, title=f"mean final {'validation' if stat == 'val' else 'test'} score over {n} seeds"
                                       + ("; red: selected" if any(r.get("selected") for r in rows) else ""))
    ax.title.set_fontsize(9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return save(fig, stem)


def coordinate(value):
    """An override's value on a grid axis: a number where it is one (1 and 1.0 are one cell), else as written
    (``method.kl_direction=reverse``; None for a run that kept the default)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return number if math.isfinite(number) else value


def axis_order(value) -> tuple:
    """A grid axis: numbers in order, then the other values (words, a run's default) by name."""
    return (0, value, "") if isinstance(value, float) else (1, 0.0, str(value))


def tick(value) -> str:
    return f"{value:g}" if isinstance(value, float) else ("(default)" if value is None else str(value))


def save(fig, stem: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=130, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def group_by(runs: list[dict], keys: tuple) -> dict:
    out: dict = {}
    for r in runs:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def fig2(group: list[dict], stem: Path, baseline: str, title: str) -> list[Path]:
    import matplotlib.pyplot as plt
    import numpy as np

    lengths: dict = {}
    for r in group:
        if r.get("method_name") == "lstsd" and r.get("config") is not None and f"test_{headline(r)}_final" in r:
            lengths.setdefault(int(r["config"].method.minigen_epochs), []).append(r[f"test_{headline(r)}_final"])
    if len(lengths) < 2:
        return []
    xs = sorted(lengths)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(xs, [np.mean(lengths[x]) for x in xs], yerr=[np.std(lengths[x], ddof=1) if len(lengths[x]) > 1
                                                             else 0 for x in xs],
                marker="o", capsize=3, label=f"lstsd, mean ± 1 SD over seeds (n={min(map(len, lengths.values()))})")
    base = [r[f"test_{headline(r)}_final"] for r in group if r["method"] == baseline and f"test_{headline(r)}_final"
            in r]
    if base:
        ax.axhline(np.mean(base), color="black", linestyle="--", label=f"{baseline} mean (n={len(base)})")
        if len(base) > 1:
            ax.axhspan(np.mean(base) - np.std(base, ddof=1), np.mean(base) + np.std(base, ddof=1), color="grey",
                       alpha=0.15, label=f"{baseline} ± 1 SD over seeds")
    ax.set_xscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set(xlabel="mini-generation length (epochs)", ylabel=f"final test {headline(group[0])} (%)",
           title=f"LSTSD Figure 2: {title}")
    ax.legend(fontsize=8)
    return save(fig, stem)


def curves(group: list[dict], stem: Path, baseline: str, title: str) -> list[Path]:
    """Two panels, the whole run and its last half; the legend outside the axes."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 1]})
    handles = []
    zoom_low, zoom_high = np.inf, -np.inf
    for (method,), members in group_by(group, ("method",)).items():
        series = [[row[f"test_{headline(r)}"] for row in read_metrics(r)] for r in members]
        length = min(map(len, series))
        if length == 0:
            continue
        values = np.array([s[:length] for s in series])
        epochs, mean = np.arange(1, length + 1), values.mean(0)
        std = values.std(0, ddof=1) if len(series) > 1 else np.zeros(length)
        style = {"color": "black", "linewidth": 2.2, "zorder": 5} if method == baseline else {"linewidth": 1.1}
        for ax in axes:
            (line,) = ax.plot(epochs, mean, **style)
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.12, linewidth=0)
        handles.append((line, f"{method} (n={len(series)})"))
        half = length // 2
        zoom_low, zoom_high = min(zoom_low, (mean - std)[half:].min()), max(zoom_high, (mean + std)[half:].max())
    if not handles:
        plt.close(fig)
        return []
    length = max(line.get_xdata()[-1] for line, _ in handles)
    axes[1].set_xlim(length / 2, length)
    if np.isfinite(zoom_low):
        pad = 0.05 * (zoom_high - zoom_low or 1.0)
        axes[1].set_ylim(zoom_low - pad, zoom_high + pad)
    metric = headline(group[0])
    axes[0].set(xlabel="epoch", ylabel=f"test {metric} (%)", title=title)
    axes[1].set(xlabel="epoch", title="last half of training")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    items = [h for h, _ in handles] + [Patch(color="grey", alpha=0.3)]
    labels = [label for _, label in handles] + ["band: ± 1 SD over seeds"]
    fig.legend(items, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    return save(fig, stem)


def forest(fam: dict, stem: Path) -> list[Path]:
    """A - B with its 95 % confidence interval per comparison, sorted by the difference, the adjusted p as label."""
    import matplotlib.pyplot as plt

    rows = sorted((c for c in fam["comparisons"] if c["n"] >= 2), key=lambda c: c["mean"])
    if not rows:
        return []
    blocks = len({(c["dataset"], c["model"]) for c in rows}) > 1
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(rows) + 1.4))
    adjusted = LABELS.get(fam["adjust"], "p")
    for y, c in enumerate(rows):
        ax.errorbar(c["mean"], y, xerr=[[c["mean"] - c["ci_low"]], [c["ci_high"] - c["mean"]]], fmt="o",
                    color="black", ecolor="grey", capsize=3)
        label = (f"{adjusted} {p_value(c['p_adjusted'])}" if c.get("p") is not None
                 else f"p exact {p_value(c.get('p_exact'))}")
        ax.annotate(f"  {label}, n={c['n']}", (max(c["ci_high"], c["mean"]), y), va="center", fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_yticks(range(len(rows)), [f"{c['a']} - {c['b']}" + (f" ({c['dataset']}/{c['model']})" if blocks else "")
                                     for c in rows])
    ax.set(xlabel="difference of final test score (percentage points), 95% CI", title=fam["name"])
    ax.title.set_fontsize(9)
    ax.margins(x=0.25)
    fig.tight_layout()
    return save(fig, stem)
