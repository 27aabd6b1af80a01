"""The package's structure: no import cycle, leaves that import nothing above them, a command line that starts
without torch, and a method added by its module and its YAML alone."""
import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import REPO, TINY

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


GROUND = ("lstsd.errors", "lstsd.fileio", "lstsd.registry", "lstsd.distributed", "lstsd.machine")
FLOORS = (("ground", GROUND), ("config", ("lstsd.config",)), ("data and models", ("lstsd.data", "lstsd.models")),
          ("methods", ("lstsd.methods",)), ("training", ("lstsd.training",)),
          ("launch and report", ("lstsd.launch", "lstsd.report")))


def floor(module: str) -> int:
    """The floor of a module of the package (the doors, cli, library, bench, integrations, the package itself, are
    the top floor): imports point to the same floor or below."""
    for i, (_, prefixes) in enumerate(FLOORS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return len(FLOORS)


def test_imports_point_downward():
    """The wings of docs/extending.md's code layout: every import points to its own floor or one below; the ground
    floor's leaves import nothing of lstsd (the registry only the errors); data never imports models (a text model
    may read data's tokenisation); methods never import training, training never imports launch, config imports no
    component; the trainer and its parts know no method (the run, the composition root, builds one with the teacher it
resolved)."""
    edges, _ = import_graph()
    up = [f"{m} -> {n}" for m, ns in edges.items() for n in ns if floor(n) > floor(m)]
    assert up == []
    assert edges["lstsd.errors"] == edges["lstsd.fileio"] == set()
    assert edges["lstsd.registry"] == {"lstsd.errors"}
    assert edges["lstsd.machine"] <= {"lstsd.errors"}
    assert not [f"{m} -> {n}" for m, ns in edges.items() if m.startswith("lstsd.data") for n in ns
                if n.startswith("lstsd.models")]
    trainer = [f"lstsd.training.{m}" for m in ("trainer", "checkpoint", "signals", "step_stats", "evaluation")]
    assert not [f"{m} -> {n}" for m in trainer for n in edges[m] if n.startswith("lstsd.methods")]
    assert not [m for m in edges if m.count(".") == 1 and m not in GROUND and m.split(".")[1] not in
                ("cli", "library", "bench", "__main__") and not (PACKAGE / m.split(".")[1]).is_dir()]


def test_floor_of_a_module():
    assert [floor(m) for m in ("lstsd.errors", "lstsd.config.compose", "lstsd.models.lenet", "lstsd.methods.kd",
                               "lstsd.training.run", "lstsd.report.cli", "lstsd.cli")] == [0, 1, 2, 3, 4, 5, 6]


def test_at_most_ten_modules_at_the_root():
    assert len(list(PACKAGE.glob("*.py"))) <= 10


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job", "method=lstsd"], ["--info"], ["-sc", "query=bash"]])
def test_print_only_commands_import_neither_torch_nor_timm(tmp_path, args):
    """--help, --cfg, --info and tab completion compose from the schema snapshot: torch and timm stay unimported."""
    from lstsd.config import compose

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
        assert "lambda_long: 2.4" in out.stdout
        assert "bank_store:" in out.stdout  # the schema's defaults too
    if args[0] == "--help":
        assert "method: dlb, kd," in out.stdout
        assert "base_" not in out.stdout  # options, not schemas
    if args[0] == "-sc":
        assert "method=lstsd_wo_long" in out.stdout


def test_a_method_is_its_module_and_its_yaml(tmp_path, monkeypatch):
    """A new module in the methods package is found without being listed anywhere, its schema is stored as
    base_<name> with the name filled in, and its YAML (which names it nowhere but in its defaults) composes and
    trains."""
    import lstsd.methods
    from lstsd.config import compose
    from lstsd.registry import METHODS
    from lstsd.training.run import run

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
        assert cfg.method.name == "toy"
        assert cfg.method.label == "toy"
        assert cfg.method.epsilon == 0.1
        res = run(cfg, tmp_path / "run")
        assert res["status"] == "completed"
        assert res["method"] == "toy"
    finally:
        METHODS.entries.pop("toy", None)
        sys.modules.pop("lstsd.methods.toy", None)


def test_no_function_is_longer_than_fifty_lines():
    long = []
    for f in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 50:
                long.append(f"{f.relative_to(REPO)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []


def test_the_schema_snapshot_is_keyed_by_content_and_replaces_stale_ones(tmp_path, monkeypatch):
    """A fresh clone (other modification times, the same code) finds the snapshot; other code does not; writing
    one removes the snapshots of other sources."""
    from lstsd.config import compose

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    key = compose.source_key()
    some = PACKAGE / "errors.py"
    os.utime(some, (0, 0))  # a checkout sets new modification times
    assert compose.source_key() == key
    stale = tmp_path / "lstsd" / "schemas-0000000000000000.yaml"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}\n")
    compose.write_snapshot({})
    assert [p.name for p in stale.parent.iterdir()] == [f"schemas-{key}.yaml"]
    monkeypatch.setattr(compose, "PACKAGE", tmp_path)  # other sources: another key
    assert compose.source_key() != key


def test_every_experiment_composes_from_the_snapshot_as_from_the_schemas(tmp_path):
    """The fast set-up (--help, --cfg, a typo refused before torch) composes from the snapshot: each experiment
    gives the configuration the schemas give, dict-typed fields (report.better_of) open to new keys included."""
    from omegaconf import OmegaConf

    from lstsd.config import compose

    script = textwrap.dedent("""
        import json, sys
        from omegaconf import OmegaConf
        from lstsd.config import compose
        compose.setup(fast=sys.argv[1] == "fast")
        print(compose._state)
        for name in sys.argv[2:]:
            print(json.dumps(OmegaConf.to_container(compose.compose([f"experiment={name}"]))))
    """)
    names = sorted(p.stem for p in (Path(compose.CONFIG_DIR) / "experiment").glob("*.yaml"))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "WANDB_MODE": "disabled"}
    outputs = {}
    for how in ("full", "fast"):  # the full set-up writes the snapshot the fast one reads
        out = subprocess.run([sys.executable, "-c", script, how, *names], capture_output=True, text=True,
                             timeout=300, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        state, *lines = out.stdout.splitlines()
        assert state == how
        outputs[how] = lines
    assert len(outputs["fast"]) == len(names)
    for name, fast, full in zip(names, outputs["fast"], outputs["full"]):
        assert fast == full, name


def test_a_default_run_imports_no_optional_library(tmp_path):
    """A default run (MNIST-1D, vanilla) imports neither timm, torchvision's models, wandb, tensorboard nor
    scikit-learn: each is loaded only by the option that needs it (model=timm, logger=wandb, ...); nor
    torch._dynamo, which only trainer.compile needs (lstsd.training.optimizers)."""
    script = textwrap.dedent(f"""
        import sys
        sys.argv = ["lstsd", "trainer.epochs=1", "trainer.progress=false", "hydra.run.dir={tmp_path / 'run'}"]
        from lstsd.cli import main
        main()
        heavy = ("timm", "wandb", "tensorboard", "sklearn", "torchvision.models", "transformers", "lightning",
                 "torch._dynamo", "sympy")
        print("IMPORTED", sorted(m for m in heavy if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "WANDB_MODE": "disabled"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "IMPORTED []" in out.stdout, out.stdout[-2000:]


def test_a_typo_is_refused_without_importing_torch(tmp_path):
    script = textwrap.dedent("""
        import sys
        sys.argv = ["lstsd", "trainer.epoch=5"]
        from lstsd.cli import main
        try:
            main()
        except SystemExit as e:
            print("EXIT", e.code, "torch" in sys.modules)
    """)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    from lstsd.config import compose

    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    try:
        compose.write_snapshot(compose.schema_nodes())  # what any full setup (a run, a test session) leaves
    finally:
        os.environ.pop("XDG_CACHE_HOME")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert "EXIT 2 False" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "trainer.epoch is not a configuration key: did you mean trainer.epochs?" in out.stderr
