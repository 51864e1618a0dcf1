"""The ``minissd`` command: train, evaluate, detect, data shapes, summary.

    minissd data shapes --out data/shapes
    minissd train --data data/shapes --config ssd-tiny --epochs 30 --out runs/shapes
    minissd evaluate --checkpoint runs/shapes/last.npz --data data/shapes --split test
    minissd detect data/shapes/JPEGImages/000001.png --checkpoint runs/shapes/last.npz --out det/
    minissd summary --config ssd300 --num-classes 20
    minissd summary --checkpoint models/ssd-cpu-voc5.npz
    minissd anchors --data data/shapes --config ssd-tiny --plot anchors.png
    minissd export runs/shapes/last.npz models/shapes.npz

Errors. A mistake the user can fix is one line on stderr (``minissd: error: ...``,
naming the argument or file) and exit code 2; ``minissd --debug ...`` prints its
traceback too. These exceptions are the user errors (:func:`is_user_error`):

* :class:`minissd.errors.UserError`, a ValueError, and its subclasses
  (``UnsafeCheckpointError``, ``DeviceUnavailableError``, ``UserKeyError``): raised
  by this module's checks of arguments and by the library's checks of what it is
  given -- data folders, annotations, class lists and images (datasets.voc), SSD
  configs (ssd.config), devices and threads (nn.backend), loader settings
  (datasets.loader), optimiser settings and state (nn.optim), shapes data
  (datasets.synthetic), ``.pth`` files (interop.pth) and VGG weights (interop.weights);
* the file-system errors that name a path: FileNotFoundError, FileExistsError,
  IsADirectoryError, NotADirectoryError, PermissionError;
  and the checks of training settings (``TrainConfig.validate``, runs in ``--out``,
  resume and ``--init``: minissd.train), of checkpoints (minissd.checkpoint) and of
  state dicts (minissd.nn.module); ``NonFiniteLossError`` and ``NonFiniteWeightsError``
  are UserErrors too (lower the learning rate, check the named images);
* an exception raised ``from`` one of these, such as the data loader's
  DataLoaderError naming the image whose file turned out unreadable.

Anything else (a KeyError or ValueError from deep inside, a TypeError, ...) is a bug:
Python's traceback and exit code 1. Ctrl-C exits with 130. ``detect`` goes on past an
image it cannot read, with one line naming it, and exits 2 at the end.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time
import traceback

from minissd.errors import UserError

# The user errors (see the module docstring); is_user_error also follows `raise ... from`.
USER_ERRORS = (UserError, FileNotFoundError, FileExistsError, IsADirectoryError,
               NotADirectoryError, PermissionError)


def _add_device(p):
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cpu (NumPy) or cuda (CuPy) (default: cpu)")
    _add_threads(p)


def _add_threads(p):
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for minissd's layers (default: MINISSD_NUM_THREADS, "
                        "else one per core)")


def _classes(text):
    """--classes a,b,c as a list (None if not given); refused if empty or a name repeats."""
    if not text:
        return None
    from minissd.datasets.voc import check_class_names
    return list(check_class_names([c.strip() for c in text.split(",") if c.strip()],
                                  "--classes"))


def cmd_data_shapes(args):
    from minissd.datasets.synthetic import min_image_size, write_shapes_dataset
    for flag, count in (("--train", args.train), ("--test", args.test)):
        if count < 0:
            raise UserError(f"{flag} must be 0 or more images, got {count}")
    if args.size < min_image_size():
        raise UserError(f"--size {args.size} is too small: the smallest shapes would be under "
                        f"a pixel; give at least {min_image_size()}")
    t0 = time.time()
    write_shapes_dataset(args.out, num_train=args.train, num_test=args.test,
                         image_size=args.size, seed=args.seed)
    print(f"wrote {args.train} trainval + {args.test} test images to {args.out} "
          f"in {time.time() - t0:.1f} s")


SUMMARY_CONFIG, SUMMARY_CLASSES = "ssd-tiny", 20     # minissd summary without --checkpoint


def cmd_summary(args):
    from minissd.ssd.config import get_config
    from minissd.ssd.model import SSD, summary
    if args.checkpoint is None:
        cfg = get_config(args.config or SUMMARY_CONFIG)
        classes = SUMMARY_CLASSES if args.num_classes is None else args.num_classes
        print(summary(SSD(cfg, classes, seed=0)))
        return
    if args.config is not None or args.num_classes is not None:
        raise UserError("summary: --checkpoint brings its own config and classes; "
                        "give --checkpoint or --config/--num-classes, not both")
    from minissd.checkpoint import load_model
    model, meta = load_model(args.checkpoint)        # its config, architecture and classes
    print(f"{args.checkpoint}: {model.cfg.name}, classes {', '.join(meta['class_names'])}")
    print(summary(model))


def _evaluate(detector, dataset, metric, plot=None, class_names=None, result=None, errors=False,
              by_height=False):
    from minissd.evaluation.inference import evaluate_dataset
    from minissd.evaluation.metrics import format_ap_table
    if len(dataset) == 0:
        files = [os.path.join(root, "ImageSets", "Main", f"{split}.txt")
                 for root, split in dataset.sources]
        raise UserError(f"{', '.join(files)}: lists no images, nothing to evaluate")
    use_07 = metric == "voc07"
    detections = None
    if result is None:                                   # else: scored already (train --eval-every)
        from minissd.train import image_progress
        result, detections = evaluate_dataset(detector, dataset, use_07_metric=use_07,
                                              progress=image_progress("evaluate"))
    print(format_ap_table(result, class_names or dataset.class_names))
    if errors or by_height:                              # the tables below need the detections
        assert detections is not None, "_evaluate: errors / by_height need the detections, not a result"
        truths = [dataset.annotation(i) for i in range(len(dataset))]
    if errors:                                           # what the false positives are, per class
        from minissd.evaluation.metrics import format_error_breakdown
        print(format_error_breakdown(detections, truths, class_names or dataset.class_names))
    if by_height:                                        # AP over the taller objects only
        from minissd.evaluation.metrics import ap_by_height, format_ap_by_height
        rows = ap_by_height(detections, truths, [r.height for r in dataset.records],
                            num_classes=len(dataset.class_names), use_07_metric=use_07)
        print(format_ap_by_height(rows, class_names or dataset.class_names))
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from minissd.evaluation.metrics import plot_pr_curves
        fig, ax = plt.subplots(figsize=(6, 5))
        plot_pr_curves(result, dataset.class_names, ax=ax)
        fig.savefig(plot, dpi=100, bbox_inches="tight")
        plt.close(fig)
        print(f"precision-recall curves: {plot}")
    print(f"mAP@0.5 ({'VOC07' if use_07 else 'VOC10+'}): {result['map']:.3f}")
    return result


def _check_roots(roots):
    for root in roots:
        if not os.path.isdir(root):
            raise FileNotFoundError(f"data folder not found: {root}")


def _open_dataset(roots, split, class_names, keep_difficult):
    from minissd.datasets.voc import VOCDataset
    _check_roots(roots)
    return VOCDataset([(r, split) for r in roots], class_names=class_names,
                      keep_difficult=keep_difficult)


def _fractions(text):
    try:
        return tuple(float(f) for f in text.split(",") if f.strip())
    except ValueError:
        raise UserError(f"--decay-at: {text!r} is not comma-separated numbers") from None


def _epochs(text):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise UserError(f"--epochs: {text!r} is neither a whole number nor auto") from None


# text -> value for the TrainConfig fields whose option is not a plain int/float/str
_TRAIN_PARSE = {"classes": _classes, "decay_at": _fractions, "epochs": _epochs}


def _add_train_config(p):
    """One option per TrainConfig field (``batch_size`` -> ``--batch-size``), default and help
    from the dataclass. Options not given stay out of ``args``, so that ``--resume`` can
    tell them from the checkpoint's settings."""
    import dataclasses
    from minissd.train import TrainConfig
    types = {"int": int, "float": float, "str": str}
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kw = dict(f.metadata.get("argparse", {}))
        text = f.metadata["help"].replace("%", "%%")
        if isinstance(default, bool):
            kw["action"] = "store_true"
        else:
            kw.setdefault("type", types.get(str(f.type).replace(" | None", ""), str))
            if default not in (None, []):
                shown = ",".join(f"{x:.4g}" for x in default) if isinstance(default, tuple) else default
                text += f" (default: {shown})"
        p.add_argument(TrainConfig.option(f.name), dest=f.name, default=argparse.SUPPRESS,
                       help=text, **kw)


