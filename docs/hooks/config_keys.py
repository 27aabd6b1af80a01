"""The configuration-keys reference (docs/reference/config.md), generated from the schemas when the site is built.

Every key comes from the schemas Hydra composes with (:func:`lstsd.config.compose.schema_nodes`: the run-wide dataclasses
of ``lstsd.config`` and each registered dataset's, model's and method's schema), with its type and default; its
description is the comment beside or above the field in the schema's source (read with ``tokenize`` and ``ast``),
looked up along the dataclass's bases. Each group's options are the YAML files of ``lstsd/conf/<group>/``: what
each extends, the keys it sets and its leading comment. Nothing here is written by hand, so the page follows the
code. ``python docs/hooks/config_keys.py`` prints the Markdown.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import re
import sys
import textwrap
import tokenize
from pathlib import Path
from typing import Any

import yaml

# the groups in the order lstsd/conf/config.yaml composes them; with a schema per run-wide group, and the base of
# the registered components' schemas for the others
GROUPS = ("dataset", "model", "method", "schedule", "optim", "trainer", "logger")
OPTION_GROUPS = ("recipe", "experiment")  # options only: `# @package _global_` files over the whole config
NAME_KEY = {"dataset": "name", "model": "arch", "method": "name"}  # the key a registered schema's name fills in


# ------------------------------------------------------------------------------------------------ reading sources
def source_comments(cls: type) -> dict[str, str]:
    """``field -> comment`` of the fields ``cls`` annotates in its own body: the comment lines right above the
    field and the comment at the end of its line."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return {}
    lines = source.splitlines()
    comments: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        return {}
    classdef = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
    if classdef is None:
        return {}
    out = {}
    for stmt in classdef.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        above, n = [], stmt.lineno - 1
        while n >= 1 and lines[n - 1].lstrip().startswith("#"):
            above.insert(0, comments.get(n, ""))
            n -= 1
        trailing = comments.get(stmt.end_lineno or stmt.lineno, "")
        text = " ".join(part for part in above + [trailing] if part)
        if text:
            out[stmt.target.id] = text
    return out


def field_comment(cls: type, name: str) -> str:
    """The comment of field ``name``: where the nearest class along the bases that annotates it has one."""
    for klass in cls.__mro__:
        if name in klass.__dict__.get("__annotations__", {}):
            text = source_comments(klass).get(name)
            if text:
                return text
    return ""


def text_of(node: ast.AST) -> str | None:
    """A string argument as written: a constant, an f-string (its fields as ...), a sum of these; else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "..." for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = text_of(node.left), text_of(node.right)
        return left + right if left is not None and right is not None else None
    return None


def choices_of(node: ast.AST, module: Any) -> list | None:
    """The choices of ``require_choice``: a literal, or a module-level name (a tuple, list or dict's keys)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("tuple", "list") \
            and len(node.args) == 1:
        return choices_of(node.args[0], module)
    if isinstance(node, ast.Name):
        found = getattr(module, node.id, None)
    else:
        try:
            found = ast.literal_eval(node)
        except (ValueError, SyntaxError, TypeError):
            return None
    return list(found) if isinstance(found, (tuple, list, dict, set, frozenset)) else None


@functools.lru_cache(maxsize=None)
def allowed_values(cls: type) -> dict[str, tuple[str, ...]]:
    """``key -> what is allowed``, from the checks of the schema and its bases (``__post_init__``, ``check``):
    ``require(ok, "method.lambda_long", "a number >= 0", ...)`` and ``require_choice(key, value, choices)``."""
    out: dict[str, list[str]] = {}
    for klass in reversed(cls.__mro__):
        module = sys.modules.get(klass.__module__)
        for name in ("__post_init__", "check"):
            fn = klass.__dict__.get(name)
            try:
                tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
            except (OSError, TypeError, SyntaxError):
                continue
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) >= 3):
                    continue
                if node.func.id == "require":
                    key, allowed = text_of(node.args[1]), text_of(node.args[2])
                elif node.func.id == "require_choice":
                    choices = choices_of(node.args[2], module)
                    key, allowed = text_of(node.args[0]), "one of " + ", ".join(map(str, choices)) if choices else None
                else:
                    continue
                if key and allowed and allowed not in out.get(key, []):
                    out.setdefault(key, []).append(allowed)
    return {key: tuple(values) for key, values in out.items()}


