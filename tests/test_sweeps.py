"""Sweeps: one folder per combination of overrides, re-launched sweeps skip finished jobs and finish the rest,
simultaneous sweeps never share a folder, and the submitit launcher runs the same jobs in other processes."""
import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from helpers import REPO, run_cli

JOBS = ("method=lstsd,seed=0,trainer.epochs=2", "method=vanilla,seed=0,trainer.epochs=2")


@pytest.mark.slow  # covered in the default suite by its faster neighbours; make test-slow runs it
def test_relaunched_sweep_skips_completed_jobs_and_completes_the_rest(tmp_path):
    args = ("-m", "method=vanilla,lstsd", "seed=0", "trainer.epochs=2", f"hydra.sweep.dir={tmp_path}")
    assert run_cli(*args).returncode == 0
    done, lost = tmp_path / JOBS[1], tmp_path / JOBS[0]
    stamp = (done / "results.json").stat().st_mtime_ns
    first = json.loads((lost / "results.json").read_text())
    (lost / "results.json").unlink()  # as if this job had been killed before the end
    r = run_cli(*args)
    assert r.returncode == 0
    assert (done / "results.json").stat().st_mtime_ns == stamp  # skipped: not trained again
    assert "already holds a completed run: skipped" in (done / "cli.log").read_text()
    again = json.loads((lost / "results.json").read_text())
    assert {k: v for k, v in again.items() if "seconds" not in k} == \
        {k: v for k, v in first.items() if "seconds" not in k}  # completed from its checkpoint, same result
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(JOBS)


@pytest.mark.slow  # covered in the default suite by its faster neighbours; make test-slow runs it
def test_sweeps_started_together_get_their_own_folders(tmp_path):
    cmd = [sys.executable, "-m", "lstsd", "-m", "seed=0", "trainer.epochs=1", "name=twins"]
    env = {"WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    sweeps = list((tmp_path / "multirun" / "twins").iterdir())
    assert len(sweeps) == 2
    assert all((s / "seed=0,trainer.epochs=1" / "results.json").exists() for s in sweeps)


def test_submitit_local_launcher(tmp_path):
    r = run_cli("-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "method=vanilla,lstsd",
                "seed=0", "trainer.epochs=2", f"hydra.sweep.dir={tmp_path}", timeout=600)
    assert r.returncode == 0, r.stderr
    for job in JOBS:
        assert json.loads((tmp_path / job / "results.json").read_text())["status"] == "completed"
    assert list(tmp_path.glob(".submitit/*/*_result.pkl"))  # the jobs ran through submitit
    assert "| mnist1d | mnist1d_cnn | lstsd | 1 |" in r.stdout


def test_launcher_presets_and_the_git_ignored_site_file(monkeypatch):
    from helpers import compose_cfg

    launcher = compose_cfg("hydra/launcher=slurm", return_hydra_config=True).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.max_num_timeout == 10
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.partition) == (1, 1, None)
    site = REPO / "lstsd" / "conf" / "hydra" / "launcher" / "site"
    local = site / "slurm_local.yaml"
    assert not local.exists()
    local.write_text((site / "slurm_local.yaml.example").read_text())
    try:
        assert compose_cfg("hydra/launcher=slurm", return_hydra_config=True).hydra.launcher.partition == "gpu"
        r = subprocess.run(["git", "check-ignore", "-q", str(local)], cwd=REPO)
        assert r.returncode == 0  # the cluster's settings never reach the repository
    finally:
        local.unlink()
    workstation = compose_cfg("hydra/launcher=workstation", return_hydra_config=True).hydra.launcher
    assert workstation._target_.endswith("LocalLauncher")


def test_slurm_preset_documents_every_key_and_runs_without_gpus():
    """lstsd/conf/hydra/launcher/slurm.yaml: a comment above every key it sets; gpus_per_node=0 composes (the SLURM
    tests run it on a cluster, make test-slurm); the site example shows partition, account, QOS and constraint."""
    import re

    from helpers import compose_cfg

    preset = REPO / "lstsd" / "conf" / "hydra" / "launcher" / "slurm.yaml"
    lines = preset.read_text().splitlines()
    keys = [(i, m[1]) for i, line in enumerate(lines) if (m := re.match(r"^(\w+):", line))]
    assert {k for _, k in keys} >= {"_target_", "timeout_min", "gpus_per_node", "max_num_timeout", "signal_delay_s"}
    for i, key in keys:
        assert lines[i - 1].startswith("#"), key
        assert not lines[i - 1].startswith("# @package"), key
    launcher = compose_cfg("hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0",
                           return_hydra_config=True).hydra.launcher
    assert launcher._target_ == "hydra_plugins.lstsd_sweeper.lstsd_launcher.LstsdSlurmLauncher"
    assert launcher.gpus_per_node == 0
    assert launcher.additional_parameters == {}
    from hydra_plugins.lstsd_sweeper.lstsd_launcher import LstsdSlurmLauncher  # importable, a Hydra launcher
    from hydra.plugins.launcher import Launcher

    assert issubclass(LstsdSlurmLauncher, Launcher)
    example = (REPO / "lstsd" / "conf" / "hydra" / "launcher" / "site" / "slurm_local.yaml.example").read_text()
    for key in ("partition", "account", "qos", "constraint"):
        assert re.search(rf"^#? ?{key}: \S+ +# --{key}\b", example, re.M), key


