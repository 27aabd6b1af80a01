"""``hydra/launcher=slurm`` (submitit) for real, on the throwaway single-node cluster of tools/slurm/cluster.sh
(accounting disabled): an array throttled by array_parallelism, preemption and time limits (checkpoint inside the
epoch, requeue, exact resume, max_num_timeout), a failing job, re-launches, and DDP inside a job. Runs are small
MNIST-1D ones (a few seconds of training; each job also pays ~10 s of Python start-up)."""
import pickle
import re
import subprocess
import sys
import time

import pytest

from .common import (FAST, REPO, RESUMED, SLURM, QueueWatch, checkpointed_epochs, environment, job_dirs,
                     job_spans, lstsd, metrics, results, run_log, slurm_job_ids, sweep, untimed, wait_until)

SMALL = ("dataset.num_samples=1000",)  # 800 training sequences: 8 steps an epoch
LONG = ("dataset.batch_size=25",)  # the full 4,000 training sequences in 160 steps: about 0.15 s an epoch


def sacct_said_at_most_once(text: str) -> None:
    """The cluster has no accounting: submitit's sacct polls fail, and the preset's launcher says so once per
    sweep (its warning quotes sacct's error) instead of a "Bypassing sacct error" (and sacct's own stderr line) on
    every poll."""
    assert "Bypassing sacct error" not in text, text[-3000:]
    assert text.count("sacct failed (Slurm accounting storage is disabled): this sweep reads the job states from "
                      "squeue instead") == 1, text[-3000:]
    assert text.count("accounting storage is disabled") == 1, text[-3000:]


@pytest.fixture(scope="module")
def four_runs(slurm, tmp_path_factory):
    """A sweep of 4 runs as one array, at most 2 at a time: the launcher's result, the queue seen meanwhile."""
    sweep_dir = tmp_path_factory.mktemp("four")
    watch = QueueWatch(slurm)
    watch.start()
    try:
        r = sweep(slurm, sweep_dir, *SMALL, "trainer.epochs=2", "seed=0,1,2,3", "hydra.launcher.array_parallelism=2")
    finally:
        watch.stop.set()
        watch.join()
    return sweep_dir, r, watch


@pytest.mark.timeout(60)
def test_cluster_is_private_and_idle(slurm):
    conf = (lambda p: open(p).read())(slurm["SLURM_CONF"])
    folder = slurm["LSTSD_SLURM_DIR"]
    for key in ("StateSaveLocation", "SlurmdSpoolDir", "SlurmctldPidFile", "SlurmdPidFile", "SlurmctldLogFile",
                "SlurmdLogFile", "PlugStackConfig"):
        assert re.search(rf"^{key}={re.escape(folder)}/", conf, re.M), key
    assert f"AuthInfo=socket={folder}/munge/munge.socket.2" in conf
    ports = [int(p) for p in re.findall(r"^Slurm(?:ctld|d)Port=(\d+)$", conf, re.M)]
    assert len(ports) == 2
    assert not {6817, 6818} & set(ports)  # not a real cluster's ports
    r = subprocess.run(["sinfo", "--noheader", "--format=%P %T %D"], env=environment(slurm), capture_output=True,
                       text=True, timeout=30)
    assert r.stdout.split() == ["debug*", "idle", "1"], r.stdout + r.stderr


@pytest.mark.timeout(60)
def test_jobs_run_this_checkout_with_this_python(slurm):
    """A job step sees the launching environment (sbatch and srun export it): the same interpreter, and the
    lstsd of this checkout."""
    code = "import sys, lstsd; print(sys.executable); print(lstsd.__file__)"
    r = subprocess.run(["srun", "--ntasks=1", "--cpus-per-task=1", "--mem=100M", "--time=1", sys.executable, "-c",
                        code], env=environment(slurm), capture_output=True, text=True, timeout=50)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == [sys.executable, str(REPO / "lstsd" / "__init__.py")], r.stdout + r.stderr


