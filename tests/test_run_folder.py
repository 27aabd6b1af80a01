"""A run folder belongs to one configuration and one process: relaunches with another configuration and foreign
checkpoints are refused before anything is written, a second process is refused while one runs, ``.hydra/`` is
written once, I/O failures end in one line, and lstsd-report lists unreadable runs instead of failing."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import TINY, compose_cfg, run_cli, tiny
from lstsd.errors import ConfigError, TrainingError
from lstsd.fileio import atomic_write
from lstsd.training.rundir import RunDir
from lstsd.training.run import run


def snapshot(d: Path) -> dict:
    """Every file of a folder (dot files included) with its bytes, the lock file aside."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_relaunch_with_another_configuration_is_refused_and_changes_nothing(tmp_path):
    run(tiny("trainer.epochs=2"), tmp_path)
    before = snapshot(tmp_path)
    for overrides, differs in ((["seed=1"], "seed: 0 -> 1"), (["optim.lr=0.02"], "optim.lr: 0.05 -> 0.02"),
                               (["dataset.batch_size=8"], "dataset.batch_size: 16 -> 8"),
                               (["method=lstsd", "method.minigen_epochs=1"], "method.name: vanilla -> lstsd")):
        with pytest.raises(ConfigError, match=f"holds a run of another configuration \\(.*{differs}.*\\): relaunch "
                                              "it with its own overrides .* trainer.force_resume=true"):
            run(tiny("trainer.epochs=2", *overrides), tmp_path)
        assert snapshot(tmp_path) == before  # .hydra/, metrics.jsonl, results.json, last.pt as they were
    again = run(tiny("trainer.epochs=2", "trainer.device=cpu", "trainer.progress=true"), tmp_path)  # RELAUNCH_KEYS
    assert again["status"] == "completed"
    assert snapshot(tmp_path) == before


def test_an_unfinished_run_resumes_only_its_own_configuration(tmp_path):
    run(tiny("trainer.epochs=1", "schedule=constant"), tmp_path)
    results = tmp_path / "results.json"
    results.unlink()  # as if stopped after epoch 1
    with pytest.raises(ConfigError, match="seed: 0 -> 7"):
        run(tiny("trainer.epochs=2", "seed=7", "schedule=constant"), tmp_path)
    assert not results.exists()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    out = run(tiny("trainer.epochs=2", "schedule=constant"), tmp_path)  # its rates so far are this length's
    assert out["epochs"] == 2
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_extending_a_finished_run_and_refusing_to_shorten_it(tmp_path):
    const = "schedule=constant"  # a step or cosine schedule has the shape of its length: refused (test_run_inputs)
    run(tiny("trainer.epochs=2", const), tmp_path / "a")
    longer = run(tiny("trainer.epochs=3", const), tmp_path / "a")  # trainer.epochs is a relaunch key: the run goes on
    straight = run(tiny("trainer.epochs=3", const), tmp_path / "b")
    assert longer["epochs"] == 3
    assert longer["test_acc_final"] == straight["test_acc_final"]
    with pytest.raises(ConfigError, match="trainer.epochs=2 is invalid: .* holds a completed run of 3 epochs"):
        run(tiny("trainer.epochs=2", const), tmp_path / "a")


def test_a_foreign_checkpoint_is_refused_before_anything_is_written(tmp_path):
    run(tiny("trainer.epochs=1", "optim=adam", "optim.lr=0.01"), tmp_path / "adam")
    target = tmp_path / "sgd"
    target.mkdir()
    shutil.copy(tmp_path / "adam" / "last.pt", target / "last.pt")  # an Adam checkpoint in an SGD run's folder
    with pytest.raises(ConfigError, match="last.pt is a checkpoint of another configuration \\(.*optim._target_: "
                                          "torch.optim.Adam -> torch.optim.SGD"):
        run(tiny("trainer.epochs=2"), target)
    assert sorted(p.name for p in target.iterdir()) == [".lock", "last.pt"]
    torch.save({"epoch": 1}, target / "last.pt")  # a torch file that is not a checkpoint
    with pytest.raises(ConfigError, match="last.pt: not an lstsd checkpoint"):
        run(tiny("trainer.epochs=2"), target)
    (target / "last.pt").write_bytes(b"garbage" * 10)
    with pytest.raises(ConfigError, match="last.pt: not a readable checkpoint \\(.*\\) \\(delete it, or set "
                                          "trainer.resume=false"):
        run(tiny("trainer.epochs=2"), target)
    assert run(tiny("trainer.epochs=2", "trainer.resume=false"), target)["status"] == "completed"


def test_a_folder_whose_run_failed_before_training_takes_the_corrected_configuration(tmp_path):
    with pytest.raises(ConfigError, match="model=lenet5 does not fit the input of dataset=synthetic"):
        run(tiny("model=lenet5"), tmp_path)
    assert RunDir(tmp_path).read_results()["status"] == "failed"
    assert run(tiny(), tmp_path)["status"] == "completed"
    assert RunDir(tmp_path).read_config().model.arch == "digits_cnn"


