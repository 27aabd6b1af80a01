"""Data-parallel training on CPU with gloo and 2 processes (torchrun): after 3 epochs of LSTSD the weights and
both per-sample banks equal those of one process trained on the same global batches (batch 2 x 8 = 16), to
float32 reduction-order tolerance (atol 1e-5: DDP averages the two shards' mean gradients, one process takes the
mean over 16); only rank 0 writes files. LeNet-5 has no batch norm, whose statistics DDP computes per shard."""
import os
import socket
import subprocess
import sys

from helpers import REPO, assert_ddp_equals_one_process

ARGS = ["method=lstsd", "method.minigen_epochs=1", "optim=sgd", "schedule=step", "dataset=synthetic", "dataset.num_train=48",
        "dataset.num_test=16", "dataset.shape=[1,28,28]", "dataset.num_classes=4", "model=lenet5",
        "trainer.epochs=3", "trainer.progress=false", "optim.lr=0.05", "trainer.device=cpu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process_over_the_same_global_batches(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={free_port()}", "-m", "lstsd", *ARGS, "dataset.batch_size=8",
                          f"hydra.run.dir={tmp_path / 'ddp'}"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "lstsd", *ARGS, "dataset.batch_size=16",
                          f"hydra.run.dir={tmp_path / 'one'}"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    assert_ddp_equals_one_process(tmp_path / "ddp", tmp_path / "one", steps=9)  # 3 epochs of 48 / 16
    rows = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3  # written once, by rank 0
    log = [line for line in (tmp_path / "ddp" / "cli.log").read_text().splitlines() if "epoch=" in line]
    assert [line.split(" - ", 1)[1].split()[0] for line in log] == ["epoch=1", "epoch=2", "epoch=3"]  # one copy


def test_launched_by_torchrun_or_a_slurm_task_of_several(monkeypatch):
    from lstsd import distributed

    for var in ("WORLD_SIZE", "SLURM_NTASKS", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(var, raising=False)
    assert not distributed.launched()
    assert distributed.world_size() == 1
    assert distributed.is_main()
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert not distributed.launched()  # a SLURM allocation alone: one process unless submitit or torchrun
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert distributed.launched()
    monkeypatch.delenv("SLURM_NTASKS")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.launched()
