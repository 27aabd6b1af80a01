"""A report as text: the Markdown table (``±`` only for two runs or more; optional columns left out where every
row is empty), the table of each family of comparisons, and the CSV files of both, with numeric columns."""
from __future__ import annotations

import csv
import io
import math

from lstsd.report.table import BASELINE, not_compared

HIDDEN = ("paper_cells", "scores", "option", "settings", "provenance")  # row fields for the computation, not for the files
LABELS = {"p_holm": "p Holm", "q_bh": "q BH"}  # the adjusted p's column


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


def seeds(n) -> str:
    """The seeds for 80 % power: a count, "> 100000" beyond the search, "-" where there is no t-test."""
    return "-" if n is None else ("> 100000" if math.isinf(n) else str(int(n)))


def difference(mean, low, high) -> str:
    """``+1.23 [+0.45, +2.01]``: a paired mean difference and its 95 % confidence interval."""
    return "-" if mean is None else f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


def adjusted_name(table: list[dict]) -> str | None:
    return next((k for row in table for k in ("p_holm", "q_bh") if k in row), None)


def display(table: list[dict], baseline: str = BASELINE) -> tuple[list[str], list[list[str]]]:
    """The Markdown columns and cells; optional columns empty in every row are left out."""
    others = sorted({k.split("_")[1] for row in table for k in row if k.startswith("final_") and k.endswith("_mean")
                     and k.count("_") == 2})
    adjusted = adjusted_name(table)
    prefix = f"vs_{baseline}_final"
    columns = {
        "experiment": lambda r: r["experiment"], "dataset": lambda r: r["dataset"], "model": lambda r: r["model"],
        "method": lambda r: r["method"],
        "variant": lambda r: r["variant"] + (" (selected)" if r.get("selected") else ""),
        "n": lambda r: str(r["n"]), "metric": lambda r: r["metric"], "final": lambda r: spread(r, "final"),
        "best": lambda r: spread(r, "best"), "val": lambda r: spread(r, "val"),
        "ensemble": lambda r: spread(r, "ensemble"),
        **{f"final {m}": (lambda r, m=m: spread(r, f"final_{m}")) for m in others},
        f"Δ final vs {baseline} [95% CI]": lambda r: difference(r.get(f"{prefix}_mean"), r.get(f"{prefix}_ci_low"),
                                                                r.get(f"{prefix}_ci_high")),
        "p": lambda r: p_value(r.get("p")),
        **({LABELS[adjusted]: lambda r: p_value(r.get(adjusted))} if adjusted else {}),
        "p exact": lambda r: p_value(r.get("p_exact")),
        "seeds for 80% power": lambda r: seeds(r.get("n_for_power80")) if "p_exact" in r else "-",
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


def grid(columns: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"] + \
           ["| " + " | ".join(row) + " |" for row in rows]


def family_lines(fam: dict) -> list[str]:
    """One family's table: each comparison A - B with its n, difference and interval, raw, adjusted and exact
    p, and the seeds it would need."""
    k, adjusted = len(fam["comparisons"]), fam["adjust"]
    how = {"p_holm": "Holm-adjusted", "q_bh": "Benjamini-Hochberg q"}.get(adjusted, "not adjusted")
    lines = ["", f"Comparisons: {fam['name']} (a family of {k}, {how}; final scores, paired by seed; p exact: "
                 "sign-flip permutation test; seeds for 80% power: a planning figure, not a test):", ""]
    blocks = len({(c["dataset"], c["model"]) for c in fam["comparisons"]}) > 1
    columns = ["dataset / model"] * blocks + ["A - B", "n", "Δ final [95% CI]", "p"] + \
        [LABELS.get(adjusted)] * bool(adjusted) + ["p exact", "seeds for 80% power"]
    rows = []
    for c in fam["comparisons"]:
        tested = c["n"] >= 2
        rows.append([f"{c['dataset']} / {c['model']}"] * blocks + [
            f"{c['a']} - {c['b']}", str(c["n"]),
            difference(c.get("mean"), c.get("ci_low"), c.get("ci_high")) if tested else
            ("not run" if c["n"] == 0 else "one shared seed: no test"),
            p_value(c.get("p"))] + [p_value(c.get("p_adjusted"))] * bool(adjusted) +
            [p_value(c.get("p_exact")), seeds(c.get("n_power80"))])
    return lines + grid(columns, rows)


def markdown(table: list[dict], missing: list[str] = (), baseline: str = BASELINE, unreadable: list[str] = (),
             families: list[dict] = (), notes: list[str] = (), verbose: bool = False) -> str:
    lines = [f"({n})" for n in notes] + [""] * bool(notes)
    lines += grid(*display(table, baseline)) if table else ["(no runs found)"]
    for fam in families:
        lines += family_lines(fam)
    selected = [r for r in table if r.get("selected")]
    if selected:
        lines += ["", "Selected after looking (no p-value; confirm on fresh seeds):"]
        lines += [f"- {r['model']} {r['method']} {r['variant']}: {r['selected']}" for r in selected]
    sources = [(r, s) for r in table for s in r.get("paper_sources", [])]
    if sources:
        lines += ["", "Published numbers (each beside the statistic of its definition):"]
        lines += [f"- {r['model']} {r['method']}: {s}" for r, s in sources]
    not_run = not_compared(table)
    if not_run and verbose:
        lines += ["", "Published numbers of these tables that no run here has the method or setting of (not "
                      "compared):"]
        lines += [f"- {c.model} {c.method}: {c.value:g} ({c.statistic}): {c.describe()}" for c in not_run]
    elif not_run:
        lines += ["", f"({len(not_run)} published numbers of these tables have no run of their method or setting "
                      "here: --verbose lists them.)"]
    origins = sorted({o for r in table for o in r.get("provenance", [])})
    if origins:
        lines += ["", "Provenance of the runs: " + "; ".join(origins)]
    mixed = [r for r in table if len(r.get("provenance", [])) > 1]
    for r in mixed:
        lines += [f"Warning: the row {r['method']} {r['variant']} ({r['model']}) mixes runs of "
                  f"{len(r['provenance'])} origins (lstsd versions, torch versions or devices): not one experiment"]
    errors = [e for r in table for e in r.get("errors", [])]
    if errors:
        lines += ["", f"Failed ({len(errors)} runs):"] + [f"- {e}" for e in errors]
    if missing:
        lines += ["", f"Missing ({len(missing)} jobs of the sweep never started):"] + [f"- {m}" for m in missing]
    if unreadable:
        lines += ["", f"Unreadable ({len(unreadable)} run folders left out):"] + [f"- {u}" for u in unreadable]
    return "\n".join(lines)


def csv_text(rows: list[dict]) -> str:
    """Rows as CSV columns (every key of any row, in order of appearance), lists joined by " | "."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields and k not in HIDDEN]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: " | ".join(v) if isinstance(v, list) else ("" if v is None else v) for k, v in row.items()
                         if k not in HIDDEN})
    return out.getvalue()


def to_csv(table: list[dict]) -> str:
    """Every row's numbers as columns (means, standard deviations, extremes, paired differences, p, the adjusted
    p, p_exact, n_for_power80, published values)."""
    return csv_text(table)


def comparisons_csv(families: list[dict]) -> str:
    """Every comparison of every family: family, A, B, n, mean, sd, ci_low, ci_high, p, the adjusted p (its
    column named by the adjustment), p_exact, n_for_power80."""
    rows = []
    for fam in families:
        for c in fam["comparisons"]:
            row = {"family": fam["name"], "experiment": c["experiment"], "dataset": c["dataset"], "model": c["model"],
                   "a": c["a"], "b": c["b"], "n": c["n"]}
            row |= {k: c.get(k) for k in ("mean", "sd", "ci_low", "ci_high", "p")}
            row[fam["adjust"] or "p_adjusted"] = c.get("p_adjusted")
            row |= {"p_exact": c.get("p_exact"), "n_for_power80": c.get("n_power80")}
            rows.append(row)
    return csv_text(rows)
