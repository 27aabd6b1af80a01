import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

os.environ.setdefault("WANDB_MODE", "disabled")

from lstsd.config.compose import CONFIG_DIR, setup  # noqa: E402

setup()  # the resolvers and the ConfigStore, as the command line sets them up

REPO = Path(__file__).resolve().parent.parent


def compose_cfg(*overrides: str, return_hydra_config: bool = False):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def read_metrics(run_dir) -> list:
    """metrics.jsonl as a list of rows, wall time aside."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# Small, fast runs: synthetic 4x4 images, a tiny CNN, a few epochs.
TINY = ("dataset=synthetic", "dataset.num_train=40", "dataset.num_test=20", "dataset.shape=[1,8,8]", "optim=sgd", "schedule=step",
        "dataset.num_classes=4", "dataset.batch_size=16", "model=digits_cnn", "trainer.epochs=3",
        "trainer.progress=false", "optim.lr=0.05")


@pytest.fixture
def tiny_cfg():
    return lambda *overrides: compose_cfg(*TINY, *overrides)


@pytest.fixture
def refused(tmp_path, monkeypatch, capsys):
    """``refused(*args) -> line``: lstsd's main() run in this process on ``args`` (in seconds, so that long lists
    of bad inputs stay cheap) must stop before training: exit code 2, one ``lstsd: error:`` line, no traceback,
    nothing trained. Returns the line."""
    def check(*args: str) -> str:
        from hydra.core.global_hydra import GlobalHydra

        from lstsd import cli

        run = tmp_path / "run"
        monkeypatch.setattr(sys, "argv", ["lstsd", *args, f"hydra.run.dir={run}", "trainer.progress=false"])
        monkeypatch.setenv("WANDB_MODE", "disabled")
        monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # main() sets it; monkeypatch restores it afterwards
        with pytest.raises(SystemExit) as e:
            cli.main()
        GlobalHydra.instance().clear()
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert e.value.code == 2 and len(lines) == 1 and lines[0].startswith("lstsd: error: "), err
        assert "Traceback" not in err and not (run / "metrics.jsonl").exists()
        return lines[0]

    return check


def built_method(overrides, run_dir, teacher=None):
    """The method object a run of ``overrides`` builds (its trainer's fit replaced: nothing trained)."""
    from lstsd.training import trainer as engine
    from lstsd.training.run import run

    captured, orig = {}, engine.Trainer.fit

    def fit(self):
        captured["method"] = self.method
        return {}

    engine.Trainer.fit = fit
    try:
        run(compose_cfg(*overrides), run_dir, overrides=list(overrides), teacher=teacher)
    finally:
        engine.Trainer.fit = orig
    return captured["method"]


@pytest.fixture
def stop_signal_at(monkeypatch):
    """``stop_signal_at(step, stop=True) -> disarm``: SIGTERM requested after global step ``step``; with ``stop``
    the stop raises KeyboardInterrupt in the test process instead of re-raising the signal. ``disarm()`` puts the
    trainer's step back (for the relaunch)."""
    from lstsd.training.trainer import Trainer
    from lstsd.training.signals import StopGuard

    def arm(step: int, stop: bool = True):
        import signal

        original_step = Trainer.step

        def signal_at(self, batch, stats):
            original_step(self, batch, stats)
            if self.global_step == step:
                self.guard.request(signal.SIGTERM)

        def interrupt(self, where):
            raise KeyboardInterrupt

        monkeypatch.setattr(Trainer, "step", signal_at)
        if stop:
            monkeypatch.setattr(StopGuard, "stop", interrupt)
        return lambda: monkeypatch.setattr(Trainer, "step", original_step)

    return arm


@pytest.fixture
def one_thread():
    """Tiny models: one intra-op thread is the fastest, and spares a shared machine's cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_cli(*args: str, cwd=None, timeout=300, **env_vars) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", **env_vars}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "lstsd", *args], cwd=cwd or REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_ddp_equals_one_process(ddp_dir, one_dir, steps: int) -> None:
    """A 2-process LSTSD run and a single-process run over the same global batches: the same number of steps,
    weights and both banks equal to atol 1e-5 (float32 reduction order), the same final loss and accuracy."""
    import torch

    a = torch.load(Path(ddp_dir) / "last.pt", weights_only=False)
    b = torch.load(Path(one_dir) / "last.pt", weights_only=False)
    assert a["world_size"] == 2 and a["global_step"] == b["global_step"] == steps
    for k in b["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-5), k
    for kind in ("short", "long"):
        bank_a, bank_b = a["method"][kind], b["method"][kind]
        assert bank_a["filled"].all() and torch.equal(bank_a["filled"], bank_b["filled"])
        assert torch.allclose(bank_a["values"], bank_b["values"], atol=1e-5), kind
    res_a, res_b = (json.loads((Path(d) / "results.json").read_text()) for d in (ddp_dir, one_dir))
    assert res_a["world_size"] == 2 and abs(res_a["train_loss_final"] - res_b["train_loss_final"]) < 1e-5
    assert res_a["test_acc_final"] == res_b["test_acc_final"]
