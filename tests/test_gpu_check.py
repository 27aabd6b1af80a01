"""make gpu-check (tools/gpu_check.py): one line and exit 0 without a GPU; its checks, run on the CPU with a tiny
model, pass and write their figures."""
import os
import subprocess
import sys

import pytest

from helpers import REPO

SCRIPT = REPO / "tools" / "gpu_check.py"


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "gc")], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout == "gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is false): nothing " \
                         "checked\n"
    assert not (tmp_path / "gc").exists()


@pytest.mark.slow  # about 45 s on 2 cores
def test_its_checks_pass_on_the_cpu_and_write_their_figures(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "WANDB_MODE": "disabled"})
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert out.stdout.splitlines()[-1].startswith("gpu-check: all 5 checks passed")
    report = (tmp_path / "gpu-check.md").read_text()
    assert "| lstsd | " in report and "| kd | " in report  # every default method timed
    for method in ("vanilla", "lstsd", "lstsd_single", "sd", "snapshot_ensembles", "mean_teacher",
                   "temporal_ensembling", "dlb", "label_smoothing", "tfkd_reg"):
        assert f"- {method}: epoch seconds" in report, method
