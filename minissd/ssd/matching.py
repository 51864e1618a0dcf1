"""Matching: which default box is responsible for which ground-truth object.

SSD's rule (ssd.pytorch's ``match``), for each image:

1. every ground truth first claims the default box it overlaps most, even if
   that IoU is below the threshold, so no object is left without a predictor;
2. every other default box whose best IoU with any ground truth is >= 0.5
   is matched to that ground truth;
3. the rest are background (label 0).

``ignore_threshold`` (not in the paper; RetinaNet's and Faster R-CNN's ignore band):
a default box left as background in step 3 whose best IoU is still >= ignore_threshold
gets label -1, "ignored": neither a positive nor a negative the loss may mine.
None (the default) ignores nothing.

``topk`` (not in the paper; the idea of ATSS, Zhang et al. 2020: a threshold per object,
here in its simplest form): step 2 judges each default box by the threshold of its
best ground truth, min(iou_threshold, max(topk_floor, that object's topk-th best IoU)).
An object with topk default boxes at iou_threshold or above keeps the paper's
threshold; one with fewer (thin, small: people) gets its topk best as positives,
none under ``topk_floor``. None (the default): one threshold for all, the paper's.

Matched boxes get label 1..C and the ground truth encoded as offsets from the
prior (``minissd.ssd.boxes.encode``); background boxes get zero offsets, which
the loss ignores.

Ties, deterministic: a default box's best ground truth and a ground truth's
best default box are the lowest index among equal IoUs (argmax); if several
ground truths claim the same default box in step 1, the last one wins (as in
ssd.pytorch's loop), and the others keep only their step-2 matches.

``strategy="bipartite"`` replaces step 1 by ChainerCV's greedy bipartite
matching: repeatedly take the (ground truth, default box) pair with the highest
IoU left, match it, and remove both, so every object gets its *own* default
box (while its IoU is > 0).

``match_batch`` below is the whole-batch version, for NumPy and CuPy alike. On
NumPy with SSD's rule it hands the work to :func:`minissd.ssd.fast.match_batch`
(one photo at a time, its own objects only; the same targets bit for bit),
unless the fast paths are off (``MINISSD_FAST=0``).
"""
from __future__ import annotations

import numbers

import numpy as np

from minissd.nn import fast
from minissd.nn.backend import get_array_module, to_numpy
from minissd.ssd import fast as ssd_fast
from minissd.ssd.boxes import VARIANCES, check_boxes, cxcywh_to_xyxy, encode, iou

STRATEGIES = ("ssd", "bipartite")
TOPK_FLOOR = 0.25  # with topk: no positive under this IoU (the ignore band's lower edge)
_MIN_IOU = 1e-6  # bipartite matching stops when no pair overlaps more than this (ChainerCV)


def pad_targets(boxes_list, labels_list, pad_label=-1):
    """Per-image (n_i, 4) boxes and (n_i,) labels -> padded (B, G, 4) and (B, G) arrays.

    G = max(n_i, 1); padding rows have label ``pad_label`` (-1, 'no object') and zero boxes.
    """
    if len(boxes_list) != len(labels_list):
        raise ValueError(f"pad_targets: {len(boxes_list)} box arrays but {len(labels_list)} label arrays")
    if len(boxes_list) == 0:
        raise ValueError("pad_targets: empty batch")
    xp = get_array_module(*boxes_list, *labels_list)
    G = max([1] + [len(b) for b in boxes_list])
    B = len(boxes_list)
    boxes = xp.zeros((B, G, 4), dtype=boxes_list[0].dtype)
    labels = xp.full((B, G), pad_label, dtype="int64")
    for i, (b, l) in enumerate(zip(boxes_list, labels_list)):
        if b.shape != (len(l), 4):
            raise ValueError(f"pad_targets: image {i} has boxes of shape {tuple(b.shape)} "
                             f"but {len(l)} labels; expected ({len(l)}, 4)")
        boxes[i, :len(b)] = b
        labels[i, :len(l)] = l
    return boxes, labels


def _forced_ssd(overlaps, valid):
    """Step 1, SSD: (B, G, P) IoUs -> (B, P) index of the ground truth claiming each prior, or -1."""
    xp = get_array_module(overlaps)
    B, G, P = overlaps.shape
    best_prior = overlaps.argmax(axis=2)                                      # (B, G)
    claims = (xp.arange(P)[None, None, :] == best_prior[:, :, None]) & valid[:, :, None]  # (B, G, P)
    g_index = xp.arange(G)[None, :, None]
    return xp.where(claims, g_index, -1).max(axis=1)                          # (B, P): last g wins


