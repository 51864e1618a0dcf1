"""Hand-written layers, NCHW, forward and backward: Conv2d (dilated too),
MaxPool2d, ReLU, L2Norm, BatchNorm2d and Sequential.

Each ``forward`` stores a small cache; ``backward`` reads it in reverse and
fills ``grads``. The same lines run on NumPy and CuPy: arrays come in, and
``xp = get_array_module(x)`` picks the library. On NumPy each layer cuts its
batch into cache-sized chunks and runs them on minissd's threads
(``backend.parallel_map``); the cut never depends on the thread count, so
neither do the results.
"""
from __future__ import annotations

import math

import numpy as np

from minissd.nn.backend import get_array_module, in_parallel_task, is_cupy, num_threads, parallel_map
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
# Chunks of images.
#
# A layer's work is cut along the batch into chunks of images. On NumPy each
# chunk is small enough to stay in the CPU's cache while the several passes
# NumPy makes over it (im2col's copies and the GEMM reading them; BatchNorm's
# statistics, scale and shift) run, so the batch crosses the memory bus about
# once; and the chunks run on minissd's threads (backend.parallel_map). The
# cut depends only on the shapes -- never on the thread count -- and partial
# sums are added in chunk order, so results are the same on 1 thread or 16.
# On CuPy the whole batch is one chunk (a GPU wants few, big kernels), except
# for convolution columns bigger than GPU_COL_CHUNK_BYTES.
# --------------------------------------------------------------------------- #
COL_CHUNK_BYTES = 8 * 2**20        # NumPy: one chunk's column buffer, about the L3 cache
GPU_COL_CHUNK_BYTES = 512 * 2**20  # CuPy: big chunks, few kernel launches
KEEP_COLUMNS_BYTES = 8 * 2**20     # small maps: forward keeps the batch's columns for backward
CHUNK_BYTES = 2**20                # NumPy element-wise layers: a chunk of about the L2 cache
MIN_CHUNKS = 8                     # NumPy: at least this many chunks (if the batch has the images)
GEMM_SPLIT_MACS = 2**22            # NumPy: one product this big is split over the threads


