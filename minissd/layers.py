"""Hand-written layers, NCHW, forward and backward: Conv2d (dilated too),
MaxPool2d, ReLU, L2Norm and Sequential.

Each ``forward`` stores a small cache; ``backward`` reads it in reverse and
fills ``grads``. The same lines run on NumPy and CuPy: arrays come in, and
``xp = get_array_module(x)`` picks the library.
"""
from __future__ import annotations

import math

import numpy as np

from minissd.backend import get_array_module, is_cupy
from minissd.module import Module


def _pair(v, name):
    if isinstance(v, int):
        return v, v
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v!r}")
    return int(v[0]), int(v[1])


def _require_cache(layer, cache):
    if cache is None:
        raise RuntimeError(f"{type(layer).__name__}.backward called before forward "
                           "(nothing cached: run forward in training mode first)")
    return cache


def _check_grad_shape(layer, dy, expected):
    if tuple(dy.shape) != tuple(expected):
        raise ValueError(f"{type(layer).__name__}.backward: dy has shape {tuple(dy.shape)}, "
                         f"the forward output had {tuple(expected)}")


def _check_nchw(layer, x, channels=None):
    if x.ndim != 4:
        raise ValueError(f"{type(layer).__name__} expects NCHW input, got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{type(layer).__name__} expects {channels} input channels, "
                         f"got shape {tuple(x.shape)}")


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


# --------------------------------------------------------------------------- #
# im2col / col2im: one loop over the kh*kw kernel offsets, never over pixels.
#
# Column layout (C, kh, kw, B, Ho, Wo) for a chunk of B images: reshaped to
# (C*kh*kw, B*Ho*Wo) it is the right operand of ONE GEMM, W (K, C*kh*kw) @ col,
# and dW is one GEMM too. The batch goes through in chunks sized so that a
# chunk's columns (9x its pixels for a 3x3 kernel) stay in the CPU's cache
# between im2col writing them and the GEMM reading them: one image per chunk
# for big maps, many for small ones. backward recomputes the columns from x
# rather than keeping them (they would be 9x the activations), unless the
# whole batch's columns are small.
# --------------------------------------------------------------------------- #
COL_CHUNK_BYTES = 8 * 2**20        # NumPy: one chunk's column buffer, about the L3 cache
GPU_COL_CHUNK_BYTES = 512 * 2**20  # CuPy: big chunks, few kernel launches
KEEP_COLUMNS_BYTES = 8 * 2**20     # small maps: forward keeps the batch's columns for backward


def im2col(x_cn, kh, kw, stride, padding, dilation, out_hw, out=None):
    """x_cn (C, N, H, W) -> col (C, kh, kw, N, Ho, Wo), zero padded; ``out``: a buffer to fill."""
    xp = get_array_module(x_cn)
    (sh, sw), (ph, pw), (dh, dw), (ho, wo) = stride, padding, dilation, out_hw
    C, N, H, W = x_cn.shape
    if ph or pw:
        xpad = xp.zeros((C, N, H + 2 * ph, W + 2 * pw), dtype=x_cn.dtype)
        xpad[:, :, ph:ph + H, pw:pw + W] = x_cn
    else:
        xpad = x_cn
    col = xp.empty((C, kh, kw, N, ho, wo), dtype=x_cn.dtype) if out is None else out
    for i in range(kh):
        r = i * dh
        for j in range(kw):
            c = j * dw
            col[:, i, j] = xpad[:, :, r:r + sh * (ho - 1) + 1:sh, c:c + sw * (wo - 1) + 1:sw]
    return col


def col2im(col, x_shape_cn, stride, padding, dilation):
    """Adjoint of :func:`im2col`: col (C, kh, kw, N, Ho, Wo) -> dx (C, N, H, W), summing overlaps."""
    xp = get_array_module(col)
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    C, kh, kw, N, ho, wo = col.shape
    _, _, H, W = x_shape_cn
    dxpad = xp.zeros((C, N, H + 2 * ph, W + 2 * pw), dtype=col.dtype)
    for i in range(kh):
        r = i * dh
        for j in range(kw):
            c = j * dw
            dxpad[:, :, r:r + sh * (ho - 1) + 1:sh, c:c + sw * (wo - 1) + 1:sw] += col[:, i, j]
    return dxpad[:, :, ph:ph + H, pw:pw + W]


