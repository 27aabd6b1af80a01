"""The documentation site (`make docs`): it builds in strict mode (no broken link, anchor or cross-reference), and its
reference pages hold the public API, the configuration keys generated from the schemas and the run directory."""
import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def text(path: Path) -> str:
    """A page's text, tags removed."""
    return unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


def row(page: Path, key: str) -> str:
    """The text of the table row whose first cell is ``key``."""
    for tr in re.findall(r"<tr>(.*?)</tr>", page.read_text(encoding="utf-8"), flags=re.S):
        cells = re.findall(r"<td>(.*?)</td>", tr, flags=re.S)
        if cells and unescape(re.sub(r"<[^>]+>", "", cells[0])).strip() == key:
            return " | ".join(unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells)
    raise AssertionError(f"no row for {key} in {page.name}")


def test_the_site_holds_every_page(site):
    for page in ("index.html", "overview.html", "library.html", "methods.html", "reference/api.html",
                 "reference/lightning.html", "reference/config.html", "reference/rundir.html"):
        assert (site / page).is_file(), page
    for md in (REPO / "docs").glob("*.md"):  # every page of docs/ is in the site
        assert (site / md.with_suffix(".html").name).is_file(), md.name


def test_api_page_renders_the_public_names_from_their_docstrings(site):
    import lstsd

    page = text(site / "reference" / "api.html")
    for name in lstsd.__all__:
        assert f"lstsd.{name}" in page, name
    assert "compute_loss" in page
    assert "IndexedDataset" in page
    assert "after_optimizer_step" in page
    assert ":func:" not in page
    assert ":class:" not in page  # reST roles became links
    assert 'href="#lstsd.method"' in (site / "reference" / "api.html").read_text()
    assert "Distillation" in text(site / "reference" / "lightning.html")


def test_config_page_is_generated_from_the_schemas(site):
    page = site / "reference" / "config.html"
    assert row(page, "method.lambda_long").split(" | ")[1:3] == ["float", "2.4"]
    save_best = row(page, "trainer.save_best")
    assert "bool" in save_best
    assert "false" in save_best
    assert "best.pt" in save_best  # its comment in the schema
    assert "experiment name" in row(page, "name")
    options = text(page)
    assert "method.lambda_long: 2.4" in options  # what method=lstsd sets
    for group in ("dataset", "model", "method", "schedule", "optim", "trainer", "logger", "experiment"):
        for option in (REPO / "lstsd" / "conf" / group).glob("*.yaml"):
            assert option.stem in options, f"{group}={option.stem}"


def test_rundir_page_and_links(site):
    assert "best.pt" in text(site / "reference" / "rundir.html")
    assert "metrics.jsonl" in text(site / "reference" / "rundir.html")
    overview = (site / "overview.html").read_text()  # the README, its docs/ links pointing at the site's pages
    assert 'href="methods.html"' in overview
    assert 'href="docs/' not in overview
    assert 'href="overview.html' in (site / "index.html").read_text()
