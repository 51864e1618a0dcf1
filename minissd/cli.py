"""The ``minissd`` command: train, evaluate, detect, data shapes, summary.

    minissd data shapes --out data/shapes
    minissd train --data data/shapes --config ssd-tiny --epochs 30 --out runs/shapes
    minissd evaluate --checkpoint runs/shapes/last.npz --data data/shapes --split test
    minissd detect data/shapes/JPEGImages/000001.png --checkpoint runs/shapes/last.npz --out det/
    minissd summary --config ssd300 --num-classes 20
    minissd anchors --data data/shapes --config ssd-tiny --plot anchors.png
    minissd export runs/shapes/last.npz models/shapes.npz

Errors a user can fix (a missing folder, an unknown config, a checkpoint for
another class list) are one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def _add_device(p):
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cpu (NumPy) or cuda (CuPy) (default: cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for minissd's layers (default: MINISSD_NUM_THREADS, "
                        "else one per core)")


def _classes(text):
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def cmd_data_shapes(args):
    from minissd.datasets.synthetic import write_shapes_dataset
    t0 = time.time()
    write_shapes_dataset(args.out, num_train=args.train, num_test=args.test,
                         image_size=args.size, seed=args.seed)
    print(f"wrote {args.train} trainval + {args.test} test images to {args.out} "
          f"in {time.time() - t0:.1f} s")


def cmd_summary(args):
    from minissd.ssd.config import get_config
    from minissd.ssd.model import SSD, summary
    cfg = get_config(args.config)
    print(summary(SSD(cfg, args.num_classes, seed=0)))


def _evaluate(detector, dataset, metric, plot=None, class_names=None):
    from minissd.evaluation.inference import evaluate_dataset
    from minissd.evaluation.metrics import format_ap_table
    use_07 = metric == "voc07"
    result, _ = evaluate_dataset(detector, dataset, use_07_metric=use_07)
    print(format_ap_table(result, class_names or dataset.class_names))
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


def cmd_train(args):
    from minissd.evaluation.inference import Detector
    from minissd.train import Trainer, TrainConfig
    _check_roots(args.data)
    tc = TrainConfig(data=args.data, split=args.split, config=args.config,
                     classes=_classes(args.classes),
                     epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                     device=args.device, workers=args.workers, out=args.out,
                     max_minutes=args.max_minutes, augment=args.augment,
                     eval_every=args.eval_every, eval_split=args.eval_split)
    trainer = Trainer(tc)
    if args.vgg_weights:
        from minissd.interop.weights import load_vgg16_torchvision
        load_vgg16_torchvision(trainer.model, args.vgg_weights)
        print(f"base initialised from {args.vgg_weights}")
    if args.resume:
        trainer.resume(args.resume)
        print(f"resumed from {args.resume} at epoch {trainer.epoch}, step {trainer.step}")
    classes = trainer.class_names
    print(f"training {tc.config} on {len(trainer.dataset)} images ({', '.join(classes)}) "
          f"for {tc.epochs} epochs of {len(trainer.loader)} steps on {tc.device}")
    t0 = time.time()
    trainer.fit()
    print(f"trained in {(time.time() - t0) / 60:.1f} min; checkpoint {os.path.join(tc.out, 'last.npz')}")
    if args.eval_split:
        dataset = _open_dataset(args.data, args.eval_split, classes, keep_difficult=True)
        _evaluate(Detector(trainer.model), dataset, args.metric,
                  plot=os.path.join(tc.out, "pr_curves.png"))


def cmd_evaluate(args):
    from minissd.evaluation.inference import Detector
    from minissd.checkpoint import load_model
    model, meta = load_model(args.checkpoint, device=args.device, class_names=_classes(args.classes))
    dataset = _open_dataset(args.data, args.split, meta["class_names"], keep_difficult=True)
    _evaluate(Detector(model), dataset, args.metric, plot=args.plot)


def cmd_detect(args):
    import numpy as np
    from PIL import Image
    from minissd.evaluation.inference import Detector
    from minissd.checkpoint import load_model
    from minissd.viz import draw_boxes, save_grid
    model, meta = load_model(args.checkpoint, device=args.device)
    detector = Detector(model, conf_threshold=args.threshold)
    os.makedirs(args.out, exist_ok=True)
    paths = list(args.images)
    if args.data:
        dataset = _open_dataset([args.data], args.split, meta["class_names"], keep_difficult=False)
        paths += [dataset.records[i].image_path for i in range(min(args.limit, len(dataset)))]
    if not paths:
        raise ValueError("detect: give image files, or --data ROOT --split SPLIT")
    drawn = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image not found: {path}")
        image = np.asarray(Image.open(path).convert("RGB"))
        boxes, labels, scores = detector([image])[0]
        picture = draw_boxes(image, boxes, labels, scores, class_names=meta["class_names"])
        out = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + ".png")
        picture.save(out)
        drawn.append(picture)
        found = ", ".join(f"{meta['class_names'][l - 1]} {s:.2f}" for l, s in zip(labels, scores))
        print(f"{path}: {len(labels)} detection(s) {found}")
    if args.grid:
        os.makedirs(os.path.dirname(os.path.abspath(args.grid)), exist_ok=True)
        save_grid(drawn, args.grid)
        print(f"detections picture: {args.grid}")


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


def build_parser():
    parser = argparse.ArgumentParser(prog="minissd", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an SSD on VOC-layout data")
    p.add_argument("--data", nargs="+", required=True, help="VOC root folder(s)")
    p.add_argument("--split", default="trainval", help="ImageSets/Main split to train on")
    p.add_argument("--classes", help="comma-separated class names (default: classes.txt of the "
                                     "first root, else the 20 VOC classes)")
    p.add_argument("--config", default="ssd-tiny", help="ssd-tiny, ssd300 or ssd512")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="base learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="data loader workers")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this long")
    p.add_argument("--augment", default="ssd", choices=["ssd", "flip", "none"],
                   help="ssd: the paper's photometric/expand/crop/flip (default); flip: flip only; "
                        "none: resize + normalise")
    p.add_argument("--out", default="runs/train", help="folder for checkpoints and the log")
    p.add_argument("--resume", help="checkpoint to continue from")
    p.add_argument("--vgg-weights", help="torchvision ImageNet VGG16 .pth (vgg16-397923af.pth) for "
                                         "the ssd300 base; you download it, minissd never does")
    p.add_argument("--eval-split", help="evaluate on this split after training (e.g. test)")
    p.add_argument("--eval-every", type=int, default=0,
                   help="also every N epochs, logged to train_log.jsonl (eval_map, eval_ap)")
    p.add_argument("--metric", default="voc07", choices=["voc07", "voc10"])
    _add_device(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="VOC mAP of a checkpoint on a split")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", nargs="+", required=True, help="VOC root folder(s)")
    p.add_argument("--split", default="test")
    p.add_argument("--classes", help="comma-separated class names (must match the checkpoint)")
    p.add_argument("--metric", default="voc07", choices=["voc07", "voc10"],
                   help="VOC2007 11-point AP or VOC2010+ all-point AP")
    p.add_argument("--plot", help="write precision-recall curves to this PNG")
    _add_device(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("detect", help="draw detections on images")
    p.add_argument("images", nargs="*", help="image files")
    p.add_argument("--data", help="a VOC root: also draw the first --limit images of --split")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="folder for the drawn images")
    p.add_argument("--threshold", type=float, default=0.5, help="minimum score to draw")
    p.add_argument("--grid", help="also write all drawn images as one picture here")
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
    p.add_argument("--config", default="ssd-tiny")
    p.add_argument("--num-classes", type=int, default=20)
    p.set_defaults(func=cmd_summary)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "threads", None) is not None:
            from minissd.nn.backend import set_num_threads
            set_num_threads(args.threads)
        args.func(args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"minissd: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("minissd: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
