"""Pictures of the CNN from scratch (chapters 1-4): where arrays live, pooling's ceil mode,
convolution as one GEMM, dilation's taps, and the backward passes.

    draw_backend_diagram()                 # host and GPU memory, one function per arrow (ch. 1)
    draw_ceil_mode(7, 2, 2)                # pooling windows, floor against ceil (ch. 2)
    show_column_matrix(image, col, 3)      # an image beside its column matrix (ch. 2)
    draw_conv_gemm()                       # im2col's blocks and one window's column (ch. 2)
    draw_dilation_taps((1, 2, 6))          # what a dilated 3x3 kernel reads (ch. 3)
    draw_tap_subsampling(7, 3, 2)          # fc6 -> SSD's 3x3 kernel with dilation 6 (ch. 3)
    show_tap_counts(taps, ranges)          # taps inside the input per output block (ch. 3)
    show_pool_backward(x, dy, dx, wins)    # max-pool's backward (ch. 4)
    draw_conv_backward()                   # dx as scatters and as a flipped convolution (ch. 4)
    draw_gradient_check(ax, numeric, {"analytic": analytic})
"""
from __future__ import annotations

import numpy as np

from minissd.nn.backend import to_numpy


def _grid(ax, x0, y0, rows, cols, face="#eef3fa", edge="#9db3d1", lw=0.6):
    """A rows x cols grid of unit cells with its top-left corner at (x0, y0) (y grows downwards)."""
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((x0, y0), cols, rows, fc=face, ec="none"))
    for r in range(rows + 1):
        ax.plot([x0, x0 + cols], [y0 + r, y0 + r], color=edge, lw=lw)
    for c in range(cols + 1):
        ax.plot([x0 + c, x0 + c], [y0, y0 + rows], color=edge, lw=lw)


def _cell(ax, x, y, colour, alpha=0.85, w=1, h=1):
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((x, y), w, h, fc=colour, ec="none", alpha=alpha))