def _chunks(x, col_bytes_per_image):
    """(n0, n1) image ranges whose columns together fit the chunk budget (at least one image)."""
    budget = GPU_COL_CHUNK_BYTES if is_cupy(x) else COL_CHUNK_BYTES
    step = max(1, budget // max(1, col_bytes_per_image))
    return [(n0, min(n0 + step, x.shape[0])) for n0 in range(0, x.shape[0], step)]


def _columns(x, kernel, stride, padding, dilation, out_hw):
    """Yield (n0, n1, col (C*kh*kw, B*Ho*Wo)) for each chunk of images of x (N, C, H, W).

    All chunks share one buffer: each col is overwritten by the next.
    """
    xp = get_array_module(x)
    C, (kh, kw), (ho, wo) = x.shape[1], kernel, out_hw
    chunks = _chunks(x, C * kh * kw * ho * wo * x.itemsize)
    if not chunks:                                                    # an empty batch
        return
    buffer = xp.empty(C * kh * kw * (chunks[0][1] - chunks[0][0]) * ho * wo, dtype=x.dtype)
    for n0, n1 in chunks:
        col = buffer[:C * kh * kw * (n1 - n0) * ho * wo].reshape(C, kh, kw, n1 - n0, ho, wo)
        im2col(x[n0:n1].transpose(1, 0, 2, 3), kh, kw, stride, padding, dilation, out_hw, out=col)
        yield n0, n1, col.reshape(C * kh * kw, (n1 - n0) * ho * wo)


def _batch_major(a_k, b):
    """(K, B*P) -> (B, K, P): a GEMM's output back in NCHW order (free when B == 1)."""
    return a_k.reshape(a_k.shape[0], b, -1).transpose(1, 0, 2)


def _channel_major(a):
    """(B, K, P...) -> (K, B*P): NCHW rows as a GEMM operand (a copy unless B == 1)."""
    xp = get_array_module(a)
    k_major = a.reshape(a.shape[0], a.shape[1], -1).transpose(1, 0, 2)   # (K, B, P)
    return xp.ascontiguousarray(k_major).reshape(a.shape[1], -1)


def _is_pointwise(kernel, stride, padding):
    """A 1x1 convolution without stride or padding is a plain GEMM over channels (no im2col)."""
    return tuple(kernel) == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0)


