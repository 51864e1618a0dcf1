"""PASCAL VOC detection metrics: per-class average precision (AP) and mAP.

This follows the VOC development kit as ported to Python by py-faster-rcnn
(``voc_eval.py``, also used by ssd.pytorch) so numbers are comparable with
published VOC2007 results:

* Per class, all detections of the data set are sorted by score, highest first
  (a *stable* sort, so ties keep their input order).
* Each detection is compared with the ground truths of the same class in its
  own image; it is matched to the one with the highest IoU. IoU uses inclusive
  pixel coordinates: a box from x1 to x2 covers ``x2 - x1 + 1`` pixels.
  (ssd.pytorch's copy of ``voc_eval.py`` dropped the ``+ 1``; the MATLAB
  devkit, py-faster-rcnn and ChainerCV keep it, and so do we.)
* If that IoU is strictly greater than ``iou_threshold``:
  the ground truth is *difficult*  -> the detection is ignored (neither TP nor FP);
  it is not yet detected           -> true positive, and it is marked detected;
  it was already detected          -> false positive (a duplicate).
  Otherwise the detection is a false positive.
* recall = TP / (number of non-difficult ground truths),
  precision = TP / (TP + FP), both cumulative down the sorted list.
* AP: ``use_07_metric=True`` is VOC2007's 11-point AP, the mean over
  t in {0, 0.1, ..., 1} of the best precision at recall >= t. Otherwise it is
  the VOC2010+ area under the precision envelope (precision made monotone
  non-increasing in recall).

Two choices beyond the devkit, both documented in the result:

* A class with no non-difficult ground truth has no recall, so its AP is NaN
  and it is left out of the mAP (ChainerCV does the same). Its recall curve is
  all NaN.
* Ignored detections (matched to a difficult ground truth) are dropped from the
  precision/recall curves. The devkit keeps them as repeated points, which never
  changes the AP.

Detections and ground truths must share one pixel convention (both 0-based or
both 1-based, as VOC's XML files are); IoU does not care which.

Evaluation is bookkeeping over a few thousand boxes, so it runs on the CPU:
CuPy inputs are copied to NumPy first.

    >>> import numpy as np
    >>> gt = (np.array([[0., 0., 9., 9.]]), np.array([1]), np.array([False]))
    >>> det = (np.array([[0., 0., 9., 9.]]), np.array([1]), np.array([0.9]))
    >>> evaluate_voc([det], [gt])["map"]
    1.0
"""
from __future__ import annotations

import numpy as np

from minissd.nn.backend import to_numpy

# The 11 recall levels of VOC2007. np.arange (not k / 10) reproduces the devkit
# bit for bit: its 0.3 is 0.30000000000000004, so a recall of exactly 3/10 does
# not reach that level, in the devkit and here alike.
VOC07_RECALL_LEVELS = np.arange(0.0, 1.1, 0.1)

# Outcome codes of one detection.
FALSE_POSITIVE, TRUE_POSITIVE, IGNORED = 0, 1, -1


def box_iou_voc(boxes_a_xyxy, boxes_b_xyxy):
    """IoU matrix (N, M) of pixel boxes with inclusive corners (+1 in widths and heights)."""
    a = np.asarray(boxes_a_xyxy, dtype=np.float64)[:, None, :]  # (N, 1, 4)
    b = np.asarray(boxes_b_xyxy, dtype=np.float64)[None, :, :]  # (1, M, 4)
    iw = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1.0, 0.0)
    inter = iw * ih                                                          # (N, M)
    area_a = (a[..., 2] - a[..., 0] + 1.0) * (a[..., 3] - a[..., 1] + 1.0)   # (N, 1)
    area_b = (b[..., 2] - b[..., 0] + 1.0) * (b[..., 3] - b[..., 1] + 1.0)   # (1, M)
    return inter / (area_a + area_b - inter)


