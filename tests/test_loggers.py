"""The trackers of the logger group: tensorboard and csv read back from the run folder, several at once, a
resumed run that writes no epoch twice, wandb's default group (a single run, a sweep), and bad logger names."""
import csv
import json
import shutil
from pathlib import Path

import pytest

from helpers import TINY, compose_cfg, read_metrics, run_cli, tiny
from lstsd.training.run import run
from lstsd.training.trackers import tag


class FakeWandbRun:
    """What wandb.init returns, as far as lstsd uses it: what was logged, the summary and the exit code."""

    def __init__(self, kwargs):
        self.kwargs, self.logged, self.summary, self.exit_code = kwargs, [], {}, None

    def log(self, values, step):
        self.logged.append((step, values))

    def define_metric(self, name, step_metric=None):
        self.kwargs.setdefault("metrics", []).append((name, step_metric))

    def finish(self, exit_code=0):
        self.exit_code = exit_code


@pytest.fixture
def wandb_runs(monkeypatch):
    """wandb.init replaced: the runs it opened, each with the keyword arguments it was given (nothing reaches
    wandb's servers or its service process)."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "disabled")
    runs = []
    monkeypatch.setattr(wandb, "init", lambda **kwargs: runs.append(FakeWandbRun(kwargs)) or runs[-1])
    return runs


def tensorboard_scalars(run_dir: Path) -> dict:
    """tag -> [(step, value)] of every event file under <run_dir>/tensorboard/, as TensorBoard shows them (steps a
    resumed run purged are gone)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {name: [(e.step, e.value) for e in acc.Scalars(name)] for name in acc.Tags()["scalars"]}


