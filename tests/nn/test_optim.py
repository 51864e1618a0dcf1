"""SGD and AdamW (PyTorch's updates) and the warm-up + multi-step learning-rate schedule."""
import math

import numpy as np
import pytest

from minissd.nn.backend import to_numpy
from minissd.nn.module import Module, load_npz, save_npz
from minissd.nn.optim import (SGD, AdamW, WarmupCosine, WarmupMultiStep, WeightAverage,
                               default_warmup_steps, warmup_scale)


class Params(Module):
    """Two parameters and their gradients, nothing else."""

    def __init__(self, xp, w, b, dtype="float64"):
        super().__init__()
        self.params["w"] = xp.asarray(w, dtype=getattr(xp, dtype))
        self.params["b"] = xp.asarray(b, dtype=getattr(xp, dtype))
        self.grads["w"] = xp.zeros_like(self.params["w"])
        self.grads["b"] = xp.zeros_like(self.params["b"])

    def set_grads(self, xp, gw, gb):
        self.grads["w"] = xp.asarray(gw, dtype=self.params["w"].dtype)
        self.grads["b"] = xp.asarray(gb, dtype=self.params["b"].dtype)


GRADS = [([0.5, -1.0], [2.0]), ([0.25, 0.0], [-1.0]), ([-0.5, 1.5], [0.5])]


def test_sgd_matches_a_hand_computation(xp):
    # lr 0.1, momentum 0.9, weight decay 0.01, w = [1, -2], gradients GRADS[0..2]
    model = Params(xp, [1.0, -2.0], [0.5])
    opt = SGD(model, lr=0.1, momentum=0.9, weight_decay=0.01)
    # step 1: g = [0.5 + 0.01, -1 - 0.02] = [0.51, -1.02]; buf = g; w = [0.949, -1.898]
    # step 2: g = [0.25 + 0.00949, 0 - 0.01898] = [0.25949, -0.01898]
    #         buf = 0.9 * [0.51, -1.02] + g = [0.71849, -0.93698]; w = [0.877151, -1.804302]
    # step 3: g = [-0.5 + 0.00877151, 1.5 - 0.01804302] = [-0.49122849, 1.48195698]
    #         buf = 0.9 * [0.71849, -0.93698] + g = [0.155412510, 0.638674980]
    #         w = [0.861609749, -1.868169498]
    want_w = [[0.949, -1.898], [0.877151, -1.804302], [0.861609749, -1.868169498]]
    for (gw, gb), w in zip(GRADS, want_w):
        model.set_grads(xp, gw, gb)
        opt.step()
        np.testing.assert_allclose(to_numpy(model.params["w"]), w, rtol=1e-9)
    assert opt.steps == 3


def test_sgd_without_momentum_is_plain_gradient_descent(xp):
    model = Params(xp, [1.0, -2.0], [0.5])
    opt = SGD(model, lr=0.5, momentum=0.0, weight_decay=0.0)
    model.set_grads(xp, [1.0, 2.0], [4.0])
    opt.step()
    np.testing.assert_allclose(to_numpy(model.params["w"]), [0.5, -3.0])
    np.testing.assert_allclose(to_numpy(model.params["b"]), [-1.5])
    assert opt.buffers == {}


def step_beside_torch(xp, rng, torch, model, opt, tw, tb, topt, steps):
    """``steps`` steps of ``opt`` on ``model`` and of torch's ``topt`` on the same float64
    start ``tw``, ``tb``, with the same random gradients; then the weights must agree to
    rounding (float64, so 1e-12)."""
    for _ in range(steps):
        gw, gb = rng.standard_normal(tw.shape), rng.standard_normal(tb.shape)
        model.set_grads(xp, gw, gb)
        opt.step()
        tw.grad, tb.grad = torch.tensor(gw), torch.tensor(gb)
        topt.step()
    np.testing.assert_allclose(to_numpy(model.params["w"]), tw.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(model.params["b"]), tb.detach().numpy(), rtol=1e-12)


# (lr, momentum, weight_decay, nesterov)
TORCH_CASES = [
    (0.1, 0.9, 5e-4, False),
    (0.01, 0.9, 0.0, True),
    (0.05, 0.0, 1e-2, False),
    (1e-3, 0.5, 5e-4, True),
]


