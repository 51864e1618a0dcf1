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
# Column layout (N, C, kh, kw, Ho, Wo): image n's columns, col[n] reshaped to
# (C*kh*kw, Ho*Wo), are the right operand of a GEMM whose product is already
# y[n] in NCHW order:  y[n] (K, Ho*Wo) = W (K, C*kh*kw) @ col[n].  So no
# transposes of x, y or dy, ever. The images go through in chunks whose column
# buffer stays small (a few MB stay in the CPU's cache between im2col writing
# them and the GEMM reading them; the whole batch's columns can be 9x the size
# of x). backward recomputes the columns from x instead of keeping them.
# --------------------------------------------------------------------------- #
COL_CHUNK_BYTES = 8 * 2**20        # NumPy: one chunk's column buffer, about the L3 cache
GPU_COL_CHUNK_BYTES = 512 * 2**20  # CuPy: big chunks, few kernel launches


def _pad(x, ph, pw):
    """x (..., H, W) -> (..., H + 2ph, W + 2pw) with zeros around (x itself if no padding)."""
    if ph == 0 and pw == 0:
        return x
    xp = get_array_module(x)
    *lead, H, W = x.shape
    xpad = xp.zeros((*lead, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
    xpad[..., ph:ph + H, pw:pw + W] = x
    return xpad


def im2col(x, kh, kw, stride, padding, dilation, out_hw):
    """x (..., H, W) -> col (..., kh, kw, Ho, Wo), zero-padded: col[..., i, j, :, :] is the
    input under kernel tap (i, j) for every output pixel. For x (N, C, H, W), col[n]
    reshaped to (C*kh*kw, Ho*Wo) is image n's column matrix."""
    xp = get_array_module(x)
    (sh, sw), (ph, pw), (dh, dw), (ho, wo) = stride, padding, dilation, out_hw
    xpad = _pad(x, ph, pw)
    col = xp.empty((*x.shape[:-2], kh, kw, ho, wo), dtype=x.dtype)
    for i in range(kh):
        r = i * dh
        for j in range(kw):
            c = j * dw
            col[..., i, j, :, :] = xpad[..., r:r + sh * (ho - 1) + 1:sh, c:c + sw * (wo - 1) + 1:sw]
    return col


def col2im(col, x_hw, stride, padding, dilation):
    """Adjoint of :func:`im2col`: col (..., kh, kw, Ho, Wo) -> dx (..., H, W), summing overlaps."""
    xp = get_array_module(col)
    (sh, sw), (ph, pw), (dh, dw), (H, W) = stride, padding, dilation, x_hw
    *lead, kh, kw, ho, wo = col.shape
    dxpad = xp.zeros((*lead, H + 2 * ph, W + 2 * pw), dtype=col.dtype)
    for i in range(kh):
        r = i * dh
        for j in range(kw):
            c = j * dw
            dxpad[..., r:r + sh * (ho - 1) + 1:sh, c:c + sw * (wo - 1) + 1:sw] += col[..., i, j, :, :]
    return dxpad[..., ph:ph + H, pw:pw + W]


def _image_chunks(x, col_bytes_per_image):
    """(n0, n1) ranges of images whose column buffers together fit the chunk budget."""
    budget = GPU_COL_CHUNK_BYTES if is_cupy(x) else COL_CHUNK_BYTES
    step = max(1, budget // max(1, col_bytes_per_image))
    return [(n0, min(n0 + step, x.shape[0])) for n0 in range(0, x.shape[0], step)]


def _is_pointwise(kernel, stride, padding):
    """A 1x1 convolution without stride or padding is a plain GEMM over channels (no im2col)."""
    return kernel == (1, 1) and stride == (1, 1) and padding == (0, 0)


def conv2d(x, weight, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """y (N, K, Ho, Wo) = x (N, C, H, W) cross-correlated with weight (K, C, kh, kw); no bias."""
    xp = get_array_module(x, weight)
    N, C, H, W = x.shape
    K, _, kh, kw = weight.shape
    ho = conv_output_size(H, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(W, kw, stride[1], padding[1], dilation[1])
    w2 = weight.reshape(K, C * kh * kw)
    y = xp.empty((N, K, ho * wo), dtype=xp.result_type(x, weight))
    if _is_pointwise((kh, kw), stride, padding):
        return xp.matmul(w2, x.reshape(N, C, H * W), out=y).reshape(N, K, ho, wo)
    for n0, n1 in _image_chunks(x, C * kh * kw * ho * wo * x.itemsize):
        col = im2col(x[n0:n1], kh, kw, stride, padding, dilation, (ho, wo))  # (B, C, kh, kw, Ho, Wo)
        xp.matmul(w2, col.reshape(n1 - n0, C * kh * kw, ho * wo), out=y[n0:n1])  # (B, K, Ho*Wo)
    return y.reshape(N, K, ho, wo)


def conv2d_weight_grad(x, dy, kernel, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """dW (K, C, kh, kw) = sum over images of dy[n] (K, Ho*Wo) @ col[n].T (Ho*Wo, C*kh*kw)."""
    xp = get_array_module(x, dy)
    N, C, H, W = x.shape
    _, K, ho, wo = dy.shape
    kh, kw = kernel
    dy3 = dy.reshape(N, K, ho * wo)
    if _is_pointwise(kernel, stride, padding):
        cols = x.reshape(N, C, H * W)
        return xp.matmul(dy3, cols.transpose(0, 2, 1)).sum(axis=0).reshape(K, C, 1, 1)
    dw = xp.zeros((K, C * kh * kw), dtype=xp.result_type(x, dy))
    for n0, n1 in _image_chunks(x, C * kh * kw * ho * wo * x.itemsize):
        col = im2col(x[n0:n1], kh, kw, stride, padding, dilation, (ho, wo))  # recomputed
        col = col.reshape(n1 - n0, C * kh * kw, ho * wo)
        dw += xp.matmul(dy3[n0:n1], col.transpose(0, 2, 1)).sum(axis=0)    # (K, C*kh*kw)
    return dw.reshape(K, C, kh, kw)


def conv2d_input_grad(dy, weight, x_hw, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """dx (N, C, H, W) of y = conv2d(x, weight).

    With stride 1 it is a convolution itself (the "transposed convolution"): dy
    padded by d*(k-1) - pad, against the kernel flipped in space with its in
    and out channels swapped. Otherwise each image's column gradient
    W.T @ dy[n] goes back through :func:`col2im`.
    """
    xp = get_array_module(dy, weight)
    N, K, ho, wo = dy.shape
    _, C, kh, kw = weight.shape
    back_pad = (dilation[0] * (kh - 1) - padding[0], dilation[1] * (kw - 1) - padding[1])
    if stride == (1, 1) and min(back_pad) >= 0:
        flipped = xp.ascontiguousarray(weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])  # (C, K, kh, kw)
        return conv2d(dy, flipped, (1, 1), back_pad, dilation)
    w2t = weight.reshape(K, C * kh * kw).T                                 # (C*kh*kw, K)
    dy3 = dy.reshape(N, K, ho * wo)
    dx = xp.empty((N, C, *x_hw), dtype=xp.result_type(dy, weight))
    for n0, n1 in _image_chunks(dy, C * kh * kw * ho * wo * dy.itemsize):
        dcol = xp.matmul(w2t, dy3[n0:n1])                                  # (B, C*kh*kw, Ho*Wo)
        dx[n0:n1] = col2im(dcol.reshape(n1 - n0, C, kh, kw, ho, wo), x_hw, stride, padding, dilation)
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
        y = conv2d(x, self.params["weight"], self.stride, self.padding, self.dilation)
        if "bias" in self.params:
            y += self.params["bias"][:, None, None]                   # (N, K, Ho, Wo)
        self._cache = x if self.training else None                    # columns are recomputed
        return y

    def backward(self, dy):
        x = _require_cache(self, self._cache)
        _check_grad_shape(self, dy, (x.shape[0], self.out_channels, *self.output_shape(*x.shape[2:])))
        if "bias" in self.params:
            self.grads["bias"] = dy.sum(axis=(0, 2, 3))                # (K,)
        self.grads["weight"] = conv2d_weight_grad(x, dy, self.kernel_size, self.stride,
                                                  self.padding, self.dilation)  # (K, C, kh, kw)
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
        y = None
        arg = xp.zeros((N, C, ho, wo), dtype=xp.int8 if kh * kw < 128 else xp.int32)
        for i in range(kh):
            for j in range(kw):
                win = xpad[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
                if y is None:
                    y = win.copy()
                    continue
                better = win > y                  # strict: the first maximum wins ties
                y = xp.where(better, win, y)
                arg = xp.where(better, arg.dtype.type(i * kw + j), arg)
        self._cache = (x.shape, xpad.shape, arg) if self.training else None
        return y

    def backward(self, dy):
        x_shape, pad_shape, arg = _require_cache(self, self._cache)
        xp = get_array_module(dy)
        N, C, H, W = x_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        _, _, ho, wo = dy.shape
        dxpad = xp.zeros(pad_shape, dtype=dy.dtype)
        for i in range(kh):
            for j in range(kw):
                # each output's gradient goes to the one input that was its maximum
                dxpad[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += \
                    xp.where(arg == i * kw + j, dy, 0)
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