def voc07_best_precision(recall, precision):
    """(11,) the best precision at recall >= t, t in ``VOC07_RECALL_LEVELS`` (0 where recall never
    gets there); their mean is VOC2007's 11-point AP. recall, precision (K,): after each detection."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    return np.array([precision[recall >= t].max() if (recall >= t).any() else 0.0
                     for t in VOC07_RECALL_LEVELS])


def precision_envelope(precision):
    """(K,) precision made non-increasing in recall: at each point the best precision from there on
    (``precision`` in detection order, so in recall order)."""
    return np.maximum.accumulate(np.asarray(precision, dtype=np.float64)[::-1])[::-1]


def voc_ap(recall, precision, use_07_metric=True):
    """Average precision of one precision/recall curve (VOC07 11-point, or all-point)."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        best = voc07_best_precision(recall, precision)        # (11,) best precision per level
        return float(sum(best) / len(VOC07_RECALL_LEVELS))
    # Sentinels: the curve starts at recall 0 and ends at recall 1 with precision 0.
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = precision_envelope(np.concatenate(([0.0], precision, [0.0])))   # the monotone envelope
    step = np.flatnonzero(mrec[1:] != mrec[:-1])       # where recall moves
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


def match_image(ious, difficult, iou_threshold=0.5):
    """Outcome (D,) of each detection of one image and class, given in score order.

    ``ious`` is (D, G) against that image's ground truths of the class; returns
    TRUE_POSITIVE, FALSE_POSITIVE or IGNORED per detection (greedy, as the devkit).
    """
    num_dets, num_gts = ious.shape
    outcome = np.full(num_dets, FALSE_POSITIVE, dtype=np.int8)
    if num_gts == 0:
        return outcome
    best_gt = ious.argmax(axis=1)                               # (D,)
    best_iou = ious[np.arange(num_dets), best_gt]               # (D,)
    detected = np.zeros(num_gts, dtype=bool)
    for d in range(num_dets):
        j = best_gt[d]
        if not best_iou[d] > iou_threshold:
            continue                                            # false positive
        if difficult[j]:
            outcome[d] = IGNORED
        elif not detected[j]:
            outcome[d] = TRUE_POSITIVE
            detected[j] = True
        # else: a duplicate of a detected object, a false positive
    return outcome


def _judge_class(det, gt, c, iou_threshold):
    """One image's detections of class c, judged: (their indices, best first (stable); the image's
    class-c ground-truth mask (G,); their IoUs with those objects (D_c, G_c); match_image's verdicts).

    det = (boxes, labels, scores), gt = (boxes, labels, difficult), as _check_inputs gives them.
    """
    (boxes, labels, scores), (gt_boxes, gt_labels, difficult) = det, gt
    gt_c = gt_labels == c
    det_c = np.flatnonzero(labels == c)
    det_c = det_c[np.argsort(-scores[det_c], kind="stable")]            # this image, best first
    ious = box_iou_voc(boxes[det_c], gt_boxes[gt_c])                    # (D_c, G_c)
    return det_c, gt_c, ious, match_image(ious, difficult[gt_c], iou_threshold)


def judge_image(boxes, labels, scores, gt_boxes, gt_labels, difficult=None, iou_threshold=0.5):
    """VOC's verdict on one image's detections, class by class, as ``evaluate_voc`` gives it.

    boxes (D, 4), labels (D,), scores (D,): the detections; gt_boxes (G, 4), gt_labels (G,),
    difficult (G,) bool or None: the ground truth; pixel xyxy boxes (VOC's inclusive IoU).
    -> (outcome (D,): TRUE_POSITIVE, FALSE_POSITIVE or IGNORED per detection,
        found (G,) bool: each ground truth has a true positive).
    """
    boxes, gt_boxes = np.asarray(boxes, float).reshape(-1, 4), np.asarray(gt_boxes, float).reshape(-1, 4)
    labels, scores = np.asarray(labels).reshape(-1), np.asarray(scores, float).reshape(-1)
    gt_labels = np.asarray(gt_labels).reshape(-1)
    difficult = (np.zeros(len(gt_boxes), bool) if difficult is None
                 else np.asarray(difficult, bool).reshape(-1))
    if not len(labels) == len(scores) == len(boxes):
        raise ValueError(f"judge_image: {len(boxes)} boxes, {len(labels)} labels and "
                         f"{len(scores)} scores: one of each per detection")
    if not len(gt_labels) == len(difficult) == len(gt_boxes):
        raise ValueError(f"judge_image: {len(gt_boxes)} gt_boxes, {len(gt_labels)} gt_labels and "
                         f"{len(difficult)} difficult flags: one of each per ground truth")
    outcome = np.full(len(boxes), FALSE_POSITIVE, dtype=np.int8)
    found = np.zeros(len(gt_boxes), dtype=bool)
    for c in np.unique(labels):
        dets = np.flatnonzero(labels == c)
        dets = dets[np.argsort(-scores[dets], kind="stable")]          # best first
        gts = np.flatnonzero(gt_labels == c)
        outcome[dets] = match_image(box_iou_voc(boxes[dets], gt_boxes[gts]), difficult[gts],
                                    iou_threshold)
        hits = outcome[dets] == TRUE_POSITIVE
        if hits.any():
            ious = box_iou_voc(boxes[dets[hits]], gt_boxes[gts])       # (TP, Gc)
            found[gts[ious.argmax(axis=1)]] = True                    # what each TP matched
    return outcome, found


