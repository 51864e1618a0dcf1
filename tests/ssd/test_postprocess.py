"""NMS and detect: hand cases and a naive per-class reference."""
import dataclasses

import numpy as np
import pytest

from minissd.nn.backend import to_numpy
from minissd.ssd.boxes import cxcywh_to_xyxy, iou, xyxy_to_cxcywh
from minissd.ssd.postprocess import SSD_PYTORCH_DETECT, DetectConfig, detect, nms, per_class_top_k

# (boxes xyxy, scores, IoU threshold, kept indices by hand, best first)
NMS_CASES = [
    # box 1 overlaps box 0 by 0.95 / 1.05: gone; box 3 by 1/3: stays; box 2 is far away
    ([[0, 0, 1, 1], [.05, 0, 1.05, 1], [2, 2, 3, 3], [.5, 0, 1.5, 1]], [.9, .8, .7, .6], .5, [0, 2, 3]),
    # disjoint boxes all survive, sorted by score
    ([[0, 0, 1, 1], [2, 0, 3, 1], [4, 0, 5, 1]], [.1, .9, .5], .3, [1, 2, 0]),
    # IoU exactly at the threshold (1 / 2) is not suppressed: only IoU > threshold is
    ([[0, 0, 1, 1], [0, 0, 1, 2]], [.9, .8], .5, [0, 1]),
    ([[0, 0, 1, 1], [0, 0, 1, 2]], [.9, .8], .49, [0]),
    # a chain: 1 is suppressed by 0, so 2 (overlapping 1 but not 0) survives
    ([[0, 0, 2, 1], [1, 0, 3, 1], [2, 0, 4, 1]], [.9, .8, .7], .3, [0, 2]),
    # equal scores: the lower index comes first
    ([[0, 0, 1, 1], [0, 0, 1, 1], [5, 5, 6, 6]], [.5, .5, .5], .5, [0, 2]),
    ([], [], .5, []),
]


@pytest.mark.parametrize("boxes, scores, thr, expected", NMS_CASES)
def test_nms_cases(xp, boxes, scores, thr, expected):
    keep = nms(xp.asarray(boxes, dtype=xp.float64).reshape(-1, 4), xp.asarray(scores, dtype=xp.float64), thr)
    assert to_numpy(keep).tolist() == expected


def naive_nms(boxes, scores, thr):
    """The textbook loop: take the best, drop what overlaps it, repeat."""
    overlap = iou(boxes, boxes)                            # (N, N), all pairs up front
    order, keep = list(np.argsort(-scores, kind="stable")), []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if overlap[i, j] <= thr]
    return keep


def random_boxes(rng, n, size=0.3):
    lo = rng.uniform(0, 1 - size, (n, 2))
    return np.concatenate([lo, lo + rng.uniform(0.02, size, (n, 2))], 1)


@pytest.mark.parametrize("block, max_keep", [(None, None), (1024, None), (128, 200), (7, None),
                                             (7, 5), (1, 3), (300, 0)])
def test_blocked_nms_agrees_with_naive_loop(xp, rng, block, max_keep):
    boxes, scores = random_boxes(rng, 300), rng.random(300)
    keep = nms(xp.asarray(boxes), xp.asarray(scores), 0.45, max_keep=max_keep, block=block)
    expected = naive_nms(boxes, scores, 0.45)
    assert to_numpy(keep).tolist() == expected[:max_keep]
    assert 10 < len(expected) < 300                        # some, not all, suppressed


def test_nms_block_must_be_positive(xp):
    with pytest.raises(ValueError, match="block must be >= 1"):
        nms(xp.zeros((3, 4)), xp.zeros(3), 0.5, block=0)


def logits_from_probs(p):
    return np.log(np.maximum(np.asarray(p, dtype=np.float64), 1e-20))   # probability 0 -> 1e-20


