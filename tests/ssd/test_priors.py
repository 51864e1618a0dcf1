"""Default boxes: counts, order and a few SSD300 boxes worked out by hand."""
import dataclasses
import math

import numpy as np
import pytest

from minissd.nn.backend import get_array_module, to_numpy
from minissd.ssd.boxes import cxcywh_to_xyxy, iou
from minissd.ssd.config import SSD300, SSD512, SSD_CPU, SSD_TINY
from minissd.errors import UserError
from minissd.ssd.priors import default_boxes, mirror_index

UNCLIPPED = dataclasses.replace(SSD300, clip=None)
CXCYWH = dataclasses.replace(SSD300, clip="cxcywh")          # ssd.pytorch's clamp
R2 = math.sqrt(2)
FIRST_38 = 38 * 38 * 4          # boxes of conv4_3; fc7's start here

# (index into SSD300's 8732 boxes, (cx, cy, w, h) by hand from the formula, unclipped)
SSD300_BOXES = [
    (0, (4 / 300, 4 / 300, 30 / 300, 30 / 300)),                        # cell (0, 0): s_1 = 0.1
    (1, (4 / 300, 4 / 300, math.sqrt(30 * 60) / 300, math.sqrt(30 * 60) / 300)),  # s'_1
    (2, (4 / 300, 4 / 300, 0.1 * R2, 0.1 / R2)),                         # ar 2
    (3, (4 / 300, 4 / 300, 0.1 / R2, 0.1 * R2)),                         # ar 1/2
    (4, (12 / 300, 4 / 300, 0.1, 0.1)),                                  # cell (0, 1): x moves first
    (38 * 4, (4 / 300, 12 / 300, 0.1, 0.1)),                             # cell (1, 0)
    (FIRST_38 - 4, (300 / 300, 300 / 300, 0.1, 0.1)),                    # cell (37, 37): 37.5 * 8
    (FIRST_38, (8 / 300, 8 / 300, 0.2, 0.2)),                            # fc7 cell (0, 0): s = 60
    (FIRST_38 + 4, (8 / 300, 8 / 300, 0.2 * math.sqrt(3), 0.2 / math.sqrt(3))),  # ar 3
    (FIRST_38 + 6, (24 / 300, 8 / 300, 0.2, 0.2)),                       # 6 boxes per cell
    (8732 - 4, (0.5, 0.5, 0.88, 0.88)),                                  # last map, 1 cell
    (8732 - 3, (0.5, 0.5, math.sqrt(264 * 315) / 300, math.sqrt(264 * 315) / 300)),
    (8732 - 1, (0.5, 0.5, 0.88 / R2, 0.88 * R2)),                        # 1.24 tall: off the image
]


@pytest.mark.parametrize("cfg, count", [(SSD300, 8732), (SSD512, 24564), (SSD_TINY, 1524)])
def test_counts(xp, cfg, count):
    p = default_boxes(cfg, xp=xp)
    assert p.shape == (count, 4) and get_array_module(p) is xp and p.dtype == np.float32


@pytest.mark.parametrize("index, box", SSD300_BOXES)
def test_ssd300_boxes_by_hand(xp, index, box):
    p = default_boxes(UNCLIPPED, xp=xp, dtype="float64")
    np.testing.assert_allclose(to_numpy(p[index]), box, rtol=1e-12)


def test_clip_clips_corners(xp):
    p = to_numpy(default_boxes(SSD300, xp=xp, dtype="float64"))
    # box 0: corners (4 - 15, 4 + 15) / 300 = (-11, 19) / 300 -> (0, 19) / 300
    np.testing.assert_allclose(p[0], [9.5 / 300, 9.5 / 300, 19 / 300, 19 / 300], rtol=1e-12)
    # last box: x in 0.5 +- 0.311 stays, y in 0.5 +- 0.622 -> (0, 1)
    np.testing.assert_allclose(p[-1], [0.5, 0.5, 0.88 / R2, 1.0], rtol=1e-12)
    # an interior box is untouched
    centre = FIRST_38 + 6 * (19 * 9 + 9)                               # fc7 cell (9, 9)
    np.testing.assert_allclose(p[centre], default_boxes(UNCLIPPED, dtype="float64")[centre])
    corners = np.concatenate([p[:, :2] - p[:, 2:] / 2, p[:, :2] + p[:, 2:] / 2], axis=1)
    assert corners.min() >= -1e-12 and corners.max() <= 1 + 1e-12
    assert (p[:, 2:] > 0).all()


def test_cxcywh_clamps_the_numbers(xp):
    p = to_numpy(default_boxes(CXCYWH, xp=xp, dtype="float64"))
    raw = default_boxes(UNCLIPPED, dtype="float64")
    # box 0 keeps its corners outside the image: ssd.pytorch only clamps (cx, cy, w, h) to [0, 1]
    np.testing.assert_allclose(p[0], [4 / 300, 4 / 300, 0.1, 0.1], rtol=1e-12)
    # last box: h = 0.88 * sqrt(2) = 1.24 -> 1, centre and w untouched
    np.testing.assert_allclose(p[-1], [0.5, 0.5, 0.88 / R2, 1.0], rtol=1e-12)
    np.testing.assert_array_equal(p, np.clip(raw, 0, 1))
    assert (p != raw).any(axis=1).sum() == 134                         # only the w, h > 1 boxes


