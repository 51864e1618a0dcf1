"""The CPU fast paths against the textbook versions, the switch, and the fast paths' own cuts
(chunks, threads, bands of rows, tap blocks, kept columns, the GPU branches).

float64: equal to 1e-12. float32: the two sum the same terms in other orders, so they may differ
by the float32 rounding of those sums: at most 2 * gamma_n * (the sum of the terms' absolute
values), gamma_n = n u / (1 - n u), u = 2**-24 (Higham, Accuracy and Stability, 3.1).
"""
import numpy as np
import pytest

import minissd.nn.fast as fast
import minissd.nn.functional as F
from minissd.nn import threads
from minissd.nn.backend import to_numpy
from minissd.nn.layers import Conv2d, L2Norm, MaxPool2d, ReLU, BatchNorm2d
from minissd.nn.functional import conv_output_size

U32 = 2.0 ** -24


def gamma(n):
    return n * U32 / (1 - n * U32)


def assert_same(got, want, dtype, n=1, magnitude=None, what=""):
    """float64: equal to 1e-12; float32: within 2 gamma_n |terms| (magnitude: sum of |terms|, float64)."""
    got, want = to_numpy(got).astype(np.float64), to_numpy(want).astype(np.float64)
    assert got.shape == want.shape, what
    if dtype == "float64":
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=what)
    else:
        bound = 2 * gamma(n) * np.asarray(magnitude, dtype=np.float64)
        excess = np.abs(got - want) - bound
        assert (excess <= 0).all(), f"{what}: off by {excess.max():.3g} beyond the float32 bound"


def randn(xp, rng, shape, dtype):
    return xp.asarray(rng.standard_normal(shape).astype(dtype))


def a64(a):
    return np.abs(to_numpy(a).astype(np.float64))


# --------------------------------------------------------------------------- #
# The switch
# --------------------------------------------------------------------------- #
def test_the_switch_and_its_context_manager():
    before = fast.enabled()
    try:
        assert fast.set_enabled(False) == before and not fast.enabled()
        with fast.fast_paths(True):
            assert fast.enabled()
        assert not fast.enabled()
    finally:
        fast.set_enabled(before)


@pytest.mark.parametrize("value, on", [("0", False), ("off", False), ("1", True), ("", True)])
def test_the_switch_reads_minissd_fast(monkeypatch, value, on):
    monkeypatch.setenv("MINISSD_FAST", value)
    assert fast._from_env() is on


def test_a_bad_minissd_fast_is_named(monkeypatch):
    monkeypatch.setenv("MINISSD_FAST", "maybe")
    with pytest.raises(ValueError, match="MINISSD_FAST='maybe'"):
        fast._from_env()


def test_the_layers_follow_the_switch(rng, monkeypatch):
    calls, fast_conv2d = [], fast.conv2d
    monkeypatch.setattr(fast, "conv2d", lambda *a, **k: calls.append("fast") or fast_conv2d(*a, **k))
    conv = Conv2d(2, 3, 3, padding=1, rng=rng)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    with fast.fast_paths(False):
        conv.forward(x)
    assert calls == []
    with fast.fast_paths(True):
        conv.forward(x)
    assert calls == ["fast"]


