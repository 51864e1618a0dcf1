"""Matching ground truths to default boxes: hand cases, naive references, errors."""
import numpy as np
import pytest

from minissd.nn.backend import to_numpy
from minissd.ssd.boxes import cxcywh_to_xyxy, decode, iou, xyxy_to_cxcywh
from minissd.ssd.config import SSD_TINY
from minissd.ssd.matching import match, match_batch, pad_targets
from minissd.ssd.priors import default_boxes


def priors_from_xyxy(xp, boxes):
    return xyxy_to_cxcywh(xp.asarray(boxes, dtype=xp.float64))


A, B, C = [0, 0, .5, .5], [.5, .5, 1, 1], [0, 0, 1, 1]       # two quarters and the whole image

# (priors xyxy, gt boxes xyxy, gt labels, strategy, expected conf_targets per prior)
CASES = [
    # IoU(gt, A) = 0.09 / 0.25 = 0.36 < 0.5, but A is its best default box: matched anyway
    ([A, B, C], [[0, 0, .3, .3]], [2], "ssd", [2, 0, 0]),
    # IoU with A: 1; with [0,0,.5,.6]: 0.25/0.3; with [0,0,.5,1]: 0.25/0.5 = 0.5 exactly (>=);
    # with [0,0,.5,1.01]: 0.25/0.505 < 0.5
    ([A, [0, 0, .5, .6], [0, 0, .5, 1], [0, 0, .5, 1.01]], [A], [1], "ssd", [1, 1, 1, 0]),
    # two ground truths whose best box is A (0.36 and 0.25): the last one takes it (ssd.pytorch)
    ([A, B, C], [[0, 0, .3, .3], [.2, .2, .45, .45]], [1, 2], "ssd", [2, 0, 0]),
    # ... bipartite: gt 1 takes A (highest IoU of all), gt 2 its best remaining box C (0.0625)
    ([A, B, C], [[0, 0, .3, .3], [.2, .2, .45, .45]], [1, 2], "bipartite", [1, 0, 2]),
    # equal IoU (1/3) with two boxes: the lower index is claimed
    ([A, [.5, 0, 1, .5]], [[.25, 0, .75, .5]], [3], "ssd", [3, 0]),
    ([A, [.5, 0, 1, .5]], [[.25, 0, .75, .5]], [3], "bipartite", [3, 0]),
    # no objects: all background
    ([A, B, C], np.zeros((0, 4)), np.zeros(0, dtype=np.int64), "ssd", [0, 0, 0]),
    ([A, B, C], np.zeros((0, 4)), np.zeros(0, dtype=np.int64), "bipartite", [0, 0, 0]),
]


@pytest.mark.parametrize("priors, gt, labels, strategy, expected", CASES)
def test_match_cases(xp, priors, gt, labels, strategy, expected):
    p = priors_from_xyxy(xp, priors)
    gt = xp.asarray(gt, dtype=xp.float64).reshape(-1, 4)
    loc, conf = match(gt, xp.asarray(labels, dtype=xp.int64), p, strategy=strategy)
    assert conf.dtype == np.int64 and loc.shape == (len(priors), 4)
    assert to_numpy(conf).tolist() == expected
    assert (to_numpy(loc)[np.array(expected) == 0] == 0).all()   # background: zero offsets


def test_loc_targets_decode_to_the_matched_box(xp):
    p = priors_from_xyxy(xp, [A, B, C])
    gt = xp.asarray([[0, 0, .3, .3]], dtype=xp.float64)
    loc, conf = match(gt, xp.asarray([1]), p, variances=(0.1, 0.2))
    np.testing.assert_allclose(to_numpy(decode(loc, p, (0.1, 0.2)))[0], [0, 0, .3, .3], atol=1e-12)


# --- naive references: one image, Python loops, as ssd.pytorch and ChainerCV write them ---

