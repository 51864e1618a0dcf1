"""Default boxes (priors): the fixed boxes SSD's predictions are offsets from.

For feature map k with f_k x f_k cells, cell (i, j) (row i, column j) is
centred at  cx = (j + 0.5) * step_k / image_size,  cy = (i + 0.5) * step_k / image_size,
and owns, in this order (the order of the prediction head's channels):

    1. a square of side s_k = min_size_k / image_size,
    2. a square of side s'_k = sqrt(s_k * max_size_k / image_size),
    3. for every aspect ratio ar: (s_k sqrt(ar), s_k / sqrt(ar)), then (s_k / sqrt(ar), s_k sqrt(ar)).

Boxes are listed map by map, cell by cell in row-major order, box by box, so
SSD300 gives 38*38*4 + 19*19*6 + 10*10*6 + 5*5*6 + 3*3*4 + 1*1*4 = 8732.

A denser tiling (``cfg.box_centres``, not in the paper; FaceBoxes' "anchor densification"
does the same for small faces): a map may put its cell's boxes at several centres
inside the cell, e.g. ((0.25, 0.5), (0.75, 0.5)) puts one copy at cx = (j + 0.25) * step
and one at (j + 0.75) * step. The copies follow each other inside the cell's block,
centre by centre, each in the order above. Thin objects (people) whose centre falls
between two cells then still find a box of their width close enough for IoU >= 0.5
(more of them are covered; whether the detector learns them better is another question:
on voc5-mini it did not, models/README.md "Why the people fail").

Keeping boxes in the image, ``cfg.clip``:

* ``"corners"`` (minissd's default; Caffe's PriorBox ``clip``, ChainerCV): the
  box's *corners* are clipped to the image [0, 1] and the box converted back to
  (cx, cy, w, h). Every default box then lies inside the image, like the
  ground truths it is matched against, so a border object overlaps its prior
  properly; the price is that border priors shrink and their centres move inwards.
* ``"cxcywh"`` (ssd.pytorch, layers/functions/prior_box.py: ``output.clamp_(max=1,
  min=0)`` on the (cx, cy, w, h) rows): the four *numbers* are clamped to [0, 1].
  SSD300's centres all lie in [0, 1] already, so there it only caps w and h at 1
  (134 boxes) and leaves border boxes hanging outside the image.
* ``None``: the boxes as the formula gives them.

For SSD300 the two conventions give different boxes for 2865 of the 8732
priors (33 %; 1356, 914, 427, 136, 32, 0 per map), by up to 0.43 of the image
side in w or h and 0.21 in cx or cy; the two versions of such a prior overlap
with IoU 0.69 (median), 0.21 at worst. tests/ssd/test_priors.py checks these numbers.
"""
from __future__ import annotations

import math

import numpy

from minissd.errors import UserError
from minissd.ssd.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from minissd.ssd.config import SSDConfig


def box_shapes(cfg: SSDConfig, k: int) -> list:
    """The (w, h) of the default boxes of map k, normalised, in head-channel order."""
    s = cfg.min_sizes[k] / cfg.image_size
    s_prime = math.sqrt(s * cfg.max_sizes[k] / cfg.image_size)
    shapes = [(s, s), (s_prime, s_prime)]
    for ar in cfg.aspect_ratios[k]:
        r = math.sqrt(ar)
        shapes += [(s * r, s / r), (s / r, s * r)]
    return shapes


def default_boxes(cfg: SSDConfig, xp=numpy, dtype="float32"):
    """All default boxes of ``cfg`` as a (P, 4) array of (cx, cy, w, h) in [0, 1]."""
    cfg.validate()
    per_map = []
    for k, f in enumerate(cfg.feature_maps):           # a handful of maps; cells are vectorised
        wh = xp.asarray(box_shapes(cfg, k), dtype="float64")                 # (A, 2)
        A = wh.shape[0]
        s = xp.broadcast_to(wh[None], (f * f, A, 2))                         # (f*f, A, 2)
        copies = []
        for x0, y0 in cfg.centres(k):                  # the paper: one copy, at (0.5, 0.5)
            xs = (xp.arange(f, dtype="float64") + x0) * cfg.steps[k] / cfg.image_size   # (f,)
            ys = (xp.arange(f, dtype="float64") + y0) * cfg.steps[k] / cfg.image_size   # (f,)
            cy, cx = xp.meshgrid(ys, xs, indexing="ij")                      # (f, f), row i, col j
            c = xp.stack([cx, cy], axis=-1).reshape(f * f, 1, 2)             # (f*f, 1, 2)
            c = xp.broadcast_to(c, (f * f, A, 2))                            # (f*f, A, 2)
            copies.append(xp.concatenate([c, s], axis=-1))                   # (f*f, A, 4)
        per_map.append(xp.stack(copies, axis=1).reshape(-1, 4))              # (f*f*copies*A, 4)
    priors = xp.concatenate(per_map, axis=0)                                 # (P, 4)
    if cfg.clip == "corners":
        priors = xyxy_to_cxcywh(xp.clip(cxcywh_to_xyxy(priors), 0.0, 1.0))
    elif cfg.clip == "cxcywh":
        priors = xp.clip(priors, 0.0, 1.0)
    return priors.astype(dtype)


def mirror_index(cfg: SSDConfig, xp=numpy):
    """(P,) int64: for each default box, the index of its mirror image (left <-> right).

    Box (map k, row i, column j, centre (x0, y0), shape t) mirrors to (k, i, f_k - 1 - j,
    (1 - x0, y0), t): a left-right flip keeps every shape (a 2:1 box stays 2:1) and sends
    column j to column f_k - 1 - j. Used by test-time flipping
    (:func:`minissd.evaluation.inference.flip_average`). The mirror is exact when every
    f_k * step_k = image_size (ssd-tiny, ssd-cpu, SSD512); SSD300's first three maps span
    304-320 px of its 300, so there the mirrored centres are up to 4-20 px off (and the
    clipped border boxes differ in size by up to 0.07 of the side): the nearest box of the
    same shape, not its exact mirror.
    A ``box_centres`` entry whose centres are not mirror images of each other has no mirror:
    a UserError names it.
    """
    cfg.validate()
    index, offset = [], 0
    for k, f in enumerate(cfg.feature_maps):
        centres = [tuple(c) for c in cfg.centres(k)]
        A = len(box_shapes(cfg, k))                                      # shapes per centre
        swap = []
        for x0, y0 in centres:                                           # (1 - x0, y0) is which copy?
            mirror = [n for n, (x1, y1) in enumerate(centres)
                      if math.isclose(x1, 1 - x0, abs_tol=1e-9) and y1 == y0]
            if not mirror:
                raise UserError(f"SSDConfig {cfg.name!r}: box_centres[{k}] = {tuple(centres)} has no "
                                f"mirror image of centre ({x0}, {y0}) (no ({1 - x0:g}, {y0}) among them), "
                                f"so its default boxes cannot be flipped left-right")
            swap.append(mirror[0])
        n = len(centres)
        i, j, c, t = numpy.meshgrid(numpy.arange(f), numpy.arange(f), numpy.arange(n), numpy.arange(A),
                                    indexing="ij")                        # (f, f, n, A) each
        mirrored = ((i * f + (f - 1 - j)) * n + numpy.asarray(swap)[c]) * A + t
        index.append(offset + mirrored.reshape(-1))                      # (f*f*n*A,)
        offset += f * f * n * A
    return xp.asarray(numpy.concatenate(index).astype("int64"))
