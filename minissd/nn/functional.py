"""The textbook operations of chapters 2-4: each one for the whole batch, its backward under it.

These are the versions to read. They run on NumPy and CuPy alike
(``xp = get_array_module(x)``), on one thread, with no cache tricks. The
layers in :mod:`minissd.nn.layers` call them when the fast paths are off
(``minissd.nn.fast.set_enabled(False)``, or ``MINISSD_FAST=0``); otherwise
they call the same operations in :mod:`minissd.nn.fast`, which cut the work
into chunks that stay in the CPU's cache and run them on several threads.
``tests/nn/test_fast.py`` checks that both give the same numbers.

    convolution   conv_output_size, im2col, col2im, conv2d, conv2d_input_grad,
                  conv2d_weight_grad, conv2d_bias_grad
    pooling       max_pool2d, max_pool2d_backward
    ReLU          relu, relu_backward
    L2Norm        l2norm, l2norm_backward
    BatchNorm     batch_norm, batch_norm_backward
    upsampling    upsample_nearest, upsample_nearest_backward
"""
from __future__ import annotations

from minissd.nn.backend import get_array_module


# =========================================================================== #
# Convolution: im2col, col2im, forward, dx, dW, db
#
# A convolution is a matrix product once every window of the input is copied
# into one column of a matrix (im2col):
#     y = W (K, C*kh*kw) @ col (C*kh*kw, N*Ho*Wo)           forward
#     dcol = W.T @ dy, then col2im (the adjoint of im2col)  dx
#     dW = dy (K, N*Ho*Wo) @ col.T                           dW
#     db = dy summed over (N, Ho, Wo)                        db
# =========================================================================== #
def conv_output_size(size, kernel, stride=1, padding=0, dilation=1, ceil_mode=False):
    """Output length along one axis, exactly as PyTorch computes it (pooling too)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + padding:  # last window must start inside the input
            out -= 1
    else:
        out = span // stride + 1
    return out


def im2col(x_cn, kh, kw, stride, padding, dilation, out_hw):
    """x_cn (C, N, H, W) -> col (C, kh, kw, N, Ho, Wo), zero padded.

    col[c, p, q, n, i, j] = x[n, c, s*i + d*p - pad, s*j + d*q - pad]: for each
    kernel offset (p, q) the values every output needs form ONE strided slice
    of the padded input, so the loop runs over the kh*kw offsets, never over
    pixels. Reshaped to (C*kh*kw, N*Ho*Wo) it is the column matrix.
    """
    xp = get_array_module(x_cn)
    (sh, sw), (ph, pw), (dh, dw), (ho, wo) = stride, padding, dilation, out_hw
    C, N, H, W = x_cn.shape
    xpad = x_cn
    if ph or pw:                                                      # zero padding around each image
        xpad = xp.zeros((C, N, H + 2 * ph, W + 2 * pw), dtype=x_cn.dtype)
        xpad[:, :, ph:ph + H, pw:pw + W] = x_cn
    col = xp.empty((C, kh, kw, N, ho, wo), dtype=x_cn.dtype)
    for p in range(kh):
        r = p * dh                                                    # first input row of offset p
        for q in range(kw):
            c = q * dw
            col[:, p, q] = xpad[:, :, r:r + sh * (ho - 1) + 1:sh, c:c + sw * (wo - 1) + 1:sw]
    return col


def col2im(col, x_shape_cn, stride, padding, dilation):
    """Adjoint of :func:`im2col`: col (C, kh, kw, N, Ho, Wo) -> dx (C, N, H, W), summing overlaps."""
    xp = get_array_module(col)
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    C, kh, kw, N, ho, wo = col.shape
    _, _, H, W = x_shape_cn
    dxpad = xp.zeros((C, N, H + 2 * ph, W + 2 * pw), dtype=col.dtype)
    for p in range(kh):
        r = p * dh
        for q in range(kw):
            c = q * dw
            dxpad[:, :, r:r + sh * (ho - 1) + 1:sh, c:c + sw * (wo - 1) + 1:sw] += col[:, p, q]
    return dxpad[:, :, ph:ph + H, pw:pw + W]                        # the padding gets no gradient


def conv2d(x, weight, stride=(1, 1), padding=(0, 0), dilation=(1, 1), bias=None):
    """y (N, K, Ho, Wo) = x (N, C, H, W) cross-correlated with weight (K, C, kh, kw) (+ bias (K,)).

    y[n, k, i, j] = b[k] + sum_{c, p, q} W[k, c, p, q] * x[n, c, s*i + d*p - pad, s*j + d*q - pad]
    """
    xp = get_array_module(x, weight)
    N, C, H, W = x.shape
    K, _, kh, kw = weight.shape
    ho = conv_output_size(H, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(W, kw, stride[1], padding[1], dilation[1])
    col = im2col(x.transpose(1, 0, 2, 3), kh, kw, stride, padding, dilation, (ho, wo))
    col = col.reshape(C * kh * kw, N * ho * wo)                       # the column matrix
    y = weight.reshape(K, C * kh * kw) @ col                          # (K, N*Ho*Wo): one GEMM
    y = y.reshape(K, N, ho, wo).transpose(1, 0, 2, 3)                 # (N, K, Ho, Wo)
    if bias is not None:
        y = y + bias[:, None, None]
    return xp.ascontiguousarray(y)


def conv2d_input_grad(dy, weight, x_hw, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """dx (N, C, H, W) of y = conv2d(x, weight), from dy (N, K, Ho, Wo).

    Each column entry was multiplied by the weights, so its gradient is
    W.T @ dy; col2im then adds each entry's gradient back onto the input pixel
    it was copied from (a pixel under several windows gets the sum).
    """
    xp = get_array_module(dy, weight)
    N, K, ho, wo = dy.shape
    _, C, kh, kw = weight.shape
    dy_k = dy.transpose(1, 0, 2, 3).reshape(K, N * ho * wo)           # (K, N*Ho*Wo)
    dcol = weight.reshape(K, C * kh * kw).T @ dy_k                    # (C*kh*kw, N*Ho*Wo)
    dx = col2im(dcol.reshape(C, kh, kw, N, ho, wo), (C, N, *x_hw), stride, padding, dilation)
    return xp.ascontiguousarray(dx.transpose(1, 0, 2, 3))             # (N, C, H, W)


def conv2d_weight_grad(x, dy, kernel, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """dW (K, C, kh, kw) of y = conv2d(x, W): dy (K, N*Ho*Wo) @ col.T (N*Ho*Wo, C*kh*kw).

    A weight meets every output of its channel, each time times the input
    pixel under it: its gradient sums dy times that pixel over the batch.
    """
    N, C, H, W = x.shape
    _, K, ho, wo = dy.shape
    kh, kw = kernel
    col = im2col(x.transpose(1, 0, 2, 3), kh, kw, stride, padding, dilation, (ho, wo))
    col = col.reshape(C * kh * kw, N * ho * wo)
    dy_k = dy.transpose(1, 0, 2, 3).reshape(K, N * ho * wo)           # (K, N*Ho*Wo)
    return (dy_k @ col.T).reshape(K, C, kh, kw)


def conv2d_bias_grad(dy):
    """db (K,): a bias is added to every output of its channel, so dy summed over (N, Ho, Wo)."""
    return dy.sum(axis=(0, 2, 3))


# =========================================================================== #
# Max pooling
# =========================================================================== #
def _pool_padded_size(x_shape, kernel, stride, padding, out_hw):
    """(Hp, Wp): the input padded left/top by ``padding``, right/bottom as far as the last window reaches."""
    (_, _, H, W), (kh, kw), (sh, sw), (ph, pw), (ho, wo) = x_shape, kernel, stride, padding, out_hw
    return max((ho - 1) * sh + kh, H + ph), max((wo - 1) * sw + kw, W + pw)


def max_pool2d(x, kernel, stride, padding, out_hw):
    """y (N, C, Ho, Wo): the maximum of each window; arg (N, C, Ho, Wo): the window entry
    i*kw + j that held it (the first one on ties, as PyTorch), which backward needs."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw), (ho, wo) = kernel, stride, padding, out_hw
    xpad = xp.full((N, C, *_pool_padded_size(x.shape, kernel, stride, padding, out_hw)),
                   -xp.inf, dtype=x.dtype)                           # -inf never wins a window
    xpad[:, :, ph:ph + H, pw:pw + W] = x
    y = xp.full((N, C, ho, wo), -xp.inf, dtype=x.dtype)
    arg = xp.zeros((N, C, ho, wo), dtype=xp.int8 if kh * kw < 128 else xp.int32)
    for i in range(kh):
        for j in range(kw):
            win = xpad[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]  # (N, C, Ho, Wo)
            arg[win > y] = i * kw + j                                 # strictly greater: ties keep the first
            y = xp.maximum(y, win)
    return y, arg


