"""Training SSD: the loop, resume, the NaN guard and the log.

One step is the whole algorithm of the paper in six lines::

    loc, conf = model.forward(images)                       # (B, P, 4), (B, P, C+1)
    loc_t, conf_t = match_batch(gt_boxes, gt_labels, priors) # targets per default box
    loss = criterion.forward(loc, conf, loc_t, conf_t)     # smooth L1 + mined CE, / N
    dloc, dconf = criterion.backward()
    model.backward(dloc, dconf)                             # fills every layer's grads
    optimizer.step()                                        # momentum SGD + weight decay

Checkpoints (:mod:`minissd.checkpoint`) are written at every epoch's end. The
loader's order depends only on (seed, epoch), so ``resume`` from an epoch
boundary continues exactly.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from minissd.checkpoint import read_checkpoint, save_checkpoint, section
from minissd.nn import backend
from minissd.nn.optim import SGD, WarmupMultiStep
from minissd.ssd.config import get_config
from minissd.ssd.loss import MultiBoxLoss
from minissd.ssd.matching import match_batch, pad_targets
from minissd.ssd.model import SSD
from minissd.ssd.priors import default_boxes


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the images."""


@dataclass
class TrainConfig:
    """Everything a training run needs; saved in each checkpoint."""
    data: list = field(default_factory=list)   # VOC roots
    split: str = "trainval"
    config: str = "ssd-tiny"
    classes: list | None = None                # None: the root's classes.txt, else the 20 VOC classes
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int | None = None            # None: 5 % of the run, at most 500 steps
    decay_at: tuple = (2 / 3, 5 / 6)           # fractions of the run, as SSD's 80k/100k of 120k
    seed: int = 0
    device: str = "cpu"
    workers: int = 2
    out: str = "runs/train"
    max_minutes: float | None = None           # stop (and checkpoint) after this much time
    log_every: int = 10
    augment: str = "ssd"                      # 'ssd' (the paper's), 'flip' or 'none'
    eval_every: int = 0                        # VOC07 mAP on eval_split every N epochs (0: never)
    eval_split: str | None = None              # a split of the same roots, e.g. 'val'


def pad_batch_targets(batch, xp):
    """List of per-image boxes/labels -> padded (B, G, 4) and (B, G) arrays on ``xp``."""
    boxes, labels = pad_targets(batch.boxes, batch.labels)
    return xp.asarray(boxes), xp.asarray(labels)


# --------------------------------------------------------------------------- #
# Progress
# --------------------------------------------------------------------------- #
class Progress:
    """A one-line progress bar on stderr (redrawn on a terminal, printed every few steps otherwise)."""

    def __init__(self, total, prefix="", every=10, stream=None):
        self.total, self.prefix, self.every = total, prefix, every
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()

    def update(self, i, text):
        if not self.tty and i % self.every and i != self.total:
            return
        width = 20
        filled = int(width * i / max(self.total, 1))
        line = f"{self.prefix} [{'#' * filled}{'.' * (width - filled)}] {i}/{self.total} {text}"
        if self.tty:
            self.stream.write("\r" + line + " " * 4)
            if i == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


