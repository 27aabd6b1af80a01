"""The hooks of the documentation site (mkdocs.yml ``hooks:``).

* The README is the site's overview page (``overview.md``, generated from README.md at build time).
* Links keep working in both places: docs/*.md link to one another and to ``../README.md`` as GitHub reads them;
  in the site, a link to the README goes to the overview page, the README's links to ``docs/...`` go to those
  pages, and a link to a source file or folder outside docs/ (which the site does not hold) becomes its text.
* ``reference/config.md`` gets its tables from the schemas (:mod:`config_keys`) where it holds the marker
  ``<!-- config-keys -->``, so the page follows the code.
* A page of docs/ that mkdocs.yml's ``nav`` does not list is appended to its Guides section.
"""
from __future__ import annotations

import posixpath
import re
import sys
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

sys.path.insert(0, str(Path(__file__).resolve().parent))
import config_keys  # noqa: E402 - beside this file

OVERVIEW = "overview.md"  # the README's page in the site
README = "README.md"
CONFIG_PAGE = "reference/config.md"
MARKER = "<!-- config-keys -->"
GUIDES = "Guides"

LINK = re.compile(r"(?P<bang>!?)\[(?P<text>(?:[^\[\]]|\[[^\[\]]*\])*)\]"  # [text], one level of [] inside
                  r"\((?P<target>[^()\s]+)(?P<title>\s+\"[^\"]*\")?\)")  # (target "title")
FENCE = re.compile(r"^\s*(```|~~~)")


def repo_root(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).resolve().parent


# ------------------------------------------------------------------------------------------------ nav
def nav_pages(nav) -> set[str]:
    pages = set()
    for item in nav or []:
        if isinstance(item, str):
            pages.add(item)
        elif isinstance(item, dict):
            for v in item.values():
                pages |= nav_pages(v) if isinstance(v, list) else {v}
    return pages


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    docs = Path(config.docs_dir)
    listed = nav_pages(config.nav)
    missing = sorted(p.name for p in docs.glob("*.md") if p.name not in listed)
    if missing and config.nav is not None:
        section = next((item for item in config.nav if isinstance(item, dict) and GUIDES in item), None)
        if section is None:
            config.nav.append({GUIDES: missing})
        else:
            section[GUIDES].extend(missing)
    return config


# ------------------------------------------------------------------------------------------------ files
def on_files(files: Files, config: MkDocsConfig) -> Files:
    readme = repo_root(config) / README
    files.append(File.generated(config, OVERVIEW, content=readme.read_text(encoding="utf-8")))
    return files


# ------------------------------------------------------------------------------------------------ links
def site_target(target: str, real_path: str, src_uri: str) -> str | None:
    """Where a link of the page at ``real_path`` (in the repository; ``src_uri`` in the site) should point in the
    site: the target unchanged, another one, or None for a file the site does not hold."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return target  # a URL, an anchor of the page, an absolute path
    path, sep, fragment = target.partition("#")
    if not path:
        return target
    repo = posixpath.normpath(posixpath.join(posixpath.dirname(real_path), path))
    here = posixpath.dirname(src_uri) or "."
    if repo.startswith("docs/"):
        if real_path.startswith("docs/"):
            return target  # within docs/: as written (mkdocs checks it)
        new = posixpath.relpath(repo[len("docs/"):], here)
    elif repo == README:
        new = posixpath.relpath(OVERVIEW, here)
    else:
        return None
    return new + sep + fragment


def rewrite_links(markdown: str, real_path: str, src_uri: str) -> str:
    def repl(m: re.Match) -> str:
        new = site_target(m["target"], real_path, src_uri)
        if new is None:  # outside the site: the text, naming the path where the text does not
            text = m["text"]
            path = posixpath.normpath(posixpath.join(posixpath.dirname(real_path), m["target"]))
            return text if path in text else f"{text} (`{path}`)"
        return f"{m['bang']}[{m['text']}]({new}{m['title'] or ''})"

    # the text outside fenced code blocks, a run of lines at a time (a link's text may span lines)
    out, prose, fenced = [], [], None
    for line in markdown.split("\n"):
        fence = FENCE.match(line)
        if fenced:
            if fence and fence.group(1) == fenced:
                fenced = None
            out.append(line)
            continue
        if fence:
            fenced = fence.group(1)
            if prose:
                out.append(LINK.sub(repl, "\n".join(prose)))
            prose = []
            out.append(line)
        else:
            prose.append(line)
    if prose:
        out.append(LINK.sub(repl, "\n".join(prose)))
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    src = page.file.src_uri
    markdown = rewrite_links(markdown, README if src == OVERVIEW else f"docs/{src}", src)
    if src == CONFIG_PAGE:
        if MARKER not in markdown:
            raise PluginError(f"docs/{CONFIG_PAGE} lacks the marker {MARKER} where the generated tables go")
        markdown = markdown.replace(MARKER, config_keys.generate())
    return markdown
