"""The whole SSD: minissd (NumPy) beside the same network in PyTorch (CPU), float32.

    .venv/bin/python benchmarks/bench_model.py                  # threads = nproc
    .venv/bin/python benchmarks/bench_model.py --threads 1 --repeats 5 --skip-ssd300

Cases:
  * ssd-tiny training step at batch 32: forward + MultiBoxLoss + backward + SGD
    (momentum 0.9, weight decay 5e-4); neither computes a gradient for the
    images. The targets (loc offsets, labels with ~1.5 % positives) are fixed
    random arrays made once, so matching and data loading are not timed.
    PyTorch runs tests/torch_reference.py's TorchSSD (ssd.pytorch's layout,
    with ssd-tiny's BatchNorms) holding the same weights, the same loss written
    in torch (smooth L1 + cross-entropy with 3:1 hard negative mining), autograd
    and torch.optim.SGD.
  * SSD300 forward (eval mode, no caches / torch.no_grad) at batch 1 and 8.

Both get the same threads: minissd through minissd.nn.threads.set_num_threads
(its own pool; OPENBLAS_NUM_THREADS / OMP_NUM_THREADS are set too, before numpy
is imported), torch through torch.set_num_threads. Each timing is the median of ``--repeats`` runs after
``--warmup`` untimed ones, as wall time and as CPU time of the process (the
CPU time is the steadier number on a machine shared with other jobs). Needs
torch (not a minissd dependency).
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads for minissd (its pool) and for torch (default: nproc)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    p.add_argument("--batch", type=int, default=32, help="ssd-tiny training batch")
    p.add_argument("--skip-ssd300", action="store_true", help="only the ssd-tiny training step")
    return p.parse_args(argv)


ARGS = parse_args()
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)   # must happen before numpy is imported

import numpy as np  # noqa: E402

from minissd.nn.threads import set_num_threads  # noqa: E402

try:
    import torch  # noqa: E402
except ImportError:
    sys.exit("bench_model.py needs torch for the comparison: .venv/bin/pip install torch")

from common import random_targets, training_steps, twin_models  # noqa: E402


def median_ms(fn, repeats, warmup):
    """(median wall ms, median process CPU ms) of fn()."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1e3 * float(np.median(wall)), 1e3 * float(np.median(cpu))


def bench_train_step(rng):
    num_classes = 3
    cfg, model, ref = twin_models("ssd-tiny", num_classes)
    B, S, P = ARGS.batch, cfg.image_size, cfg.num_priors
    images = rng.standard_normal((B, 3, S, S)).astype(np.float32)
    loc_t, conf_t = random_targets(B, P, num_classes, rng)

    minissd_step, torch_step = training_steps(model, ref, images, loc_t, conf_t)

    ms = median_ms(minissd_step, ARGS.repeats, ARGS.warmup)
    mt = median_ms(torch_step, ARGS.repeats, ARGS.warmup)
    return [(f"ssd-tiny train step, batch {B}", ms, mt)]


def bench_ssd300_forward(rng):
    cfg, model, ref = twin_models("ssd300", 20)
    model.eval()
    ref.eval()
    rows = []
    for B in (1, 8):
        images = rng.standard_normal((B, 3, cfg.image_size, cfg.image_size)).astype(np.float32)
        t_images = torch.from_numpy(images)

        def torch_forward():
            with torch.no_grad():
                ref(t_images)

        ms = median_ms(lambda: model.forward(images), ARGS.repeats, ARGS.warmup)
        mt = median_ms(torch_forward, ARGS.repeats, ARGS.warmup)
        rows.append((f"SSD300 forward, batch {B}", ms, mt))
    return rows


def main():
    torch.set_num_threads(ARGS.threads)
    set_num_threads(ARGS.threads)          # minissd's own pool (BLAS then runs one thread per task)
    rng = np.random.default_rng(0)
    print(f"threads {ARGS.threads}, median of {ARGS.repeats} (+{ARGS.warmup} warm-up), float32, "
          f"numpy {np.__version__}, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    rows = bench_train_step(rng)
    if not ARGS.skip_ssd300:
        rows += bench_ssd300_forward(rng)
    print(f"{'case':<46}{'minissd ms':>12}{'torch ms':>10}{'ratio':>7}"
          f"{'minissd cpu':>13}{'torch cpu':>11}{'ratio':>7}")
    for name, (ms, cs), (mt, ct) in rows:
        print(f"{name:<46}{ms:>12.1f}{mt:>10.1f}{ms / mt:>7.2f}{cs:>13.1f}{ct:>11.1f}{cs / ct:>7.2f}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