def cmd_train(args):
    import dataclasses
    from minissd.evaluation.inference import Detector
    from minissd.train import Trainer, TrainConfig, config_from_options
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if hasattr(args, f.name)}
    for name, parse in _TRAIN_PARSE.items():
        if name in given:
            given[name] = parse(given[name])
    if not given.get("data") and not given.get("resume"):
        raise UserError("--data: give the VOC root folder(s) to train on "
                        "(or --resume a run's checkpoint)")
    if args.vgg_weights and (given.get("init") or given.get("resume")):
        raise UserError("--vgg-weights initialises the base of a new run; it does not go "
                        "with --init or --resume")
    tc = config_from_options(given)
    _check_roots(tc.data)
    trainer = Trainer(tc)
    trainer.check_out()                       # refuse a folder holding another run, now
    if args.vgg_weights:
        from minissd.interop.weights import load_vgg16_torchvision
        load_vgg16_torchvision(trainer.model, args.vgg_weights)
        print(f"base initialised from {args.vgg_weights}")
    if tc.resume:
        print(f"resumed from {tc.resume} at epoch {trainer.epoch}, step {trainer.step}"
              + (f"; settings overridden: {trainer.overridden}" if trainer.overridden else ""))
    elif tc.init:
        print(f"initialised from {tc.init}"
              + (" (class heads re-initialised)" if tc.reset_heads else ""))
    classes = trainer.class_names
    print(f"training {tc.config} on {len(trainer.dataset)} images ({', '.join(classes)}) "
          f"for {tc.epochs} epochs of {len(trainer.loader)} steps on {tc.device}")
    t0 = time.time()
    trainer.fit()
    print(f"trained in {(time.time() - t0) / 60:.1f} min; checkpoint {os.path.join(tc.out, 'last.npz')}")
    if tc.eval_split:                         # the AP table and the curves of the trained model
        dataset = _open_dataset(tc.data, tc.eval_split, classes, keep_difficult=True)
        done = trainer.last_eval                         # --eval-every scored the last step (VOC07)
        same = done is not None and done["step"] == trainer.step and args.metric == "voc07"
        with trainer.evaluated():                       # --ema: the average
            _evaluate(Detector(trainer.model), dataset, args.metric,
                      plot=os.path.join(tc.out, "pr_curves.png"),
                      result=done["result"] if same else None)