@pytest.mark.slow  # covered in the default suite by its faster neighbours; make test-slow runs it
def test_optuna_hparams_search_maximises_validation_accuracy_and_resumes(tmp_path):
    """experiment=hparams_search: each trial returns its final validation accuracy (a held-out split, not the test
    set), the study's best is the best of them, and a re-launch replays the finished trials without training."""
    args = ("experiment=hparams_search", "dataset=digits", "model=digits_cnn", "trainer.epochs=2",
            "hydra.sweeper.n_trials=3", "method.minigen_epochs=choice(1,2)", f"hydra.sweep.dir={tmp_path}")
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    trials = sorted(tmp_path.glob("*/results.json"))
    results = [json.loads(f.read_text()) for f in trials]
    methods = [OmegaConf.load(f.parent / ".hydra" / "config.yaml").method for f in trials]
    assert len(results) == 3
    assert all(m.minigen_epochs in (1, 2) for m in methods)
    assert all(0.5 <= m.lambda_short <= 8.0 and 0.3 <= m.lambda_long <= 4.8 for m in methods)
    assert len({m.lambda_short for m in methods}) == 3
    best = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert best.best_value == max(res["val_acc_final"] for res in results)
    winners = [m.lambda_short for m, res in zip(methods, results) if res["val_acc_final"] == best.best_value]
    assert best.best_params["method.lambda_short"] in winners
    stamps = [f.stat().st_mtime_ns for f in trials]
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert sorted(tmp_path.glob("*/results.json")) == trials
    assert [f.stat().st_mtime_ns for f in trials] == stamps
    assert OmegaConf.load(tmp_path / "optimization_results.yaml") == best


def test_method_keys_go_to_the_methods_that_have_them():
    from lstsd.errors import ConfigError
    from lstsd.launch.sweeper import as_one_value_sweeps, fit_to_methods

    has = {("lstsd", "method.minigen_epochs"), ("lstsd", "method.lambda_long")}
    jobs = [["method=vanilla", "method.minigen_epochs=1", "seed=0"], ["method=vanilla", "method.minigen_epochs=6",
                                                                     "seed=0"],
            ["method=lstsd", "method.minigen_epochs=1", "seed=0"], ["method=lstsd", "method.minigen_epochs=6", "seed=0"]]
    assert fit_to_methods(jobs, lambda m, k: (m, k) in has) == [
        ["method=vanilla", "seed=0"], ["method=lstsd", "method.minigen_epochs=1", "seed=0"],
        ["method=lstsd", "method.minigen_epochs=6", "seed=0"]]  # vanilla once, in the sweep's order
    with pytest.raises(ConfigError, match=r"method.nope is invalid: none of the swept methods \(lstsd, vanilla\) "
                                          r"has it"):
        fit_to_methods([["method=vanilla", "method.nope=1"], ["method=lstsd", "method.nope=1"]], lambda m, k: False)
    argv = ["-m", "method=vanilla,lstsd", "method.minigen_epochs=1", "+method.x=2", "method.lambda_long=1,2"]
    assert as_one_value_sweeps(argv, multirun=True) == ["-m", "method=vanilla,lstsd", "method.minigen_epochs=choice(1)",
                                                         "+method.x=2", "method.lambda_long=1,2"]
    assert as_one_value_sweeps(argv, multirun=False) == argv


def test_a_sweep_over_methods_with_a_key_only_one_has(tmp_path):
    r = run_cli("-m", "method=vanilla,lstsd", "method.minigen_epochs=1", "trainer.epochs=2",
                f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "method.minigen_epochs=1,method=lstsd,trainer.epochs=2", "method=vanilla,trainer.epochs=2"]
    assert f"sweep of 2 jobs into {tmp_path}" in r.stdout + r.stderr
    assert "Missing" not in r.stdout  # the report expects exactly the jobs the sweeper launched (jobs.yaml)


