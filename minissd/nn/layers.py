"""Hand-written layers, NCHW, forward and backward: Conv2d (dilated too),
MaxPool2d, ReLU, L2Norm, BatchNorm2d, Upsample2d and Sequential.

Each ``forward`` stores a small cache; ``backward`` reads it in reverse and
fills ``grads``. The arithmetic is in two places, chosen by one ``if`` in each
method:

- :mod:`minissd.nn.functional`, the textbook version for the whole batch
  (read this one: im2col, the GEMM, col2im, ...), taken when the fast paths
  are off (``minissd.nn.fast.set_enabled(False)`` or ``MINISSD_FAST=0``);
- :mod:`minissd.nn.fast`, the same operations cut into cache-sized chunks
  and run on minissd's threads (the default), tested equal to the first.

The same lines run on NumPy and CuPy: arrays come in, and
``xp = get_array_module(x)`` picks the library.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from minissd.nn import fast
from minissd.nn import functional as F
from minissd.nn.backend import get_array_module
from minissd.nn.functional import (col2im, conv2d, conv2d_input_grad, conv2d_weight_grad,  # noqa: F401
                                   conv_output_size, im2col)
from minissd.nn.module import Module


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
        weight, bias = self.params["weight"], self.params.get("bias")
        geometry = (self.stride, self.padding, self.dilation)
        if fast.enabled():      # fast path: chunks on threads, bands, tap blocks; may keep the columns
            y, cols = fast.conv2d(x, weight, *geometry, bias=bias, keep_columns=self.training)
        else:                   # textbook: im2col + one GEMM for the whole batch
            y, cols = F.conv2d(x, weight, *geometry, bias=bias), None
        # keep x itself (not a copy: nothing may change it in place before backward)
        self._cache = (x, cols) if self.training else None
        return y                                                      # (N, K, Ho, Wo)

    def backward(self, dy):
        x, _ = _require_cache(self, self._cache)
        _check_grad_shape(self, dy, (x.shape[0], self.out_channels, *self.output_shape(*x.shape[2:])))
        self.param_grads(dy)
        geometry = (self.stride, self.padding, self.dilation)
        if fast.enabled():      # fast path: a stride-1 dx as a convolution, or col2im chunk by chunk
            return fast.conv2d_input_grad(dy, self.params["weight"], x.shape[2:], *geometry)
        return F.conv2d_input_grad(dy, self.params["weight"], x.shape[2:], *geometry)  # (N, C, H, W)

    def param_grads(self, dy):
        """Fill grads["weight"] (K, C, kh, kw) and grads["bias"] (K,) from dy; no dx."""
        x, cols = _require_cache(self, self._cache)
        geometry = (self.kernel_size, self.stride, self.padding, self.dilation)
        if fast.enabled():      # fast path: chunks or bands on threads, the kept columns if any
            dw, db = fast.conv2d_param_grads(x, dy, *geometry, cols=cols, need_bias="bias" in self.params)
        else:                   # textbook: dW = dy @ col.T, db = dy summed
            dw, db = F.conv2d_weight_grad(x, dy, *geometry), F.conv2d_bias_grad(dy)
        self.grads["weight"] = dw
        if "bias" in self.params:
            self.grads["bias"] = db

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
        args = (self.kernel_size, self.stride, self.padding, self.output_shape(*x.shape[2:]))
        if fast.enabled():      # fast path: chunks of images on threads; no arg in eval
            y, arg = fast.max_pool2d(x, *args, need_arg=self.training)
        else:                   # textbook: one pass per window entry over the whole batch
            y, arg = F.max_pool2d(x, *args)
        # arg: which window entry (i * kw + j) held each maximum; only backward needs it
        self._cache = (x.shape, arg) if self.training else None
        return y                                                      # (N, C, Ho, Wo)

    def backward(self, dy):
        x_shape, arg = _require_cache(self, self._cache)
        _check_grad_shape(self, dy, arg.shape)
        args = (dy, arg, x_shape, self.kernel_size, self.stride, self.padding)
        if fast.enabled():      # fast path: chunks of images on threads
            return fast.max_pool2d_backward(*args)
        return F.max_pool2d_backward(*args)                           # (N, C, H, W)

    def __repr__(self):
        return (f"MaxPool2d(kernel_size={self.kernel_size[0]}, stride={self.stride[0]}, "
                f"padding={self.padding[0]}, ceil_mode={self.ceil_mode})")


class ReLU(Module):
    """y = max(x, 0); dy passes where x > 0.

    inplace=True writes y over x (as ``torch.nn.ReLU(inplace=True)``): one
    activation-sized array less per layer. Only safe where nothing else keeps
    x -- after a Conv2d or a BatchNorm2d, which keep their inputs, not their
    outputs -- so SSD's base network uses it and the default is off.
    """

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)
        self._cache = None


    def forward(self, x):
        if fast.enabled():      # fast path: chunks on threads; no mask in eval
            y, mask = fast.relu(x, self.inplace, need_mask=self.training)
        else:                   # textbook
            y, mask = F.relu(x, self.inplace)
        self._cache = mask if self.training else None
        return y

    def backward(self, dy):
        mask = _require_cache(self, self._cache)
        _check_grad_shape(self, dy, mask.shape)
        if fast.enabled():      # fast path: chunks on threads
            return fast.relu_backward(dy, mask)
        return F.relu_backward(dy, mask)

    def __repr__(self):
        return "ReLU(inplace=True)" if self.inplace else "ReLU()"


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
        if fast.enabled():      # fast path: chunks on threads
            y, norm = fast.l2norm(x, self.params["weight"], self.eps)
        else:                   # textbook
            y, norm = F.l2norm(x, self.params["weight"], self.eps)
        self._cache = (x, norm) if self.training else None
        return y

    def backward(self, dy):
        x, norm = _require_cache(self, self._cache)
        _check_grad_shape(self, dy, x.shape)
        args = (dy, x, norm, self.params["weight"], self.eps)
        if fast.enabled():      # fast path: chunks on threads, partial sums of dweight in order
            dx, self.grads["weight"] = fast.l2norm_backward(*args)
        else:                   # textbook
            dx, self.grads["weight"] = F.l2norm_backward(*args)
        return dx

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
        stats = () if self.training else (self.buffers["running_mean"].astype(x.dtype),
                                          self.buffers["running_var"].astype(x.dtype))
        args = (x, self.params["weight"], self.params["bias"], self.eps, *stats)
        if fast.enabled():      # fast path: chunks on threads, statistics combined in float64
            y, mean, var = fast.batch_norm(*args)
        else:                   # textbook: the whole batch's mean and variance
            y, mean, var = F.batch_norm(*args)
        if self.training:                                             # mean, var: (C,), biased
            m = x.size // self.channels
            unbiased = var * (m / max(m - 1, 1))                      # running_var is unbiased (PyTorch)
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            self.buffers["running_mean"] = ((1 - self.momentum) * rm + self.momentum * mean).astype(rm.dtype)
            self.buffers["running_var"] = ((1 - self.momentum) * rv + self.momentum * unbiased).astype(rv.dtype)
        # keep x (not x-hat: backward recomputes it)
        self._cache = (x, mean, var) if self.training else None
        return y

    def backward(self, dy):
        x, mean, var = _require_cache(self, self._cache)
        _check_grad_shape(self, dy, x.shape)
        args = (dy, x, mean, var, self.params["weight"], self.eps)
        if fast.enabled():      # fast path: chunks on threads, partial sums in order
            dx, dweight, dbias = fast.batch_norm_backward(*args)
        else:                   # textbook
            dx, dweight, dbias = F.batch_norm_backward(*args)
        self.grads["weight"], self.grads["bias"] = dweight, dbias     # (C,) each
        return dx

    def __repr__(self):
        return f"BatchNorm2d({self.channels})"


class Upsample2d(Module):
    """Nearest-neighbour upsampling by an integer ``scale``: (N, C, H, W) -> (N, C, sH, sW).

    No parameters; backward sums each output block's gradient back onto its pixel.
    One plain version (a copy and a sum, no fast path).
    """

    def __init__(self, scale=2):
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
            raise ValueError(f"Upsample2d: scale must be an integer >= 1, got {scale!r}")
        self.scale = int(scale)
        self._cache = None

    def output_shape(self, h, w):
        return h * self.scale, w * self.scale

    def forward(self, x):
        _check_nchw(self, x)
        self._cache = x.shape if self.training else None
        return F.upsample_nearest(x, self.scale)

    def backward(self, dy):
        shape = _require_cache(self, self._cache)
        N, C, H, W = shape
        _check_grad_shape(self, dy, (N, C, H * self.scale, W * self.scale))
        return F.upsample_nearest_backward(dy, self.scale)

    def __repr__(self):
        return f"Upsample2d(scale={self.scale})"


_MOVED_TO_FAST = ("valid_tap_ranges",)


def __getattr__(name):
    """``valid_tap_ranges`` moved to :mod:`minissd.nn.fast` with the other fast paths."""
    if name in _MOVED_TO_FAST:
        warnings.warn(f"minissd.nn.layers.{name} moved to minissd.nn.fast.{name}",
                      DeprecationWarning, stacklevel=2)
        return getattr(fast, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
