"""A run folder is its data too: what a run reads is identified by content (.hydra/inputs.json), so a relaunch on
other data or another teacher is refused and a moved copy of the same files is accepted; a resume is consistent
with the length asked for; a teacher run is read only when no process writes it, with its own score; the jobs of
a sweep that differ only in a path get a folder each."""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import CrashAt, compose_cfg, run_cli, tiny
from lstsd.config.identity import RELAUNCH_KEYS, job_folders
from lstsd.errors import ConfigError, RefusedRelaunch
from lstsd.fileio import content_fingerprint
from lstsd.training.run import run
from test_run_folder import snapshot

NPZ = ("dataset=npz", "model=digits_cnn", "dataset.batch_size=16", "trainer.epochs=2", "trainer.progress=false",
       "optim=sgd", "optim.lr=0.05")


def npz(path, seed: int):
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.random((40, 1, 8, 8), np.float32), y_train=np.arange(40) % 4,
             x_test=rng.random((20, 1, 8, 8), np.float32), y_test=np.arange(20) % 4)
    return path


def test_the_fingerprint_is_of_content_not_of_place(tmp_path):
    a, b = npz(tmp_path / "a.npz", 0), tmp_path / "copy" / "b.npz"
    b.parent.mkdir()
    shutil.copy(a, b)
    assert content_fingerprint([a]) == content_fingerprint([b]) != content_fingerprint([npz(tmp_path / "c.npz", 1)])
    tree = tmp_path / "tree"
    (tree / "x").mkdir(parents=True)
    (tree / "x" / "1.png").write_bytes(b"12")
    moved = tmp_path / "moved"
    shutil.copytree(tree, moved)
    assert content_fingerprint([tree]) == content_fingerprint([moved])
    (moved / "x" / "2.png").write_bytes(b"3")  # one more file
    assert content_fingerprint([tree]) != content_fingerprint([moved])
    assert content_fingerprint([tmp_path / "none"]) != content_fingerprint([tree])


def test_a_relaunch_on_other_data_is_refused_and_a_moved_copy_accepted(tmp_path):
    data, out = npz(tmp_path / "d.npz", 0), tmp_path / "run"
    first = run(compose_cfg(*NPZ, f"dataset.path={data}"), out)
    assert json.loads((out / ".hydra/inputs.json").read_text())["data"] == content_fingerprint([data])
    before = snapshot(out)
    other = npz(tmp_path / "other.npz", 1)
    with pytest.raises(ConfigError, match=r"holds a run of other inputs \(inputs.data: \w+ -> \w+: the content of "
                                          rf"{other} differs from its first launch's\)"):
        run(compose_cfg(*NPZ, f"dataset.path={other}"), out)  # a completed run: not returned as if it were this one
    npz(data, 2)  # the same path, new content
    with pytest.raises(ConfigError, match="holds a run of other inputs"):
        run(compose_cfg(*NPZ, f"dataset.path={data}"), out)
    assert snapshot(out) == before
    moved = tmp_path / "moved" / "d.npz"
    moved.parent.mkdir()
    npz(moved, 0)  # the first content, elsewhere
    assert run(compose_cfg(*NPZ, f"dataset.path={moved}"), out)["test_acc_final"] == first["test_acc_final"]


def test_an_interrupted_run_refuses_other_data_before_resuming(tmp_path):
    data, out = npz(tmp_path / "d.npz", 0), tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run(compose_cfg(*NPZ, f"dataset.path={data}", "trainer.epochs=3"), out, callbacks=[CrashAt(2)])
    before = snapshot(out)
    with pytest.raises(ConfigError, match="holds a run of other inputs"):
        run(compose_cfg(*NPZ, f"dataset.path={npz(tmp_path / 'e.npz', 1)}", "trainer.epochs=3"), out)
    assert snapshot(out) == before