def conv2d(x, weight, stride=(1, 1), padding=(0, 0), dilation=(1, 1), return_columns=False):
    """y (N, K, Ho, Wo) = x (N, C, H, W) cross-correlated with weight (K, C, kh, kw); no bias.

    return_columns: return (y, col) where col is the batch's column matrix
    (C*kh*kw, N*Ho*Wo) if it is at most KEEP_COLUMNS_BYTES (else None), for
    :func:`conv2d_weight_grad` to reuse instead of recomputing it.
    """
    xp = get_array_module(x, weight)
    N, C, H, W = x.shape
    K, _, kh, kw = weight.shape
    ho = conv_output_size(H, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(W, kw, stride[1], padding[1], dilation[1])
    w2 = weight.reshape(K, C * kh * kw)
    kept = None
    if _is_pointwise((kh, kw), stride, padding):
        y = xp.matmul(w2, x.reshape(N, C, H * W))                    # (N, K, H*W)
    else:
        y = xp.empty((N, K, ho * wo), dtype=xp.result_type(x, weight))
        for n0, n1, col in _columns(x, (kh, kw), stride, padding, dilation, (ho, wo)):
            y[n0:n1] = _batch_major(w2 @ col, n1 - n0)              # (K, B*Ho*Wo) -> (B, K, Ho*Wo)
            if n1 - n0 == N and col.nbytes <= KEEP_COLUMNS_BYTES:   # one chunk: nothing overwrites it
                kept = col
    y = y.reshape(N, K, ho, wo)
    return (y, kept) if return_columns else y


def conv2d_weight_grad(x, dy, kernel, stride=(1, 1), padding=(0, 0), dilation=(1, 1), col=None):
    """dW (K, C, kh, kw): the sum over chunks of dy (K, B*Ho*Wo) @ col.T (B*Ho*Wo, C*kh*kw).

    col: the batch's column matrix from ``conv2d(..., return_columns=True)``, if
    it kept one; otherwise the columns are recomputed from x, chunk by chunk.
    """
    xp = get_array_module(x, dy)
    N, C, H, W = x.shape
    _, K, ho, wo = dy.shape
    kh, kw = kernel
    if _is_pointwise(kernel, stride, padding):
        return xp.matmul(dy.reshape(N, K, ho * wo), x.reshape(N, C, H * W).transpose(0, 2, 1)
                         ).sum(axis=0).reshape(K, C, 1, 1)
    dw_t = xp.zeros((C * kh * kw, K), dtype=xp.result_type(x, dy))
    chunks = [(0, N, col)] if col is not None else \
        _columns(x, kernel, stride, padding, dilation, (ho, wo))
    for n0, n1, col in chunks:
        # dW.T = col @ dy.T: the same product, ~20% faster in OpenBLAS when K is small
        dw_t += col @ _channel_major(dy[n0:n1]).T                    # (C*kh*kw, K)
    return xp.ascontiguousarray(dw_t.T).reshape(K, C, kh, kw)


def conv2d_input_grad(dy, weight, x_hw, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """dx (N, C, H, W) of y = conv2d(x, weight).

    With stride 1 this is a convolution itself (a "transposed convolution"):
    dy padded by d*(k-1) - pad, against the kernel flipped in space with its
    in and out channels swapped. Otherwise the column gradient W.T @ dy of
    each chunk goes back through :func:`col2im`.
    """
    xp = get_array_module(dy, weight)
    N, K, ho, wo = dy.shape
    _, C, kh, kw = weight.shape
    back_pad = (dilation[0] * (kh - 1) - padding[0], dilation[1] * (kw - 1) - padding[1])
    if tuple(stride) == (1, 1) and min(back_pad) >= 0:
        flipped = xp.ascontiguousarray(weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])  # (C, K, kh, kw)
        return conv2d(dy, flipped, (1, 1), back_pad, dilation)
    w2t = weight.reshape(K, C * kh * kw).T                            # (C*kh*kw, K)
    dx = xp.empty((N, C, *x_hw), dtype=xp.result_type(dy, weight))
    for n0, n1 in _chunks(dy, C * kh * kw * ho * wo * dy.itemsize):
        dcol = (w2t @ _channel_major(dy[n0:n1])).reshape(C, kh, kw, n1 - n0, ho, wo)
        dx[n0:n1] = col2im(dcol, (C, n1 - n0, *x_hw), stride, padding, dilation).transpose(1, 0, 2, 3)
    return dx


class Conv2d(Module):
    """2-D convolution (cross-correlation) with stride, zero padding and dilation.

    y[n, k, i, j] = b[k] + sum_{c, p, q} W[k, c, p, q] * x[n, c, s*i + d*p - pad, s*j + d*q - pad]

    SSD's fc6 is ``Conv2d(512, 1024, 3, padding=6, dilation=6)``: a 3x3 kernel
    whose taps sit 6 pixels apart sees a 13x13 window with 9 weights.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, bias=True, rng=None, init="xavier"):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        kh, kw = self.kernel_size
        self.params["weight"] = np.zeros((out_channels, in_channels, kh, kw), np.float32)
        if bias:
            self.params["bias"] = np.zeros((out_channels,), np.float32)
        self.reset_parameters(rng, init)
        self._cache = None

    def reset_parameters(self, rng=None, init="xavier"):
        """Xavier-uniform (ssd.pytorch's heads and extras) or He-normal weights, zero bias."""
        rng = rng if rng is not None else np.random.default_rng()
        kh, kw = self.kernel_size
        fan_in, fan_out = self.in_channels * kh * kw, self.out_channels * kh * kw
        shape = self.params["weight"].shape
        if init == "xavier":
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-bound, bound, size=shape)
        elif init == "he":
            w = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
        else:
            raise ValueError(f"unknown init {init!r}: expected 'xavier' or 'he'")
        xp = get_array_module(self.params["weight"])
        self.params["weight"] = xp.asarray(w, dtype=self.params["weight"].dtype)
        if "bias" in self.params:
            self.params["bias"] = xp.zeros_like(self.params["bias"])
        for k in self.params:
            self.grads[k] = xp.zeros_like(self.params[k])

    def output_shape(self, h, w):
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (self.kernel_size, self.stride,
                                                  self.padding, self.dilation)
        return conv_output_size(h, kh, sh, ph, dh), conv_output_size(w, kw, sw, pw, dw)

    def forward(self, x):
        _check_nchw(self, x, self.in_channels)
        ho, wo = self.output_shape(*x.shape[2:])
        if ho <= 0 or wo <= 0:
            raise ValueError(f"Conv2d: input {tuple(x.shape)} is smaller than the "
                             f"dilated kernel {self.kernel_size} (dilation {self.dilation})")
        y, col = conv2d(x, self.params["weight"], self.stride, self.padding, self.dilation,
                        return_columns=True)
        if "bias" in self.params:
            y += self.params["bias"][:, None, None]                   # (N, K, Ho, Wo)
        # keep x itself (not a copy: nothing may change it in place before backward);
        # backward recomputes the columns (9x x for a 3x3 kernel) unless they are small
        self._cache = (x, col) if self.training else None
        return y

    def backward(self, dy):
        x, col = _require_cache(self, self._cache)
        _check_grad_shape(self, dy, (x.shape[0], self.out_channels, *self.output_shape(*x.shape[2:])))
        if "bias" in self.params:
            self.grads["bias"] = dy.sum(axis=(0, 2, 3))                # (K,)
        self.grads["weight"] = conv2d_weight_grad(x, dy, self.kernel_size, self.stride, self.padding,
                                                  self.dilation, col=col)  # (K, C, kh, kw)
        return conv2d_input_grad(dy, self.params["weight"], x.shape[2:], self.stride,
                                 self.padding, self.dilation)         # (N, C, H, W)

    def __repr__(self):
        extra = "" if self.dilation == (1, 1) else f", dilation={self.dilation[0]}"
        return (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size[0]}, "
                f"stride={self.stride[0]}, padding={self.padding[0]}{extra})")


