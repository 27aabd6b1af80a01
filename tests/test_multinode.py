"""Several nodes: ``hydra.launcher.nodes=2 hydra.launcher.tasks_per_node=4`` is one SLURM job of 8 tasks, one DDP
run over 8 processes. Each task maps SLURM's variables to its rank, its node's local rank (its CUDA device) and
the rendezvous (the first host of the node list); a run of 2 "nodes" x 2 tasks on this machine, with those
variables and gloo, trains as one process over the same global batches."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import REPO, compose_cfg
from lstsd import distributed

SLURM_VARIABLES = ("SUBMITIT_EXECUTOR", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_NTASKS",
                   "SLURM_JOB_NUM_NODES", "SLURM_NODEID", "SLURM_JOB_NODELIST", "SLURM_PROCID", "SLURM_LOCALID",
                   "MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                   "TORCHELASTIC_RUN_ID")


def two_node_task(monkeypatch, procid: int, array_task: str = "3", nodes: str = "gpu[017-018]") -> None:
    """The variables SLURM gives task ``procid`` of an array job's job with ``--nodes=2 --ntasks-per-node=4``."""
    for var in SLURM_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    env = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": str(5000 + int(array_task)), "SLURM_ARRAY_JOB_ID": "4997",
           "SLURM_ARRAY_TASK_ID": array_task, "SLURM_NTASKS": "8", "SLURM_JOB_NUM_NODES": "2",
           "SLURM_NODEID": str(procid // 4), "SLURM_JOB_NODELIST": nodes, "SLURM_PROCID": str(procid),
           "SLURM_LOCALID": str(procid % 4)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def test_two_node_allocation_maps_to_ranks_local_ranks_and_one_rendezvous(monkeypatch):
    seen = []
    for procid in range(8):
        two_node_task(monkeypatch, procid)
        assert distributed.launched()
        assert distributed.slurm_task()
        env = distributed.slurm_environment()
        assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"]) == \
            (str(procid), str(procid % 4), "8", "4")
        assert env["MASTER_ADDR"] == "gpu017"  # the first host of the node list, on every node
        seen.append(env["MASTER_PORT"])
    assert len(set(seen)) == 1
    assert 20000 <= int(seen[0]) <= 60000  # one rendezvous for the job's 8 tasks
    two_node_task(monkeypatch, 0, array_task="4")  # another job of the sweep's array: its own port
    assert distributed.slurm_environment()["MASTER_PORT"] != seen[0]
    two_node_task(monkeypatch, 5, nodes="cn001,cn[005-006]")
    assert distributed.slurm_environment()["MASTER_ADDR"] == "cn001"


def test_a_task_takes_slurms_values_over_variables_inherited_from_the_submitting_shell(monkeypatch):
    """sbatch exports the submitting shell's environment: a RANK, WORLD_SIZE or MASTER_ADDR there (a shell that
    ran torchrun once) must not decide the task's rank. setup() exports SLURM's values before joining."""
    two_node_task(monkeypatch, 6)
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "login1"}.items():
        monkeypatch.setenv(k, v)
    joined = {}
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: joined.update(
        backend=backend, **{k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    assert distributed.setup("cpu")
    assert joined == {"backend": "gloo", "RANK": "6", "WORLD_SIZE": "8", "LOCAL_RANK": "2", "MASTER_ADDR": "gpu017"}


def test_torchrun_processes_keep_torchruns_ranks(monkeypatch):
    two_node_task(monkeypatch, 6)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")  # torchrun started this process inside the allocation
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.launched()
    assert not distributed.slurm_task()


@pytest.mark.parametrize("visible,expected", [(4, [0, 1, 2, 3]), (1, [0, 0, 0, 0]), (8, [0, 1, 2, 3])])
def test_local_rank_to_cuda_device(visible, expected):
    """--gpus-per-node=4: each task of a node sees the node's 4 GPUs and takes its local rank's; with a GPU bound
    to each task (--gpus-per-task, GPU binding) a task sees one, device 0."""
    assert [distributed.cuda_index(local, visible) for local in range(4)] == expected


def test_local_device_is_explicit_only_when_several_processes_train(monkeypatch):
    for var in SLURM_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    assert distributed.local_device(torch.device("cuda")) == torch.device("cuda")
    assert distributed.local_device(torch.device("cpu")) == torch.device("cpu")
    two_node_task(monkeypatch, 7)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert distributed.local_device(torch.device("cuda")) == torch.device("cuda", 3)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert distributed.local_device(torch.device("cuda")) == torch.device("cuda", 0)


def test_the_slurm_preset_takes_nodes():
    launcher = compose_cfg("hydra/launcher=slurm", "hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=4",
                           return_hydra_config=True).hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node) == (2, 4)


ARGS = ["method=lstsd", "method.minigen_epochs=1", "optim=sgd", "schedule=step", "dataset=synthetic",
        "dataset.num_train=64", "dataset.num_test=16", "dataset.shape=[1,28,28]", "dataset.num_classes=4",
        "model=lenet5", "trainer.epochs=2", "trainer.progress=false", "optim.lr=0.05", "trainer.device=cpu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_of_two_tasks_train_as_one_process(tmp_path):
    """Four processes with the SLURM variables of 2 nodes x 2 tasks (both "nodes" this machine, gloo): one DDP run
    of world size 4, whose weights and banks equal one process's over the same global batches (4 x 8 = 32)."""
    base = {k: v for k, v in os.environ.items() if k not in SLURM_VARIABLES}
    base |= {"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "77",
             "SLURM_NTASKS": "4", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "localhost,localhost",
             "MASTER_PORT": str(free_port())}
    base.pop("HYDRA_FULL_ERROR", None)
    procs = []
    for procid in range(4):
        env = base | {"SLURM_PROCID": str(procid), "SLURM_LOCALID": str(procid % 2), "SLURM_NODEID": str(procid // 2)}
        procs.append(subprocess.Popen([sys.executable, "-m", "lstsd", *ARGS, "dataset.batch_size=8",
                                       f"hydra.run.dir={tmp_path / 'ddp'}"], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs[0][-3000:]
    one = subprocess.run([sys.executable, "-m", "lstsd", *ARGS, "dataset.batch_size=32",
                          f"hydra.run.dir={tmp_path / 'one'}"], cwd=REPO, env={**base, "SLURM_NTASKS": "1"},
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    a = torch.load(Path(tmp_path / "ddp" / "last.pt"), weights_only=False)
    b = torch.load(Path(tmp_path / "one" / "last.pt"), weights_only=False)
    assert a["world_size"] == 4
    assert a["global_step"] == b["global_step"] == 4  # 2 epochs of 64 / 32
    for k in b["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-5), k
    for kind in ("short", "long"):
        assert torch.allclose(a["method"][kind]["values"], b["method"][kind]["values"], atol=1e-5), kind
    assert json.loads((tmp_path / "ddp" / "results.json").read_text())["world_size"] == 4