def naive_ssd(gt, labels, priors_xyxy, thr):
    ov = to_numpy(iou(gt, priors_xyxy))                           # (G, P)
    best_gt, best_iou = ov.argmax(0), ov.max(0)
    for j in range(len(gt)):                                      # later gt overwrite earlier
        p = ov[j].argmax()
        best_gt[p], best_iou[p] = j, 2.0
    return np.where(best_iou >= thr, labels[best_gt], 0)


def naive_bipartite(gt, labels, priors_xyxy, thr):
    ov = to_numpy(iou(gt, priors_xyxy))                           # (G, P)
    index, left = -np.ones(ov.shape[1], dtype=int), ov.copy()
    while True:
        j, p = np.unravel_index(left.argmax(), left.shape)
        if left[j, p] <= 1e-6:
            break
        index[p] = j
        left[j, :], left[:, p] = 0, 0
    rest = (index < 0) & (ov.max(0) >= thr)
    index[rest] = ov[:, rest].argmax(0)
    return np.where(index >= 0, labels[np.maximum(index, 0)], 0)


def random_targets(rng, n):
    lo = rng.uniform(0, 0.7, size=(n, 2))
    boxes = np.concatenate([lo, np.minimum(lo + rng.uniform(0.05, 0.6, size=(n, 2)), 1)], 1)
    return boxes, rng.integers(1, 6, size=n)


@pytest.mark.parametrize("strategy, naive", [("ssd", naive_ssd), ("bipartite", naive_bipartite)])
def test_match_batch_agrees_with_naive_loops(xp, rng, strategy, naive):
    priors = default_boxes(SSD_TINY, xp=xp, dtype="float64")      # (1524, 4)
    per_image = [random_targets(rng, n) for n in (3, 0, 7, 1)]
    boxes, labels = pad_targets([xp.asarray(b) for b, _ in per_image],
                                [xp.asarray(l) for _, l in per_image])
    labels[2, 5:] = 0                                             # 0 also means 'no object'
    loc, conf = match_batch(boxes, labels, priors, strategy=strategy)
    assert loc.shape == (4, 1524, 4) and conf.shape == (4, 1524)
    for i, (b, l) in enumerate(per_image):
        b, l = (b[:5], l[:5]) if i == 2 else (b, l)
        expected = naive(xp.asarray(b), l, cxcywh_to_xyxy(priors), 0.5) if len(b) else np.zeros(1524)
        np.testing.assert_array_equal(to_numpy(conf[i]), expected)
        one_loc, one_conf = match(xp.asarray(b).reshape(-1, 4), xp.asarray(l, dtype=xp.int64), priors,
                                  strategy=strategy)
        np.testing.assert_array_equal(to_numpy(one_conf), to_numpy(conf[i]))
        np.testing.assert_allclose(to_numpy(one_loc), to_numpy(loc[i]))
    assert int((conf[1] > 0).sum()) == 0


def test_every_object_gets_a_box_with_bipartite(xp, rng):
    priors = default_boxes(SSD_TINY, xp=xp)
    boxes, labels = random_targets(rng, 12)
    _, conf = match(xp.asarray(boxes, dtype=xp.float32), xp.asarray(np.arange(1, 13)), priors,
                    strategy="bipartite")
    assert set(to_numpy(conf).tolist()) == set(range(13))         # all 12 objects and background


def test_pad_targets(xp):
    boxes, labels = pad_targets([xp.asarray([[0, 0, .5, .5]], dtype=xp.float32),
                                 xp.zeros((0, 4), xp.float32)],
                                [xp.asarray([4]), xp.zeros(0, dtype=xp.int64)])
    assert boxes.shape == (2, 1, 4) and boxes.dtype == np.float32
    assert to_numpy(labels).tolist() == [[4], [-1]]