def _check_inputs(detections, ground_truths):
    """NumPy copies of the inputs, with shapes checked; errors name the image."""
    if len(detections) != len(ground_truths):
        raise ValueError(f"detections has {len(detections)} images but ground_truths has "
                         f"{len(ground_truths)}: give one entry per image in both")
    dets, gts = [], []
    for i, (det, gt) in enumerate(zip(detections, ground_truths)):
        if len(det) != 3:
            raise ValueError(f"detections[{i}] must be (boxes, labels, scores), got {len(det)} items")
        boxes, labels, scores = (to_numpy(a) for a in det)
        boxes = boxes.reshape(-1, 4) if boxes.size == 0 else boxes
        labels, scores = labels.reshape(-1).astype(np.int64), scores.reshape(-1).astype(np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not len(boxes) == len(labels) == len(scores):
            raise ValueError(f"detections[{i}]: boxes {boxes.shape}, labels {labels.shape} and "
                             f"scores {scores.shape} must be (D, 4), (D,) and (D,)")
        dets.append((boxes, labels, scores))
        if len(gt) not in (2, 3):
            raise ValueError(f"ground_truths[{i}] must be (boxes, labels[, difficult]), "
                             f"got {len(gt)} items")
        gt_boxes, gt_labels = to_numpy(gt[0]), to_numpy(gt[1]).reshape(-1).astype(np.int64)
        gt_boxes = gt_boxes.reshape(-1, 4) if gt_boxes.size == 0 else gt_boxes
        difficult = (np.zeros(len(gt_labels), dtype=bool) if len(gt) == 2 or gt[2] is None
                     else to_numpy(gt[2]).reshape(-1).astype(bool))
        if gt_boxes.ndim != 2 or gt_boxes.shape[1] != 4 or not (
                len(gt_boxes) == len(gt_labels) == len(difficult)):
            raise ValueError(f"ground_truths[{i}]: boxes {gt_boxes.shape}, labels {gt_labels.shape} "
                             f"and difficult {difficult.shape} must be (G, 4), (G,) and (G,)")
        gts.append((gt_boxes, gt_labels, difficult))
    return dets, gts


def evaluate_voc(detections, ground_truths, num_classes=None, iou_threshold=0.5,
                 use_07_metric=True):
    """VOC AP per class and mAP over a data set.

    detections[i] = (boxes (D, 4) xyxy pixels, labels (D,) in 1..C, scores (D,)) and
    ground_truths[i] = (boxes (G, 4), labels (G,), difficult (G,) bool, optional)
    for image i. num_classes (C) defaults to the largest label seen.

    Returns a dict: "ap" (C,) for classes 1..C (NaN where a class has no
    non-difficult ground truth), "map" (mean of the finite APs; NaN if none),
    "precision" and "recall" (lists of C arrays, the curves down the sorted
    detections), "num_positives" (C,) non-difficult ground truths per class,
    and the "iou_threshold" and "use_07_metric" used.
    """
    dets, gts = _check_inputs(detections, ground_truths)
    max_label = max([int(lab.max()) for _, lab, _ in dets if lab.size] +
                    [int(lab.max()) for _, lab, _ in gts if lab.size] + [0])
    if num_classes is None:
        num_classes = max_label
    for name, items in (("detections", dets), ("ground_truths", gts)):
        for i, (_, labels, _) in enumerate(items):
            bad = labels[(labels < 1) | (labels > num_classes)]
            if bad.size:
                raise ValueError(f"{name}[{i}] has label {int(bad[0])}: labels must be in "
                                 f"1..{num_classes} (0 is background and is never scored)")

    ap = np.full(num_classes, np.nan)
    precisions, recalls = [], []
    num_positives = np.zeros(num_classes, dtype=np.int64)
    for c in range(1, num_classes + 1):
        scores_c, outcomes_c = [], []
        for det, gt in zip(dets, gts):
            det_c, gt_c, _, outcome = _judge_class(det, gt, c, iou_threshold)
            num_positives[c - 1] += int(np.sum(~gt[2][gt_c]))          # non-difficult objects
            if det_c.size:
                scores_c.append(det[2][det_c])
                outcomes_c.append(outcome)
        scores_c = np.concatenate(scores_c) if scores_c else np.zeros(0)
        outcomes_c = np.concatenate(outcomes_c) if outcomes_c else np.zeros(0, dtype=np.int8)
        # The stable global sort keeps each image's own order (same scores, same sort).
        outcomes_c = outcomes_c[np.argsort(-scores_c, kind="stable")]
        outcomes_c = outcomes_c[outcomes_c != IGNORED]
        tp = np.cumsum(outcomes_c == TRUE_POSITIVE)                     # (K,)
        fp = np.cumsum(outcomes_c == FALSE_POSITIVE)                    # (K,)
        precision = tp / np.maximum(tp + fp, 1)
        n_pos = num_positives[c - 1]
        recall = tp / n_pos if n_pos > 0 else np.full(len(tp), np.nan)
        if n_pos > 0:
            ap[c - 1] = voc_ap(recall, precision, use_07_metric)
        precisions.append(precision)
        recalls.append(recall)

    finite = ap[np.isfinite(ap)]
    return {"ap": ap, "map": float(finite.mean()) if finite.size else float("nan"),
            "precision": precisions, "recall": recalls, "num_positives": num_positives,
            "iou_threshold": iou_threshold, "use_07_metric": use_07_metric}


def _names_for(result, class_names):
    """Names for classes 1..C: class_names has C entries, or C + 1 with background first."""
    num_classes = len(result["ap"])
    names = list(class_names)
    if len(names) == num_classes + 1:
        names = names[1:]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names but the result has "
                         f"{num_classes} classes: give one name per class 1..C "
                         f"(optionally with the background name first)")
    return names