def test_clip_conventions_differ_by_measured_amounts():
    """The numbers minissd.ssd.priors states: corner clip vs ssd.pytorch's (cx, cy, w, h) clamp."""
    corners, clamped = default_boxes(SSD300, dtype="float64"), default_boxes(CXCYWH, dtype="float64")
    gap = np.abs(corners - clamped)                                    # (8732, 4)
    differ = gap.max(axis=1) > 1e-9
    per_map = np.cumsum([0] + [f * f * a for f, a in zip(SSD300.feature_maps,
                                                          SSD300.num_boxes_per_location)])
    assert [int(differ[a:b].sum()) for a, b in zip(per_map[:-1], per_map[1:])] == \
        [1356, 914, 427, 136, 32, 0]
    assert differ.sum() == 2865
    assert gap[:, 2:].max() == pytest.approx(0.4277, abs=1e-4)         # w or h
    assert gap[:, :2].max() == pytest.approx(0.2138, abs=1e-4)         # cx or cy
    a, b = cxcywh_to_xyxy(corners[differ]), cxcywh_to_xyxy(clamped[differ])
    overlap = np.diagonal(iou(a, b))                                   # each prior with itself
    assert np.median(overlap) == pytest.approx(0.69, abs=0.005)
    assert overlap.min() == pytest.approx(0.21, abs=0.005)


def test_head_order_matches_per_map_blocks(xp):
    """Boxes come map by map; within a map, cell by cell (row-major), A boxes per cell."""
    p = to_numpy(default_boxes(UNCLIPPED, xp=xp, dtype="float64"))
    start = 0
    for f, step, a in zip(UNCLIPPED.feature_maps, UNCLIPPED.steps, UNCLIPPED.num_boxes_per_location):
        block = p[start:start + f * f * a].reshape(f, f, a, 4)         # (row i, col j, box, 4)
        centres = (np.arange(f) + 0.5) * step / 300
        np.testing.assert_allclose(block[:, :, :, 0], np.broadcast_to(centres[None, :, None], (f, f, a)))
        np.testing.assert_allclose(block[:, :, :, 1], np.broadcast_to(centres[:, None, None], (f, f, a)))
        assert np.ptp(block[:, :, :, 2:], axis=(0, 1)).max() == 0     # same shapes in every cell
        start += f * f * a
    assert start == 8732


# --- a denser tiling: several centres per cell (cfg.box_centres) --------------------------------
ONE_CENTRE = dataclasses.replace(SSD_TINY, box_centres=tuple(((0.5, 0.5),) for _ in SSD_TINY.feature_maps))
TWO_ACROSS = ((0.25, 0.5), (0.75, 0.5))
TILED = dataclasses.replace(SSD_TINY, clip=None,
                            box_centres=(TWO_ACROSS, ((0.25, 0.25), (0.75, 0.25), (0.25, 0.75),
                                                      (0.75, 0.75)), ((0.5, 0.5),), ((0.5, 0.5),),
                                         ((0.5, 0.5),)))


def test_one_centre_per_cell_is_the_papers_tiling_to_the_bit(xp):
    a = to_numpy(default_boxes(SSD_TINY, xp=xp, dtype="float64"))
    b = to_numpy(default_boxes(ONE_CENTRE, xp=xp, dtype="float64"))
    np.testing.assert_array_equal(a, b)
    assert ONE_CENTRE.num_boxes_per_location == SSD_TINY.num_boxes_per_location


def test_tiled_counts():
    # ssd-tiny: 16x16x4 + 8x8x6 + 4x4x6 + 2x2x4 + 1x1x4 = 1524; map 1 twice, map 2 four times
    assert TILED.num_boxes_per_location == (8, 24, 6, 4, 4)
    assert TILED.num_priors == 1524 + 16 * 16 * 4 + 8 * 8 * 6 * 3
    assert default_boxes(TILED).shape == (TILED.num_priors, 4)