def test_force_resume_takes_the_folder_over(tmp_path):
    run(tiny("trainer.epochs=1"), tmp_path)
    (tmp_path / "results.json").unlink()
    out = run(tiny("trainer.epochs=2", "optim.lr=0.02", "trainer.force_resume=true"), tmp_path)
    assert out["epochs"] == 2
    saved = RunDir(tmp_path).read_config()
    assert saved.optim.lr == 0.02  # the folder now records the configuration it was finished with


def test_hydra_folder_is_written_once_by_the_cli(tmp_path):
    args = (*TINY, "trainer.epochs=1", f"hydra.run.dir={tmp_path}")
    assert run_cli(*args).returncode == 0
    hydra = {p.name: p.read_bytes() for p in (tmp_path / ".hydra").iterdir()}
    assert sorted(hydra) == ["config.yaml", "hydra.yaml", "inputs.json", "overrides.yaml"]
    r = run_cli(*args, "method=lstsd")
    assert r.returncode == 2
    assert r.stderr.startswith("lstsd: error: ")
    assert "method.name: vanilla -> lstsd" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert run_cli(*args).returncode == 0  # the same configuration: skipped, nothing rewritten
    assert {p.name: p.read_bytes() for p in (tmp_path / ".hydra").iterdir()} == hydra


def test_a_second_process_is_refused_while_one_holds_the_folder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom lstsd.training.rundir import RunDir\n"
                               f"with RunDir({str(tmp_path)!r}).lock():\n    print('held', flush=True)\n"
                               "    time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"{tmp_path} is in use by process {holder.pid} on .* since .*: one "
                                              "process per run folder"):
            run(tiny("trainer.epochs=1"), tmp_path)
        r = run_cli(*TINY, f"hydra.run.dir={tmp_path}")
        assert r.returncode == 2
        assert f"is in use by process {holder.pid}" in r.stderr
        assert not (tmp_path / "results.json").exists()
        assert not (tmp_path / ".hydra").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # a holder that dies leaves no stale lock
        holder.wait()
    assert run(tiny("trainer.epochs=1"), tmp_path)["status"] == "completed"


@pytest.mark.slow  # covered in the default suite by its faster neighbours; make test-slow runs it
def test_two_concurrent_launches_one_trains(tmp_path):
    args = (*TINY, "trainer.epochs=30", "dataset.num_train=400", f"hydra.run.dir={tmp_path}")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    procs = [subprocess.Popen([sys.executable, "-m", "lstsd", *args], env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    codes = [p.wait(timeout=300) for p in procs]
    errors = [p.stderr.read() for p in procs]
    assert sorted(codes) in ([0, 0, 0], [0, 0, 2], [0, 2, 2]), errors  # a late one finds the run completed
    assert 0 in codes
    assert all("is in use by process" in e for c, e in zip(codes, errors) if c == 2)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 31))  # one history, no duplicated epoch
    assert not list(tmp_path.glob("*.tmp"))


def test_temporary_files_are_unique_per_process_and_a_failed_write_keeps_the_file(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("previous")
    seen = []

    def failing(f):
        seen.append(Path(f.name).name)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, failing)
    assert target.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [target]
    assert seen[0].startswith("results.json.")
    assert f".{os.getpid()}." in seen[0]
    assert seen[0].endswith(".tmp")


def test_teacher_cache_key_does_not_depend_on_the_order_of_overrides(tmp_path):
    from lstsd.training.teachers import train_teacher

    trained = []

    def fake_run(cfg, d, overrides):
        trained.append(list(overrides))
        (Path(d) / "results.json").write_text(json.dumps({"status": "completed"}))

    def train(*overrides):
        return train_teacher(list(overrides), tmp_path, compose=lambda overrides: None, train=fake_run)

    a = train("dataset=digits", "seed=1", "method=vanilla")
    b = train("method=vanilla", "dataset=digits", "seed=1")
    c = train("method=vanilla", "dataset=digits", "seed=2", "seed=1")
    d = train("method=vanilla", "dataset=digits", "seed=1", "seed=2")
    assert a == b == c != d
    assert len(trained) == 2


def test_only_rank_0_writes_log_files(tmp_path):
    import logging

    from lstsd.training.run import only_rank_0_writes_logs

    root = logging.getLogger()
    handler = logging.FileHandler(tmp_path / "cli.log")
    root.addHandler(handler)
    only_rank_0_writes_logs()
    assert handler not in root.handlers
    logging.getLogger("lstsd").warning("from rank 1")
    assert (tmp_path / "cli.log").read_text() == ""