def read_csv(run_dir: Path) -> tuple[list, list[dict]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, [{k: float(v) for k, v in row.items()} for row in reader]


def jsonl_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_run_writes_each_epoch_as_scalars_grouped_by_split(tmp_path):
    run(tiny("logger=tensorboard"), tmp_path)
    scalars, rows = tensorboard_scalars(tmp_path), jsonl_rows(tmp_path)
    keys = {tag(k): k for k in rows[0] if k != "epoch"}  # train/loss, train/loss_ce, test/acc, train/lr, ...
    assert set(scalars) == set(keys)
    assert {"train/loss", "train/lr", "test/acc", "time/seconds"} <= set(scalars)
    for name, points in scalars.items():
        assert [step for step, _ in points] == [1, 2, 3]
        assert [v for _, v in points] == pytest.approx([r[keys[name]] for r in rows], rel=1e-6)  # float32
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1  # one run
    assert not (tmp_path / "metrics.csv").exists()


def test_csv_run_one_numeric_row_per_epoch(tmp_path):
    run(tiny("logger=csv"), tmp_path)
    columns, rows = read_csv(tmp_path)
    expected = jsonl_rows(tmp_path)
    assert columns == list(expected[0])  # the keys of metrics.jsonl, in their order
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows == expected  # every cell a number, the same as metrics.jsonl's (full precision)
    assert not (tmp_path / "tensorboard").exists()


def test_resumed_run_writes_no_epoch_twice(tmp_path):
    """A run that logged epoch 3 but whose checkpoint holds epoch 2 (it stopped in between) trains epoch 3 again:
    metrics.csv and the event files then hold epochs 1, 2, 3 once each, as metrics.jsonl does."""
    run(tiny("logger=[csv,tensorboard]", "schedule=constant", "trainer.epochs=2"), tmp_path)
    shutil.copy(tmp_path / "last.pt", tmp_path / "epoch2.pt")
    run(tiny("logger=[csv,tensorboard]", "schedule=constant", "trainer.epochs=3"), tmp_path)  # extended to epoch 3
    shutil.move(tmp_path / "epoch2.pt", tmp_path / "last.pt")  # the checkpoint before epoch 3
    (tmp_path / "results.json").unlink()
    run(tiny("logger=[csv,tensorboard]", "schedule=constant", "trainer.epochs=3"), tmp_path)

    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    _, rows = read_csv(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows == jsonl_rows(tmp_path)
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 3  # one file per launch
    for name, points in tensorboard_scalars(tmp_path).items():
        assert [step for step, _ in points] == [1, 2, 3], name


def test_tracker_turned_on_later_gets_the_earlier_epochs(tmp_path):
    """logger=[csv,tensorboard] added when a run of 2 epochs is extended to 3: both hold epochs 1 to 3, from
    metrics.jsonl."""
    run(tiny("schedule=constant", "trainer.epochs=2"), tmp_path)
    run(tiny("logger=[csv,tensorboard]", "schedule=constant", "trainer.epochs=3"), tmp_path)
    _, rows = read_csv(tmp_path)
    assert rows == jsonl_rows(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [s for s, _ in tensorboard_scalars(tmp_path)["test/acc"]] == [1, 2, 3]


def test_wandb_and_tensorboard_at_once(tmp_path, wandb_runs):
    cfg = tiny("logger=[wandb,tensorboard]", "logger.project=p", "logger.tags=[a]")
    assert (cfg.logger.wandb, cfg.logger.tensorboard, cfg.logger.csv) == (True, True, False)
    results = run(cfg, tmp_path)
    (wb,) = wandb_runs
    assert wb.kwargs["project"] == "p"
    assert wb.kwargs["tags"] == ["a"]  # wandb's keys still apply
    assert [step for step, _ in wb.logged] == [1, 2, 3]
    assert wb.exit_code == 0
    assert wb.summary["test_acc_final"] == results["test_acc_final"]
    assert [s for s, _ in tensorboard_scalars(tmp_path)["test/acc"]] == [1, 2, 3]
    assert not (tmp_path / "metrics.csv").exists()


def test_logger_options_merge_into_tracker_switches(tmp_path):
    from lstsd.config import validate

    assert validate(compose_cfg("logger=none")).logger.trackers() == ()
    assert validate(compose_cfg()).logger.trackers() == ()
    assert validate(compose_cfg("logger=[csv,tensorboard,wandb]")).logger.trackers() == ("wandb", "tensorboard",
                                                                                          "csv")
    assert validate(compose_cfg("logger=csv")).logger.trackers() == ("csv",)
    assert validate(compose_cfg("logger=wandb", "logger.tensorboard=true")).logger.trackers() == ("wandb",
                                                                                                 "tensorboard")


def test_wandb_group_of_a_single_run(tmp_path, wandb_runs):
    run_dir = tmp_path / "2026-01-02_03-04-05"
    run(tiny("logger=wandb", "name=single", "trainer.epochs=1"), run_dir)
    run(tiny("logger=wandb", "name=single", "trainer.epochs=1", "logger.group=mine"),
        tmp_path / "other")
    assert [r.kwargs["group"] for r in wandb_runs] == ["single/2026-01-02_03-04-05", "mine"]  # logger.group wins
    assert wandb_runs[0].kwargs["name"] == "2026-01-02_03-04-05"
    assert wandb_runs[0].kwargs["job_type"] == "vanilla"


def test_wandb_group_of_a_sweep_folder(tmp_path, wandb_runs):
    """A job folder inside a sweep folder (one holding Hydra's multirun.yaml), e.g. a job launched again on its own
    with hydra.run.dir=<sweep>/<job>: the sweep's group; another sweep's jobs get another group."""
    for sweep in ("2026-01-02_03-04-05_abc123", "2026-01-02_03-04-05_def456"):
        (tmp_path / sweep).mkdir()
        (tmp_path / sweep / "multirun.yaml").write_text("{}\n")
        for seed in (0, 1):
            run(tiny("logger=wandb", "name=sw", "trainer.epochs=1", f"seed={seed}"),
                tmp_path / sweep / f"seed={seed}")
    assert [r.kwargs["group"] for r in wandb_runs] == ["sw/2026-01-02_03-04-05_abc123"] * 2 + \
        ["sw/2026-01-02_03-04-05_def456"] * 2
    assert [r.kwargs["name"] for r in wandb_runs] == ["seed=0", "seed=1"] * 2


def test_sweep_folder_from_hydra_config(tmp_path, monkeypatch):
    """In a job of a multirun, Hydra's hydra.sweep.dir (launch time and unique id in its default name) is the
    sweep folder, whether or not multirun.yaml is there yet; a folder outside it (a stale HydraConfig) is not."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from lstsd.training.trackers import default_group, sweep_folder

    cfg = compose_cfg("name=hc", return_hydra_config=True)
    default_name = Path(str(cfg.hydra.sweep.dir)).name  # <time>_<id>
    assert Path(str(cfg.hydra.sweep.dir)).parent.name == "hc"
    assert len(default_name.rsplit("_", 1)[1]) == 6
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = str(tmp_path / default_name)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # restored afterwards
    HydraConfig.instance().set_config(cfg)
    job = tmp_path / default_name / "method=lstsd,seed=1"
    assert sweep_folder(job) == tmp_path / default_name
    assert default_group(compose_cfg("name=hc"), job) == f"hc/{default_name}"
    assert sweep_folder(tmp_path / "elsewhere") is None


BAD_NAMES = [
    (["logger=tensorbored"], "logger=tensorbored is invalid: allowed one of csv, none, tensorboard, wandb"),
    (["logger=[wandb,nope]"], "logger=nope is invalid: allowed one of csv, none, tensorboard, wandb"),  # in a list
    (["logger.name=csv"], "logger.name is not a configuration key"),  # one way to turn a tracker on: logger=csv
]


@pytest.mark.parametrize("args,fragment", BAD_NAMES)
def test_bad_logger_name_exits_2(refused, args, fragment):
    """An unknown tracker, alone or in a list, or the removed logger.name: exit code 2 and one line before any training (in
    process, the console script's own main, as tests/test_config_cli.py does)."""
    assert fragment in refused(*args, "trainer.epochs=1")


def test_cli_multirun_with_two_trackers(tmp_path):
    """``logger=[csv,tensorboard]`` in a sweep: every job writes both, and the logger choice stays out of the job
    folders' names."""
    tiny = [a for a in TINY if not a.startswith("trainer.epochs=")]
    r = run_cli("-m", "logger=[csv,tensorboard]", "seed=0,1", *tiny, "trainer.epochs=2", f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(jobs) == 2, jobs
    assert not any("logger" in job.name for job in jobs), jobs
    for job in jobs:
        _, rows = read_csv(job)
        assert [r_["epoch"] for r_ in rows] == [1, 2]
        assert [s for s, _ in tensorboard_scalars(job)["train/loss"]] == [1, 2]


def test_tensorboard_hparams_hold_the_settings_and_final_scores(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run(tiny("logger=tensorboard", "method=lstsd", "method.minigen_epochs=1"), tmp_path)
    acc = EventAccumulator(str(tmp_path / "tensorboard" / "hparams"))  # its own folder: never purged
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert info.hparams["method.lambda_long"].number_value == 2.4
    assert info.hparams["method.name"].string_value == "lstsd"
    assert "hparams/test_acc_final" in acc.Tags()["scalars"]


def test_a_resumed_run_continues_its_wandb_run(tmp_path, wandb_runs):
    """A run stopped and relaunched (a requeued job) opens the same wandb run again: the id kept in its folder,
    resume allowed; the epoch is the charts' axis."""
    from helpers import CrashAt

    with pytest.raises(KeyboardInterrupt):
        run(tiny("logger=wandb", "trainer.epochs=3"), tmp_path, callbacks=[CrashAt(2)])
    run(tiny("logger=wandb", "trainer.epochs=3"), tmp_path)
    first, second = wandb_runs
    assert first.kwargs["id"] == second.kwargs["id"] == (tmp_path / "wandb_id").read_text().strip()
    assert first.kwargs["resume"] == second.kwargs["resume"] == "allow"
    assert [step for step, _ in first.logged + second.logged] == [1, 2, 3]
    assert ("*", "epoch") in second.kwargs["metrics"]
