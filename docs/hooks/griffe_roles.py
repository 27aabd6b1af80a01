"""A Griffe extension for the API pages: lstsd's docstrings are prose with reST-style inline roles
(:func:`lstsd.method`, :class:`~lstsd.errors.ConfigError`), which the site renders as Markdown.

Each role becomes a link to the object where the site documents it, else its name as code (an optional
cross-reference: an object the site does not render is no broken link); a role's target is looked up from the
object's own scope outwards, as Sphinx does. ``<word>`` outside code (``<run_dir>``) is escaped, not taken for HTML,
and a paragraph that ends in reST's ``::`` ends in ``:`` (its literal block, indented, is a Markdown code block).
"""
from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):`(~?)([^`<>]+?)`")
CODE_SPAN = re.compile(r"(``.+?``|`[^`]+`)")
LITERAL_MARKER = re.compile(r"(\S)::[ \t]*(\n[ \t]*\n)")
ROOTS = ("lstsd.", "hydra_plugins.")


def resolve(target: str, obj: griffe.Object) -> str:
    """The full path of ``target`` as written in ``obj``'s docstring: absolute when it starts with a package of the
    project, else the first scope (the object, its parents, its module) that has a member of that name."""
    if target.startswith(ROOTS):
        return target
    scope: Any = obj if (obj.is_class or obj.is_module) else obj.parent
    while scope is not None:
        try:
            scope[target]
            return f"{scope.path}.{target}"
        except Exception:  # noqa: BLE001 - not a member here (or an alias that cannot be resolved): look further out
            scope = scope.parent
    return target


def autoref(match: re.Match, obj: griffe.Object) -> str:
    short, target = match.group(1), match.group(2).strip()
    title = target.rsplit(".", 1)[-1] if short else target
    identifier = resolve(target, obj)
    return f'<autoref identifier="{html.escape(identifier)}" optional><code>{html.escape(title)}</code></autoref>'


def convert(text: str, obj: griffe.Object) -> str:
    """The docstring ``text`` as the site's Markdown."""
    text = LITERAL_MARKER.sub(r"\1:\2", text)
    out, in_code, blank = [], False, True
    for line in text.split("\n"):
        indented = line.startswith("    ") or line.startswith("\t")
        if line.strip() == "":
            blank = True
            out.append(line)
            continue
        in_code = indented and (in_code or blank)  # an indented block after a blank line: a code block
        blank = False
        out.append(line if in_code else convert_line(line, obj))
    return "\n".join(out)


def convert_line(line: str, obj: griffe.Object) -> str:
    refs: list[str] = []

    def keep(match: re.Match) -> str:
        refs.append(autoref(match, obj))
        return f"\x00{len(refs) - 1}\x00"

    line = ROLE.sub(keep, line)
    parts = CODE_SPAN.split(line)
    for i in range(0, len(parts), 2):  # the parts outside code spans
        parts[i] = parts[i].replace("<", "&lt;")
    line = "".join(parts)
    return re.sub("\x00(\\d+)\x00", lambda m: refs[int(m.group(1))], line)


class ReSTRoles(griffe.Extension):
    """Rewrites every docstring of the loaded objects (:func:`convert`)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        self.on_object(obj=pkg, loader=loader)  # the package itself is no member: on_object skips it

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is not None and not getattr(docstring, "lstsd_converted", False):
            docstring.value = convert(docstring.value, obj)
            docstring.lstsd_converted = True  # once: the text is Markdown from now on