# --------------------------------------------------------------------------- I/O failures on a real file system
def tmpfs_available() -> str:
    """Why a private tmpfs cannot be mounted here ('' when it can): the disk-full and read-only tests need one."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, text=True)
    return "" if probe.returncode == 0 else f"cannot mount a tmpfs in a user namespace: {probe.stderr.strip()}"


def in_tmpfs(mount: Path, options: str, *args: str, after: str = "") -> subprocess.CompletedProcess:
    """``lstsd *args`` in a private mount namespace with a tmpfs of ``options`` at ``mount``, then the shell
    command ``after`` (its output follows lstsd's on stdout); the exit status is lstsd's."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop("HYDRA_FULL_ERROR", None)
    command = " ".join([sys.executable, "-m", "lstsd", *[f"'{a}'" for a in args]])
    script = f"mount -t tmpfs -o {options} tmpfs {mount} || exit 99; {command}; rc=$?; {after or 'true'}; exit $rc"
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).parent.parent)


@pytest.mark.skipif(bool(tmpfs_available()), reason=tmpfs_available() or "-")
def test_disk_full_is_one_line_and_marks_the_run_failed(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    # 128 KiB: room for the config, the log and the metrics (a page each), not for the 475 kB checkpoint
    r = in_tmpfs(mount, "size=128k", *TINY, f"hydra.run.dir={mount}/run", "trainer.progress=false",
                 after=f"echo; ls -a {mount}/run; cat {mount}/run/results.json")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1, r.stderr
    assert len(lines) == 1
    assert (lines[0].startswith(f"lstsd: training failed: cannot write the checkpoint "
                                                   f"{mount}/run/last.pt: No space left on device (errno 28)"))
    listing, record = r.stdout.split("{", 1)
    assert "last.pt" not in listing
    assert ".tmp" not in listing  # no half-written checkpoint left behind
    record = json.loads("{" + record)  # the run is marked failed with the same error
    assert record["status"] == "failed"
    assert "No space left on device" in record["error"]


@pytest.mark.skipif(bool(tmpfs_available()), reason=tmpfs_available() or "-")
def test_read_only_run_folder_is_one_line_exit_2(tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    r = in_tmpfs(mount, "size=1m,ro", *TINY, f"hydra.run.dir={mount}/run")
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0] == (f"lstsd: error: {mount}/run: Read-only file system (the run folder, or its log file, "
                        "cannot be written)"), r.stderr


# --------------------------------------------------------------------------- lstsd-report on damaged folders
def test_report_lists_unreadable_runs_and_goes_on(tmp_path, capsys):
    from lstsd.report import main

    run(tiny("trainer.epochs=1"), tmp_path / "good")
    shutil.copytree(tmp_path / "good", tmp_path / "bad_results")
    (tmp_path / "bad_results" / "results.json").write_text('{"status": "completed", "test_acc')
    shutil.copytree(tmp_path / "good", tmp_path / "bad_metrics")
    (tmp_path / "bad_metrics" / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n')
    shutil.copytree(tmp_path / "good", tmp_path / "bad_config")
    (tmp_path / "bad_config" / ".hydra" / "config.yaml").write_bytes(b"\xff\xfe: [")
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "| vanilla |" in out
    assert "Unreadable (3 run folders left out):" in out
    assert f"- {tmp_path / 'bad_results' / 'results.json'}: not a readable JSON file (JSONDecodeError" in out
    assert f"- {tmp_path / 'bad_metrics' / 'metrics.jsonl'}:2: not a JSON row" in out
    assert f"- {tmp_path / 'bad_config' / '.hydra' / 'config.yaml'}: not a readable YAML file" in out


def test_report_on_a_path_that_does_not_exist_is_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-c", "from lstsd.report import main; main()", str(tmp_path / "nowhere")], capture_output=True,
                       text=True)
    assert r.returncode == 2
    assert (r.stderr == f"lstsd-report: error: {tmp_path / 'nowhere'}: no such file or " \
                                             "directory (allowed a run or sweep folder)\n")


def test_the_non_finite_message_names_a_checkpoint_only_when_there_is_one(tmp_path):
    with pytest.raises(TrainingError, match="no checkpoint was written before it"):
        run(tiny("optim.lr=1e30"), tmp_path / "a")
    with pytest.raises(TrainingError, match="no checkpoint was written before it"):
        run(tiny("optim.lr=1e30", "trainer.checkpoint=false"), tmp_path / "b")


def test_folder_names_leave_out_the_keys_a_relaunch_may_change():
    """One list of "where and how, not what": a job folder's name leaves out the keys a relaunch may change
    (RELAUNCH_KEYS), so that the relaunch finds its folder; the differences are the ones named here."""
    import dataclasses

    from lstsd.config import ReportConfig
    from lstsd.config.identity import RELAUNCH_KEYS

    exclude = set(compose_cfg(return_hydra_config=True).hydra.job.config.override_dirname.exclude_keys)
    report = {f"report.{f.name}" for f in dataclasses.fields(ReportConfig) if f.name != "better_of"}
    folders = {"experiment", "name"}  # the sweep folder is named after them already
    files = {"model.path"}  # a model file
    relaunch = set(RELAUNCH_KEYS) - {"trainer.epochs"}  # a sweep over it: a folder each
    assert exclude == (relaunch - {"hydra", "report"}) | report | folders | files
    assert all(isinstance(why, str) and why for why in RELAUNCH_KEYS.values())  # each with its reason

