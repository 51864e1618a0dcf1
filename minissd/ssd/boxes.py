"""Box formats, IoU, and SSD's offset encoding.

Two formats, named in every argument: ``boxes_xyxy`` are corners
(xmin, ymin, xmax, ymax), ``priors_cxcywh`` are centre and size (cx, cy, w, h).
Coordinates are normalised to [0, 1] of the image side.

SSD never regresses box corners directly. It predicts *offsets* from a default
box (a prior) d to the ground truth g, scaled by two variances v0, v1:

    t_cx = (g_cx - d_cx) / (v0 * d_w)      t_w = log(g_w / d_w) / v1
    t_cy = (g_cy - d_cy) / (v0 * d_h)      t_h = log(g_h / d_h) / v1

Dividing by v0 = 0.1 and v1 = 0.2 blows the offsets up to roughly unit scale,
which is what the smooth L1 loss expects. ``decode`` inverts ``encode``.
"""
from __future__ import annotations

import numpy as np

from minissd.nn.backend import get_array_module, to_numpy

VARIANCES = (0.1, 0.2)  # SSD's (centre, size) variances, as in Caffe SSD and ssd.pytorch


def xyxy_to_cxcywh(boxes_xyxy):
    """(..., 4) corners -> (..., 4) centre and size."""
    xp = get_array_module(boxes_xyxy)
    lo, hi = boxes_xyxy[..., :2], boxes_xyxy[..., 2:]
    return xp.concatenate([(lo + hi) / 2, hi - lo], axis=-1)


def cxcywh_to_xyxy(boxes_cxcywh):
    """(..., 4) centre and size -> (..., 4) corners."""
    xp = get_array_module(boxes_cxcywh)
    c, half = boxes_cxcywh[..., :2], boxes_cxcywh[..., 2:] / 2
    return xp.concatenate([c - half, c + half], axis=-1)


def area(boxes_xyxy):
    """(..., 4) -> (...,) areas; degenerate boxes give 0, never negative."""
    xp = get_array_module(boxes_xyxy)
    wh = xp.clip(boxes_xyxy[..., 2:] - boxes_xyxy[..., :2], 0, None)
    return wh[..., 0] * wh[..., 1]


def iou(a_xyxy, b_xyxy):
    """Pairwise IoU: (..., N, 4) and (..., M, 4) -> (..., N, M); leading dims broadcast."""
    xp = get_array_module(a_xyxy, b_xyxy)
    a, b = a_xyxy[..., :, None, :], b_xyxy[..., None, :, :]       # (..., N, 1, 4), (..., 1, M, 4)
    lo = xp.maximum(a[..., :2], b[..., :2])                       # (..., N, M, 2)
    hi = xp.minimum(a[..., 2:], b[..., 2:])
    wh = xp.clip(hi - lo, 0, None)
    inter = wh[..., 0] * wh[..., 1]                               # (..., N, M)
    union = area(a_xyxy)[..., :, None] + area(b_xyxy)[..., None, :] - inter
    tiny = xp.finfo(inter.dtype).tiny                             # 0 / 0 -> 0 for empty boxes
    return inter / xp.maximum(union, tiny)


def encode(matched_xyxy, priors_cxcywh, variances=VARIANCES):
    """Ground-truth boxes (..., P, 4) xyxy -> SSD offsets (..., P, 4) from priors (P, 4)."""
    xp = get_array_module(matched_xyxy, priors_cxcywh)
    g = xyxy_to_cxcywh(matched_xyxy)                              # (..., P, 4)
    d_c, d_wh = priors_cxcywh[:, :2], priors_cxcywh[:, 2:]
    t_c = (g[..., :2] - d_c) / (variances[0] * d_wh)
    t_wh = xp.log(g[..., 2:] / d_wh) / variances[1]
    return xp.concatenate([t_c, t_wh], axis=-1)


def decode(loc, priors_cxcywh, variances=VARIANCES):
    """SSD offsets (..., P, 4) and priors (P, 4) -> boxes (..., P, 4) xyxy; inverse of encode."""
    xp = get_array_module(loc, priors_cxcywh)
    d_c, d_wh = priors_cxcywh[:, :2], priors_cxcywh[:, 2:]
    c = d_c + loc[..., :2] * variances[0] * d_wh
    wh = d_wh * xp.exp(loc[..., 2:] * variances[1])
    return cxcywh_to_xyxy(xp.concatenate([c, wh], axis=-1))


def check_boxes(boxes_xyxy, name, valid=None):
    """Raise ValueError unless ``boxes_xyxy`` is (..., 4), finite, with xmin < xmax and ymin < ymax.

    A box with xmax <= xmin has width <= 0: its log-size target is log(0) or
    NaN, the classic cause of a NaN loss. ``valid`` (shape ``boxes.shape[:-1]``)
    marks the rows to check, so padding rows in a batch are skipped. The
    message names the argument, the offending row index and its values.
    """
    if getattr(boxes_xyxy, "ndim", 0) < 1 or boxes_xyxy.shape[-1] != 4:
        raise ValueError(f"{name}: expected boxes of shape (..., 4) in (xmin, ymin, xmax, ymax), "
                         f"got shape {getattr(boxes_xyxy, 'shape', type(boxes_xyxy).__name__)}")
    xp = get_array_module(boxes_xyxy)
    finite = xp.isfinite(boxes_xyxy).all(axis=-1)                 # (...,)
    ordered = (boxes_xyxy[..., 0] < boxes_xyxy[..., 2]) & (boxes_xyxy[..., 1] < boxes_xyxy[..., 3])
    bad = ~(finite & ordered)
    if valid is not None:
        bad = bad & valid
    if not bool(bad.any()):
        return
    bad_np = to_numpy(bad)
    row = tuple(int(i) for i in np.argwhere(bad_np)[0])
    values = to_numpy(boxes_xyxy[row]).tolist()
    why = "non-finite value" if not bool(to_numpy(finite)[row]) else "xmin >= xmax or ymin >= ymax"
    where = row[0] if len(row) == 1 else row
    raise ValueError(f"{name}: box {where} is invalid ({why}): {values}; "
                     f"{int(bad_np.sum())} bad box(es) in all")
