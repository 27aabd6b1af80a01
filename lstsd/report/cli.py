"""``lstsd-report PATH...``, the end-of-sweep table (:class:`PrintReport`), and the selected method written for
a confirmation run."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from lstsd.errors import ConfigError, quiet_when_piped_into_a_closed_reader
from lstsd.report.collect import collect
from lstsd.report.plots import plots
from lstsd.report.render import comparisons_csv, markdown, to_csv
from lstsd.report.table import BASELINE, declared, families, parse_pair, require_labels, summarize
from lstsd.config import ADJUSTMENTS


def report(paths, out=None, baseline: str | None = None, sort: str | None = None, better_of: dict | None = None,
           compare: tuple = (), adjust: str | None = None, select: str | None = None, verbose: bool = False) -> str:
    """The report's text (:func:`build`)."""
    return build(paths, out, baseline, sort, better_of, compare, adjust, select, verbose)[0]


def build(paths, out=None, baseline: str | None = None, sort: str | None = None, better_of: dict | None = None,
          compare: tuple = (), adjust: str | None = None, select: str | None = None, verbose: bool = False,
          out_key: str = "--out") -> tuple[str, list[Path]]:
    """The report's text and the files written into ``out`` (report.md, report.csv, comparisons.csv, the plots
    and a selected method's YAML). Options left None come from the runs' saved ``report`` keys (the first
    experiment's), else their defaults; ``baseline`` and ``better_of`` given must name method labels the runs
    have. A ConfigError: bad input (:func:`~lstsd.report.collect.collect`), or an ``out`` (the option
    ``out_key``) that is not a folder that can be written."""
    out = output_folder(out, out_key) if out is not None else None
    runs, missing, unreadable = collect(paths)
    require_labels(runs, f"--baseline {baseline}", [baseline] if baseline else [])
    for name, labels in (better_of or {}).items():
        require_labels(runs, f"--better-of {name}={','.join(labels)}", labels)
    options = declared(runs)
    first = next(iter(options.values()), {})
    baseline = baseline or first.get("baseline") or BASELINE
    select = select or first.get("select")
    table = summarize(runs, baseline, sort or first.get("sort") or "launch",
                      better_of if better_of is not None else first.get("better_of"), select)
    fams = families(table, options, baseline, adjust, tuple(compare))
    notes = [f"{experiment}: {o['note']}" for experiment, o in options.items() if o.get("note")]
    text = markdown(table, missing, baseline, unreadable, fams, notes, verbose)
    if out is None:
        return text, []
    try:
        return text, write_files(out, text, table, fams, runs, baseline)
    except OSError as e:  # a full disk, a folder made read-only meanwhile, a name taken by a folder
        raise ConfigError(f"{option(out_key, out)} is invalid: cannot write {e.filename or out} ({type(e).__name__}: "
                          f"{e.strerror or e}): allowed a folder that can be made and written") from None


def option(key: str, value) -> str:
    """``--out DIR`` on the command line, ``report.out=DIR`` in a config."""
    return f"{key} {value}" if key.startswith("--") else f"{key}={value}"


def output_folder(out, key: str = "--out") -> Path:
    """The folder for the report's files (made when they are written), or a ConfigError naming ``key``: a path
    that is a file or lies below one, or whose nearest existing folder cannot be written."""
    path = Path(out)
    existing = next((p for p in (path, *path.parents) if os.path.exists(p)), Path("."))
    if not existing.is_dir():
        where = "it is a file" if existing == path else f"{existing} is a file"
        raise ConfigError(f"{option(key, out)} is invalid: {where}: allowed a folder (made if absent)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option(key, out)} is invalid: {existing} is not writable: allowed a folder that can "
                          "be made and written")
    return path


def write_files(out: Path, text: str, table: list[dict], fams: list[dict], runs: list[dict], baseline: str
                ) -> list[Path]:
    """report.md, report.csv, comparisons.csv, a selected method's YAML and the plots, written into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in (("report.md", text + "\n"), ("report.csv", to_csv(table)),
                          ("comparisons.csv", comparisons_csv(fams))):
        (out / name).write_text(content)
        written.append(out / name)
    written += write_selected(table, out)
    return written + plots(runs, fams, out, baseline, table)


def write_selected(table: list[dict], out: Path) -> list[Path]:
    """Each selected variant as a method option, ``<out>/conf/method/<label>_selected.yaml``: its method option
    with the variant's ``method.*`` overrides, for a run on fresh seeds (``hydra.searchpath=[file://<out>/conf]``)."""
    import yaml

    paths = []
    for row in table:
        keys = row.get("settings", {})
        if not row.get("selected") or not keys or not all(k.startswith("method.") for k in keys):
            continue
        label = f"{row['method']}_selected"
        lines = [f"# {row['method']} {row['variant']}: selected by lstsd-report as {row['selected']}",
                 f"# ({row['experiment']}, {row['dataset']} / {row['model']}, {row['n']} runs).",
                 "defaults:", f"  - {row['option']}", "  - _self_", f"label: {label}"]
        lines += [f"{k.removeprefix('method.')}: {yaml.safe_dump(yaml.safe_load(v), default_flow_style=True).strip()}"
                  .removesuffix("...").strip() for k, v in keys.items()]
        path = out / "conf" / "method" / f"{label}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