def _metric_name(result):
    kind = "VOC07 11-point" if result["use_07_metric"] else "VOC2010+ all-point"
    return f"{kind} AP, IoU > {result['iou_threshold']:g}"


def format_ap_table(result, class_names):
    """A text table of AP per class with the number of ground truths, and the mAP line."""
    names = _names_for(result, class_names)
    width = max([len(n) for n in names] + [len("class")])
    lines = [f"{'class':<{width}}      AP   #gt"]
    for name, ap, n_pos in zip(names, result["ap"], result["num_positives"]):
        ap_text = f"{ap:7.4f}" if np.isfinite(ap) else "    n/a"
        lines.append(f"{name:<{width}} {ap_text} {int(n_pos):5d}")
    lines.append("-" * len(lines[0]))
    lines.append(f"{'mAP':<{width}} {result['map']:7.4f}   ({_metric_name(result)})")
    return "\n".join(lines)


def plot_pr_curves(result, class_names, ax=None):
    """Plot each class's precision/recall curve on ``ax`` (a new figure if None); returns ax."""
    import matplotlib.pyplot as plt  # imported here: only plotting needs it

    names = _names_for(result, class_names)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5))
    for name, ap, precision, recall in zip(names, result["ap"], result["precision"],
                                           result["recall"]):
        if np.isfinite(ap) and len(recall):
            ax.plot(recall, precision, label=f"{name} (AP {ap:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_title(f"Precision-recall, mAP {result['map']:.3f}\n({_metric_name(result)})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left")
    ax.grid(True, alpha=0.3)
    return ax


# ---------------------------------------------------------------- which objects a model misses

def recall_by_height(detections, ground_truths, image_heights, label, bins=(0, 0.1, 0.2, 0.4, 0.7),
                     iou_threshold=0.5):
    """The ground truths of class ``label``, grouped by their height / their image's height.

    detections: per image (boxes (D, 4), labels (D,), scores (D,)); ground_truths: per image
    (boxes (G, 4), labels (G,)[, difficult]); image_heights: per image, in pixels; ``bins``:
    the lower edges of the height groups (the last group runs to any height). Per group a dict:
    ``low``, ``high``, ``objects``, ``covered`` (the share with at least one detection of the
    class at IoU > iou_threshold, whatever its score and rank) and ``median_score`` (of the best
    such detection per object, 0 where there is none). Unlike AP, this says which objects no
    detection even reaches.
    """
    dets, gts = _check_inputs(detections, ground_truths)
    relative = _relative_heights(gts, image_heights)
    heights, best = [], []
    for (boxes, labels, scores), (gt_boxes, gt_labels, _), h in zip(dets, gts, relative):
        mine, theirs = labels == label, gt_boxes[gt_labels == label]
        ious = box_iou_voc(theirs, boxes[mine].reshape(-1, 4))          # (G_label, D_label)
        over = np.where(ious > iou_threshold, scores[mine][None, :], 0.0)
        best += list(over.max(axis=1, initial=0.0))
        heights += list(h[gt_labels == label])
    heights, best = np.asarray(heights), np.asarray(best)
    edges = list(bins) + [np.inf]
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        group = (heights >= low) & (heights < high)
        rows.append({"low": low, "high": high, "objects": int(group.sum()),
                     "covered": float((best[group] > 0).mean()) if group.any() else float("nan"),
                     "median_score": float(np.median(best[group])) if group.any() else float("nan")})
    return rows


def _relative_heights(gts, image_heights):
    """Checked ground truths (``_check_inputs``) -> per image, its objects' heights (G,) as shares
    of the image's height (VOC's inclusive pixels, ymax - ymin + 1, as box_iou_voc counts them)."""
    if len(image_heights) != len(gts):
        raise ValueError(f"image_heights has {len(image_heights)} entries but ground_truths has "
                         f"{len(gts)} images: give one height per image")
    return [(boxes[:, 3] - boxes[:, 1] + 1) / float(height)
            for (boxes, _, _), height in zip(gts, image_heights)]


def ap_by_height(detections, ground_truths, image_heights, lows=(0, 0.1, 0.2, 0.4),
                 num_classes=None, iou_threshold=0.5, use_07_metric=True):
    """AP per class over the objects at least ``low`` of their image's height, for each low.

    The shorter objects are flagged difficult, so they count as VOC's difficult ones do: not
    missed if no detection finds them, and a detection that finds one is neither right nor
    wrong (COCO's AP small / medium / large split the objects the same way, by area). low = 0
    is ``evaluate_voc`` itself; the objects already difficult stay so. -> a list of (low,
    evaluate_voc's result), one per low; its ``num_positives`` are the objects each counts.
    """
    dets, gts = _check_inputs(detections, ground_truths)
    heights = _relative_heights(gts, image_heights)
    rows = []
    for low in lows:
        kept = [(boxes, labels, difficult | (h < low))
                for (boxes, labels, difficult), h in zip(gts, heights)]
        result = evaluate_voc(dets, kept, num_classes, iou_threshold, use_07_metric)
        num_classes = len(result["ap"])                 # the same classes for every low
        rows.append((low, result))
    return rows


def format_ap_by_height(rows, class_names):
    """The table ``minissd evaluate --by-height`` prints: AP (objects counted) per class and low."""
    head = "".join(f"{'all' if low == 0 else f'>= {low:g} tall':>18s}" for low, _ in rows)
    lines = [f"{'class':8s}{head}"]
    for c, name in enumerate(class_names):
        cells = []
        for _, result in rows:
            ap, n = result["ap"][c], int(result["num_positives"][c])
            cells.append(f"{'-' if np.isnan(ap) else f'{ap:.4f}':>11s} ({n:4d})")
        lines.append(f"{name:8s}" + "".join(cells))
    lines.append(f"{'mAP':8s}" + "".join(f"{result['map']:>11.4f}{'':7s}" for _, result in rows))
    lines.append("(AP over the objects at least that share of their photo's height; the shorter "
                 "ones ignored, as VOC ignores difficult ones; in brackets the objects counted)")
    return "\n".join(lines)


# ---------------------------------------------------------------- what a model's mistakes are
# Hoiem, Chodpathumwitan and Dai, "Diagnosing Error in Object Detectors" (ECCV 2012): walk down a
# class's detections, best score first, and name each false positive by what it overlaps.
ERROR_KINDS = ("correct", "duplicate", "localisation", "confusion", "background")


def error_kinds(detections, ground_truths, label, iou_threshold=0.5, near_iou=0.1):
    """Each detection of class ``label``, in the order AP walks them, and what kind it is.

    detections / ground_truths: as :func:`evaluate_voc`. Detections are sorted by score, best
    first (stable, as evaluate_voc), and judged exactly as evaluate_voc judges them; those it
    ignores (on a difficult object) are left out. Every other one is an index into ERROR_KINDS:

    correct       a true positive;
    duplicate     its best object of the class, IoU > iou_threshold, was found by a better one;
    localisation  near an object of the class, near_iou <= IoU <= iou_threshold (box off);
    confusion     not that, but IoU >= near_iou with an object of another class;
    background    IoU < near_iou with every object.

    -> (scores (K,) float64, kinds (K,) int8), plus the number of non-difficult objects of the class.
    """
    dets, gts = _check_inputs(detections, ground_truths)
    scores_all, kinds_all, num_objects = [], [], 0
    for image_dets, image_gts in zip(dets, gts):
        (boxes, _, scores), (gt_boxes, _, difficult) = image_dets, image_gts
        det, same, ious, outcome = _judge_class(image_dets, image_gts, label, iou_threshold)  # AP's verdicts
        num_objects += int(np.sum(~difficult[same]))
        if det.size == 0:
            continue
        best_same = ious.max(axis=1, initial=0.0)                       # (D,)
        best_other = box_iou_voc(boxes[det], gt_boxes[~same]).max(axis=1, initial=0.0)
        kinds = np.select([outcome == TRUE_POSITIVE, best_same > iou_threshold,
                           best_same >= near_iou, best_other >= near_iou],
                          [0, 1, 2, 3], default=4).astype(np.int8)
        keep = outcome != IGNORED
        scores_all.append(scores[det][keep])
        kinds_all.append(kinds[keep])
    scores_all = np.concatenate(scores_all) if scores_all else np.zeros(0)
    kinds_all = np.concatenate(kinds_all) if kinds_all else np.zeros(0, np.int8)
    order = np.argsort(-scores_all, kind="stable")                      # as evaluate_voc sorts
    return scores_all[order], kinds_all[order], num_objects


def error_breakdown(kinds, num_objects, tops=(0.25, 0.5, 1, 2, 4)):
    """Shares of each kind among the best ``t * num_objects`` detections, for t in ``tops``.

    kinds: from :func:`error_kinds`. -> rows of {"top": n, "share": (len(ERROR_KINDS),) float},
    "top" is the number looked at: fewer than t * num_objects when the class has fewer
    detections (NaN shares when it has none).
    """
    kinds = np.asarray(kinds, dtype=np.int64)
    rows = []
    for t in tops:
        top = kinds[:max(1, int(round(t * num_objects)))]
        share = (np.bincount(top, minlength=len(ERROR_KINDS)) / len(top) if len(top)
                 else np.full(len(ERROR_KINDS), np.nan))
        rows.append({"top": len(top), "share": share})
    return rows


def format_error_breakdown(detections, ground_truths, class_names, **options):
    """The table ``minissd evaluate --errors`` prints: per class, error_breakdown's rows."""
    lines = [f"{'class':8s} {'best':>6s}  " + "  ".join(f"{k:>12s}" for k in ERROR_KINDS)]
    for label, name in enumerate(class_names, start=1):
        _, kinds, n = error_kinds(detections, ground_truths, label, **options)
        if len(kinds) == 0:
            lines.append(f"{name:8s} no detections ({n} objects)")
            continue
        for row in error_breakdown(kinds, n):
            lines.append(f"{name:8s} {row['top']:6d}  " +
                         "  ".join(f"{100 * s:11.1f}%" for s in row["share"]))
    lines.append("(best n: the class's n best detections; n = a quarter, half, 1, 2, 4 times its "
                 "non-difficult objects)")
    return "\n".join(lines)