def test_detect_by_hand(xp):
    priors = xyxy_to_cxcywh(xp.asarray([[.1, .1, .5, .5], [.12, .1, .52, .5], [.6, .6, .9, .9]]))
    conf = logits_from_probs([[[.1, .7, .2, 0],            # prior 0: class 1 at .7, class 2 at .2
                               [.3, .6, 0, .1],            # prior 1: class 1 at .6 (overlaps 0: gone)
                               [.995, .005, 0, 0]]])       # prior 2: .005 < conf_threshold
    boxes, labels, scores = detect(xp.zeros((1, 3, 4)), xp.asarray(conf), priors, conf_threshold=0.01,
                                   nms_threshold=0.45)[0]
    assert isinstance(boxes, np.ndarray) and isinstance(labels, np.ndarray)
    assert labels.tolist() == [1, 2, 3]                    # class 2 on prior 0 survives: per class
    np.testing.assert_allclose(scores, [.7, .2, .1], rtol=1e-9)
    np.testing.assert_allclose(boxes, [[.1, .1, .5, .5], [.1, .1, .5, .5], [.12, .1, .52, .5]], atol=1e-12)
    top2 = detect(xp.zeros((1, 3, 4)), xp.asarray(conf), priors, top_k=2)[0]
    assert top2[1].tolist() == [1, 2]


def test_detect_decodes_and_clips(xp):
    priors = xp.asarray([[.9, .5, .4, .4]])                # spills over the right edge once decoded
    loc = xp.asarray([[[1.0, 0.0, 0.0, 0.0]]])             # centre moves by 0.1 * 0.4 * 1
    conf = xp.asarray([[[0.0, 5.0]]])
    boxes, labels, scores = detect(loc, conf, priors, variances=(0.1, 0.2))[0]
    np.testing.assert_allclose(boxes, [[.74, .3, 1.0, .7]], atol=1e-12)   # xmax 1.14 clipped to 1
    np.testing.assert_allclose(scores, [1 / (1 + np.exp(-5))])


def naive_detect(boxes, probs, conf_thr, nms_thr, top_k, per_class=None):
    """Per class: threshold, the per_class best, NMS; then the top_k of all classes by score."""
    out = []
    for c in range(1, probs.shape[1]):
        idx = np.flatnonzero(probs[:, c] > conf_thr)
        idx = np.sort(idx[np.argsort(-probs[idx, c], kind="stable")[:per_class]])
        for i in naive_nms(boxes[idx], probs[idx, c], nms_thr):
            out.append((probs[idx[i], c], c, idx[i]))
    out.sort(key=lambda t: -t[0])
    return out[:top_k]


def test_detect_agrees_with_per_class_loop(xp, rng):
    B, P, K = 2, 150, 4
    priors = xyxy_to_cxcywh(random_boxes(rng, P))
    loc = rng.normal(scale=0.5, size=(B, P, 4))
    conf = rng.normal(scale=2.0, size=(B, P, K))
    results = detect(xp.asarray(loc), xp.asarray(conf), xp.asarray(priors), conf_threshold=0.2,
                     nms_threshold=0.45, top_k=25)
    for b, (boxes, labels, scores) in enumerate(results):
        centres = priors[:, :2] + loc[b, :, :2] * 0.1 * priors[:, 2:]   # decode by hand
        sizes = priors[:, 2:] * np.exp(loc[b, :, 2:] * 0.2)
        decoded = np.clip(cxcywh_to_xyxy(np.concatenate([centres, sizes], 1)), 0, 1)
        probs = np.exp(conf[b]) / np.exp(conf[b]).sum(1, keepdims=True)
        expected = naive_detect(decoded, probs, 0.2, 0.45, 25)
        assert len(expected) == 25
        np.testing.assert_allclose(scores, [s for s, _, _ in expected])
        assert labels.tolist() == [c for _, c, _ in expected]
        np.testing.assert_allclose(boxes, decoded[[i for _, _, i in expected]])
        assert (np.diff(scores) <= 0).all()


def test_detect_unclipped_keeps_boxes_past_the_border(xp):
    priors = xp.asarray([[.9, .5, .4, .4]])
    loc = xp.asarray([[[1.0, 0.0, 0.0, 0.0]]])
    boxes = detect(loc, xp.asarray([[[0.0, 5.0]]]), priors, clip_boxes=False)[0][0]
    np.testing.assert_allclose(boxes, [[.74, .3, 1.14, .7]], atol=1e-12)   # as ssd.pytorch: no clip


# (candidate scores, labels, k, kept indices by hand)
PER_CLASS_CASES = [
    ([.9, .1, .8, .7, .2], [1, 1, 1, 2, 2], 2, [0, 2, 3, 4]),       # class 1 loses its .1
    ([.9, .1, .8, .7, .2], [1, 1, 1, 2, 2], 1, [0, 3]),
    ([.5, .5, .5, .6], [3, 3, 3, 3], 2, [0, 3]),                    # equal scores: lower index
    ([.3, .2], [1, 2], 5, [0, 1]),
    ([], [], 3, []),
]