def test_a_failed_job_never_hides_the_others(tmp_path):
    """optim.lr=1e30 diverges: its job fails (non-finite loss) while the other completes; the table marks the
    failure with its error line and the launcher exits 1."""
    r = run_cli("-m", "optim.lr=1e30,0.01", "trainer.epochs=1", f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 1, r.stderr
    ok = json.loads((tmp_path / "optim.lr=0.01,trainer.epochs=1" / "results.json").read_text())
    bad = json.loads((tmp_path / "optim.lr=1e+30,trainer.epochs=1" / "results.json").read_text())
    assert ok["status"] == "completed"
    assert bad["status"] == "failed"
    assert "non-finite loss" in bad["error"]
    table = r.stdout[r.stdout.index("| experiment"):]
    assert "| optim.lr=1e+30 | 0 | acc | - | - | - | - | 1 failed |" in table  # paper unstated: 94 and "| optim.lr=0.01 | 1 | acc |" in table
    assert "| final | best | final top5 | paper unstated | not completed |" in table  # MNIST-1D has 10 classes: top-5 beside top-1
    assert "Failed (1 runs):" in table
    assert "non-finite loss at step" in table


def test_a_bad_value_in_any_job_stops_the_sweep_before_training(tmp_path):
    r = run_cli("-m", "method=vanilla,lstsd", "method.lambda_long=-1", "trainer.epochs=1",
                f"hydra.sweep.dir={tmp_path}")
    lines = [l for l in r.stderr.splitlines() if l.strip() and not l.startswith("[")]
    assert r.returncode == 2
    assert (lines == ["lstsd: error: method.lambda_long=-1.0 is invalid: allowed a number >= 0 "
                                           "(in the job method=lstsd method.lambda_long=-1 trainer.epochs=1)"])
    assert not list(tmp_path.glob("*/metrics.jsonl"))  # nothing trained


def test_the_baselines_grid_gives_each_method_its_own_weights():
    """experiment=baselines_grid sweeps three methods with two weight keys: each method gets only its own."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from helpers import CONFIG_DIR
    from lstsd.launch.sweeper import method_of, sweep_jobs

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        master = compose("config", ["experiment=baselines_grid"], return_hydra_config=True)
        params = [f"{k}={v}" for k, v in master.hydra.sweeper.params.items()]
        jobs = sweep_jobs(params, GlobalHydra.instance().config_loader(), master)
    counts = {m: sum(method_of(j) == m for j in jobs) for m in ("mean_teacher", "temporal_ensembling", "sd")}
    assert counts == {"mean_teacher": 7, "temporal_ensembling": 7, "sd": 5}
    assert len(jobs) == 19
    assert all(not any(o.startswith("method.lambda_teacher") for o in j) for j in jobs if method_of(j) != "sd")


def test_a_sweep_of_jobs_side_by_side_prints_a_line_per_job_and_keeps_epochs_in_the_logs(tmp_path):
    """experiment=demo's jobs share the console: each finished job says how far the sweep is; their epoch lines
    go to each job's own log only."""
    r = run_cli("-m", "experiment=demo", "method=vanilla,lstsd", "seed=0", "trainer.epochs=2", "report.compare=[]",
                f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    lines = [line.split(" - ", 1)[-1] for line in r.stdout.splitlines()]
    done = sorted(line for line in lines if line.startswith(("[1/", "[2/")))
    assert [line[:5] for line in done] == ["[1/2]", "[2/2]"]
    assert any("method=lstsd seed=0 trainer.epochs=2: " in line and " final (" in line and "; 0 failed; " in line
               for line in done)
    assert not any("epoch=1 " in line for line in lines)  # not on the console
    assert "epoch=1 " in (tmp_path / "method=lstsd,seed=0,trainer.epochs=2" / "cli.log").read_text()


def test_cfg_of_an_experiment_that_sweeps_says_its_axes_and_how_to_narrow_it():
    from lstsd.cli import sweep_axes

    assert sweep_axes(["experiment=demo"]) == (
        "experiment=demo: a sweep of 45 jobs = method x 9, seed x 5; --cfg shows one job's configuration; narrow "
        "the sweep with: lstsd -m experiment=demo method=lstsd_single seed=0")
    assert sweep_axes(["experiment=mnist1d"]) is None  # one run


@pytest.mark.parametrize("argv,multirun", [
    (["-m", "seed=0,1"], True),
    (["experiment=demo"], True),
    (["experiment=mnist1d"], False),
    (["experiment=demo", "seed=0,1"], True),  # a sweep's value, run as the experiment's sweep
    (["experiment=hparams_search", "method.minigen_epochs=choice(1,2)"], True),
    (["experiment=demo", "method.minigen_epochs=3"], True),
    (["seed=0,1"], False),  # no sweep asked for: Hydra's own error says that it needs --multirun
    (["method=lstsd", "method.minigen_epochs=3"], False),
])
def test_a_launch_is_a_sweep_when_asked_or_when_its_experiment_sweeps(argv, multirun):
    from lstsd import cli
    from lstsd.config import compose

    compose.setup()
    assert cli.is_multirun(argv) is multirun
