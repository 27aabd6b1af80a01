"""What the tests share besides fixtures (tests/conftest.py holds those): composing a configuration, the tiny
configuration, reading a run's metrics, running the command line, callbacks that stop, crash or watch a fit
(the trainer's one seam), the method a run would build, and the DDP-equals-one-process check."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

from lstsd.config.compose import CONFIG_DIR, compose, setup  # noqa: E402,F401 (CONFIG_DIR: the tests' config dir)
from lstsd.training.trainer import Callback  # noqa: E402

setup()  # the resolvers and the ConfigStore, as the command line sets them up

REPO = Path(__file__).resolve().parent.parent

# Small, fast runs: synthetic 8x8 images, a tiny CNN, a few epochs.
TINY = ("dataset=synthetic", "dataset.num_train=40", "dataset.num_test=20", "dataset.shape=[1,8,8]", "optim=sgd", "schedule=step",
        "dataset.num_classes=4", "dataset.batch_size=16", "model=digits_cnn", "trainer.epochs=3",
        "trainer.progress=false", "optim.lr=0.05")


def compose_cfg(*overrides: str, return_hydra_config: bool = False):
    return compose(list(overrides), return_hydra_config)


def tiny(*overrides: str):
    """The tiny configuration with ``overrides``: the one way the tests get it (the ``tiny_cfg`` fixture too)."""
    return compose_cfg(*TINY, *overrides)


def read_metrics(run_dir) -> list:
    """metrics.jsonl as a list of rows, wall time aside."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def run_cli(*args: str, cwd=None, timeout=300, **env_vars) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", **env_vars}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "lstsd", *args], cwd=cwd or REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def built_method(overrides, run_dir, teacher=None):
    """The method object a run of ``overrides`` builds, with its teacher resolved (a teacher run trains), and
    nothing else trained: the run's own assembly, without its fit."""
    from lstsd.config import validate
    from lstsd.training.run import assemble

    return assemble(validate(compose_cfg(*overrides)), Path(run_dir), list(overrides), teacher).method


class CrashAt(Callback):
    """Ends a fit with ``error`` (a KeyboardInterrupt: a killed process) when epoch ``epoch`` (0-based) starts,
    after the checkpoints of the epochs before it."""

    def __init__(self, epoch: int, error: BaseException = KeyboardInterrupt()):
        self.epoch, self.error = epoch, error

    def on_epoch_start(self, trainer, epoch: int) -> None:
        if epoch == self.epoch:
            raise self.error


class SignalAt(Callback):
    """A stop signal (SIGTERM) arriving after global step ``step``; the fit then checkpoints and stops with a
    KeyboardInterrupt in this process instead of the signal (``interrupt=False``: the real stop)."""

    def __init__(self, step: int, interrupt: bool = True):
        self.step, self.interrupt = step, interrupt

    def on_step_end(self, trainer) -> None:
        if trainer.global_step == self.step:
            trainer.guard.request(signal.SIGTERM)

    def on_stop(self, trainer, where: str) -> None:
        if self.interrupt:
            raise KeyboardInterrupt


class Checkpoints(Callback):
    """The epochs each checkpoint holds, in the order they were written."""

    def __init__(self):
        self.epochs = []

    def on_checkpoint(self, trainer) -> None:
        self.epochs.append(trainer.start_epoch)


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
