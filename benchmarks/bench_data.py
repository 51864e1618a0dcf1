"""Training data pipeline speed: decode + SSD augmentation + batching, images per second.

    .venv/bin/python benchmarks/bench_data.py                       # ../shared/data/voc5-mini
    .venv/bin/python benchmarks/bench_data.py /path/to/VOC2007 --classes voc --images 1024

First the cost of each step on one thread (mean over up to 200 images), then the
whole pipeline's cost per image as the textbook steps run it and as its fused fast path
(``minissd.datasets.augment_fast``, the same output bit for bit) runs it, then the
DataLoader's throughput over ``--images`` images with 1 worker thread and with one per
core (``--workers`` to choose), textbook and fast, each the best of ``--repeats`` epochs;
with ``--mosaic P`` also the fast path with that share of mosaic samples (``minissd train
--mosaic P``: each decodes four photos).
"CPUs busy" is the process's CPU time per second of wall time: near the worker
count when the threads really run in parallel (PIL and NumPy release the GIL),
lower when they wait for the GIL -- or for other programs sharing the cores.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from minissd.datasets.augment import get_mosaic, train_transform
from minissd.datasets.voc import VOC_CLASSES, VOCDataset, load_image
from minissd.datasets.loader import DataLoader
from minissd.nn.fast import fast_paths

REPO = Path(__file__).resolve().parents[1]
VOC5_CLASSES = ("bus", "car", "cat", "person", "train")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", nargs="?", default=str(REPO.parent / "shared" / "data" / "voc5-mini"),
                   help="VOC-layout folder (default: ../shared/data/voc5-mini)")
    p.add_argument("--split", default="trainval")
    p.add_argument("--classes", default="voc5", help="voc5, voc, or comma-separated names")
    p.add_argument("--size", type=int, default=300, help="network input side")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--images", type=int, default=512, help="images per timed epoch")
    p.add_argument("--workers", default=None, help="comma-separated worker counts (default: 1,nproc)")
    p.add_argument("--repeats", type=int, default=2, help="timed epochs per worker count (best)")
    p.add_argument("--mosaic", type=float, default=0.0,
                   help="also time the loader with this share of mosaic samples (0: not)")
    return p.parse_args(argv)


class Subset:
    """The first n images of a data set (same load/ids interface)."""

    def __init__(self, dataset, n):
        self.dataset, self.ids = dataset, dataset.ids[:n]

    def __len__(self):
        return len(self.ids)

    def load(self, i):
        return self.dataset.load(i)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def step_times(dataset, transform, n):
    """Mean milliseconds per image of decoding and of each transform step."""
    times = {"decode (PIL)": []} | {type(t).__name__: [] for t in transform.transforms}
    for i in range(n):
        rng = np.random.default_rng(i)
        start = time.perf_counter()
        image = load_image(dataset.records[i].image_path)
        times["decode (PIL)"].append(time.perf_counter() - start)
        _, boxes, labels = dataset.load(i)
        for t in transform.transforms:
            start = time.perf_counter()
            image, boxes, labels = t(image, boxes, labels, rng)
            times[type(t).__name__].append(time.perf_counter() - start)
    return {name: 1e3 * float(np.mean(v)) for name, v in times.items()}


def pipeline_time(dataset, transform, n, fast):
    """Mean ms per image of the whole pipeline after decoding, its fast path on or off."""
    samples = [dataset.load(i) for i in range(n)]
    with fast_paths(fast):
        start = time.perf_counter()
        for i, (image, boxes, labels) in enumerate(samples):
            transform(image, boxes, labels, np.random.default_rng(i))
    return 1e3 * (time.perf_counter() - start) / n


def python_overhead(dataset, n):
    """Mean ms per image of the same pipeline on 8x8 pixels: the interpreter's share of the work.

    That part holds the GIL; the pixel work (PIL decode and resize, NumPy loops) releases
    it. So overhead / total bounds how far worker threads can scale (Amdahl's law).
    The textbook steps, as in the per-step table whose total it is compared with.
    """
    transform = train_transform(8)
    tiny = np.full((8, 8, 3), 128, np.uint8)
    samples = [(r.boxes_xyxy * (8 / max(r.height, r.width)), r.labels) for r in dataset.records[:n]]
    with fast_paths(False):
        start = time.perf_counter()
        for i, (boxes, labels) in enumerate(samples):
            transform(tiny, boxes, labels, np.random.default_rng(i))
    return 1e3 * (time.perf_counter() - start) / n


def loader_speed(dataset, transform, batch_size, workers, repeats, mosaic=None):
    """Best images/s over ``repeats`` full epochs (thread start-up included), and the
    CPU time the process used per second of it (above 1: threads ran at the same time)."""
    loader = DataLoader(dataset, transform, batch_size, shuffle=True, seed=0, num_workers=workers,
                        mosaic=mosaic)
    best = (0.0, 0.0)
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        count = sum(len(batch.ids) for batch in loader)
        wall = time.perf_counter() - start
        best = max(best, (count / wall, (time.process_time() - cpu_start) / wall))
    return best


def main():
    args = parse_args()
    classes = {"voc5": VOC5_CLASSES, "voc": VOC_CLASSES}.get(args.classes) or tuple(
        c.strip() for c in args.classes.split(",") if c.strip())
    dataset = VOCDataset([(args.root, args.split)], class_names=classes)
    subset = Subset(dataset, args.images)
    transform = train_transform(args.size)
    nproc = os.cpu_count() or 1
    workers = ([int(w) for w in args.workers.split(",")] if args.workers
               else sorted({1, nproc}))

    print(f"data: {args.root} ({args.split}, {len(subset)} of {len(dataset)} images), "
          f"input {args.size}x{args.size}, batch {args.batch_size}")
    print(f"machine: {nproc} CPUs ({cpu_model()}), numpy {np.__version__}, "
          f"python {platform.python_version()}")
    print()
    print("textbook step (one thread)   ms / image")
    steps = step_times(dataset, transform, min(args.images, 200))
    for name, ms in steps.items():
        print(f"  {name:<22} {ms:8.2f}")
    total = sum(steps.values())
    print(f"  {'total':<22} {total:8.2f}   (= {1e3 / total:.0f} images/s)")
    overhead = python_overhead(dataset, min(args.images, 200))
    print(f"  {'same on 8x8 pixels':<22} {overhead:8.2f}   (interpreter work holding the GIL: "
          f"{100 * overhead / total:.0f} %,")
    print(f"  {'':<22} {'':8}    so threads can scale to about {total / overhead:.0f} workers)")
    print()
    n = min(args.images, 200)
    textbook, fused = (pipeline_time(dataset, transform, n, fast) for fast in (False, True))
    print("whole pipeline after decoding (one thread)   ms / image")
    print(f"  {'textbook (step after step)':<42} {textbook:6.2f}")
    print(f"  {'fast path (augment_fast.train_sample)':<42} {fused:6.2f}   "
          f"({textbook / fused:.2f}x faster)")
    print()
    print("DataLoader workers   path       images/s   speed-up   CPUs busy")
    base = None
    paths = [(False, None), (True, None)]
    if args.mosaic:
        paths.append((True, get_mosaic(args.mosaic, args.size)))
    for w in workers:
        for fast, mosaic in paths:
            with fast_paths(fast):
                speed, busy = loader_speed(subset, transform, args.batch_size, w, args.repeats,
                                           mosaic)
            base = base or speed
            name = f"mosaic {args.mosaic:g}" if mosaic else "fast" if fast else "textbook"
            print(f"  {w:>17}   {name:<10} {speed:8.1f}   {speed / base:7.2f}x   {busy:9.2f}")


if __name__ == "__main__":
    main()
