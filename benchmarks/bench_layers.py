"""Conv2d and MaxPool2d, forward + backward, float32: minissd (NumPy) beside PyTorch (CPU).

    .venv/bin/python benchmarks/bench_layers.py                 # all shapes, threads = nproc
    .venv/bin/python benchmarks/bench_layers.py --threads 1 --clock cpu   # on a busy machine

Both libraries get the same number of threads: minissd through
minissd.nn.threads.set_num_threads (its own pool, each task calling a one-thread
BLAS; OPENBLAS_NUM_THREADS / OMP_NUM_THREADS are set too, before numpy is
imported), torch through torch.set_num_threads. Each timing is the median (and the
min) of ``--repeats`` runs after ``--warmup`` untimed ones. torch's backward is autograd:
x, weight and bias require grad and ``y.backward(dy)`` fills all three, the same
work as minissd's ``backward`` (dx, dW, db). Needs torch (not a minissd
dependency): ``.venv/bin/pip install torch``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

# (name, N, C, H, W, K, kernel, stride, padding, dilation)
CONV_CASES = [
    ("conv 3x3", 16, 64, 64, 64, 64, 3, 1, 1, 1),
    ("fc6 dil 6", 8, 128, 19, 19, 256, 3, 1, 6, 6),
    ("3x3 stride 2", 16, 128, 20, 20, 256, 3, 2, 1, 1),
]
# (name, N, C, H, W, kernel, stride, padding, ceil_mode)
POOL_CASES = [
    ("pool 2x2/s2", 32, 64, 64, 64, 2, 2, 0, False),
    ("pool5 3x3/s1/p1", 16, 128, 19, 19, 3, 1, 1, False),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads for minissd (its pool) and for torch (default: nproc)")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per case (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    p.add_argument("--only", choices=["conv", "pool"], help="run one group of cases")
    p.add_argument("--case", help="run only the cases whose name contains this text")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall time, or this process's CPU time (with --threads 1 it hardly "
                        "moves when other processes share the cores)")
    return p.parse_args(argv)


ARGS = parse_args()
CLOCK = time.perf_counter if ARGS.clock == "wall" else time.process_time
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)   # must happen before numpy is imported

import numpy as np  # noqa: E402

from minissd.nn.threads import set_num_threads  # noqa: E402

from minissd.nn.layers import Conv2d, MaxPool2d  # noqa: E402

try:
    import torch  # noqa: E402
    import torch.nn.functional as F  # noqa: E402
except ImportError:
    sys.exit("bench_layers.py needs torch for the comparison: .venv/bin/pip install torch")


def time_pair(ours, theirs, repeats, warmup):
    """(median, min) ms of each: all runs of one, then all runs of the other.

    Not alternated: after its work each library's thread pool (OpenBLAS for
    numpy, OpenMP for torch) keeps spinning for a while, and that would steal
    the cores from the other one.
    """
    result = []
    for fn in (ours, theirs):
        time.sleep(0.5)                       # let the other library's threads go to sleep
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            t0 = CLOCK()
            fn()
            times.append(1e3 * (CLOCK() - t0))
        result.append((float(np.median(times)), min(times)))
    return result


def rel_err(a, b):
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))


def bench_conv(case, rng):
    name, N, C, H, W, K, k, s, p, d = case
    conv = Conv2d(C, K, k, stride=s, padding=p, dilation=d, rng=rng)
    conv.params["bias"] = rng.standard_normal(K).astype(np.float32)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    ho, wo = conv.output_shape(H, W)
    dy = rng.standard_normal((N, K, ho, wo)).astype(np.float32)

    def ours():
        conv.forward(x)
        return conv.backward(dy)

    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(conv.params["weight"].copy()).requires_grad_()
    bt = torch.from_numpy(conv.params["bias"].copy()).requires_grad_()
    dyt = torch.from_numpy(dy)

    def theirs():
        xt.grad = wt.grad = bt.grad = None
        F.conv2d(xt, wt, bt, stride=s, padding=p, dilation=d).backward(dyt)

    # the same numbers first: a benchmark of a wrong convolution means nothing
    dx = ours()
    theirs()
    err = max(rel_err(dx, xt.grad.numpy()), rel_err(conv.grads["weight"], wt.grad.numpy()),
              rel_err(conv.grads["bias"], bt.grad.numpy()))
    if err > 1e-4:
        raise SystemExit(f"{name}: minissd and torch gradients differ (relative error {err:.2e})")
    shape = f"({N}, {C}, {H}, {W}) -> {K}, k{k} s{s} p{p} d{d}"
    return (name, shape, *time_pair(ours, theirs, ARGS.repeats, ARGS.warmup))


def bench_pool(case, rng):
    name, N, C, H, W, k, s, p, ceil = case
    pool = MaxPool2d(k, s, p, ceil_mode=ceil)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    ho, wo = pool.output_shape(H, W)
    dy = rng.standard_normal((N, C, ho, wo)).astype(np.float32)

    def ours():
        pool.forward(x)
        return pool.backward(dy)

    xt = torch.from_numpy(x).requires_grad_()
    dyt = torch.from_numpy(dy)

    def theirs():
        xt.grad = None
        F.max_pool2d(xt, k, s, p, ceil_mode=ceil).backward(dyt)

    dx = ours()
    theirs()
    if rel_err(dx, xt.grad.numpy()) > 1e-6:
        raise SystemExit(f"{name}: minissd and torch max-pool gradients differ")
    shape = f"({N}, {C}, {H}, {W}), k{k} s{s} p{p}" + (" ceil" if ceil else "")
    return (name, shape, *time_pair(ours, theirs, ARGS.repeats, ARGS.warmup))


def main():
    torch.set_num_threads(ARGS.threads)
    set_num_threads(ARGS.threads)          # minissd's own pool (BLAS then runs one thread per task)
    rng = np.random.default_rng(0)
    load_before = os.getloadavg()[0]
    rows = []
    picked = [c for c in CONV_CASES + POOL_CASES if ARGS.case is None or ARGS.case in c[0]]
    if ARGS.only in (None, "conv"):
        rows += [bench_conv(c, rng) for c in CONV_CASES if c in picked]
    if ARGS.only in (None, "pool"):
        rows += [bench_pool(c, rng) for c in POOL_CASES if c in picked]
    print(f"threads: {ARGS.threads} (minissd's pool and torch); {ARGS.clock} time; float32, forward + backward; "
          f"median (min) of {ARGS.repeats} after {ARGS.warmup} warm-up; "
          f"torch {torch.__version__}, numpy {np.__version__}; "
          f"1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"| {'case':<16} | {'shape':<38} | {'minissd ms':>15} | {'torch ms':>15} | {'ratio':>5} |")
    print(f"|{'-' * 18}|{'-' * 40}|{'-' * 17}|{'-' * 17}|{'-' * 7}|")
    for name, shape, (ours, ours_min), (theirs, theirs_min) in rows:
        print(f"| {name:<16} | {shape:<38} | {ours:>6.1f} ({ours_min:>6.1f}) | "
              f"{theirs:>6.1f} ({theirs_min:>6.1f}) | {ours / theirs:>5.2f} |")


if __name__ == "__main__":
    main()