class MaxPool2d(Module):
    """Max pooling with PyTorch's output sizes (``ceil_mode`` included).

    VGG's pool3 uses ``ceil_mode=True`` so 75x75 becomes 38x38; SSD's pool5 is
    3x3, stride 1, padding 1 (keeps the size). Ties go to the first maximum in
    window order, as PyTorch does.
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride if stride is not None else kernel_size, "stride")
        self.padding = _pair(padding, "padding")
        self.ceil_mode = bool(ceil_mode)
        kh, kw = self.kernel_size
        if self.padding[0] * 2 > kh or self.padding[1] * 2 > kw:
            raise ValueError(f"MaxPool2d: padding {self.padding} must be at most half "
                             f"the kernel size {self.kernel_size} (as in PyTorch)")
        self._cache = None

    def output_shape(self, h, w):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (conv_output_size(h, kh, sh, ph, 1, self.ceil_mode),
                conv_output_size(w, kw, sw, pw, 1, self.ceil_mode))

    def forward(self, x):
        _check_nchw(self, x)
        xp = get_array_module(x)
        N, C, H, W = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ho, wo = self.output_shape(H, W)
        # pad with -inf: left/top by `padding`, right/bottom as far as the last window reaches
        hp, wp = (ho - 1) * sh + kh, (wo - 1) * sw + kw
        if (ph, pw) != (0, 0) or hp > H + ph or wp > W + pw:
            xpad = xp.full((N, C, max(hp, H + ph), max(wp, W + pw)), -xp.inf, dtype=x.dtype)
            xpad[:, :, ph:ph + H, pw:pw + W] = x
        else:
            xpad = x

        def window(i, j):                                             # (N, C, Ho, Wo) view
            return xpad[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]

        y = window(0, 0).copy()
        # arg: which window entry (i * kw + j) holds the maximum; only backward needs it
        arg = xp.zeros(y.shape, dtype=xp.int8 if kh * kw < 128 else xp.int32) if self.training else None
        for i in range(kh):
            for j in range(kw):
                if i == j == 0:
                    continue
                win = window(i, j)
                if arg is not None:
                    xp.copyto(arg, i * kw + j, where=win > y)         # strict: the first maximum wins ties
                xp.maximum(y, win, out=y)
        self._cache = (x.shape, xpad.shape, arg) if self.training else None
        return y

    def backward(self, dy):
        x_shape, pad_shape, arg = _require_cache(self, self._cache)
        xp = get_array_module(dy)
        N, C, H, W = x_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        _check_grad_shape(self, dy, arg.shape)
        _, _, ho, wo = dy.shape
        overlapping = sh < kh or sw < kw                                  # pool5: 3x3, stride 1
        dxpad = xp.zeros(pad_shape, dtype=dy.dtype)
        for i in range(kh):
            for j in range(kw):
                # each output's gradient goes to the one input that was its maximum
                dx_win = dxpad[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
                if overlapping:
                    dx_win += dy * (arg == i * kw + j)                # an input in several windows: add
                else:
                    xp.multiply(dy, arg == i * kw + j, out=dx_win)    # each input in one window at most
        if tuple(pad_shape) == tuple(x_shape):
            return dxpad
        return dxpad[:, :, ph:ph + H, pw:pw + W].copy()

    def __repr__(self):
        return (f"MaxPool2d(kernel_size={self.kernel_size[0]}, stride={self.stride[0]}, "
                f"padding={self.padding[0]}, ceil_mode={self.ceil_mode})")


class ReLU(Module):
    """y = max(x, 0); dy passes where x > 0."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def forward(self, x):
        xp = get_array_module(x)
        y = xp.maximum(x, 0)
        self._cache = (y > 0) if self.training else None
        return y

    def backward(self, dy):
        mask = _require_cache(self, self._cache)
        return dy * mask

    def __repr__(self):
        return "ReLU()"


