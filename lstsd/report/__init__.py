"""Tables, comparisons and plots over many runs: ``lstsd-report PATH...`` and the report printed at the end of
every multirun.

* :mod:`~lstsd.report.collect` finds the runs (completed, failed, running, never started);
* :mod:`~lstsd.report.table` turns them into rows (one per method and variant) and families of paired comparisons
  (declared before the runs, or exploratory), with :mod:`~lstsd.report.stats`;
* :mod:`~lstsd.report.render` writes the Markdown and CSV, :mod:`~lstsd.report.plots` the figures;
* :mod:`~lstsd.report.cli` is the command and the end-of-sweep callback.

docs/clusters.md ("Reports") describes the table's columns and files.
"""
from lstsd.report.cli import PrintReport, main, report
from lstsd.report.collect import collect
from lstsd.report.render import markdown, to_csv
from lstsd.report.table import summarize

__all__ = ["PrintReport", "collect", "main", "markdown", "report", "summarize", "to_csv"]