def draw_conv_gemm(batch=2, channels=2, size=5, out_channels=3, kernel=3, output=(0, 1, 1),
                   out_channel=1, width: float = 15.0):
    """A kernel sliding over a batch of images, and the convolution as one GEMM; -> the figure.

    Left: ``batch`` images (rows) of ``channels`` (columns) of size x size (stride 1, no padding),
    the window of output ``output`` = (n, i, j) (red) and of the next position (orange). Right:
    W (K, C*kh*kw) @ col (C*kh*kw, N*Ho*Wo) = Y (K, N*Ho*Wo), every cell drawn: the window's
    column of col (rows ordered (c, p, q), columns (n, i, j)), row ``out_channel`` of W, and the
    one output entry they make.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    N, C, S, K, k = batch, channels, size, out_channels, kernel
    out = S - k + 1                                              # Ho = Wo (stride 1, no padding)
    n, i, j = output
    if not (0 <= n < N and 0 <= i < out and 0 <= j < out and 0 <= out_channel < K):
        raise ValueError(f"draw_conv_gemm: output {output} / out_channel {out_channel} outside "
                         f"the (N, Ho, Wo) = ({N}, {out}, {out}) outputs and K = {K} channels")
    rows, cols = C * k * k, N * out * out
    red, orange = "#d62728", "#ff7f0e"
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(width, width * 0.36),
                                   gridspec_kw={"width_ratios": [1, 2.6]},
                                   dpi=max(100, plt.rcParams["figure.dpi"]))
    # --- the images (rows) and their channels (columns), with the window sliding ---------------
    for m in range(N):
        for c in range(C):
            x0, y0 = c * (S + 1), m * (S + 1.6)
            _grid(ax0, x0, y0, S, S)
            if m == n:
                for (ii, jj), colour, ls in (((i, j), red, "-"), ((i, j + 1), orange, "--")):
                    if jj < out:
                        ax0.add_patch(Rectangle((x0 + jj, y0 + ii), k, k, fill=False, ec=colour,
                                                lw=2.5, ls=ls, zorder=3))
            ax0.text(x0 + S / 2, y0 - 0.15, f"image {m}, channel {c}", ha="center", va="bottom",
                     fontsize=10)
    ax0.text(-0.2, N * (S + 1.6) - 0.9, f"kernel {k}x{k} x {C} channels; red: the window of output\n"
             f"(n, i, j) = {output}; orange: the next one, a stride to the right", fontsize=10,
             va="top")
    ax0.set_xlim(-0.5, C * (S + 1))
    ax0.set_ylim(N * (S + 1.6) + 1.6, -1.4)
    ax0.set_aspect("equal")
    ax0.set_axis_off()
    # --- W @ col = Y, cell by cell ------------------------------------------------------------
    gap = 3.0
    wx, colx = 0.0, rows + gap                                     # W is K x rows, col is rows x cols
    yx = colx + cols + gap
    top_w = (rows - K) / 2                                         # W and Y centred on col
    _grid(ax1, wx, top_w, K, rows)
    _grid(ax1, colx, 0, rows, cols)
    _grid(ax1, yx, top_w, K, cols)
    column = n * out * out + i * out + j                          # output (n, i, j)'s column
    for colour, col_j in ((red, column), (orange, column + 1 if j + 1 < out else None)):
        if col_j is None:
            continue
        alpha = 0.85 if colour == red else 0.45
        _cell(ax1, colx + col_j, 0, colour, alpha, h=rows)
        _cell(ax1, yx + col_j, top_w + out_channel, colour, alpha)
    _cell(ax1, wx, top_w + out_channel, red, 0.85, w=rows)
    for c in range(1, C):                                          # channel blocks of the rows
        ax1.plot([colx - 0.4, colx + cols + 0.4], [c * k * k] * 2, color="#555555", lw=1.2)
        ax1.plot([wx + c * k * k] * 2, [top_w - 0.4, top_w + K + 0.4], color="#555555", lw=1.2)
    for m in range(1, N):                                          # image blocks of the columns
        for x in (colx, yx):
            ax1.plot([x + m * out * out] * 2, [-0.4, rows + 0.4] if x == colx else
                     [top_w - 0.4, top_w + K + 0.4], color="#555555", lw=1.2)
    mid = rows / 2
    ax1.text(colx - gap / 2, mid, "@", ha="center", va="center", fontsize=18)
    ax1.text(yx - gap / 2, mid, "=", ha="center", va="center", fontsize=18)
    fs = 10.5
    ax1.text(wx + rows / 2, top_w - 1.0, f"W  (K, C·kh·kw) = ({K}, {rows})\nrow {out_channel}: "
             f"output channel {out_channel}'s kernel", ha="center", va="bottom", fontsize=fs)
    ax1.text(colx + cols / 2, rows + 0.8, f"col  (C·kh·kw, N·Ho·Wo) = ({rows}, {cols})\n"
             f"rows (c, p, q), columns (n, i, j); red: the window of {output}",
             ha="center", va="top", fontsize=fs)
    ax1.text(yx + cols / 2, top_w + K + 1.0, f"Y  (K, N·Ho·Wo) = ({K}, {cols})\n"
             f"-> reshape (K, N, Ho, Wo) -> NCHW", ha="center", va="top", fontsize=fs)
    ax1.set_xlim(-0.5, yx + cols + 0.5)
    ax1.set_ylim(rows + 3.2, -1.2)
    ax1.set_aspect("equal")
    ax1.set_axis_off()
    fig.suptitle(f"convolution = im2col + one GEMM: {N} images x {C} channels {S}x{S}, "
                 f"{K} kernels {k}x{k}, output {N} x {K} x {out}x{out}", fontsize=12)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.02, wspace=0.05)
    return fig


def _matrix(ax, values, title, marks=(), fmt="{:g}", fontsize=11):
    """A small matrix drawn cell by cell with its numbers; marks: [(r0, c0, rows, cols, colour)]."""
    from matplotlib.patches import Rectangle

    values = np.asarray(values)
    rows, cols = values.shape
    _grid(ax, 0, 0, rows, cols)
    for r0, c0, h, w, colour in marks:
        ax.add_patch(Rectangle((c0, r0), w, h, fc=colour, ec=colour, alpha=0.35, lw=2))
        ax.add_patch(Rectangle((c0, r0), w, h, fill=False, ec=colour, lw=2.5, zorder=3))
    for (r, c), v in np.ndenumerate(values):
        ax.text(c + 0.5, r + 0.5, fmt.format(v + 0.0), ha="center", va="center", fontsize=fontsize,
                color="#999999" if v == 0 else "black", zorder=4)
    ax.set_xlim(-0.2, cols + 0.2)
    ax.set_ylim(rows + 0.2, -0.2)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(title, fontsize=11)


def show_pool_backward(x, dy, dx, wins, width: float = 14.0):
    """Max-pooling's backward as four maps; -> figure.

    ``x`` (H, W) the input of a 2x2/2 pool, with its window maxima dotted (the nonzeros
    of ``dx``); ``dy`` (H/2, W/2) the upstream gradient; ``dx`` (H, W) what backward
    returns; ``wins`` (H, W): a 3x3/1/1 pool's backward of dy = 1, the windows each
    pixel wins.
    """
    import matplotlib.pyplot as plt

    x, dy, dx, wins = (np.asarray(to_numpy(a), np.float64) for a in (x, dy, dx, wins))
    fig, axes = plt.subplots(1, 4, figsize=(width, width / 4))
    lim = np.abs(dy).max()
    panels = ((x, "viridis", None, "input x, 2×2/2 windows\n(white dots: window maxima)"),
              (dy, "coolwarm", lim, f"upstream gradient dy ({dy.shape[0]}×{dy.shape[1]})"),
              (dx, "coolwarm", lim, f"dx = pool.backward(dy) ({dx.shape[0]}×{dx.shape[1]})"),
              (wins, "magma", None, "pool5 3×3/1/1, dy = 1:\nwindows won by each pixel"))
    for ax, (values, cmap, sym, title) in zip(axes, panels):
        limits = dict(vmin=-sym, vmax=sym) if sym is not None else {}
        fig.colorbar(ax.imshow(values, cmap=cmap, **limits), ax=ax, fraction=0.046)
        ax.set_title(title)
        ax.set_xlabel("column")
        n = values.shape[0]
        ticks = range(0, n, 1 if n <= 4 else 2)
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
    rows, cols = np.nonzero(dx)
    axes[0].scatter(cols, rows, c="white", s=40, edgecolors="k")
    axes[0].set_xticks(np.arange(-.5, x.shape[1], 2), minor=True)
    axes[0].set_yticks(np.arange(-.5, x.shape[0], 2), minor=True)
    axes[0].grid(which="minor", color="w", lw=1.5)
    axes[0].set_ylabel("row")
    fig.tight_layout()
    return fig


def draw_conv_backward(dy=None, weight=None, output=(0, 2), pixel=(1, 2), width: float = 15.0):
    """Convolution's input gradient two ways, with numbers; -> (figure, dx).

    One channel, stride 1, no padding: dy (Ho, Wo), weight (k, k), dx (Ho + k - 1, Wo + k - 1)
    computed by ``functional.conv2d_input_grad``. Panels: dy (entry ``output`` in red); the
    kernel; that entry's scatter dy[i, j] * W onto the window it read (col2im, one column);
    dx, the sum of all scatters (pixel ``pixel`` in blue); and dx as a transposed convolution:
    dy zero-padded by k - 1, the kernel flipped, its window at ``pixel`` giving dx[pixel].
    """
    import matplotlib.pyplot as plt

    from minissd.nn.functional import conv2d_input_grad

    dy = np.array([[1, 0, 2], [0, 1, 0], [3, 0, 1]], float) if dy is None else np.asarray(dy, float)
    weight = (np.array([[1, 2, 0], [0, 1, 0], [-1, 0, 1]], float) if weight is None
              else np.asarray(weight, float))
    (ho, wo), k = dy.shape, weight.shape[0]
    if weight.shape != (k, k) or dy.ndim != 2:
        raise ValueError(f"draw_conv_backward: expected dy (Ho, Wo) and a square weight (k, k), "
                         f"got {dy.shape} and {weight.shape}")
    H, W = ho + k - 1, wo + k - 1
    i, j = output
    h, w = pixel
    if not (0 <= i < ho and 0 <= j < wo and 0 <= h < H and 0 <= w < W):
        raise ValueError(f"draw_conv_backward: output {output} must lie in dy {dy.shape} and "
                         f"pixel {pixel} in dx {(H, W)}")
    dx = conv2d_input_grad(dy[None, None], weight[None, None], (H, W))[0, 0]      # (H, W)
    scatter = np.zeros((H, W))
    scatter[i:i + k, j:j + k] = dy[i, j] * weight
    padded = np.pad(dy, k - 1)                                                      # (H + k - 1, ..)
    red, blue = "#d62728", "#1f77b4"
    fig, axes = plt.subplots(1, 5, figsize=(width, width * 0.27),
                             gridspec_kw={"width_ratios": [wo, k, W, W, W + k - 1]},
                             dpi=max(100, plt.rcParams["figure.dpi"]))
    _matrix(axes[0], dy, f"dy  ({ho}, {wo})\nentry {output} in red", [(i, j, 1, 1, red)])
    _matrix(axes[1], weight, f"kernel W  ({k}, {k})")
    _matrix(axes[2], scatter, f"its scatter: dy{list(output)} * W\nonto the window it read",
            [(i, j, k, k, red)])
    _matrix(axes[3], dx, f"dx ({H}, {W}): all {ho * wo} scatters\nsummed (col2im)",
            [(h, w, 1, 1, blue)])
    _matrix(axes[4], padded, f"= dy padded by {k - 1}, convolved with\nW flipped: "
            f"dx{list(pixel)} = {dx[h, w]:g}", [(h, w, k, k, blue)])
    for (r, c), v in np.ndenumerate(weight[::-1, ::-1]):                 # the flipped kernel's taps
        axes[4].text(w + c + 0.93, h + r + 0.1, f"x{v:g}", ha="right", va="top", fontsize=8.5,
                     color=blue, zorder=5)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.8, bottom=0.03, wspace=0.12)
    return fig, dx


def draw_gradient_check(ax, numeric, analytic):
    """Analytic against numerical gradients, one scatter per {label: (n,) values}; -> ax.

    The first series is drawn as filled dots (the one that should sit on the diagonal), the others
    as open markers; the grey diagonal is analytic = numerical.
    """
    numeric = np.asarray(to_numpy(numeric), np.float64).reshape(-1)
    markers, colours = ("o", "^", "s", "D", "v"), ("tab:blue", "tab:orange", "tab:green", "tab:red",
                                                   "tab:purple")
    for n, (label, values) in enumerate(analytic.items()):
        values = np.asarray(to_numpy(values), np.float64).reshape(-1)
        if values.shape != numeric.shape:
            raise ValueError(f"draw_gradient_check: '{label}' has {values.size} values, the numerical "
                             f"gradient {numeric.size}")
        colour = colours[n % len(colours)]
        ax.scatter(numeric, values, marker=markers[n % len(markers)], s=36, label=label,
                   color=colour, facecolors=colour if n == 0 else "none")
    values = [np.abs(np.asarray(to_numpy(v), np.float64)).max(initial=0.0) for v in analytic.values()]
    lim = 1.1 * max([np.abs(numeric).max(initial=0.0)] + values)          # over every point drawn
    lim = lim if lim > 1e-9 else 1.0              # all at 0 (up to rounding): a diagonal of +-1
    ax.plot([-lim, lim], [-lim, lim], color="0.6", lw=1, zorder=0, label="analytic = numerical")
    ax.set_xlabel("numerical gradient (central differences)")
    ax.set_ylabel("analytic gradient (backward)")
    ax.legend(fontsize=9, loc="upper left")
    ax.grid(alpha=0.3)
    return ax


def draw_backend_diagram(ax=None, width: float = 8.0):
    """Host and GPU memory, with the ``minissd.nn.backend`` call of each arrow (chapter 1); -> ax."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    if ax is None:
        _, ax = plt.subplots(figsize=(width, 0.35 * width))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 4)
    ax.axis("off")
    for x0, title, body, colour in [(0.2, "host memory (CPU)", "numpy.ndarray\nxp = numpy", "#cfe2f3"),
                                    (6.8, "GPU memory (CUDA)", "cupy.ndarray\nxp = cupy", "#d9ead3")]:
        ax.add_patch(FancyBboxPatch((x0, 0.6), 3.0, 2.6, boxstyle="round,pad=0.1", fc=colour, ec="k"))
        ax.text(x0 + 1.5, 2.8, title, ha="center", fontsize=11, weight="bold")
        ax.text(x0 + 1.5, 1.5, body, ha="center", va="center", family="monospace")
    ax.add_patch(FancyArrowPatch((3.5, 2.4), (6.6, 2.4), arrowstyle="-|>", mutation_scale=18))
    ax.add_patch(FancyArrowPatch((6.6, 1.3), (3.5, 1.3), arrowstyle="-|>", mutation_scale=18))
    ax.text(5.05, 2.6, "to_device(x, 'cuda')\nmodel.to('cuda')", ha="center", va="bottom",
            family="monospace", fontsize=9)
    ax.text(5.05, 1.1, "to_numpy(x)\nto_device(x, 'cpu')\nmodel.to('cpu')", ha="center", va="top",
            family="monospace", fontsize=9)
    ax.set_title("minissd.nn.backend: one function per arrow; numeric code picks "
                 "xp = get_array_module(x)")
    return ax