class L2Norm(Module):
    """Per-location L2 normalisation over channels with a learned per-channel scale.

    y[n, c, i, j] = w[c] * x[n, c, i, j] / (||x[n, :, i, j]|| + eps), w initialised
    to ``scale`` (20 for conv4_3 in SSD, whose activations are much larger than
    the deeper maps').
    """

    def __init__(self, channels, scale=20.0, eps=1e-10):
        super().__init__()
        self.channels, self.scale, self.eps = int(channels), float(scale), float(eps)
        self.params["weight"] = np.full((channels,), scale, dtype=np.float32)
        self.grads["weight"] = np.zeros((channels,), dtype=np.float32)
        self._cache = None

    def forward(self, x):
        _check_nchw(self, x, self.channels)
        xp = get_array_module(x)
        r = xp.sqrt((x * x).sum(axis=1, keepdims=True))               # (N, 1, H, W)
        n = r + self.eps
        u = x / n                                                     # (N, C, H, W)
        y = self.params["weight"][None, :, None, None] * u
        self._cache = (x, r, n, u) if self.training else None
        return y

    def backward(self, dy):
        x, r, n, u = _require_cache(self, self._cache)
        xp = get_array_module(dy)
        self.grads["weight"] = (dy * u).sum(axis=(0, 2, 3))           # (C,)
        du = dy * self.params["weight"][None, :, None, None]          # (N, C, H, W)
        # u = x / n, n = ||x|| + eps:  dx = du / n - x * <du, x> / (n^2 ||x||)
        r_safe = xp.where(r > 0, r, 1)
        dot = (du * x).sum(axis=1, keepdims=True)                     # (N, 1, H, W)
        return du / n - x * dot / (n * n * r_safe)

    def __repr__(self):
        return f"L2Norm({self.channels}, scale={self.scale:g})"


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse."""

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def forward(self, x):
        for layer in self:
            x = layer.forward(x)
        return x

    def backward(self, dy):
        for layer in reversed(list(self)):
            dy = layer.backward(dy)
        return dy

    def __repr__(self):
        inner = "\n".join(f"  ({name}): {m!r}" for name, m in self.named_children())
        return f"Sequential(\n{inner}\n)"


class BatchNorm2d(Module):
    """Batch normalisation over (N, H, W) per channel, with a learned scale and shift.

    Training:  y = weight * (x - mean_B) / sqrt(var_B + eps) + bias, batch statistics,
               and running averages updated with ``momentum`` (PyTorch's convention).
    Eval:      the running averages replace the batch statistics.
    Not in the SSD paper's VGG16; ssd-tiny uses it because a small network trained
    from scratch without ImageNet weights learns several times faster with it.
    """

    def __init__(self, channels, eps=1e-5, momentum=0.1):
        super().__init__()
        self.channels, self.eps, self.momentum = int(channels), float(eps), float(momentum)
        self.params["weight"] = np.ones((channels,), np.float32)
        self.params["bias"] = np.zeros((channels,), np.float32)
        self.grads["weight"] = np.zeros((channels,), np.float32)
        self.grads["bias"] = np.zeros((channels,), np.float32)
        self.buffers["running_mean"] = np.zeros((channels,), np.float32)
        self.buffers["running_var"] = np.ones((channels,), np.float32)
        self._cache = None

    def forward(self, x):
        _check_nchw(self, x, self.channels)
        xp = get_array_module(x)
        if self.training:
            mean = x.mean(axis=(0, 2, 3))                             # (C,)
            xc = x - mean[None, :, None, None]                        # (N, C, H, W)
            var = (xc * xc).mean(axis=(0, 2, 3))                      # (C,) biased, for the forward
            m = x.size // self.channels
            unbiased = var * (m / max(m - 1, 1))                      # running_var is unbiased (PyTorch)
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            self.buffers["running_mean"] = ((1 - self.momentum) * rm + self.momentum * mean).astype(rm.dtype)
            self.buffers["running_var"] = ((1 - self.momentum) * rv + self.momentum * unbiased).astype(rv.dtype)
        else:
            mean = self.buffers["running_mean"].astype(x.dtype)
            var = self.buffers["running_var"].astype(x.dtype)
            xc = x - mean[None, :, None, None]
        inv_std = 1 / xp.sqrt(var + self.eps)                         # (C,)
        xhat = xc * inv_std[None, :, None, None]                      # (N, C, H, W)
        y = self.params["weight"][None, :, None, None] * xhat + self.params["bias"][None, :, None, None]
        self._cache = (xhat, inv_std) if self.training else None
        return y

    def backward(self, dy):
        xhat, inv_std = _require_cache(self, self._cache)
        self.grads["weight"] = (dy * xhat).sum(axis=(0, 2, 3))        # (C,)
        self.grads["bias"] = dy.sum(axis=(0, 2, 3))                   # (C,)
        dxhat = dy * self.params["weight"][None, :, None, None]
        # the batch mean and variance depend on every x: subtract their share of the gradient
        mean_dxhat = dxhat.mean(axis=(0, 2, 3), keepdims=True)
        mean_dxhat_xhat = (dxhat * xhat).mean(axis=(0, 2, 3), keepdims=True)
        return (dxhat - mean_dxhat - xhat * mean_dxhat_xhat) * inv_std[None, :, None, None]

    def __repr__(self):
        return f"BatchNorm2d({self.channels})"
