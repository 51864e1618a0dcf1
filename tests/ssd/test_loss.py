"""MultiBoxLoss: values by hand, the mined negatives, gradients against finite differences."""
import math

import numpy as np
import pytest

from minissd.nn.backend import to_numpy
from minissd.nn.gradcheck import numerical_grad
from minissd.ssd.loss import MultiBoxLoss


def test_loss_by_hand(xp):
    # one image, 4 boxes, 2 classes (background + 1); box 0 positive, the other 3 negatives
    loc_t = xp.zeros((1, 4, 4))
    loc_p = xp.zeros((1, 4, 4))
    loc_p[0, 0] = xp.asarray([0.5, -2.0, 0.0, 0.0])       # smooth L1: 0.5 * 0.25 + (2 - 0.5) = 1.625
    loc_p[0, 1] = 5.0                                      # a negative: its offsets never count
    conf_p = xp.zeros((1, 4, 2))                           # every CE is log 2
    conf_t = xp.asarray([[1, 0, 0, 0]])
    for alpha in (1.0, 0.5):
        crit = MultiBoxLoss(neg_pos_ratio=3, alpha=alpha)
        loss = crit.forward(loc_p, conf_p, loc_t, conf_t)  # N = 1: 3 negatives mined, all of them
        assert crit.loss_loc == pytest.approx(1.625)
        assert crit.loss_conf == pytest.approx(4 * math.log(2))
        assert loss == pytest.approx(4 * math.log(2) + alpha * 1.625)
        assert isinstance(loss, float)


def test_mined_negatives_exactly(xp):
    # 3 classes; background logit v, others 0: CE of a negative = log(e^v + 2) - v, larger for
    # smaller v. So the hardest negatives are the ones with the lowest v.
    v = np.array([[9, 0, -3, 5, 1, -1, 2, -2, 3, 4],       # image 0: 1 positive (box 0)
                  [9, 9, 9, 0, 1, 2, 3, 4, 5, 6],          # image 1: 3 positives: 9 > 7 negatives
                  [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]], float)  # image 2: no positives
    conf_p = np.zeros((3, 10, 3))
    conf_p[:, :, 0] = v
    conf_t = np.zeros((3, 10), dtype=np.int64)
    conf_t[0, 0] = 1
    conf_t[1, :3] = 2
    crit = MultiBoxLoss(neg_pos_ratio=3)
    crit.forward(xp.zeros((3, 10, 4)), xp.asarray(conf_p), xp.zeros((3, 10, 4)), xp.asarray(conf_t))
    neg = to_numpy(crit.negative)
    assert neg.sum(axis=1).tolist() == [3, 7, 0]
    assert np.flatnonzero(neg[0]).tolist() == [2, 5, 7]    # v = -3, -1, -2: the three hardest
    assert np.flatnonzero(neg[1]).tolist() == list(range(3, 10))   # clamped: every negative
    assert not (neg & to_numpy(crit.positive)).any() and crit.num_pos == 4
    ce = np.log(np.exp(v) + 2) - v
    positives = 4 * np.log(np.exp(9) + 2)                  # logits (9, 0, 0), target 1 or 2
    assert crit.loss_conf == pytest.approx((positives + ce[0, [2, 5, 7]].sum() + ce[1, 3:].sum()) / 4)


def naive_mining(ce, positive, ratio):
    """Per image: sort the negatives by CE (descending), keep the first ratio * positives."""
    neg = np.zeros_like(positive)
    for i in range(ce.shape[0]):
        idx = np.flatnonzero(~positive[i])
        idx = idx[np.argsort(-ce[i, idx], kind="stable")]
        neg[i, idx[:ratio * positive[i].sum()]] = True
    return neg


def test_vectorised_mining_agrees_with_loop(xp, rng):
    ce = rng.exponential(size=(4, 300))
    positive = rng.random((4, 300)) < np.array([[0.01], [0.2], [0.0], [0.5]])
    got = MultiBoxLoss(neg_pos_ratio=3).mine(xp.asarray(ce), xp.asarray(positive))
    np.testing.assert_array_equal(to_numpy(got), naive_mining(ce, positive, 3))


def make_batch(rng, B=2, P=12, K=4):
    """float64 predictions whose mining is stable and whose loc errors stay away from |d| = 1."""
    conf_t = np.zeros((B, P), dtype=np.int64)
    conf_t[0, [1, 5]] = [2, 3]
    conf_t[1, [0]] = [1]                                      # N = 3; quotas 6 and 3 of 10 and 11
    loc_t = rng.normal(size=(B, P, 4))
    mag = np.where(rng.random((B, P, 4)) < 0.5, rng.uniform(0.1, 0.9, (B, P, 4)),
                   rng.uniform(1.1, 2.0, (B, P, 4)))
    loc_p = loc_t + mag * rng.choice([-1.0, 1.0], size=(B, P, 4))   # both sides of smooth L1's kink
    conf_p = rng.normal(size=(B, P, K)) * 2
    return loc_p, conf_p, loc_t, conf_t


