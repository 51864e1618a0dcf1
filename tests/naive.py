"""Naive references shared by several test files: the definitions, one loop per index."""
import numpy as np


def naive_conv2d(x, w, b, stride, padding, dilation):
    """The definition, one output pixel and one kernel tap at a time (NumPy, float64)."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    N, C, H, W = x.shape
    K, _, kh, kw = w.shape
    ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((N, K, ho, wo)) + (0 if b is None else b[None, :, None, None])
    for i in range(ho):
        for j in range(wo):
            for p in range(kh):
                for q in range(kw):
                    r, c = i * sh + p * dh - ph, j * sw + q * dw - pw
                    if 0 <= r < H and 0 <= c < W:
                        y[:, :, i, j] += x[:, :, r, c] @ w[:, :, p, q].T    # (N, C) @ (C, K)
    return y
