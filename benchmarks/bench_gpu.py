"""GPU: minissd on CuPy beside the same network in PyTorch (cuDNN), on the same GPU.

    python benchmarks/bench_gpu.py                                   # needs CuPy, torch and a GPU
    python benchmarks/bench_gpu.py --data .dev/voc5-mini --classes bus,car,cat,person,train
    python benchmarks/bench_gpu.py --device cpu --quick              # a smoke test of the script

Cases, float32, each a full training step -- forward, MultiBoxLoss (3:1 hard
negative mining), backward, SGD with momentum 0.9 and weight decay 5e-4 --
on fixed random images and targets (~1.5 % positives), so that matching and
data loading are not timed:

  * ssd-tiny and ssd-cpu at batch 32;
  * SSD300 at batch 8 and 32.

PyTorch runs tests/torch_reference.py's TorchSSD (ssd.pytorch's layout)
holding the same weights, the same loss written in torch, autograd and
torch.optim.SGD, with cudnn.benchmark on. Each time is the median of
``--repeats`` steps after ``--warmup`` untimed ones, with the GPU synchronised
before and after each step. Peak memory: for minissd the bytes CuPy's memory
pool holds after the steps (the pool keeps what it once needed, so this is
the peak it reserved), for torch ``torch.cuda.max_memory_reserved()``.

With ``--data``: ``--steps`` real training steps of ``--loader-config`` through
minissd's DataLoader (SSD augmentation, ``--workers`` threads), timing how
long each step waits for its batch: the GPU's idle fraction is
wait / (wait + step). Needs torch (not a minissd dependency).
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cuda (the benchmark) or cpu (to check the script without a GPU)")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per case (median)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--quick", action="store_true", help="tiny batches and 1 repeat: a smoke test")
    p.add_argument("--data", help="a VOC root: also measure the data loader against the GPU")
    p.add_argument("--classes", help="comma-separated class names for --data (else its classes.txt)")
    p.add_argument("--workers", type=int, default=4, help="DataLoader threads for --data")
    p.add_argument("--steps", type=int, default=30, help="training steps for --data")
    p.add_argument("--loader-config", default="ssd-cpu",
                   help="the config those steps train (its input size sets the loader's work)")
    return p.parse_args(argv)


ARGS = parse_args()

import numpy as np  # noqa: E402

from minissd.nn import backend  # noqa: E402

try:
    import torch  # noqa: E402
except ImportError:
    sys.exit("bench_gpu.py needs torch for the comparison: pip install torch")

from common import random_targets, training_steps, twin_models  # noqa: E402

XP = backend.xp_for(ARGS.device)          # cupy, or numpy for --device cpu (raises if CUDA is missing)
CUPY = backend.cupy_module() if ARGS.device == "cuda" else None
TORCH_DEVICE = torch.device(ARGS.device)


def sync():
    backend.synchronize(XP)
    if ARGS.device == "cuda":
        torch.cuda.synchronize()


def median_ms(fn):
    """Median wall ms of fn() over ARGS.repeats runs after ARGS.warmup, synchronised."""
    for _ in range(ARGS.warmup):
        fn()
    sync()
    times = []
    for _ in range(ARGS.repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def minissd_memory(reset=False):
    """Bytes CuPy's pool holds (reset: hand every cached block back first); None on the CPU."""
    if CUPY is None:
        return None
    pool = CUPY.get_default_memory_pool()
    if reset:
        pool.free_all_blocks()
    return pool.total_bytes()


def torch_memory(reset=False):
    if ARGS.device != "cuda":
        return None
    if reset:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return torch.cuda.max_memory_reserved()


