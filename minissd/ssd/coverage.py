"""Do the default boxes fit the data? Per class, how many objects some default box overlaps well.

Matching (:mod:`minissd.ssd.matching`) gives an object every default box with
IoU >= 0.5, plus its one best box whatever the IoU ("forced best match"). An
object whose best default box overlaps it less than 0.5 is therefore learned
from a single, poorly fitting default box: its loss pulls the box far, and at
test time no default box starts near it. Counting those objects per class,
before any training, tells whether a config's boxes suit a data set — the
question of chapter 6's exercise 2 — and the (w, h) picture shows why.

Ground truth is seen as the network sees it: the evaluation transform resizes
each image to ``image_size`` x ``image_size`` ignoring its aspect ratio, so an
object of w x h pixels in a W x H photo becomes ``w / W * S`` x ``h / H * S``
pixels of the input. In [0, 1] coordinates (box / image side) nothing changes,
so IoUs are taken there, against ``default_boxes(cfg)``.

    report = anchor_coverage(dataset, cfg)
    print(format_coverage(report))
    plot_coverage(report, ax=ax)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minissd.ssd.boxes import cxcywh_to_xyxy, iou
from minissd.ssd.config import SSDConfig
from minissd.ssd.priors import box_shapes, default_boxes

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass
class CoverageReport:
    """Per object: its class, size in input pixels and best default box; and the config."""
    cfg: SSDConfig
    class_names: tuple
    labels: np.ndarray        # (N,) int64 in 1..C
    wh_px: np.ndarray         # (N, 2) float64 width, height in pixels of the model's input
    best_iou: np.ndarray      # (N,) float64 IoU with the best default box
    best_map: np.ndarray      # (N,) int64 feature map k of that default box
    threshold: float          # matching's IoU threshold (0.5 in SSD)

    @property
    def covered(self) -> np.ndarray:
        """(N,) bool: some default box has IoU >= threshold with the object."""
        return self.best_iou >= self.threshold


def unit_ground_truth(dataset, keep_difficult=False):
    """All objects of a VOC-style data set in [0, 1] xyxy (box / image side), and their labels.

    dataset: anything with ``records`` (``width``, ``height``) and ``annotation(i)``,
        like :class:`minissd.datasets.voc.VOCDataset`. Difficult objects are left out
        unless ``keep_difficult``, as in training.
    Returns boxes (N, 4) float64 and labels (N,) int64.
    """
    boxes, labels = [], []
    for i, record in enumerate(dataset.records):
        b, l, difficult = dataset.annotation(i)
        keep = np.ones(len(l), dtype=bool) if keep_difficult else ~difficult
        side = np.array([record.width, record.height] * 2, dtype=np.float64)
        boxes.append(np.asarray(b, dtype=np.float64)[keep] / side)
        labels.append(np.asarray(l, dtype=np.int64)[keep])
    if not boxes:
        return np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    return np.concatenate(boxes).reshape(-1, 4), np.concatenate(labels)


def best_default_box(gt_xyxy, priors_cxcywh, chunk=1024):
    """For each object its highest IoU with any default box, and that box's index.

    gt_xyxy: (N, 4) in [0, 1]; priors_cxcywh: (P, 4). Objects go in chunks so
    the (chunk, P) IoU matrix stays small. Returns (N,) IoUs and (N,) int64 indices.
    """
    priors = cxcywh_to_xyxy(np.asarray(priors_cxcywh, dtype=np.float64))   # (P, 4)
    gt = np.asarray(gt_xyxy, dtype=np.float64).reshape(-1, 4)
    best, index = np.zeros(len(gt)), np.zeros(len(gt), dtype=np.int64)
    for start in range(0, len(gt), chunk):
        overlaps = iou(gt[start:start + chunk], priors)                     # (n, P)
        index[start:start + chunk] = overlaps.argmax(axis=1)
        best[start:start + chunk] = overlaps.max(axis=1)
    return best, index


def prior_map_index(cfg: SSDConfig) -> np.ndarray:
    """(P,) int64: the feature map each default box of ``default_boxes(cfg)`` belongs to."""
    return np.repeat(np.arange(len(cfg.feature_maps)), cfg.boxes_per_map)


def anchor_coverage(dataset, cfg: SSDConfig, threshold=0.5, keep_difficult=False) -> CoverageReport:
    """Every object of ``dataset`` against the default boxes of ``cfg`` (see the module docstring)."""
    gt, labels = unit_ground_truth(dataset, keep_difficult)
    best, index = best_default_box(gt, default_boxes(cfg, dtype="float64"))
    wh_px = (gt[:, 2:] - gt[:, :2]) * cfg.image_size                           # (N, 2)
    return CoverageReport(cfg=cfg, class_names=tuple(dataset.class_names), labels=labels,
                          wh_px=wh_px, best_iou=best, best_map=prior_map_index(cfg)[index],
                          threshold=threshold)


def coverage_rows(report: CoverageReport, quantiles=QUANTILES) -> list:
    """Per class, then all classes: a dict of counts, best-IoU quantiles and the median size."""
    rows = []
    groups = [(name, report.labels == c) for c, name in enumerate(report.class_names, start=1)]
    for name, mask in groups + [("all", np.ones(len(report.labels), dtype=bool))]:
        n = int(mask.sum())
        best = report.best_iou[mask]
        rows.append({
            "class": name, "objects": n, "covered": int(report.covered[mask].sum()),
            "quantiles": [float(np.quantile(best, q)) if n else float("nan") for q in quantiles],
            "median_wh_px": [float(np.median(report.wh_px[mask, j])) if n else float("nan")
                             for j in (0, 1)],
        })
    return rows


def format_coverage(report: CoverageReport, quantiles=QUANTILES) -> str:
    """The coverage table: per class objects, covered (IoU >= threshold), best-IoU quantiles.

    Classes without objects get no row; the last line names them.
    """
    cfg, rows = report.cfg, coverage_rows(report, quantiles)
    absent = [r["class"] for r in rows if r["objects"] == 0 and r["class"] != "all"]
    width = max(len(r["class"]) for r in rows + [{"class": "class"}] if r["class"] not in absent)
    q_head = " ".join(f"{'q' + format(100 * q, 'g'):>5}" for q in quantiles)
    head = (f"{'class':<{width}} {'objects':>7} {'IoU>=' + format(report.threshold, 'g'):>8} "
            f"{'%':>6}   best IoU: {q_head}   median w x h (px)")
    lines = [f"default boxes of {cfg.name!r} ({cfg.num_priors} at {cfg.image_size} px) against "
             f"{len(report.labels)} objects", head, "-" * len(head)]
    for r in rows:
        if r["class"] in absent:
            continue
        if r["class"] == "all":
            lines.append("-" * len(head))
        share = 100 * r["covered"] / r["objects"] if r["objects"] else float("nan")
        q_text = " ".join(f"{v:5.2f}" for v in r["quantiles"])
        w, h = r["median_wh_px"]
        lines.append(f"{r['class']:<{width}} {r['objects']:7d} {r['covered']:8d} {share:5.1f}%"
                     f"             {q_text}   {w:5.1f} x {h:5.1f}")
    maps = np.bincount(report.best_map, minlength=len(cfg.feature_maps))
    per_map = ", ".join(f"{f}x{f}: {n}" for f, n in zip(cfg.feature_maps, maps))
    lines.append(f"best default box on map: {per_map}")
    if absent:
        lines.append(f"no objects of: {', '.join(absent)}")
    return "\n".join(lines)


def plot_coverage(report: CoverageReport, ax=None):
    """Objects' (w, h) in input pixels, per class, over the default boxes' shapes, log axes."""
    import matplotlib.pyplot as plt  # imported here: only plotting needs it
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    cfg = report.cfg
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 6))
    few = len(report.labels) <= 200                   # a few photos' objects: big, opaque dots
    for c, name in enumerate(report.class_names, start=1):
        mask = report.labels == c
        if mask.any():
            ax.scatter(report.wh_px[mask, 0], report.wh_px[mask, 1], s=30 if few else 6,
                       alpha=0.8 if few else 0.35,
                       label=f"{name} ({int(report.covered[mask].sum())}/{int(mask.sum())} "
                             f"IoU>={report.threshold:g})")
    for k, f in enumerate(cfg.feature_maps):
        wh = np.asarray(box_shapes(cfg, k)) * cfg.image_size                # (A, 2) pixels
        ax.scatter(wh[:, 0], wh[:, 1], s=90, marker="x", linewidths=2, color="black",
                   zorder=3)
        ax.annotate(f"{f}x{f}", wh[0], textcoords="offset points", xytext=(6, -10), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):                 # plain numbers, no crowded minor labels
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"width (pixels of the {cfg.image_size}-px input)")
    ax.set_ylabel("height (pixels)")
    ax.set_title(f"objects vs default boxes of {cfg.name} (x: one map's box shapes)")
    ax.legend(loc="upper left", fontsize=7, markerscale=2)
    ax.grid(True, which="both", alpha=0.2)
    return ax
