"""lstsd-bench in its smoke mode: every default method runs, the JSON rows carry the documented keys and the bank
sizes by hand; a bad override exits 2 with one line. (Timings are printed, never asserted.)"""
import json
import os
import subprocess
import sys

from conftest import REPO


def bench(*args):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "lstsd.bench", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_smoke_json_rows():
    r = bench("--smoke", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["method"]: row for row in json.loads(r.stdout)}
    assert list(rows) == ["vanilla", "lstsd", "lstsd_single", "sd", "snapshot_ensembles", "mean_teacher",
                          "temporal_ensembling", "dlb", "label_smoothing", "tfkd_reg", "kd", "vanilla[torchvision]"]
    for row in rows.values():
        assert {"method", "step_time_ratio", "images_per_second", "peak_memory_bytes", "bank_bytes"} <= row.keys()
        assert row["images_per_second"] > 0 and row["peak_memory_bytes"] is None  # CPU: no peak memory
    assert rows["vanilla"]["step_time_ratio"] == 1.0
    # 512 samples x 4 classes x 4 bytes: LSTSD's two banks, Temporal Ensembling's z and Z
    assert rows["lstsd"]["bank_bytes"] == rows["temporal_ensembling"]["bank_bytes"] == 2 * 512 * 4 * 4
    assert rows["sd"]["bank_bytes"] == rows["lstsd_single"]["bank_bytes"] == 0


def test_smoke_table_and_top_k_bank_sizes():
    r = bench("--smoke", "--no-loader", "--methods",
              "vanilla,lstsd,lstsd:method.bank_store=probs:method.bank_topk=2:method.bank_dtype=float16")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "CPU cores" in lines[0] and lines[2].startswith("| method | step ms |")
    assert lines[5].startswith("| lstsd |") and lines[5].endswith("| 16.0 KiB |")  # 2 x 512 x 4 x 4 bytes
    assert lines[6].startswith("| lstsd:method.bank_store=probs:method.bank_topk=2:method.bank_dtype=float16 |")
    assert lines[6].endswith("| 8.0 KiB |") and len(lines) == 7  # 2 x 512 x 2 x (2 + 2) bytes: top-2, fp16


def test_bad_override_exits_2_with_one_line():
    r = bench("--smoke", "trainer.precision=fp8")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "trainer.precision='fp8' is invalid" in r.stderr
