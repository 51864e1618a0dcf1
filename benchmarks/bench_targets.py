"""Training targets: matching and hard negative mining per batch, textbook, fast path and PyTorch.

    .venv/bin/python benchmarks/bench_targets.py                    # ../shared/data/voc5-mini, ssd-cpu
    .venv/bin/python benchmarks/bench_targets.py --config ssd300 --batches 4

Draws ``--batches`` real training batches (the loader's augmented photos of the data
set, as ``minissd train`` sees them) and times, per batch of 32, on one thread:

- matching: ``minissd.ssd.matching.match_batch`` as written (the whole batch padded
  to its most crowded photo, fast paths off), its fast path
  (``minissd.ssd.fast.match_batch``: photo by photo, the same targets bit for bit),
  and ssd.pytorch's algorithm in torch (``match``: one photo at a time, a Python
  loop over its objects for the forced matches);
- mining: ``MultiBoxLoss.mine`` as written (two stable sorts of every photo's
  cross-entropies), its fast path (one partition per photo), and torch's double
  ``argsort`` (ssd.pytorch's rank trick), on the cross-entropies of random logits
  with the batch's matched boxes as positives.

Each number is the median of ``--repeats`` runs over all the batches. The fast paths
are checked equal to the textbook versions here too, and torch's matching against them.

``--train-epochs N`` then runs ``minissd train`` with the hour's settings (ssd-cpu,
``--augment ssd``, ``--workers 2``, minissd's threads) for N epochs, the targets' fast
paths on in every other step -- the same targets either way, so it is one run -- and
prints the steps' times (the log's clock, loading included) of each kind: neighbouring
steps see the same machine and photos alike, which two separate runs on a shared host,
or alternate epochs (whose photos differ in their augmentation), do not.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

from minissd.datasets.augment import train_transform  # noqa: E402
from minissd.datasets.loader import DataLoader  # noqa: E402
from minissd.datasets.voc import VOCDataset  # noqa: E402
from minissd.nn.fast import fast_paths  # noqa: E402
from minissd.ssd.boxes import cxcywh_to_xyxy  # noqa: E402
from minissd.ssd.config import get_config  # noqa: E402
from minissd.ssd.loss import MultiBoxLoss  # noqa: E402
from minissd.ssd.matching import match_batch  # noqa: E402
from minissd.ssd.priors import default_boxes  # noqa: E402
from minissd.train import pad_batch_targets  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", nargs="?", default=str(REPO.parent / "shared" / "data" / "voc5-mini"))
    p.add_argument("--classes", default="bus,car,cat,person,train")
    p.add_argument("--config", default="ssd-cpu")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--train-epochs", type=int, default=0,
                   help="then train this many epochs, the targets' fast paths in every other step")
    return p.parse_args(argv)


# ssd.pytorch's matching (layers/box_utils.py), one photo at a time, in torch
def torch_iou(a, b):                                    # (G, 4), (P, 4) xyxy -> (G, P)
    lo = torch.max(a[:, None, :2], b[None, :, :2])
    hi = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def torch_match(truths, labels, priors, priors_xyxy, threshold, variances):
    overlaps = torch_iou(truths, priors_xyxy)                          # (G, P)
    best_prior = overlaps.argmax(1)                                    # (G,)
    best_truth_overlap, best_truth = overlaps.max(0)                   # (P,)
    best_truth_overlap.index_fill_(0, best_prior, 2)
    for j in range(best_prior.size(0)):                                # later objects win
        best_truth[best_prior[j]] = j
    matched = truths[best_truth]                                       # (P, 4)
    conf = labels[best_truth]
    conf[best_truth_overlap < threshold] = 0
    c = ((matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]) / (variances[0] * priors[:, 2:])
    wh = torch.log((matched[:, 2:] - matched[:, :2]) / priors[:, 2:]) / variances[1]
    return torch.cat([c, wh], 1), conf


def torch_mine(ce, positive, ratio):
    P = ce.shape[1]
    hardness = ce.masked_fill(positive, -float("inf"))
    rank = torch.argsort(torch.argsort(hardness, dim=1, descending=True, stable=True), dim=1)
    num_pos = positive.sum(1, keepdim=True)
    return (rank < torch.minimum(ratio * num_pos, P - num_pos)) & ~positive


def median_ms(fn, items, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for item in items:
            fn(*item)
        times.append((time.perf_counter() - t0) / len(items))
    return 1000 * float(np.median(times))


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    cfg = get_config(args.config)
    data = VOCDataset([(args.root, "trainval")], class_names=args.classes.split(","))
    loader = DataLoader(data, train_transform(cfg.image_size), batch_size=args.batch_size,
                        shuffle=True, seed=0, num_workers=1, drop_last=True)
    loader.set_epoch(0)
    batches = []
    for batch in loader:
        batches.append(pad_batch_targets(batch, np))                   # (B, G, 4), (B, G)
        if len(batches) == args.batches:
            break
    priors = default_boxes(cfg)                                        # (P, 4) float32
    priors_xyxy = cxcywh_to_xyxy(priors)                               # (P, 4)
    variances = cfg.variances
    print(f"{platform.node()}  {platform.processor() or platform.machine()}  numpy {np.__version__}  "
          f"torch {torch.__version__}  one thread")
    print(f"{args.config}: {len(priors)} default boxes; {len(batches)} batches of {args.batch_size} "
          f"from {args.root}; objects per batch: {[int((l > 0).sum()) for _, l in batches]}; "
          f"padded to G = {[l.shape[1] for _, l in batches]}")

    # -- matching
    def textbook(boxes, labels):
        with fast_paths(False):
            return match_batch(boxes, labels, priors, variances=variances)

    def fast(boxes, labels):
        with fast_paths(True):
            return match_batch(boxes, labels, priors, variances=variances)

    t_priors, t_priors_xyxy = torch.from_numpy(priors), torch.from_numpy(priors_xyxy)
    t_batches = [[(torch.from_numpy(b[i][l[i] > 0]), torch.from_numpy(l[i][l[i] > 0]))
                  for i in range(len(l))] for b, l in batches]

    def torch_batch(photos):
        return [torch_match(t, lab, t_priors, t_priors_xyxy, 0.5, variances) if len(t) else None
                for t, lab in photos]

    for (boxes, labels), photos in zip(batches, t_batches):          # the three agree
        want, got = textbook(boxes, labels), fast(boxes, labels)
        assert all(np.array_equal(g, w) for g, w in zip(got, want)), "fast matching differs"
        for i, res in enumerate(torch_batch(photos)):
            if res is not None:
                assert np.array_equal(res[1].numpy(), want[1][i]), "torch's matching differs"
    m_text = median_ms(textbook, batches, args.repeats)
    m_fast = median_ms(fast, batches, args.repeats)
    m_torch = median_ms(torch_batch, [(p,) for p in t_batches], args.repeats)

    # -- mining
    rng = np.random.default_rng(0)
    crit = MultiBoxLoss()
    mining = []
    for boxes, labels in batches:
        conf = fast(boxes, labels)[1]                                  # (B, P)
        logits = rng.standard_normal(conf.shape + (len(data.class_names) + 1,)).astype(np.float32)
        ce = np.log(np.exp(logits).sum(2)) - np.take_along_axis(logits, conf[:, :, None], 2)[:, :, 0]
        mining.append((ce.astype(np.float32), conf > 0))

    def mine_textbook(ce, positive):
        with fast_paths(False):
            return crit.mine(ce, positive)

    def mine_fast(ce, positive):
        with fast_paths(True):
            return crit.mine(ce, positive)

    for ce, positive in mining:
        assert np.array_equal(mine_textbook(ce, positive), mine_fast(ce, positive)), "fast mining differs"
    t_mining = [(torch.from_numpy(ce), torch.from_numpy(pos)) for ce, pos in mining]
    n_text = median_ms(mine_textbook, mining, args.repeats)
    n_fast = median_ms(mine_fast, mining, args.repeats)
    n_torch = median_ms(lambda ce, pos: torch_mine(ce, pos, crit.neg_pos_ratio), t_mining, args.repeats)

    print(f"\nms per batch of {args.batch_size} (median of {args.repeats})   textbook      fast   torch"
          f"   textbook/fast   fast/torch")
    for name, (a, b, c) in (("matching", (m_text, m_fast, m_torch)), ("mining", (n_text, n_fast, n_torch))):
        print(f"  {name:<34} {a:9.1f} {b:9.1f} {c:7.1f}   {a / b:12.1f}x   {b / c:9.2f}")
    if args.train_epochs:
        train_alternating(args)


class StepSwitch:
    """Stands in for minissd.nn.fast in the matching and loss modules: on in every other step."""
    on = False

    @staticmethod
    def enabled():
        return StepSwitch.on


def train_alternating(args):
    from minissd import cli
    from minissd.ssd import loss, matching
    from minissd.train import Trainer

    matching.fast = loss.fast = StepSwitch         # the layers keep minissd.nn.fast's switch
    step = Trainer.train_step

    def train_step(self, batch):
        StepSwitch.on = self.step % 2 == 1
        return step(self, batch)

    Trainer.train_step = train_step
    out = tempfile.mkdtemp(prefix="bench-targets-")
    cli.main(["train", "--data", args.root, "--classes", args.classes, "--config", args.config,
              "--epochs", str(args.train_epochs), "--batch-size", str(args.batch_size), "--lr", "3e-3",
              "--decay-at", "0.85,0.95", "--augment", "ssd", "--workers", "2", "--out", out, "--overwrite"])
    with open(os.path.join(out, "train_log.jsonl")) as f:
        ends = [(r["step"], r["time"]) for r in map(json.loads, f) if "step" in r and "time" in r]
    shutil.rmtree(out)
    seconds = {False: [], True: []}                # step k ran fast targets if k - 1 is odd
    for (_, before), (k, end) in zip(ends[1:], ends[2:]):      # the first steps warm up
        seconds[(k - 1) % 2 == 1].append(end - before)
    print(f"\nthe hour's command, {args.train_epochs} epochs, the targets' fast paths in every other step")
    print("targets    steps   median s   mean s   images/s (from the mean)")
    for fast_targets in (False, True):
        s = np.asarray(seconds[fast_targets])
        print(f"  {'fast' if fast_targets else 'textbook':<9}{len(s):6d} {np.median(s):10.3f} {s.mean():8.3f}"
              f" {args.batch_size / s.mean():10.1f}")


if __name__ == "__main__":
    main()