# --------------------------------------------------------------------------- #
# Each fast operation against its textbook twin
# --------------------------------------------------------------------------- #
# (N, C, H, W, K, kernel, stride, padding, dilation)
CONV_CASES = [
    pytest.param(2, 3, 7, 7, 4, 3, 1, 1, 1, id="3x3-same"),
    pytest.param(2, 3, 9, 8, 2, 3, 2, 1, 1, id="stride2-odd"),
    pytest.param(1, 4, 19, 19, 5, 3, 1, 6, 6, id="fc6-tap-blocks"),
    pytest.param(1, 2, 9, 8, 3, 3, 2, 2, 2, id="stride2-dil2"),
    pytest.param(3, 6, 5, 6, 4, 1, 1, 0, 1, id="1x1-pointwise"),
    pytest.param(1, 3, 5, 6, 2, 1, 2, 0, 1, id="1x1-stride2"),
    pytest.param(1, 2, 3, 3, 2, 3, 1, 3, 1, id="pad-beyond-kernel"),
    pytest.param(9, 3, 5, 5, 3, 3, 1, 0, 1, id="batch9-valid"),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("N, C, H, W, K, k, s, p, d", CONV_CASES)
def test_fast_conv_equals_the_textbook(xp, rng, dtype, N, C, H, W, K, k, s, p, d):
    stride, padding, dilation = (s, s), (p, p), (d, d)
    x, w, b = randn(xp, rng, (N, C, H, W), dtype), randn(xp, rng, (K, C, k, k), dtype), randn(xp, rng, (K,), dtype)
    ho, wo = conv_output_size(H, k, s, p, d), conv_output_size(W, k, s, p, d)
    dy = randn(xp, rng, (N, K, ho, wo), dtype)
    geometry = (stride, padding, dilation)
    y, cols = fast.conv2d(x, w, *geometry, bias=b, keep_columns=True)
    assert_same(y, F.conv2d(x, w, *geometry, bias=b), dtype, C * k * k + 1,
                F.conv2d(a64(x), a64(w), *geometry, bias=a64(b)), "y")
    dx = fast.conv2d_input_grad(dy, w, (H, W), *geometry)
    assert_same(dx, F.conv2d_input_grad(dy, w, (H, W), *geometry), dtype, K * k * k,
                F.conv2d_input_grad(a64(dy), a64(w), (H, W), *geometry), "dx")
    for kept in (cols, None):                                        # the kept columns, or recomputed
        dw, db = fast.conv2d_param_grads(x, dy, (k, k), *geometry, cols=kept)
        assert_same(dw, F.conv2d_weight_grad(x, dy, (k, k), *geometry), dtype, N * ho * wo,
                    F.conv2d_weight_grad(a64(x), a64(dy), (k, k), *geometry), "dW")
        assert_same(db, F.conv2d_bias_grad(dy), dtype, N * ho * wo, a64(dy).sum(axis=(0, 2, 3)), "db")
        dw_alone, no_db = fast.conv2d_param_grads(x, dy, (k, k), *geometry, cols=kept, need_bias=False)
        assert no_db is None                                          # a conv without bias: no db work
        np.testing.assert_array_equal(to_numpy(dw_alone), to_numpy(dw))


# (N, C, H, W, kernel, stride, padding)
POOL_CASES = [
    pytest.param(2, 3, 6, 6, 2, 2, 0, id="2x2-tiled"),
    pytest.param(1, 2, 7, 7, 2, 2, 0, id="2x2-ceil"),
    pytest.param(9, 2, 5, 6, 3, 1, 1, id="pool5-overlapping"),
    pytest.param(1, 2, 5, 7, 3, 2, 1, id="3x3-s2-p1"),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("N, C, H, W, k, s, p", POOL_CASES)
def test_fast_maxpool_equals_the_textbook(xp, rng, dtype, N, C, H, W, k, s, p):
    pool = MaxPool2d(k, s, p, ceil_mode=True)
    x = xp.asarray(np.round(rng.standard_normal((N, C, H, W)), 1).astype(dtype))   # many ties
    args = (pool.kernel_size, pool.stride, pool.padding, pool.output_shape(H, W))
    y, arg = fast.max_pool2d(x, *args)
    want_y, want_arg = F.max_pool2d(x, *args)
    np.testing.assert_array_equal(to_numpy(y), to_numpy(want_y))    # no arithmetic: bit for bit
    np.testing.assert_array_equal(to_numpy(arg), to_numpy(want_arg))
    dy = randn(xp, rng, y.shape, dtype)
    back = (dy, arg, x.shape, pool.kernel_size, pool.stride, pool.padding)
    # an input that is the maximum of n overlapping windows sums n gradients
    assert_same(fast.max_pool2d_backward(*back), F.max_pool2d_backward(*back), dtype, k * k,
                F.max_pool2d_backward(a64(dy), to_numpy(arg), x.shape, *back[3:]), "dx")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("inplace", [False, True])
def test_fast_relu_equals_the_textbook(xp, rng, dtype, inplace):
    x = randn(xp, rng, (9, 3, 4, 5), dtype)
    y, mask = fast.relu(x.copy(), inplace)
    want_y, want_mask = F.relu(x.copy(), inplace)
    np.testing.assert_array_equal(to_numpy(y), to_numpy(want_y))
    np.testing.assert_array_equal(to_numpy(mask), to_numpy(want_mask))
    dy = randn(xp, rng, x.shape, dtype)
    np.testing.assert_array_equal(to_numpy(fast.relu_backward(dy, mask)), to_numpy(F.relu_backward(dy, mask)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fast_l2norm_equals_the_textbook(xp, rng, dtype):
    N, C, H, W = 9, 16, 3, 4
    x, dy = randn(xp, rng, (N, C, H, W), dtype), randn(xp, rng, (N, C, H, W), dtype)
    w, eps = xp.asarray(rng.uniform(1, 30, C).astype(dtype)), 1e-10
    y, norm = fast.l2norm(x, w, eps)
    want_y, want_norm = F.l2norm(x, w, eps)
    # ||x||: a sum of C squares, then a square root and a division: C + 3 roundings
    assert_same(norm, want_norm, dtype, C + 3, a64(want_norm), "norm")
    assert_same(y, want_y, dtype, C + 4, a64(want_y), "y")
    dx, dw = fast.l2norm_backward(dy, x, norm, w, eps)
    want_dx, want_dw = F.l2norm_backward(dy, x, norm, w, eps)
    n64, du = a64(norm), a64(dy) * a64(w)[None, :, None, None]
    # dx = du / n - x * <du, x> / (n^2 ||x||): <du, x> sums C terms
    dx_terms = du / n64 + a64(x) * (du * a64(x)).sum(axis=1, keepdims=True) / n64 ** 3
    assert_same(dx, want_dx, dtype, C + 8, dx_terms, "dx")
    assert_same(dw, want_dw, dtype, N * H * W + 2, (a64(dy) * a64(x) / n64).sum(axis=(0, 2, 3)), "dweight")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("training", [True, False])
def test_fast_batchnorm_equals_the_textbook(xp, rng, dtype, training):
    N, C, H, W = 9, 3, 5, 6
    m = N * H * W
    x = xp.asarray((rng.standard_normal((N, C, H, W)) * 3 + 1).astype(dtype))
    dy = randn(xp, rng, x.shape, dtype)
    w, b = xp.asarray(rng.uniform(0.5, 2, C).astype(dtype)), randn(xp, rng, (C,), dtype)
    stats = () if training else (xp.asarray(rng.standard_normal(C).astype(dtype)),
                                 xp.asarray(rng.uniform(1, 2, C).astype(dtype)))
    y, mean, var = fast.batch_norm(x, w, b, 1e-5, *stats)
    want_y, want_mean, want_var = F.batch_norm(x, w, b, 1e-5, *stats)
    xa, x64 = a64(x), to_numpy(x).astype(np.float64)
    mean64 = x64.mean(axis=(0, 2, 3))
    # the mean sums m terms; the variance m squares of (x - mean)
    assert_same(mean, want_mean, dtype, m + 1, xa.mean(axis=(0, 2, 3)), "mean")
    dev2 = ((x64 - mean64[:, None, None]) ** 2).mean(axis=(0, 2, 3))
    assert_same(var, want_var, dtype, m + 4, dev2 + 2 * xa.mean(axis=(0, 2, 3)) ** 2 * gamma(m) * 4, "var")
    # y = w (x - mean) / sqrt(var + eps) + b, with a mean off by gamma_m mean|x| and a variance
    # off by gamma_(m+4) relative: terms |w| inv_std (|x| + mean|x|) + |b|, through m + 8 roundings
    inv_std = 1 / np.sqrt(to_numpy(want_var).astype(np.float64) + 1e-5)
    scale, mean_abs = a64(w) * inv_std, xa.mean(axis=(0, 2, 3))
    r = lambda v: v[:, None, None]                                   # noqa: E731  (C,) -> (C, 1, 1)
    assert_same(y, want_y, dtype, m + 8, r(scale) * (xa + r(mean_abs)) + r(a64(b)), "y")
    if training:
        dx, dweight, dbias = fast.batch_norm_backward(dy, x, mean, var, w, 1e-5)
        want_dx, want_dweight, want_dbias = F.batch_norm_backward(dy, x, want_mean, want_var, w, 1e-5)
        xhat = np.abs(x64 - r(to_numpy(want_mean).astype(np.float64))) * r(inv_std)
        xhat_err = xhat + r(mean_abs * inv_std)                       # |xhat| and its mean's share
        dya = a64(dy)
        assert_same(dbias, want_dbias, dtype, m, dya.sum(axis=(0, 2, 3)), "dbias")
        assert_same(dweight, want_dweight, dtype, m + 8, (dya * xhat_err).sum(axis=(0, 2, 3)), "dweight")
        # dx = w inv_std (dy - dbias / m - xhat dweight / m): the two sums enter divided by m
        dx_terms = r(scale) * (dya + r(dya.sum(axis=(0, 2, 3)) / m)
                               + xhat_err * r((dya * xhat_err).sum(axis=(0, 2, 3)) / m))
        assert_same(dx, want_dx, dtype, m + 8, dx_terms, "dx")


# --------------------------------------------------------------------------- #
# SSD's heads: sibling convs stacked into one
# --------------------------------------------------------------------------- #
def test_sibling_convs_equal_the_plain_convs(rng):
    loc = Conv2d(4, 8, 3, padding=1, rng=rng).astype(np.float64)
    conf = Conv2d(4, 6, 3, padding=1, rng=rng).astype(np.float64)
    for conv in (loc, conf):
        conv.params["bias"] = rng.standard_normal(conv.out_channels)
    x = rng.standard_normal((2, 4, 5, 5))
    dl, dc = rng.standard_normal((2, 8, 5, 5)), rng.standard_normal((2, 6, 5, 5))
    with fast.fast_paths(False):
        want = [loc.forward(x), conf.forward(x)]
        want_dx = loc.backward(dl) + conf.backward(dc)               # x feeds both: sum
        want_grads = [g.copy() for conv in (loc, conf) for g in conv.grads.values()]
    for a, b in zip(fast.sibling_conv2d(x, (loc, conf)), want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fast.sibling_conv2d_backward(x, (loc, conf), (dl, dc)), want_dx,
                               rtol=1e-12, atol=1e-12)
    for a, b in zip([g for conv in (loc, conf) for g in conv.grads.values()], want_grads):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_sibling_convs_must_share_their_geometry(rng):
    with pytest.raises(ValueError, match="share kernel"):
        fast.sibling_conv2d(np.zeros((1, 2, 5, 5)), (Conv2d(2, 3, 3, padding=1), Conv2d(2, 3, 1)))


# --------------------------------------------------------------------------- #
# The fast paths' own cuts: the same numbers whatever the cut and the thread count
# --------------------------------------------------------------------------- #
THREADED_LAYERS = [
    pytest.param(lambda rng: Conv2d(6, 5, 3, padding=1, rng=rng), (9, 6, 10, 12), id="conv3x3"),
    pytest.param(lambda rng: Conv2d(6, 5, 3, padding=4, dilation=4, rng=rng), (9, 6, 9, 9), id="dilated"),
    pytest.param(lambda rng: Conv2d(6, 5, 3, stride=2, padding=1, rng=rng), (9, 6, 10, 12), id="stride2"),
    pytest.param(lambda rng: Conv2d(6, 5, 1, rng=rng), (9, 6, 7, 7), id="1x1"),
    pytest.param(lambda rng: BatchNorm2d(6), (9, 6, 7, 5), id="batchnorm"),
    pytest.param(lambda rng: MaxPool2d(2, 2, ceil_mode=True), (9, 6, 7, 5), id="pool2x2ceil"),
    pytest.param(lambda rng: MaxPool2d(3, 1, 1), (9, 6, 7, 5), id="pool5"),
    pytest.param(lambda rng: ReLU(), (9, 6, 7, 5), id="relu"),
    pytest.param(lambda rng: L2Norm(6), (9, 6, 7, 5), id="l2norm"),
]


@pytest.fixture
def fast_on():
    with fast.fast_paths(True):
        yield


def _run(layer, x, dy):
    y = layer.forward(x.copy())
    return [y, layer.backward(dy)] + [g.copy() for g in layer.grads.values()]


@pytest.mark.parametrize("make, shape", THREADED_LAYERS)
def test_results_do_not_depend_on_the_thread_count(fast_on, rng, make, shape):
    layer = make(rng)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(layer.forward(x).shape).astype(np.float32)
    previous = threads.set_num_threads(1)
    try:
        one = _run(layer, x, dy)
        threads.set_num_threads(3)
        three = _run(layer, x, dy)
    finally:
        threads.set_num_threads(previous)
    for a, b in zip(one, three):
        np.testing.assert_array_equal(a, b)                   # bit for bit


def test_conv_chunks_of_images_give_the_same_result(fast_on, xp, rng, monkeypatch):
    # one image per GEMM, 3 (a ragged last chunk of 2), all 5; columns kept for backward or not
    conv = Conv2d(3, 4, 3, stride=2, padding=1, rng=rng).to("cpu" if xp is np else "cuda").astype(xp.float64)
    x, dy = randn(xp, rng, (5, 3, 8, 8), "float64"), randn(xp, rng, (5, 4, 4, 4), "float64")
    per_image = 3 * 9 * 4 * 4 * 8                        # column bytes of one image
    outs = []
    for chunk, keep in ((1, 0), (3 * per_image, 0), (2**40, 0), (2**40, 2**40)):
        monkeypatch.setattr(fast, "COL_CHUNK_BYTES", chunk)
        monkeypatch.setattr(fast, "GPU_COL_CHUNK_BYTES", chunk)
        monkeypatch.setattr(fast, "KEEP_COLUMNS_BYTES", keep)
        y = conv.forward(x)
        assert (conv._cache[1] is not None) == (keep > 0)
        outs.append([to_numpy(a) for a in (y, conv.backward(dy), conv.grads["weight"])])
    for got in outs[1:]:
        for a, b in zip(got, outs[0]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


BAND_CASES = [   # every one of them must take the bands path (not tap blocks, not the 1x1 GEMM)
    pytest.param(lambda rng: Conv2d(6, 5, 3, padding=1, rng=rng), (2, 6, 10, 12), id="conv3x3"),
    pytest.param(lambda rng: Conv2d(6, 5, 3, padding=4, dilation=4, rng=rng), (2, 6, 9, 9), id="dilated"),
    pytest.param(lambda rng: Conv2d(6, 5, 3, stride=2, padding=1, rng=rng), (2, 6, 10, 12), id="stride2"),
    pytest.param(lambda rng: Conv2d(6, 5, 1, stride=2, rng=rng), (2, 6, 9, 9), id="1x1-stride2"),
]


@pytest.mark.parametrize("make, shape", BAND_CASES)
def test_conv_bands_of_rows_give_the_same_result(fast_on, rng, monkeypatch, make, shape):
    # a tiny column budget cuts each image into bands of about 3 output rows (SSD300's big maps)
    layer = make(rng).astype(np.float64)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(layer.forward(x).shape)
    whole = _run(layer, x, dy)
    (kh, kw), (_, wo) = layer.kernel_size, layer.output_shape(*shape[2:])
    monkeypatch.setattr(fast, "COL_CHUNK_BYTES", 3 * shape[1] * kh * kw * wo * 8)
    monkeypatch.setattr(fast, "TAP_BLOCKS_MIN_ZEROS", 2.0)          # never tap blocks
    calls = []
    band_columns = fast._band_columns
    monkeypatch.setattr(fast, "_band_columns", lambda *a: calls.append(a[2:4]) or band_columns(*a))
    y = layer.forward(x)
    assert len(calls) > shape[0], "forward did not cut the images into bands"
    calls.clear()
    banded = [y, layer.backward(dy)] + [g.copy() for g in layer.grads.values()]
    assert len(calls) > shape[0], "dW did not cut the images into bands"
    for a, b in zip(banded, whole):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size_in, size_out, k, pad, dil, expected", [
    (19, 19, 3, 6, 6, [(0, 6, 1, 3), (6, 13, 0, 3), (13, 19, 0, 2)]),     # SSD300's fc6
    (8, 8, 3, 3, 3, [(0, 3, 1, 3), (3, 5, 0, 3), (5, 8, 0, 2)]),          # ssd-tiny's fc6
    (1, 1, 3, 1, 1, [(0, 1, 1, 2)]),                                      # a head on a 1x1 map
    (5, 3, 3, 0, 1, [(0, 3, 0, 3)]),                                      # no padding: one block
    (2, 8, 3, 4, 1, [(0, 2, 0, 0), (2, 3, 2, 3), (3, 4, 1, 3), (4, 5, 0, 2),
                     (5, 6, 0, 1), (6, 8, 0, 0)]),                        # outputs that see no input
])
def test_valid_tap_ranges(size_in, size_out, k, pad, dil, expected):
    assert fast.valid_tap_ranges(size_in, size_out, k, pad, dil) == expected


def test_valid_tap_ranges_keeps_its_old_name():
    import minissd.nn.layers as layers
    with pytest.warns(DeprecationWarning, match="minissd.nn.fast.valid_tap_ranges"):
        assert layers.valid_tap_ranges is fast.valid_tap_ranges


def test_tap_blocks_only_where_padding_taps_abound():
    fc6 = np.zeros((8, 128, 19, 19), np.float32)
    assert fast._tap_blocks(fc6, (3, 3), (1, 1), (6, 6), (6, 6), (19, 19)) is not None
    big = np.zeros((2, 3, 64, 64), np.float32)                        # 3% padding taps: plain im2col
    assert fast._tap_blocks(big, (3, 3), (1, 1), (1, 1), (1, 1), (64, 64)) is None
    assert fast._tap_blocks(fc6, (3, 3), (2, 2), (6, 6), (6, 6), (10, 10)) is None   # strided


@pytest.mark.parametrize("C, K, k, p, d, H, W", [
    (3, 4, 3, 6, 6, 19, 17),          # fc6-like, non-square
    (2, 5, 3, 1, 1, 4, 4),            # a small map
    (3, 2, 3, 4, 1, 2, 3),            # outputs at the border see no input at all
    (2, 3, 5, 2, 2, 6, 7),            # 5x5, dilation 2
    (2, 3, 3, 0, 1, 5, 5),            # no padding
])
def test_tap_blocks_equal_the_im2col_path(fast_on, rng, monkeypatch, C, K, k, p, d, H, W):
    conv = Conv2d(C, K, k, padding=p, dilation=d, rng=rng).astype(np.float64)
    conv.params["bias"] = rng.standard_normal(K)
    x = rng.standard_normal((3, C, H, W))
    dy = rng.standard_normal((3, K, *conv.output_shape(H, W)))
    results = []
    for threshold in (0.0, 2.0):                                      # always blocks, never blocks
        monkeypatch.setattr(fast, "TAP_BLOCKS_MIN_ZEROS", threshold)
        results.append(_run(conv, x, dy))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make, shape", THREADED_LAYERS)
def test_the_gpu_code_path_gives_the_same_result(fast_on, rng, monkeypatch, make, shape):
    # On CuPy the fast paths take other branches: the whole batch in one chunk, no threads, no
    # bands, no tap blocks. Run those branches here on NumPy arrays, by making `is_cupy`
    # say yes, and compare (the CuPy tests themselves need a GPU).
    layer = make(rng)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(layer.forward(x).shape)
    cpu = _run(layer, x, dy)
    monkeypatch.setattr(fast, "is_cupy", lambda a: True)
    gpu = _run(layer, x, dy)
    for a, b in zip(gpu, cpu):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
