"""``make gpu-check``: every GPU path of lstsd, checked and timed in one go on a machine with a CUDA GPU.

Each check is one command (the same ``lstsd`` and ``lstsd-bench`` a user runs), with its own time limit; the whole
fits in about 8 minutes on one GPU. The figures go to one Markdown file (``--out``, default
``gpu-check/gpu-check.md``) and to the console:

1. ``lstsd-bench`` on ResNet-20 with CIFAR-100-shaped batches of 128 on the device: every default method's step
   time, its ratio to vanilla's, its peak memory and its bank (fp32);
2. the same for vanilla, LSTSD, Mean Teacher and DLB in bf16 and in fp16 (a loss scaler), with channels_last,
   and with ``trainer.compile=true``;
3. one epoch of ResNet-20 on 50,000 CIFAR-sized images (synthetic, 8-bit, augmented on the device: the device
   data path), vanilla and LSTSD, through the real run (evaluation, checkpoint);
4. every default method for two short epochs through the real run as a sweep (``trainer.limit_batches``);
5. with two GPUs or more: the same LSTSD run under DDP with NCCL (``torchrun``, two processes).

On a machine without a CUDA GPU it says so in one line and exits 0. ``--device cpu`` runs the same checks with a
tiny model on the CPU, leaving out the CUDA-only ones (fp16, compile, NCCL): a check of this script itself.
Exit code 0 when every check passed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
BENCH_METHODS = "vanilla,lstsd,mean_teacher,dlb"
SIZES = {  # the checks' model and data: CIFAR-sized on a GPU, tiny on the CPU
    "cuda": {"bench": [], "epoch": ["model=resnet20", "dataset.shape=[3,32,32]", "dataset.num_classes=100",
                                    "dataset.num_train=50000", "dataset.num_test=10000", "dataset.batch_size=128"]},
    "cpu": {"bench": ["model=digits_cnn", "dataset.shape=[3,8,8]", "dataset.num_classes=4", "dataset.num_train=256",
                      "dataset.batch_size=32"],
            "epoch": ["model=digits_cnn", "dataset.shape=[3,8,8]", "dataset.num_classes=4", "dataset.num_train=512",
                      "dataset.num_test=64", "dataset.batch_size=32"]},
}


def run(command: list[str], limit: int, log: Path) -> tuple[int, float, str]:
    """Run ``command`` (at most ``limit`` seconds), its output kept in ``log``: (exit code, seconds, stdout)."""
    start = time.perf_counter()
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=limit,
                             env={**os.environ, "WANDB_MODE": "disabled"})
        code, stdout, stderr = out.returncode, out.stdout, out.stderr
    except subprocess.TimeoutExpired as e:
        code, stdout, stderr = 124, "", f"timed out after {limit} s\n{e.stderr or ''}"
    log.write_text(" ".join(command) + "\n\n" + stdout + stderr)
    return code, time.perf_counter() - start, stdout


def bench_rows(text: str) -> str:
    """lstsd-bench's JSON rows as a Markdown table."""
    rows = json.loads(text)
    lines = ["| method | step ms | images/s | × vanilla | peak memory MiB | bank MiB |", "|---|---|---|---|---|---|"]
    for r in rows:
        peak = f"{r['peak_memory_bytes'] / 2**20:.0f}" if r.get("peak_memory_bytes") else "-"
        lines.append(f"| {r['method']} | {r['step_ms']:.2f} | {r['images_per_second']:.0f} | "
                     f"{r['step_time_ratio']:.2f} | {peak} | {r['bank_bytes'] / 2**20:.1f} |")
    return "\n".join(lines)


def epoch_figures(folder: Path) -> str:
    """Each run's training seconds per epoch and final test accuracy, from its metrics.jsonl and results.json."""
    lines = []
    for results in sorted(folder.rglob("results.json")):
        res = json.loads(results.read_text())
        rows = [json.loads(line) for line in (results.parent / "metrics.jsonl").read_text().splitlines()]
        seconds = ", ".join(f"{r['seconds']:.1f}" for r in rows)
        lines.append(f"- {res['method']}: epoch seconds {seconds}; {res.get('steps_per_second', 0):.1f} steps/s; "
                     f"test acc {res['test_acc_final']:.2f}")
    return "\n".join(lines)