def test_a_shorter_length_than_the_checkpoint_is_refused_and_nothing_written(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(tiny("trainer.epochs=4"), tmp_path, callbacks=[CrashAt(2)])  # checkpointed after epoch 2
    before = snapshot(tmp_path)
    with pytest.raises(RefusedRelaunch, match=rf"trainer.epochs=1 is invalid: {tmp_path / 'last.pt'} has trained 2 "
                                              r"epochs \(allowed 4, or more where the learning rates so far stay those of 4 epochs"):
        run(tiny("trainer.epochs=1"), tmp_path)
    assert snapshot(tmp_path) == before  # no results.json claiming "completed, epochs 1"


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_another_length_under_a_schedule_of_its_length_is_refused(tmp_path, schedule):
    with pytest.raises(KeyboardInterrupt):
        run(tiny(f"schedule={schedule}", "trainer.epochs=4"), tmp_path, callbacks=[CrashAt(2)])
    before = snapshot(tmp_path)
    with pytest.raises(RefusedRelaunch, match=r"trainer.epochs=6 is invalid: .* was trained as a run of 4 epochs, "
                                              rf"whose learning rates differ from this length's from update \d+ .*"
                                              rf"schedule {schedule}\); allowed 4, or trainer.force_resume=true"):
        run(tiny(f"schedule={schedule}", "trainer.epochs=6"), tmp_path)
    assert snapshot(tmp_path) == before
    res = run(tiny(f"schedule={schedule}", "trainer.epochs=6", "trainer.force_resume=true"), tmp_path)
    assert res["epochs"] == 6 and res["trained_as_epochs"] == [4]  # the record says it mixed two lengths


def test_another_length_under_a_constant_rate_resumes_as_that_run(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(tiny("schedule=constant", "trainer.epochs=4"), tmp_path / "a", callbacks=[CrashAt(2)])
    resumed = run(tiny("schedule=constant", "trainer.epochs=5"), tmp_path / "a")
    straight = run(tiny("schedule=constant", "trainer.epochs=5"), tmp_path / "b")
    timings = ("wall_seconds", "train_seconds", "steps_per_second", "provenance")
    assert {k: v for k, v in resumed.items() if k not in timings} == \
        {k: v for k, v in straight.items() if k not in timings}


def hold_lock(folder):
    """Another process holding ``folder``'s run lock (as a run in it does), until killed."""
    code = ("import sys, time; from lstsd.training.rundir import RunDir\n"
            "with RunDir(sys.argv[1]).lock(): print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_teacher_run_in_use_is_refused_naming_its_holder(tmp_path):
    teacher = tmp_path / "teacher"
    run(tiny("trainer.epochs=1"), teacher)
    holder = hold_lock(teacher)
    try:
        with pytest.raises(ConfigError, match=rf"method.teacher_run='{teacher}' is invalid now: the run is in use by "
                                              rf"process {holder.pid} on .*wait for it to end"):
            run(tiny("method=kd", f"method.teacher_run={teacher}", "trainer.epochs=1"), tmp_path / "student")
    finally:
        holder.kill()
        holder.wait()
    res = run(tiny("method=kd", f"method.teacher_run={teacher}", "trainer.epochs=1"), tmp_path / "student")
    assert res["teacher_test_acc"] == json.loads((teacher / "results.json").read_text())["test_acc_final"]


def test_a_teacher_whose_weights_are_not_its_result_is_refused(tmp_path):
    teacher = tmp_path / "teacher"
    run(tiny("trainer.epochs=2"), teacher)
    record = json.loads((teacher / "results.json").read_text())
    (teacher / "results.json").write_text(json.dumps(record | {"epochs": 3}))  # extended since its checkpoint
    with pytest.raises(ConfigError, match=r"its last.pt is at epoch 2 but its results.json records 3"):
        run(tiny("method=kd", f"method.teacher_run={teacher}", "trainer.epochs=1"), tmp_path / "student")
    (teacher / "results.json").write_text(json.dumps({k: v for k, v in record.items() if k != "input_shape"}))
    with pytest.raises(ConfigError, match="records its input_shape"):
        run(tiny("method=kd", f"method.teacher_run={teacher}", "trainer.epochs=1"), tmp_path / "student")


def test_a_relaunch_with_another_teacher_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run(tiny("trainer.epochs=1"), a)
    run(tiny("trainer.epochs=1", "seed=1"), b)
    run(tiny("method=kd", f"method.teacher_run={a}", "trainer.epochs=1"), tmp_path / "s")
    with pytest.raises(ConfigError, match=r"other inputs \(inputs.teacher_run.fingerprint: \w+ -> \w+"):
        run(tiny("method=kd", f"method.teacher_run={b}", "trainer.epochs=1"), tmp_path / "s")
    moved = tmp_path / "moved"
    shutil.copytree(a, moved)  # the same teacher elsewhere
    run(tiny("method=kd", f"method.teacher_run={moved}", "trainer.epochs=1"), tmp_path / "s")


def test_jobs_that_differ_only_in_an_excluded_key_get_a_folder_each():
    exclude = ["dataset.root", "trainer.device"]
    jobs = [["dataset.root=/a", "seed=0"], ["dataset.root=/b", "seed=0"], ["dataset.root=/a", "seed=1"]]
    names = job_folders(jobs, exclude)
    assert len(set(names)) == 3 and names[0].startswith("seed=0,dataset.root@") and names[0][-8:] == names[2][-8:]
    assert job_folders([["dataset.root=/a", "seed=0"], ["dataset.root=/a", "seed=1"]], exclude) == ["seed=0", "seed=1"]
    assert all(k in RELAUNCH_KEYS for k in ("dataset.root", "dataset.path", "method.teacher_run"))


def test_a_sweep_over_two_data_trees_gives_two_runs(tmp_path):
    roots = []
    for name, seed in (("A", 0), ("B", 1)):
        rng = np.random.default_rng(seed)
        for split, n in (("train", 8), ("val", 4)):
            for c in ("c0", "c1"):
                folder = tmp_path / name / split / c
                folder.mkdir(parents=True)
                for i in range(n):
                    from PIL import Image
                    Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(folder / f"{i}.png")
        roots.append(str(tmp_path / name))
    sweep = tmp_path / "sweep"
    out = run_cli("-m", "dataset=imagefolder", f"dataset.root={roots[0]},{roots[1]}", "dataset.image_size=8",
                  "model=digits_cnn", "dataset.batch_size=4", "trainer.epochs=1", "trainer.progress=false",
                  "dataset.num_workers=0", f"hydra.sweep.dir={sweep}", "optim=sgd")
    assert out.returncode == 0, out.stderr[-3000:]
    done = sorted(p.parent.name for p in sweep.glob("*/results.json"))
    assert len(done) == 2 and all("dataset.root@" in d for d in done), done
    assert "never started" not in out.stdout + out.stderr


@pytest.mark.parametrize("damage", ["garbage: [", "truncated", "a list", ""])
def test_a_damaged_schema_snapshot_is_rebuilt(damage):
    """A corrupt, truncated or emptied snapshot of the schemas is not used: --help and --cfg work, and the next
    full setup writes it again."""
    from lstsd.config.compose import snapshot_path

    path = snapshot_path()
    if not path.exists():
        assert run_cli("--help").returncode == 0
    whole = path.read_text()
    try:
        path.write_text({"truncated": whole[: len(whole) // 2], "a list": "- 1\n- 2\n"}.get(damage, damage))
        for args in (["--help"], ["--cfg", "job", "trainer.epochs=2"]):
            out = run_cli(*args)
            assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert path.read_text() == whole  # rebuilt
    finally:
        path.write_text(whole)


def test_a_module_that_exits_while_imported_is_one_line(tmp_path):
    (tmp_path / "quits.py").write_text("import sys\nsys.exit(3)\n")
    out = run_cli("imports=[quits]", "trainer.epochs=1", PYTHONPATH=str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.strip() == ("lstsd: error: imports=['quits'] is invalid: quits called sys.exit(3) as it was "
                                  "imported")


@pytest.mark.parametrize("returns, said", [("(self.head(x.flatten(1)), x)", "it returns a tuple, not a floating-point "
                                                                           "tensor of logits"),
                                           ("self.head(x.flatten(1)).long()", "it returns a tensor of torch.int64")])
def test_a_model_returning_no_logits_is_refused_before_training(tmp_path, monkeypatch, returns, said):
    module = f"odd_nets_{len(said)}"  # a module of its own per case (imported modules stay imported)
    (tmp_path / f"{module}.py").write_text(
        "from torch import nn\n\n\nclass Odd(nn.Module):\n    def __init__(self, num_classes):\n"
        "        super().__init__()\n        self.head = nn.Linear(64, num_classes)\n\n"
        f"    def forward(self, x):\n        return {returns}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=rf"model={module}.Odd does not fit the input of dataset=synthetic .*: "
                                          rf"{said}"):
        run(tiny("model=target", f"model._target_={module}.Odd"), tmp_path / "run")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_teacher_with_non_finite_or_unreadable_weights_is_refused(tmp_path):
    import torch

    teacher = tmp_path / "teacher"
    run(tiny("trainer.epochs=1"), teacher)
    state = torch.load(teacher / "last.pt", weights_only=False)
    name = next(iter(state["model"]))
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    torch.save(state, teacher / "last.pt")
    with pytest.raises(ConfigError, match=rf"method.teacher_run='{teacher}' is invalid: its weights hold non-finite "
                                          rf"values \(NaN or inf\) in {name}: allowed finite weights"):
        run(tiny("method=kd", f"method.teacher_run={teacher}", "trainer.epochs=1"), tmp_path / "s")
    (teacher / "last.pt").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"its last.pt is not readable \(UnpicklingError"):
        run(tiny("method=kd", f"method.teacher_run={teacher}", "trainer.epochs=1"), tmp_path / "s")
    assert not (tmp_path / "s" / "last.pt").exists()


def test_an_unexpected_error_in_training_is_one_line_and_its_traceback_is_logged(tmp_path):
    (tmp_path / "breaks.py").write_text(
        "from torch import nn\n\n\nclass Breaks(nn.Module):\n    def __init__(self, num_classes):\n"
        "        super().__init__()\n        self.head = nn.Linear(64, num_classes)\n        self.calls = 0\n\n"
        "    def forward(self, x):\n        self.calls += 1\n        if self.calls > 3:\n"
        "            raise KeyError('a bug in step 3')\n        return self.head(x.flatten(1))\n")
    from helpers import TINY

    out = run_cli(*TINY, "model=target", "model._target_=breaks.Breaks", f"hydra.run.dir={tmp_path / 'run'}",
                  PYTHONPATH=str(tmp_path))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines == [f"lstsd: training failed: KeyError: 'a bug in step 3' (its traceback is in "
                     f"{tmp_path / 'run' / 'cli.log'}; HYDRA_FULL_ERROR=1 prints it)"], out.stderr
    assert "Traceback (most recent call last)" in (tmp_path / "run" / "cli.log").read_text()
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "failed"


def test_a_module_registering_a_name_lstsd_has_and_a_bad_logging_level_are_one_line(tmp_path):
    (tmp_path / "dupmod.py").write_text("from lstsd.config import MethodConfig\n"
                                        "from lstsd.methods.vanilla import Vanilla\n"
                                        "from lstsd.registry import register_method\n\n\n"
                                        "class Mine(Vanilla):\n    pass\n\n\n"
                                        "register_method('lstsd', MethodConfig)(Mine)\n")
    out = run_cli("imports=[dupmod]", "trainer.epochs=1", f"hydra.run.dir={tmp_path / 'a'}", PYTHONPATH=str(tmp_path))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("lstsd: error: method.name='lstsd' is registered twice, by ")
    assert "dupmod.Mine" in out.stderr and "lstsd.methods.lstsd.LSTSD" in out.stderr
    out = run_cli("hydra.job_logging.root.level=LOUD", "trainer.epochs=1", f"hydra.run.dir={tmp_path / 'b'}")
    assert out.returncode == 2 and out.stderr == (
        "lstsd: error: Hydra could not start the run: ValueError: Unable to configure root logger (ValueError: "
        "Unknown level: 'LOUD') (check the hydra.* overrides; HYDRA_FULL_ERROR=1 shows the traceback)\n")


def test_a_run_whose_banks_refused_rows_ends_before_its_checkpoint(tmp_path, monkeypatch):
    """A prediction beyond the bank's range (here: inf written once) is kept out of the bank; the trainer ends the
    run at the epoch's end with one line instead of training on the sample's stale row."""
    from lstsd.errors import TrainingError
    from lstsd.methods.banks import SampleBank

    real, calls = SampleBank.write, []

    def overflowing(self, index, rows, everywhere=True):
        calls.append(1)
        return real(self, index, rows * float("inf") if len(calls) == 3 else rows, everywhere)

    monkeypatch.setattr(SampleBank, "write", overflowing)
    with pytest.raises(TrainingError, match=r"method lstsd: non-finite predictions .* were kept out of its per-sample "
                                            r"banks in epoch 1; method.bank_dtype=float32"):
        run(tiny("method=lstsd", "method.minigen_epochs=1"), tmp_path)
    assert not (tmp_path / "last.pt").exists()


def test_a_run_folder_whose_log_cannot_be_written_and_own_code_that_exits_are_one_line(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "cli.log").mkdir(parents=True)  # the log file cannot be opened (as on a read-only mount)
    out = run_cli("trainer.epochs=1", f"hydra.run.dir={run_dir}")
    assert out.returncode == 2 and out.stderr == (f"lstsd: error: {run_dir / 'cli.log'}: Is a directory (the run "
                                                  "folder, or its log file, cannot be written)\n")
    (tmp_path / "exits.py").write_text("import sys\n\n\ndef Net(num_classes):\n    sys.exit(4)\n")
    out = run_cli("model._target_=exits.Net", "trainer.epochs=1", f"hydra.run.dir={tmp_path / 'b'}",
                  PYTHONPATH=str(tmp_path))
    assert out.returncode == 1 and out.stderr == (
        "lstsd: training failed: the run's own code called sys.exit(4) (a model._target_, dataset._target_ or a "
        "component of an imports= module): allowed code that returns or raises\n")


def test_legacy_folders_and_teacher_weights_and_linked_class_folders(tmp_path):
    """A trained folder without inputs.json is not stamped with this launch's inputs; a teacher's weights are part
    of the student's inputs; a class folder linked from outside the tree is listed like the reader lists it."""
    data, out = npz(tmp_path / "d.npz", 0), tmp_path / "run"
    run(compose_cfg(*NPZ, f"dataset.path={data}"), out)
    (out / ".hydra" / "inputs.json").unlink()  # as a folder trained before inputs were recorded
    run(compose_cfg(*NPZ, f"dataset.path={npz(tmp_path / 'e.npz', 1)}"), out)  # skipped, with a warning
    assert not (out / ".hydra" / "inputs.json").exists()
    a, b = tmp_path / "a", tmp_path / "b"
    run(tiny("trainer.epochs=1"), a)
    run(tiny("trainer.epochs=1", "seed=1"), b)
    run(tiny("method=kd", f"method.teacher_run={a}", "trainer.epochs=1"), tmp_path / "s")
    shutil.copy(b / "last.pt", a / "last.pt")  # other weights, the same results.json
    with pytest.raises(ConfigError, match=r"other inputs \(inputs.teacher_run.weights: \w+ -> \w+"):
        run(tiny("method=kd", f"method.teacher_run={a}", "trainer.epochs=1"), tmp_path / "s")
    outside = tmp_path / "outside" / "bee"
    outside.mkdir(parents=True)
    (outside / "0.png").write_bytes(b"x")
    tree = tmp_path / "tree" / "train"
    tree.mkdir(parents=True)
    (tree / "bee").symlink_to(outside)
    before = content_fingerprint([tree])
    (outside / "1.png").write_bytes(b"y")
    assert content_fingerprint([tree]) != before
    (outside / "loop").symlink_to(tree)  # a loop ends at the folder seen already
    assert content_fingerprint([tree]) != before