def assert_gradients(crit, loc_p, conf_p, loc_t, conf_t, dloss):
    """crit's backward(dloss) against finite differences of dloss * forward -> (dloc, dconf, mined)."""
    crit.forward(loc_p, conf_p, loc_t, conf_t)
    dloc, dconf = crit.backward(dloss)
    mined = to_numpy(crit.negative).copy()

    def f():
        value = crit.forward(loc_p, conf_p, loc_t, conf_t) * dloss
        # finite differences must not change which negatives are mined
        np.testing.assert_array_equal(to_numpy(crit.negative), mined)
        return value

    for x, analytic in ((loc_p, dloc), (conf_p, dconf)):
        numeric = numerical_grad(f, x, eps=1e-6)
        np.testing.assert_allclose(to_numpy(analytic), numeric, atol=1e-7, rtol=1e-5)
    return dloc, dconf, mined


def test_gradients_against_finite_differences(xp, rng):
    loc_p, conf_p, loc_t, conf_t = (xp.asarray(a) for a in make_batch(rng))
    crit = MultiBoxLoss(neg_pos_ratio=3, alpha=0.7)
    dloss = float(rng.normal())                               # random upstream gradient
    dloc, dconf, mined = assert_gradients(crit, loc_p, conf_p, loc_t, conf_t, dloss)
    assert 0 < mined.sum() < (~to_numpy(crit.positive)).sum()  # some negatives left out
    assert dloc.dtype == np.float64 and dconf.dtype == np.float64
    assert float(xp.abs(dconf).sum()) > 0 and float(xp.abs(dloc).sum()) > 0


def test_no_positives_gives_zero_loss_and_grads(xp, rng):
    B, P, K = 2, 50, 3
    crit = MultiBoxLoss()
    loss = crit.forward(xp.asarray(rng.normal(size=(B, P, 4))), xp.asarray(rng.normal(size=(B, P, K))),
                        xp.zeros((B, P, 4)), xp.zeros((B, P), dtype=xp.int64))
    assert math.isfinite(loss) and loss == 0.0
    dloc, dconf = crit.backward()
    assert float(xp.abs(dloc).max()) == 0.0 and float(xp.abs(dconf).max()) == 0.0


def test_float32_follows_input_and_matches_float64(xp, rng):
    arrays = make_batch(rng, B=3, P=40, K=6)
    crit = MultiBoxLoss()
    l64 = crit.forward(*(xp.asarray(a) for a in arrays))
    g64 = crit.backward()
    l32 = crit.forward(*(xp.asarray(a.astype(np.float32) if a.dtype == np.float64 else a) for a in arrays))
    g32 = crit.backward()
    assert l32 == pytest.approx(l64, rel=1e-5)
    for a, b in zip(g32, g64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-6)


def test_huge_logits_stay_finite(xp):
    conf_p = xp.asarray([[[1e4, -1e4], [-1e4, 1e4]]], dtype=xp.float32)   # both boxes badly wrong
    crit = MultiBoxLoss()
    loss = crit.forward(xp.zeros((1, 2, 4), xp.float32), conf_p, xp.zeros((1, 2, 4), xp.float32),
                        xp.asarray([[1, 0]]))
    assert loss == pytest.approx(4e4, rel=1e-6)               # 2e4 per box, N = 1
    assert all(bool(xp.isfinite(g).all()) for g in crit.backward())


# (loc_pred shape, conf_pred shape, loc_targets shape, conf_targets, message)
BAD = [
    ((2, 5, 3), (2, 5, 3), (2, 5, 3), np.zeros((2, 5)), r"loc_pred must be \(B, P, 4\)"),
    ((2, 5, 4), (2, 6, 3), (2, 5, 4), np.zeros((2, 5)), r"conf_pred must be \(2, 5, C\+1\)"),
    ((2, 5, 4), (2, 5, 3), (2, 4, 4), np.zeros((2, 5)), "loc_targets has shape"),
    ((2, 5, 4), (2, 5, 3), (2, 5, 4), np.zeros((5,)), "conf_targets has shape"),
    ((2, 5, 4), (2, 5, 3), (2, 5, 4), np.full((2, 5), 3), r"conf_targets must be in -1..2"),
    ((2, 5, 4), (2, 5, 3), (2, 5, 4), np.full((2, 5), -2),
     r"conf_targets must be in -1..2 \(0 = background, -1 = ignored\)"),
]


