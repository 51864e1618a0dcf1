"""The CPU fast paths: the operations of :mod:`minissd.nn.functional`, cut to fit the cache and run on threads.

The layers call these instead of the textbook functions while the fast paths
are on (the default). They compute the same thing, in other orders:

- chunks of images: a layer's batch is cut into chunks small enough to stay in
  the CPU's cache across the several passes NumPy makes over them, and the
  chunks run on minissd's threads (:mod:`minissd.nn.threads`);
- bands of rows: an image whose columns are bigger than the cache is cut into
  bands of output rows;
- tap blocks: a dilated convolution skips the kernel taps that land in the
  zero padding (fc6);
- GEMM splits: one big product is cut by rows over the threads (a batch of one);
- kept columns: a small map's columns are kept from forward for dW;
- the transposed convolution: a stride-1 convolution's dx as a convolution.

On CuPy the whole batch is one chunk (a GPU wants few, big kernels), except
for convolution columns bigger than GPU_COL_CHUNK_BYTES; no threads, bands or
tap blocks. The cut depends only on the shapes -- never on the thread count
-- and partial sums are added in chunk order, so results are the same on 1
thread or 16. ``tests/nn/test_fast.py`` checks every function here against
its textbook twin. The timings are in ``benchmarks/README.md``.

Turn the fast paths off with ``set_enabled(False)``, ``with fast_paths(False):``
or the environment variable ``MINISSD_FAST=0``: the layers then run the
textbook versions.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from minissd.nn.backend import get_array_module, is_cupy
from minissd.nn.functional import col2im, conv_output_size, im2col
from minissd.nn.threads import in_parallel_task, num_threads, parallel_map


# --------------------------------------------------------------------------- #
# The switch.
# --------------------------------------------------------------------------- #
def _from_env() -> bool:
    value = os.environ.get("MINISSD_FAST", "1").strip().lower()
    if value in ("1", "on", "true", "yes", ""):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"MINISSD_FAST={value!r}: expected 1 (fast paths on) or 0 (textbook versions)")


_ENABLED = {"on": _from_env()}


def enabled() -> bool:
    """True while the layers take the fast paths (the default; MINISSD_FAST=0 starts with them off)."""
    return _ENABLED["on"]


def set_enabled(on: bool) -> bool:
    """Turn the fast paths on or off for the whole process; returns the previous setting."""
    previous = _ENABLED["on"]
    _ENABLED["on"] = bool(on)
    return previous


@contextlib.contextmanager
def fast_paths(on: bool):
    """``with fast_paths(False): ...`` runs the layers' textbook versions inside the block."""
    previous = set_enabled(on)
    try:
        yield
    finally:
        set_enabled(previous)


# --------------------------------------------------------------------------- #
# Chunks of images.
#
# A layer's work is cut along the batch into chunks of images. On NumPy each
# chunk is small enough to stay in the CPU's cache while the several passes
# NumPy makes over it (im2col's copies and the GEMM reading them; BatchNorm's
# statistics, scale and shift) run, so the batch crosses the memory bus about
# once; and the chunks run on minissd's threads (threads.parallel_map). The
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
# Columns of a chunk of images, or of a band of rows of one image.
#
# A chunk's columns (9x its pixels for a 3x3 kernel) fit COL_CHUNK_BYTES so
# they stay in the cache between im2col writing them and the GEMM reading
# them: one image per chunk for big maps, several for small ones. backward
# recomputes the columns from x rather than keeping them (they would be 9x the
# activations), unless the whole batch's are small (KEEP_COLUMNS_BYTES).
# --------------------------------------------------------------------------- #
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