def own_doc(obj: Any) -> str:
    """The docstring an object was written with (not a dataclass's generated signature), cleaned."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if not doc or (isinstance(obj, type) and doc.startswith(obj.__name__ + "(")):
        return ""
    return inspect.cleandoc(doc)


def first_paragraph(text: str) -> str:
    return " ".join(text.strip().split("\n\n")[0].split())


def type_name(t: Any) -> str:
    text = t if isinstance(t, str) else getattr(t, "__name__", None) or str(t)
    return text.replace("typing.", "")


# ------------------------------------------------------------------------------------------------ Markdown
ROLE = re.compile(r":(?:py:)?\w+:`~?([^`]+)`")


def prose(text: str) -> str:
    """Docstring or comment text as one line of Markdown for a table cell: reST roles and ``literals`` as code,
    ``<`` and ``|`` escaped outside code."""
    text = ROLE.sub(r"`\1`", " ".join(str(text).split()))
    text = re.sub(r"``(.+?)``", r"`\1`", text)
    parts = re.split(r"(`[^`]*`)", text)
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;").replace("*", r"\*")
    return "".join(parts).replace("|", r"\|")


def code(text: str) -> str:
    """``text`` as an inline code span in a table cell."""
    text = str(text).replace("|", r"\|")
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def value(v: Any) -> str:
    """A default as YAML writes it on one line."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, str) and v == "":
        return "''"
    return str(v)


def table(header: list[str], rows: list[list[str]], kind: str) -> str:
    """A Markdown table in a ``<div class="kind">`` (the site's CSS sizes its columns)."""
    lines = [f'<div class="{kind}" markdown="1">', "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines + ["", "</div>"])


# ------------------------------------------------------------------------------------------------ keys
def key_rows(prefix: str, schema: type, defaults: dict, names: list[str]) -> list[list[str]]:
    fields = {f.name: f for f in dataclasses.fields(schema)}
    rows = []
    for name in names:
        default = defaults.get(name)
        shown = "required (`???`)" if default == "???" else code(value(default))
        description = prose(field_comment(schema, name))
        allowed = allowed_values(schema).get(f"{prefix}{name}")
        if allowed:
            description += ("; " if description else "") + "*allowed:* " + "; ".join(prose(a) for a in allowed)
        rows.append([code(f"{prefix}{name}"), code(type_name(fields[name].type)), shown, description])
    return rows


def keys_table(prefix: str, schema: type, defaults: dict, names: list[str]) -> str:
    return table(["key", "type", "default", "description"], key_rows(prefix, schema, defaults, names), "keys")


def container(node) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=False, throw_on_missing=False)