def bench_case(name, batch, rng, num_classes=20):
    """(minissd ms, torch ms, minissd bytes, torch bytes) of one training step."""
    cfg, model, ref = twin_models(name, num_classes)
    model.to(ARGS.device)
    ref.to(TORCH_DEVICE)
    B, S, P = batch, cfg.image_size, cfg.num_priors
    images = rng.standard_normal((B, 3, S, S)).astype(np.float32)
    loc_t, conf_t = random_targets(B, P, num_classes, rng)

    minissd_step, torch_step = training_steps(model, ref, images, loc_t, conf_t, XP, TORCH_DEVICE)

    minissd_memory(reset=True)
    ms = median_ms(minissd_step)
    mem_m = minissd_memory()
    del model, minissd_step                          # hand minissd's arrays back
    minissd_memory(reset=True)
    torch_memory(reset=True)
    mt = median_ms(torch_step)
    mem_t = torch_memory()
    return ms, mt, mem_m, mem_t


def bench_loader(rng):
    """(images/s, GPU idle fraction, mean wait ms, mean step ms) of real training steps."""
    from minissd.train import TrainConfig, Trainer
    classes = [c for c in ARGS.classes.split(",") if c] if ARGS.classes else None
    trainer = Trainer(TrainConfig(data=[ARGS.data], classes=classes, config=ARGS.loader_config,
                                  device=ARGS.device, workers=ARGS.workers, batch_size=32,
                                  augment="ssd", lr=1e-3), log=lambda *_: None)
    trainer.model.train()
    batches = iter(trainer.loader)
    wait = step = 0.0
    seen = 0
    for i in range(ARGS.steps):
        t0 = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(trainer.loader)
            batch = next(batches)
        t1 = time.perf_counter()
        trainer.train_step(batch)                    # returns float(loss): the GPU is done
        sync()
        t2 = time.perf_counter()
        if i >= 2:                                   # the first batches fill the prefetch queue
            wait, step, seen = wait + t1 - t0, step + t2 - t1, seen + len(batch.ids)
    n = max(ARGS.steps - 2, 1)
    return seen / (wait + step), wait / (wait + step), 1e3 * wait / n, 1e3 * step / n


def mib(b):
    return "n/a" if b is None else f"{b / 2**20:.0f}"


def main():
    if ARGS.quick:
        ARGS.repeats, ARGS.warmup, ARGS.steps = 1, 1, min(ARGS.steps, 4)
    torch.backends.cudnn.benchmark = True
    rng = np.random.default_rng(0)
    cases = [("ssd-tiny", 4), ("ssd-cpu", 4), ("ssd300", 1), ("ssd300", 2)] if ARGS.quick else \
        [("ssd-tiny", 32), ("ssd-cpu", 32), ("ssd300", 8), ("ssd300", 32)]
    gpu = torch.cuda.get_device_name() if ARGS.device == "cuda" else "none (--device cpu)"
    print(f"device {ARGS.device} ({gpu}); median of {ARGS.repeats} steps (+{ARGS.warmup} warm-up); "
          f"float32; numpy {np.__version__}, torch {torch.__version__}"
          + (f", cupy {CUPY.__version__}, cuDNN {torch.backends.cudnn.version()}" if CUPY else ""))
    print(f"{'training step':<24}{'minissd ms':>11}{'torch ms':>10}{'ratio':>7}"
          f"{'minissd img/s':>15}{'torch img/s':>13}{'minissd MiB':>13}{'torch MiB':>11}")
    for name, batch in cases:
        ms, mt, mem_m, mem_t = bench_case(name, batch, rng)
        print(f"{name + ', batch ' + str(batch):<24}{ms:>11.1f}{mt:>10.1f}{ms / mt:>7.2f}"
              f"{1e3 * batch / ms:>15.1f}{1e3 * batch / mt:>13.1f}{mib(mem_m):>13}{mib(mem_t):>11}")
    if ARGS.data:
        ips, idle, wait_ms, step_ms = bench_loader(rng)
        print(f"data loader ({ARGS.workers} threads, SSD augmentation, {ARGS.loader_config} batch 32, "
              f"{ARGS.steps} steps): {ips:.1f} img/s, waits {wait_ms:.1f} ms per step for a batch "
              f"against {step_ms:.1f} ms of step: GPU idle {100 * idle:.0f} %")


if __name__ == "__main__":
    main()
