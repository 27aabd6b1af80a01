"""``lstsd-bench [OVERRIDES...]``: what each method costs per training step, against vanilla, in one process.

Every method is assembled exactly as ``lstsd`` would assemble it from the same overrides (model, dataset,
device, batch size, precision, loader: any ``lstsd`` key; by default ResNet-20 on CIFAR-100-shaped synthetic
8-bit images with the crop-and-flip augmentation), put into its distilling state (the epoch bookkeeping is
fast-forwarded to the last epoch of a ``trainer.epochs`` run, so the mini-generation methods have their banks,
snapshots and teachers; KD teachers are trained for one epoch), warmed up, then timed for ``--steps`` full
training steps (batch, forward, loss, backward, optimiser, bank writes) per round over ``--rounds`` rounds. The
methods are interleaved, in alternating order; a method's ratios to vanilla are taken within each round (runs
next to each other in time) and the median over rounds is reported, so that the drift and bursts of a shared
machine cancel. A timed ``forward`` row (the model in eval mode without gradients: one teacher's cost)
gives each method's inherent cost: ``x inherent`` is its step time over vanilla's plus the teacher forwards the
method has to run, and, for DLB, per image (its step trains on twice the images). A ``vanilla[torchvision]``
row times the DataLoader input path against the device-resident one. A ``vanilla[hand-written]`` row runs vanilla's
steps as a minimal PyTorch loop (the same model, batches, optimiser and learning rates, cross-entropy, zero_grad,
backward, step) beside the trainer's, timed next to vanilla in every round: ``vanilla / hand-written`` is what the
trainer itself adds per step (its step statistics, method hooks, schedule and precision contexts). Overrides
given after a method's name (``lstsd:method.bank_topk=5``) apply to it alone. The bench's own data and model
(``DEFAULTS``) give way to the ones chosen on the command line: ``lstsd-bench dataset=mnist1d model=mnist1d_cnn``
times MNIST-1D's CNN. Peak memory is measured on CUDA, in a separate pass that builds one method at a time.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from lstsd.config.compose import CONFIG_DIR, compose
from lstsd.config import validate
from lstsd.training.step_stats import StepStats
from lstsd.training.trainer import PRECISIONS
from lstsd.errors import ConfigError, one_line, quiet_when_piped_into_a_closed_reader
from lstsd.training.run import assemble

# The rows timed by default. What a method inherently adds per step (the ``x inherent`` column) it declares itself:
# ``Method.teacher_forwards`` (forward passes of the student's architecture) and ``Method.images_per_step``;
# everything else a method does (bank gathers and scatters, EMA) should be noise.
METHODS = ("vanilla", "lstsd", "lstsd_single", "sd", "snapshot_ensembles", "mean_teacher", "temporal_ensembling",
           "dlb", "label_smoothing", "tfkd_reg", "kd")
DEFAULTS = ("model=resnet20", "dataset=synthetic", "dataset.batch_size=128", "dataset.num_classes=100",
            "dataset.shape=[3,32,32]", "dataset.pixels=uint8", "dataset.num_train=4096", "dataset.num_test=64",
            "trainer.epochs=12")
SMOKE = ("model=digits_cnn", "dataset=synthetic", "dataset.num_classes=4", "dataset.shape=[3,8,8]",
         "dataset.pixels=uint8", "dataset.num_test=16", "dataset.batch_size=16", "trainer.epochs=12",
         "trainer.device=cpu")
HAND = "vanilla[hand-written]"  # vanilla's steps in a minimal PyTorch loop: the baseline of the trainer's overhead


def with_base(base: tuple, overrides: list[str]) -> list[str]:
    """The bench's base settings followed by the command line's. A dataset chosen on the command line
    (``dataset=mnist1d``) drops the base's ``dataset.*`` keys, which belong to its synthetic data."""
    own_dataset = any(o.startswith("dataset=") for o in overrides)
    keep = [o for o in base if not (own_dataset and o.startswith("dataset"))]
    return [*keep, *overrides]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Bench:
    """One method (or the bare forward pass) ready to time: its trainer and an endless stream of batches."""

    def __init__(self, label: str, overrides: list[str], teacher_cache: str):
        self.label = label
        self.method, *own = label.split(":")  # e.g. lstsd:method.bank_topk=5:method.bank_store=probs
        self.method = self.method.split("[")[0]
        name = "vanilla" if self.method == "forward" else self.method
        extra = [f"method={name}", *own] + (["dataset.loader=torchvision"] if label.endswith("[torchvision]")
                                            else [])
        cfg = compose([*overrides, *extra])
        if cfg.method.name == "kd" and not cfg.method.get("teacher_run"):
            # a teacher of the student's own architecture, trained for one epoch: its forward is what matters
            cfg.method.teacher = [f"model={cfg.model.name}", "trainer.epochs=1"]
            cfg.method.teacher_cache = teacher_cache
        conf = validate(cfg)
        self.trainer = assemble(conf, Path(teacher_cache), [*overrides, *extra])
        self.device = next(self.trainer.model.parameters()).device
        self.batch_size = conf.dataset.batch_size
        method, last = self.trainer.method, conf.trainer.epochs - 1
        for epoch in range(last):  # fast-forward the bookkeeping: banks, snapshots, teachers as in the last epoch
            method.on_epoch_start(epoch)
            method.on_epoch_end(epoch)
        method.on_epoch_start(last)
        self.trainer.model.train()
        self.epoch = last
        self.batches = self.stream()
        self.fixed = next(self.batches).x  # the forward row times the model alone, as a teacher runs inside a step
        self.stats = StepStats(self.device)
        if label == HAND:
            self.dtype = PRECISIONS[conf.trainer.precision]
            self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype is torch.float16 else None
            self.rates = self.schedule(conf.trainer.epochs * len(self.trainer.data.train))
            self.updates = 0

    def schedule(self, steps: int) -> list[list[float]]:
        """The learning rate of each parameter group at each of the run's ``steps`` updates, read from the
        trainer's schedule before the clock, so that the hand-written loop sets the same rates with no scheduler
        object of its own."""
        scheduler, groups = self.trainer.scheduler, self.trainer.optimizer.param_groups
        rates = []
        for t in range(steps):
            scheduler.step_update(t)
            rates.append([g["lr"] for g in groups])
        scheduler.step_update(0)
        return rates

    def hand_written(self, steps: int) -> None:
        """``steps`` of vanilla's training steps as a minimal PyTorch loop: the learning rate of the update,
        forward (under autocast in bf16 or fp16), cross-entropy, zero_grad, backward, optimiser step (through a
        GradScaler in fp16). Nothing else: no step statistics, method hooks or scheduler object."""
        model, optimizer = self.trainer.model, self.trainer.optimizer
        for _ in range(steps):
            batch = next(self.batches)
            for group, lr in zip(optimizer.param_groups, self.rates[min(self.updates, len(self.rates) - 1)]):
                group["lr"] = lr
            self.updates += 1
            if self.dtype is None:
                loss = F.cross_entropy(model(batch.x), batch.y)
            else:
                with torch.autocast(self.device.type, dtype=self.dtype):
                    loss = F.cross_entropy(model(batch.x), batch.y)
            optimizer.zero_grad(set_to_none=True)
            if self.scaler is None:
                loss.backward()
                optimizer.step()
            else:
                self.scaler.scale(loss).backward()
                self.scaler.step(optimizer)
                self.scaler.update()

    def stream(self):
        while True:
            yield from self.trainer.data.train.epoch(self.epoch)

    def run(self, steps: int) -> float:
        """Seconds per step over ``steps`` steps."""
        if self.label.endswith("[torchvision]"):
            # fresh workers for each round, started before the clock (one untimed step), stopped after it: their
            # prefetching must not run while the other rows are timed
            self.batches.close()
            self.batches = self.stream()
            self.trainer.step(next(self.batches), self.stats)
        synchronize(self.device)
        t0 = time.perf_counter()
        if self.method == "forward":
            model = self.trainer.model
            model.eval()
            with torch.no_grad(), self.trainer.autocast():
                for _ in range(steps):
                    model(self.fixed)
            model.train()
        elif self.label == HAND:
            self.hand_written(steps)
        else:
            for _ in range(steps):
                self.trainer.step(next(self.batches), self.stats)
        synchronize(self.device)
        seconds = (time.perf_counter() - t0) / steps
        if self.label.endswith("[torchvision]"):
            self.batches.close()
        return seconds

    def bank_bytes(self) -> int:
        return self.trainer.method.bank_bytes()

    def inherent(self) -> tuple[int, int]:
        """What the method declares it adds per step: (images per new image, teacher forwards)."""
        return self.trainer.method.images_per_step, self.trainer.method.teacher_forwards


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores " \
           f"({torch.get_num_threads()} threads), torch {torch.__version__}"