# (gt boxes, gt labels, message fragment)
BAD = [
    ([[0.5, 0.1, 0.4, 0.3]], [1], r"gt_boxes_xyxy: box 0 .*xmin >= xmax"),
    ([[0.1, 0.1, 0.4, float("nan")]], [1], "non-finite"),
    ([[0.1, 0.1, 0.4, 0.4]], [0], r"gt_labels\[0\] = 0 is out of range"),
    ([[0.1, 0.1, 0.4, 0.4]], [1, 2], r"gt_labels has shape \(2,\)"),
    ([[0.1, 0.1, 0.4]], [1], r"\(G, 4\)"),
]


@pytest.mark.parametrize("gt, labels, message", BAD)
def test_match_errors(xp, gt, labels, message):
    p = priors_from_xyxy(xp, [A, B, C])
    with pytest.raises(ValueError, match=message):
        match(xp.asarray(gt), xp.asarray(labels), p)


def test_match_batch_errors(xp):
    p = priors_from_xyxy(xp, [A, B, C])
    boxes = xp.asarray([[[0, 0, .5, .5], [0, 0, 0, 0]]])              # (1, 2, 4), row 1 padding
    match_batch(boxes, xp.asarray([[1, -1]]), p)                        # padding is not checked
    with pytest.raises(ValueError, match=r"box \(0, 1\)"):
        match_batch(boxes, xp.asarray([[1, 2]]), p)                     # ... unless labelled
    with pytest.raises(ValueError, match=r"out of range 1..3"):
        match_batch(boxes, xp.asarray([[4, -1]]), p, num_classes=3)
    with pytest.raises(ValueError, match=r"gt_labels has shape \(2,\)"):
        match_batch(boxes, xp.asarray([1, -1]), p)
    with pytest.raises(ValueError, match="strategy"):
        match_batch(boxes, xp.asarray([[1, -1]]), p, strategy="hungarian")


def test_ignore_band_by_hand(xp):
    # one object A = [0, 0, .5, .5] (area 0.25) and priors that contain it or miss it: IoU =
    # 0.25 / prior area: 1, 0.5, 0.3, 0.25, 0.1, and 0 for B
    priors = [A, [0, 0, .5, 1], [0, 0, 1, 1 / 1.2], [0, 0, 1, 1], [0, 0, 1, 2.5], B]
    p = priors_from_xyxy(xp, priors)
    gt, labels = xp.asarray([A], dtype=xp.float64), xp.asarray([2])
    np.testing.assert_allclose(to_numpy(iou(gt, cxcywh_to_xyxy(p)))[0], [1, .5, .3, .25, .1, 0],
                               atol=1e-12)
    _, plain = match(gt, labels, p, iou_threshold=0.5)
    assert to_numpy(plain).tolist() == [2, 2, 0, 0, 0, 0]
    _, band = match(gt, labels, p, iou_threshold=0.5, ignore_threshold=0.25)
    assert to_numpy(band).tolist() == [2, 2, -1, -1, 0, 0]     # [0.25, 0.5): ignored, 0.25 included
    _, band = match(gt, labels, p, iou_threshold=0.35, ignore_threshold=0.2)
    assert to_numpy(band).tolist() == [2, 2, -1, -1, 0, 0]
    # an object's forced best box stays positive though its IoU is in the band
    _, forced = match(xp.asarray([[0, 0, .3, .3]], dtype=xp.float64), labels, priors_from_xyxy(xp, [A, B, C]),
                      iou_threshold=0.5, ignore_threshold=0.05)
    assert to_numpy(forced).tolist() == [2, 0, -1]                 # IoU 0.36 (forced), 0, 0.09
    with pytest.raises(ValueError, match=r"ignore_threshold must be in \(0, iou_threshold = 0.5\)"):
        match(gt, labels, p, iou_threshold=0.5, ignore_threshold=0.5)