def checks(device: str, out: Path, gpus: int) -> list[tuple[str, list[str], int, Path | None]]:
    """(name, command, seconds allowed, the folder of its runs: None for lstsd-bench, whose figures are its
    output) of every check this machine can run."""
    lstsd, bench = [str(BIN / "lstsd")], [str(BIN / "lstsd-bench"), "--json", "--rounds", "3", "--warmup", "2"]
    on = [f"trainer.device={device}"]
    small, epoch = SIZES[device]["bench"], SIZES[device]["epoch"]
    common = ["dataset=synthetic", "dataset.pixels=uint8", *epoch, *on, "trainer.progress=false"]
    found = [("bench fp32, every method", [*bench, "--steps", "10", *small, *on], 150, None),
             ("bench bf16", [*bench, "--steps", "10", "--methods", BENCH_METHODS, *small, *on,
                             "trainer.precision=bf16"], 60, None),
             ("bench channels_last", [*bench, "--steps", "10", "--methods", BENCH_METHODS, *small, *on,
                                      "trainer.channels_last=true"], 60, None)]
    if device == "cuda":
        found += [("bench fp16 (loss scaler)", [*bench, "--steps", "10", "--methods", BENCH_METHODS, *small, *on,
                                                "trainer.precision=fp16"], 60, None),
                  ("bench compile", [*bench, "--steps", "10", "--methods", "vanilla,lstsd", *small, *on,
                                     "trainer.compile=true"], 180, None)]
    found += [("one epoch of the real run, device data path", [*lstsd, "-m", "method=vanilla,lstsd", "optim=sgd",
                                                                "trainer.epochs=2", *common,
                                                                f"hydra.sweep.dir={out / 'epoch'}"], 150, out / "epoch"),
              ("every default method through the run", [*lstsd, "-m", f"method={BENCH_METHODS},lstsd_single,sd,"
                                                         "snapshot_ensembles,temporal_ensembling,label_smoothing,"
                                                         "tfkd_reg", "trainer.epochs=4", "method.minigen_epochs=1",
                                                         "trainer.limit_batches=5",
                                                         *common, f"hydra.sweep.dir={out / 'methods'}"], 150,
               out / "methods")]
    if device == "cuda" and gpus >= 2 and shutil.which("torchrun", path=str(BIN)):
        found.append(("DDP, NCCL, 2 processes", [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m",
                                                  "lstsd", "method=lstsd", "method.minigen_epochs=1",
                                                  "trainer.epochs=2", "trainer.limit_batches=50", *common,
                                                  f"hydra.run.dir={out / 'ddp'}"], 120, out / "ddp"))
    return found


def machine(device: str) -> tuple[str, int]:
    import torch

    if device == "cpu":
        return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}", 0
    gpus = torch.cuda.device_count()
    props = torch.cuda.get_device_properties(0)
    return (f"{gpus} x {props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA "
            f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"), gpus


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.splitlines()[0].strip("`: "))
    parser.add_argument("--out", type=Path, default=Path("gpu-check"), help="folder of gpu-check.md and the runs")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: the same checks with a tiny model on the CPU (a check of this script)")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is false): nothing checked")
            return
    args.out.mkdir(parents=True, exist_ok=True)
    described, gpus = machine(args.device)
    report = [f"# gpu-check: {described}", "", f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {os.uname().nodename}", ""]
    failed = 0
    for i, (name, command, limit, folder) in enumerate(checks(args.device, args.out.resolve(), gpus), start=1):
        code, seconds, text = run(command, limit, args.out / f"check{i}.log")
        status = "passed" if code == 0 else f"FAILED (exit {code}; check{i}.log)"
        failed += code != 0
        print(f"gpu-check [{i}] {name}: {status}, {seconds:.0f} s", flush=True)
        shown = " ".join([Path(command[0]).name, *command[1:]])
        report += [f"## {i}. {name}: {status}, {seconds:.0f} s", "", f"`{shown}`", ""]
        if code == 0:
            report += [epoch_figures(folder) if folder else bench_rows(text), ""]
    report.append(f"{failed} of {i} checks failed" if failed else f"all {i} checks passed")
    (args.out / "gpu-check.md").write_text("\n".join(report) + "\n")
    print(f"gpu-check: {report[-1]}; figures in {args.out / 'gpu-check.md'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
