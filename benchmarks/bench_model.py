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

Both get the same threads: minissd through minissd.backend.set_num_threads
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

from minissd.backend import set_num_threads  # noqa: E402

from minissd.config import get_config  # noqa: E402
from minissd.model import SSD  # noqa: E402
from minissd.optim import SGD  # noqa: E402
from minissd.weights import from_ssd_pytorch  # noqa: E402

try:
    import torch  # noqa: E402
    import torch.nn.functional as F  # noqa: E402
except ImportError:
    sys.exit("bench_model.py needs torch for the comparison: .venv/bin/pip install torch")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from torch_reference import TorchSSD, plan_of  # noqa: E402

from minissd.loss import MultiBoxLoss  # noqa: E402

NEG_POS_RATIO = 3
POSITIVE_FRACTION = 0.015


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


def twin_models(name, num_classes, seed=0):
    """A minissd SSD and a TorchSSD holding the same weights."""
    cfg = get_config(name)
    model = SSD(cfg, num_classes, seed=seed)
    torch.manual_seed(seed)
    ref = TorchSSD(plan_of(model.arch), cfg.num_boxes_per_location, num_classes + 1)
    model.load_state_dict(from_ssd_pytorch(model, {k: v.numpy() for k, v in ref.state_dict().items()}))
    return cfg, model, ref


def random_targets(B, P, num_classes, rng):
    labels = np.where(rng.random((B, P)) < POSITIVE_FRACTION,
                      rng.integers(1, num_classes + 1, (B, P)), 0).astype(np.int64)   # (B, P)
    offsets = rng.standard_normal((B, P, 4)).astype(np.float32)                        # (B, P, 4)
    return offsets, labels


def torch_multibox_loss(loc, conf, loc_t, conf_t):
    """MultiBoxLoss in torch: (smooth L1 on positives + CE on positives and mined negatives) / N."""
    B, P, K = conf.shape
    pos = conf_t > 0
    n = pos.sum().clamp(min=1)
    loss_loc = F.smooth_l1_loss(loc[pos], loc_t[pos], reduction="sum")
    ce = F.cross_entropy(conf.reshape(-1, K), conf_t.reshape(-1), reduction="none").view(B, P)
    with torch.no_grad():
        hardness = ce.masked_fill(pos, -float("inf"))
        rank = hardness.argsort(1, descending=True).argsort(1)
        num_pos = pos.sum(1, keepdim=True)
        quota = torch.minimum(NEG_POS_RATIO * num_pos, P - num_pos)
        selected = pos | ((rank < quota) & ~pos)
    return (loss_loc + ce[selected].sum()) / n


def bench_train_step(rng):
    num_classes = 3
    cfg, model, ref = twin_models("ssd-tiny", num_classes)
    B, S, P = ARGS.batch, cfg.image_size, cfg.num_priors
    images = rng.standard_normal((B, 3, S, S)).astype(np.float32)
    loc_t, conf_t = random_targets(B, P, num_classes, rng)

    criterion = MultiBoxLoss(neg_pos_ratio=NEG_POS_RATIO)
    opt = SGD(model, lr=1e-4, momentum=0.9, weight_decay=5e-4)

    def minissd_step():
        loc, conf = model.forward(images)
        criterion.forward(loc, conf, loc_t, conf_t)
        dloc, dconf = criterion.backward()
        model.backward(dloc, dconf, need_dimages=False)      # as training: no image gradient
        opt.step()

    t_images, t_loc, t_conf = map(torch.from_numpy, (images, loc_t, conf_t))
    t_opt = torch.optim.SGD(ref.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)

    def torch_step():
        t_opt.zero_grad()
        loc, conf = ref(t_images)
        torch_multibox_loss(loc, conf, t_loc, t_conf).backward()
        t_opt.step()

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