class PrintReport(Callback):
    """Hydra callback: after a multirun, print the report of its runs, as the sweep's ``report`` keys say
    (:class:`lstsd.config.ReportConfig`); with ``report.out`` (a folder inside the sweep folder) also write the
    files there."""

    def on_multirun_end(self, config, **kwargs) -> None:
        opts = config.get("report") or {}
        sweep_dir = Path(config.hydra.sweep.dir)
        out = sweep_dir / opts["out"] if opts.get("out") else None
        print(f"\nResults of {sweep_dir} (test scores %, mean ± std over seeds):\n")
        try:
            text, written = build([sweep_dir], out, out_key="report.out")
        except ConfigError as e:  # the sweep's runs are done and kept: its end reports the one line, not a traceback
            print(f"lstsd-report: error: {e}", file=sys.stderr)
            return
        print(text)
        if written:
            print(f"\nWrote {len(written)} files to {out}")


def better_of_arg(value: str) -> tuple[str, list[str]]:
    """``--better-of 'NAME=A,B'`` -> (NAME, [A, B]); a malformed value is argparse's one-line error (exit 2)."""
    name, sep, labels = value.rpartition("=")
    rows = [x for x in labels.split(",") if x]
    if not sep or not name or len(rows) < 2:
        raise argparse.ArgumentTypeError(f"{value!r} is invalid: allowed NAME=A,B (a row name and two or more "
                                         "method labels)")
    return name, rows


def pair_arg(value: str) -> tuple[str, str]:
    try:
        return parse_pair(value)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line on stderr (``lstsd-report: error: ...``, exit code 2), without
    the usage block above it (``--help`` shows that)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


@quiet_when_piped_into_a_closed_reader
def main(argv=None) -> None:
    parser = OneLineParser(prog="lstsd-report", description="Tables, comparisons and plots of run and "
                                                            "sweep folders.")
    parser.add_argument("paths", nargs="+", help="run or sweep directories (searched recursively)")
    parser.add_argument("--out", help="also write report.md, report.csv, comparisons.csv and the plots here")
    parser.add_argument("--baseline", help="the method label the Δ columns are taken to (default: the runs' "
                                           "report.baseline, else vanilla)")
    parser.add_argument("--compare", action="append", default=[], metavar="A:B", type=pair_arg,
                        help="also test A - B on their shared seeds (repeatable), as a family of its own")
    parser.add_argument("--adjust", choices=ADJUSTMENTS, help="the family-wise adjustment beside each raw p: holm "
                                                              "(default), bh (Benjamini-Hochberg q) or none")
    parser.add_argument("--select", choices=("val", "final"), help="mark each method's variant of the best mean "
                                                                   "validation (val) or final test score as selected")
    parser.add_argument("--sort", choices=("launch", "final"),
                        help="row order: the sweep's launch order, or by mean final score")
    parser.add_argument("--better-of", action="append", default=None, metavar="NAME=A,B", type=better_of_arg,
                        help="add a row NAME: whichever of the rows A, B has the higher mean best score "
                             "(e.g. 'sd (better T)=sd,sd_t3', as LSTSD Table 1 picks SD's temperature)")
    parser.add_argument("--verbose", action="store_true", help="also list the published numbers not compared")
    args = parser.parse_args(argv)
    try:
        text, written = build(args.paths, args.out, args.baseline, args.sort,
                               dict(args.better_of) if args.better_of is not None else None, tuple(args.compare),
                               args.adjust, args.select, args.verbose)
    except ConfigError as e:
        parser.exit(2, f"lstsd-report: error: {e}\n")
    print(text)
    if written:  # on stderr: stdout is the table (the same text as report.md)
        print(f"lstsd-report: wrote {len(written)} files to {args.out}: " + ", ".join(p.name for p in written[:6])
              + (", ..." if len(written) > 6 else ""), file=sys.stderr)