def _chunks(x, bytes_per_image, budget=None):
    """(n0, n1) image ranges of x: chunks of at most ``budget`` bytes (at least one image).

    NumPy: at least MIN_CHUNKS chunks when the batch has that many images, so
    that small layers still give every thread work. CuPy: one chunk unless the
    columns exceed GPU_COL_CHUNK_BYTES.
    """
    n = x.shape[0]
    if is_cupy(x):
        step = n if budget is None else max(1, GPU_COL_CHUNK_BYTES // max(1, bytes_per_image))
    else:
        budget = CHUNK_BYTES if budget is None else budget
        step = max(1, min(budget // max(1, bytes_per_image), -(-n // MIN_CHUNKS)))
    return [(n0, min(n0 + step, n)) for n0 in range(0, n, max(1, step))]


def _map_chunks(fn, x, chunks):
    """[fn(n0, n1) for each chunk], on minissd's threads for NumPy arrays, in order."""
    if is_cupy(x):
        return [fn(n0, n1) for n0, n1 in chunks]
    return parallel_map(fn, chunks)


def _sum_in_order(parts, empty=None):
    """parts[0] + parts[1] + ...: partial sums added in chunk order (same result for any
    thread count); ``empty`` (zeros of the right shape) when there are no chunks."""
    if not parts:
        return empty
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def _matmul(a, b):
    """a (M, K) @ b (K, N). On NumPy, a big product outside a pool task is cut by rows of a
    over minissd's threads (batch 1: nothing else to run in parallel)."""
    threads = num_threads()
    if is_cupy(a) or threads == 1 or in_parallel_task() or a.shape[0] < 2 * threads \
            or a.shape[0] * a.shape[1] * b.shape[1] < GEMM_SPLIT_MACS:
        return a @ b
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    bounds = np.linspace(0, a.shape[0], threads + 1).astype(int)

    def rows(i0, i1):
        out[i0:i1] = a[i0:i1] @ b

    parallel_map(rows, list(zip(bounds[:-1], bounds[1:])))
    return out


# --------------------------------------------------------------------------- #
# im2col / col2im: one loop over the kh*kw kernel offsets, never over pixels.
#
# Column layout (C, kh, kw, B, Ho, Wo) for a chunk of B images: reshaped to
# (C*kh*kw, B*Ho*Wo) it is the right operand of ONE GEMM, W (K, C*kh*kw) @ col,
# and dW is one GEMM too. A chunk's columns (9x its pixels for a 3x3 kernel)
# fit COL_CHUNK_BYTES so they stay in the cache between im2col writing them
# and the GEMM reading them: one image per chunk for big maps, several for
# small ones. backward recomputes the columns from x rather than keeping them
# (they would be 9x the activations), unless the whole batch's are small.
# --------------------------------------------------------------------------- #
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


def _columns(x, kernel, stride, padding, dilation, out_hw):
    """The column matrix (C*kh*kw, B*Ho*Wo) of a chunk of images x (B, C, H, W)."""
    (kh, kw), (ho, wo) = kernel, out_hw
    B, C = x.shape[:2]
    col = im2col(x.transpose(1, 0, 2, 3), kh, kw, stride, padding, dilation, out_hw)
    return col.reshape(C * kh * kw, B * ho * wo)


def _band_columns(x, n, r0, r1, kernel, stride, padding, dilation, wo):
    """The columns (C*kh*kw, (r1-r0)*Wo) of output rows r0:r1 of image n of x (N, C, H, W).

    For big images (SSD300's first layers: 207 MB of columns for conv1_2) one
    image is cut into bands of output rows, so that a band's columns fit the
    cache and a batch of one image still gives every thread work.
    """
    xp = get_array_module(x)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    C, H, W = x.shape[1:]
    top, bottom = r0 * sh - ph, (r1 - 1) * sh - ph + dh * (kh - 1) + 1   # input rows [top, bottom)
    slab = xp.zeros((C, 1, bottom - top, W + 2 * pw), dtype=x.dtype)   # zero padding around the band
    t, b = max(top, 0), min(bottom, H)
    slab[:, 0, t - top:b - top, pw:pw + W] = x[n, :, t:b]
    col = im2col(slab, kh, kw, stride, (0, 0), dilation, (r1 - r0, wo))
    return col.reshape(C * kh * kw, (r1 - r0) * wo)


def _bands(x, col_bytes_per_row, ho):
    """(n, r0, r1) work items: bands of output rows whose columns fit COL_CHUNK_BYTES,
    or None when one image's columns fit already (or on CuPy)."""
    rows = COL_CHUNK_BYTES // max(1, col_bytes_per_row)
    if is_cupy(x) or rows >= ho:
        return None
    bands = -(-ho // max(1, rows))
    rows = -(-ho // bands)                                            # bands of (nearly) equal height
    return [(n, r0, min(r0 + rows, ho)) for n in range(x.shape[0]) for r0 in range(0, ho, rows)]


# --------------------------------------------------------------------------- #
# Tap blocks: a convolution that skips the kernel taps falling in the padding.
#
# fc6 (3x3, dilation 6, padding 6) on a 19x19 map: near the border, the taps
# 6 pixels out land in the zero padding -- 38% of fc6's column entries are
# zeros, and the GEMM multiplies them like any other. Cut the output into
# blocks instead: along each axis, the ranges of outputs for which the same
# taps stay inside the input (for fc6: 3 x 3 blocks, the centre one seeing all
# 9 taps, the corners 4). A block's columns hold only its taps, and its GEMM
# takes the matching slice of the weights. The images go innermost -- x as
# (C, H, W, N) -- so that a block's slices copy as long rows. Used on NumPy
# for stride-1 convolutions whose columns would be at least
# TAP_BLOCKS_MIN_ZEROS padding; on CuPy the plain im2col path runs.
# --------------------------------------------------------------------------- #
TAP_BLOCKS_MIN_ZEROS = 0.25


def valid_tap_ranges(size_in, size_out, k, pad, dil):
    """[(o0, o1, t0, t1)] along one axis: outputs o0:o1 all see exactly the taps t0:t1.

    Output o reads input o + t*dil - pad; the taps inside the input for every
    output of a range form one run t0:t1 (the offsets increase with t).
    """
    offsets = [t * dil - pad for t in range(k)]
    cuts = {0, size_out}
    for o in offsets:
        cuts |= {min(max(-o, 0), size_out), min(max(size_in - o, 0), size_out)}
    cuts = sorted(cuts)
    blocks = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        taps = [t for t, o in enumerate(offsets) if a + o >= 0 and b - 1 + o < size_in]
        blocks.append((a, b, taps[0], taps[-1] + 1) if taps else (a, b, 0, 0))
    return blocks


def _tap_blocks(x, kernel, stride, padding, dilation, out_hw):
    """The blocks ((r0, r1, i0, i1), (c0, c1, j0, j1)) of a convolution, the most work
    first, or None where the plain im2col path should run."""
    if is_cupy(x) or tuple(stride) != (1, 1) or min(out_hw) <= 0:
        return None
    (kh, kw), (ph, pw), (dh, dw), (ho, wo) = kernel, padding, dilation, out_hw
    rows = valid_tap_ranges(x.shape[2], ho, kh, ph, dh)
    cols = valid_tap_ranges(x.shape[3], wo, kw, pw, dw)
    used = (sum((r1 - r0) * (i1 - i0) for r0, r1, i0, i1 in rows) / (kh * ho)
            * sum((c1 - c0) * (j1 - j0) for c0, c1, j0, j1 in cols) / (kw * wo))
    if 1 - used < TAP_BLOCKS_MIN_ZEROS:
        return None

    def work(block):
        (r0, r1, i0, i1), (c0, c1, j0, j1) = block
        return (r1 - r0) * (c1 - c0) * (i1 - i0) * (j1 - j0)

    return sorted([(rb, cb) for rb in rows for cb in cols], key=work, reverse=True)


def _transposed(a, axes, channel_axis):
    """a.transpose(axes) as a new contiguous array, copied on the threads a few channels
    (``channel_axis`` of the result) at a time: (N, C, H, W) <-> (C, H, W, N) around the
    tap blocks."""
    view = a.transpose(axes)
    out = np.empty(view.shape, dtype=a.dtype)
    step = max(1, -(-view.shape[channel_axis] // MIN_CHUNKS))

    def run(c0):
        index = (slice(None),) * channel_axis + (slice(c0, c0 + step),)
        out[index] = view[index]

    parallel_map(run, [(c0,) for c0 in range(0, view.shape[channel_axis], step)])
    return out


IMAGES_LAST, IMAGES_FIRST = ((1, 2, 3, 0), 0), ((3, 0, 1, 2), 1)   # (axes, channel axis of the result)


def _block_columns(x_last, block, padding, dilation):
    """The columns (taps*C, h*w*N) of one block of outputs, from x_last (C, H, W, N)."""
    (r0, r1, i0, i1), (c0, c1, j0, j1) = block
    (ph, pw), (dh, dw) = padding, dilation
    h, w = r1 - r0, c1 - c0
    col = np.empty((i1 - i0, j1 - j0, *x_last.shape[:1], h, w, x_last.shape[3]), dtype=x_last.dtype)
    for i in range(i0, i1):
        for j in range(j0, j1):
            top, left = r0 + i * dh - ph, c0 + j * dw - pw
            col[i - i0, j - j0] = x_last[:, top:top + h, left:left + w]
    return col.reshape(-1, h * w * x_last.shape[3])


def _conv_tap_blocks(x, weight, bias, blocks, padding, dilation, out_hw):
    """y (N, K, Ho, Wo) of a stride-1 convolution, block by block (see above)."""
    x_last = _transposed(x, *IMAGES_LAST)                              # (C, H, W, N)
    w_last = np.ascontiguousarray(weight.transpose(0, 2, 3, 1))       # (K, kh, kw, C)
    K, N = weight.shape[0], x.shape[0]
    y_last = np.empty((K, *out_hw, N), dtype=np.result_type(x, weight))

    def run(rows, cols):
        (r0, r1, i0, i1), (c0, c1, j0, j1) = rows, cols
        out = y_last[:, r0:r1, c0:c1]                                 # (K, h, w, N)
        if i0 == i1 or j0 == j1:                                      # no tap reaches the input
            out[...] = 0
        else:
            col = _block_columns(x_last, (rows, cols), padding, dilation)
            out[...] = (w_last[:, i0:i1, j0:j1].reshape(K, -1) @ col).reshape(out.shape)
        if bias is not None:
            out += bias[:, None, None, None]

    parallel_map(run, blocks)
    return _transposed(y_last, *IMAGES_FIRST)


def _weight_grad_tap_blocks(x, dy, blocks, kernel, padding, dilation):
    """dW (K, C, kh, kw) of a stride-1 convolution: each block adds dy_block @ col.T to its taps."""
    x_last = _transposed(x, *IMAGES_LAST)                              # (C, H, W, N)
    dy_last = _transposed(dy, *IMAGES_LAST)                            # (K, Ho, Wo, N)
    K, C = dy.shape[1], x.shape[1]

    def run(rows, cols):
        (r0, r1, i0, i1), (c0, c1, j0, j1) = rows, cols
        if i0 == i1 or j0 == j1:
            return None
        col = _block_columns(x_last, (rows, cols), padding, dilation)  # (taps*C, h*w*N)
        dy_block = np.ascontiguousarray(dy_last[:, r0:r1, c0:c1]).reshape(K, -1)
        return (dy_block @ col.T).reshape(K, i1 - i0, j1 - j0, C)

    dw_last = np.zeros((K, *kernel, C), dtype=np.result_type(x, dy))  # (K, kh, kw, C)
    for ((_, _, i0, i1), (_, _, j0, j1)), part in zip(blocks, parallel_map(run, blocks)):
        if part is not None:                                          # in block order: deterministic
            dw_last[:, i0:i1, j0:j1] += part
    return np.ascontiguousarray(dw_last.transpose(0, 3, 1, 2))


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


def conv2d(x, weight, stride=(1, 1), padding=(0, 0), dilation=(1, 1), bias=None,
           return_columns=False):
    """y (N, K, Ho, Wo) = x (N, C, H, W) cross-correlated with weight (K, C, kh, kw) (+ bias (K,)).

    return_columns: return (y, cols) where cols is the list of the chunks'
    column matrices (C*kh*kw, B*Ho*Wo) if together they take at most
    KEEP_COLUMNS_BYTES (else None), for :func:`conv2d_weight_grad` to reuse
    instead of recomputing them.
    """
    xp = get_array_module(x, weight)
    N, C, H, W = x.shape
    K, _, kh, kw = weight.shape
    ho = conv_output_size(H, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(W, kw, stride[1], padding[1], dilation[1])
    blocks = _tap_blocks(x, (kh, kw), stride, padding, dilation, (ho, wo))
    if blocks is not None:                                            # many padding taps: skip them
        y = _conv_tap_blocks(x, weight, bias, blocks, padding, dilation, (ho, wo))
        return (y, None) if return_columns else y
    w2 = weight.reshape(K, C * kh * kw)
    y = xp.empty((N, K, ho * wo), dtype=xp.result_type(x, weight))
    pointwise = _is_pointwise((kh, kw), stride, padding)
    col_bytes = C * kh * kw * ho * wo * x.itemsize                    # one image's columns
    keep = return_columns and not pointwise and N * col_bytes <= KEEP_COLUMNS_BYTES

    def run(n0, n1):
        if pointwise:                                                 # x is its own column matrix
            y[n0:n1] = xp.matmul(w2, x[n0:n1].reshape(n1 - n0, C, H * W))
            col = None
        else:
            col = _columns(x[n0:n1], (kh, kw), stride, padding, dilation, (ho, wo))
            y[n0:n1] = _batch_major(_matmul(w2, col), n1 - n0)        # (K, B*Ho*Wo) -> (B, K, Ho*Wo)
        if bias is not None:
            y[n0:n1] += bias[:, None]
        return col if keep else None

    bands = None if pointwise else _bands(x, col_bytes // ho, ho)
    if bands is not None:                                             # big images: bands of rows
        y_rows = y.reshape(N, K, ho, wo)

        def run_band(n, r0, r1):
            col = _band_columns(x, n, r0, r1, (kh, kw), stride, padding, dilation, wo)
            y_rows[n, :, r0:r1] = (w2 @ col).reshape(K, r1 - r0, wo)
            if bias is not None:
                y_rows[n, :, r0:r1] += bias[:, None, None]

        parallel_map(run_band, bands)
        return (y_rows, None) if return_columns else y_rows
    chunks = _chunks(x, (C + K) * H * W * x.itemsize if pointwise else col_bytes, COL_CHUNK_BYTES)
    cols = _map_chunks(run, x, chunks)
    y = y.reshape(N, K, ho, wo)
    return (y, list(zip(chunks, cols)) if keep else None) if return_columns else y


def conv2d_weight_grad(x, dy, kernel, stride=(1, 1), padding=(0, 0), dilation=(1, 1), cols=None,
                       with_bias=False):
    """dW (K, C, kh, kw): the sum over chunks of dy (K, B*Ho*Wo) @ col.T (B*Ho*Wo, C*kh*kw).

    cols: the chunks' column matrices from ``conv2d(..., return_columns=True)``,
    if it kept them; otherwise they are recomputed from x, chunk by chunk.
    with_bias: return (dW, db (K,)), db = dy summed over (N, Ho, Wo).
    """
    xp = get_array_module(x, dy)
    N, C, H, W = x.shape
    _, K, ho, wo = dy.shape
    kh, kw = kernel
    blocks = _tap_blocks(x, kernel, stride, padding, dilation, (ho, wo))
    if blocks is not None:                                            # many padding taps: skip them
        dw = _weight_grad_tap_blocks(x, dy, blocks, kernel, padding, dilation)
        return (dw, dy.sum(axis=(0, 2, 3))) if with_bias else dw
    pointwise = _is_pointwise(kernel, stride, padding)

    def run(n0, n1, col=None):
        dy_k = _channel_major(dy[n0:n1])                              # (K, B*Ho*Wo)
        if pointwise:
            col = _channel_major(x[n0:n1])                            # (C, B*H*W)
        elif col is None:
            col = _columns(x[n0:n1], kernel, stride, padding, dilation, (ho, wo))
        # dW.T = col @ dy.T: the same product, ~20% faster in OpenBLAS when K is small
        dw_t = _matmul(col, dy_k.T)                                   # (C*kh*kw, K)
        return dw_t, (dy_k.sum(axis=1) if with_bias else None)

    bands = None if pointwise or cols is not None else _bands(x, C * kh * kw * wo * x.itemsize, ho)
    if bands is not None:                                             # big images: bands of rows
        dy_rows = dy.reshape(N, K, ho * wo)

        def run_band(n, r0, r1):
            col = _band_columns(x, n, r0, r1, kernel, stride, padding, dilation, wo)
            dy_band = dy_rows[n, :, r0 * wo:r1 * wo]                   # (K, (r1-r0)*Wo)
            return col @ dy_band.T, (dy_band.sum(axis=1) if with_bias else None)

        parts = parallel_map(run_band, bands)
    elif cols is not None:
        parts = _map_chunks(lambda chunk, col: run(*chunk, col), x, cols)
    else:
        bytes_per_image = (C + K) * H * W * x.itemsize if pointwise else C * kh * kw * ho * wo * x.itemsize
        parts = _map_chunks(run, x, _chunks(x, bytes_per_image, COL_CHUNK_BYTES))
    dtype = xp.result_type(x, dy)
    dw_t = _sum_in_order([p[0] for p in parts], xp.zeros((C * kh * kw, K), dtype=dtype))
    dw = xp.ascontiguousarray(dw_t.T).reshape(K, C, kh, kw)
    return (dw, _sum_in_order([p[1] for p in parts], xp.zeros(K, dtype=dtype))) if with_bias else dw


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

    def run(n0, n1):
        dcol = _matmul(w2t, _channel_major(dy[n0:n1])).reshape(C, kh, kw, n1 - n0, ho, wo)
        dx[n0:n1] = col2im(dcol, (C, n1 - n0, *x_hw), stride, padding, dilation).transpose(1, 0, 2, 3)

    _map_chunks(run, dy, _chunks(dy, C * kh * kw * ho * wo * dy.itemsize, COL_CHUNK_BYTES))
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
        args = (x, self.params["weight"], self.stride, self.padding, self.dilation,
                self.params.get("bias"))
        y, cols = conv2d(*args, return_columns=True) if self.training else (conv2d(*args), None)
        # y (N, K, Ho, Wo)
        # keep x itself (not a copy: nothing may change it in place before backward);
        # backward recomputes the columns (9x x for a 3x3 kernel) unless they are small
        self._cache = (x, cols) if self.training else None
        return y

    def backward(self, dy):
        x, cols = _require_cache(self, self._cache)
        _check_grad_shape(self, dy, (x.shape[0], self.out_channels, *self.output_shape(*x.shape[2:])))
        self.param_grads(dy)
        return conv2d_input_grad(dy, self.params["weight"], x.shape[2:], self.stride,
                                 self.padding, self.dilation)         # (N, C, H, W)

    def param_grads(self, dy):
        """Fill grads["weight"] (K, C, kh, kw) and grads["bias"] (K,) from dy; no dx."""
        x, cols = _require_cache(self, self._cache)
        grads = conv2d_weight_grad(x, dy, self.kernel_size, self.stride, self.padding, self.dilation,
                                   cols=cols, with_bias="bias" in self.params)
        if "bias" in self.params:
            self.grads["weight"], self.grads["bias"] = grads
        else:
            self.grads["weight"] = grads

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
        pad_shape = (max(hp, H + ph), max(wp, W + pw))
        padded = (ph, pw) != (0, 0) or pad_shape != (H + ph, W + pw)
        y = xp.empty((N, C, ho, wo), dtype=x.dtype)
        # arg: which window entry (i * kw + j) holds the maximum; only backward needs it
        arg = xp.empty(y.shape, dtype=xp.int8 if kh * kw < 128 else xp.int32) if self.training else None

        def run(n0, n1):                                              # a chunk of images, in cache
            if padded:
                xpad = xp.full((n1 - n0, C, *pad_shape), -xp.inf, dtype=x.dtype)
                xpad[:, :, ph:ph + H, pw:pw + W] = x[n0:n1]
            else:
                xpad = x[n0:n1]
            out = y[n0:n1]
            for i in range(kh):
                for j in range(kw):
                    win = xpad[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]  # (B, C, Ho, Wo)
                    if i == j == 0:
                        out[...] = win
                        if arg is not None:
                            arg[n0:n1] = 0
                        continue
                    if arg is not None:
                        # arg becomes i*kw+j where win beats the maximum so far (strictly: the first
                        # maximum wins ties). Entries are visited in increasing order, so that is
                        # max(arg, (win > out) * (i*kw+j)) -- two fast passes; copyto(where=) is ~5x slower
                        xp.maximum(arg[n0:n1], (win > out).astype(arg.dtype) * (i * kw + j),
                                   out=arg[n0:n1])
                    xp.maximum(out, win, out=out)

        _map_chunks(run, x, _chunks(x, C * H * W * x.itemsize))
        self._cache = (x.shape, (N, C, *pad_shape), arg) if self.training else None
        return y

    def backward(self, dy):
        x_shape, pad_shape, arg = _require_cache(self, self._cache)
        xp = get_array_module(dy)
        N, C, H, W = x_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        _check_grad_shape(self, dy, arg.shape)
        _, _, ho, wo = dy.shape
        overlapping = sh < kh or sw < kw                                  # pool5: 3x3, stride 1
        # windows that tile the input exactly write every dx entry once: no zeros, no crop
        tiled = (sh, sw) == (kh, kw) and tuple(pad_shape) == (N, C, (ho - 1) * sh + kh, (wo - 1) * sw + kw) \
            and tuple(pad_shape) == tuple(x_shape)
        dx = xp.empty(x_shape, dtype=dy.dtype)

        def run(n0, n1):
            dxpad = dx[n0:n1] if tiled else xp.zeros((n1 - n0, *pad_shape[1:]), dtype=dy.dtype)
            for i in range(kh):
                for j in range(kw):
                    # each output's gradient goes to the one input that was its maximum
                    dx_win = dxpad[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
                    hit = arg[n0:n1] == i * kw + j
                    if overlapping:
                        dx_win += dy[n0:n1] * hit                     # an input in several windows: add
                    else:
                        xp.multiply(dy[n0:n1], hit, out=dx_win)       # each input in one window at most
            if not tiled:
                dx[n0:n1] = dxpad[:, :, ph:ph + H, pw:pw + W]

        _map_chunks(run, dy, _chunks(dy, C * H * W * dy.itemsize))
        return dx

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
        xp = get_array_module(x)
        y = x if self.inplace else xp.empty_like(x)
        mask = xp.empty(x.shape, dtype=bool) if self.training else None

        def run(n0, n1):
            xp.maximum(x[n0:n1], 0, out=y[n0:n1])
            if mask is not None:
                xp.greater(y[n0:n1], 0, out=mask[n0:n1])

        _map_chunks(run, x, _chunks(x, x[:1].nbytes))
        self._cache = mask
        return y

    def backward(self, dy):
        mask = _require_cache(self, self._cache)
        _check_grad_shape(self, dy, mask.shape)
        xp = get_array_module(dy)
        dx = xp.empty_like(dy)

        def run(n0, n1):
            xp.multiply(dy[n0:n1], mask[n0:n1], out=dx[n0:n1])

        _map_chunks(run, dy, _chunks(dy, dy[:1].nbytes))
        return dx

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
        xp = get_array_module(x)
        w = self.params["weight"][None, :, None, None]
        n = xp.empty((x.shape[0], 1, *x.shape[2:]), dtype=x.dtype)   # (N, 1, H, W): ||x|| + eps
        y = xp.empty_like(x)                                          # (N, C, H, W)

        def run(n0, n1):
            xc = x[n0:n1]
            n[n0:n1] = xp.sqrt((xc * xc).sum(axis=1, keepdims=True)) + self.eps
            y[n0:n1] = w * (xc / n[n0:n1])

        _map_chunks(run, x, _chunks(x, x[:1].nbytes))
        self._cache = (x, n) if self.training else None
        return y

    def backward(self, dy):
        x, n = _require_cache(self, self._cache)
        _check_grad_shape(self, dy, x.shape)
        xp = get_array_module(dy)
        w = self.params["weight"][None, :, None, None]
        dx = xp.empty_like(dy)

        def run(n0, n1):
            xc, nc, dyc = x[n0:n1], n[n0:n1], dy[n0:n1]
            u = xc / nc                                               # the unscaled output
            du = dyc * w
            # u = x / n, n = ||x|| + eps:  dx = du / n - x * <du, x> / (n^2 ||x||)
            r = nc - self.eps
            r_safe = xp.where(r > 0, r, 1)
            dot = (du * xc).sum(axis=1, keepdims=True)                # (B, 1, H, W)
            dx[n0:n1] = du / nc - xc * (dot / (nc * nc * r_safe))
            return (dyc * u).sum(axis=(0, 2, 3))                      # this chunk's share of dw (C,)

        self.grads["weight"] = _sum_in_order(_map_chunks(run, dy, _chunks(dy, dy[:1].nbytes)),
                                             xp.zeros_like(self.params["weight"]))
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
        xp = get_array_module(x)
        N, C = x.shape[:2]
        chunks = _chunks(x, x[:1].nbytes)
        if self.training:
            mean, var = self._batch_stats(x, chunks)                  # (C,) each, biased variance
            m = x.size // C
            unbiased = var * (m / max(m - 1, 1))                      # running_var is unbiased (PyTorch)
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            self.buffers["running_mean"] = ((1 - self.momentum) * rm + self.momentum * mean).astype(rm.dtype)
            self.buffers["running_var"] = ((1 - self.momentum) * rv + self.momentum * unbiased).astype(rv.dtype)
        else:
            mean = self.buffers["running_mean"].astype(x.dtype)
            var = self.buffers["running_var"].astype(x.dtype)
        inv_std = (1 / xp.sqrt(var + self.eps)).astype(x.dtype)     # (C,)
        # y = weight * (x - mean) * inv_std + bias = x * scale + shift: one pass per chunk
        scale = (self.params["weight"] * inv_std).astype(x.dtype)
        shift = (self.params["bias"] - mean * scale).astype(x.dtype)
        y = xp.empty_like(x)

        def run(n0, n1):
            xp.multiply(x[n0:n1], scale[:, None, None], out=y[n0:n1])
            y[n0:n1] += shift[:, None, None]

        _map_chunks(run, x, chunks)
        # keep x (not x-hat: backward recomputes it chunk by chunk, in cache)
        self._cache = (x, mean.astype(x.dtype), inv_std) if self.training else None
        return y

    @staticmethod
    def _batch_stats(x, chunks):
        """Mean and biased variance (C,) of x (N, C, H, W) over (N, H, W).

        Each chunk gives its mean and sum of squared deviations from it; the
        chunks are combined with Chan et al.'s formula (in float64), which
        does not lose precision the way E[x^2] - E[x]^2 can.
        """
        xp = get_array_module(x)
        C = x.shape[1]

        def run(n0, n1):
            xc = x[n0:n1].reshape(n1 - n0, C, -1)                     # (B, C, H*W)
            count = xc.shape[0] * xc.shape[2]
            mean = xc.sum(axis=2).sum(axis=0) / count                 # (C,)
            d = xc - mean[:, None]
            d *= d
            return count, mean.astype(xp.float64), d.sum(axis=2).sum(axis=0).astype(xp.float64)

        parts = _map_chunks(run, x, chunks)
        total = sum(count for count, _, _ in parts)
        mean = _sum_in_order([count * m for count, m, _ in parts]) / total
        m2 = _sum_in_order([ss + count * (m - mean) ** 2 for count, m, ss in parts])
        return mean.astype(x.dtype), (m2 / total).astype(x.dtype)

    def backward(self, dy):
        x, mean, inv_std = _require_cache(self, self._cache)
        _check_grad_shape(self, dy, x.shape)
        xp = get_array_module(dy)
        N, C = x.shape[:2]
        chunks = _chunks(dy, dy[:1].nbytes)

        def sums(n0, n1):                                             # this chunk's dbias, dweight (C,)
            dyc = dy[n0:n1].reshape(n1 - n0, C, -1)                   # (B, C, H*W)
            xhat = (x[n0:n1].reshape(n1 - n0, C, -1) - mean[:, None]) * inv_std[:, None]
            xhat *= dyc
            return dyc.sum(axis=2).sum(axis=0), xhat.sum(axis=2).sum(axis=0)

        parts = _map_chunks(sums, dy, chunks)
        dbias = _sum_in_order([p[0] for p in parts])
        dweight = _sum_in_order([p[1] for p in parts])
        self.grads["bias"], self.grads["weight"] = dbias, dweight     # (C,) each
        # the batch mean and variance depend on every x, so
        #   dx = weight * inv_std * (dy - dbias / m - xhat * dweight / m),  xhat = (x - mean) * inv_std
        # which is a * dy + b * x + c per channel:
        m = x.size // C
        a = self.params["weight"] * inv_std
        b = -a * inv_std * dweight / m
        c = -a * dbias / m - b * mean
        a, b, c = (v.astype(dy.dtype)[:, None, None] for v in (a, b, c))
        dx = xp.empty_like(dy)

        def run(n0, n1):
            out = dx[n0:n1]
            xp.multiply(dy[n0:n1], a, out=out)
            out += x[n0:n1] * b
            out += c

        _map_chunks(run, dy, chunks)
        return dx

    def __repr__(self):
        return f"BatchNorm2d({self.channels})"