@pytest.mark.parametrize("lr, momentum, weight_decay, nesterov", TORCH_CASES)
def test_sgd_matches_torch(xp, rng, lr, momentum, weight_decay, nesterov):
    torch = pytest.importorskip("torch")
    w0, b0 = rng.standard_normal(4), rng.standard_normal(2)
    model = Params(xp, w0, b0)
    opt = SGD(model, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    tw, tb = torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    topt = torch.optim.SGD([tw, tb], lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=nesterov)
    step_beside_torch(xp, rng, torch, model, opt, tw, tb, topt, steps=4)


def test_sgd_keeps_float32_float32(xp):
    model = Params(xp, [1.0, 2.0], [0.0], dtype="float32")
    opt = SGD(model, lr=0.1)
    opt.lr = np.float64(0.05)                         # e.g. a schedule computed with NumPy
    model.set_grads(xp, [1.0, 1.0], [1.0])
    opt.step()
    opt.step()
    assert model.params["w"].dtype == xp.float32 and model.params["b"].dtype == xp.float32
    assert all(buf.dtype == xp.float32 for buf in opt.buffers.values())


def test_sgd_state_dict_round_trip_gives_identical_steps(xp, rng, tmp_path):
    w0, b0 = rng.standard_normal(4), rng.standard_normal(2)
    grads = [(rng.standard_normal(4), rng.standard_normal(2)) for _ in range(4)]
    a = Params(xp, w0, b0)
    opt_a = SGD(a, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    for gw, gb in grads[:2]:
        a.set_grads(xp, gw, gb)
        opt_a.step()
    arrays, meta = opt_a.state_dict()
    save_npz(tmp_path / "opt.npz", arrays)            # through a file, as a checkpoint does

    b = Params(xp, to_numpy(a.params["w"]), to_numpy(a.params["b"]))
    opt_b = SGD(b, lr=0.5, momentum=0.0, weight_decay=0.0)   # replaced by the loaded state
    opt_b.load_state_dict(load_npz(tmp_path / "opt.npz"), meta)
    assert (opt_b.lr, opt_b.momentum, opt_b.nesterov, opt_b.steps) == (0.1, 0.9, True, 2)
    for gw, gb in grads[2:]:
        for model, opt in ((a, opt_a), (b, opt_b)):
            model.set_grads(xp, gw, gb)
            opt.step()
        for key in ("w", "b"):
            np.testing.assert_array_equal(to_numpy(b.params[key]), to_numpy(a.params[key]))


def test_sgd_state_dict_errors_name_the_parameter(xp):
    opt = SGD(Params(xp, [1.0, 2.0], [0.0]))
    meta = {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False, "steps": 1}
    with pytest.raises(KeyError, match="'c'"):
        opt.load_state_dict({"momentum.c": np.zeros(2)}, meta)
    with pytest.raises(ValueError, match=r"'w' has shape \(3,\), the parameter \(2,\)"):
        opt.load_state_dict({"momentum.w": np.zeros(3)}, meta)
    with pytest.raises(ValueError, match="no optimiser state .*exported model"):
        opt.load_state_dict({}, None)                      # an exported model's record


@pytest.mark.parametrize("kwargs", [dict(lr=-1.0), dict(momentum=-0.1), dict(weight_decay=-1e-4)])
def test_sgd_rejects_negative_hyperparameters(xp, kwargs):
    with pytest.raises(ValueError, match="must be >= 0"):
        SGD(Params(xp, [1.0], [0.0]), **kwargs)


def test_sgd_names_a_gradient_of_the_wrong_shape(xp):
    model = Params(xp, [1.0, 2.0], [0.0])
    model.grads["w"] = xp.zeros(3)
    with pytest.raises(ValueError, match="gradient of w has shape"):
        SGD(model).step()


# --------------------------------------------------------------------------- #
# AdamW
# --------------------------------------------------------------------------- #
def adamw_by_hand(w, grads, lr, beta1, beta2, eps, weight_decay):
    """AdamW on a list of floats, written out with Python's math: the oracle."""
    w, m, v = list(w), [0.0] * len(w), [0.0] * len(w)
    for t, g in enumerate(grads, start=1):
        for i, gi in enumerate(g):
            m[i] = beta1 * m[i] + (1 - beta1) * gi
            v[i] = beta2 * v[i] + (1 - beta2) * gi * gi
            step = (m[i] / (1 - beta1 ** t)) / (math.sqrt(v[i] / (1 - beta2 ** t)) + eps)
            w[i] = w[i] - lr * step - lr * weight_decay * w[i]
    return w


def test_adamw_matches_a_hand_computation_and_spares_1d_parameters(xp):
    # w is 2-d (a conv weight's kind): decayed; b is 1-d (a bias): not decayed
    model = Params(xp, [[1.0, -2.0]], [0.5])
    opt = AdamW(model, lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
    grads = [((gw,), gb) for gw, gb in GRADS]
    for i, ((gw,), gb) in enumerate(grads, start=1):
        model.set_grads(xp, [gw], gb)
        opt.step()
        want_w = adamw_by_hand([1.0, -2.0], [g[0][0] for g in grads[:i]], 0.1, 0.9, 0.999, 1e-8,
                               0.05)
        want_b = adamw_by_hand([0.5], [g[1] for g in grads[:i]], 0.1, 0.9, 0.999, 1e-8, 0.0)
        np.testing.assert_allclose(to_numpy(model.params["w"])[0], want_w, rtol=1e-12)
        np.testing.assert_allclose(to_numpy(model.params["b"]), want_b, rtol=1e-12)
    assert opt.steps == 3


def test_adamw_first_step_is_lr_times_the_sign_of_the_gradient(xp):
    model = Params(xp, [[1.0, -2.0, 3.0]], [0.5, 0.0])
    opt = AdamW(model, lr=0.01, weight_decay=0.0)
    model.set_grads(xp, [[1e-3, -50.0, 0.0]], [2.0, -2.0])
    opt.step()
    # m / c1 = g and sqrt(v / c2) = |g|: a step of lr * g / (|g| + eps), whatever g's scale
    eps = 1e-8
    want_w = [1.0 - 0.01 * 1e-3 / (1e-3 + eps), -2.0 + 0.01 * 50 / (50 + eps), 3.0]   # g = 0: none
    want_b = [0.5 - 0.01 * 2 / (2 + eps), 0.01 * 2 / (2 + eps)]
    np.testing.assert_allclose(to_numpy(model.params["w"]), [want_w], rtol=1e-12)
    np.testing.assert_allclose(to_numpy(model.params["b"]), want_b, rtol=1e-12)


@pytest.mark.parametrize("lr, betas, weight_decay", [(1e-3, (0.9, 0.999), 0.05),
                                                     (0.1, (0.5, 0.9), 0.0),
                                                     (0.02, (0.0, 0.99), 1e-2)])
def test_adamw_matches_torch(xp, rng, lr, betas, weight_decay):
    torch = pytest.importorskip("torch")
    w0, b0 = rng.standard_normal((3, 2)), rng.standard_normal(2)
    model = Params(xp, w0, b0)
    opt = AdamW(model, lr=lr, betas=betas, weight_decay=weight_decay)
    tw, tb = torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    topt = torch.optim.AdamW([{"params": [tw], "weight_decay": weight_decay},
                              {"params": [tb], "weight_decay": 0.0}], lr=lr, betas=betas, eps=1e-8)
    # float64: the two differ only in rounding (torch divides sqrt(v) by sqrt(c2))
    step_beside_torch(xp, rng, torch, model, opt, tw, tb, topt, steps=5)


def test_adamw_keeps_float32_float32(xp):
    model = Params(xp, [[1.0, 2.0]], [0.0], dtype="float32")
    opt = AdamW(model, lr=0.1)
    opt.lr = np.float64(0.05)
    model.set_grads(xp, [[1.0, -1.0]], [1.0])
    opt.step()
    opt.step()
    assert model.params["w"].dtype == xp.float32 and model.params["b"].dtype == xp.float32
    assert all(a.dtype == xp.float32 for _, _, a in opt.named_buffers())
    assert [(kind, name) for kind, name, _ in opt.named_buffers()] == [
        ("first moment (exp_avg)", "w"), ("first moment (exp_avg)", "b"),
        ("second moment (exp_avg_sq)", "w"), ("second moment (exp_avg_sq)", "b")]


def test_adamw_state_dict_round_trip_gives_identical_steps(xp, rng, tmp_path):
    w0, b0 = rng.standard_normal((2, 2)), rng.standard_normal(2)
    grads = [(rng.standard_normal((2, 2)), rng.standard_normal(2)) for _ in range(4)]
    a = Params(xp, w0, b0)
    opt_a = AdamW(a, lr=0.1, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    for gw, gb in grads[:2]:
        a.set_grads(xp, gw, gb)
        opt_a.step()
    arrays, meta = opt_a.state_dict()
    save_npz(tmp_path / "opt.npz", arrays)
    b = Params(xp, to_numpy(a.params["w"]), to_numpy(a.params["b"]))
    opt_b = AdamW(b, lr=0.5, weight_decay=0.0)                # replaced by the loaded state
    opt_b.load_state_dict(load_npz(tmp_path / "opt.npz"), meta)
    assert (opt_b.lr, opt_b.betas, opt_b.eps, opt_b.weight_decay, opt_b.steps) == \
        (0.1, (0.8, 0.99), 1e-6, 0.1, 2)
    for gw, gb in grads[2:]:           # the bias corrections go on from step 3, not from 1
        for model, opt in ((a, opt_a), (b, opt_b)):
            model.set_grads(xp, gw, gb)
            opt.step()
        for key in ("w", "b"):
            np.testing.assert_array_equal(to_numpy(b.params[key]), to_numpy(a.params[key]))


def test_adamw_and_sgd_refuse_each_others_state_and_name_bad_arrays(xp):
    model = Params(xp, [1.0, 2.0], [0.0])
    sgd_arrays, sgd_meta = SGD(model).state_dict()
    with pytest.raises(ValueError, match="holds sgd's state, not AdamW's"):
        AdamW(model).load_state_dict(sgd_arrays, sgd_meta)
    with pytest.raises(ValueError, match="holds sgd's state, not AdamW's"):
        AdamW(model).load_state_dict({}, {"lr": 0.1, "momentum": 0.9})     # an old SGD record
    adamw_arrays, adamw_meta = AdamW(model).state_dict()
    with pytest.raises(ValueError, match="holds adamw's state, not SGD's"):
        SGD(model).load_state_dict(adamw_arrays, adamw_meta)
    meta = dict(adamw_meta)
    with pytest.raises(KeyError, match="exp_avg for unknown parameter 'c'"):
        AdamW(model).load_state_dict({"exp_avg.c": np.zeros(2)}, meta)
    with pytest.raises(ValueError, match=r"exp_avg_sq 'w' has shape \(3,\), the parameter \(2,\)"):
        AdamW(model).load_state_dict({"exp_avg_sq.w": np.zeros(3)}, meta)
    with pytest.raises(KeyError, match="exp_avg and exp_avg_sq differ on w"):
        AdamW(model).load_state_dict({"exp_avg.w": np.zeros(2)}, meta)
    with pytest.raises(ValueError, match="no optimiser state .*exported model"):
        AdamW(model).load_state_dict({}, None)


@pytest.mark.parametrize("kwargs", [dict(lr=-1.0), dict(weight_decay=-1e-4), dict(eps=0.0),
                                    dict(betas=(1.0, 0.999)), dict(betas=(0.9, -0.1))])
def test_adamw_rejects_bad_hyperparameters(xp, kwargs):
    with pytest.raises(ValueError, match="AdamW: lr and weight_decay must be >= 0"):
        AdamW(Params(xp, [1.0], [0.0]), **kwargs)


def test_adamw_names_a_gradient_of_the_wrong_shape(xp):
    model = Params(xp, [1.0, 2.0], [0.0])
    model.grads["w"] = xp.zeros(3)
    with pytest.raises(ValueError, match="AdamW: gradient of w has shape"):
        AdamW(model).step()


# --------------------------------------------------------------------------- #
# WarmupMultiStep: base 1e-3, warm-up 10 steps from 1/3, x0.1 at 100 and 150
# --------------------------------------------------------------------------- #
SCHEDULE = WarmupMultiStep(1e-3, milestones=(100, 150), gamma=0.1, warmup_steps=10)

# (step, expected lr)
SCHEDULE_VALUES = [
    (0, 1e-3 / 3),                      # warm-up starts at warmup_factor * base
    (5, 1e-3 * (1 / 3 * 0.5 + 0.5)),    # half way: linear
    (9, 1e-3 * (1 / 3 * 0.1 + 0.9)),
    (10, 1e-3),                         # warm-up over
    (99, 1e-3),
    (100, 1e-4),                        # first milestone
    (149, 1e-4),
    (150, 1e-5),                        # second milestone
    (10_000, 1e-5),
]


@pytest.mark.parametrize("step, lr", SCHEDULE_VALUES)
def test_warmup_multistep_values(step, lr):
    assert SCHEDULE(step) == pytest.approx(lr, rel=1e-12)


def test_warmup_multistep_without_warmup():
    s = WarmupMultiStep(0.01, milestones=(3,))
    assert [s(i) for i in range(5)] == pytest.approx([0.01, 0.01, 0.01, 0.001, 0.001])


# (total steps, expected warm-up, expected milestones): SSD's 80k/120k and 100k/120k
SCALED = [
    (120_000, 500, (80_000, 100_000)),  # ssd.pytorch's own schedule, warm-up capped at 500
    (1_200, 60, (800, 1_000)),          # warm-up = 5% of a short run
    (30, 1, (20, 25)),
    (10, 1, (6, 8)),
]


@pytest.mark.parametrize("total, warmup, milestones", SCALED)
def test_warmup_multistep_scaled(total, warmup, milestones):
    s = WarmupMultiStep.scaled(1e-3, total)
    assert (s.warmup_steps, s.milestones, s.gamma, s.base_lr) == (warmup, milestones, 0.1, 1e-3)
    assert s(milestones[0] - 1) == pytest.approx(1e-3)
    assert s(milestones[1]) == pytest.approx(1e-5)


def test_warmup_multistep_rejects_decreasing_milestones():
    with pytest.raises(ValueError, match=r"milestones must increase, got \(10, 5\)"):
        WarmupMultiStep(1e-3, milestones=(10, 5))


# --------------------------------------------------------------------------- #
# WarmupCosine: base 1e-3, warm-up 10 steps from 1/3, then half a cosine to 0 at step 110
# --------------------------------------------------------------------------- #
COSINE = WarmupCosine(1e-3, total_steps=110, warmup_steps=10)

# (step, expected lr): the warm-up is WarmupMultiStep's; after it, cos over 100 steps
COSINE_VALUES = [
    (0, 1e-3 / 3),
    (5, 1e-3 * (1 / 3 * 0.5 + 0.5)),
    (10, 1e-3),                                  # cos(0) = 1
    (35, 1e-3 * (1 + 2 ** -0.5) / 2),            # a quarter of the way: cos(pi/4)
    (60, 1e-3 / 2),                              # half-way: cos(pi/2) = 0
    (85, 1e-3 * (1 - 2 ** -0.5) / 2),            # cos(3pi/4)
    (110, 0.0),                                  # the end: cos(pi) = -1
    (500, 0.0),                                  # past the end it stays at 0
]


@pytest.mark.parametrize("step, lr", COSINE_VALUES)
def test_warmup_cosine_values(step, lr):
    assert COSINE(step) == pytest.approx(lr, rel=1e-12, abs=1e-18)


def test_warmup_cosine_falls_monotonically_after_the_warm_up():
    lrs = [COSINE(i) for i in range(10, 111)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


@pytest.mark.parametrize("total, warmup", [(120_000, 500), (1_200, 60), (30, 1), (1, 0)])
def test_warmup_cosine_scaled_has_the_multistep_warm_up(total, warmup):
    s = WarmupCosine.scaled(1e-3, total)
    assert (s.base_lr, s.total_steps, s.warmup_steps) == (1e-3, total, warmup)


def test_warmup_cosine_rejects_a_warm_up_as_long_as_the_run():
    with pytest.raises(ValueError, match=r"warmup_steps must be in \[0, total_steps\), got 10 of 10"):
        WarmupCosine(1e-3, total_steps=10, warmup_steps=10)


@pytest.mark.parametrize("step, scale", [(0, 0.25), (2, 0.625), (3, 0.8125), (4, 1.0), (9, 1.0)])
def test_warmup_scale_is_linear_from_the_factor_to_one(step, scale):
    assert warmup_scale(step, warmup_steps=4, warmup_factor=0.25) == scale   # exact in binary


@pytest.mark.parametrize("total, warmup", [(0, 1), (19, 1), (40, 2), (10_000, 500), (10**6, 500)])
def test_default_warmup_steps_is_5_percent_within_1_and_500(total, warmup):
    assert default_warmup_steps(total) == warmup


# --- WeightAverage (--ema) ---------------------------------------------------------------

class WithBuffer(Params):
    """Params plus a buffer (as BatchNorm's running mean): averaged too."""

    def __init__(self, xp, w, b, m):
        super().__init__(xp, w, b)
        self.buffers["m"] = xp.asarray(m, dtype=xp.float64)


def test_weight_average_matches_a_hand_computation(xp):
    # decay 0.5: the ramp (1 + t) / (10 + t) is 2/11 at t = 1, 3/12 at t = 2, 4/13 ..., so
    # d = min(0.5, ramp) is the ramp for t <= 8 and 0.5 after
    model = WithBuffer(xp, [1.0, -2.0], [0.5], [0.0])
    ema = WeightAverage(model, 0.5)
    model.params["w"] = xp.asarray([3.0, 0.0])
    model.buffers["m"] = xp.asarray([1.0])
    ema.update()          # d = 2/11: avg = 2/11 * [1, -2] + 9/11 * [3, 0]
    np.testing.assert_allclose(to_numpy(ema.average["w"]), [29 / 11, -4 / 11], rtol=1e-12)
    np.testing.assert_allclose(to_numpy(ema.average["m"]), [9 / 11], rtol=1e-12)
    model.params["w"] = xp.asarray([0.0, 1.0])
    ema.update()          # d = 3/12 = 1/4: avg = 1/4 * [29/11, -4/11] + 3/4 * [0, 1]
    np.testing.assert_allclose(to_numpy(ema.average["w"]), [29 / 44, -1 / 11 + 3 / 4], rtol=1e-12)
    np.testing.assert_allclose(to_numpy(ema.average["b"]), [0.5], rtol=1e-12)   # unchanged
    for _ in range(20):
        ema.update()      # d = 0.5 from t = 9: the average closes in on the constant weights
    np.testing.assert_allclose(to_numpy(ema.average["w"]), [0.0, 1.0], atol=1e-4)
    assert ema.updates == 22


def test_weight_average_is_applied_inside_the_with_only(xp):
    model = WithBuffer(xp, [1.0, -2.0], [0.5], [0.0])
    ema = WeightAverage(model, 0.9)
    model.params["w"] = xp.asarray([3.0, 0.0])
    ema.update()
    own = {k: to_numpy(v).copy() for k, v in model.state_dict().items()}
    with ema.applied() as m:
        assert m is model
        np.testing.assert_array_equal(to_numpy(model.params["w"]), to_numpy(ema.average["w"]))
        assert not np.array_equal(to_numpy(model.params["w"]), own["w"])
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(to_numpy(v), own[k])
    with pytest.raises(RuntimeError):          # restored after an error too
        with ema.applied():
            raise RuntimeError
    np.testing.assert_array_equal(to_numpy(model.params["w"]), own["w"])


def test_weight_average_state_dict_round_trip_continues_identically(xp, rng):
    def run(model, ema, grads):
        for g in grads:
            model.params["w"] = model.params["w"] - 0.1 * xp.asarray(g)
            ema.update()
    grads = rng.normal(size=(6, 2))
    a = WithBuffer(xp, [1.0, -2.0], [0.5], [0.0])
    ema_a = WeightAverage(a, 0.8)
    run(a, ema_a, grads)
    b = WithBuffer(xp, [1.0, -2.0], [0.5], [0.0])
    ema_b = WeightAverage(b, 0.8)
    run(b, ema_b, grads[:3])
    arrays, meta = ema_b.state_dict()
    c = WithBuffer(xp, to_numpy(b.params["w"]), [0.5], [0.0])
    ema_c = WeightAverage(c, 0.8)
    ema_c.load_state_dict(arrays, meta)
    assert ema_c.updates == 3
    other = WeightAverage(c, 0.5)
    other.load_state_dict(arrays, meta)
    assert (other.decay, other.updates) == (0.5, 3)           # it keeps its own decay
    run(c, ema_c, grads[3:])
    np.testing.assert_array_equal(to_numpy(ema_c.average["w"]), to_numpy(ema_a.average["w"]))


def test_weight_average_names_a_bad_decay_a_missing_and_a_misshapen_array(xp):
    model = WithBuffer(xp, [1.0, -2.0], [0.5], [0.0])
    for decay in (0, 1, 1.5):
        with pytest.raises(ValueError, match="decay must be in"):
            WeightAverage(model, decay)
    ema = WeightAverage(model, 0.9)
    arrays, meta = ema.state_dict()
    with pytest.raises(KeyError, match="no average for 1 array.*: m"):
        ema.load_state_dict({k: v for k, v in arrays.items() if k != "m"}, meta, source="ck.npz")
    with pytest.raises(ValueError, match="ck.npz: the average of 'w' has shape \\(3,\\)"):
        ema.load_state_dict(dict(arrays, w=np.zeros(3)), meta, source="ck.npz")
