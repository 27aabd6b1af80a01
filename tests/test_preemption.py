"""Killed and preempted runs, for real: a subprocess is killed (SIGKILL) at an epoch boundary or sent SIGTERM /
SIGUSR1 in the middle of an epoch, then launched again with the same command and output folder; it ends with
the results.json of an uninterrupted run, wall time aside."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import REPO

ARGS = ("method=lstsd", "method.minigen_epochs=2", "dataset=synthetic", "dataset.num_train=3000",
        "dataset.num_test=100", "dataset.shape=[3,16,16]", "dataset.batch_size=50", "model=digits_cnn",
        "model.dropout=0.2", "trainer.epochs=6", "trainer.progress=false")


def launch(run_dir):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([sys.executable, "-m", "lstsd", *ARGS, f"hydra.run.dir={run_dir}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def epochs_done(run_dir) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def checkpointed_epochs(run_dir) -> int:
    """The epochs last.pt holds (0: none yet). Its writes are atomic renames, so a read never sees half a file."""
    path = run_dir / "last.pt"
    return torch.load(path, weights_only=False)["epoch"] if path.exists() else 0


def interrupt(run_dir, sig, after_epochs: int, delay: float = 0.0) -> subprocess.Popen:
    """Send ``sig`` ``delay`` seconds after the checkpoint of epoch ``after_epochs`` is complete (not after its
    metrics row: the checkpoint's fsync comes between the two, and a signal there stops at the epoch's end)."""
    proc = launch(run_dir)
    deadline = time.time() + 240
    while checkpointed_epochs(run_dir) < after_epochs and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc


def strip_time(res):
    """The results, wall time and the command line aside (each launch names its own hydra.run.dir)."""
    out = {k: v for k, v in res.items() if "second" not in k}
    out["provenance"] = {k: v for k, v in res["provenance"].items() if k != "argv"}
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full")
    proc = launch(run_dir)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.slow  # covered in the default suite by its faster neighbours; make test-slow runs it
def test_sigkill_then_relaunch(tmp_path, uninterrupted):
    assert interrupt(tmp_path, signal.SIGKILL, after_epochs=2).returncode == -signal.SIGKILL
    assert 2 <= epochs_done(tmp_path) < 6
    assert not (tmp_path / "results.json").exists()
    proc = launch(tmp_path)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert strip_time(json.loads((tmp_path / "results.json").read_text())) == strip_time(uninterrupted)


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGTERM, marks=pytest.mark.slow), signal.SIGUSR1,
                                 signal.SIGINT])
def test_stop_signal_mid_epoch_checkpoints_then_relaunch(tmp_path, uninterrupted, sig):
    proc = interrupt(tmp_path, sig, after_epochs=3, delay=0.05)
    if sig == signal.SIGINT:  # Ctrl-C: the same checkpoint, then one line and exit code 130
        assert proc.returncode == 130
        assert proc.stderr.read().strip().splitlines()[-1] == ("lstsd: interrupted (Ctrl-C); the same command "
                                                               "resumes from the last checkpoint")
        assert not (tmp_path / "results.json").exists()  # not a failed run: an interrupted one
    else:
        assert proc.returncode == -sig  # the default action ran after the checkpoint
        name = signal.Signals(sig).name
        assert re.fullmatch(rf"lstsd: stopped by {name} after checkpointing at step \d+ of epoch 4; the same "
                            "command resumes", proc.stderr.read().strip().splitlines()[-1])
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert state["in_epoch"] is not None
    assert 0 < state["in_epoch"]["step"] <= 60  # inside epoch 4
    assert state["epoch"] == 3
    proc = launch(tmp_path)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert strip_time(json.loads((tmp_path / "results.json").read_text())) == strip_time(uninterrupted)
