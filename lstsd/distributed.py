"""Data-parallel training over processes: ``torchrun --nproc_per_node=N -m lstsd ...`` or the SLURM launcher with
``tasks_per_node`` = GPUs per node, on one node or several (``hydra.launcher.nodes=2``: one job of nodes x
tasks_per_node processes; :func:`slurm_environment` maps SLURM's variables to ranks and the rendezvous).

Every process holds the whole model, the whole per-sample banks and the same random streams. Each step's global
batch (``world_size`` x ``dataset.batch_size`` samples, in the epoch order every rank draws from the same
(seed, epoch) generator) is cut into ``world_size`` consecutive shards, one per rank; DDP averages the
gradients, so a step equals a single-process step over the global batch (batch-norm statistics aside: each rank
normalises over its own shard, as DDP does). After the step every rank gathers the (index, prediction) pairs of
all shards in rank order and writes them into its banks, so the banks stay identical; batch-norm buffers are
broadcast from rank 0 after every step, so frozen snapshots and EMA teachers agree too. Epoch statistics are
summed over ranks. Only rank 0 writes files (metrics, results, checkpoints) and logs to wandb.

Global batch and learning rate: ``dataset.batch_size`` is per process. To keep a recipe's global batch, divide
it by the number of processes; to train with a larger global batch, scale the learning rate linearly with it
(Goyal et al. 2017: lr x k for a k times larger batch, with a warm-up).
"""
from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist


def slurm_task() -> bool:
    """Whether this process is one task of a submitit SLURM job of several (``hydra/launcher=slurm`` with
    ``tasks_per_node`` or ``nodes`` above 1), not a process torchrun started (``TORCHELASTIC_RUN_ID``)."""
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and int(os.environ.get("SLURM_NTASKS", "1")) > 1 and \
        "TORCHELASTIC_RUN_ID" not in os.environ


def launched() -> bool:
    """Whether this process is one of several: torchrun's variables, or a SLURM job step of several tasks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or slurm_task()


def slurm_environment() -> dict[str, str]:
    """The ``env://`` variables of this SLURM task, as submitit maps them (``TorchDistributedEnvironment``):
    ``RANK`` = ``SLURM_PROCID``, ``LOCAL_RANK`` = ``SLURM_LOCALID``, ``WORLD_SIZE`` = ``SLURM_NTASKS`` (all nodes'
    tasks), ``LOCAL_WORLD_SIZE`` = ``SLURM_NTASKS`` / ``SLURM_JOB_NUM_NODES``, ``MASTER_ADDR`` = the first host of
    ``SLURM_JOB_NODELIST`` (``node[017-018]`` -> node017), ``MASTER_PORT`` = ``MASTER_PORT`` where set, else a port
    drawn from the job's id (the same for every task of a job, another for each job of an array)."""
    import submitit

    env = submitit.helpers.TorchDistributedEnvironment()
    return {"MASTER_ADDR": env.master_addr, "MASTER_PORT": str(env.master_port), "RANK": str(env.rank),
            "WORLD_SIZE": str(env.world_size), "LOCAL_RANK": str(env.local_rank),
            "LOCAL_WORLD_SIZE": str(env.local_world_size)}


def cuda_index(local_rank: int, visible: int) -> int:
    """The CUDA device of a process of local rank ``local_rank`` that sees ``visible`` devices: its local rank where
    every task of the node sees all of the node's GPUs (``--gpus-per-node``), 0 where SLURM gave each task its own
    (``--gpus-per-task``, GPU binding: one visible device)."""
    return local_rank % max(1, visible)


def local_device(device: torch.device) -> torch.device:
    """``cuda`` made explicit as this process's own device (:func:`cuda_index` of its local rank) when several
    processes train; any other device unchanged."""
    if device.type != "cuda" or device.index is not None or not launched():
        return device
    return torch.device("cuda", cuda_index(int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()))


def setup(device_name: str) -> bool:
    """Join the process group when launched as several processes (nccl on GPUs, gloo on CPU); whether this call
    did (its caller then calls :func:`teardown`). A SLURM task takes its rank, world and rendezvous from SLURM's
    variables (:func:`slurm_environment`), over any such variables it inherited from the submitting shell."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return False
    if slurm_task():
        os.environ.update(slurm_environment())
    cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_device(torch.device("cuda")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return True


def teardown(synchronise: bool = True) -> None:
    """Leave the process group. The caller has dropped its DDP model and optimiser: they are collected first, as
    gloo can abort at exit when they outlive the group. ``synchronise=False`` (after a failure, which other ranks
    may not share) skips the final barrier rather than wait for ranks that will never reach it."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        if synchronise:
            dist.barrier()
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """The tensors of every rank, concatenated along dimension 0 in rank order (equal shapes on every rank)."""
    if not active():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in one process."""
    if not active():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every rank."""
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def sum_(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over ranks (in place)."""
    if active():
        dist.all_reduce(tensor)
    return tensor


def average_gradients(parameters) -> None:
    """Average the gradients of a module trained outside DDP (LW-KD's discriminator) over ranks."""
    if active():
        for p in parameters:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= world_size()


def broadcast(obj):
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()