def cmd_evaluate(args):
    from minissd.evaluation.inference import Detector
    from minissd.checkpoint import load_model
    model, meta = load_model(args.checkpoint, device=args.device, class_names=_classes(args.classes))
    dataset = _open_dataset(args.data, args.split, meta["class_names"], keep_difficult=True)
    _evaluate(Detector(model, flip=args.flip), dataset, args.metric, plot=args.plot, errors=args.errors,
              by_height=args.by_height)


def picture_names(paths):
    """A distinct ``.png`` name for each image path: its file name, or where two images
    share one, its path from their common folder (a/x1.jpg, b/x1.jpg -> a/x1.png,
    b/x1.png); numbered where names still clash (x1.jpg, x1.png -> x1.png, x1-2.png)."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    count = collections.Counter(stems)
    shared = [os.path.abspath(p) for p, s in zip(paths, stems) if count[s] > 1]
    common = os.path.commonpath([os.path.dirname(p) for p in shared]) if shared else ""
    names, used = [], set()
    for path, stem in zip(paths, stems):
        if count[stem] > 1:
            stem = os.path.splitext(os.path.relpath(os.path.abspath(path), common))[0]
        name, n = stem + ".png", 1
        while name in used:
            n += 1
            name = f"{stem}-{n}.png"
        used.add(name)
        names.append(name)
    return names


def cmd_detect(args):
    from PIL import Image
    from minissd.checkpoint import load_model
    from minissd.datasets.voc import load_image
    from minissd.evaluation.inference import Detector
    from minissd.viz import draw_boxes, save_grid
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out {args.out}: is a file, not a folder for the drawn images")
    if args.grid and (os.path.isdir(args.grid) or os.path.splitext(args.grid)[1].lower()
                      not in Image.registered_extensions()):
        raise UserError(f"--grid {args.grid}: give a picture file name such as grid.png")
    if args.ssd_pytorch_weights:         # ssd.pytorch's SSD300: its preprocessing, priors, Detect
        # (a threshold before NMS keeps the same boxes as Detect's 0.01 and one after it: a box
        # above it is only ever suppressed, or cut from its class's 200, by higher-scoring ones)
        detector = Detector.from_ssd_pytorch(args.ssd_pytorch_weights, device=args.device,
                                             conf_threshold=args.threshold, flip=args.flip)
        meta = {"class_names": detector.class_names}
    else:
        model, meta = load_model(args.checkpoint, device=args.device)
        detector = Detector(model, conf_threshold=args.threshold, flip=args.flip)
    paths = list(args.images)
    if args.data:
        dataset = _open_dataset([args.data], args.split, meta["class_names"], keep_difficult=False)
        paths += [dataset.records[i].image_path for i in range(min(args.limit, len(dataset)))]
    if not paths:
        raise UserError("detect: give image files, or --data ROOT --split SPLIT")
    first = {}
    for path in paths:                                   # an image given twice is drawn once
        first.setdefault(os.path.realpath(path), path)
    paths = list(first.values())
    os.makedirs(args.out, exist_ok=True)
    from minissd.train import Progress, format_duration
    drawn, skipped = [], 0
    timer = Progress(len(paths))                         # for the count and the time left
    for k, (path, name) in enumerate(zip(paths, picture_names(paths)), 1):
        where = f" ({k}/{len(paths)}, {format_duration(timer.left(k)[0])} left)" if len(paths) > 1 else ""
        try:
            image = load_image(path)                     # (H, W, 3) uint8
        except (UserError, FileNotFoundError) as err:  # not an image: say so, go on
            print(f"minissd: error: {err}; skipped{where}", file=sys.stderr)
            skipped += 1
            continue
        boxes, labels, scores = detector([image])[0]
        picture = draw_boxes(image, boxes, labels, scores, class_names=meta["class_names"])
        out = os.path.join(args.out, name)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        picture.save(out)
        drawn.append(picture)
        found = ", ".join(f"{meta['class_names'][l - 1]} {s:.2f}" for l, s in zip(labels, scores))
        print(f"{path}: {len(labels)} detection(s) {found} -> {out}{where}")
    if args.grid and drawn:
        os.makedirs(os.path.dirname(os.path.abspath(args.grid)), exist_ok=True)
        save_grid(drawn, args.grid)
        print(f"detections picture: {args.grid}")
    return 2 if skipped else 0                           # 2: some images could not be read


def cmd_anchors(args):
    import matplotlib
    matplotlib.use("Agg")
    from minissd.ssd.config import get_config
    from minissd.ssd.coverage import anchor_coverage, format_coverage, plot_coverage
    cfg = get_config(args.config)
    dataset = _open_dataset(args.data, args.split, _classes(args.classes), keep_difficult=False)
    report = anchor_coverage(dataset, cfg, threshold=args.threshold)
    print(f"{args.split} of {', '.join(args.data)}: {len(dataset)} images")
    print(format_coverage(report))
    if args.plot:
        import matplotlib.pyplot as plt
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        ax = plot_coverage(report)
        ax.figure.savefig(args.plot, dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
        print(f"objects vs default boxes: {args.plot}")


def cmd_export(args):
    from minissd.checkpoint import export_model
    export_model(args.checkpoint, args.out)
    print(f"wrote {args.out} (model weights and config, no optimiser state)")


FLIP_HELP = ("test-time flipping: also run each image mirrored and average each default box's "
             "prediction with its mirror box's (twice the network's work)")


def build_parser():
    parser = argparse.ArgumentParser(prog="minissd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of expected errors too (before the subcommand)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an SSD on VOC-layout data")
    _add_train_config(p)
    p.add_argument("--vgg-weights", help="torchvision ImageNet VGG16 .pth (vgg16-397923af.pth) for "
                                         "the ssd300 base; you download it, minissd never does")
    p.add_argument("--metric", default="voc07", choices=["voc07", "voc10"])
    _add_threads(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="VOC mAP of a checkpoint on a split")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", nargs="+", required=True, help="VOC root folder(s)")
    p.add_argument("--split", default="test")
    p.add_argument("--classes", help="comma-separated class names (must match the checkpoint)")
    p.add_argument("--metric", default="voc07", choices=["voc07", "voc10"],
                   help="VOC2007 11-point AP or VOC2010+ all-point AP")
    p.add_argument("--plot", help="write precision-recall curves to this PNG")
    p.add_argument("--errors", action="store_true",
                   help="also print, per class, what its best detections are: correct, duplicate, "
                        "localisation, confusion with another class, background (Hoiem et al. 2012)")
    p.add_argument("--by-height", action="store_true",
                   help="also print each class's AP over the objects at least 0.1, 0.2 and 0.4 of "
                        "their photo's height, the shorter ones ignored as difficult ones are "
                        "(what the small objects cost; COCO's AP by size)")
    p.add_argument("--flip", action="store_true", help=FLIP_HELP)
    _add_device(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("detect", help="draw detections on images")
    p.add_argument("images", nargs="*", help="image files")
    p.add_argument("--data", help="a VOC root: also draw the first --limit images of --split")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=8)
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint")
    weights.add_argument("--ssd-pytorch-weights", metavar="PATH",
                         help="an ssd.pytorch SSD300 .pth (e.g. ssd300_mAP_77.43_v2.pth, 20 VOC "
                              "classes), run as ssd.pytorch runs it; you download it, minissd never does")
    p.add_argument("--out", required=True, help="folder for the drawn images")
    p.add_argument("--threshold", type=float, default=0.5, help="minimum score to draw")
    p.add_argument("--grid", help="also write all drawn images as one picture here")
    p.add_argument("--flip", action="store_true", help=FLIP_HELP)
    _add_device(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("anchors", help="how well a config's default boxes cover a data set's objects")
    p.add_argument("--data", nargs="+", required=True, help="VOC root folder(s)")
    p.add_argument("--config", default="ssd-tiny", help="a config name (ssd-tiny, ssd300, ...)")
    p.add_argument("--split", default="trainval")
    p.add_argument("--classes", help="comma-separated class names (default: classes.txt of the "
                                     "first root, else the 20 VOC classes)")
    p.add_argument("--threshold", type=float, default=0.5, help="matching's IoU threshold")
    p.add_argument("--plot", help="write the objects' (w, h) against the default boxes to this PNG")
    p.set_defaults(func=cmd_anchors)

    p = sub.add_parser("export", help="a checkpoint without optimiser state, for shipping")
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("data", help="data set tools")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("shapes", help="write the synthetic shapes data set (VOC layout)")
    q.add_argument("--out", required=True)
    q.add_argument("--train", type=int, default=2000, help="trainval images")
    q.add_argument("--test", type=int, default=200, help="test images")
    q.add_argument("--size", type=int, default=160, help="image side in pixels")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_data_shapes)

    p = sub.add_parser("summary", help="print the model table (layers, shapes, parameters)")
    p.add_argument("--config", default=None, help=f"a preset (default {SUMMARY_CONFIG})")
    p.add_argument("--num-classes", type=int, default=None,
                   help=f"object classes (default {SUMMARY_CLASSES})")
    p.add_argument("--checkpoint", default=None,
                   help="a saved model's table instead: its config, architecture (max-out "
                        "heads, top-down path) and classes")
    p.set_defaults(func=cmd_summary)
    return parser


def is_user_error(err) -> bool:
    """Whether ``err`` is a mistake the user can fix (one line) rather than a bug (traceback)."""
    if isinstance(err, USER_ERRORS):
        return True
    return err.__cause__ is not None and is_user_error(err.__cause__)   # raise ... from err


def raised_by_ctrl_c(err) -> bool:
    """Whether ``err`` was raised while a Ctrl-C unwound the stack: a KeyboardInterrupt is in
    its context chain. (A Ctrl-C while ``zipfile`` opens a member for writing, as numpy's
    ``savez`` does for each array of a checkpoint, leaves the member open, and the zip's own
    ``close`` then raises a ValueError.)"""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__context__
    return False


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "threads", None) is not None:
            from minissd.nn.threads import set_num_threads
            set_num_threads(args.threads)
        return args.func(args) or 0             # a command returns its exit code, or None
    except (KeyboardInterrupt, Exception) as err:
        if raised_by_ctrl_c(err):               # Ctrl-C, or an error of the cleanup it ran
            print("minissd: interrupted", file=sys.stderr)
            return 130
        if not is_user_error(err):
            raise                               # a bug: Python prints the traceback
        if args.debug:
            traceback.print_exc()
        message = err.args[0] if type(err) is KeyError and err.args else err
        print(f"minissd: error: {' '.join(str(message).splitlines())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
