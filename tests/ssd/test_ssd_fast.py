"""minissd/ssd/fast.py against the textbook versions: matching and mining, bit for bit.
(Named test_ssd_fast.py: pytest imports test files by base name, and tests/nn/test_fast.py is taken.)

The fast paths promise the textbook's results exactly (the same float operations
on the same numbers, the same tie rules), so these tests compare with
``assert_array_equal``, float32 included.
"""
import numpy as np
import pytest

import minissd.nn.fast as fast
from minissd.ssd import fast as ssd_fast
from minissd.ssd.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from minissd.ssd.config import SSD_TINY
from minissd.ssd.loss import MultiBoxLoss
from minissd.ssd.matching import match_batch, pad_targets
from minissd.ssd.priors import default_boxes


def both(fn, *args, **kwargs):
    """fn's result with the fast paths on, and with them off (the textbook versions)."""
    with fast.fast_paths(True):
        got = fn(*args, **kwargs)
    with fast.fast_paths(False):
        want = fn(*args, **kwargs)
    return got, want


def assert_identical(got, want):
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)


def random_batch(rng, counts, dtype, grid=None):
    """Padded boxes and labels for len(counts) photos; ``grid`` snaps corners (ties, duplicates)."""
    per_image = []
    for n in counts:
        lo = rng.uniform(0, 0.7, size=(n, 2))
        hi = np.minimum(lo + rng.uniform(0.02, 0.6, size=(n, 2)), 1)
        boxes = np.concatenate([lo, hi], 1)
        if grid:
            boxes = np.round(boxes * grid) / grid
            boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1 / grid)
        per_image.append((boxes.astype(dtype), rng.integers(1, 6, size=n)))
    return pad_targets([b for b, _ in per_image], [l for _, l in per_image])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("counts", [(3, 0, 7, 1), (1,) * 8, (0, 0), (20, 2, 1, 3, 1, 2)])
def test_match_batch_is_the_textbooks(rng, dtype, counts):
    priors = default_boxes(SSD_TINY, dtype=dtype)                       # (1524, 4)
    boxes, labels = random_batch(rng, counts, dtype)
    got, want = both(match_batch, boxes, labels, priors)
    assert_identical(got, want)


def test_match_batch_ties_duplicates_and_gaps(rng):
    # corners on the priors' own grid: equal IoUs, boxes equal to default boxes, two objects
    # with the same box (both claim the same default box: the later one keeps it), padding
    # rows between real ones (label 0 or -1 mid-row), and a photo with no objects at all
    priors = default_boxes(SSD_TINY, dtype="float32")
    boxes, labels = random_batch(rng, (6, 5, 0, 4), "float32", grid=8)
    boxes[0, 1] = boxes[0, 0]
    boxes[1, 2] = cxcywh_to_xyxy(priors[100])
    labels[0, 3] = 0
    labels[1, 1] = -1
    got, want = both(match_batch, boxes, labels, priors)
    assert_identical(got, want)
    assert (got[1][0] > 0).any() and not (got[1][2] > 0).any()


@pytest.mark.parametrize("box_dtype, prior_dtype", [("float32", "float64"), ("float64", "float32")])
def test_match_batch_mixed_dtypes(rng, box_dtype, prior_dtype):
    priors = default_boxes(SSD_TINY, dtype=prior_dtype)
    boxes, labels = random_batch(rng, (4, 2, 9), box_dtype)
    assert_identical(*both(match_batch, boxes, labels, priors))


@pytest.mark.parametrize("threshold, variances", [(0.5, (0.1, 0.2)), (0.35, (0.1, 0.2)), (0.7, (0.2, 0.5))])
def test_match_batch_settings(rng, threshold, variances):
    priors = default_boxes(SSD_TINY, dtype="float32")
    boxes, labels = random_batch(rng, (5, 1, 3), "float32")
    assert_identical(*both(match_batch, boxes, labels, priors, iou_threshold=threshold,
                           variances=variances))


def test_match_batch_float_labels_and_no_columns(rng):
    priors = xyxy_to_cxcywh(np.asarray([[0, 0, .5, .5], [.5, .5, 1, 1], [0, 0, 1, 1]]))
    boxes, labels = random_batch(rng, (2, 1), "float64")
    assert_identical(*both(match_batch, boxes, labels.astype(np.float64), priors))
    empty = (np.zeros((2, 0, 4)), np.zeros((2, 0), dtype=np.int64))          # G = 0
    assert_identical(*both(match_batch, *empty, priors))


def test_the_fast_matching_is_the_one_that_runs(rng, monkeypatch):
    calls = []
    real = ssd_fast.match_batch
    monkeypatch.setattr(ssd_fast, "match_batch", lambda *a: calls.append(1) or real(*a))
    priors = default_boxes(SSD_TINY, dtype="float32")
    boxes, labels = random_batch(rng, (2, 3), "float32")
    both(match_batch, boxes, labels, priors)                               # on once, off once
    match_batch(boxes, labels, priors, strategy="bipartite")               # textbook only
    assert calls == [1]