def peak_memory(label: str, overrides: list[str], cache: str, steps: int) -> int:
    """Peak CUDA memory of one method alone: built, warmed up and stepped with nothing else allocated."""
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    bench = Bench(label, overrides, cache)
    bench.run(steps)
    peak = torch.cuda.max_memory_allocated()
    del bench
    gc.collect()
    torch.cuda.empty_cache()
    return peak


def measure(overrides: list[str], methods: list[str], steps: int, rounds: int, warmup: int,
            loader: bool = True) -> tuple[list[dict], str]:
    # the hand-written loop right after vanilla, so that their ratio is taken between neighbours in time
    methods = [m for m in methods if m != HAND]
    at = methods.index("vanilla") + 1
    labels = ["forward", *methods[:at], HAND, *methods[at:]] + (["vanilla[torchvision]"] if loader else [])
    with tempfile.TemporaryDirectory(prefix="lstsd-bench-") as cache:
        benches = {label: Bench(label, overrides, cache) for label in labels}
        device = benches["forward"].device
        for b in benches.values():
            b.run(warmup)
        times: dict = {label: [] for label in labels}
        for r in range(rounds):
            for label in (labels if r % 2 == 0 else labels[::-1]):
                times[label].append(benches[label].run(steps))
        banks = {label: b.bank_bytes() for label, b in benches.items()}
        costs = {label: b.inherent() for label, b in benches.items()}
        batches = {label: b.batch_size for label, b in benches.items()}
        del benches
        peaks = {label: peak_memory(label, overrides, cache, warmup + 1) for label in labels
                 if label != "forward"} if device.type == "cuda" else {}
    forward, vanilla = times.pop("forward"), times["vanilla"]
    rows = []
    for label, ts in times.items():
        images, forwards = costs[label]  # vanilla's step scaled to the images trained on, plus teacher forwards
        inherent = [images * v + forwards * f for v, f in zip(vanilla, forward)]
        seconds = statistics.median(ts)
        rows.append({
            "method": label,
            "step_ms": 1000 * seconds,
            "steps_per_second": 1 / seconds,
            "images_per_second": batches[label] / seconds,
            # ratios within each round (neighbours in time), then their median: drift and bursts cancel
            "step_time_ratio": statistics.median(t / v for t, v in zip(ts, vanilla)),
            "inherent_ratio": statistics.median(t / i for t, i in zip(ts, inherent)),
            "peak_memory_bytes": peaks.get(label),
            "bank_bytes": banks[label],
        })
    # the trainer's own cost per step: vanilla's step over the hand-written loop's, within each round
    overhead = [v / h for v, h in zip(vanilla, times[HAND])]
    quartiles = statistics.quantiles(overhead, n=4, method="inclusive") if len(overhead) > 1 else overhead * 3
    hand = next(r for r in rows if r["method"] == HAND)
    hand["trainer_overhead"] = statistics.median(overhead)
    hand["trainer_overhead_quartiles"] = [quartiles[0], quartiles[2]]
    header = f"{machine(device)}; batch {batches['forward']}; teacher forward " \
             f"{1000 * statistics.median(forward):.1f} ms; {rounds} rounds of {steps} steps"
    return rows, header


