"""Training SSD: the loop, resume, the NaN guard and the log.

One step is the whole algorithm of the paper in six lines::

    loc, conf = model.forward(images)                       # (B, P, 4), (B, P, C+1)
    loc_t, conf_t = match_batch(gt_boxes, gt_labels, priors) # targets per default box
    loss = criterion.forward(loc, conf, loc_t, conf_t)     # smooth L1 + mined CE, / N
    dloc, dconf = criterion.backward()
    model.backward(dloc, dconf)                             # fills every layer's grads
    optimizer.step()                                        # momentum SGD (or AdamW)

Checkpoints (:mod:`minissd.checkpoint`) are written at every epoch's end. The
loader's order depends only on (seed, epoch), so ``resume`` from an epoch
boundary continues exactly; the log is cut back to the checkpoint's step, so
each step is logged once.

No lost or poisoned work: after every update the trainer checks that each
parameter, BatchNorm statistic and optimiser buffer is finite, and stops before
anything non-finite can be saved. A new run never writes into a folder that
holds another (``overwrite`` replaces it); ``resume`` refuses changed settings
unless ``override``; ``init`` fine-tunes from a model's weights.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import json
import math
import numbers
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from minissd.checkpoint import (read_checkpoint, read_meta, remove_temp_files, save_checkpoint,
                                model_weights, section)
from minissd.errors import UserError
from minissd.nn import backend
from minissd.nn.optim import (SGD, AdamW, WarmupCosine, WarmupMultiStep, WeightAverage,
                               default_warmup_steps)
from minissd.ssd.architecture import SSDArch, get_arch
from minissd.ssd.config import SSDConfig, get_config
from minissd.ssd.loss import MultiBoxLoss
from minissd.ssd.matching import TOPK_FLOOR, match_batch, pad_targets
from minissd.ssd.model import SSD
from minissd.ssd.priors import default_boxes


class NonFiniteError(UserError, RuntimeError):
    """Training went NaN or infinite; the message names the step, the images and what went bad."""


class NonFiniteLossError(NonFiniteError):
    """The loss became NaN or infinite; the message names the step and the images."""


class NonFiniteWeightsError(NonFiniteError):
    """An update made a parameter, BatchNorm statistic or optimiser buffer NaN or infinite."""


class RunExistsError(UserError):
    """``--out`` holds a run, and neither ``--resume`` nor ``--overwrite`` was given."""


def setting(default, help, same=False, **argparse):
    """A :class:`TrainConfig` field whose default and help are written once, here.

    ``minissd train`` builds its option ``--field-name`` from it (``argparse``: extra
    ``add_argument`` keywords such as ``choices``). ``same``: the setting defines the
    run, so a ``--resume`` with another value is refused unless ``--override``.
    """
    meta = {"help": help, "same_on_resume": same, "argparse": argparse}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything a training run needs; saved in each checkpoint.

    Each field is also an option of ``minissd train`` (``batch_size`` -> ``--batch-size``)
    with the default and the help written here. The fields marked ``same=True`` define
    the run: ``--resume`` with another value is refused unless ``override``.
    """
    data: list = setting([], "VOC root folder(s)", same=True, nargs="+", metavar="ROOT")
    split: str = setting("trainval", "ImageSets/Main split to train on", same=True)
    config: str = setting("ssd-tiny", "ssd-tiny, ssd-cpu (ssd-cpu-160, ssd-cpu-256: its layers "
                                      "on other inputs; ssd-cpu-w96: wider at the first source), "
                                      "ssd300 or ssd512", same=True)
    classes: list | None = setting(None, "comma-separated class names (default: classes.txt of "
                                         "the first root, else the 20 VOC classes)", same=True)
    epochs: int | str = setting(30, "epochs of the whole run (the schedule is scaled to it); "
                                    "auto: as many as --max-minutes holds on this machine, "
                                    "planned from a timing of a few steps", same=True)
    batch_size: int = setting(32, "images per step", same=True)
    lr: float = setting(1e-3, "base learning rate", same=True)
    optimizer: str = setting("sgd", "sgd: momentum SGD with L2 weight decay (the paper's); adamw: "
                                    "Adam with decoupled weight decay on the weights (give it "
                                    "its own --lr and --weight-decay, e.g. 1e-3 and 0.05)",
                             same=True, choices=["sgd", "adamw"])
    momentum: float = setting(0.9, "SGD momentum; with --optimizer adamw, Adam's beta1",
                              same=True)
    weight_decay: float = setting(5e-4, "weight decay: L2 in the gradient (sgd); decoupled, "
                                        "times the learning rate (adamw)", same=True)
    match_iou: float = setting(0.5, "matching: every default box whose IoU with an object is at "
                                    "least this learns it (the paper's 0.5), besides each "
                                    "object's best box", same=True)
    ignore_iou: float = setting(0.0, "a default box left as background whose IoU with an object "
                                     "is still at least this (below --match-iou) is ignored: "
                                     "neither a positive nor a mined negative (RetinaNet's "
                                     "ignore band; 0: none, the paper's)", same=True)
    match_topk: int = setting(0, "matching: an object with fewer than this many default boxes "
                                 "at --match-iou takes its this-many best as positives, none "
                                 "under --match-floor (a threshold per object, ATSS's idea; "
                                 "0: off, the paper's one threshold)", same=True)
    match_floor: float = setting(TOPK_FLOOR, "with --match-topk: the lowest IoU with its object a "
                                       "default box may have to be a positive", same=True)
    background_maxout: int = setting(1, "background scores per default box on the first "
                                         "feature map, their max the background's logit "
                                         "(S3FD's max-out background label, e.g. 3; 1: the "
                                         "paper's one score)", same=True)
    maxout_maps: int = setting(1, "with --background-maxout: how many feature maps, from the "
                                  "first, have the max-out background scores (S3FD's 1)",
                               same=True)
    top_down: bool = setting(False, "add fc7's map, through a 1x1 conv and upsampled 2x, to the "
                                    "first feature map before its heads (FPN's top-down path, "
                                    "one level: context for the smallest boxes)", same=True)
    focal: float = setting(0.0, "the softmax focal loss with this gamma (RetinaNet's 2) over "
                                "every default box instead of hard negative mining, the "
                                "background started at probability 0.99 (0: mining, the "
                                "paper's)", same=True)
    ema: float = setting(0.0, "also keep an exponential moving average of the weights with this "
                              "decay (e.g. 0.999); evaluations, evaluate, detect and export use "
                              "it (0: off)", same=True)
    warmup_steps: int | None = setting(None, "steps of linear warm-up (default: 5 % of the run, "
                                             "at most 500)", same=True)
    decay_at: tuple = setting((2 / 3, 5 / 6), "comma-separated fractions of the run where the "
                                              "learning rate is multiplied by 0.1 (SSD's 80k and "
                                              "100k of 120k iterations)", same=True)
    schedule: str = setting("step", "step: x0.1 at --decay-at (the paper's); cosine: half a "
                                    "cosine to 0 after the warm-up (--decay-at unused)",
                            same=True, choices=["step", "cosine"])
    seed: int = setting(0, "seed of the initialisation, the batch order and the augmentation",
                        same=True)
    device: str = setting("cpu", "cpu (NumPy) or cuda (CuPy)", choices=["cpu", "cuda"])
    workers: int = setting(2, "data loader workers, threads or processes as --loader says (0: "
                              "load in the training thread)")
    loader: str = setting("threads", "the --workers are threads (one interpreter lock, shared "
                                     "with training) or processes (forked; faster on a GPU, "
                                     "where the lock limits the threads)",
                          choices=["threads", "processes"])
    out: str = setting("runs/train", "folder for checkpoints and the log (with --resume: the "
                                     "checkpoint's folder)")
    max_minutes: float | None = setting(None, "stop (and checkpoint) after the epoch that ends "
                                              "past this many minutes")
    log_every: int = setting(10, "progress line every N steps when stderr is not a terminal")
    augment: str = setting("ssd", "ssd: the paper's photometric/expand/crop/flip; flip: flip "
                                  "only; none: resize + normalise", same=True,
                           choices=["ssd", "flip", "none"])
    zoom_out: float = setting(4.0, "with --augment ssd: zoom out onto a canvas up to this many "
                                   "times the photo's size (the paper's 4; 1: no zoom-out)",
                              same=True)
    mosaic: float = setting(0.0, "with --augment ssd: the share of training samples that are a "
                                 "2x2 mosaic of the photo and three others drawn at random "
                                 "(YOLOv4's; not the paper's; 0: off)", same=True)
    mixup: float = setting(0.0, "the share of training samples blended with a second one, "
                                "r : 1 - r with r ~ Beta(32, 32), the boxes of both (YOLOv5's "
                                "mixup; not the paper's; 0: off)", same=True)
    eval_every: int = setting(0, "VOC07 mAP on --eval-split every N epochs and after the last, "
                                 "logged to train_log.jsonl (0: only after the last, if "
                                 "--eval-split is given)")
    eval_split: str | None = setting(None, "a split of the same roots to score the model on "
                                           "(e.g. val); choose settings on it, not on test")
    init: str | None = setting(None, "fine-tune: start from this model's weights (a checkpoint or "
                                     "an exported model) with a fresh optimiser and schedule",
                               metavar="MODEL.npz")
    reset_heads: bool = setting(False, "with --init: re-initialise the class (conf) heads, for a "
                                       "class list other than the model's")
    resume: str | None = setting(None, "continue the run of this checkpoint exactly; its settings "
                                       "are the defaults", metavar="CHECKPOINT.npz")
    override: bool = setting(False, "with --resume: accept changed settings (recorded in the "
                                    "checkpoint and the log)")
    overwrite: bool = setting(False, "replace the run that --out holds (its last.npz, last.json, "
                                     "train_log.jsonl and pr_curves.png)")

    @staticmethod
    def option(name):
        """The command-line option of field ``name``: 'batch_size' -> '--batch-size'."""
        return "--" + name.replace("_", "-")

    def _error(self, name, problem):
        return UserError(f"TrainConfig.{name} ({self.option(name)}): {problem}, "
                         f"got {getattr(self, name)!r}")

    def validate(self):
        """Refuse values that cannot make a run, naming the field; returns self."""
        def integer(name, low, also=None):
            value = getattr(self, name)
            if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
                    or value < low):
                raise self._error(name, f"must be an integer >= {low}"
                                        + (f" or {also}" if also else ""))

        def number(name, low, high=math.inf, open_low=False, closed_high=False):
            value = getattr(self, name)
            if (not isinstance(value, numbers.Real) or isinstance(value, bool)
                    or not math.isfinite(value) or value < low or (open_low and value == low)
                    or value > high or (not closed_high and value == high)):
                side = ">" if open_low else ">="
                upper = (f" and {'<=' if closed_high else '<'} {high}" if math.isfinite(high)
                         else "")
                raise self._error(name, f"must be a finite number {side} {low}{upper}")

        def one_of(name):
            choices = next(f for f in dataclasses.fields(self)
                           if f.name == name).metadata["argparse"]["choices"]
            if getattr(self, name) not in choices:
                listed = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
                raise self._error(name, f"must be {listed}")

        if not isinstance(self.data, (list, tuple)) or not all(isinstance(d, str) for d in self.data):
            raise self._error("data", "must be a list of folder names")
        for name in ("split", "config", "out"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise self._error(name, "must be a non-empty string")
        if self.classes is not None:
            if not self.classes or not all(isinstance(c, str) and c for c in self.classes):
                raise self._error("classes", "must be a non-empty list of class names")
            twice = sorted({c for c in self.classes if list(self.classes).count(c) > 1})
            if twice:
                raise self._error("classes", f"lists {', '.join(twice)} more than once")
        if self.epochs == "auto":
            if self.max_minutes is None:
                raise self._error("epochs", "auto fills the time of --max-minutes: give it")
            if self.resume:
                raise self._error("epochs", "auto plans a new run; a resumed run keeps the "
                                            "epochs its checkpoint planned")
        else:
            integer("epochs", 1, also="auto")
        integer("batch_size", 1)
        number("lr", 0, open_low=True)
        number("momentum", 0, 1)
        number("weight_decay", 0)
        if self.warmup_steps is not None:
            integer("warmup_steps", 0)
        fractions = list(self.decay_at) if isinstance(self.decay_at, (list, tuple)) else None
        if (fractions is None or not all(isinstance(f, numbers.Real) and 0 < f <= 1
                                         for f in fractions)
                or fractions != sorted(fractions)):
            raise self._error("decay_at", "must be increasing fractions of the run in (0, 1]")
        one_of("schedule")
        one_of("optimizer")
        integer("seed", 0)
        integer("workers", 0)
        integer("log_every", 1)
        integer("eval_every", 0)
        number("ema", 0, 1)
        number("match_iou", 0, 1, open_low=True, closed_high=True)
        number("ignore_iou", 0, self.match_iou)
        integer("match_topk", 0)
        number("match_floor", 0, 1, open_low=True, closed_high=True)
        if self.match_topk and self.match_floor > self.match_iou:
            raise self._error("match_floor", f"must be at most --match-iou ({self.match_iou}) "
                                             f"with --match-topk")
        number("focal", 0)
        integer("background_maxout", 1)
        integer("maxout_maps", 1)
        if not isinstance(self.top_down, (bool, np.bool_)):
            raise self._error("top_down", "must be true or false")
        if self.maxout_maps > 1 and self.background_maxout == 1:
            raise self._error("maxout_maps", "only applies with --background-maxout 2 or more")
        if self.eval_every and not self.eval_split:
            raise self._error("eval_every", "needs --eval-split (a split of the same roots)")
        if self.max_minutes is not None:
            number("max_minutes", 0, open_low=True)
        one_of("augment")
        one_of("loader")
        number("zoom_out", 1)
        number("mosaic", 0, 1, closed_high=True)
        number("mixup", 0, 1, closed_high=True)
        if self.mosaic and self.augment != "ssd":
            raise self._error("mosaic", f"only applies with --augment ssd (not {self.augment})")
        if self.init and self.resume:
            raise self._error("init", "--init starts a new run, --resume continues one: give one")
        if self.reset_heads and not self.init:
            raise self._error("reset_heads", "only applies with --init")
        if self.override and not self.resume:
            raise self._error("override", "only applies with --resume")
        if self.overwrite and self.resume:
            raise self._error("overwrite", "--resume continues the run in --out; --overwrite "
                                           "replaces it: give one")
        return self

    def same_on_resume(self):
        """The names of the fields that define the run (checked on ``--resume``)."""
        return [f.name for f in dataclasses.fields(self) if f.metadata.get("same_on_resume")]

    def to_dict(self):
        """JSON-ready dict of the fields (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d):
        """The fields of ``d`` this class knows (an older checkpoint's record may lack some)."""
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "decay_at" in d:
            d["decay_at"] = tuple(d["decay_at"])
        return cls(**d)


# --epochs auto plans for this share of --max-minutes: the machine's speed drifts (other jobs,
# a shared host), and the stop at --max-minutes would cut off the last epochs at the lowest rate.
AUTO_EPOCHS_MARGIN = 0.97


def epochs_for_budget(budget_seconds, epoch_seconds, margin=AUTO_EPOCHS_MARGIN):
    """The whole epochs of ``epoch_seconds`` that fit in ``margin`` of ``budget_seconds`` (may be 0)."""
    return int(margin * budget_seconds // epoch_seconds)


def make_optimizer(model, tc):
    """The optimiser of ``tc.optimizer`` over ``model``'s parameters (its learning rate is
    set by the schedule each step)."""
    if tc.optimizer == "adamw":
        return AdamW(model, lr=tc.lr, betas=(tc.momentum, 0.999), weight_decay=tc.weight_decay)
    return SGD(model, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)


def pad_batch_targets(batch, xp):
    """List of per-image boxes/labels -> padded (B, G, 4) and (B, G) arrays on ``xp``."""
    boxes, labels = pad_targets(batch.boxes, batch.labels)
    return xp.asarray(boxes), xp.asarray(labels)


# --------------------------------------------------------------------------- #
# Progress
# --------------------------------------------------------------------------- #
def format_duration(seconds):
    """Seconds as ``m:ss`` or ``h:mm:ss`` (what a progress line shows)."""
    seconds = int(round(max(seconds, 0)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def image_progress(prefix, every=160, stream=None):
    """A ``progress(done, total)`` callback for ``evaluate_dataset``: a :class:`Progress`
    of images with their rate (a line every ``every`` images when not on a terminal)."""
    bar = None

    def progress(done, total):
        nonlocal bar
        if bar is None:                                  # the clock starts at the first batch
            bar = Progress(total, prefix, every=every, stream=stream)
        bar.update(done, f"{bar.rate(done):.1f} img/s")
    return progress


class Progress:
    """A one-line progress bar on stderr with the time left.

    On a terminal the line is redrawn in place; elsewhere (a log file, CI, a notebook)
    a plain line is printed every ``every`` steps and at the end. The time left is
    the mean time per step so far times the steps to go; ``then``: how many more
    rounds of ``total`` steps follow this one (the epochs after this one), added as
    the time left for the whole run.
    """

    def __init__(self, total, prefix="", every=10, stream=None, then=0, clock=time.monotonic):
        self.total, self.prefix, self.every, self.then = total, prefix, every, then
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.clock = clock
        self.start, self.printed = clock(), 0

    def rate(self, i):
        """Steps per second so far (``i`` steps done)."""
        return i / max(self.clock() - self.start, 1e-9)

    def left(self, i):
        """Seconds to the end of this round and to the end of the run, from ``i`` steps done."""
        per_step = (self.clock() - self.start) / max(i, 1)
        here = per_step * (self.total - i)
        return here, here + per_step * self.total * self.then

    def update(self, i, text):
        if not self.tty and i - self.printed < self.every and i != self.total:
            return
        self.printed = i
        width = 20
        filled = int(width * i / max(self.total, 1))
        here, run = self.left(i)
        eta = f"{format_duration(here)} left" + (f", run {format_duration(run)}"
                                                  if self.then else "")
        line = (f"{self.prefix} [{'#' * filled}{'.' * (width - filled)}] {i}/{self.total} {text}"
                f" {eta}")
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
LOG_NAME = "train_log.jsonl"
RUN_FILES = ("last.npz", "last.json", LOG_NAME, "pr_curves.png")          # what a run writes


def config_from_options(given: dict) -> TrainConfig:
    """The :class:`TrainConfig` of ``minissd train``: the options ``given`` over the defaults.

    With ``resume``, over the checkpoint's own settings instead (and ``out`` its
    folder), so ``minissd train --resume runs/x/last.npz`` continues run x; a
    setting given that differs from the checkpoint's is refused later, in
    :meth:`Trainer.resume`, unless ``override``. With ``init``, ``config``
    defaults to the model's.
    """
    given = dict(given)
    base = {}
    if given.get("resume"):
        meta = read_meta(given["resume"])
        base = {k: v for k, v in (meta.get("train_config") or {}).items()
                if k not in ("init", "reset_heads", "resume", "override", "overwrite")}
        base["out"] = os.path.dirname(os.fspath(given["resume"])) or "."
    elif given.get("init"):
        base = {"config": read_meta(given["init"])["config"].get("name", "ssd-tiny")}
    return TrainConfig.from_dict({**base, **given}).validate()


class Trainer:
    """Builds model, data, loss and optimiser from a :class:`TrainConfig` and trains.

    ``tc.resume`` continues a checkpoint's run, ``tc.init`` starts from a model's
    weights (fine-tuning). :meth:`fit` writes into ``tc.out`` only if it holds no
    other run (or ``tc.overwrite``).
    """

    clock = staticmethod(time.time)   # fit()'s clock: --max-minutes, the log's times, --epochs auto

    def __init__(self, tc: TrainConfig, dataset=None, log=print):
        from minissd.datasets.augment import get_mixup, get_mosaic, get_transform
        from minissd.datasets.voc import VOCDataset
        from minissd.datasets.loader import DataLoader

        tc.validate()
        backend.check_device(tc.device)
        self.tc, self.log = tc, log
        self.xp = backend.xp_for(tc.device)
        self.cfg = get_config(tc.config)
        if dataset is None:
            if not tc.data:
                raise UserError("TrainConfig.data (--data): give at least one VOC root folder")
            dataset = VOCDataset([(root, tc.split) for root in tc.data], class_names=tc.classes)
        self.dataset = dataset
        self.class_names = list(dataset.class_names)
        size = self.cfg.image_size
        transform = get_transform(tc.augment, size, zoom_out=tc.zoom_out)
        self.loader = DataLoader(dataset, transform, batch_size=tc.batch_size, shuffle=True,
                                 seed=tc.seed, num_workers=tc.workers, drop_last=True,
                                 processes=tc.loader == "processes",
                                 mosaic=get_mosaic(tc.mosaic, size),   # validate(): only with ssd
                                 mixup=get_mixup(tc.mixup))
        if len(dataset) == 0:
            raise UserError(f"split {tc.split!r} is empty: ImageSets/Main/{tc.split}.txt of "
                            f"{', '.join(map(str, tc.data)) or 'the data set'} lists no images")
        if len(self.loader) == 0:
            raise UserError(f"split {tc.split!r} has {len(dataset)} image(s), fewer than "
                            f"--batch-size {tc.batch_size}: give --batch-size {len(dataset)} or less")
        if tc.maxout_maps > len(self.cfg.feature_maps):
            raise tc._error("maxout_maps", f"{tc.config} has {len(self.cfg.feature_maps)} feature "
                                           f"maps, not {tc.maxout_maps}")
        arch = dataclasses.replace(get_arch(self.cfg.name), background_maxout=tc.background_maxout,
                                   maxout_maps=tc.maxout_maps, top_down=tc.top_down)
        self.model = SSD(self.cfg, len(self.class_names), seed=tc.seed, arch=arch)
        if tc.focal:                  # --focal: RetinaNet's prior (--init loads over it)
            self.model.set_background_prior(0.99)
        self.model.to(tc.device)
        self.priors = self.xp.asarray(default_boxes(self.cfg), dtype=self.xp.float32)  # (P, 4)
        self.criterion = MultiBoxLoss(focal_gamma=tc.focal)
        self.optimizer = make_optimizer(self.model, tc)
        self.average = WeightAverage(self.model, tc.ema) if tc.ema else None   # --ema
        self.step = 0
        self.epoch = 0
        self.resumed_from = None      # the checkpoint this run continues, if any
        self._resumed_settings = {}   # its train_config
        self.overrides = []           # settings changed on resume: [{step, epoch, changed}]
        self.overridden = {}          # those changed by this resume: {field: [old, new]}
        self.plan = None              # --epochs auto: how the epochs were chosen
        if tc.epochs == "auto":
            self.check_out()          # refuse a taken --out before the timing, not after it
            self.plan = self.plan_epochs()
        self.total_steps = tc.epochs * len(self.loader)
        self.schedule = self.make_schedule(tc.epochs)
        self._log_note = {}           # extra keys for the next log record
        if self.plan:
            self._log_note["plan"] = self.plan
        self._started = False         # fit() has claimed tc.out
        self._saved = None            # the last checkpoint this trainer wrote
        self._goal = tc.epochs        # the epochs fit() trains up to
        self._eval_dataset = None     # tc.eval_split, opened by the first evaluate()
        self.last_eval = None         # the last evaluate(): {step, result}; the train command reuses it
        if tc.resume:
            self.resume(tc.resume)
        elif tc.init:
            self.init_from(tc.init, reset_heads=tc.reset_heads)

    # -- checkpoints ---------------------------------------------------------
    def meta(self):
        return {"config": self.cfg.to_dict(), "class_names": self.class_names,
                "epoch": self.epoch, "step": self.step, "train_config": self.tc.to_dict(),
                "overrides": self.overrides}

    def save(self, path):
        """Write a checkpoint (finite, atomically), first removing what an interrupted save of
        this run's folder left behind."""
        remove_temp_files(os.path.dirname(os.path.abspath(path)))
        save_checkpoint(path, self.model, self.optimizer, self.meta(), average=self.average)
        self._saved = path

    def resume(self, path):
        """Continue the run of checkpoint ``path``: weights, optimiser state, epoch and step.

        Refuses another class list or config, an exported model (no optimiser
        state: use ``init``), a run already past ``tc.epochs``, and settings that
        differ from the checkpoint's unless ``tc.override`` (then recorded).
        """
        arrays, meta = read_checkpoint(path)
        if meta["class_names"] != self.class_names:
            raise UserError(f"{path}: checkpoint classes {meta['class_names']} differ from "
                            f"the data set's {self.class_names}")
        if SSDConfig.from_dict(meta["config"]) != self.cfg:        # (0.1 stored clip as a bool)
            raise UserError(f"{path}: checkpoint config {meta['config'].get('name')!r} differs "
                            f"from --config {self.cfg.name!r}")
        if meta.get("optimizer") is None:
            raise UserError(f"{path}: an exported model (no optimiser state) cannot be resumed; "
                            f"to fine-tune from it, use --init {path}")
        epoch, step = int(meta["epoch"]), int(meta["step"])
        if epoch >= self.tc.epochs:
            raise UserError(f"{path}: the run has done {epoch} epoch(s); --epochs "
                            f"{self.tc.epochs} leaves nothing to train: give --epochs more than "
                            f"{epoch} (with --override, as it stretches the schedule)")
        changed = self.changed_settings(meta.get("train_config") or {})
        if changed and not self.tc.override:
            said = ", ".join(f"{TrainConfig.option(k)} {old!r} -> {new!r}"
                             for k, (old, new) in changed.items())
            raise UserError(f"{path}: the run was trained with other settings ({said}); resume "
                            f"with the checkpoint's (leave those options out), or give "
                            f"--override to change them")
        self.model.load_state_dict(section(arrays, "model."), source=str(path))
        self.optimizer.load_state_dict(section(arrays, "optim."), meta["optimizer"])
        if self.average is not None:           # the checkpoint's average; or, where --override
            self.average = WeightAverage(self.model, self.tc.ema)       # turned --ema on, a new one
            if meta.get("ema") is not None:
                self.average.load_state_dict(section(arrays, "ema."), meta["ema"], source=str(path))
        self.epoch, self.step = epoch, step
        self._resumed_settings = meta.get("train_config") or {}
        self.overrides = list(meta.get("overrides") or [])
        if changed:
            self.overrides.append({"step": step, "epoch": epoch, "changed": changed})
            self._log_note = {"override": changed}
        self.overridden = changed
        self.resumed_from = os.fspath(path)

    def changed_settings(self, saved: dict) -> dict:
        """{field: [checkpoint's value, this config's]} for the run-defining fields that differ.

        A field the checkpoint's record lacks (it was written before the setting existed) ran
        as the setting's default, which kept the old behaviour (``--schedule``: step):
        :meth:`TrainConfig.from_dict` fills it in, as it does for the resumed run's config.
        """
        def norm(name, value):
            if name == "data":
                return [os.path.normpath(os.path.abspath(d)) for d in value]
            return list(value) if isinstance(value, tuple) else value
        now, saved = self.tc.to_dict(), TrainConfig.from_dict(saved).to_dict()
        return {k: [saved[k], now[k]] for k in self.tc.same_on_resume()
                if norm(k, saved[k]) != norm(k, now[k])}

    def init_from(self, path, reset_heads=False):
        """Fine-tuning: the weights (and BatchNorm statistics) of the model in ``path``.

        The optimiser and the schedule start afresh. With another class list the
        class heads (``conf.*``) cannot be loaded: ``reset_heads`` keeps this
        model's freshly initialised ones (the box heads ``loc.*`` are loaded).
        """
        arrays, meta = read_checkpoint(path)
        saved = SSDConfig.from_dict(meta["config"])
        if saved != self.cfg:
            # Another config with the same layers (e.g. the same network on a larger input, its
            # default boxes rebuilt for the larger maps): the weights load if every shape agrees.
            self.log(f"--init: {path} was trained as config {saved.name!r} ({saved.image_size} px, "
                     f"{saved.num_priors} default boxes); it continues as {self.cfg.name!r} "
                     f"({self.cfg.image_size} px, {self.cfg.num_priors})")
        if meta["class_names"] != self.class_names and not reset_heads:
            raise UserError(f"{path}: the model was trained for classes {meta['class_names']}, "
                            f"the data set has {self.class_names}: give --reset-heads to "
                            f"re-initialise the class heads for the new list")
        if not reset_heads:
            mine = self.model.arch
            # checkpoints written before they kept the architecture predate the max-out
            # scores too: they have the paper's single background score on every map
            theirs = (SSDArch.from_dict(meta["arch"]) if "arch" in meta
                      else dataclasses.replace(mine, background_maxout=1, maxout_maps=1))
            maps = range(len(self.cfg.feature_maps))
            if [theirs.background_scores(i) for i in maps] != [mine.background_scores(i) for i in maps]:
                raise UserError(f"{path}: the model was trained with --background-maxout "
                                f"{theirs.background_maxout} --maxout-maps {theirs.maxout_maps}, this "
                                f"run has --background-maxout {mine.background_maxout} --maxout-maps "
                                f"{mine.maxout_maps}: its class heads do not fit; give its settings, "
                                f"or --reset-heads to re-initialise the class heads")
        state = model_weights(arrays)                        # a run's --ema average, if it has one
        fresh = self.model.state_dict()
        top_down = [k for k in fresh if k.startswith("top_down.")]
        if top_down and not any(k in state for k in top_down):
            # a plain model into a --top-down run: the path starts at zero, the plain model's outputs
            self.log(f"--init: {path} has no top-down path; --top-down starts it at zero")
            state = dict(state, **{k: fresh[k] for k in top_down})
        elif not top_down and any(k.startswith("top_down.") for k in state):
            raise UserError(f"{path}: the model was trained with --top-down, this run is without it: "
                            f"give --top-down to continue it")
        if reset_heads:
            state = {k: (fresh[k] if k.startswith("conf.") else v) for k, v in state.items()}
        try:
            self.model.load_state_dict(state, source=str(path))
        except (KeyError, ValueError) as e:
            if saved == self.cfg:
                raise
            raise UserError(f"{path}: the weights of config {saved.name!r} do not fit --config "
                            f"{self.cfg.name!r}: {e}") from e
        if self.average is not None:
            self.average = WeightAverage(self.model, self.tc.ema)     # averaging from these weights

    # -- the run folder ----------------------------------------------------------
    def check_out(self):
        """Make sure ``tc.out`` is a folder this run may write into (creating it).

        Refuses a file, and a folder that holds another run (``last.npz`` or
        ``train_log.jsonl``) unless this run resumes it or ``tc.overwrite``.
        """
        out = self.tc.out
        if os.path.exists(out) and not os.path.isdir(out):
            raise UserError(f"TrainConfig.out (--out): {out} is a file, not a folder")
        held = [f for f in ("last.npz", LOG_NAME) if os.path.exists(os.path.join(out, f))]
        if held and self.resumed_from is None and not self.tc.overwrite:
            raise RunExistsError(
                f"--out {out} holds a run ({', '.join(held)}): continue it with --resume "
                f"{os.path.join(out, 'last.npz')}, replace it with --overwrite, or choose "
                f"another --out")
        if held and self.resumed_from is not None and self._another_run_in(out):
            raise RunExistsError(
                f"--out {out} holds another run than {self.resumed_from}'s: resume into the "
                f"checkpoint's own folder (leave --out out) or an empty one")
        try:
            os.makedirs(out, exist_ok=True)
        except OSError as e:
            raise UserError(f"TrainConfig.out (--out): cannot create {out}: "
                            f"{e.strerror or e}") from None

    def _another_run_in(self, out):
        """Whether ``out/last.npz`` is a run other than the one resumed (other settings)."""
        last = os.path.join(out, "last.npz")
        if not os.path.exists(last) or os.path.samefile(last, self.resumed_from):
            return False
        try:
            theirs = read_meta(last).get("train_config") or {}
        except ValueError:
            return True                               # unreadable: not knowingly the same run
        ours = self._resumed_settings
        return any(theirs.get(k) != ours.get(k) for k in self.tc.same_on_resume())

    def _start(self, log_path):
        """First fit(): claim tc.out, clear what an earlier run or an interrupted save left."""
        self.check_out()
        out = self.tc.out
        removed = remove_temp_files(out)
        if removed:
            self.log(f"removed {len(removed)} temporary file(s) of an interrupted save: "
                     f"{', '.join(removed)}")
        if self.resumed_from is None and self.tc.overwrite:
            for name in RUN_FILES:
                if os.path.exists(os.path.join(out, name)):
                    os.unlink(os.path.join(out, name))
        if self.resumed_from is not None:
            truncate_log(log_path, self.step)
        self._started = True

    # -- mAP during training ---------------------------------------------------
    def evaluate(self):
        """VOC07 mAP of the model now on ``tc.eval_split``, as a log record (``eval_*`` fields)."""
        from minissd.datasets.voc import VOCDataset
        from minissd.evaluation.inference import Detector, evaluate_dataset
        tc = self.tc
        if not tc.eval_split or not tc.data:
            raise UserError("Trainer.evaluate needs TrainConfig.eval_split and data (the VOC roots)")
        if self._eval_dataset is None:
            self._eval_dataset = VOCDataset([(root, tc.eval_split) for root in tc.data],
                                            class_names=self.class_names, keep_difficult=True)
        t0 = time.time()
        with self.evaluated():
            result, _ = evaluate_dataset(Detector(self.model), self._eval_dataset,
                                         use_07_metric=True,
                                         progress=image_progress(f"evaluate {tc.eval_split}"))
        self.model.train()                                       # Detector switched it to eval
        self.last_eval = {"step": self.step, "result": result}
        return {"step": self.step, "epoch": self.epoch, "eval_split": tc.eval_split,
                "eval_map": float(result["map"]),
                "eval_ap": {n: float(ap) for n, ap in zip(self.class_names, result["ap"])},
                "eval_seconds": round(time.time() - t0, 3)}

    def evaluated(self):
        """A ``with`` in which ``self.model`` holds the weights evaluations use: the average
        (--ema) or, without it, its own."""
        return self.average.applied() if self.average is not None else contextlib.nullcontext()

    # -- one step --------------------------------------------------------------
    def train_step(self, batch):
        """Forward, loss, backward and update on one batch; returns (loss, loc, conf).

        Raises :class:`NonFiniteLossError` before the update if the loss is not
        finite, and :class:`NonFiniteWeightsError` after it if the update made a
        parameter, BatchNorm statistic or optimiser buffer NaN or infinite.
        """
        xp = self.xp
        images = xp.asarray(batch.images)                           # (B, 3, S, S)
        gt_boxes, gt_labels = pad_batch_targets(batch, xp)          # (B, G, 4), (B, G)
        loc_t, conf_t = match_batch(gt_boxes, gt_labels, self.priors, self.tc.match_iou,
                                    variances=self.cfg.variances,   # (B, P, 4), (B, P)
                                    ignore_threshold=self.tc.ignore_iou or None,
                                    topk=self.tc.match_topk or None, topk_floor=self.tc.match_floor)
        loc, conf = self.model.forward(images)                      # (B, P, 4), (B, P, C+1)
        loss = self.criterion.forward(loc, conf, loc_t, conf_t)
        if not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"non-finite loss {float(loss)} at {self._where()}; images in the batch: "
                f"{', '.join(map(str, batch.ids))}. Check their boxes, or lower the learning "
                f"rate (now {self.optimizer.lr:.3g}).{self._kept()}")
        dloc, dconf = self.criterion.backward()
        self.model.backward(dloc, dconf, need_dimages=False)   # no gradient for the images
        self.optimizer.lr = self.schedule(self.step)
        self.optimizer.step()
        bad = self.first_non_finite()
        if bad is not None:
            raise NonFiniteWeightsError(
                f"non-finite weights after {self._where()}: {bad} is the first NaN or inf in "
                f"the network's order (loss {float(loss):.4g}, lr {self.optimizer.lr:.3g}); "
                f"images in the batch: {', '.join(map(str, batch.ids))}. Lower the learning "
                f"rate.{self._kept()}")
        if self.average is not None:
            self.average.update()
        self.step += 1
        return float(loss), float(self.criterion.loss_loc), float(self.criterion.loss_conf)

    def _where(self):
        """This step as the logs count it: train_log.jsonl's step and epoch, the progress bar's."""
        return (f"step {self.step + 1}, epoch {self.epoch} (train_log.jsonl; epoch "
                f"{self.epoch + 1}/{self._goal} on the progress bar)")

    def _kept(self):
        if self._saved is not None:
            return f" The last good checkpoint, {self._saved}, is untouched."
        if self.resumed_from is not None:
            return f" The checkpoint resumed from, {self.resumed_from}, is untouched."
        return " No checkpoint was written."

    def first_non_finite(self):
        """The first array of the training state holding NaN or inf, in words; None if none does.

        Checks each layer's parameters and BatchNorm statistics in the network's order,
        then the optimiser's buffers: one reduction per array, one copy to the host.
        """
        xp = self.xp
        places = [(mod_name, kind, store, key)
                  for mod_name, mod in self.model.named_modules()
                  for kind, store in (("parameter", mod.params), ("statistic", mod.buffers))
                  for key in store]
        places += [(None, kind, {name: buf}, name)
                   for kind, name, buf in self.optimizer.named_buffers()]
        finite = backend.to_numpy(xp.stack([xp.isfinite(store[key]).all()
                                             for _, _, store, key in places]))
        bad = np.flatnonzero(~finite)
        if not len(bad):
            return None
        mod_name, kind, _, key = places[bad[0]]                 # words only for the one that failed
        if mod_name is None:                                    # the optimiser's state
            return f"the {kind} of {key}"
        return f"the {key} ({kind}) of layer {mod_name}"

    # -- --epochs auto: the epochs an hour holds -------------------------------
    def make_schedule(self, epochs):
        """The learning rate per step of a run of ``epochs`` epochs (``tc.schedule``)."""
        tc, total = self.tc, epochs * len(self.loader)
        if tc.schedule == "cosine":
            return WarmupCosine.scaled(tc.lr, total, tc.warmup_steps)
        return WarmupMultiStep.scaled(tc.lr, total, tc.warmup_steps, fractions=tuple(tc.decay_at))

    @contextlib.contextmanager
    def _throwaway_copy(self):
        """Inside: train a copy of the model (a fresh optimiser, constant learning rate); the
        run's weights, optimiser state, schedule and step are back after."""
        tc, kept = self.tc, (self.model, self.optimizer, getattr(self, "schedule", None), self.step,
                             self.average)
        self.model, self.average = copy.deepcopy(self.model), None
        self.optimizer = make_optimizer(self.model, tc)
        self.schedule = lambda step: tc.lr
        try:
            yield
        finally:
            self.model, self.optimizer, self.schedule, self.step, self.average = kept

    def time_steps(self, min_seconds=10.0, min_steps=3):
        """Seconds per training step on this machine, loading included: (seconds, steps timed).

        Trains a throwaway copy of the model on epoch 0's batches; the run is untouched
        (the loader draws each sample's augmentation from (seed, epoch, index)). The
        first step (threads starting, buffers allocated) is not timed unless the epoch
        has only one; timing stops once ``min_steps`` steps and ``min_seconds`` are timed,
        or at the end of the epoch.
        """
        timed, steps, start = 0.0, 0, None
        with self._throwaway_copy():
            self.loader.set_epoch(0)
            if len(self.loader) == 1:
                start = time.perf_counter()
            for batch in self.loader:
                self.train_step(batch)
                if start is None:
                    start = time.perf_counter()
                    continue
                timed, steps = time.perf_counter() - start, steps + 1
                if steps >= min_steps and timed >= min_seconds:
                    break
        return timed / steps, steps

    def plan_epochs(self):
        """``--epochs auto``: time a few steps, then plan the whole epochs ``tc.max_minutes``
        holds (:func:`epochs_for_budget`). Writes the epochs, and the warm-up they give, into
        ``tc`` (so the checkpoint records them); returns the plan, which the first log record
        keeps. :meth:`replan` corrects the epochs from the run's own speed."""
        tc = self.tc
        t0 = time.perf_counter()
        step_s, steps = self.time_steps()
        epoch_s = step_s * len(self.loader)
        epochs = epochs_for_budget(60 * tc.max_minutes, epoch_s)
        if epochs < 1:
            raise UserError(f"TrainConfig.epochs (--epochs auto): one epoch of {len(self.loader)} "
                            f"steps takes about {epoch_s / 60:.1f} min here, more than "
                            f"--max-minutes {tc.max_minutes}: give more minutes or --epochs 1")
        tc.epochs = epochs
        if tc.warmup_steps is None:          # fixed now: a later plan moves only the decays
            tc.warmup_steps = default_warmup_steps(epochs * len(self.loader))
        plan = {"epochs": epochs, "warmup_steps": tc.warmup_steps,
                "seconds_per_step": round(step_s, 4), "steps_timed": steps,
                "seconds_per_epoch": round(epoch_s, 2), "budget_minutes": tc.max_minutes,
                "margin": AUTO_EPOCHS_MARGIN, "timing_seconds": round(time.perf_counter() - t0, 2)}
        self.log(f"--epochs auto: {steps} steps timed at {step_s:.3f} s each, about "
                 f"{epoch_s:.1f} s an epoch: {epochs} epochs fill {AUTO_EPOCHS_MARGIN:.0%} of "
                 f"{tc.max_minutes} min; warm-up {tc.warmup_steps} steps")
        return plan

    def replan(self, elapsed, epoch_s):
        """``--epochs auto``, after an epoch: the epochs the rest of the budget holds at the
        run's recent ``epoch_s`` seconds an epoch (the machine's speed drifts). Returns the
        epochs planned now.

        Only while the step schedule has not decayed yet, and only to a plan whose first
        decay is still ahead: until then the learning rate depends on the warm-up alone
        (fixed by :meth:`plan_epochs`), so the steps trained are those of the final plan,
        and ``--epochs N --warmup-steps W`` (the checkpoint's) reruns the run exactly. The
        cosine depends on the length at every step: its plan is not changed.
        """
        tc = self.tc
        if self.plan is None or tc.schedule != "step":
            return tc.epochs
        if self.schedule.milestones and self.schedule.milestones[0] < self.step:
            return tc.epochs                                   # decayed: the plan is fixed
        epochs = self.epoch + epochs_for_budget(60 * tc.max_minutes - elapsed, epoch_s)
        schedule = self.make_schedule(epochs)
        if (epochs <= self.epoch or epochs == tc.epochs
                or (schedule.milestones and schedule.milestones[0] < self.step)):
            return tc.epochs
        self.log(f"--epochs auto: {epoch_s:.1f} s an epoch lately: {epochs} epochs in all "
                 f"(was {tc.epochs})")
        tc.epochs, self.total_steps, self.schedule = epochs, epochs * len(self.loader), schedule
        self._log_note["replan"] = {"epochs": epochs, "seconds_per_epoch": round(epoch_s, 2)}
        return epochs

    def fit(self, epochs=None):
        """Train from ``self.epoch`` up to ``epochs`` (default: the config's)."""
        tc = self.tc
        planned = epochs is None and self.plan is not None     # --epochs auto: replan() after each epoch
        epochs = self._goal = tc.epochs if epochs is None else epochs
        log_path = os.path.join(tc.out, LOG_NAME)
        if not self._started:
            self._start(log_path)
        start = self.clock()
        ends = collections.deque([start], maxlen=11)   # when the last 10 epochs ended
        self.model.train()
        with open(log_path, "a" if self.step else "w") as log_file:   # a fresh run starts a fresh log
            while self.epoch < epochs:
                progress = Progress(len(self.loader), f"epoch {self.epoch + 1}/{epochs}",
                                    every=tc.log_every, then=epochs - self.epoch - 1)
                seen, t0 = 0, self.clock()
                sums = np.zeros(3)
                self.loader.set_epoch(self.epoch)
                for i, batch in enumerate(self.loader, 1):
                    losses = self.train_step(batch)
                    sums += losses
                    seen += len(batch.ids)
                    ips = seen / max(self.clock() - t0, 1e-9)
                    record = {"step": self.step, "epoch": self.epoch, "loss": losses[0],
                              "loss_loc": losses[1], "loss_conf": losses[2],
                              "lr": self.optimizer.lr, "images_per_s": round(ips, 2),
                              "time": round(self.clock() - start, 3), **self._log_note}
                    self._log_note = {}
                    log_file.write(json.dumps(record) + "\n")
                    progress.update(i, f"loss {losses[0]:.3f} (loc {losses[1]:.3f} conf "
                                       f"{losses[2]:.3f}) lr {self.optimizer.lr:.2e} {ips:.1f} img/s")
                log_file.flush()                 # the log reaches the checkpoint's step first
                self.epoch += 1
                self.save(os.path.join(tc.out, "last.npz"))
                mean = sums / max(i, 1)
                self.log(f"epoch {self.epoch}: loss {mean[0]:.3f} (loc {mean[1]:.3f} conf "
                         f"{mean[2]:.3f}), {seen / max(self.clock() - t0, 1e-9):.1f} img/s, "
                         f"checkpoint {os.path.join(tc.out, 'last.npz')}")
                if tc.eval_every and (self.epoch % tc.eval_every == 0 or self.epoch == epochs or (
                        tc.max_minutes is not None and self.clock() - start > 60 * tc.max_minutes)):
                    record = self.evaluate()                     # the last epoch is always scored
                    record["time"] = round(self.clock() - start, 3)
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                    self.log(f"epoch {self.epoch}: mAP@0.5 (VOC07) on {tc.eval_split} "
                             f"{record['eval_map']:.3f} ({record['eval_seconds']:.1f} s)")
                ends.append(self.clock())
                if planned:                  # the recent epochs' speed, evaluations included
                    epochs = self._goal = self.replan(ends[-1] - start,
                                                      (ends[-1] - ends[0]) / (len(ends) - 1))
                if tc.max_minutes is not None and self.clock() - start > 60 * tc.max_minutes:
                    self.log(f"stopping after {self.epoch} epochs: time budget of "
                             f"{tc.max_minutes} min reached")
                    break
        return self


def truncate_log(path, step):
    """Keep the records of ``train_log.jsonl`` up to ``step`` (a resumed run's checkpoint).

    The steps a killed or interrupted run logged after its last checkpoint are
    trained again on resume; without this they would be in the log twice. A line
    cut by a kill is dropped. Rewritten atomically.
    """
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("step", math.inf) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)
