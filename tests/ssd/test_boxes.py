"""Box formats, IoU, SSD's offset encoding and the box validator, each case worked by hand."""
import math

import numpy as np
import pytest

from minissd.nn.backend import to_numpy
from minissd.ssd.boxes import check_boxes, cxcywh_to_xyxy, decode, encode, iou, xyxy_to_cxcywh

# (box a xyxy, box b xyxy, IoU by hand)
IOU_CASES = [
    ([0, 0, 1, 1], [2, 2, 3, 3], 0.0),                  # disjoint
    ([0, 0, 1, 1], [1, 0, 2, 1], 0.0),                  # touching edge: no area in common
    ([0, 0, 4, 4], [1, 1, 3, 3], 4 / 16),               # nested: inner area / outer area
    ([0.1, 0.2, 0.5, 0.6], [0.1, 0.2, 0.5, 0.6], 1.0),  # identical
    ([0, 0, 2, 2], [1, 1, 3, 3], 1 / 7),                # corner overlap: 1 / (4 + 4 - 1)
    ([0, 0, 2, 1], [1, 0, 3, 1], 1 / 3),                # half overlap along x: 1 / (2 + 2 - 1)
]


@pytest.mark.parametrize("a, b, expected", IOU_CASES)
def test_iou_cases(xp, a, b, expected):
    got = iou(xp.asarray([a], dtype=xp.float64), xp.asarray([b], dtype=xp.float64))
    assert got.shape == (1, 1)
    assert float(got[0, 0]) == pytest.approx(expected, abs=1e-12)


def test_iou_pairwise_shape_and_symmetry(xp):
    a = xp.asarray([c[0] for c in IOU_CASES], dtype=xp.float64)   # (6, 4)
    b = xp.asarray([c[1] for c in IOU_CASES[:4]], dtype=xp.float64)  # (4, 4)
    m = iou(a, b)
    assert m.shape == (6, 4)
    np.testing.assert_allclose(to_numpy(iou(b, a)), to_numpy(m).T)
    np.testing.assert_allclose(np.diag(to_numpy(m)[:4]), [c[2] for c in IOU_CASES[:4]])


def test_iou_broadcasts_over_batch(xp):
    a = xp.asarray([[[0, 0, 2, 2]], [[0, 0, 1, 1]]], dtype=xp.float32)   # (2, 1, 4)
    b = xp.asarray([[1, 1, 3, 3], [0, 0, 1, 1]], dtype=xp.float32)        # (2, 4)
    m = to_numpy(iou(a, b))                                               # (2, 1, 2)
    np.testing.assert_allclose(m, [[[1 / 7, 1 / 4]], [[0, 1]]], rtol=1e-6)
    assert m.dtype == np.float32


def test_iou_of_empty_boxes_is_zero_not_nan(xp):
    z = xp.zeros((1, 4), dtype=xp.float32)
    assert float(iou(z, z)[0, 0]) == 0.0


def test_format_conversion_by_hand(xp):
    xyxy = xp.asarray([[0.1, 0.2, 0.5, 0.8]], dtype=xp.float64)
    np.testing.assert_allclose(to_numpy(xyxy_to_cxcywh(xyxy)), [[0.3, 0.5, 0.4, 0.6]])
    np.testing.assert_allclose(to_numpy(cxcywh_to_xyxy(xyxy_to_cxcywh(xyxy))), to_numpy(xyxy))


def test_encode_by_hand(xp):
    prior = xp.asarray([[0.5, 0.5, 0.2, 0.4]], dtype=xp.float64)     # cx, cy, w, h
    gt = xp.asarray([[0.42, 0.34, 0.62, 0.74]], dtype=xp.float64)    # cx 0.52, cy 0.54, w 0.2, h 0.4
    t = to_numpy(encode(gt, prior, variances=(0.1, 0.2)))[0]
    # (0.52 - 0.5) / (0.1 * 0.2) = 1; (0.54 - 0.5) / (0.1 * 0.4) = 1; log(1) / 0.2 = 0
    np.testing.assert_allclose(t, [1.0, 1.0, 0.0, 0.0], atol=1e-12)
    gt2 = xp.asarray([[0.3, 0.1, 0.7, 0.9]], dtype=xp.float64)       # same centre, twice the size
    np.testing.assert_allclose(to_numpy(encode(gt2, prior))[0],
                               [0, 0, math.log(2) / 0.2, math.log(2) / 0.2], atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_encode_decode_round_trip(xp, rng, dtype, tol):
    lo = rng.uniform(0, 0.6, size=(2, 50, 2))
    boxes = xp.asarray(np.concatenate([lo, lo + rng.uniform(0.05, 0.4, size=(2, 50, 2))], -1), dtype=dtype)
    priors = xp.asarray(np.concatenate([rng.uniform(0.1, 0.9, (50, 2)), rng.uniform(0.05, 0.5, (50, 2))], -1),
                        dtype=dtype)
    loc = encode(boxes, priors, variances=(0.1, 0.2))                 # (2, 50, 4)
    assert loc.dtype == boxes.dtype and loc.shape == (2, 50, 4)
    np.testing.assert_allclose(to_numpy(decode(loc, priors, (0.1, 0.2))), to_numpy(boxes), atol=tol)


def test_decode_of_zero_offsets_is_the_prior(xp):
    priors = xp.asarray([[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.1, 0.1]], dtype=xp.float64)
    np.testing.assert_allclose(to_numpy(decode(xp.zeros((2, 4)), priors)),
                               to_numpy(cxcywh_to_xyxy(priors)))


# (boxes, what the message must mention)
BAD_BOXES = [
    ([[0.1, 0.1, 0.5, 0.5], [0.6, 0.1, 0.4, 0.5]], "box 1"),       # xmin > xmax
    ([[0.1, 0.5, 0.5, 0.5]], "ymin >= ymax"),                      # ymin == ymax: zero height
    ([[0.1, 0.1, float("nan"), 0.5]], "non-finite"),
    ([[0.1, 0.1, float("inf"), 0.5]], "non-finite"),
    ([[0.1, 0.1, 0.5]], "shape"),                                  # 3 coordinates
]


@pytest.mark.parametrize("boxes, needle", BAD_BOXES)
def test_check_boxes_rejects(xp, boxes, needle):
    with pytest.raises(ValueError, match="gt_boxes") as e:
        check_boxes(xp.asarray(boxes), "gt_boxes")
    assert needle in str(e.value)


def test_check_boxes_names_row_and_values_and_skips_padding(xp):
    boxes = xp.asarray([[[0.1, 0.1, 0.5, 0.5], [0, 0, 0, 0]],
                        [[0.2, 0.2, 0.3, 0.3], [0.7, 0.2, 0.6, 0.9]]])   # (2, 2, 4)
    valid = xp.asarray([[True, False], [True, True]])
    with pytest.raises(ValueError, match=r"box \(1, 1\).*0\.7, 0\.2, 0\.6, 0\.9"):
        check_boxes(boxes, "gt", valid=valid)
    check_boxes(boxes[:1], "gt", valid=valid[:1])                  # padding row not checked