def test_topk_threshold_per_object_by_hand(xp):
    # the priors of the band test: IoU with A 1, 0.5, 0.3, 0.25, 0.1, 0
    priors = [A, [0, 0, .5, 1], [0, 0, 1, 1 / 1.2], [0, 0, 1, 1], [0, 0, 1, 2.5], B]
    p = priors_from_xyxy(xp, priors)
    gt, labels = xp.asarray([A], dtype=xp.float64), xp.asarray([2])
    # its 3rd best IoU is 0.3: the threshold min(0.5, max(0.25, 0.3)) = 0.3
    assert to_numpy(match(gt, labels, p, iou_threshold=0.5, topk=3)[1]).tolist() == [2, 2, 2, 0, 0, 0]
    # its 5th best is 0.1, under the floor: the floor's 0.25 (included) is the threshold
    assert to_numpy(match(gt, labels, p, iou_threshold=0.5, topk=5)[1]).tolist() == [2, 2, 2, 2, 0, 0]
    assert to_numpy(match(gt, labels, p, iou_threshold=0.5, topk=5, topk_floor=0.1)[1]).tolist() \
        == [2, 2, 2, 2, 2, 0]
    # two boxes at 0.5 already: topk 2 keeps the paper's threshold; more than the priors: all of them
    assert to_numpy(match(gt, labels, p, iou_threshold=0.5, topk=2)[1]).tolist() == [2, 2, 0, 0, 0, 0]
    assert to_numpy(match(gt, labels, p, iou_threshold=0.5, topk=50, topk_floor=0.1)[1]).tolist() \
        == [2, 2, 2, 2, 2, 0]
    # with the band: what topk makes positive leaves it; the rest of the band stays ignored
    assert to_numpy(match(gt, labels, p, iou_threshold=0.5, ignore_threshold=0.2, topk=3)[1]).tolist() \
        == [2, 2, 2, -1, 0, 0]


def test_topk_judges_a_box_by_its_best_objects_threshold(xp):
    # object 1 = A, with two boxes at 0.5 or more; object 2 = a sliver at the right edge whose
    # 2nd best box overlaps it by 0.4. With topk 2 the sliver's threshold drops to 0.4 and A's
    # stays 0.5: the prior at 0.45 with A (its best object) is judged by A's, not a positive.
    sliver = [.9, 0, 1, .4]                                                 # area 0.04
    priors = [A, [0, 0, .5, 1], [0, 0, .5, 1.1], [.9, 0, 1, .1], [.9, 0, 1, 1], [.85, 0, 1, .5]]
    p = priors_from_xyxy(xp, priors)
    gt = xp.asarray([A, sliver], dtype=xp.float64)
    ious = to_numpy(iou(gt, cxcywh_to_xyxy(p)))
    np.testing.assert_allclose(ious[0, :3], [1, .5, .25 / .55], atol=1e-12)
    assert (ious[0, 3:] == 0).all() and (ious[1, :3] == 0).all()
    np.testing.assert_allclose(ious[1, 3:], [.25, .4, .04 / .075], atol=1e-12)
    plain = to_numpy(match(gt, xp.asarray([1, 2]), p, iou_threshold=0.6)[1]).tolist()
    assert plain == [1, 0, 0, 0, 0, 2]                                      # each its forced best only
    per_object = to_numpy(match(gt, xp.asarray([1, 2]), p, iou_threshold=0.6, topk=2)[1]).tolist()
    assert per_object == [1, 1, 0, 0, 2, 2]            # A: 2nd best 0.5; the sliver: 2nd best 0.4


def test_topk_errors(xp):
    p = priors_from_xyxy(xp, [A, B, C])
    gt, labels = xp.asarray([A], dtype=xp.float64), xp.asarray([1])
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match=r"match: topk must be a positive int or None"):
            match(gt, labels, p, topk=bad)
    with pytest.raises(ValueError, match=r"topk_floor must be in \(0, iou_threshold = 0.35\]"):
        match(gt, labels, p, iou_threshold=0.35, topk=4, topk_floor=0.4)