@pytest.mark.timeout(240)
def test_array_of_four_runs_never_more_than_two_at_once(four_runs):
    sweep_dir, r, watch = four_runs
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = job_dirs(sweep_dir)
    assert len(runs) == 4
    assert all(results(d)["status"] == "completed" for d in runs)
    script = next(sweep_dir.glob(".submitit/*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-3%2" in script
    assert "--gpus-per-node=0" in script  # one array, throttled
    # the queue: 2 running at once at most, and the others held back by the array's limit (the node has more CPUs)
    assert watch.polls > 10, (watch.max_running, watch.polls)
    assert watch.max_running == 2, (watch.max_running, watch.polls)
    assert "JobArrayTaskLimit" in watch.reasons, watch.reasons
    # the jobs' own start and end times (submitit's log in each allocation): 2 at once, never 3
    spans = list(job_spans(sweep_dir).values())
    assert len(spans) == 4, spans
    assert max(sum(a <= t < b for a, b in spans) for t, _ in spans) == 2, spans
    assert "| default | mnist1d | mnist1d_cnn | vanilla | 4 | acc |" in r.stdout  # the end-of-sweep table
    sacct_said_at_most_once(r.stdout + r.stderr)
    # each job's line on the launching console as it ends (read from its results.json)
    ended = re.findall(r"\[(\d)/4\] .*seed=(\d).*: \d+\.\d\d final", r.stdout + r.stderr)
    assert sorted(n for n, _ in ended) == ["1", "2", "3", "4"], r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(seed for _, seed in ended) == ["0", "1", "2", "3"], ended


@pytest.mark.timeout(240)
def test_relaunched_finished_sweep_skips_every_job(slurm, four_runs):
    sweep_dir, first, _ = four_runs
    assert first.returncode == 0
    runs = job_dirs(sweep_dir)
    stamps = {d: ((d / "results.json").stat().st_mtime_ns, (d / "last.pt").stat().st_mtime_ns) for d in runs}
    before = {d: results(d) for d in runs}
    r = sweep(slurm, sweep_dir, *SMALL, "trainer.epochs=2", "seed=0,1,2,3", "hydra.launcher.array_parallelism=2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert job_dirs(sweep_dir) == runs
    for d in runs:  # nothing trained again, nothing rewritten
        assert ((d / "results.json").stat().st_mtime_ns, (d / "last.pt").stat().st_mtime_ns) == stamps[d]
        assert results(d) == before[d]
        assert run_log(d).count("already holds a completed run: skipped") == 1
    assert len(slurm_job_ids(sweep_dir)) == 8  # the skips ran as jobs of a second array
    assert "| default | mnist1d | mnist1d_cnn | vanilla | 4 | acc |" in r.stdout
    sacct_said_at_most_once(r.stdout + r.stderr)


@pytest.mark.timeout(300)
def test_preempted_run_is_requeued_and_resumes_exactly(slurm, tmp_path):
    # batch 5: the 4,000 training sequences in 800 steps, about 0.5 s an epoch, long enough for the signal to land
    # inside one however late scancel delivers it
    steps, args = 800, ("dataset.batch_size=5", "trainer.epochs=10", "seed=0")
    reference = lstsd(slurm, *args, *FAST, f"hydra.run.dir={tmp_path / 'reference'}", log=tmp_path / "reference.out")
    sweep_dir = tmp_path / "sweep"
    launcher = lstsd(slurm, "-m", *SLURM, *FAST, *args, "hydra.launcher.timeout_min=60",  # < 80 %: a preemption
                     f"hydra.sweep.dir={sweep_dir}")
    wait_until(lambda: sweep_dir.exists() and job_dirs(sweep_dir) and checkpointed_epochs(job_dirs(sweep_dir)[0]) >= 3,
               180, "3 epochs checkpointed", proc=launcher)
    time.sleep(0.15)  # early in epoch 4
    (job,) = slurm_job_ids(sweep_dir)
    subprocess.run(["scancel", "--signal=USR2", job], env=environment(slurm), check=True, timeout=30)
    out, _ = launcher.communicate(timeout=240)
    assert launcher.returncode == 0, out[-3000:]
    assert reference.wait(timeout=120) == 0, (tmp_path / "reference.out").read_text()[-3000:]
    (run,) = job_dirs(sweep_dir)
    log = run_log(run)  # submitit's messages too
    stop = re.search(r"SIGUSR2: checkpointed at step (\d+) of epoch (\d+); stopping", log)
    assert stop, log[-2000:]
    assert 0 < int(stop[1]) <= steps, log[-2000:]  # inside an epoch: after one of its steps, before its evaluation
    assert int(stop[2]) >= 4, log[-2000:]
    resumed = RESUMED.findall(log)
    assert len(resumed) == 1, (resumed, stop.groups())
    assert resumed[0][1:3] == stop.groups(), (resumed, stop.groups())  # at that step
    assert log.count("this job is preempted") == 1
    assert f"Requeued job {job} (10 remaining timeouts)" in log
    assert untimed(results(run)) == untimed(results(tmp_path / "reference"))
    assert metrics(run) == metrics(tmp_path / "reference")
    sacct_said_at_most_once(out)


@pytest.mark.timeout(420)
def test_time_limit_requeues_resumes_exactly_and_respects_max_num_timeout(slurm, tmp_path):
    """timeout_min=1 with USR2 5 s before it (SLURM checks every 30 s and sends it up to 30 s early: at 25-55 s):
    the run is checkpointed inside an epoch and requeued once (max_num_timeout=1), resumes, is stopped at its
    second time limit for good ("timed-out too many times": failed, exit code 1). Every epoch it trained across
    the two pieces equals the uninterrupted run's."""
    args = (*LONG, "trainer.epochs=2000", "seed=0")  # never finishes in two 1-minute pieces
    reference = lstsd(slurm, *args, *FAST, f"hydra.run.dir={tmp_path / 'reference'}", log=tmp_path / "reference.out")
    sweep_dir = tmp_path / "sweep"
    try:
        r = sweep(slurm, sweep_dir, *args, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=5",
                  "hydra.launcher.max_num_timeout=1", timeout=360)
        (run,) = job_dirs(sweep_dir)
        done = metrics(run)
        wait_until(lambda: len(metrics(tmp_path / "reference")) >= len(done), 120, "the reference as far",
                   every=0.5)
    finally:
        reference.kill()
        reference.wait(timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-3000:]
    log = run_log(run)  # submitit's messages too, once each (its own logs have them twice: stdout and stderr)
    assert log.count("this job is timed-out") == 2, log[-3000:]
    (job,) = slurm_job_ids(sweep_dir)
    assert log.count("Requeued job") == 1
    assert f"Requeued job {job} (0 remaining timeouts)" in log
    assert "Job not requeued because: timed-out too many times." in log
    assert len(re.findall(r"SIGUSR2: checkpointed at ", log)) == 2
    resumed = RESUMED.findall(log)
    assert len(resumed) == 1, resumed
    epoch = int(resumed[0][2] or resumed[0][3])
    assert len(done) > epoch  # the epoch it resumed inside, and more, were finished after the requeue
    assert done == metrics(tmp_path / "reference")[:len(done)]
    assert results(run)["status"] == "failed"
    assert "timed-out too many times" in results(run)["error"]
    assert "1 of 1 jobs failed" in out
    assert "| 0 | acc | - | - | 1 failed |" in out
    sacct_said_at_most_once(out)


@pytest.mark.timeout(240)
def test_failed_job_is_reported_others_finish_exit_code_1(slurm, tmp_path):
    r = sweep(slurm, tmp_path, *SMALL, "trainer.epochs=2", "optim.lr=0.01,1e30,0.003")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-3000:]
    by_lr = {d.name: results(d) for d in job_dirs(tmp_path)}
    bad = next(k for k in by_lr if "optim.lr=1e+30" in k)  # Hydra names the folder by the parsed float
    assert by_lr[bad]["status"] == "failed"
    assert "non-finite loss at step" in by_lr[bad]["error"]
    assert sorted(v["status"] for k, v in by_lr.items() if k != bad) == ["completed", "completed"]
    # through submitit: the job's result came back as a pickled JobReturn marked FAILED, with its exception
    from hydra.core.utils import JobReturn, JobStatus

    returns = [pickle.loads(p.read_bytes())[1] for p in sorted(tmp_path.glob(".submitit/*/*_result.pkl"))]
    assert all(isinstance(x, JobReturn) for x in returns)
    assert len(returns) == 3
    assert sorted(x.status.name for x in returns) == ["COMPLETED", "COMPLETED", "FAILED"]
    failed = next(x for x in returns if x.status == JobStatus.FAILED)
    assert "non-finite loss" in str(failed._return_value)
    # the launcher's report: the sweeper's list and the end-of-sweep table, with the error line
    assert "1 of 3 jobs failed" in out, out[-3000:]
    assert re.search(r"optim\.lr=1e\+30: TrainingError: non-finite loss at step 2 \(epoch 1", out), out[-3000:]
    # the table: one row per learning rate (a variant), the bad one with no result and marked failed
    # MNIST-1D has 10 classes: a top-5 column beside top-1, empty for the failed job; then MNIST-1D's published
    # CNN number (94, its protocol unstated) beside the completed rows
    assert re.search(r"\| optim\.lr=1e\+30 \| 0 \| acc \| - \| - \| - \| - \| 1 failed \|", out), out[-3000:]
    score = r"\d+\.\d\d"
    assert len(re.findall(rf"\| optim\.lr=0\.0(1|03) \| 1 \| acc \| {score} \| {score} \| {score} \| 94\.00 \| - \|",
                          out)) == 2
    assert re.search(r"Failed \(1 runs\):\n- \S*optim\.lr=1e\+30\S*: TrainingError: non-finite loss at step", out), \
        out[-3000:]
    sacct_said_at_most_once(out)


@pytest.mark.timeout(420)
def test_cancelled_array_relaunched_resumes_the_unfinished_runs(slurm, tmp_path):
    args = (*LONG, "trainer.epochs=8", "seed=0,1,2", "hydra.launcher.array_parallelism=2")
    launcher = lstsd(slurm, "-m", *SLURM, *FAST, *args, f"hydra.sweep.dir={tmp_path}")

    def two_running():
        runs = job_dirs(tmp_path) if tmp_path.exists() else []
        return sum(checkpointed_epochs(d) >= 2 for d in runs) == 2

    wait_until(two_running, 180, "two runs 2 epochs in", every=0.2, proc=launcher)
    arrays = sorted({job.split("_")[0] for job in slurm_job_ids(tmp_path)})
    assert len(arrays) == 1
    subprocess.run(["scancel", arrays[0]], env=environment(slurm), check=True, timeout=30)  # the whole array
    # the running jobs get SIGTERM (checkpoint, failed); the third never starts and ends without a result: the
    # launcher waits for all three, counts that one failed with its SLURM state, prints the table, exits 1
    out, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == 1, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert "3 of 3 jobs failed" in out, out[-3000:]
    # the two jobs' lines as they ended, the list and the table
    assert out.count("TrainingError: stopped by SIGTERM after checkpointing") == 2 + 2 + 2
    assert len(re.findall(r"\[\d/3\] .*: failed \(TrainingError: stopped by SIGTERM after checkpointing", out)) == 2
    assert re.search(rf"seed=2: JobEnded: SLURM job {arrays[0]}_2 ended without a result \(state: CANCELLED\)", out)
    assert "| 0 | acc | - | - | 2 failed |" in out
    assert "Missing (1 jobs of the sweep never started)" in out
    sacct_said_at_most_once(out)
    started = [d for d in job_dirs(tmp_path) if (d / "last.pt").exists()]
    assert len(started) == 2
    assert all(results(d)["status"] == "failed" for d in started)  # stopped by SIGTERM
    assert len(job_dirs(tmp_path)) == 2  # the third run's folder: never made
    r = sweep(slurm, tmp_path, *args, timeout=300)  # the same command, the same folder
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = job_dirs(tmp_path)
    assert len(runs) == 3
    assert all(results(d)["status"] == "completed" for d in runs)
    for d in runs:
        resumed = RESUMED.findall(run_log(d))
        assert len(resumed) == (1 if d in started else 0), (d.name, resumed)
        assert len(metrics(d)) == 8
    assert "| default | mnist1d | mnist1d_cnn | vanilla | 3 | acc |" in r.stdout
    sacct_said_at_most_once(r.stdout + r.stderr)


DDP = ("method=lstsd", "method.minigen_epochs=1", "optim=sgd", "schedule=step", "dataset=synthetic",
       "dataset.num_train=48", "dataset.num_test=16", "dataset.shape=[1,28,28]", "dataset.num_classes=4",
       "model=lenet5", "trainer.epochs=3", "optim.lr=0.05", "trainer.device=cpu")


@pytest.mark.timeout(300)
def test_ddp_in_a_job_equals_one_process_over_the_same_global_batch(slurm, tmp_path):
    """tasks_per_node=2 on CPU: two processes (gloo) through submitit's environment, batch 8 each, against one
    process with batch 16, as tests/test_distributed.py does with torchrun (same check)."""
    from helpers import assert_ddp_equals_one_process

    one = lstsd(slurm, *DDP, *FAST, "dataset.batch_size=16", f"hydra.run.dir={tmp_path / 'one'}",
                log=tmp_path / "one.out")
    r = sweep(slurm, tmp_path / "sweep", *DDP, "dataset.batch_size=8", "hydra.launcher.tasks_per_node=2")
    assert one.wait(timeout=120) == 0, (tmp_path / "one.out").read_text()[-3000:]
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (run,) = job_dirs(tmp_path / "sweep")
    script = next((tmp_path / "sweep").glob(".submitit/*/*_submission.sh")).read_text()
    assert "#SBATCH --ntasks-per-node=2" in script
    assert len(list((tmp_path / "sweep").glob(".submitit/*/*_1_log.out"))) == 1  # rank 1 ran, as a SLURM task
    assert_ddp_equals_one_process(run, tmp_path / "one", steps=9)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3  # written once, by rank 0
    sacct_said_at_most_once(r.stdout + r.stderr)
