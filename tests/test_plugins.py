"""A user's own dataset, model and method, from a package outside lstsd (examples/plugin/my_plugin), through
``imports=[...]``: composed in the launching process, imported again in every job process (here submitit's local
workers), so they run under any launcher."""
import json
import os
import sys
import textwrap

import pytest

from helpers import REPO, run_cli
from lstsd.config import compose
from lstsd.registry import DATASETS, METHODS, MODELS
from lstsd.methods.teacher import student_overrides

PLUGIN = REPO / "examples" / "plugin"
ARGS = ("imports=[my_plugin.components]", "hydra.searchpath=[pkg://my_plugin/conf]", "dataset=blobs", "model=mlp",
        "trainer.epochs=2", "trainer.progress=false")


def plugin_env() -> dict:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGIN), os.environ.get("PYTHONPATH")]))}


@pytest.fixture
def plugin_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN))
    yield
    for name in ("blobs",):
        DATASETS.entries.pop(name, None)
    MODELS.entries.pop("mlp", None)
    METHODS.entries.pop("confidence_penalty", None)
    for module in [m for m in sys.modules if m == "my_plugin" or m.startswith("my_plugin.")]:
        sys.modules.pop(module)
    monkeypatch.setattr(compose, "IMPORTED", [m for m in compose.IMPORTED if not m.startswith("my_plugin")])


def test_imports_register_the_components_and_store_their_schemas_before_composing(plugin_importable, tmp_path):
    from lstsd.config import validate
    from lstsd.training.run import run

    cfg = compose.compose([*ARGS, "method=confidence_penalty", "method.beta=0.2"])
    assert {"blobs"} <= DATASETS.keys()
    assert "mlp" in MODELS.keys()
    assert "confidence_penalty" in METHODS.keys()
    conf = validate(cfg)
    assert (conf.dataset.name, conf.model.arch, conf.method.name, conf.method.beta) == \
        ("blobs", "mlp", "confidence_penalty", 0.2)
    assert conf.imports == ["my_plugin.components"]
    res = run(cfg, tmp_path / "run", overrides=list(ARGS))
    assert res["status"] == "completed"
    assert res["method"] == "confidence_penalty"
    assert res["model"] == "mlp"
    from lstsd.config.identity import RELAUNCH_KEYS

    assert "imports" in RELAUNCH_KEYS  # where the components are found, not what is trained


def test_a_teacher_run_keeps_the_students_search_path():
    student = ["imports=[my_plugin.components]", "hydra.searchpath=[pkg://my_plugin/conf]", "model=mlp",
               "hydra.run.dir=x", "method=kd"]
    assert student_overrides(student, ["trainer.epochs=3"]) == [
        "imports=[my_plugin.components]", "hydra.searchpath=[pkg://my_plugin/conf]", "model=mlp", "method=vanilla",
        "trainer.epochs=3"]


def test_the_example_plugin_runs_under_submitit_local(tmp_path):
    """Each job runs in a submitit worker process, which imports my_plugin.components because of imports= (the
    model module is referenced by nothing else a worker unpickles: without imports it fails there)."""
    r = run_cli("-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", *ARGS,
                "method=confidence_penalty", f"hydra.sweep.dir={tmp_path}", timeout=600, **plugin_env())
    assert r.returncode == 0, r.stderr[-3000:]
    (job,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    res = json.loads((job / "results.json").read_text())
    assert res["status"] == "completed"
    assert (res["dataset"], res["model"], res["method"]) == \
        ("blobs", "mlp", "confidence_penalty")
    assert list(tmp_path.glob(".submitit/*/*_result.pkl"))  # the job ran through submitit
    rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    assert "loss_entropy" in rows[0]  # the plugin's method computed its terms


@pytest.mark.slow
def test_without_imports_a_worker_never_sees_components_registered_in_the_launching_process(tmp_path):
    """The failure imports= exists for: a wrapper script that registers the components in its own process works
    with the basic launcher, but submitit's workers never import them."""
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(textwrap.dedent("""
        import sys

        import my_plugin.components  # noqa: F401 - registered in this process only
        from lstsd.cli import main

        main()
    """))
    import subprocess

    env = {**os.environ, "WANDB_MODE": "disabled", **plugin_env()}
    env.pop("HYDRA_FULL_ERROR", None)
    args = [a for a in ARGS if not a.startswith("imports=")]
    r = subprocess.run([sys.executable, str(wrapper), "-m", "hydra/launcher=submitit_local",
                        "hydra.launcher.timeout_min=5", *args, f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "model.arch='mlp' is invalid" in r.stdout + r.stderr, r.stderr[-3000:]