# --------------------------------------------------------------------------- #
# Convolution: the twins of functional.conv2d, conv2d_weight_grad (+ bias) and
# conv2d_input_grad.
# --------------------------------------------------------------------------- #
def conv2d(x, weight, stride=(1, 1), padding=(0, 0), dilation=(1, 1), bias=None, keep_columns=False):
    """(y, cols): y (N, K, Ho, Wo) as :func:`minissd.nn.functional.conv2d` computes it.

    cols: with ``keep_columns``, the chunks' column matrices (C*kh*kw, B*Ho*Wo)
    if together they take at most KEEP_COLUMNS_BYTES, for
    :func:`conv2d_param_grads` to reuse instead of recomputing them; else None.
    """
    xp = get_array_module(x, weight)
    N, C, H, W = x.shape
    K, _, kh, kw = weight.shape
    ho = conv_output_size(H, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(W, kw, stride[1], padding[1], dilation[1])
    blocks = _tap_blocks(x, (kh, kw), stride, padding, dilation, (ho, wo))
    if blocks is not None:                                            # many padding taps: skip them
        return _conv_tap_blocks(x, weight, bias, blocks, padding, dilation, (ho, wo)), None
    w2 = weight.reshape(K, C * kh * kw)
    y = xp.empty((N, K, ho * wo), dtype=xp.result_type(x, weight))
    pointwise = _is_pointwise((kh, kw), stride, padding)
    col_bytes = C * kh * kw * ho * wo * x.itemsize                    # one image's columns
    keep = keep_columns and not pointwise and N * col_bytes <= KEEP_COLUMNS_BYTES

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
        return y_rows, None
    chunks = _chunks(x, (C + K) * H * W * x.itemsize if pointwise else col_bytes, COL_CHUNK_BYTES)
    cols = _map_chunks(run, x, chunks)
    return y.reshape(N, K, ho, wo), (list(zip(chunks, cols)) if keep else None)


def conv2d_param_grads(x, dy, kernel, stride=(1, 1), padding=(0, 0), dilation=(1, 1), cols=None,
                       need_bias=True):
    """(dW (K, C, kh, kw), db (K,)) as functional.conv2d_weight_grad and conv2d_bias_grad give them.

    dW is the sum over chunks of dy (K, B*Ho*Wo) @ col.T (B*Ho*Wo, C*kh*kw);
    cols: the chunks' column matrices kept by :func:`conv2d`, or None
    (recomputed from x, chunk by chunk). db is None unless ``need_bias``.
    """
    xp = get_array_module(x, dy)
    N, C, H, W = x.shape
    _, K, ho, wo = dy.shape
    kh, kw = kernel
    blocks = _tap_blocks(x, kernel, stride, padding, dilation, (ho, wo))
    if blocks is not None:                                            # many padding taps: skip them
        return (_weight_grad_tap_blocks(x, dy, blocks, kernel, padding, dilation),
                dy.sum(axis=(0, 2, 3)) if need_bias else None)
    pointwise = _is_pointwise(kernel, stride, padding)

    def run(n0, n1, col=None):
        dy_k = _channel_major(dy[n0:n1])                              # (K, B*Ho*Wo)
        if pointwise:
            col = _channel_major(x[n0:n1])                            # (C, B*H*W)
        elif col is None:
            col = _columns(x[n0:n1], kernel, stride, padding, dilation, (ho, wo))
        # dW.T = col @ dy.T: the same product, faster in OpenBLAS when K is small
        return _matmul(col, dy_k.T), (dy_k.sum(axis=1) if need_bias else None)   # (C*kh*kw, K), (K,)

    bands = None if pointwise or cols is not None else _bands(x, C * kh * kw * wo * x.itemsize, ho)
    if bands is not None:                                             # big images: bands of rows
        dy_rows = dy.reshape(N, K, ho * wo)

        def run_band(n, r0, r1):
            col = _band_columns(x, n, r0, r1, kernel, stride, padding, dilation, wo)
            dy_band = dy_rows[n, :, r0 * wo:r1 * wo]                   # (K, (r1-r0)*Wo)
            return col @ dy_band.T, (dy_band.sum(axis=1) if need_bias else None)

        parts = parallel_map(run_band, bands)
    elif cols is not None:
        parts = _map_chunks(lambda chunk, col: run(*chunk, col), x, cols)
    else:
        bytes_per_image = (C + K) * H * W * x.itemsize if pointwise else C * kh * kw * ho * wo * x.itemsize
        parts = _map_chunks(run, x, _chunks(x, bytes_per_image, COL_CHUNK_BYTES))
    dtype = xp.result_type(x, dy)
    dw_t = _sum_in_order([p[0] for p in parts], xp.zeros((C * kh * kw, K), dtype=dtype))
    dw = xp.ascontiguousarray(dw_t.T).reshape(K, C, kh, kw)
    return dw, (_sum_in_order([p[1] for p in parts], xp.zeros(K, dtype=dtype)) if need_bias else None)


def conv2d_input_grad(dy, weight, x_hw, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """dx (N, C, H, W) as :func:`minissd.nn.functional.conv2d_input_grad` computes it.

    With stride 1 this is a convolution itself (a "transposed convolution"):
    dy padded by d*(k-1) - pad, against the kernel flipped in space with its
    in and out channels swapped, which takes this module's fast paths. Otherwise
    the column gradient W.T @ dy of each chunk goes back through col2im.
    """
    xp = get_array_module(dy, weight)
    N, K, ho, wo = dy.shape
    _, C, kh, kw = weight.shape
    back_pad = (dilation[0] * (kh - 1) - padding[0], dilation[1] * (kw - 1) - padding[1])
    if tuple(stride) == (1, 1) and min(back_pad) >= 0:
        flipped = xp.ascontiguousarray(weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])  # (C, K, kh, kw)
        return conv2d(dy, flipped, (1, 1), back_pad, dilation)[0]
    w2t = weight.reshape(K, C * kh * kw).T                            # (C*kh*kw, K)
    dx = xp.empty((N, C, *x_hw), dtype=xp.result_type(dy, weight))

    def run(n0, n1):
        dcol = _matmul(w2t, _channel_major(dy[n0:n1])).reshape(C, kh, kw, n1 - n0, ho, wo)
        dx[n0:n1] = col2im(dcol, (C, n1 - n0, *x_hw), stride, padding, dilation).transpose(1, 0, 2, 3)

    _map_chunks(run, dy, _chunks(dy, C * kh * kw * ho * wo * dy.itemsize, COL_CHUNK_BYTES))
    return dx


# --------------------------------------------------------------------------- #
# Sibling convolutions: convs with the same geometry over the same input (SSD's
# loc and conf heads of a map) run as ONE conv, their weights stacked along the
# output channels: one im2col of the map instead of two, one bigger GEMM
# instead of two small ones. In backward the same stacking gives the input's
# gradient -- the SUM of what the convs send back -- as one transposed conv.
# --------------------------------------------------------------------------- #
def _stacked(convs):
    xp = get_array_module(convs[0].params["weight"])
    first = convs[0]
    for conv in convs[1:]:
        if (conv.kernel_size, conv.stride, conv.padding, conv.dilation) != \
                (first.kernel_size, first.stride, first.padding, first.dilation):
            raise ValueError(f"sibling convs must share kernel, stride, padding and dilation: "
                             f"{first!r} and {conv!r}")
    if any("bias" not in conv.params for conv in convs):
        raise ValueError("sibling convs must all have a bias")
    w = xp.concatenate([conv.params["weight"] for conv in convs])     # (sum K_i, C, kh, kw)
    b = xp.concatenate([conv.params["bias"] for conv in convs])       # (sum K_i,)
    bounds = np.cumsum([0] + [conv.out_channels for conv in convs])
    return w, b, list(zip(bounds[:-1], bounds[1:]))


def sibling_conv2d(x, convs):
    """[conv.forward(x) for conv in convs] (up to rounding), as one conv; caches nothing."""
    first = convs[0]
    w, b, ranges = _stacked(convs)
    y, _ = conv2d(x, w, first.stride, first.padding, first.dilation, bias=b)
    return [y[:, k0:k1] for k0, k1 in ranges]


def sibling_conv2d_backward(x, convs, dys):
    """Fill each conv's grads from its dy (N, K_i, Ho, Wo); return dx, the sum of their input gradients."""
    xp = get_array_module(x)
    first = convs[0]
    w, _, ranges = _stacked(convs)
    dy = xp.concatenate(dys, axis=1)                                  # (N, sum K_i, Ho, Wo)
    dw, db = conv2d_param_grads(x, dy, first.kernel_size, first.stride, first.padding, first.dilation)
    for conv, (k0, k1) in zip(convs, ranges):
        conv.grads["weight"], conv.grads["bias"] = dw[k0:k1], db[k0:k1]
    return conv2d_input_grad(dy, w, x.shape[2:], first.stride, first.padding, first.dilation)


# --------------------------------------------------------------------------- #
# Pooling, ReLU, L2Norm, BatchNorm: chunks of images on the threads.
# --------------------------------------------------------------------------- #
def max_pool2d(x, kernel, stride, padding, out_hw, need_arg=True):
    """(y, arg) as :func:`minissd.nn.functional.max_pool2d` computes them; arg None unless ``need_arg``."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw), (ho, wo) = kernel, stride, padding, out_hw
    # pad with -inf: left/top by `padding`, right/bottom as far as the last window reaches
    hp, wp = (ho - 1) * sh + kh, (wo - 1) * sw + kw
    pad_shape = (max(hp, H + ph), max(wp, W + pw))
    padded = (ph, pw) != (0, 0) or pad_shape != (H + ph, W + pw)
    y = xp.empty((N, C, ho, wo), dtype=x.dtype)
    arg = xp.empty(y.shape, dtype=xp.int8 if kh * kw < 128 else xp.int32) if need_arg else None

    def run(n0, n1):                                                  # a chunk of images, in cache
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
                    # max(arg, (win > out) * (i*kw+j)): two passes, faster than copyto(where=)
                    xp.maximum(arg[n0:n1], (win > out).astype(arg.dtype) * (i * kw + j),
                               out=arg[n0:n1])
                xp.maximum(out, win, out=out)

    _map_chunks(run, x, _chunks(x, C * H * W * x.itemsize))
    return y, arg


def max_pool2d_backward(dy, arg, x_shape, kernel, stride, padding):
    """dx (N, C, H, W) as :func:`minissd.nn.functional.max_pool2d_backward` computes it."""
    xp = get_array_module(dy)
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    _, _, ho, wo = dy.shape
    pad_shape = (N, C, max((ho - 1) * sh + kh, H + ph), max((wo - 1) * sw + kw, W + pw))
    overlapping = sh < kh or sw < kw                                  # pool5: 3x3, stride 1
    # windows that tile the input exactly write every dx entry once: no zeros, no crop
    tiled = (sh, sw) == (kh, kw) and pad_shape == (N, C, (ho - 1) * sh + kh, (wo - 1) * sw + kw) \
        and pad_shape == tuple(x_shape)
    dx = xp.empty(x_shape, dtype=dy.dtype)

    def run(n0, n1):
        dxpad = dx[n0:n1] if tiled else xp.zeros((n1 - n0, *pad_shape[1:]), dtype=dy.dtype)
        for i in range(kh):
            for j in range(kw):
                # each output's gradient goes to the one input that was its maximum
                dx_win = dxpad[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
                hit = arg[n0:n1] == i * kw + j
                if overlapping:
                    dx_win += dy[n0:n1] * hit                         # an input in several windows: add
                else:
                    xp.multiply(dy[n0:n1], hit, out=dx_win)           # each input in one window at most
        if not tiled:
            dx[n0:n1] = dxpad[:, :, ph:ph + H, pw:pw + W]

    _map_chunks(run, dy, _chunks(dy, C * H * W * dy.itemsize))
    return dx


def relu(x, inplace=False, need_mask=True):
    """(y, mask) as :func:`minissd.nn.functional.relu` computes them; mask None unless ``need_mask``."""
    xp = get_array_module(x)
    y = x if inplace else xp.empty_like(x)
    mask = xp.empty(x.shape, dtype=bool) if need_mask else None

    def run(n0, n1):
        xp.maximum(x[n0:n1], 0, out=y[n0:n1])
        if mask is not None:
            xp.greater(y[n0:n1], 0, out=mask[n0:n1])

    _map_chunks(run, x, _chunks(x, x[:1].nbytes))
    return y, mask


def relu_backward(dy, mask):
    """dx as :func:`minissd.nn.functional.relu_backward` computes it."""
    xp = get_array_module(dy)
    dx = xp.empty_like(dy)

    def run(n0, n1):
        xp.multiply(dy[n0:n1], mask[n0:n1], out=dx[n0:n1])

    _map_chunks(run, dy, _chunks(dy, dy[:1].nbytes))
    return dx


def l2norm(x, weight, eps):
    """(y, norm) as :func:`minissd.nn.functional.l2norm` computes them."""
    xp = get_array_module(x)
    w = weight[None, :, None, None]
    norm = xp.empty((x.shape[0], 1, *x.shape[2:]), dtype=x.dtype)    # (N, 1, H, W): ||x|| + eps
    y = xp.empty_like(x)                                              # (N, C, H, W)

    def run(n0, n1):
        xc = x[n0:n1]
        norm[n0:n1] = xp.sqrt((xc * xc).sum(axis=1, keepdims=True)) + eps
        y[n0:n1] = w * (xc / norm[n0:n1])

    _map_chunks(run, x, _chunks(x, x[:1].nbytes))
    return y, norm


def l2norm_backward(dy, x, norm, weight, eps):
    """(dx, dweight) as :func:`minissd.nn.functional.l2norm_backward` computes them."""
    xp = get_array_module(dy)
    w = weight[None, :, None, None]
    dx = xp.empty_like(dy)

    def run(n0, n1):
        xc, nc, dyc = x[n0:n1], norm[n0:n1], dy[n0:n1]
        u = xc / nc                                                   # the unscaled output
        du = dyc * w
        r = nc - eps
        r_safe = xp.where(r > 0, r, 1)
        dot = (du * xc).sum(axis=1, keepdims=True)                    # (B, 1, H, W)
        dx[n0:n1] = du / nc - xc * (dot / (nc * nc * r_safe))
        return (dyc * u).sum(axis=(0, 2, 3))                          # this chunk's share of dw (C,)

    dweight = _sum_in_order(_map_chunks(run, dy, _chunks(dy, dy[:1].nbytes)), xp.zeros_like(weight))
    return dx, dweight


def _batch_stats(x, chunks):
    """Mean and biased variance (C,) of x (N, C, H, W) over (N, H, W).

    Each chunk gives its mean and sum of squared deviations from it; the
    chunks are combined with Chan et al.'s formula (in float64), which does
    not lose precision the way E[x^2] - E[x]^2 can.
    """
    xp = get_array_module(x)
    C = x.shape[1]

    def run(n0, n1):
        xc = x[n0:n1].reshape(n1 - n0, C, -1)                         # (B, C, H*W)
        count = xc.shape[0] * xc.shape[2]
        mean = xc.sum(axis=2).sum(axis=0) / count                     # (C,)
        d = xc - mean[:, None]
        d *= d
        return count, mean.astype(xp.float64), d.sum(axis=2).sum(axis=0).astype(xp.float64)

    parts = _map_chunks(run, x, chunks)
    total = sum(count for count, _, _ in parts)
    mean = _sum_in_order([count * m for count, m, _ in parts]) / total
    m2 = _sum_in_order([ss + count * (m - mean) ** 2 for count, m, ss in parts])
    return mean.astype(x.dtype), (m2 / total).astype(x.dtype)


def batch_norm(x, weight, bias, eps, mean=None, var=None):
    """(y, mean, var) as :func:`minissd.nn.functional.batch_norm` computes them."""
    xp = get_array_module(x)
    chunks = _chunks(x, x[:1].nbytes)
    if mean is None:
        mean, var = _batch_stats(x, chunks)                           # (C,) each, biased variance
    inv_std = (1 / xp.sqrt(var + eps)).astype(x.dtype)               # (C,)
    # y = weight * (x - mean) * inv_std + bias = x * scale + shift: one pass per chunk
    scale = (weight * inv_std).astype(x.dtype)
    shift = (bias - mean * scale).astype(x.dtype)
    y = xp.empty_like(x)

    def run(n0, n1):
        xp.multiply(x[n0:n1], scale[:, None, None], out=y[n0:n1])
        y[n0:n1] += shift[:, None, None]

    _map_chunks(run, x, chunks)
    return y, mean, var


def batch_norm_backward(dy, x, mean, var, weight, eps):
    """(dx, dweight, dbias) as :func:`minissd.nn.functional.batch_norm_backward` computes them."""
    xp = get_array_module(dy)
    C = x.shape[1]
    chunks = _chunks(dy, dy[:1].nbytes)
    inv_std = (1 / xp.sqrt(var + eps)).astype(x.dtype)

    def sums(n0, n1):                                                 # this chunk's dbias, dweight (C,)
        dyc = dy[n0:n1].reshape(n1 - n0, C, -1)                       # (B, C, H*W)
        xhat = (x[n0:n1].reshape(n1 - n0, C, -1) - mean[:, None]) * inv_std[:, None]
        xhat *= dyc
        return dyc.sum(axis=2).sum(axis=0), xhat.sum(axis=2).sum(axis=0)

    parts = _map_chunks(sums, dy, chunks)
    dbias = _sum_in_order([p[0] for p in parts])
    dweight = _sum_in_order([p[1] for p in parts])
    # dx = weight * inv_std * (dy - dbias / m - xhat * dweight / m) is a * dy + b * x + c per channel
    m = x.size // C
    a = weight * inv_std
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
    return dx, dweight, dbias