def max_pool2d_backward(dy, arg, x_shape, kernel, stride, padding):
    """dx (N, C, H, W): each output's gradient goes to the one input that was its maximum
    (an input that is the maximum of several overlapping windows gets their sum)."""
    xp = get_array_module(dy)
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw), (_, _, ho, wo) = kernel, stride, padding, dy.shape
    dxpad = xp.zeros((N, C, *_pool_padded_size(x_shape, kernel, stride, padding, (ho, wo))),
                     dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            dxpad[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += dy * (arg == i * kw + j)
    return xp.ascontiguousarray(dxpad[:, :, ph:ph + H, pw:pw + W])


# =========================================================================== #
# ReLU
# =========================================================================== #
def relu(x, inplace=False):
    """y = max(x, 0) (written over x when ``inplace``), and the mask y > 0 that backward needs."""
    xp = get_array_module(x)
    y = x if inplace else xp.empty_like(x)
    xp.maximum(x, 0, out=y)
    return y, y > 0


def relu_backward(dy, mask):
    """dx: dy passes where the input was positive, 0 elsewhere."""
    return dy * mask


# =========================================================================== #
# L2Norm (SSD's conv4_3)
# =========================================================================== #
def l2norm(x, weight, eps):
    """y[n, c, i, j] = weight[c] * x[n, c, i, j] / (||x[n, :, i, j]|| + eps), and
    norm = ||x|| + eps (N, 1, H, W), which backward needs."""
    xp = get_array_module(x)
    norm = xp.sqrt((x * x).sum(axis=1, keepdims=True)) + eps          # (N, 1, H, W)
    return weight[None, :, None, None] * (x / norm), norm


def l2norm_backward(dy, x, norm, weight, eps):
    """dx (N, C, H, W) and dweight (C,) of :func:`l2norm`."""
    xp = get_array_module(dy)
    u = x / norm                                                      # the unscaled output
    du = dy * weight[None, :, None, None]
    # u = x / n, n = ||x|| + eps:  dx = du / n - x * <du, x> / (n^2 ||x||)
    r = norm - eps                                                    # ||x||
    r_safe = xp.where(r > 0, r, 1)                                    # x = 0: the second term is 0
    dot = (du * x).sum(axis=1, keepdims=True)                         # (N, 1, H, W)
    dx = du / norm - x * (dot / (norm * norm * r_safe))
    return dx, (dy * u).sum(axis=(0, 2, 3))


# =========================================================================== #
# BatchNorm (ssd-tiny)
# =========================================================================== #
def batch_norm(x, weight, bias, eps, mean=None, var=None):
    """y = weight * (x - mean) / sqrt(var + eps) + bias, per channel, and (mean, var).

    mean, var (C,): the given ones (eval: the running averages), or when None
    the batch's own over (N, H, W), variance biased (training).
    """
    xp = get_array_module(x)
    if mean is None:
        mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))    # (C,) each
    inv_std = (1 / xp.sqrt(var + eps)).astype(x.dtype)
    xhat = (x - mean[:, None, None]) * inv_std[:, None, None]         # (N, C, H, W): mean 0, var 1
    return weight[:, None, None] * xhat + bias[:, None, None], mean, var


