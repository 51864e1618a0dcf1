"""The CPU fast paths of matching and of the loss's hard negative mining: the same numbers, less work.

The textbook versions (:func:`minissd.ssd.matching.match_batch`,
:meth:`minissd.ssd.loss.MultiBoxLoss.mine`) are written for the whole batch at
once, which is what a GPU wants and what a reader follows. On a CPU the whole
batch costs more than it needs to:

- matching pads every photo to the batch's most crowded one (G objects) and
  works on (B, G, P) IoUs, 20 x 4576 per photo where most photos have one to
  three objects; its IoU and encoding read boxes through (..., 2) slices, which
  NumPy walks slowly. Here each photo is matched on its own objects only, one
  coordinate at a time, and only the matched default boxes are encoded;
- mining sorts every photo's P cross-entropies twice to rank them. Here one
  partition per photo finds the quota-th hardest negative, and the ties at that
  value are kept in index order, as the stable sort keeps them.

The results are the textbook's, bit for bit: the same float operations on the
same numbers, and the same tie rules (``tests/ssd/test_ssd_fast.py``). The layers'
switch turns them off too (``minissd.nn.fast.set_enabled(False)`` or
``MINISSD_FAST=0``). NumPy only: on CuPy the textbook versions run.
"""
from __future__ import annotations

import math

import numpy as np

from minissd.ssd.boxes import area, cxcywh_to_xyxy, encode


def match_batch(gt_boxes_xyxy, gt_labels, valid, priors_cxcywh, iou_threshold, variances,
                ignore_threshold, topk, topk_floor):
    """SSD matching of padded (B, G, 4) boxes, (B, G) labels and (B, G) ``valid`` -> (B, P, 4), (B, P).

    The inputs, and the settings with their defaults, come checked from the caller
    (:func:`minissd.ssd.matching.match_batch`).
    """
    B, P = gt_labels.shape[0], priors_cxcywh.shape[0]
    loc_targets = np.zeros((B, P, 4), dtype=gt_boxes_xyxy.dtype)              # (B, P, 4)
    conf_targets = np.zeros((B, P), dtype=np.int64)                           # (B, P)
    priors_xyxy = cxcywh_to_xyxy(priors_cxcywh)                               # (P, 4)
    p_lo = [np.ascontiguousarray(priors_xyxy[:, k]) for k in (0, 1)]          # (P,) x0, y0
    p_hi = [np.ascontiguousarray(priors_xyxy[:, k]) for k in (2, 3)]          # (P,) x1, y1
    p_area = area(priors_xyxy)                                                # (P,)
    labels_all = gt_labels.astype(np.int64)
    enc_dtype = np.result_type(gt_boxes_xyxy.dtype, priors_xyxy.dtype)  # the textbook's where() promotes
    for b in range(B):
        rows = np.flatnonzero(valid[b])
        if rows.size == 0:                                  # no objects: all background
            continue
        gt = gt_boxes_xyxy[b, rows]                                           # (G_b, 4)
        overlaps = _iou_by_coordinate(gt, p_lo, p_hi, p_area)                 # (G_b, P)
        best_gt = overlaps.argmax(axis=0)                                     # (P,)
        best_iou = overlaps.max(axis=0)                                       # (P,)
        threshold = iou_threshold
        if topk is not None:                                # each object its own threshold
            k = min(topk, P)
            kth = -np.partition(-overlaps, k - 1, axis=1)[:, k - 1]           # (G_b,)
            threshold = np.minimum(iou_threshold, np.maximum(topk_floor, kth))[best_gt]  # (P,)
        positive = best_iou >= threshold                                      # (P,)
        for g, p in enumerate(overlaps.argmax(axis=1)):     # each object claims its best box;
            best_gt[p], positive[p] = g, True               # a later object overwrites an earlier
        if ignore_threshold is not None:                    # the band: neither
            conf_targets[b, ~positive & (best_iou >= ignore_threshold)] = -1
        index = np.flatnonzero(positive)                                      # (K,)
        matched = best_gt[index]                                              # (K,)
        conf_targets[b, index] = labels_all[b, rows[matched]]
        loc_targets[b, index] = encode(gt[matched].astype(enc_dtype, copy=False), priors_cxcywh[index],
                                       variances)
    return loc_targets, conf_targets


def _iou_by_coordinate(gt_xyxy, p_lo, p_hi, p_area):
    """boxes.iou(gt (G, 4), priors (P, 4)) -> (G, P), the same operations one coordinate at a time."""
    wh = []
    for k in (0, 1):
        lo = np.maximum(gt_xyxy[:, k, None], p_lo[k][None, :])               # (G, P)
        hi = np.minimum(gt_xyxy[:, k + 2, None], p_hi[k][None, :])
        wh.append(np.clip(hi - lo, 0, None))
    inter = wh[0] * wh[1]                                                     # (G, P)
    union = area(gt_xyxy)[:, None] + p_area[None, :] - inter
    tiny = np.finfo(inter.dtype).tiny                                         # 0 / 0 -> 0
    return inter / np.maximum(union, tiny)


def mine(ce, positive, neg_pos_ratio, ignored=None):
    """(B, P) finite cross-entropies, positive and (optional) ignored masks -> (B, P) mask of
    the hard negatives kept.

    Keeps, per photo, the ``quota`` negatives with the highest cross-entropy, the
    lower index first among equal ones: what the textbook's two stable sorts keep.
    """
    B, P = ce.shape
    keep = np.zeros((B, P), dtype=bool)
    out = positive if ignored is None else positive | ignored                # (B, P) never negatives
    num_pos = positive.sum(axis=1)                                            # (B,)
    quota = np.minimum(neg_pos_ratio * num_pos, P - out.sum(axis=1))          # (B,) <= negatives
    for b in range(B):
        k = math.ceil(quota[b])                             # rank < quota keeps ceil(quota)
        if k <= 0:
            continue
        hardness = np.where(out[b], -np.inf, ce[b])                           # (P,) positives last
        kth = np.partition(hardness, P - k)[P - k]          # the k-th highest: a negative's loss
        above = hardness > kth                                                # (P,) fewer than k
        tied = hardness == kth                              # as many as are left, in index order
        keep[b] = above | (tied & (np.cumsum(tied) <= k - int(above.sum())))
    return keep
