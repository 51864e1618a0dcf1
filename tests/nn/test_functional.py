"""The textbook operations: the convolution against its definition, im2col/col2im adjoint,
each backward against finite differences, and the convolution section kept plain and short.

(The layers' own tests, tests/nn/test_layers.py, run on these too, with the fast paths off.)
"""
import inspect

import numpy as np
import pytest
from naive import naive_conv2d

import minissd.nn.functional as F
from minissd.nn.backend import to_numpy
from minissd.nn.gradcheck import numerical_grad


def randn(xp, rng, *shape):
    return xp.asarray(rng.standard_normal(shape))


# (N, C, H, W, K, k, stride, padding, dilation)
CASES = [
    pytest.param(2, 3, 7, 7, 4, 3, 1, 1, 1, id="3x3-same"),
    pytest.param(2, 3, 9, 8, 2, 3, 2, 1, 1, id="stride2"),
    pytest.param(1, 2, 13, 13, 3, 3, 1, 6, 6, id="fc6-pad6-dil6"),
    pytest.param(1, 2, 5, 6, 2, 1, 2, 0, 1, id="1x1-stride2"),
]


@pytest.mark.parametrize("N, C, H, W, K, k, s, p, d", CASES)
def test_conv2d_is_the_definition(xp, rng, N, C, H, W, K, k, s, p, d):
    x, w, b = randn(xp, rng, N, C, H, W), randn(xp, rng, K, C, k, k), randn(xp, rng, K)
    y = F.conv2d(x, w, (s, s), (p, p), (d, d), bias=b)
    want = naive_conv2d(to_numpy(x), to_numpy(w), to_numpy(b), (s, s), (p, p), (d, d))
    np.testing.assert_allclose(to_numpy(y), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("N, C, H, W, K, k, s, p, d", CASES)
def test_conv2d_gradients_against_finite_differences(rng, N, C, H, W, K, k, s, p, d):
    geometry = ((s, s), (p, p), (d, d))
    x, w = rng.standard_normal((N, C, H, W)), rng.standard_normal((K, C, k, k))
    b = rng.standard_normal(K)
    dy = rng.standard_normal(F.conv2d(x, w, *geometry).shape)         # random upstream gradient

    def loss():
        return float((F.conv2d(x, w, *geometry, bias=b) * dy).sum())

    np.testing.assert_allclose(F.conv2d_input_grad(dy, w, (H, W), *geometry), numerical_grad(loss, x),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(F.conv2d_weight_grad(x, dy, (k, k), *geometry), numerical_grad(loss, w),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(F.conv2d_bias_grad(dy), numerical_grad(loss, b), rtol=1e-6, atol=1e-8)


def test_im2col_col2im_are_adjoint(xp, rng):
    # <im2col(x), c> == <x, col2im(c)> for any x, c: col2im is exactly the transpose
    args = ((2, 2), (1, 1), (2, 2))                      # stride, padding, dilation
    x_cn = randn(xp, rng, 3, 2, 7, 6)                    # (C, N, H, W)
    ho, wo = F.conv_output_size(7, 3, 2, 1, 2), F.conv_output_size(6, 3, 2, 1, 2)
    col = F.im2col(x_cn, 3, 3, *args, (ho, wo))
    assert col.shape == (3, 3, 3, 2, ho, wo)             # (C, kh, kw, N, Ho, Wo)
    c = randn(xp, rng, *col.shape)
    lhs = float((col * c).sum())
    rhs = float((x_cn * F.col2im(c, x_cn.shape, *args)).sum())
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))


def test_max_pool2d_and_its_backward(rng):
    x = rng.permutation(2 * 5 * 5).reshape(1, 2, 5, 5).astype(np.float64)    # no ties
    y, arg = F.max_pool2d(x, (3, 3), (1, 1), (1, 1), (5, 5))                  # pool5
    dy = rng.standard_normal(y.shape)

    def loss():
        return float((F.max_pool2d(x, (3, 3), (1, 1), (1, 1), (5, 5))[0] * dy).sum())

    np.testing.assert_allclose(F.max_pool2d_backward(dy, arg, x.shape, (3, 3), (1, 1), (1, 1)),
                               numerical_grad(loss, x), rtol=1e-6, atol=1e-8)
    assert y[0, 0, 0, 0] == x[0, 0, :2, :2].max()


def test_relu_l2norm_batch_norm_backward_against_finite_differences(rng):
    x = rng.standard_normal((2, 3, 4, 5)) * 2 + 0.5
    w, b, dy = rng.uniform(1, 3, 3), rng.standard_normal(3), rng.standard_normal((2, 3, 4, 5))
    _, mask = F.relu(x)
    np.testing.assert_allclose(F.relu_backward(dy, mask),
                               numerical_grad(lambda: float((F.relu(x)[0] * dy).sum()), x), atol=1e-8)
    _, norm = F.l2norm(x, w, 1e-10)
    dx, dw = F.l2norm_backward(dy, x, norm, w, 1e-10)
    l2 = lambda: float((F.l2norm(x, w, 1e-10)[0] * dy).sum())       # noqa: E731
    np.testing.assert_allclose(dx, numerical_grad(l2, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dw, numerical_grad(l2, w), rtol=1e-6, atol=1e-8)
    _, mean, var = F.batch_norm(x, w, b, 1e-5)
    dx, dw, db = F.batch_norm_backward(dy, x, mean, var, w, 1e-5)
    bn = lambda: float((F.batch_norm(x, w, b, 1e-5)[0] * dy).sum())   # noqa: E731
    for got, arg in ((dx, x), (dw, w), (db, b)):
        np.testing.assert_allclose(got, numerical_grad(bn, arg), rtol=1e-5, atol=1e-7)


def test_the_textbook_convolution_is_short_and_plain():
    """Issue 16: im2col, col2im, forward, dx, dW, db in one section of at most ~150 lines,
    with no thread, chunk or band code."""
    source = inspect.getsource(F)
    start = source.index("# Convolution: im2col, col2im, forward, dx, dW, db")
    stop = source.index("# Max pooling")
    section = source[start:stop]
    assert section.count("\n") <= 150
    for word in ("thread", "chunk", "band", "parallel", "fast"):
        assert word not in section.lower(), word
    for name in ("def im2col", "def col2im", "def conv2d(", "def conv2d_input_grad",
                 "def conv2d_weight_grad", "def conv2d_bias_grad"):
        assert name in section, name


def test_upsample_nearest_backward_against_finite_differences(rng):
    x, dy = rng.standard_normal((2, 3, 3, 4)), rng.standard_normal((2, 3, 6, 8))
    y = F.upsample_nearest(x, 2)
    np.testing.assert_array_equal(y[:, :, 1::2, ::2], x)             # each pixel fills its 2x2 block
    np.testing.assert_allclose(F.upsample_nearest_backward(dy, 2),
                               numerical_grad(lambda: float((F.upsample_nearest(x, 2) * dy).sum()), x),
                               rtol=1e-6, atol=1e-8)
