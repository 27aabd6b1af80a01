"""What a run prints: its folder, one line per epoch and a summary when piped (a file, a submitit or SLURM job
log); on a terminal a progress bar that stays instead of the epoch lines; the run's own log file always has
every line; hydra/job_logging=quiet keeps the console to warnings."""
import logging
import shutil
import subprocess
import sys

import pytest

from helpers import REPO, TINY, run_cli
from lstsd.training import console


def info_lines(text: str) -> list[str]:
    return [line.split("] - ", 1)[1] for line in text.splitlines() if "][INFO] - " in line]


def test_a_piped_run_prints_its_folder_each_epoch_and_a_summary(tmp_path):
    r = run_cli(*TINY, f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    lines = info_lines(r.stdout)
    assert lines[0] == f"vanilla on synthetic / digits_cnn, seed 0, 3 epochs: {tmp_path}"
    assert [line.split()[0] for line in lines[1:4]] == ["epoch=1", "epoch=2", "epoch=3"]
    assert all(" test_acc=" in line and " lr=" in line and " seconds=" in line for line in lines[1:4])
    assert lines[4].startswith("done in ")
    assert ": test acc final " in lines[4]
    assert lines[4].endswith(str(tmp_path))
    assert len(lines) == 5
    assert info_lines((tmp_path / "cli.log").read_text()) == lines  # the run's log file: the same lines


def test_quiet_keeps_the_console_to_warnings_and_the_log_file_complete(tmp_path):
    r = run_cli(*TINY, f"hydra.run.dir={tmp_path}", "hydra/job_logging=quiet")
    assert r.returncode == 0, r.stdout
    assert info_lines(r.stdout) == [], r.stdout
    assert len(info_lines((tmp_path / "cli.log").read_text())) == 5


def test_epoch_lines_leave_the_console_only_while_a_bar_shows_them():
    epoch = logging.LogRecord("lstsd.training", logging.INFO, "", 0, "epoch=1", None, None)
    setattr(epoch, console.EPOCH, True)
    other = logging.LogRecord("lstsd.training.run", logging.INFO, "", 0, "done", None, None)
    keep = console.EpochLines()
    assert keep.filter(epoch)
    assert keep.filter(other)
    console.bar_shown(True)
    try:
        assert not keep.filter(epoch)
        assert keep.filter(other)
    finally:
        console.bar_shown(False)
    assert keep.filter(epoch)


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux's script for a terminal")
def test_on_a_terminal_the_bar_stays_and_replaces_the_epoch_lines(tmp_path):
    command = " ".join([sys.executable, "-m", "lstsd", *[f"'{a}'" for a in TINY], f"hydra.run.dir={tmp_path}",
                        "trainer.progress=true"])
    r = subprocess.run(["script", "-qc", f"stty cols 120 rows 40; {command}", "/dev/null"], capture_output=True,
                       text=True, cwd=REPO, timeout=300, env={"WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin"})
    screen = r.stdout.replace("\r", "\n")
    assert r.returncode == 0, screen
    assert "vanilla: 100%|" in screen
    assert "3/3 [" in screen  # the bar, left in place at the end
    lines = info_lines(screen)
    assert len(lines) == 2
    assert lines[1].startswith("done in ")  # the folder and the summary, no epoch line
    assert len(info_lines((tmp_path / "cli.log").read_text())) == 5