def _forced_bipartite(overlaps, valid):
    """Step 1, ChainerCV: greedy bipartite matching, vectorised over the batch (G rounds)."""
    xp = get_array_module(overlaps)
    B, G, P = overlaps.shape
    left = overlaps.copy()                                                    # (B, G, P)
    forced = xp.full((B, P), -1, dtype="int64")
    g_range, p_range = xp.arange(G), xp.arange(P)
    for _ in range(G):                        # each round matches at most one pair per image
        flat = left.reshape(B, G * P).argmax(axis=1)                          # (B,)
        g, p = flat // P, flat % P
        ok = left.reshape(B, G * P)[xp.arange(B), flat] > _MIN_IOU            # (B,)
        forced = xp.where(ok[:, None] & (p_range[None, :] == p[:, None]), g[:, None], forced)
        taken = (g_range[None, :, None] == g[:, None, None]) | (p_range[None, None, :] == p[:, None, None])
        left = xp.where(taken, -1.0, left)
    return forced


def match_batch(gt_boxes_xyxy, gt_labels, priors_cxcywh, iou_threshold=0.5,
                variances=VARIANCES, strategy="ssd", num_classes=None, ignore_threshold=None,
                topk=None, topk_floor=TOPK_FLOOR):
    """Targets for a batch: padded (B, G, 4) boxes and (B, G) labels -> (B, P, 4), (B, P).

    Labels <= 0 mark padding ('no object'); real labels are 1..C (<= num_classes
    if given). Returns loc_targets (B, P, 4) in the boxes' dtype and
    conf_targets (B, P) int64 with 0 for background and, with ``ignore_threshold``,
    -1 for the background boxes whose best IoU is in [ignore_threshold, iou_threshold).
    ``topk``, ``topk_floor``: per-object thresholds (module docstring).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"match: unknown strategy {strategy!r}, expected one of {STRATEGIES}")
    if ignore_threshold is not None and not 0 < ignore_threshold < iou_threshold:
        raise ValueError(f"match: ignore_threshold must be in (0, iou_threshold = {iou_threshold}), "
                         f"got {ignore_threshold!r}")
    if topk is not None:
        if isinstance(topk, bool) or not isinstance(topk, numbers.Integral) or topk < 1:
            raise ValueError(f"match: topk must be a positive int or None, got {topk!r}")
        if not 0 < topk_floor <= iou_threshold:
            raise ValueError(f"match: topk_floor must be in (0, iou_threshold = {iou_threshold}], "
                             f"got {topk_floor!r}")
    xp = get_array_module(gt_boxes_xyxy, gt_labels, priors_cxcywh)
    if gt_boxes_xyxy.ndim != 3 or gt_boxes_xyxy.shape[-1] != 4:
        raise ValueError(f"match_batch: gt_boxes_xyxy must be (B, G, 4), got {tuple(gt_boxes_xyxy.shape)}")
    if gt_labels.shape != gt_boxes_xyxy.shape[:2]:
        raise ValueError(f"match_batch: gt_labels has shape {tuple(gt_labels.shape)} but gt_boxes_xyxy "
                         f"has {tuple(gt_boxes_xyxy.shape)}; expected ({gt_boxes_xyxy.shape[0]}, "
                         f"{gt_boxes_xyxy.shape[1]})")
    if priors_cxcywh.ndim != 2 or priors_cxcywh.shape[1] != 4:
        raise ValueError(f"match: priors_cxcywh must be (P, 4), got {tuple(priors_cxcywh.shape)}")
    if gt_labels.dtype.kind == "f" and not bool((gt_labels == xp.round(gt_labels)).all()):
        raise ValueError("match: gt_labels must be whole numbers (1..C, 0 or -1 for padding)")
    valid = gt_labels > 0                                                     # (B, G)
    check_boxes(gt_boxes_xyxy, "gt_boxes_xyxy", valid=valid)
    if num_classes is not None and bool((gt_labels > num_classes).any()):
        bad = np.argwhere(to_numpy(gt_labels > num_classes))[0]
        raise ValueError(f"match: gt_labels[{tuple(int(i) for i in bad)}] = "
                         f"{int(gt_labels[tuple(bad)])} is out of range 1..{num_classes}")
    B, G = gt_labels.shape
    if G == 0:                                              # no objects anywhere: one padding row
        gt_boxes_xyxy = xp.zeros((B, 1, 4), dtype=gt_boxes_xyxy.dtype)
        gt_labels, valid = xp.zeros((B, 1), dtype="int64"), xp.zeros((B, 1), dtype=bool)
    if strategy == "ssd" and xp is np and fast.enabled():   # fast path: photo by photo, its objects only
        return ssd_fast.match_batch(gt_boxes_xyxy, gt_labels, valid, priors_cxcywh, iou_threshold,
                                    variances, ignore_threshold, topk, topk_floor)

    priors_xyxy = cxcywh_to_xyxy(priors_cxcywh)                                      # (P, 4)
    overlaps = xp.where(valid[:, :, None], iou(gt_boxes_xyxy, priors_xyxy), -1.0)     # (B, G, P)
    best_gt = overlaps.argmax(axis=1)                                                # (B, P)
    best_iou = overlaps.max(axis=1)                                                  # (B, P)

    threshold = iou_threshold                                         # one for all (the paper)
    if topk is not None:                                              # or each object its own
        k = min(topk, overlaps.shape[2])
        kth = -xp.partition(-overlaps, k - 1, axis=2)[:, :, k - 1]                   # (B, G)
        per_gt = xp.minimum(iou_threshold, xp.maximum(topk_floor, kth))              # (B, G)
        threshold = xp.take_along_axis(per_gt, best_gt, axis=1)                      # (B, P)

    forced = (_forced_ssd if strategy == "ssd" else _forced_bipartite)(overlaps, valid)  # (B, P)
    best_gt = xp.where(forced >= 0, forced, best_gt)
    positive = (forced >= 0) | (best_iou >= threshold)                               # (B, P)

    labels = xp.take_along_axis(gt_labels.astype("int64"), best_gt, axis=1)         # (B, P)
    conf_targets = xp.where(positive, labels, 0)
    if ignore_threshold is not None:                                  # the band: neither
        conf_targets = xp.where(~positive & (best_iou >= ignore_threshold), -1, conf_targets)
    matched = xp.take_along_axis(gt_boxes_xyxy, best_gt[:, :, None], axis=1)         # (B, P, 4)
    matched = xp.where(positive[:, :, None], matched, priors_xyxy[None])             # no log(0)
    loc_targets = xp.where(positive[:, :, None], encode(matched, priors_cxcywh, variances), 0)
    return loc_targets.astype(gt_boxes_xyxy.dtype), conf_targets


def match(gt_boxes_xyxy, gt_labels, priors_cxcywh, iou_threshold=0.5,
          variances=VARIANCES, strategy="ssd", num_classes=None, ignore_threshold=None,
          topk=None, topk_floor=TOPK_FLOOR):
    """Targets for one image: (G, 4) boxes and (G,) labels 1..C -> (P, 4), (P,)."""
    if getattr(gt_boxes_xyxy, "ndim", 0) != 2 or gt_boxes_xyxy.shape[1] != 4:
        shape = tuple(getattr(gt_boxes_xyxy, "shape", ()))
        raise ValueError(f"match: gt_boxes_xyxy must be (G, 4), got {shape}")
    if gt_labels.shape != gt_boxes_xyxy.shape[:1]:
        raise ValueError(f"match: gt_labels has shape {tuple(gt_labels.shape)} but there are "
                         f"{gt_boxes_xyxy.shape[0]} boxes; expected ({gt_boxes_xyxy.shape[0]},)")
    if bool((gt_labels < 1).any()):
        bad = int(np.argwhere(to_numpy(gt_labels < 1))[0, 0])
        raise ValueError(f"match: gt_labels[{bad}] = {gt_labels[bad].item()} is out of range: "
                         "object labels are 1..C (0 is background)")
    check_boxes(gt_boxes_xyxy, "gt_boxes_xyxy")             # here, to name rows as (G, 4)
    loc, conf = match_batch(gt_boxes_xyxy[None], gt_labels[None], priors_cxcywh, iou_threshold,
                            variances, strategy, num_classes, ignore_threshold, topk, topk_floor)
    return loc[0], conf[0]