def mining_inputs(rng, B, P, positives, levels=None):
    """(B, P) cross-entropies (from ``levels`` values when given: many ties) and a positive mask."""
    ce = rng.exponential(size=(B, P)) if levels is None else rng.integers(0, levels, (B, P)) / 4
    positive = rng.random((B, P)) < np.asarray(positives)[:, None]
    return ce.astype(np.float32), positive


@pytest.mark.parametrize("levels", [None, 3, 1])
@pytest.mark.parametrize("ratio", [3, 0, 2.5, 100])
def test_mine_is_the_textbooks(rng, levels, ratio):
    # every photo a different quota: few positives, many, none, all, and 3:1 past the negatives
    ce, positive = mining_inputs(rng, 5, 400, [0.01, 0.2, 0.0, 1.0, 0.5], levels)
    crit = MultiBoxLoss(neg_pos_ratio=ratio)
    got, want = both(crit.mine, ce, positive)
    assert_identical([got], [want])
    if ratio == 3:
        assert (got.sum(axis=1) == np.minimum(3 * positive.sum(1), 400 - positive.sum(1))).all()


def test_mine_with_signed_zeros_and_a_non_finite_loss(rng):
    ce, positive = mining_inputs(rng, 3, 50, [0.1, 0.1, 0.1], levels=2)
    ce[ce == 0] = -0.0                                    # -log(1): equal to 0.0 for the sorts
    ce[0, ::7] = 0.0
    crit = MultiBoxLoss()
    got, want = both(crit.mine, ce, positive)
    assert_identical([got], [want])
    ce[1, 3] = np.nan                                     # not finite: the textbook version runs
    got, want = both(crit.mine, ce, positive)
    assert_identical([got], [want])


def test_mine_direct_quota_rule():
    # ties at the cut: hardness 5, 3, 3, 3, 1 with a quota of 3 keeps 5 and the first two 3s
    ce = np.asarray([[5, 3, 3, 3, 1, 0, 0, 0]], dtype=np.float32)
    positive = np.asarray([[0, 0, 0, 0, 0, 1, 0, 0]], dtype=bool)
    assert ssd_fast.mine(ce, positive, 3).tolist() == [[1, 1, 1, 0, 0, 0, 0, 0]]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threshold, ignore", [(0.5, 0.4), (0.35, 0.25), (0.35, 0.01)])
def test_match_batch_with_an_ignore_band_is_the_textbooks(rng, dtype, threshold, ignore):
    priors = default_boxes(SSD_TINY, dtype=dtype)
    boxes, labels = random_batch(rng, (3, 0, 7, 1), dtype)
    got, want = both(match_batch, boxes, labels, priors, iou_threshold=threshold,
                     ignore_threshold=ignore)
    assert_identical(got, want)
    assert (got[1] == -1).any() and (got[1] > 0).any() and not (got[1][1] != 0).any()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threshold, ignore, topk, floor", [(0.5, None, 8, 0.25), (0.35, 0.25, 16, 0.25),
                                                            (0.35, 0.2, 10, 0.3), (0.5, None, 2000, 0.01)])
def test_match_batch_with_a_threshold_per_object_is_the_textbooks(rng, dtype, threshold, ignore, topk, floor):
    priors = default_boxes(SSD_TINY, dtype=dtype)
    boxes, labels = random_batch(rng, (3, 0, 7, 1), dtype)
    got, want = both(match_batch, boxes, labels, priors, iou_threshold=threshold,
                     ignore_threshold=ignore, topk=topk, topk_floor=floor)
    assert_identical(got, want)
    plain, _ = both(match_batch, boxes, labels, priors, iou_threshold=threshold, ignore_threshold=ignore)
    assert ((got[1] > 0).sum() > (plain[1] > 0).sum()) and not (got[1][1] != 0).any()


@pytest.mark.parametrize("levels", [None, 3])
@pytest.mark.parametrize("ratio", [3, 100])
def test_mine_with_ignored_boxes_is_the_textbooks(rng, levels, ratio):
    ce, positive = mining_inputs(rng, 5, 400, [0.01, 0.2, 0.0, 0.5, 0.6], levels)
    ignored = (rng.random((5, 400)) < 0.3) & ~positive
    ignored[0] |= ~positive[0] & (np.arange(400) % 2 == 0)       # the hardest half, some of them
    crit = MultiBoxLoss(neg_pos_ratio=ratio)
    got, want = both(crit.mine, ce, positive, ignored)
    assert_identical([got], [want])
    assert not (got & (positive | ignored)).any()
    assert (got.sum(axis=1) == np.minimum(ratio * positive.sum(1),
                                          400 - (positive | ignored).sum(1))).all()
