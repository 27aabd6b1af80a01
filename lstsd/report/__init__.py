"""Tables over many runs: ``lstsd-report PATH...`` and the table printed at the end of every multirun.

Every ``results.json`` below the given folders is one run; runs are grouped by (dataset, model, method) and each
group shows mean ± sample std over its runs (seeds) of the final and the best test accuracy (%), with n.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from hydra.experimental.callback import Callback

KEYS = ("dataset", "model", "method")


def natural_key(path: Path) -> list:
    """Sort job folders 0, 1, 2, ..., 10 rather than 0, 1, 10, 2."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def collect(paths) -> list[dict]:
    rows = []
    for path in map(Path, paths):
        files = [path] if path.name == "results.json" else sorted(path.rglob("results.json"), key=natural_key)
        for f in files:
            rows.append(json.loads(f.read_text()) | {"run_dir": str(f.parent)})
    return rows


def mean_std(values: list) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {std:.2f}"


def summarize(rows: list[dict]) -> list[dict]:
    groups: dict = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in KEYS), []).append(r)
    table = []
    for key, runs in groups.items():
        table.append(dict(zip(KEYS, key)) | {
            "n": len(runs),
            "final acc": mean_std([r["test_acc_final"] for r in runs]),
            "best acc": mean_std([r["test_acc_best"] for r in runs]),
        })
    return table


def markdown(table: list[dict]) -> str:
    if not table:
        return "(no results.json found)"
    cols = list(table[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(row[c]) for c in cols) + " |" for row in table]
    return "\n".join(lines)


class PrintReport(Callback):
    """Hydra callback: after a multirun, print the comparison table of its runs."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        print(f"\nResults of {sweep_dir} (test accuracy %, mean ± std over runs):\n")
        print(markdown(summarize(collect([sweep_dir]))))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="lstsd-report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run or sweep directories (searched recursively)")
    args = parser.parse_args(argv)
    print(markdown(summarize(collect(args.paths))))


if __name__ == "__main__":
    main()