@pytest.mark.parametrize("lp, cp, lt, ct, message", BAD)
def test_bad_inputs(xp, lp, cp, lt, ct, message):
    with pytest.raises(ValueError, match=message):
        MultiBoxLoss().forward(xp.zeros(lp), xp.zeros(cp), xp.zeros(lt), xp.asarray(ct, dtype=xp.int64))


def test_backward_before_forward():
    with pytest.raises(RuntimeError, match="before forward"):
        MultiBoxLoss().backward()


# --------------------------------------------------------------------------- #
# The focal loss (focal_gamma > 0): every box, weighted by (1 - p_t)^gamma, no mining
# --------------------------------------------------------------------------- #
def test_focal_loss_by_hand(xp):
    # 2 classes, logits 0: p_t = 1/2 for every box, CE log 2, weight (1/2)^gamma
    conf_p = xp.zeros((1, 5, 2))
    conf_t = xp.asarray([[1, 0, 0, 0, 0]])                     # N = 1, 4 negatives, all counted
    for gamma in (1.0, 2.0):
        crit = MultiBoxLoss(focal_gamma=gamma)
        crit.forward(xp.zeros((1, 5, 4)), conf_p, xp.zeros((1, 5, 4)), conf_t)
        assert crit.loss_conf == pytest.approx(5 * 0.5 ** gamma * math.log(2))
        assert to_numpy(crit.negative).sum() == 4
    # a sure box (p_t -> 1) weighs nothing, a wrong one almost its full CE
    conf_p = xp.asarray([[[9.0, -9.0], [-3.0, 3.0]]])            # both target background
    crit = MultiBoxLoss(focal_gamma=2.0)
    crit.forward(xp.zeros((1, 2, 4)), conf_p, xp.zeros((1, 2, 4)), xp.asarray([[0, 0]]))
    ce = np.log1p(np.exp([-18.0, 6.0])) - np.array([0.0, 0.0])  # log(1 + e^(other - target))
    p_t = np.exp(-ce)
    assert crit.loss_conf == pytest.approx(((1 - p_t) ** 2 * ce).sum(), rel=1e-12)
    assert (1 - p_t[0]) ** 2 * ce[0] < 1e-20 < 0.9 * ce[1] < (1 - p_t[1]) ** 2 * ce[1]


def test_focal_loss_tends_to_cross_entropy_over_every_box(xp, rng):
    """gamma -> 0: the weights -> 1, so the loss is the plain CE summed over all boxes / N."""
    loc_p, conf_p, loc_t, conf_t = make_batch(rng)
    crit = MultiBoxLoss(focal_gamma=1e-9)
    crit.forward(*(xp.asarray(a) for a in (loc_p, conf_p, loc_t, conf_t)))
    log_p = conf_p - np.log(np.exp(conf_p).sum(axis=2, keepdims=True))
    ce = -np.take_along_axis(log_p, conf_t[:, :, None], axis=2)[:, :, 0]
    assert crit.loss_conf == pytest.approx(ce.sum() / 3, rel=1e-7)   # N = 3


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_focal_gradients_against_finite_differences(xp, rng, gamma):
    loc_p, conf_p, loc_t, conf_t = (xp.asarray(a) for a in make_batch(rng))
    crit = MultiBoxLoss(alpha=0.7, focal_gamma=gamma)
    dloss = float(rng.normal())                               # random upstream gradient
    crit.forward(loc_p, conf_p, loc_t, conf_t)
    dloc, dconf = crit.backward(dloss)
    f = lambda: crit.forward(loc_p, conf_p, loc_t, conf_t) * dloss
    for x, analytic in ((loc_p, dloc), (conf_p, dconf)):
        numeric = numerical_grad(f, x, eps=1e-6)
        np.testing.assert_allclose(to_numpy(analytic), numeric, atol=1e-7, rtol=1e-5)
    assert dconf.dtype == np.float64 and float(xp.abs(dconf).sum()) > 0


def test_focal_huge_logits_stay_finite(xp):
    # a sure box (CE = 0, 1 - p_t = 0: gamma - 1 < 0 would divide by zero) and a badly wrong one
    conf_p = xp.asarray([[[1e4, -1e4], [-1e4, 1e4]]], dtype=xp.float32)
    for gamma in (0.5, 2.0):
        crit = MultiBoxLoss(focal_gamma=gamma)
        loss = crit.forward(xp.zeros((1, 2, 4), xp.float32), conf_p, xp.zeros((1, 2, 4), xp.float32),
                            xp.asarray([[0, 0]]))
        dloc, dconf = crit.backward()
        assert math.isfinite(loss) and loss == pytest.approx(2e4, rel=1e-6)   # the wrong box's CE
        assert bool(xp.isfinite(dconf).all())
        np.testing.assert_array_equal(to_numpy(dconf)[0, 0], [0, 0])          # the sure box


