"""From raw predictions to detections: decode, softmax, per-class NMS, top k.

Every default box predicts offsets and C+1 class scores, so one object is
seen by many neighbouring boxes. ``detect`` turns that into a short list:

1. decode the offsets into boxes (xyxy; clipped to the image [0, 1] unless
   ``clip_boxes`` is off);
2. softmax the logits; every (box, class c >= 1) with score > conf_threshold
   is a candidate for class c (with ``per_class_top_k``, only each class's k
   best candidates go on);
3. non-maximum suppression per class: walking down by score, keep a box and
   drop the later boxes of the same class that overlap it with IoU > nms_threshold;
4. keep the ``top_k`` highest-scoring survivors of all classes (None: all).

The settings live in one dataclass, ``DetectConfig``; its defaults are minissd's,
``SSD_PYTORCH_DETECT`` holds ssd.pytorch's (layers/functions/detection.py, ``Detect``:
no clipping, each class's 200 best candidates into NMS, no overall cap -- its final
"top 200 of all classes" writes into a copy, so it returns up to C x 200 boxes).

Per-class NMS is done as one NMS over all candidates, each class's boxes
shifted by ``label * (extent + 1)`` so boxes of different classes never
overlap ("batched NMS"). Greedy NMS decides a box from higher-scoring boxes
only, so stopping once ``top_k`` boxes are kept gives exactly steps 3 and 4.
Equal scores are taken in prior order (the lower prior index first), in the
per-class top k as in NMS. (ssd.pytorch's order among equal scores is that of
``torch.sort``, which is not stable: unspecified, and on the CPU not the index order
for more than 16 scores; no other implementation can promise to follow it.)
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Optional

import numpy as np

from minissd.errors import UserError
from minissd.nn.backend import get_array_module, is_cupy, stable_argsort, to_numpy
from minissd.ssd.boxes import VARIANCES, decode, iou


@dataclass(frozen=True)
class DetectConfig:
    """The detection step's settings (steps 2-4 of the module docstring); defaults are minissd's."""
    conf_threshold: float = 0.01            # (box, class) is a candidate when its score > this
    nms_threshold: float = 0.45             # NMS drops a box overlapping a kept one by IoU > this
    top_k: Optional[int] = 200              # detections kept per image, all classes; None: all
    per_class_top_k: Optional[int] = None   # each class's best candidates into NMS; None: all
    clip_boxes: bool = True                 # clip decoded boxes to the image [0, 1]

    def __post_init__(self):
        self.validate()

    def validate(self) -> "DetectConfig":
        """Raise ValueError naming the field that is wrong; return self when all is well."""
        for f in ("conf_threshold", "nms_threshold"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 <= v <= 1:
                raise UserError(f"DetectConfig: {f} must be a number in [0, 1], got {v!r}")
        for f in ("top_k", "per_class_top_k"):
            v = getattr(self, f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1):
                raise UserError(f"DetectConfig: {f} must be a positive int or None, got {v!r}")
        if not isinstance(self.clip_boxes, bool):
            raise UserError(f"DetectConfig: clip_boxes must be True or False, got {self.clip_boxes!r}")
        return self


# ssd.pytorch's Detect(num_classes, 0, 200, 0.01, 0.45) as ssd.py builds it for phase 'test'
SSD_PYTORCH_DETECT = DetectConfig(conf_threshold=0.01, nms_threshold=0.45, top_k=None,
                                  per_class_top_k=200, clip_boxes=False)


def _greedy(boxes_xyxy, order, iou_threshold, max_keep):
    """The classic NMS walk over candidate indices ``order`` (best first): keep a box unless
    a box kept before it overlaps it by IoU > iou_threshold.

    The IoUs are computed at once, as an (n, n) boolean matrix on the arrays' device, and
    copied to the host in one transfer (as torchvision's CUDA NMS does); the walk itself
    is a short loop over rows of that matrix, so on CuPy it costs one sync, not one per box.
    """
    n = int(order.shape[0])
    if n == 0 or max_keep <= 0:
        return order[:0]
    cand = boxes_xyxy[order]                                            # (n, 4)
    overlaps = to_numpy(iou(cand, cand) > iou_threshold)                # (n, n) on the host
    removed = np.zeros(n, dtype=bool)                                   # (n,)
    kept = []
    for i in range(n):
        if removed[i]:
            continue
        kept.append(i)
        if len(kept) == max_keep:
            break
        removed |= overlaps[i]                  # the later boxes this one suppresses
    xp = get_array_module(order)
    return order[xp.asarray(np.asarray(kept, dtype="int64"))]


def nms(boxes_xyxy, scores, iou_threshold, max_keep=None, block=None):
    """Greedy NMS: (N, 4) boxes, (N,) scores -> (K,) indices kept, highest score first.

    A box is suppressed by a kept, higher-scoring box when their IoU > iou_threshold.
    Equal scores keep the lower index first. Stops after ``max_keep`` boxes if given.
    The candidates go through the walk ``block`` at a time (best first), each block
    first checked against the boxes kept from earlier blocks: the same result, but an
    IoU matrix never bigger than block x block when N is large (an untrained model).
    ``block`` defaults to 128 on NumPy (fastest on a CPU: the matrix stays in cache)
    and 1024 on CuPy (fewer host round trips).
    """
    xp = get_array_module(boxes_xyxy, scores)
    if boxes_xyxy.ndim != 2 or boxes_xyxy.shape[1] != 4 or scores.shape != boxes_xyxy.shape[:1]:
        raise ValueError(f"nms: expected boxes (N, 4) and scores (N,), got "
                         f"{tuple(boxes_xyxy.shape)} and {tuple(scores.shape)}")
    if block is None:
        block = 1024 if is_cupy(boxes_xyxy) else 128
    if block < 1:
        raise ValueError(f"nms: block must be >= 1, got {block}")
    max_keep = boxes_xyxy.shape[0] if max_keep is None else max_keep
    order = stable_argsort(-scores).astype("int64", copy=False)          # (N,) best first
    keep, num_kept = [], 0
    for start in range(0, order.shape[0], block):
        if num_kept >= max_keep:
            break
        cand = order[start:start + block]
        if keep:                                                        # suppressed earlier?
            kept = xp.concatenate(keep)
            cand = cand[iou(boxes_xyxy[kept], boxes_xyxy[cand]).max(axis=0) <= iou_threshold]
        new = _greedy(boxes_xyxy, cand, iou_threshold, max_keep - num_kept)
        keep.append(new)
        num_kept += int(new.shape[0])
    if not keep:
        return xp.zeros(0, dtype="int64")
    return xp.concatenate(keep)


def batched_nms(boxes_xyxy, scores, labels, iou_threshold, max_keep=None):
    """NMS within each label at once: shift each label's boxes so labels never overlap."""
    if boxes_xyxy.shape[0] == 0:
        return nms(boxes_xyxy, scores, iou_threshold, max_keep)
    extent = boxes_xyxy.max() - boxes_xyxy.min() + 1
    shifted = boxes_xyxy + (labels * extent)[:, None].astype(boxes_xyxy.dtype)  # (N, 4)
    return nms(shifted, scores, iou_threshold, max_keep)


def softmax(logits, axis=-1):
    """Numerically stable softmax."""
    xp = get_array_module(logits)
    e = xp.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def per_class_top_k(scores, labels, k):
    """(N,) scores and labels -> (M,) indices of each label's k best, in input order.

    Equal scores keep the lower index, as in ``nms``.
    """
    xp = get_array_module(scores, labels)
    keep = [xp.zeros(0, dtype="int64")]
    for label in to_numpy(xp.unique(labels)).tolist():                 # a few classes: one pass each
        idx = xp.nonzero(labels == label)[0]                           # (n,) this label's candidates
        keep.append(idx[stable_argsort(-scores[idx])[:k]].astype("int64", copy=False))
    return xp.sort(xp.concatenate(keep))


def detect(loc, conf_logits, priors_cxcywh, config: Optional[DetectConfig] = None,
           variances=VARIANCES, **options):
    """(B, P, 4) offsets and (B, P, C+1) logits -> per image (boxes (D, 4), labels (D,), scores (D,)).

    Boxes are xyxy ([0, 1] when clipped), labels 1..C, scores descending; NumPy arrays.
    ``config`` (default ``DetectConfig()``) holds the settings; ``options`` override its
    fields by name, e.g. ``detect(loc, conf, priors, conf_threshold=0.3)``.
    """
    config = dataclasses.replace(config or DetectConfig(), **options)
    xp = get_array_module(loc, conf_logits, priors_cxcywh)
    if loc.ndim != 3 or loc.shape[2] != 4 or conf_logits.shape[:2] != loc.shape[:2] \
            or priors_cxcywh.shape != loc.shape[1:]:
        raise ValueError(f"detect: expected loc (B, P, 4), conf_logits (B, P, C+1), priors (P, 4); "
                         f"got {tuple(loc.shape)}, {tuple(conf_logits.shape)}, "
                         f"{tuple(priors_cxcywh.shape)}")
    boxes = decode(loc, priors_cxcywh, variances)                      # (B, P, 4)
    if config.clip_boxes:
        boxes = xp.clip(boxes, 0.0, 1.0)
    probs = softmax(conf_logits, axis=2)[:, :, 1:]                     # (B, P, C) drop background
    results = []
    for b in range(loc.shape[0]):                                      # images: NMS is sequential
        prior_idx, cls = xp.nonzero(probs[b] > config.conf_threshold)  # (N,), (N,) candidates
        if config.per_class_top_k is not None:
            take = per_class_top_k(probs[b][prior_idx, cls], cls, config.per_class_top_k)  # (M,)
            prior_idx, cls = prior_idx[take], cls[take]
        cand_boxes, cand_scores = boxes[b][prior_idx], probs[b][prior_idx, cls]
        keep = batched_nms(cand_boxes, cand_scores, cls, config.nms_threshold, max_keep=config.top_k)
        results.append((to_numpy(cand_boxes[keep]), to_numpy(cls[keep] + 1).astype("int64"),
                        to_numpy(cand_scores[keep])))
    return results
