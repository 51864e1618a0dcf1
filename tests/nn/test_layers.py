"""Layers: finite-difference gradients, output sizes, a naive convolution, PyTorch parity.

The tests marked with the `path` fixture run twice: on the fast paths and on the textbook
versions (minissd.nn.fast.fast_paths); tests/nn/test_fast.py compares the two directly.
"""
import numpy as np
import pytest
from naive import naive_conv2d

import minissd.nn.layers as layers
from minissd.nn.backend import to_numpy
from minissd.nn.gradcheck import check_backward, sum_tolerance
from minissd.nn.fast import fast_paths
from minissd.nn.layers import L2Norm, MaxPool2d, ReLU, Sequential, Conv2d, Upsample2d, conv_output_size


@pytest.fixture(params=["fast", "textbook"])
def path(request):
    """Run the test with the fast paths on, then off."""
    with fast_paths(request.param == "fast"):
        yield request.param


def on(xp, layer, dtype="float64"):
    """The layer on xp's device, cast to dtype (float64 for gradient checks)."""
    return layer.to("cpu" if xp is np else "cuda").astype(getattr(xp, dtype))


def randn(xp, rng, *shape):
    return xp.asarray(rng.standard_normal(shape))


def distinct(xp, rng, *shape, gap=0.01):
    """Values at least ``gap`` apart, so a max or a ReLU kink never moves under a 1e-6 nudge."""
    return xp.asarray((rng.permutation(int(np.prod(shape))) - np.prod(shape) / 2 + 0.5)
                      .reshape(shape) * gap)


# --------------------------------------------------------------------------- #
# Conv2d
# --------------------------------------------------------------------------- #
# (N, C, H, W, K, kernel, stride, padding, dilation, bias)
CONV_CASES = [
    pytest.param(2, 3, 7, 7, 4, 3, 1, 1, 1, True, id="3x3-same"),
    pytest.param(2, 3, 8, 8, 4, 3, 2, 1, 1, True, id="3x3-stride2"),
    pytest.param(1, 2, 7, 9, 3, 3, 1, 0, 1, True, id="non-square-no-pad"),
    pytest.param(2, 3, 9, 8, 2, 3, 2, 1, 1, True, id="non-square-stride2-odd"),
    pytest.param(1, 2, 13, 13, 3, 3, 1, 6, 6, True, id="fc6-pad6-dil6"),
    pytest.param(1, 2, 9, 8, 3, 3, 2, 2, 2, False, id="stride2-dil2-no-bias"),
    pytest.param(2, 3, 5, 6, 4, 1, 1, 0, 1, True, id="1x1"),
    pytest.param(1, 3, 5, 6, 2, 1, 2, 0, 1, False, id="1x1-stride2-no-bias"),
    pytest.param(1, 2, 4, 5, 2, 1, 1, 1, 1, True, id="1x1-padded"),
    pytest.param(1, 2, 6, 7, 3, (2, 3), (1, 2), (0, 1), 1, True, id="rect-kernel"),
    pytest.param(1, 2, 3, 3, 2, 3, 1, 3, 1, True, id="pad-beyond-kernel"),
    pytest.param(3, 2, 5, 5, 3, 3, 1, 1, 1, True, id="batch3"),
]


def make_conv(xp, rng, C, K, k, s, p, d, bias, dtype="float64"):
    conv = Conv2d(C, K, k, stride=s, padding=p, dilation=d, bias=bias, rng=rng)
    if bias:
        conv.params["bias"] = rng.standard_normal(K).astype(np.float32)   # not all zeros
    return on(xp, conv, dtype)


@pytest.mark.parametrize("N, C, H, W, K, k, s, p, d, bias", CONV_CASES)
def test_conv_gradients(path, xp, rng, N, C, H, W, K, k, s, p, d, bias):
    conv = make_conv(xp, rng, C, K, k, s, p, d, bias)
    check_backward(conv, randn(xp, rng, N, C, H, W), rng=rng)