def test_focal_without_positives_counts_the_background_over_one(xp):
    """N = 0: divided by max(N, 1) = 1, the background boxes' focal terms, finite (no 0 / 0)."""
    conf_p = xp.zeros((1, 3, 2))                              # p_t = 1/2: each term (1/2)^2 log 2
    crit = MultiBoxLoss(focal_gamma=2.0)
    loss = crit.forward(xp.zeros((1, 3, 4)), conf_p, xp.zeros((1, 3, 4)), xp.zeros((1, 3), dtype=xp.int64))
    assert loss == pytest.approx(3 * 0.25 * math.log(2)) and crit.loss_loc == 0.0
    _, dconf = crit.backward()
    assert bool(xp.isfinite(dconf).all()) and float(xp.abs(dconf).sum()) > 0


def test_focal_gamma_must_not_be_negative():
    with pytest.raises(ValueError, match="focal_gamma must be >= 0"):
        MultiBoxLoss(focal_gamma=-1)


def test_ignored_boxes_count_nowhere(xp):
    # 1 image, 8 boxes, 2 classes: box 0 positive; boxes 1, 2 ignored (-1) with the highest
    # cross-entropies of all; boxes 3..7 negatives. Mining keeps 3 of the negatives, never an
    # ignored box; the ignored boxes' offsets and logits get no gradient.
    v = np.array([9, -5, -4, -3, 2, -1, 1, 0], float)          # background logit; class 1 logit 0
    conf_p = np.zeros((1, 8, 2))
    conf_p[0, :, 0] = v
    loc_p = np.ones((1, 8, 4)) * 0.5
    conf_t = np.array([[1, -1, -1, 0, 0, 0, 0, 0]])
    crit = MultiBoxLoss(neg_pos_ratio=3)
    crit.forward(xp.asarray(loc_p), xp.asarray(conf_p), xp.zeros((1, 8, 4)), xp.asarray(conf_t))
    assert np.flatnonzero(to_numpy(crit.negative)[0]).tolist() == [3, 5, 7]   # v = -3, -1, 0
    ce = np.log(np.exp(v) + 1) - v                             # a negative's CE
    assert crit.loss_conf == pytest.approx(np.log(np.exp(9) + 1) + ce[[3, 5, 7]].sum())
    assert crit.loss_loc == pytest.approx(4 * 0.125)           # the positive only
    dloc, dconf = (to_numpy(g) for g in crit.backward())
    assert not dloc[0, 1:].any() and not dconf[0, [1, 2, 4, 6]].any() and dconf[0, [0, 3, 5, 7]].all()
    # the quota is at most the negatives left: 2 positives, 3 negatives, 3 ignored -> 3 mined
    conf_t = np.array([[1, 1, -1, -1, -1, 0, 0, 0]])
    crit.forward(xp.asarray(loc_p), xp.asarray(conf_p), xp.zeros((1, 8, 4)), xp.asarray(conf_t))
    assert np.flatnonzero(to_numpy(crit.negative)[0]).tolist() == [5, 6, 7]
    # with the focal loss the ignored boxes are left out of the sum over every box
    focal = MultiBoxLoss(focal_gamma=2.0)
    conf_t = np.array([[1, -1, -1, 0, 0, 0, 0, 0]])
    with_band = focal.forward(xp.asarray(loc_p), xp.asarray(conf_p), xp.zeros((1, 8, 4)),
                              xp.asarray(conf_t))
    _, dconf = (to_numpy(g) for g in focal.backward())
    assert not dconf[0, [1, 2]].any() and dconf[0, 3:].all()
    keep = [0, 3, 4, 5, 6, 7]
    without = focal.forward(xp.asarray(loc_p[:, keep]), xp.asarray(conf_p[:, keep]),
                            xp.zeros((1, 6, 4)), xp.asarray(conf_t[:, keep]))
    assert with_band == pytest.approx(without, rel=1e-12)


def test_gradients_with_ignored_boxes_against_finite_differences(xp, rng):
    loc_p, conf_p, loc_t, conf_t = make_batch(rng, P=16)
    conf_t[0, [2, 3, 9]] = -1
    conf_t[1, [4, 12]] = -1
    loc_p, conf_p, loc_t, conf_t = (xp.asarray(a) for a in (loc_p, conf_p, loc_t, conf_t))
    for crit in (MultiBoxLoss(neg_pos_ratio=3, alpha=0.7), MultiBoxLoss(focal_gamma=2.0)):
        dloss = float(rng.normal())                           # random upstream gradient
        _, dconf, mined = assert_gradients(crit, loc_p, conf_p, loc_t, conf_t, dloss)
        assert not (mined & (to_numpy(conf_t) < 0)).any()
        assert not to_numpy(dconf)[to_numpy(conf_t) < 0].any()