# --------------------------------------------------------------------------- #
# The loop
# --------------------------------------------------------------------------- #
class Trainer:
    """Builds model, data, loss and optimiser from a :class:`TrainConfig` and trains."""

    def __init__(self, tc: TrainConfig, dataset=None, log=print):
        from minissd.datasets.augment import get_transform
        from minissd.datasets.voc import VOCDataset
        from minissd.datasets.loader import DataLoader

        backend.check_device(tc.device)
        self.tc, self.log = tc, log
        self.xp = backend.xp_for(tc.device)
        self.cfg = get_config(tc.config)
        if dataset is None:
            if not tc.data:
                raise ValueError("TrainConfig.data: give at least one VOC root folder")
            dataset = VOCDataset([(root, tc.split) for root in tc.data], class_names=tc.classes)
        self.dataset = dataset
        self.class_names = list(dataset.class_names)
        size = self.cfg.image_size
        transform = get_transform(tc.augment, size)
        self.loader = DataLoader(dataset, transform, batch_size=tc.batch_size, shuffle=True,
                                 seed=tc.seed, num_workers=tc.workers, drop_last=True)
        if len(self.loader) == 0:
            raise ValueError(f"data set of {len(dataset)} images gives no full batch of "
                             f"{tc.batch_size}: lower --batch-size")
        self.model = SSD(self.cfg, len(self.class_names), seed=tc.seed).to(tc.device)
        self.priors = self.xp.asarray(default_boxes(self.cfg), dtype=self.xp.float32)  # (P, 4)
        self.criterion = MultiBoxLoss()
        self.optimizer = SGD(self.model, lr=tc.lr, momentum=tc.momentum,
                             weight_decay=tc.weight_decay)
        self.total_steps = tc.epochs * len(self.loader)
        self.schedule = WarmupMultiStep.scaled(tc.lr, self.total_steps, tc.warmup_steps,
                                               fractions=tuple(tc.decay_at))
        self.step = 0
        self.epoch = 0

    # -- checkpoints ---------------------------------------------------------
    def meta(self):
        return {"config": self.cfg.to_dict(), "class_names": self.class_names,
                "epoch": self.epoch, "step": self.step,
                "train_config": {k: (list(v) if isinstance(v, tuple) else v)
                                 for k, v in dataclasses.asdict(self.tc).items()}}

    def save(self, path):
        save_checkpoint(path, self.model, self.optimizer, self.meta())

    def resume(self, path):
        arrays, meta = read_checkpoint(path)
        if meta["class_names"] != self.class_names:
            raise ValueError(f"{path}: checkpoint classes {meta['class_names']} differ from "
                             f"the data set's {self.class_names}")
        if meta["config"] != self.cfg.to_dict():
            raise ValueError(f"{path}: checkpoint config {meta['config'].get('name')!r} differs "
                             f"from --config {self.cfg.name!r}")
        self.model.load_state_dict(section(arrays, "model."), source=str(path))
        self.optimizer.load_state_dict(section(arrays, "optim."), meta["optimizer"])
        self.epoch, self.step = int(meta["epoch"]), int(meta["step"])

    # -- mAP during training ---------------------------------------------------
    def evaluate(self):
        """VOC07 mAP of the model now on ``tc.eval_split``, as a log record (``eval_*`` fields)."""
        from minissd.datasets.voc import VOCDataset
        from minissd.evaluation.inference import Detector, evaluate_dataset
        tc = self.tc
        if not tc.eval_split or not tc.data:
            raise ValueError("Trainer.evaluate needs TrainConfig.eval_split and data (the VOC roots)")
        if getattr(self, "_eval_dataset", None) is None:
            self._eval_dataset = VOCDataset([(root, tc.eval_split) for root in tc.data],
                                            class_names=self.class_names, keep_difficult=True)
        t0 = time.time()
        result, _ = evaluate_dataset(Detector(self.model), self._eval_dataset, use_07_metric=True)
        self.model.train()                                       # Detector switched it to eval
        return {"step": self.step, "epoch": self.epoch, "eval_split": tc.eval_split,
                "eval_map": float(result["map"]),
                "eval_ap": {n: float(ap) for n, ap in zip(self.class_names, result["ap"])},
                "eval_seconds": round(time.time() - t0, 3)}

    # -- one step --------------------------------------------------------------
    def train_step(self, batch):
        """Forward, loss, backward and update on one batch; returns (loss, loc, conf)."""
        xp = self.xp
        images = xp.asarray(batch.images)                           # (B, 3, S, S)
        gt_boxes, gt_labels = pad_batch_targets(batch, xp)          # (B, G, 4), (B, G)
        loc_t, conf_t = match_batch(gt_boxes, gt_labels, self.priors,
                                    variances=self.cfg.variances)   # (B, P, 4), (B, P)
        loc, conf = self.model.forward(images)                      # (B, P, 4), (B, P, C+1)
        loss = self.criterion.forward(loc, conf, loc_t, conf_t)
        if not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"non-finite loss {float(loss)} at step {self.step} (epoch {self.epoch}); "
                f"images in the batch: {', '.join(map(str, batch.ids))}. Check their boxes, "
                f"or lower the learning rate (now {self.optimizer.lr:.3g}).")
        dloc, dconf = self.criterion.backward()
        self.model.backward(dloc, dconf, need_dimages=False)   # no gradient for the images
        self.optimizer.lr = self.schedule(self.step)
        self.optimizer.step()
        self.step += 1
        return float(loss), float(self.criterion.loss_loc), float(self.criterion.loss_conf)

    def fit(self, epochs=None):
        """Train from ``self.epoch`` up to ``epochs`` (default: the config's)."""
        tc = self.tc
        epochs = tc.epochs if epochs is None else epochs
        if tc.eval_every and not (tc.eval_split and tc.data):      # say so now, not after an epoch
            raise ValueError("TrainConfig.eval_every needs eval_split and data (the VOC roots)")
        os.makedirs(tc.out, exist_ok=True)
        log_path = os.path.join(tc.out, "train_log.jsonl")
        start = time.time()
        self.model.train()
        with open(log_path, "a" if self.step else "w") as log_file:   # a fresh run starts a fresh log
            while self.epoch < epochs:
                progress = Progress(len(self.loader), f"epoch {self.epoch + 1}/{epochs}",
                                    every=tc.log_every)
                seen, t0 = 0, time.time()
                sums = np.zeros(3)
                self.loader.set_epoch(self.epoch)
                for i, batch in enumerate(self.loader, 1):
                    losses = self.train_step(batch)
                    sums += losses
                    seen += len(batch.ids)
                    ips = seen / max(time.time() - t0, 1e-9)
                    record = {"step": self.step, "epoch": self.epoch, "loss": losses[0],
                              "loss_loc": losses[1], "loss_conf": losses[2],
                              "lr": self.optimizer.lr, "images_per_s": round(ips, 2),
                              "time": round(time.time() - start, 3)}
                    log_file.write(json.dumps(record) + "\n")
                    progress.update(i, f"loss {losses[0]:.3f} (loc {losses[1]:.3f} conf "
                                       f"{losses[2]:.3f}) lr {self.optimizer.lr:.2e} {ips:.1f} img/s")
                log_file.flush()
                self.epoch += 1
                self.save(os.path.join(tc.out, "last.npz"))
                mean = sums / max(i, 1)
                self.log(f"epoch {self.epoch}: loss {mean[0]:.3f} (loc {mean[1]:.3f} conf "
                         f"{mean[2]:.3f}), {seen / (time.time() - t0):.1f} img/s, "
                         f"checkpoint {os.path.join(tc.out, 'last.npz')}")
                if tc.eval_every and (self.epoch % tc.eval_every == 0 or self.epoch == epochs or (
                        tc.max_minutes is not None and time.time() - start > 60 * tc.max_minutes)):
                    record = self.evaluate()                     # the last epoch is always scored
                    record["time"] = round(time.time() - start, 3)
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                    self.log(f"epoch {self.epoch}: mAP@0.5 (VOC07) on {tc.eval_split} "
                             f"{record['eval_map']:.3f} ({record['eval_seconds']:.1f} s)")
                if tc.max_minutes is not None and time.time() - start > 60 * tc.max_minutes:
                    self.log(f"stopping after {self.epoch} epochs: time budget of "
                             f"{tc.max_minutes} min reached")
                    break
        return self