def table(rows: list[dict], header: str, smoke: bool = False) -> str:
    """The rows as Markdown; a smoke run's (one step each) says that its times are not measurements."""
    if smoke:
        header = "smoke run: one step of each method, to show that it runs; its times are not measurements " \
                 "(lstsd-bench without --smoke measures)\n" + header
    lines = [header, "", "| method | step ms | steps/s | images/s | × vanilla | × inherent | peak memory | bank |",
             "|---|---|---|---|---|---|---|---|"]
    def size(b):
        if not b:
            return "-"
        unit = next(u for u, k in (("GiB", 30), ("MiB", 20), ("KiB", 10), ("B", 0)) if b >= 2**k)
        return f"{b / 2 ** dict(GiB=30, MiB=20, KiB=10, B=0)[unit]:.1f} {unit}"

    for r in rows:
        lines.append(f"| {r['method']} | {r['step_ms']:.1f} | {r['steps_per_second']:.2f} | "
                     f"{r['images_per_second']:.0f} | {r['step_time_ratio']:.2f} | {r['inherent_ratio']:.2f} | "
                     f"{size(r['peak_memory_bytes'])} | {size(r['bank_bytes'])} |")
    for r in rows:
        if "trainer_overhead" in r and not smoke:
            low, high = r["trainer_overhead_quartiles"]
            lines += ["", f"trainer overhead (vanilla / hand-written loop, median of the rounds' ratios): "
                          f"{r['trainer_overhead']:.3f} (quartiles {low:.3f}-{high:.3f})"]
    return "\n".join(lines)


