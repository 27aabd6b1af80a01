"""The numbers of a report: one row per group of runs, and the families of paired comparisons.

Runs are grouped by (experiment, dataset, model, method label) and variant (the job overrides, seed aside, whose
values differ inside that group: one row per cell of a lambda grid). Each row gives, in the group's headline
``metric`` (the dataset's: accuracy, or Matthews correlation for CoLA), over its n completed runs (seeds): the
final and the best epoch's test score (%), the final validation score when the runs held out a validation split,
the snapshot ensemble's score, the task's other metrics; the paired difference to the ``baseline`` method
(vanilla) over the seeds both ran, with its 95 % confidence interval; the published numbers of the papers
(``experiments/reference``), each in the column of its own definition (final, best, ensemble or unstated) and
only beside runs trained with its setting; and the runs that failed, are running or never started.

**Families.** The tests of one experiment are one family, adjusted together (Holm by default, ``adjust``):

* its declared comparisons, ``report.compare: [A:B, ...]`` in the experiment's config, saved with every run:
  A minus B on the final score, paired by seed, in every (dataset, model) block of the experiment, and nothing
  else is tested;
* with none declared (``report.compare`` null), every row against the baseline, labelled exploratory;
* ``report.compare: []`` (a curve, a selection): no tests, the differences as point estimates.

``--compare A:B`` on the command line adds a family of its own. A row picked by a statistic (``select``: the
grid cell of the best mean validation score) is marked as selected after looking, and gets no p-value.
"""
from __future__ import annotations

import math
from typing import Optional

from lstsd.errors import ConfigError
from lstsd.report.collect import by_seed, headline, message
from lstsd.report.reference import cells, published
from lstsd.report.stats import adjust, describe, paired

KEYS = ("experiment", "dataset", "model", "method")
BASELINE = "vanilla"
STATS = ("final", "best", "val", "ensemble")


def statistic_key(stat: str, metric: str) -> str:
    return {"final": f"test_{metric}_final", "best": f"test_{metric}_best", "val": f"val_{metric}_final",
            "ensemble": f"ensemble_test_{metric}_final"}[stat]