@pytest.mark.parametrize("scores, labels, k, expected", PER_CLASS_CASES)
def test_per_class_top_k_cases(xp, scores, labels, k, expected):
    kept = per_class_top_k(xp.asarray(scores, dtype=xp.float32), xp.asarray(labels, dtype=xp.int64), k)
    assert to_numpy(kept).tolist() == expected


@pytest.mark.parametrize("per_class, top_k", [(3, None), (3, 10), (None, None), (1, 25)])
def test_detect_per_class_top_k_agrees_with_loop(xp, rng, per_class, top_k):
    B, P, K = 2, 150, 4
    priors = xyxy_to_cxcywh(random_boxes(rng, P))
    loc = rng.normal(scale=0.5, size=(B, P, 4))
    conf = rng.normal(scale=2.0, size=(B, P, K))
    config = DetectConfig(conf_threshold=0.2, per_class_top_k=per_class, top_k=top_k, clip_boxes=False)
    for b, (boxes, labels, scores) in enumerate(detect(xp.asarray(loc), xp.asarray(conf),
                                                       xp.asarray(priors), config)):
        centres = priors[:, :2] + loc[b, :, :2] * 0.1 * priors[:, 2:]
        sizes = priors[:, 2:] * np.exp(loc[b, :, 2:] * 0.2)
        decoded = cxcywh_to_xyxy(np.concatenate([centres, sizes], 1))     # not clipped
        probs = np.exp(conf[b]) / np.exp(conf[b]).sum(1, keepdims=True)
        expected = naive_detect(decoded, probs, 0.2, 0.45, top_k, per_class)
        assert labels.tolist() == [c for _, c, _ in expected]
        np.testing.assert_allclose(scores, [s for s, _, _ in expected])
        np.testing.assert_allclose(boxes, decoded[[i for _, _, i in expected]])
        if per_class is not None:
            assert np.bincount(labels).max() <= per_class
        if top_k is None:                                 # no overall cap: more than the default's 25
            assert len(labels) == len(naive_detect(decoded, probs, 0.2, 0.45, None, per_class))


def test_detect_config_defaults_and_ssd_pytorch():
    assert DetectConfig() == DetectConfig(0.01, 0.45, 200, None, True)       # minissd, unchanged
    assert SSD_PYTORCH_DETECT == DetectConfig(0.01, 0.45, None, 200, False)  # Detect(21, 0, 200, .01, .45)
    with pytest.raises(dataclasses.FrozenInstanceError):                # shared presets stay put
        SSD_PYTORCH_DETECT.top_k = 200


# (field, bad value, message fragment)
BAD_DETECT = [
    ("conf_threshold", 1.5, "conf_threshold must be a number in"),
    ("nms_threshold", "0.45", "nms_threshold must be a number in"),
    ("top_k", 0, "top_k must be a positive int or None, got 0"),
    ("per_class_top_k", 2.5, "per_class_top_k must be a positive int"),
    ("clip_boxes", 1, "clip_boxes must be True or False"),
]


@pytest.mark.parametrize("field, value, message", BAD_DETECT)
def test_detect_config_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        DetectConfig(**{field: value})


def test_detect_unknown_option_is_named(xp):
    with pytest.raises(TypeError, match="conf_thresh"):
        detect(xp.zeros((1, 5, 4)), xp.zeros((1, 5, 3)), xp.zeros((5, 4)), conf_thresh=0.3)


def test_detect_nothing_found(xp):
    conf = xp.zeros((2, 5, 3))
    conf[:, :, 0] = 20.0                                   # all background
    for boxes, labels, scores in detect(xp.zeros((2, 5, 4)), conf, xp.full((5, 4), 0.5)):
        assert boxes.shape == (0, 4) and labels.shape == (0,) and scores.shape == (0,)


def test_bad_shapes(xp):
    with pytest.raises(ValueError, match="detect: expected"):
        detect(xp.zeros((1, 5, 4)), xp.zeros((1, 6, 3)), xp.zeros((5, 4)))
    with pytest.raises(ValueError, match="nms: expected"):
        nms(xp.zeros((3, 4)), xp.zeros(2), 0.5)