@pytest.mark.parametrize("N, C, H, W, K, k, s, p, d, bias", CONV_CASES)
def test_conv_forward_matches_naive_loops(path, xp, rng, N, C, H, W, K, k, s, p, d, bias):
    conv = make_conv(xp, rng, C, K, k, s, p, d, bias)
    x = randn(xp, rng, N, C, H, W)
    b = to_numpy(conv.params["bias"]) if bias else None
    want = naive_conv2d(to_numpy(x), to_numpy(conv.params["weight"]), b,
                        conv.stride, conv.padding, conv.dilation)
    np.testing.assert_allclose(to_numpy(conv.forward(x)), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k, s, p", [(3, 1, 1), (3, 2, 1), (1, 1, 0)])
def test_conv_on_an_empty_batch(path, xp, rng, k, s, p):
    conv = make_conv(xp, rng, 2, 3, k, s, p, 1, True, "float32")
    y = conv.forward(xp.zeros((0, 2, 6, 6), dtype=xp.float32))
    assert y.shape == (0, 3, *conv.output_shape(6, 6))
    assert conv.backward(y).shape == (0, 2, 6, 6)
    assert float(abs(conv.grads["weight"]).max()) == 0.0


# (size, kernel, stride, padding, dilation, expected)
CONV_SIZES = [
    (300, 3, 1, 1, 1, 300),     # VGG 3x3 "same"
    (19, 3, 1, 6, 6, 19),       # fc6: dilated 3x3 keeps the size
    (19, 1, 1, 0, 1, 19),       # fc7: 1x1
    (19, 3, 2, 1, 1, 10),       # conv8_2: stride 2
    (10, 3, 2, 1, 1, 5),        # conv9_2
    (5, 3, 1, 0, 1, 3),         # conv10_2: valid
    (3, 3, 1, 0, 1, 1),         # conv11_2: 3x3 -> 1x1
    (8, 2, 2, 0, 1, 4),
    (7, 1, 2, 0, 1, 4),
    (9, 3, 2, 2, 2, 5),
    (2, 3, 1, 0, 1, 0),         # too small: Conv2d refuses it
]


@pytest.mark.parametrize("size, k, s, p, d, expected", CONV_SIZES)
def test_conv_output_size(size, k, s, p, d, expected):
    assert conv_output_size(size, k, s, p, d) == expected


def test_conv_output_shape_matches_forward(xp, rng):
    conv = on(xp, Conv2d(2, 3, 3, stride=2, padding=1), "float32")
    assert conv.forward(xp.zeros((1, 2, 9, 6), dtype=xp.float32)).shape == (1, 3, *conv.output_shape(9, 6))


# --------------------------------------------------------------------------- #
# MaxPool2d, ReLU, L2Norm, Sequential
# --------------------------------------------------------------------------- #
# (N, C, H, W, kernel, stride, padding, ceil_mode)
POOL_CASES = [
    pytest.param(2, 3, 6, 6, 2, 2, 0, False, id="2x2-s2"),
    pytest.param(1, 2, 7, 7, 2, 2, 0, True, id="2x2-s2-ceil-odd"),      # pool3: 75 -> 38
    pytest.param(1, 2, 5, 6, 3, 1, 1, False, id="pool5-3x3-s1-p1"),     # overlapping windows
    pytest.param(1, 2, 5, 5, 3, 1, 1, True, id="pool5-ceil"),
    pytest.param(1, 2, 5, 7, 3, 2, 1, True, id="3x3-s2-p1-ceil-non-square"),
    pytest.param(1, 2, 5, 5, 2, 2, 1, True, id="ceil-drops-last-window"),
]


@pytest.mark.parametrize("N, C, H, W, k, s, p, ceil", POOL_CASES)
def test_maxpool_gradients(path, xp, rng, N, C, H, W, k, s, p, ceil):
    check_backward(MaxPool2d(k, s, p, ceil_mode=ceil), distinct(xp, rng, N, C, H, W), rng=rng)


# (size, kernel, stride, padding, ceil_mode, expected): PyTorch's numbers
POOL_SIZES = [
    (75, 2, 2, 0, True, 38),    # SSD300 pool3 ('C')
    (75, 2, 2, 0, False, 37),
    (150, 2, 2, 0, True, 75),
    (19, 3, 1, 1, False, 19),   # pool5 keeps the size
    (19, 3, 1, 1, True, 19),
    (6, 3, 3, 1, True, 3),      # ceil adds a window...
    (6, 3, 3, 1, False, 2),
    (5, 2, 2, 1, True, 3),      # ...unless it would start in the right padding: 4 -> 3
    (3, 2, 2, 1, True, 2),      # same rule: 3 -> 2
    (1, 2, 2, 0, True, 1),
]


@pytest.mark.parametrize("size, k, s, p, ceil, expected", POOL_SIZES)
def test_maxpool_output_size(xp, size, k, s, p, ceil, expected):
    pool = MaxPool2d(k, s, p, ceil_mode=ceil)
    assert pool.output_shape(size, size) == (expected, expected)
    assert pool.forward(xp.zeros((1, 1, size, size), dtype=xp.float32)).shape == (1, 1, expected, expected)


def test_maxpool_ties_go_to_the_first_maximum(path, xp):
    pool = MaxPool2d(2, 2)
    x = xp.ones((1, 1, 2, 4), dtype=xp.float64)
    pool.forward(x)
    dx = to_numpy(pool.backward(xp.asarray([[[[1.0, 2.0]]]])))
    np.testing.assert_array_equal(dx, [[[[1, 0, 2, 0], [0, 0, 0, 0]]]])


def test_maxpool_rejects_too_much_padding():
    with pytest.raises(ValueError, match="padding"):
        MaxPool2d(2, 2, padding=2)


def test_relu_gradients(path, xp, rng):
    check_backward(ReLU(), distinct(xp, rng, 2, 3, 4, 5))


def test_inplace_relu_writes_over_its_input_and_keeps_the_gradient(path, xp, rng):
    x = distinct(xp, rng, 2, 3, 4, 5)
    dy = randn(xp, rng, 2, 3, 4, 5)
    plain = ReLU()
    want_y, want_dx = to_numpy(plain.forward(x)), to_numpy(plain.backward(dy))
    dy_before = to_numpy(dy).copy()
    inplace = ReLU(inplace=True)
    y = inplace.forward(x)
    assert y is x                                                 # no new array
    np.testing.assert_array_equal(to_numpy(x), want_y)
    np.testing.assert_array_equal(to_numpy(inplace.backward(dy)), want_dx)
    np.testing.assert_array_equal(to_numpy(dy), dy_before)       # backward leaves dy alone
    assert repr(inplace) == "ReLU(inplace=True)"


# (N, C, H, W, zero_location): an all-zero channel vector at (n, i, j), or None
L2NORM_CASES = [
    pytest.param(2, 5, 3, 4, None, id="random"),
    pytest.param(1, 4, 3, 3, (0, 1, 2), id="zero-vector"),
]


@pytest.mark.parametrize("N, C, H, W, zero", L2NORM_CASES)
def test_l2norm_gradients(path, xp, rng, N, C, H, W, zero):
    # eps=1e-2 makes x/(|x|+eps) smooth at x=0 on the scale of the 1e-7 nudge
    layer = on(xp, L2Norm(C, scale=20.0, eps=1e-2))
    layer.params["weight"] = xp.asarray(rng.uniform(1, 3, C))
    x = randn(xp, rng, N, C, H, W)
    if zero is not None:
        x[zero[0], :, zero[1], zero[2]] = 0
    check_backward(layer, x, rng=rng, eps=1e-7)


def test_l2norm_all_zero_location_gives_no_nan(path, xp, rng):
    layer = on(xp, L2Norm(8, scale=20.0), "float32")          # SSD's eps 1e-10, float32
    x = xp.asarray(rng.standard_normal((2, 8, 3, 3)), dtype=xp.float32)
    x[1, :, 2, 0] = 0
    y = layer.forward(x)
    dx = layer.backward(xp.ones_like(y))
    for name, a in (("y", y), ("dx", dx), ("dweight", layer.grads["weight"])):
        assert np.isfinite(to_numpy(a)).all(), name
    assert float(abs(y[1, :, 2, 0]).max()) == 0.0
    norms = to_numpy(xp.sqrt((y[0] * y[0]).sum(axis=0)))      # every other location: |y| = scale
    np.testing.assert_allclose(norms, 20.0, rtol=1e-5)


def test_sequential_gradients(xp, rng):
    net = on(xp, Sequential(Conv2d(2, 3, 3, padding=1, rng=rng), ReLU(),
                            MaxPool2d(2, 2, ceil_mode=True), Conv2d(3, 2, 1, rng=rng)))
    check_backward(net, randn(xp, rng, 2, 2, 5, 5), rng=rng)
    assert [type(m).__name__ for m in net] == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d"]


# --------------------------------------------------------------------------- #
# dtypes, errors
# --------------------------------------------------------------------------- #
FLOAT32_LAYERS = [
    pytest.param(lambda: Conv2d(4, 3, 3, padding=1), id="conv"),
    pytest.param(lambda: Conv2d(4, 3, 3, stride=2, padding=1), id="conv-stride2"),
    pytest.param(lambda: Conv2d(4, 3, 1), id="conv-1x1"),
    pytest.param(lambda: MaxPool2d(2, 2, ceil_mode=True), id="maxpool"),
    pytest.param(lambda: ReLU(), id="relu"),
    pytest.param(lambda: L2Norm(4), id="l2norm"),
    pytest.param(lambda: Upsample2d(2), id="upsample"),
]


@pytest.mark.parametrize("make", FLOAT32_LAYERS)
def test_float32_stays_float32(path, xp, rng, make):
    layer = on(xp, make(), "float32")
    y = layer.forward(xp.asarray(rng.standard_normal((2, 4, 7, 7)), dtype=xp.float32))
    dx = layer.backward(xp.asarray(rng.standard_normal(y.shape), dtype=xp.float32))
    assert (y.dtype, dx.dtype) == (xp.float32, xp.float32)
    for key, g in layer.grads.items():
        assert g.dtype == xp.float32, key


@pytest.mark.parametrize("make", FLOAT32_LAYERS)
def test_backward_before_forward_is_a_clear_error(xp, make):
    with pytest.raises(RuntimeError, match="backward called before forward"):
        on(xp, make(), "float32").backward(xp.zeros((1, 3, 7, 7), dtype=xp.float32))


def test_conv_errors_name_the_shape(xp):
    conv = on(xp, Conv2d(3, 2, 3), "float32")
    with pytest.raises(ValueError, match=r"expects 3 input channels, got shape \(1, 4, 5, 5\)"):
        conv.forward(xp.zeros((1, 4, 5, 5), dtype=xp.float32))
    with pytest.raises(ValueError, match="NCHW"):
        conv.forward(xp.zeros((3, 5, 5), dtype=xp.float32))
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        conv.forward(xp.zeros((1, 3, 2, 5), dtype=xp.float32))
    conv.forward(xp.zeros((1, 3, 5, 5), dtype=xp.float32))
    with pytest.raises(ValueError, match=r"dy has shape \(1, 2, 4, 4\).*\(1, 2, 3, 3\)"):
        conv.backward(xp.zeros((1, 2, 4, 4), dtype=xp.float32))


def test_conv_accepts_a_non_contiguous_dy(path, xp, rng):
    # SSD's heads hand back dy as a transposed view of (B, H, W, k*4)
    conv = on(xp, Conv2d(2, 4, 3, padding=1, rng=rng))
    x = randn(xp, rng, 2, 2, 5, 5)
    conv.forward(x)
    dy_nhwc = randn(xp, rng, 2, 5, 5, 4)
    dx = conv.backward(dy_nhwc.transpose(0, 3, 1, 2))
    dw = conv.grads["weight"].copy()
    conv.forward(x)
    np.testing.assert_allclose(to_numpy(conv.backward(xp.ascontiguousarray(dy_nhwc.transpose(0, 3, 1, 2)))),
                               to_numpy(dx))
    np.testing.assert_allclose(to_numpy(conv.grads["weight"]), to_numpy(dw))


# --------------------------------------------------------------------------- #
# PyTorch parity (skipped without torch): catches convention errors
# --------------------------------------------------------------------------- #
def torch_grads(fn, x, *params, dy):
    """torch's y and the gradients of <y, dy> for x and params (all NumPy float64)."""
    torch = pytest.importorskip("torch")
    ts = [torch.tensor(to_numpy(a), dtype=torch.float64, requires_grad=True) for a in (x, *params)]
    y = fn(*ts)
    y.backward(torch.tensor(to_numpy(dy)))
    return y.detach().numpy(), [t.grad.numpy() for t in ts]


@pytest.mark.parametrize("N, C, H, W, K, k, s, p, d, bias", CONV_CASES)
def test_conv_matches_torch(xp, rng, N, C, H, W, K, k, s, p, d, bias):
    F = pytest.importorskip("torch.nn.functional")
    conv = make_conv(xp, rng, C, K, k, s, p, d, bias)
    x = randn(xp, rng, N, C, H, W)
    y = conv.forward(x)
    dy = randn(xp, rng, *y.shape)
    dx = conv.backward(dy)
    params = [conv.params["weight"]] + ([conv.params["bias"]] if bias else [])
    y_t, grads_t = torch_grads(lambda x, w, b=None: F.conv2d(x, w, b, conv.stride, conv.padding,
                                                             conv.dilation), x, *params, dy=dy)
    ours = [dx, conv.grads["weight"]] + ([conv.grads["bias"]] if bias else [])
    np.testing.assert_allclose(to_numpy(y), y_t, rtol=1e-10, atol=1e-10)
    for a, b in zip(ours, grads_t):
        np.testing.assert_allclose(to_numpy(a), b, rtol=1e-10, atol=1e-10)


POOL_TORCH_CASES = POOL_CASES + [
    pytest.param(2, 3, 75, 75, 2, 2, 0, True, id="pool3-75-ceil"),
    pytest.param(1, 2, 19, 19, 3, 1, 1, False, id="pool5-19"),
    pytest.param(1, 2, 10, 9, 3, 2, 1, True, id="3x3-s2-ceil"),
]


@pytest.mark.parametrize("N, C, H, W, k, s, p, ceil", POOL_TORCH_CASES)
def test_maxpool_matches_torch(xp, rng, N, C, H, W, k, s, p, ceil):
    F = pytest.importorskip("torch.nn.functional")
    pool = MaxPool2d(k, s, p, ceil_mode=ceil)
    # rounded values make ties common: both must pick the first maximum
    x = xp.asarray(np.round(rng.standard_normal((N, C, H, W)), 1))
    y = pool.forward(x)
    dy = randn(xp, rng, *y.shape)
    y_t, (dx_t,) = torch_grads(lambda x: F.max_pool2d(x, k, s, p, ceil_mode=ceil), x, dy=dy)
    np.testing.assert_array_equal(to_numpy(y), y_t)
    np.testing.assert_allclose(to_numpy(pool.backward(dy)), dx_t, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("N, C, H, W", [(2, 5, 3, 4), (1, 16, 6, 6)])
def test_l2norm_matches_torch(xp, rng, N, C, H, W):
    pytest.importorskip("torch")
    layer = on(xp, L2Norm(C, scale=20.0))
    layer.params["weight"] = xp.asarray(rng.uniform(1, 30, C))
    x = randn(xp, rng, N, C, H, W)
    y = layer.forward(x)
    dy = randn(xp, rng, *y.shape)

    def l2norm(x, w):      # ssd.pytorch's L2Norm
        return w[None, :, None, None] * x / ((x * x).sum(dim=1, keepdim=True).sqrt() + 1e-10)

    y_t, (dx_t, dw_t) = torch_grads(l2norm, x, layer.params["weight"], dy=dy)
    np.testing.assert_allclose(to_numpy(y), y_t, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(layer.backward(dy)), dx_t, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_numpy(layer.grads["weight"]), dw_t, rtol=1e-10)


# --------------------------------------------------------------------------- #
# BatchNorm2d (ssd-tiny)
# --------------------------------------------------------------------------- #
def batchnorm(xp, rng, C):
    layer = on(xp, layers.BatchNorm2d(C))
    layer.params["weight"] = xp.asarray(rng.uniform(0.5, 2, C))
    layer.params["bias"] = xp.asarray(rng.standard_normal(C))
    return layer


@pytest.mark.parametrize("N, C, H, W", [(4, 3, 5, 6), (2, 2, 1, 1), (1, 3, 4, 3)])
def test_batchnorm_gradients(path, xp, rng, N, C, H, W):
    x = randn(xp, rng, N, C, H, W) * 3 + 1
    check_backward(batchnorm(xp, rng, C), x, atol=1e-6, rtol=1e-4)


def test_batchnorm_train_normalises_and_eval_uses_running_stats(path, xp, rng):
    layer = batchnorm(xp, rng, 3)
    layer.params["weight"], layer.params["bias"] = xp.ones(3), xp.zeros(3)
    x = randn(xp, rng, 8, 3, 4, 4) * 5 + 2
    y = to_numpy(layer.forward(x))
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)
    m = 8 * 4 * 4                       # running averages: momentum 0.1, unbiased variance
    np.testing.assert_allclose(to_numpy(layer.buffers["running_mean"]),
                               0.1 * to_numpy(x).mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(to_numpy(layer.buffers["running_var"]),
                               0.9 + 0.1 * to_numpy(x).var(axis=(0, 2, 3)) * m / (m - 1))
    layer.eval()
    rm, rv = to_numpy(layer.buffers["running_mean"]), to_numpy(layer.buffers["running_var"])
    expected = (to_numpy(x) - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(to_numpy(layer.forward(x)), expected, rtol=1e-10)


def test_batchnorm_buffers_are_saved_and_moved(xp, rng, tmp_path):
    layer = batchnorm(xp, rng, 3)
    layer.forward(randn(xp, rng, 2, 3, 2, 2))
    assert list(layer.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    layer.save(tmp_path / "bn.npz")
    other = layers.BatchNorm2d(3).load(tmp_path / "bn.npz")
    assert other.buffers["running_var"].dtype == np.float32          # load keeps the model's dtype
    np.testing.assert_allclose(other.buffers["running_var"], to_numpy(layer.buffers["running_var"]),
                               rtol=1e-6)
    assert [n for n, _, _ in layer.named_parameters()] == ["weight", "bias"]   # not trained


def test_batchnorm_matches_torch(xp, rng):
    torch = pytest.importorskip("torch")
    layer = batchnorm(xp, rng, 4)
    ref = torch.nn.BatchNorm2d(4).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(to_numpy(layer.params["weight"])))
        ref.bias.copy_(torch.tensor(to_numpy(layer.params["bias"])))
    x = randn(xp, rng, 3, 4, 5, 2)
    y = layer.forward(x)
    dy = randn(xp, rng, *y.shape)
    xt = torch.tensor(to_numpy(x), requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.tensor(to_numpy(dy)))
    np.testing.assert_allclose(to_numpy(y), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_numpy(layer.backward(dy)), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(to_numpy(layer.grads["weight"]), ref.weight.grad.numpy(), rtol=1e-9)
    np.testing.assert_allclose(to_numpy(layer.buffers["running_var"]), ref.running_var.numpy(),
                               rtol=1e-12)


def test_batchnorm_statistics_keep_float32_precision_far_from_zero(path, rng):
    # activations around 1000 with spread 0.1: E[x^2] - E[x]^2 would lose most digits in float32
    x = (1000 + 0.1 * rng.standard_normal((16, 3, 16, 16))).astype(np.float32)
    layer = layers.BatchNorm2d(3)
    y = layer.forward(x)
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(x64.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    # y = x * scale + shift rounds two float32 terms of about 1000 / 0.1 = 1e4 that cancel: it may be
    # sum_tolerance(2, 2e4) ~ 7e-3 off, where E[x^2] - E[x]^2 would be off by more than the spread
    np.testing.assert_allclose(y, want, rtol=0, atol=sum_tolerance(2, 2 * np.abs(x64 / x64.std()).max()))


# --------------------------------------------------------------------------- #
# Upsample2d (the top-down path of arch.top_down)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("N, C, H, W, scale", [(2, 3, 4, 5, 2), (1, 2, 3, 3, 3), (1, 1, 2, 2, 1)])
def test_upsample_gradients(xp, rng, N, C, H, W, scale):
    check_backward(on(xp, Upsample2d(scale)), randn(xp, rng, N, C, H, W))


def test_upsample_copies_each_pixel_into_its_block(xp):
    x = xp.asarray(np.arange(6, dtype=np.float64).reshape(1, 1, 2, 3))
    y = to_numpy(Upsample2d(2).forward(x))
    assert y.shape == (1, 1, 4, 6)
    np.testing.assert_array_equal(y[0, 0], [[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2],
                                            [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]])
    assert Upsample2d(2).output_shape(2, 3) == (4, 6)


def test_upsample_errors_name_the_scale_and_shape(xp):
    for scale in (0, 1.5, True):
        with pytest.raises(ValueError, match="Upsample2d: scale must be an integer >= 1"):
            Upsample2d(scale)
    layer = Upsample2d(2)
    layer.forward(xp.zeros((1, 2, 3, 3)))
    with pytest.raises(ValueError, match=r"dy has shape \(1, 2, 3, 3\), the forward output had \(1, 2, 6, 6\)"):
        layer.backward(xp.zeros((1, 2, 3, 3)))


def test_upsample_matches_torch(xp, rng):
    F = pytest.importorskip("torch.nn.functional")
    x = randn(xp, rng, 2, 3, 4, 5)
    layer = Upsample2d(2)
    y = layer.forward(x)
    dy = randn(xp, rng, *y.shape)
    y_t, (dx_t,) = torch_grads(lambda t: F.interpolate(t, scale_factor=2, mode="nearest"), x, dy=dy)
    np.testing.assert_array_equal(to_numpy(y), y_t)
    np.testing.assert_allclose(to_numpy(layer.backward(dy)), dx_t, rtol=1e-12, atol=1e-12)
