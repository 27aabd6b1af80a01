"""Local launchers: ``hydra/launcher=workstation`` runs at most ``max_parallel`` jobs at a time with a thread count
(and GPUs) per job that fits the machine, ``experiment=demo``'s joblib launcher gets the same count, a failed or
killed job never hides the others, and every sweep says where it goes as it starts."""
import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import TINY, compose_cfg, run_cli
from lstsd import machine
from lstsd.launch.workstation import GpuPool, job_return, run_at_most
from lstsd.machine import plan, visible_gpus
from lstsd.errors import ConfigError

CORES = machine.machine_cores()
WORKSTATION = ("hydra/launcher=workstation", "hydra.launcher.timeout_min=10")


def run_intervals(sweep_dir: Path) -> dict[str, tuple[int, int]]:
    """Each run of a sweep folder: from its ``.hydra/config.yaml`` (written as it starts) to its ``results.json``
    (written as it ends, completed or failed), in nanoseconds."""
    return {d.name: ((d / ".hydra" / "config.yaml").stat().st_mtime_ns, (d / "results.json").stat().st_mtime_ns)
            for d in sweep_dir.iterdir() if (d / "results.json").exists()}


def most_at_once(intervals) -> int:
    """The largest number of the intervals that overlap at one time."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    now = most = 0
    for _, step in events:  # at a tie an end comes first (-1 < 1): touching intervals do not overlap
        now += step
        most = max(most, now)
    return most


def test_the_policy_how_many_jobs_at_once_and_how_many_threads_each():
    cpu = dict(cores=16, gpus=[])
    assert plan([None] * 45, **cpu)[:3] == (16, 1, 0)  # one thread per job, one job per core
    assert plan([None] * 2, **cpu)[:3] == (16, 8, 0)  # fewer jobs than cores: the cores shared among them
    assert plan([4] * 9, **cpu)[:2] == (4, 4)  # trainer.threads=4: 4 jobs at a time
    assert plan([None] * 9, cpus_per_task=2, **cpu)[:2] == (8, 2)
    assert plan([None] * 9, max_parallel=3, **cpu)[:2] == (3, 5)  # 3 at a time: 16 // 3 threads each
    assert plan([None] * 9, max_parallel=40, **cpu)[:2] == (40, 1)  # never fewer than one thread
    gpus = dict(cores=32, gpus=["0", "1", "2", "3"])
    assert plan([None] * 9, **gpus) == (4, 8, 1, ("0", "1", "2", "3"), 32)  # one job per GPU, 8 threads each
    assert plan([None] * 9, gpus_per_node=2, **gpus)[:3] == (2, 16, 2)
    assert plan([None] * 45, device="cpu", **gpus)[:3] == (32, 1, 0)  # trainer.device=cpu: the GPUs do not count
    assert plan([None] * 45, gpus_per_node=0, **gpus)[:3] == (32, 1, 0)
    with pytest.raises(ConfigError, match=r"hydra.launcher.gpus_per_node=2 is invalid: the jobs can see 1 GPU"):
        plan([None], gpus_per_node=2, cores=8, gpus=["0"])
    with pytest.raises(ConfigError, match=r"hydra.launcher.max_parallel=0 is invalid"):
        plan([None], max_parallel=0, **cpu)


def test_gpus_are_counted_without_torch(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-8a1f,-1,3")
    assert visible_gpus() == ["2", "GPU-8a1f"]  # up to the first invalid entry, as CUDA reads it
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    for i in range(2):
        (tmp_path / f"0000:0{i}:00.0").mkdir()
    monkeypatch.setattr(machine, "NVIDIA_GPUS", tmp_path)  # the driver's /proc/driver/nvidia/gpus
    assert visible_gpus() == ["0", "1"]
    monkeypatch.setattr(machine, "NVIDIA_GPUS", tmp_path / "absent")  # no NVIDIA driver
    assert visible_gpus() == []


def test_demo_runs_as_many_jobs_at_once_as_the_workstation_launcher(monkeypatch):
    """experiment=demo keeps joblib (one process per worker, not per job) with n_jobs from the same policy: one
    job per core at one thread each here; one per GPU where there are GPUs."""
    from lstsd.config.compose import parallel_jobs

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    demo = compose_cfg("experiment=demo", return_hydra_config=True)
    assert demo.trainer.threads == 1
    assert demo.hydra.launcher.n_jobs == CORES == plan([1] * 45).max_parallel
    assert parallel_jobs(None) == 1  # null threads: a job uses every core
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert parallel_jobs(1) == 3
    assert parallel_jobs(1, "cpu") == CORES


def test_the_workstation_preset_and_its_schema():
    launcher = compose_cfg("hydra/launcher=workstation", return_hydra_config=True).hydra.launcher
    assert launcher._target_ == "hydra_plugins.lstsd_sweeper.lstsd_launcher.LstsdLocalLauncher"
    assert (launcher.max_parallel, launcher.cpus_per_task, launcher.gpus_per_node) == (None, None, None)
    with pytest.raises(Exception, match="max_paralel"):
        compose_cfg("hydra/launcher=workstation", "hydra.launcher.max_paralel=2", return_hydra_config=True)


def test_never_more_than_max_parallel_jobs_each_started_as_soon_as_one_ends():
    """The scheduler alone, with jobs that end after a given number of polls: starts in order, at most 2 running,
    a GPU each while there are enough, every job finished once."""
    lengths = [5, 1, 1, 3, 2, 1]
    running, most, order, finished = set(), 0, [], []
    pool = GpuPool(["0", "1"], per_job=1)
    polls = {}

    def start(i):
        nonlocal most
        running.add(i)
        most = max(most, len(running))
        order.append(i)
        polls[i] = 0
        return i, pool.take()

    def ended(handle):
        polls[handle[0]] += 1
        return polls[handle[0]] >= lengths[handle[0]]

    def finish(i, handle):
        running.remove(i)
        pool.give_back(handle[1])
        finished.append(i)

    run_at_most(len(lengths), 2, start, ended, finish, poll_s=0)
    assert most == 2
    assert order == sorted(order)
    assert sorted(finished) == list(range(6))
    assert not running
    assert finished[:2] == [1, 2]  # the short jobs go by while job 0 runs
    assert pool.use == {"0": 0, "1": 0}
    shared = GpuPool(["0", "1"], per_job=1)
    assert [shared.take() for _ in range(4)] == [["0"], ["1"], ["0"], ["1"]]  # more jobs than GPUs: shared evenly


def test_a_job_that_ended_without_a_result_is_a_failed_result():
    """submitit raises for a job killed or one that raised outside Hydra's job wrapper; the launcher gets a failed
    JobReturn instead, with how it ended and where its log is, and goes on with the others."""
    from hydra.core.utils import JobStatus
    from submitit.core.utils import FailedJobError, UncompletedJobError

    class Job:
        paths = type("Paths", (), {"stdout": Path("j_0_log.out"), "stderr": Path("j_0_log.err")})

        def __init__(self, error):
            self.error = error

        def results(self):
            raise self.error

    killed = job_return(Job(UncompletedJobError("Job 12 (task: 0) has not produced any output")), ["seed=1"], 3)
    assert killed.status == JobStatus.FAILED
    assert killed.overrides == ["seed=1"]
    assert str(killed._return_value) == "job #3 ended without a result (killed, or its process exited early); " \
                                        "its log: j_0_log.out"
    trace = "Job (task=0) failed during processing with trace:\n" + "-" * 22 + \
            "\nTraceback (most recent call last):\n  ...\nMemoryError: out of memory\n" + "-" * 22 + "\nmore"
    raised = job_return(Job(FailedJobError(trace)), ["seed=2"], 4)
    assert str(raised._return_value) == "job #4 failed outside the run: MemoryError: out of memory; its log: " \
                                        "j_0_log.err"


def test_at_most_max_parallel_jobs_with_their_threads_and_a_failed_job_never_hides_the_others(tmp_path):
    """max_parallel=2 and 3 jobs, one of which diverges (non-finite loss): never more than 2 runs at a time, the
    third started only once one of the others has ended; each job gets the cores divided by the 2 jobs running
    together as its trainer.threads; the sweep runs to the end, the table marks the failure with its error line,
    and the exit code is 1."""
    r = run_cli("-m", *TINY, *WORKSTATION, "hydra.launcher.max_parallel=2", "trainer.epochs=1",
                "optim.lr=1e30,0.05,0.02", f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 1, r.stderr[-3000:]
    assert f"lstsd: sweep of 3 jobs into {tmp_path}" in r.stdout.splitlines()
    runs = run_intervals(tmp_path)
    assert len(runs) == 3
    assert most_at_once(runs.values()) <= 2
    assert all(OmegaConf.load(tmp_path / d / ".hydra" / "config.yaml").trainer.threads == max(1, CORES // 2)
               for d in runs)
    bad = json.loads(next(tmp_path.glob("*optim.lr=1e+30*/results.json")).read_text())
    assert bad["status"] == "failed"
    assert "non-finite loss" in bad["error"]
    table = r.stdout[r.stdout.index("| experiment"):]
    assert "| optim.lr=1e+30 | 0 | acc | - | - | 1 failed |" in table
    assert "| optim.lr=0.05 | 1 | acc |" in table
    assert "| optim.lr=0.02 | 1 | acc |" in table
    assert "Failed (1 runs):" in table
    assert "TrainingError: non-finite loss at step" in table
    assert "Traceback" not in r.stdout + r.stderr
    # each job's line on the launching console as it ends, numbered in the order they end (their own consoles
    # are their log files)
    lines = re.findall(r"\[(\d)/3\] .*?(optim\.lr=\S+) .*?: (failed \(TrainingError: non-finite loss|"
                       r"\d+\.\d\d final)", r.stdout + r.stderr)
    assert sorted(n for n, _, _ in lines) == ["1", "2", "3"], r.stdout + r.stderr
    ended = {lr: score for _, lr, score in lines}
    assert ended["optim.lr=1e+30"].startswith("failed") and ended["optim.lr=0.05"].endswith(" final")
    assert ended["optim.lr=0.02"].endswith(" final")


def test_every_sweep_says_where_it_goes_and_how_many_jobs(tmp_path):
    r = run_cli("-m", *TINY, "trainer.epochs=1", f"hydra.sweep.dir={tmp_path}")  # the basic launcher
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines()[0] == f"lstsd: sweep of 1 job into {tmp_path}"