def batch_norm_backward(dy, x, mean, var, weight, eps):
    """dx, dweight (C,), dbias (C,) of a training-mode :func:`batch_norm`.

    The batch's mean and variance depend on every x, so dx has two terms
    besides the plain weight * inv_std * dy:
        dx = weight * inv_std * (dy - dbias / m - xhat * dweight / m),  m = N*H*W
    """
    xp = get_array_module(dy)
    m = x.size // x.shape[1]
    inv_std = (1 / xp.sqrt(var + eps)).astype(x.dtype)
    xhat = (x - mean[:, None, None]) * inv_std[:, None, None]
    dbias = dy.sum(axis=(0, 2, 3))                                    # (C,)
    dweight = (dy * xhat).sum(axis=(0, 2, 3))                         # (C,)
    a = (weight * inv_std).astype(dy.dtype)[:, None, None]
    dx = a * (dy - dbias[:, None, None] / m - xhat * (dweight[:, None, None] / m))
    return dx, dweight, dbias


# =========================================================================== #
# Nearest-neighbour upsampling (the top-down path into SSD's first source)
# =========================================================================== #
def upsample_nearest(x, scale):
    """(N, C, H, W) -> (N, C, scale*H, scale*W): each pixel copied into a scale x scale block."""
    return x.repeat(scale, axis=2).repeat(scale, axis=3)


def upsample_nearest_backward(dy, scale):
    """dx (N, C, H, W): each input pixel fed its whole block, so its gradient is the block's sum."""
    N, C, H, W = dy.shape
    return dy.reshape(N, C, H // scale, scale, W // scale, scale).sum(axis=(3, 5))