def positive(text: str) -> int:
    """An argparse type: a count of steps, rounds or warm-up steps (1 or more; 0 would time nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: allowed an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is invalid: allowed an integer >= 1")
    return value


def method_labels(text: str) -> list[str]:
    """An argparse type: the comma-separated rows of ``--methods``, each a ``method=`` option of lstsd (its own
    overrides after colons), vanilla among them (every ratio is to vanilla's step)."""
    options = sorted(f.stem for f in (Path(CONFIG_DIR) / "method").glob("*.yaml"))
    labels = text.split(",")
    for label in labels:
        if label.split(":")[0].split("[")[0] not in options:
            raise argparse.ArgumentTypeError(f"{label!r} is invalid: allowed a method= option of lstsd "
                                             f"({', '.join(options)}), its own overrides after colons")
    if "vanilla" not in labels:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: allowed a list that holds vanilla (the baseline of "
                                         f"every ratio)")
    return labels


STARTUP = {  # the start-up row's commands: python and torch alone, a typo refused, a default 1-epoch and whole run
    "import torch": [sys.executable, "-c", "import torch"],
    "lstsd typo (refused)": [sys.executable, "-m", "lstsd", "trainer.epoch=1"],
    "lstsd 1-epoch run": [sys.executable, "-m", "lstsd", "trainer.epochs=1", "trainer.progress=false"],
    "lstsd default run (200 epochs)": [sys.executable, "-m", "lstsd", "trainer.progress=false"],
}


def startup(rounds: int) -> str:
    """``--startup``: each command of :data:`STARTUP` as a fresh process, interleaved over ``rounds`` rounds; the
    median CPU time (user + system, from the children's resource usage) and wall time of each, the ratios of the
    runs' and the typo's CPU to ``import torch``'s, and of each run's CPU to its training steps' time (results.json's
    ``train_seconds``: the epochs' steps, on one thread, so their wall time is their CPU time)."""
    import resource

    cpu, wall, steps = ({k: [] for k in STARTUP} for _ in range(3))
    with tempfile.TemporaryDirectory() as folder:
        for r in range(rounds):
            for label, command in STARTUP.items():
                run_dir = Path(folder) / f"{label.split()[1]}{r}" if "run" in label else None
                extra = [f"hydra.run.dir={run_dir}"] if run_dir else []
                before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
                subprocess.run([*command, *extra], capture_output=True, env={**os.environ, "WANDB_MODE": "disabled"})
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                wall[label].append(time.perf_counter() - start)
                cpu[label].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
                if run_dir:
                    steps[label].append(cpu[label][-1] / json.loads((run_dir / "results.json").read_text())
                                        ["train_seconds"])
    base = statistics.median(cpu["import torch"])
    lines = [f"start-up: median of {rounds} rounds, each command a fresh process", "",
             "| command | CPU s | wall s | CPU × import torch | CPU × its training steps |", "|---|---|---|---|---|"]
    for label in STARTUP:
        c = statistics.median(cpu[label])
        ratio = f"{statistics.median(steps[label]):.2f}" if steps[label] else "-"
        lines.append(f"| {label} | {c:.2f} | {statistics.median(wall[label]):.2f} | {c / base:.2f} | {ratio} |")
    return "\n".join(lines)


@quiet_when_piped_into_a_closed_reader
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="lstsd-bench", description=__doc__.splitlines()[0].strip("`: "))
    parser.add_argument("overrides", nargs="*", help="lstsd overrides (model=..., dataset.batch_size=..., "
                                                     "trainer.device=..., trainer.precision=...)")
    parser.add_argument("--methods", default=",".join(METHODS), type=method_labels,
                        help="comma-separated; a method's own overrides follow it after colons, e.g. "
                             "lstsd:method.bank_store=probs:method.bank_topk=5 (default: %(default)s)")
    parser.add_argument("--steps", type=positive, default=5, help="timed steps per method and round")
    parser.add_argument("--rounds", type=positive, default=8)
    parser.add_argument("--warmup", type=positive, default=3, help="untimed steps per method first")
    parser.add_argument("--no-loader", action="store_true", help="leave out the vanilla[torchvision] row")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list instead of a table")
    parser.add_argument("--smoke", action="store_true", help="a tiny CPU model and 1 step: checks that it runs")
    parser.add_argument("--startup", type=positive, metavar="ROUNDS",
                        help="instead: the start-up of a fresh process (import torch, a typo refused, a 1-epoch "
                             "and a default 200-epoch run)")
    args = parser.parse_args(argv)
    if args.startup:
        return print(startup(args.startup))
    base = SMOKE if args.smoke else DEFAULTS
    steps, rounds, warmup = (1, 1, 1) if args.smoke else (args.steps, args.rounds, args.warmup)
    try:
        rows, header = measure(with_base(base, args.overrides), args.methods, steps, rounds, warmup,
                               loader=not args.no_loader)
    except (ConfigError, HydraException, OmegaConfBaseException) as e:  # a bad override: one line, as lstsd's
        print(f"lstsd-bench: error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(rows, indent=1) if args.json else table(rows, header, smoke=args.smoke))


if __name__ == "__main__":
    main()
