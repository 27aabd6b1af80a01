"""Images per second and peak host memory of the loaders on an ImageFolder tree of PNG files:
``python tools/measure_loaders.py --images 400 --size 32``.

It writes the tree (``--images`` training PNGs of ``--size`` pixels in 10 classes, a quarter as many for
evaluation) under a temporary folder, unless ``--folder`` names one, then runs each case in a fresh process:
builds the data (``lstsd.data.build_data`` on the CPU, one torch thread) and reads ``--epochs`` training epochs,
every batch. Cases: the in-memory loader with the pad-crop-flip on the device; the streaming loader with the
same transforms (its fast path: workers decode, the device crops); the streaming loader with per-sample
``RandomResizedCrop`` + flip in the workers. It reports the images per second over those epochs (worker
start-up included; the in-memory loader's decoding of the whole split is the separate ``build s``), the peak
resident memory (``ru_maxrss``) of the main process, with its growth over the resident memory once the
libraries are imported, and that of the largest child process (the workers; forked, they count the pages they
share with the main process).

Each case runs with ``MALLOC_MMAP_THRESHOLD_=131072`` (``--malloc-default`` leaves it out): glibc otherwise
raises its mmap threshold as large blocks (the batches converted to float on a CPU device) are freed, and keeps
such blocks in its heap afterwards, so that the peak varies from run to run by up to a few hundred MiB that no
data occupies; the fixed threshold shows what the loaders themselves hold.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CASES = {  # name: (loader, training transforms)
    "memory, pad-crop-flip": ("memory", "crop_flip"),
    "stream, pad-crop-flip (device)": ("stream", "crop_flip"),
    "stream, RandomResizedCrop + flip": ("stream", "resized_crop"),
}


def write_tree(root: str, n: int, size: int, classes: int = 10) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("val", max(classes, n // 4))):
        for k in range(count):
            c = k % classes
            folder = os.path.join(root, split, f"c{c:02d}")
            os.makedirs(folder, exist_ok=True)
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            pixels[..., c % 3] //= 2
            Image.fromarray(pixels).save(os.path.join(folder, f"{k:06d}.png"))


def transforms(kind: str, size: int) -> list:
    v2 = "torchvision.transforms.v2."
    if kind == "crop_flip":
        return [{"_target_": v2 + "RandomCrop", "size": size, "padding": 4}, {"_target_": v2 + "RandomHorizontalFlip"}]
    return [{"_target_": v2 + "RandomResizedCrop", "size": size, "antialias": True},
            {"_target_": v2 + "RandomHorizontalFlip"}]


def child(args) -> None:
    import resource

    import torch

    from lstsd.data import build_data
    from lstsd.data.readers.imagefolder import ImageFolderConfig

    import hydra.utils  # noqa: F401 - imported before the clock starts: the libraries' import time is no part of it
    import PIL.PngImagePlugin  # noqa: F401
    import torchvision.io  # noqa: F401
    import torchvision.transforms.v2  # noqa: F401

    torch.set_num_threads(1)
    baseline = rss_mib()
    loader, kind = CASES[args.case]
    cfg = ImageFolderConfig(name="imagefolder", root=args.folder, loader=loader, num_workers=args.workers,
                            batch_size=args.batch_size, train_transforms=transforms(kind, args.size),
                            eval_transforms=[])
    t0 = time.perf_counter()
    data = build_data(cfg, seed=0, device="cpu")
    t1 = time.perf_counter()
    n = 0
    for epoch in range(args.epochs):
        for batch in data.train.epoch(epoch):
            n += len(batch.y)
    t2 = time.perf_counter()
    kib = lambda who: resource.getrusage(who).ru_maxrss / 1024  # noqa: E731 - Linux: KiB -> MiB
    print(json.dumps({"build_s": t1 - t0, "images_per_s": n / (t2 - t1), "main_mib": kib(resource.RUSAGE_SELF),
                      "baseline_mib": baseline, "worker_mib": kib(resource.RUSAGE_CHILDREN),
                      "images": data.info.num_train}))


def rss_mib() -> float:
    """The current resident memory of this process (Linux), in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--folder", help="an ImageFolder tree to read instead of a written one")
    parser.add_argument("--malloc-default", action="store_true",
                        help="leave glibc's dynamic mmap threshold on (see the module docstring)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        return child(args)
    with tempfile.TemporaryDirectory() as tmp:
        if args.folder is None:
            args.folder = tmp
            write_tree(tmp, args.images, args.size)
        print(f"| loader ({args.images} PNGs of {args.size}x{args.size}, {args.workers} workers, batch "
              f"{args.batch_size}) | images/s | build s | peak RSS main MiB (over the libraries) | "
              f"peak RSS worker MiB |")
        print("|---|---|---|---|---|")
        for case in CASES:
            cmd = [sys.executable, __file__, "--case", case, "--folder", args.folder,
                   "--size", str(args.size), "--epochs", str(args.epochs), "--workers", str(args.workers),
                   "--batch-size", str(args.batch_size)]
            env = dict(os.environ) if args.malloc_default else {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.strip()
            r = json.loads(out.splitlines()[-1])
            worker = f"{r['worker_mib']:.0f}"
            print(f"| {case} | {r['images_per_s']:.0f} | {r['build_s']:.2f} | {r['main_mib']:.0f} "
                  f"(+{r['main_mib'] - r['baseline_mib']:.0f}) | {worker} |")


if __name__ == "__main__":
    main()
