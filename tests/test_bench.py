"""lstsd-bench in its smoke mode: every default method runs, the JSON rows carry the documented keys and the bank
sizes by hand; the hand-written PyTorch loop row is there with the trainer's overhead, and takes exactly vanilla's
steps; a bad override exits 2 with one line. (Timings are printed, never asserted.)"""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from helpers import REPO


def bench(*args):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "lstsd.bench", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow  # covered in the default suite by its faster neighbours; make test-slow runs it
def test_bench_smoke_prints_a_json_row_per_method():
    r = bench("--smoke", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["method"]: row for row in json.loads(r.stdout)}
    assert list(rows) == ["vanilla", "vanilla[hand-written]", "lstsd", "lstsd_single", "sd", "snapshot_ensembles",
                          "mean_teacher", "temporal_ensembling", "dlb", "label_smoothing", "tfkd_reg", "kd",
                          "vanilla[torchvision]"]
    for row in rows.values():
        assert {"method", "step_time_ratio", "images_per_second", "peak_memory_bytes", "bank_bytes"} <= row.keys()
        assert row["images_per_second"] > 0
        assert row["peak_memory_bytes"] is None  # CPU: no peak memory
    assert rows["vanilla"]["step_time_ratio"] == 1.0
    # 512 samples x 4 classes x 4 bytes: LSTSD's two banks, Temporal Ensembling's z and Z
    assert rows["lstsd"]["bank_bytes"] == rows["temporal_ensembling"]["bank_bytes"] == 2 * 512 * 4 * 4
    assert rows["sd"]["bank_bytes"] == rows["lstsd_single"]["bank_bytes"] == 0
    # the trainer's own cost: vanilla / hand-written, a finite positive ratio, on that row only
    hand = rows["vanilla[hand-written]"]
    overhead, (low, high) = hand["trainer_overhead"], hand["trainer_overhead_quartiles"]
    assert math.isfinite(overhead)
    assert overhead > 0
    assert low <= overhead <= high
    assert math.isfinite(hand["step_time_ratio"])
    assert hand["step_time_ratio"] > 0
    assert hand["bank_bytes"] == 0
    assert all("trainer_overhead" not in row for name, row in rows.items() if name != "vanilla[hand-written]")


def test_smoke_table_and_top_k_bank_sizes():
    r = bench("--smoke", "--no-loader", "--methods",
              "vanilla,lstsd,lstsd:method.bank_store=probs:method.bank_topk=2:method.bank_dtype=float16")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("smoke run: one step of each method, to show that it runs; its times are not "
                               "measurements")
    assert "CPU cores" in lines[1]
    assert lines[3].startswith("| method | step ms |")
    assert lines[5].startswith("| vanilla |")
    assert lines[6].startswith("| vanilla[hand-written] |")
    assert lines[7].startswith("| lstsd |")
    assert lines[7].endswith("| 16.0 KiB |")  # 2 x 512 x 4 x 4 bytes
    assert lines[8].startswith("| lstsd:method.bank_store=probs:method.bank_topk=2:method.bank_dtype=float16 |")
    assert lines[8].endswith("| 8.0 KiB |")  # 2 x 512 x 2 x (2 + 2) bytes: top-2, fp16
    assert len(lines) == 9  # no trainer-overhead line from one step


def test_the_trainer_overhead_line_of_a_measurement():
    """Without --smoke, the trainer's overhead over the hand-written loop closes the table (2 rounds here)."""
    r = bench("--steps", "1", "--rounds", "2", "--warmup", "1", "--no-loader", "--methods", "vanilla",
              "dataset=synthetic", "dataset.num_train=256", "dataset.num_test=64", "dataset.shape=[1,8,8]",
              "dataset.batch_size=32", "model=digits_cnn")
    assert r.returncode == 0, r.stderr
    last = r.stdout.splitlines()[-1]
    assert last.startswith("trainer overhead (vanilla / hand-written loop, median of the rounds' ratios): ")
    overhead = float(last.split(": ")[1].split()[0])
    assert math.isfinite(overhead) and overhead > 0


def test_hand_written_loop_takes_vanillas_steps(tmp_path):
    """The baseline does the same work: from the same initialisation and batches, with a schedule whose rate
    changes every update, the hand-written loop and the trainer's vanilla step give the same weights."""
    from lstsd.bench import HAND, SMOKE, Bench, with_base

    overrides = with_base(SMOKE, ["optim=sgd", "schedule=cosine"])
    vanilla, hand = Bench("vanilla", overrides, str(tmp_path)), Bench(HAND, overrides, str(tmp_path))
    for b in (vanilla, hand):
        b.run(3)
    assert vanilla.trainer.optimizer.param_groups[0]["lr"] == hand.trainer.optimizer.param_groups[0]["lr"] < 0.1
    for a, b in zip(vanilla.trainer.model.parameters(), hand.trainer.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_dataset_on_the_command_line_replaces_the_bench_data():
    from lstsd.bench import DEFAULTS, with_base

    assert with_base(DEFAULTS, ["trainer.threads=1"]) == [*DEFAULTS, "trainer.threads=1"]
    chosen = with_base(DEFAULTS, ["dataset=mnist1d", "model=mnist1d_cnn"])
    assert not any(o.startswith("dataset") for o in chosen[:-2])
    assert (chosen[-2:] == ["dataset=mnist1d",
                                                                                      "model=mnist1d_cnn"])
    assert "model=resnet20" in chosen
    assert "trainer.epochs=12" in chosen  # the last model= wins


def test_bad_override_exits_2_with_one_line():
    r = bench("--smoke", "trainer.precision=fp8")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "trainer.precision='fp8' is invalid" in r.stderr


def test_the_startup_row_times_fresh_processes():
    r = bench("--startup", "1")
    assert r.returncode == 0, r.stderr
    rows = {line.split(" | ")[0].strip("| "): line.strip("| ").split(" | ") for line in r.stdout.splitlines()
            if line.startswith("| ")}
    assert set(rows) == {"command", "import torch", "lstsd typo (refused)", "lstsd 1-epoch run",
                         "lstsd default run (200 epochs)"}
    assert rows["import torch"][3:] == ["1.00", "-"]
    assert rows["lstsd typo (refused)"][4] == "-"  # no run, no training steps
    run, whole = rows["lstsd 1-epoch run"], rows["lstsd default run (200 epochs)"]
    assert float(run[3]) > 1  # a run imports torch and more
    assert float(whole[1]) > float(run[1])  # 200 epochs take longer than one
    assert float(whole[4]) > 1  # the process does more than its training steps
