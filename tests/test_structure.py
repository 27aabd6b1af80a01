"""The package's structure: no import cycle, leaves that import nothing above them, a command line that starts
without torch, and a method added by its module and its YAML alone."""
import ast
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, TINY

PACKAGE = REPO / "lstsd"


def import_graph() -> tuple[dict[str, set[str]], int]:
    """Module -> the package's modules it imports (at the top or inside functions), and how many import statements
    sit inside functions."""
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(REPO).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    edges, inner_count = {m: set() for m in mods}, 0
    for m, f in mods.items():
        tree = ast.parse(f.read_text())
        inner = {id(n) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
                    base = ".".join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            targets = {n for n in names if n in mods and n != m}
            edges[m] |= targets
            inner_count += bool(targets) and id(node) in inner
    return edges, inner_count


def cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``edges`` (a list of modules, the first repeated at the end), or []."""
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == "open":
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = "done"
        path.pop()
        return []

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return []


def test_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_package_has_no_import_cycle():
    edges, _ = import_graph()
    assert len(edges) > 40
    assert cycle(edges) == []


def test_leaves_and_layers():
    """errors and fileio import nothing of lstsd; the registry only errors; config only errors and the registry; teachers
    neither the run nor the command line (the composition root hands them a runner); the engine no method."""
    edges, _ = import_graph()
    below = lambda m: {n for n in edges[m]}  # noqa: E731
    assert below("lstsd.errors") == set()
    assert below("lstsd.registry") == {"lstsd.errors"}
    assert below("lstsd.config") <= {"lstsd.errors", "lstsd.registry"}
    assert below("lstsd.fileio") == set()
    assert below("lstsd.rundir") <= {"lstsd.errors", "lstsd.fileio"}
    assert not below("lstsd.teachers") & {"lstsd.run", "lstsd.cli", "lstsd.compose"}
    engine = [m for m in edges if m.startswith("lstsd.engine")]
    assert not any(n.startswith("lstsd.methods") for m in engine for n in edges[m])
    for family in ("lstsd.data.", "lstsd.models.", "lstsd.methods."):  # components never import the run's root
        for m in (m for m in edges if m.startswith(family)):
            assert not edges[m] & {"lstsd.run", "lstsd.cli", "lstsd.compose", "lstsd.bench", "lstsd.report"}, m


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job", "method=lstsd"], ["--info"], ["-sc", "query=bash"]])
def test_print_only_commands_import_neither_torch_nor_timm(tmp_path, args):
    """--help, --cfg, --info and tab completion compose from the schema snapshot: torch and timm stay unimported."""
    from lstsd import compose

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "COMP_LINE": "lstsd method=lst"}
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    try:
        compose.write_snapshot(compose.schema_nodes())  # what any full setup (a run, a test session) leaves
    finally:
        os.environ.pop("XDG_CACHE_HOME")
    script = textwrap.dedent(f"""
        import sys
        sys.argv = ["lstsd", *{args!r}]
        from lstsd.cli import main
        try:
            main()
        except SystemExit as e:
            assert not e.code, e.code
        print("IMPORTED", sorted(m for m in ("torch", "timm", "torchvision") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "IMPORTED []" in out.stdout, out.stdout[-2000:]
    if args[0] == "--cfg":
        assert "lambda_long: 2.4" in out.stdout and "bank_store:" in out.stdout  # the schema's defaults too
    if args[0] == "--help":
        assert "method: dlb, kd," in out.stdout and "base_" not in out.stdout  # options, not schemas
    if args[0] == "-sc":
        assert "method=lstsd_wo_long" in out.stdout


def test_a_method_is_its_module_and_its_yaml(tmp_path, monkeypatch):
    """A new module in the methods package is found without being listed anywhere, its schema is stored as
    base_<name> with the name filled in, and its YAML (which names it nowhere but in its defaults) composes and
    trains."""
    import lstsd.methods
    from lstsd import compose
    from lstsd.registry import METHODS
    from lstsd.run import run

    package = tmp_path / "more_methods"
    package.mkdir()
    (package / "toy.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass

        import torch.nn.functional as F

        from lstsd.config import MethodConfig
        from lstsd.methods.base import Method
        from lstsd.registry import register_method


        @dataclass
        class ToyConfig(MethodConfig):
            epsilon: float = 0.0


        @register_method("toy", ToyConfig)
        class Toy(Method):
            """Label smoothing by another name."""

            def loss(self, batch, logits):
                ce = F.cross_entropy(logits, batch.y, label_smoothing=self.cfg.epsilon)
                return ce, {"ce": ce}
    '''))
    conf = tmp_path / "conf" / "method"
    conf.mkdir(parents=True)
    (conf / "toy.yaml").write_text("defaults:\n  - base_toy\n  - _self_\nepsilon: 0.1\n")
    monkeypatch.setattr(lstsd.methods, "__path__", [*lstsd.methods.__path__, str(package)])
    monkeypatch.setattr(METHODS, "discovered", False)
    monkeypatch.setattr(compose, "_state", None)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        cfg = compose.compose([*TINY, "method=toy", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"])
        assert cfg.method.name == "toy" and cfg.method.label == "toy" and cfg.method.epsilon == 0.1
        res = run(cfg, tmp_path / "run")
        assert res["status"] == "completed" and res["method"] == "toy"
    finally:
        METHODS.entries.pop("toy", None)
        sys.modules.pop("lstsd.methods.toy", None)