def test_tiled_order_cell_then_centre_then_shape(xp):
    """Within a cell's block: the boxes of its first centre in box_shapes order, then the next centre's."""
    p = to_numpy(default_boxes(TILED, xp=xp, dtype="float64"))
    plain = to_numpy(default_boxes(dataclasses.replace(SSD_TINY, clip=None), dtype="float64"))
    start = plain_start = 0
    for k, (f, step) in enumerate(zip(TILED.feature_maps, TILED.steps)):
        centres = TILED.centres(k)
        a = SSD_TINY.num_boxes_per_location[k]
        block = p[start:start + f * f * len(centres) * a].reshape(f, f, len(centres), a, 4)
        ref = plain[plain_start:plain_start + f * f * a].reshape(f, f, a, 4)
        for n, (x0, y0) in enumerate(centres):
            cx = (np.arange(f) + x0) * step / 128                        # cells' columns j
            cy = (np.arange(f) + y0) * step / 128                        # cells' rows i
            np.testing.assert_allclose(block[:, :, n, :, 0], np.broadcast_to(cx[None, :, None], (f, f, a)),
                                       rtol=1e-12)
            np.testing.assert_allclose(block[:, :, n, :, 1], np.broadcast_to(cy[:, None, None], (f, f, a)),
                                       rtol=1e-12)
            np.testing.assert_array_equal(block[:, :, n, :, 2:], ref[..., 2:])   # the same shapes
        start += f * f * len(centres) * a
        plain_start += f * f * a
    assert start == len(p)


def test_tiling_by_hand():
    """ssd-tiny map 1 (16x16, step 8 of 128 px), centres a quarter cell either side of the middle."""
    p = default_boxes(TILED, dtype="float64")
    np.testing.assert_allclose(p[0], [2 / 128, 4 / 128, 0.1, 0.1], rtol=1e-12)      # cell (0, 0), x 0.25
    np.testing.assert_allclose(p[4], [6 / 128, 4 / 128, 0.1, 0.1], rtol=1e-12)      # same cell, x 0.75
    np.testing.assert_allclose(p[8], [10 / 128, 4 / 128, 0.1, 0.1], rtol=1e-12)     # cell (0, 1)


# --------------------------------------------------------------------------- #
# mirror_index: each default box's left-right mirror image (test-time flipping)
# --------------------------------------------------------------------------- #
def mirrored(priors):
    """(P, 4) cxcywh -> the same boxes flipped left-right (cx -> 1 - cx)."""
    out = priors.copy()
    out[:, 0] = 1 - out[:, 0]
    return out


@pytest.mark.parametrize("cfg", [SSD_TINY, SSD_CPU, SSD512, TILED, dataclasses.replace(SSD_CPU, clip=None)],
                         ids=["ssd-tiny", "ssd-cpu", "ssd512", "tiled", "ssd-cpu-unclipped"])
def test_mirror_index_gives_each_box_its_mirror_image(xp, cfg):
    """Where every map spans the image (f_k * step_k = image_size), box mirror[i] is box i flipped."""
    m = to_numpy(mirror_index(cfg, xp=xp))
    p = default_boxes(cfg, dtype="float64")
    assert m.shape == (cfg.num_priors,) and m.dtype == np.int64
    np.testing.assert_array_equal(np.sort(m), np.arange(cfg.num_priors))    # a permutation
    np.testing.assert_array_equal(m[m], np.arange(cfg.num_priors))          # that undoes itself
    np.testing.assert_allclose(p[m], mirrored(p), rtol=0, atol=1e-12)
    assert (m != np.arange(cfg.num_priors)).any()


def test_mirror_index_by_hand():
    """ssd-tiny: map 1 is 16x16 with 4 boxes a cell; cell (0, 0) mirrors to (0, 15), cell (2, 3) to (2, 12);
    the last map's single cell is its own mirror."""
    m = mirror_index(SSD_TINY)
    assert m[:4].tolist() == [15 * 4, 15 * 4 + 1, 15 * 4 + 2, 15 * 4 + 3]
    assert m[(2 * 16 + 3) * 4 + 2] == (2 * 16 + 12) * 4 + 2
    assert m[-4:].tolist() == [1520, 1521, 1522, 1523]
    # TILED's map 1: two centres a cell, x = 0.25 and 0.75: the copies swap as the columns do
    t = mirror_index(TILED)
    assert t[0] == (15 * 2 + 1) * 4 and t[4] == (15 * 2 + 0) * 4


def test_mirror_index_of_ssd300_is_the_nearest_box_of_the_same_shape():
    """SSD300's first maps span 304-320 px of its 300 (38 x 8, 10 x 32): the mirrored centres are off
    by up to 20 px (unclipped), the sizes are the same."""
    m = mirror_index(UNCLIPPED)
    p = default_boxes(UNCLIPPED, dtype="float64")
    np.testing.assert_array_equal(p[m][:, 1:], p[:, 1:])
    off = np.abs(p[m][:, 0] - mirrored(p)[:, 0]) * 300
    assert off.max() == pytest.approx(20) and np.median(off) > 0
    np.testing.assert_array_equal(m[m], np.arange(8732))


def test_mirror_index_needs_mirrored_centres():
    lopsided = dataclasses.replace(SSD_TINY, box_centres=(((0.25, 0.5),), *ONE_CENTRE.box_centres[1:]))
    with pytest.raises(UserError, match=r"box_centres\[0\].*no mirror image of centre \(0.25, 0.5\)"):
        mirror_index(lopsided)