def short(value: str) -> str:
    """An override's value for a row label: numbers with at most 4 significant digits (Optuna's suggestions)."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() or len(value) <= 6 else f"{number:.4g}"


def varying_keys(runs: list[dict]) -> list[str]:
    """The job overrides (seed aside) whose values differ among ``runs``."""
    keys = sorted({k for r in runs for k in r.get("overrides", {})} - {"seed"})
    return [k for k in keys if len({r.get("overrides", {}).get(k) for r in runs}) > 1]


def variants(runs: list[dict]) -> dict:
    """Split one (experiment, dataset, model, method) group by the overrides whose values differ among its runs
    (seed aside): a lambda grid gives one row per (lambda_short, lambda_long), a seed-only sweep one row."""
    varying = varying_keys(runs)
    out: dict = {}
    for r in runs:
        label = " ".join(f"{k}={short(r['overrides'].get(k, '(default)'))}" for k in varying) or "-"
        out.setdefault(label, []).append(r)
    return out


def block(row: dict) -> tuple:
    return tuple(row[k] for k in KEYS[:3])


def summarize(runs: list[dict], baseline: str = BASELINE, sort: str = "launch", better_of: dict | None = None,
              select: Optional[str] = None) -> list[dict]:
    """One row of numbers per group and variant (see the module's docstring); ``sort="final"`` orders the rows
    of each (experiment, dataset, model) block by their mean final score, best first. ``better_of`` maps a row
    name to method labels, e.g. ``{"sd (better T)": ["sd", "sd_t3"]}``: in each block, a copy of whichever of
    those rows has the higher mean best-epoch score, named so (LSTSD Table 1's SD cell is the better of SD's two
    temperatures, chosen on the test set as the paper did). ``select`` (val or final) marks, among the variants
    of each method, the one of the highest mean of that statistic (``selected``)."""
    groups: dict = {}
    for r in runs:
        groups.setdefault(tuple(r.get(k, "?") for k in KEYS), []).append(r)
    cells_ = [(key, variant, group, varying_keys(whole)) for key, whole in groups.items()
              for variant, group in variants(whole).items()]
    done_of = {(key, variant): [r for r in group if r.get("status") == "completed"] for key, variant, group, _ in
               cells_}
    table = []
    for key, variant, group, varying in cells_:
        base = done_of.get(((*key[:3], baseline), variant)) or done_of.get(((*key[:3], baseline), "-"))
        table.append(group_row(key, variant, group, varying, done_of[(key, variant)],
                               base if key[3] != baseline else None, baseline))
    if select:
        mark_selected(table, select)
    for name, labels in (better_of or {}).items():
        blocks: dict = {}
        for row in table:
            if row["method"] in labels and row.get("best_mean") is not None:
                blocks.setdefault(block(row) + (row["variant"],), []).append(row)
        for rows in blocks.values():
            chosen = max(rows, key=lambda r: r["best_mean"])
            table.append({k: v for k, v in chosen.items() if not k.startswith("paper")} |
                         {"method": name, "variant": f"= {chosen['method']}" + (
                             "" if chosen["variant"] == "-" else f" {chosen['variant']}")})
    if sort == "final":
        blocks = {}
        for row in table:
            blocks.setdefault(block(row), []).append(row)
        table = [row for rows in blocks.values() for row in
                 sorted(rows, key=lambda r: -r["final_mean"] if r.get("final_mean") is not None else math.inf)]
    return table


def group_row(key: tuple, variant: str, group: list[dict], varying: list[str], done: list[dict],
              base: Optional[list[dict]], baseline: str) -> dict:
    """The row of one group and variant: its statistics over the completed runs ``done``, the paired difference to
    the baseline's runs ``base`` (point estimate and interval; tests belong to families), the published cells,
    and the runs that failed or are running."""
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
    row["scores"] = {stat: by_seed(done, statistic_key(stat, metric)) for stat in ("final", "best")}
    # the method option and the overrides that make this variant (a selected grid cell is written from them)
    row["option"] = group[0].get("overrides", {}).get("method", key[3])
    row["settings"] = {k: group[0].get("overrides", {}).get(k) for k in varying}
    for stat in ("final", "best") if base else ():
        name = statistic_key(stat, metric)
        diff = paired(by_seed(done, name), by_seed(base, name))
        if diff is not None:
            row |= {f"vs_{baseline}_{stat}_{k}": diff[k] for k in ("n", "mean", "ci_low", "ci_high")}
    row |= published_columns(key, done)
    row["provenance"] = sorted({origin(r) for r in done if r.get("provenance")})
    row["failed"] = sum(r.get("status") == "failed" for r in group)
    row["running"] = sum(r.get("status") == "running" for r in group)
    row["errors"] = [f"{r['run_dir']}: {r.get('error', '?')}" for r in group if r.get("status") == "failed"]
    return row


def origin(run: dict) -> str:
    """What a row's runs must share to be one experiment: the lstsd version (and commit), torch, the device."""
    p = run["provenance"]
    commit = f" {p['git_commit'][:8]}{'+dirty' if p.get('git_dirty') else ''}" if p.get("git_commit") else ""
    return f"lstsd {p.get('lstsd')}{commit}, torch {p.get('torch')}, {p.get('device')}"


def mark_selected(table: list[dict], stat: str) -> None:
    """Among the variants of each (block, method), mark the one with the highest mean ``stat`` as selected,
    with how many it was chosen from."""
    groups: dict = {}
    for row in table:
        if row.get(f"{stat}_mean") is not None:
            groups.setdefault(block(row) + (row["method"],), []).append(row)
    for rows in groups.values():
        if len(rows) > 1:
            best = max(rows, key=lambda r: r[f"{stat}_mean"])
            best["selected"] = f"the highest mean {'validation' if stat == 'val' else 'final test'} score of " \
                               f"{len(rows)} variants"


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
    blocks = {block(row) for row in table}
    return [c for c in cells() if id(c) not in placed and any(
        c.experiment in (b[0], "*") and (c.dataset, c.model) == b[1:] for b in blocks)]


# ---------------------------------------------------------------------------------------------------- families
def declared(runs: list[dict]) -> dict:
    """Per experiment, the report keys its runs were launched with (``report`` of their saved configs: the
    declared comparisons, the adjustment, the selection); {} for runs from before the keys existed. A ConfigError
    names a saved config whose report keys a launch would have refused."""
    from pathlib import Path

    out: dict = {}
    for r in runs:
        config = r.get("config")
        if config is not None and r.get("experiment") not in out:
            opts = report_keys(config, Path(r["run_dir"]) / ".hydra" / "config.yaml")
            if opts is not None:
                out[r.get("experiment")] = opts
    return out


REPORT_KEYS = {"compare": (list, "null or a list of A:B (method labels)"), "baseline": (str, "a method label"),
               "adjust": (str, "one of holm, bh, none"), "select": (str, "null, val or final"),
               "sort": (str, "launch or final"), "note": (str, "null or a line of text"),
               "out": (str, "null or a folder"), "better_of": (dict, "a mapping of row names to method labels")}


def report_keys(config, path) -> Optional[dict]:
    """A saved config's ``report`` keys as plain data, checked as a launch checks them
    (:class:`lstsd.config.ReportConfig`); None where it has none. A ConfigError names the file and the key."""
    import dataclasses

    from omegaconf import OmegaConf

    from lstsd.config import ReportConfig

    try:
        node = OmegaConf.select(config, "report", default=None)
        opts = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    except Exception as e:  # noqa: BLE001 - an interpolation that does not resolve, a node of another shape
        raise ConfigError(f"{path}: {getattr(e, 'full_key', None) or 'report'} cannot be read ({type(e).__name__}: "
                          f"{message(e)})") from None
    if opts is None:
        return None
    if not isinstance(opts, dict):
        raise ConfigError(f"{path}: report={opts!r} is invalid: allowed a mapping of the report keys "
                          f"({', '.join(REPORT_KEYS)})")
    for key, value in opts.items():
        kind, allowed = REPORT_KEYS.get(key, (object, ""))
        if not of_shape(value, kind):
            raise ConfigError(f"{path}: report.{key}={value!r} is invalid: allowed {allowed}")
    try:
        ReportConfig(**{k: v for k, v in opts.items() if k in {f.name for f in dataclasses.fields(ReportConfig)}
                        and v is not None})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return opts


def of_shape(value, kind: type) -> bool:
    """None, or a ``kind``: a list of strings, a mapping of lists of strings, a string."""
    if value is None:
        return True
    if kind is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind is dict:
        return isinstance(value, dict) and all(isinstance(v, list) and all(isinstance(x, str) for x in v)
                                               for v in value.values())
    return isinstance(value, kind)


def require_labels(runs: list[dict], option: str, labels) -> None:
    """Each of ``labels`` (named by a command-line ``option``) the method label of some of ``runs``, or a
    ConfigError naming the option and the labels the runs have."""
    have = sorted({r["method"] for r in runs if isinstance(r.get("method"), str)})
    for label in labels:
        if have and label not in have:
            raise ConfigError(f"{option} is invalid: no runs of a method labelled {label} (allowed: "
                              f"{', '.join(have)})")


def parse_pair(value: str) -> tuple[str, str]:
    a, sep, b = value.partition(":")
    if not (sep and a and b and ":" not in b and a != b):
        raise ConfigError(f"{value!r} is invalid: allowed A:B (two different method labels)")
    return a, b


def row_of(rows: list[dict], label: str, where: str) -> Optional[dict]:
    """The one row of a method label in a block (None when the block has none); several variants of it make a
    comparison ambiguous."""
    found = [r for r in rows if r["method"] == label]
    if len(found) > 1:
        raise ConfigError(f"{where}: {label} has {len(found)} variants in these runs "
                          f"({', '.join(r['variant'] for r in found)}): a comparison needs one row per method")
    return found[0] if found else None


def compare_rows(a: dict, b: dict) -> dict:
    """The paired comparison of two rows on their final scores (an empty one below two shared seeds)."""
    diff = paired(a["scores"]["final"], b["scores"]["final"]) or {"n": len(set(a["scores"]["final"]) &
                                                                         set(b["scores"]["final"]))}
    return diff


def family(table: list[dict], experiment: str, pairs: Optional[list], baseline: str, method: str,
           name: str, strict: bool = False) -> Optional[dict]:
    """The comparisons of one family: ``pairs`` (A, B) in every block of ``experiment``, or, for None, every row
    against ``baseline`` (exploratory); adjusted together by ``method``. ``strict`` (``--compare``): a label the
    runs do not have, or fewer than 2 shared seeds, is a ConfigError instead of an untested entry."""
    rows = [r for r in table if r["experiment"] == experiment and not r["variant"].startswith("=")]
    blocks: dict = {}
    for r in rows:
        blocks.setdefault(block(r), []).append(r)
    comparisons = []
    for key, members in blocks.items():
        if pairs is None:
            base = [r for r in members if r["method"] == baseline]
            todo = [(r, next((b for b in base if b["variant"] in (r["variant"], "-")), None)) for r in members
                    if r["method"] != baseline and base and not r.get("selected")]
        else:
            todo = []
            for a, b in pairs:
                where = f"report.compare={a}:{b}" if not strict else f"--compare {a}:{b}"
                ra, rb = row_of(members, a, where), row_of(members, b, where)
                if strict and (ra is None or rb is None):
                    missing = a if ra is None else b
                    raise ConfigError(f"{where} is invalid: no runs of a method labelled {missing} in "
                                      f"{'/'.join(key)} (allowed: {', '.join(sorted({r['method'] for r in members}))})")
                todo.append((ra or {"method": a, "variant": "-", "scores": {"final": {}}},
                             rb or {"method": b, "variant": "-", "scores": {"final": {}}}))
        for ra, rb in todo:
            if rb is None:
                continue
            diff = compare_rows(ra, rb)
            if strict and diff["n"] < 2:
                raise ConfigError(f"--compare {ra['method']}:{rb['method']} is invalid: the two share "
                                  f"{diff['n']} seed(s) in {'/'.join(key)} (allowed: two or more)")
            comparisons.append({"experiment": experiment, "dataset": key[1], "model": key[2],
                                "a": ra["method"] + ("" if ra["variant"] == "-" else f" [{ra['variant']}]"),
                                "b": rb["method"], "row": ra if rb["method"] == baseline else None} | diff)
    if not comparisons:
        return None
    column, adjusted = adjust([c.get("p") for c in comparisons], method)
    for c, value in zip(comparisons, adjusted):
        c["p_adjusted"] = value
    return {"name": name, "experiment": experiment, "declared": pairs is not None, "adjust": column,
            "comparisons": comparisons}


def families(table: list[dict], options: dict, baseline: str = BASELINE, adjust_method: Optional[str] = None,
             extra: tuple = ()) -> list[dict]:
    """Every family of a table: per experiment its declared comparisons (or every row against the baseline when
    none are declared; nothing for ``compare: []``), then ``extra`` (``--compare`` pairs) as a family of their
    own. Each row compared with the baseline gets ``p``, the adjusted p, ``p_exact`` and ``n_for_power80``."""
    out = []
    for experiment in dict.fromkeys(r["experiment"] for r in table):
        opts = options.get(experiment, {})
        pairs = opts.get("compare")
        if pairs == [] or (pairs is None and opts.get("select")):
            continue
        pairs = None if pairs is None else [parse_pair(p) for p in pairs]
        method = adjust_method or opts.get("adjust", "holm")
        name = (f"declared comparisons of {experiment}" if pairs is not None else
                f"every method against {baseline} in {experiment}, not declared before the runs (exploratory)")
        fam = family(table, experiment, pairs, baseline, method, name)
        if fam is not None:
            out.append(fam)
    if extra:
        for experiment in dict.fromkeys(r["experiment"] for r in table):
            fam = family(table, experiment, list(extra), baseline, adjust_method or "holm",
                         f"--compare in {experiment}", strict=True)
            if fam is not None:
                out.append(fam)
    for fam in out:
        for c in fam["comparisons"]:
            row = c.pop("row")
            if row is not None and "p" not in row:
                row |= {"p": c.get("p"), "p_exact": c.get("p_exact"), "n_for_power80": c.get("n_power80")}
                if fam["adjust"]:
                    row[fam["adjust"]] = c["p_adjusted"]
    return out