def draw_ceil_mode(n_in: int = 7, kernel: int = 2, stride: int = 2, width: float = 8.0):
    """1-D pooling windows over ``n_in`` inputs, rounding the output size down and up; -> axes.

    The output counts come from ``functional.conv_output_size``; with ``ceil_mode`` the last
    window may hang over the end, where it reads the -inf padding (drawn dashed).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from minissd.nn.functional import conv_output_size

    fig, axes = plt.subplots(2, 1, figsize=(width, 0.4 * width), sharex=True)
    colours = plt.cm.tab10.colors
    for ax, ceil in zip(axes, [False, True]):
        n_out = conv_output_size(n_in, kernel, stride, ceil_mode=ceil)
        for t in range(n_in):
            ax.add_patch(Rectangle((t, 0), 1, 1, fc="0.9", ec="k"))
            ax.text(t + 0.5, 0.5, f"x{t}", ha="center", va="center")
        reach = (n_out - 1) * stride + kernel                 # inputs the last window reaches
        for t in range(n_in, reach):                          # past the end: padded with -inf
            ax.add_patch(Rectangle((t, 0), 1, 1, fc="white", ec="0.6", ls="--"))
            ax.text(t + 0.5, 0.5, "−∞", ha="center", va="center", color="0.5")
        for o in range(n_out):
            y = 1.15 + 0.12 * (o % 2)                         # alternate rows: overlaps stay visible
            ax.add_patch(Rectangle((o * stride + 0.08, y), kernel - 0.16, 0.5,
                                   fc=colours[o % len(colours)], alpha=0.6, ec="k"))
            ax.text(o * stride + kernel / 2, y + 0.25, f"y{o}", ha="center", va="center")
        ax.set_ylim(-0.1, 2.0)
        ax.set_yticks([])
        ax.set_title(f"ceil_mode={ceil}: {n_in} inputs -> {n_out} outputs "
                     f"(conv_output_size({n_in}, {kernel}, {stride}, ceil_mode={ceil}) = {n_out})")
    last = max(n_in, (conv_output_size(n_in, kernel, stride, ceil_mode=True) - 1) * stride + kernel)
    axes[1].set_xlim(-0.2, last + 0.2)
    axes[1].set_xticks(np.arange(last) + 0.5, [str(t) for t in range(last)])
    axes[1].set_xlabel("input position")
    fig.tight_layout()
    return axes


def _tap_grid(ax, grid, colours, centred: bool):
    """``grid`` (n, n) of small integers drawn as squares of ``colours``, with pixel borders.

    Pixel (0, 0) sits at coordinates (0, 0), or, ``centred``, the middle pixel does.
    """
    from matplotlib.colors import ListedColormap

    n = grid.shape[0]
    half = n // 2 if centred else 0
    extent = (-half - 0.5, n - half - 0.5, n - half - 0.5, -half - 0.5)
    ax.imshow(grid, cmap=ListedColormap(colours), vmin=0, vmax=len(colours) - 1, extent=extent,
              interpolation="nearest")
    edges = np.arange(n + 1) - half - 0.5                                 # pixel borders
    ax.set_xticks(edges, minor=True)
    ax.set_yticks(edges, minor=True)
    ax.grid(which="minor", color="0.75", lw=0.5)
    ax.tick_params(which="minor", length=0)


def draw_dilation_taps(dilations=(1, 2, 6), kernel: int = 3, width: float = 11.0):
    """The pixels a ``kernel`` x ``kernel`` kernel reads for the centre output, per dilation; -> axes.

    Dark: the kernel's taps, ``dilation`` pixels apart; light: the window they span,
    ``dilation * (kernel - 1) + 1`` pixels wide. One panel per dilation, on the same grid.
    """
    import matplotlib.pyplot as plt

    half = max(dilations) * (kernel // 2) + 1                 # the widest window and a border
    fig, axes = plt.subplots(1, len(dilations), figsize=(width, 0.36 * width), squeeze=False)
    axes = axes[0]
    offsets = np.arange(kernel) - kernel // 2                   # tap offsets in kernel units
    for ax, d in zip(axes, dilations):
        grid = np.zeros((2 * half + 1, 2 * half + 1), dtype=int)
        reach = d * (kernel // 2)
        grid[half - reach:half + reach + 1, half - reach:half + reach + 1] = 1   # the window spanned
        for p in offsets:
            for q in offsets:
                grid[half + d * p, half + d * q] = 2                              # a tap
        _tap_grid(ax, grid, ["white", "#d9d9d9", "#262626"], centred=True)
        ticks = [t for t in range(-half, half + 1) if t % 3 == 0]
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        span = d * (kernel - 1) + 1
        ax.set_title(f"dilation {d}: {kernel * kernel} weights, {span}×{span} window")
        ax.set_xlabel("column offset from the output pixel")
    axes[0].set_ylabel("row offset")
    fig.tight_layout()
    return axes


def draw_tap_subsampling(kernel: int = 7, keep_every: int = 3, spread: int = 2,
                         width: float = 12.0):
    """How SSD turns VGG's fc6 into a 3x3 kernel with dilation 6 (chapter 3); -> axes.

    Three panels: the ``kernel`` x ``kernel`` taps on the old map, with every ``keep_every``-th
    one kept (orange); the same kernel on a map ``spread`` times finer (pool5 made stride 1),
    so dilation ``spread``; and the kept taps alone, ``spread * keep_every`` pixels apart.
    """
    import matplotlib.pyplot as plt

    span = spread * (kernel - 1) + 1                           # window on the finer map
    kept_old = set(range(0, kernel, keep_every))
    kept_new = {spread * t for t in kept_old}
    d = spread * keep_every
    panels = [
        (kernel, range(kernel), kept_old, f"VGG fc6 on the old pool5 map\n{kernel}×{kernel} taps, "
         "1 pixel apart", "column (old pool5 pixels)"),
        (span, range(0, span, spread), kept_new, f"the same kernel on the new map\n{kernel}×{kernel}, "
         f"dilation {spread}: {span}×{span} window", "column (new pool5 pixels)"),
        (span, sorted(kept_new), kept_new, f"SSD fc6 = kept taps\n{len(kept_old)}×{len(kept_old)}, "
         f"dilation {d}: {span}×{span} window", "column (new pool5 pixels)"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(width, 0.34 * width))
    for ax, (n, taps, kept, title, xlabel) in zip(axes, panels):
        grid = np.zeros((n, n), dtype=int)
        for p in taps:
            for q in taps:
                grid[p, q] = 2 if (p in kept and q in kept) else 1
        _tap_grid(ax, grid, ["white", "0.45", "tab:orange"], centred=False)
        ax.set_xticks(range(0, n, 2 if n > 7 else 1))
        ax.set_yticks(range(0, n, 2 if n > 7 else 1))
        ax.set_title(title)
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("row")
    fig.tight_layout()
    return axes


def show_tap_counts(taps, ranges, title: str = "", ax=None, size: float = 5.6):
    """``taps`` (H, W): how many kernel taps of each output read the input, not the padding.

    ``ranges``: ``fast.valid_tap_ranges``'s runs, one per block of outputs that see the same
    taps; each block is labelled with its count. -> ax.
    """
    import matplotlib.pyplot as plt

    taps = np.asarray(taps)
    if ax is None:
        _, ax = plt.subplots(figsize=(size, size))
    top = max(int(taps.max()), 1)
    ax.imshow(taps, cmap="Blues", vmin=0, vmax=1.1 * top)
    for r0, r1, _, _ in ranges:
        for c0, c1, _, _ in ranges:
            n = taps[r0, c0]
            ax.text((c0 + c1 - 1) / 2, (r0 + r1 - 1) / 2, str(n), ha="center", va="center",
                    fontsize=14, color="white" if n > 0.6 * top else "black")   # dark blue: white
    h, w = taps.shape
    ticks = sorted({0, w - 1} | {r0 for r0, *_ in ranges})
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel(f"output column x (of {w})")
    ax.set_ylabel(f"output row y (of {h})")
    ax.set_title(title or f"taps inside the input, {h}×{w} outputs")
    return ax


def show_column_matrix(image, col, kernel: int, output=(1, 1), stride: int = 1, width: float = 10.0):
    """A one-channel image (H, W) beside its column matrix (k*k, Ho*Wo), every value written.

    Red: the window of output ``output`` = (i, j) in the image, and its column (i * Wo + j) in
    the matrix; rows are the kernel offsets (p, q), columns the output positions. -> axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    image, col = np.asarray(to_numpy(image)), np.asarray(to_numpy(col))
    (h, w), k = image.shape, kernel
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    if col.shape != (k * k, ho * wo):
        raise ValueError(f"show_column_matrix: a {h}x{w} image with a {k}x{k} kernel, stride {stride} "
                         f"has a ({k * k}, {ho * wo}) column matrix, got {col.shape}")
    i, j = output
    lo, hi = min(image.min(), col.min()), max(image.max(), col.max())
    pad = 0.2 * (hi - lo)                                             # numbers readable on every cell
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(width, 0.43 * width),
                                 gridspec_kw={"width_ratios": [1, 1.8]})
    for ax, values in ((a0, image), (a1, col)):
        ax.imshow(values, cmap="Blues", vmin=lo - pad, vmax=hi + pad)
        for (r, c), v in np.ndenumerate(values):
            ax.text(c, r, f"{v:g}", ha="center", va="center")
    a0.add_patch(Rectangle((j * stride - 0.5, i * stride - 0.5), k, k, fill=False, ec="red", lw=2.5))
    a0.set_title(f"input {h}×{w} (pixel = its value)\nred: the window of output ({i}, {j})")
    a0.set_xlabel("column w")
    a0.set_ylabel("row h")
    a1.add_patch(Rectangle((i * wo + j - 0.5, -0.5), 1, k * k, fill=False, ec="red", lw=2.5))
    a1.set_yticks(range(k * k), [f"(p,q)=({p},{q})" for p in range(k) for q in range(k)])
    a1.set_xticks(range(ho * wo), [f"({r},{c})" for r in range(ho) for c in range(wo)], rotation=45)
    a1.set_ylabel("row = kernel offset (p, q)")
    a1.set_xlabel("column = output position (i, j)")
    a1.set_title(f"column matrix (C·kh·kw × Ho·Wo) = ({k * k} × {ho * wo})\n"
                 f"red: column of output ({i}, {j})")
    fig.tight_layout()
    return a0, a1
