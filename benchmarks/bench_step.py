"""Where a training step's time goes: targets, forward, loss, backward, update, on 1 and N threads.

    .venv/bin/python benchmarks/bench_step.py                      # ssd-cpu on voc5-mini, 1 and 2 threads
    .venv/bin/python benchmarks/bench_step.py --config ssd-tiny --threads 1,4

Loads ``--batches`` real training batches first (the loader's augmented photos, so
that loading is not timed), then runs ``Trainer.train_step``'s phases on them one
after another and prints, per phase, the wall and the CPU milliseconds of a step
(median over the batches and ``--repeats`` passes), for each thread count and with
the training targets' textbook versions (matching and mining; ``minissd.ssd.matching``
and ``.loss``) and their fast paths (``minissd.ssd.fast``), the two taking turns
step by step. A phase whose CPU time is close to
its wall time at 2 threads ran on one core. The layers' fast paths stay on.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

from minissd.nn import fast  # noqa: E402
from minissd.nn.threads import set_num_threads  # noqa: E402
from minissd.ssd.matching import match_batch  # noqa: E402
from minissd.train import TrainConfig, Trainer, pad_batch_targets  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHASES = ("targets", "forward", "loss", "backward", "update")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", nargs="?", default=str(REPO.parent / "shared" / "data" / "voc5-mini"))
    p.add_argument("--classes", default="bus,car,cat,person,train")
    p.add_argument("--config", default="ssd-cpu")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--batches", type=int, default=6, help="batches loaded")
    p.add_argument("--repeats", type=int, default=2, help="passes over the batches")
    return p.parse_args(argv)


def step_phases(trainer, batch, fast_targets):
    """One training step, phase by phase -> {phase: (wall s, CPU s)}."""
    times, xp = {}, trainer.xp
    clock = [time.perf_counter(), time.process_time()]

    def mark(phase):
        now = [time.perf_counter(), time.process_time()]
        times[phase] = (now[0] - clock[0], now[1] - clock[1])
        clock[:] = now

    with fast.fast_paths(fast_targets):
        gt_boxes, gt_labels = pad_batch_targets(batch, xp)                   # (B, G, 4), (B, G)
        loc_t, conf_t = match_batch(gt_boxes, gt_labels, trainer.priors,
                                    variances=trainer.cfg.variances)         # (B, P, 4), (B, P)
    mark("targets")
    loc, conf = trainer.model.forward(xp.asarray(batch.images))
    mark("forward")
    with fast.fast_paths(fast_targets):
        trainer.criterion.forward(loc, conf, loc_t, conf_t)
        dloc, dconf = trainer.criterion.backward()
    mark("loss")
    trainer.model.backward(dloc, dconf, need_dimages=False)
    mark("backward")
    trainer.optimizer.step()
    trainer.first_non_finite()
    mark("update")
    return times


def main(argv=None):
    args = parse_args(argv)
    tc = TrainConfig(data=[args.root], classes=args.classes.split(","), config=args.config, epochs=1,
                     lr=1e-4, augment="ssd", workers=1, out=str(REPO / "runs" / "bench-step-unused"))
    trainer = Trainer(tc, log=lambda *a: None)
    trainer.loader.set_epoch(0)
    batches = []
    for batch in trainer.loader:
        batches.append(batch)
        if len(batches) == args.batches:
            break
    print(f"{platform.node()}  {platform.processor() or platform.machine()}  numpy {np.__version__}  "
          f"{args.config}, {len(batches)} batches x {args.repeats} of {tc.batch_size} from {args.root}")
    print(f"\nms per step, wall / CPU (median)   " + "".join(f"{p:>14}" for p in PHASES)
          + "           step   images/s")
    for n in [int(t) for t in args.threads.split(",")]:
        set_num_threads(n)
        runs = {False: [], True: []}                  # textbook / fast targets, interleaved so that
        for repeat in range(args.repeats):            # the machine's drifting speed hits both alike
            for i, batch in enumerate(batches):
                for fast_targets in ((False, True) if (i + repeat) % 2 else (True, False)):
                    times = step_phases(trainer, batch, fast_targets)
                    if i or repeat:                   # the very first steps warm up
                        runs[fast_targets].append(times)
        for fast_targets in (False, True):
            rs = runs[fast_targets]
            med = {p: [1000 * float(np.median([r[p][k] for r in rs])) for k in (0, 1)] for p in PHASES}
            wall = 1000 * float(np.median([sum(r[p][0] for p in PHASES) for r in rs]))
            cpu = 1000 * float(np.median([sum(r[p][1] for p in PHASES) for r in rs]))
            label = f"{n} thread{'s' if n > 1 else ' '}, targets {'fast' if fast_targets else 'textbook'}"
            print(f"  {label:<32}" + "".join(f"{w:7.0f} /{c:5.0f}" for w, c in med.values())
                  + f"  {wall:6.0f} /{cpu:5.0f}   {1000 * tc.batch_size / wall:7.1f}")


if __name__ == "__main__":
    main()