# ------------------------------------------------------------------------------------------------ options
def flatten(mapping: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, v in mapping.items():
        if isinstance(v, dict) and v:
            out += flatten(v, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", v))
    return out


def leading_comment(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        line = line.lstrip("#").strip()
        if not line.startswith("@package"):
            lines.append(line)
    return " ".join(lines)


def option_rows(folder: Path, group: str) -> list[list[str]]:
    rows = []
    for path in sorted(folder.glob("*.yaml")):
        text = path.read_text()
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            data = {}
        global_package = "@package _global_" in text.split("\n", 1)[0]
        extends = []
        for entry in data.pop("defaults", None) or []:
            if isinstance(entry, dict):
                extends += [f"{k}: {value(v)}" for k, v in entry.items()]
            elif entry != "_self_":
                extends.append(str(entry))
        if global_package:
            data.pop("hydra", None)
        prefix = "" if global_package else f"{group}."
        sets = [f"{prefix}{k}: {value(v)}" for k, v in flatten(data)]
        rows.append([code(path.stem), "<br>".join(code(e) for e in extends),
                     "<br>".join(code(s) for s in sets), prose(leading_comment(text))])
    return rows


def options_table(folder: Path, group: str) -> str:
    return table(["option", "extends", "sets", "description"], option_rows(folder, group), "options")


# ------------------------------------------------------------------------------------------------ the page
def generate() -> str:
    """The Markdown of the configuration-keys page."""
    from omegaconf import OmegaConf

    from lstsd import config
    from lstsd.config import compose
    from lstsd.registry import DATASETS, METHODS, MODELS

    conf = Path(compose.CONFIG_DIR)
    nodes = compose.schema_nodes()
    bases = {"dataset": config.DatasetConfig, "model": config.ModelConfig, "method": config.MethodConfig,
             "optim": config.OptimConfig}
    registries = {"dataset": DATASETS, "model": MODELS, "method": METHODS}
    out = []

    root = config.Config
    root_defaults = container(nodes[("", "base_config")])
    scalars = [f.name for f in dataclasses.fields(root) if not isinstance(root_defaults.get(f.name), dict)
               and f.name not in GROUPS]
    out += ["## Top-level keys", "",
            f"The root schema, `{root.__module__}.{root.__qualname__}`; its other fields are the groups below.", "",
            keys_table("", root, root_defaults, scalars), ""]

    for group in GROUPS:
        out += [f"## {group}", ""]
        entries = [(name, node) for (g, name), node in nodes.items() if g == group]
        base = bases.get(group) or OmegaConf.get_type(entries[0][1])
        if own_doc(base):
            out += [prose(own_doc(base)), ""]
        folder = conf / group
        if folder.is_dir():
            out += ["### Options", "",
                    f"`{group}=<option>` chooses a YAML file of `lstsd/conf/{group}/`, which extends a schema "
                    "(`base_<name>`) and sets some of its keys.", "", options_table(folder, group), ""]
        base_defaults = container(OmegaConf.structured(base))
        base_names = [f.name for f in dataclasses.fields(base)]
        if group in bases:
            out += [f"### Keys of every {group}", "", f"Schema `{base.__module__}.{base.__qualname__}`.", "",
                    keys_table(f"{group}.", base, base_defaults, base_names), ""]
        # the schemas, each once, with the names it is registered (stored) under
        by_schema: dict[type, list[tuple[str, Any]]] = {}
        for name, node in entries:
            by_schema.setdefault(OmegaConf.get_type(node), []).append((name, node))
        for schema, named in by_schema.items():
            defaults = container(named[0][1])
            names = [f.name for f in dataclasses.fields(schema)]
            stored = ", ".join(f"`{n}`" for n, _ in named)
            if group not in bases:  # a run-wide group: its one schema, every key
                out += ["### Keys", "", f"Schema `{schema.__module__}.{schema.__qualname__}`, stored as {stored}.", "",
                        keys_table(f"{group}.", schema, defaults, names), ""]
                continue
            skip = NAME_KEY.get(group)
            own = [n for n in names if n != skip and (n not in base_names or defaults.get(n) != base_defaults.get(n))]
            registered = [n[len("base_"):] for n, _ in named]
            title = ", ".join(f"`{n}`" for n in registered)
            out += [f"### {title}", "",
                    f"Schema `{schema.__module__}.{schema.__qualname__}`, stored as {stored}."]
            docs = []
            if group in registries:
                for reg in registered:
                    doc = first_paragraph(own_doc(registries[group][reg]))
                    if doc and doc not in docs:
                        docs.append(doc)
            if own_doc(schema) and schema is not base:
                docs.append(first_paragraph(own_doc(schema)))
            out += [""] + [prose(d) + "\n" for d in docs]
            if own:
                out += [f"Its keys beyond `{base.__qualname__}` or with another default:", "",
                        keys_table(f"{group}.", schema, defaults, own), ""]
            else:
                out += [f"The keys of `{base.__qualname__}`, with the same defaults.", ""]

    for group in OPTION_GROUPS:
        folder = conf / group
        if folder.is_dir():
            out += [f"## {group}", "",
                    f"`{'+' if group == 'recipe' else ''}{group}=<option>`: a file of `lstsd/conf/{group}/` that "
                    "overrides keys anywhere in the configuration (`# @package _global_`).", "",
                    options_table(folder, group), ""]

    hydra = conf / "hydra"
    if hydra.is_dir():
        out += ["## Hydra's groups", "", "Options of this project for Hydra's own groups (`hydra/<group>=<option>`; "
                "launchers and sweeps: [Sweeps, clusters and reports](../clusters.md)):", ""]
        for folder in sorted(p for p in hydra.iterdir() if p.is_dir()):
            names = sorted(f.stem for f in folder.glob("*.yaml"))
            if names:
                out.append(f"- `hydra/{folder.name}`: " + ", ".join(f"`{n}`" for n in names))
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(generate())
