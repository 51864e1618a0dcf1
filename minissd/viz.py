"""Drawing helpers: boxes with class names and scores, on PIL images or matplotlib axes;
the architecture figure of an SSD model; the pictures of IoU, the offset encoding and the loss balance.

    draw_boxes(image, boxes_xyxy, labels, scores, class_names).save("out.png")
    show_detections(ax, denormalize(batch.images[0]), batch.boxes[0] * 300,
                    batch.labels[0], class_names=ds.class_names)

    draw_architecture(SSD(get_config("ssd300"), 20), highlight="heads")   # the paper's Fig. 2
    draw_iou(ax, box_a, box_b); draw_encoding(ax, prior_cxcywh, box_xyxy)   # chapter 7
    draw_nms_steps(image, boxes, scores, steps, keep, gt_boxes)         # NMS step by step (ch. 10)
    draw_loss_balance(ax, ce, loss.positive[0], loss.negative[0])          # chapter 8
    plot_regression_losses(x, {"smooth L1": (loss, grad)})                # losses and gradients
    show_pool_backward(x, dy, dx, wins)                                    # max-pool's backward (ch. 4)

    show_augmentation_steps(trace(transforms, image, boxes, labels))     # each transform's output
    show_augmented(image, boxes, labels, train_transform(300), seeds=range(4))   # what training sees
    show_judged(ax, image, boxes, labels, scores, gt_boxes, gt_labels)   # TP / FP / missed, with truth
    plot_train_log(read_train_log("runs/x/train_log.jsonl"))           # losses and lr per step

    draw_model_budget(maps, params, macs)       # boxes, parameters, compute per block (chapter 5)
    draw_default_boxes_at(backdrop(photo), cfg, cells)   # one cell's default boxes per map (chapter 6)
    draw_box_scales({"paper": paper_scales(6)}, MAP_NAMES, 300)   # s_k and s'_k per map
    draw_box_shapes([get_config("ssd300"), get_config("ssd-tiny")])   # every shape, boxes per map

Boxes are pixel xyxy; multiply [0, 1] boxes by the image size first. Labels are 1..C
(0 is the background), so the name of label k is ``class_names[k - 1]``.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from minissd.datasets.augment import IMAGENET_MEAN, IMAGENET_STD
from minissd.nn.backend import to_numpy

# matplotlib's "tab10" followed by the darker half of "tab20": distinct, readable colours.
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)
FONT_SIZE = 12


def class_color(label: int) -> tuple[int, int, int]:
    """The RGB colour of a label (1..C), the same in every picture."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def denormalize(image_chw, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """Undo Normalize and ToCHW for display: (3, H, W) float -> uint8 (H, W, 3)."""
    image = to_numpy(image_chw).astype(np.float32)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"denormalize: expected a (3, H, W) image, got shape {image.shape}")
    hwc = image.transpose(1, 2, 0) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(np.round(hwc), 0, 255).astype(np.uint8)


def box_caption(label=None, score=None, class_names=None) -> str:
    """'cat 0.87', 'cat', '3 0.87' or '' from what is known about a box."""
    parts = []
    if label is not None:
        label = int(label)
        parts.append(class_names[label - 1] if class_names and 1 <= label <= len(class_names)
                     else str(label))
    if score is not None:
        parts.append(f"{float(score):.2f}")
    return " ".join(parts)


def _font(size: int):
    """PIL's built-in font at this size (Pillow >= 10.1), else its small bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _per_box(values, n, name):
    if values is None:
        return [None] * n
    values = to_numpy(values).reshape(-1)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries but there are {n} boxes")
    return list(values)


def draw_boxes(image, boxes_xyxy, labels=None, scores=None, class_names=None,
               width: int = 2, font_size: int = FONT_SIZE) -> Image.Image:
    """A copy of the image with the boxes drawn, each captioned with its class and score.

    image: uint8 (H, W, 3) array or PIL image. boxes_xyxy: (n, 4) pixel coordinates.
    labels (n,) in 1..C pick the colour (one per class) and the name in class_names.
    """
    picture = (image.convert("RGB") if isinstance(image, Image.Image)
               else Image.fromarray(to_numpy(image).astype(np.uint8))).copy()
    boxes = to_numpy(boxes_xyxy).reshape(-1, 4)
    labels, scores = _per_box(labels, len(boxes), "labels"), _per_box(scores, len(boxes), "scores")
    draw = ImageDraw.Draw(picture)
    font = _font(font_size)
    for box, label, score in zip(boxes, labels, scores):
        colour = class_color(label) if label is not None else PALETTE[0]
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        caption = box_caption(label, score, class_names)
        if caption:  # white text on a filled tab above the box (inside it at the top edge)
            left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
            tab_w, tab_h = right - left + 4, bottom - top + 4
            ty = y0 - tab_h if y0 - tab_h >= 0 else y0
            tx = max(0.0, min(x0, picture.width - 1 - tab_w))   # the whole tab inside the picture
            draw.rectangle((tx, ty, tx + tab_w, ty + tab_h), fill=colour)
            draw.text((tx + 2, ty + 2 - top), caption, fill=(255, 255, 255), font=font)
    return picture


def show_detections(ax, image, boxes_xyxy, labels=None, scores=None, class_names=None,
                    linewidth: float = 2.0, fontsize: float = 8.0, title: str | None = None):
    """Show an image and its boxes on a matplotlib Axes (for notebooks); returns ax."""
    from matplotlib.patches import Rectangle   # matplotlib only when plotting

    image = to_numpy(image)
    ax.imshow(image)
    boxes = to_numpy(boxes_xyxy).reshape(-1, 4)
    labels, scores = _per_box(labels, len(boxes), "labels"), _per_box(scores, len(boxes), "scores")
    for (x0, y0, x1, y1), label, score in zip(boxes, labels, scores):
        colour = np.array(class_color(label) if label is not None else PALETTE[0]) / 255
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour,
                               linewidth=linewidth))
        caption = box_caption(label, score, class_names)
        if caption:
            ax.text(x0, y0, caption, color="white", fontsize=fontsize, va="bottom",
                    bbox=dict(facecolor=colour, edgecolor="none", pad=1))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=fontsize + 2)
    return ax


def make_grid(pictures, columns: int = 4, pad: int = 4, background=(255, 255, 255)) -> Image.Image:
    """Paste PIL images (or uint8 HWC arrays) into one picture, row by row, in equal cells."""
    pictures = [p if isinstance(p, Image.Image) else Image.fromarray(to_numpy(p)) for p in pictures]
    if not pictures:
        raise ValueError("make_grid: no pictures given")
    cell_w = max(p.width for p in pictures)
    cell_h = max(p.height for p in pictures)
    columns = min(columns, len(pictures))
    rows = -(-len(pictures) // columns)
    size = (columns * (cell_w + pad) + pad, rows * (cell_h + pad) + pad)
    grid = Image.new("RGB", size, background)
    for k, picture in enumerate(pictures):
        row, column = divmod(k, columns)
        corner = (pad + column * (cell_w + pad), pad + row * (cell_h + pad))
        grid.paste(picture.convert("RGB"), corner)
    return grid


def save_grid(pictures, path, columns: int = 4, pad: int = 4) -> Image.Image:
    """make_grid, saved to path (the format follows the extension); returns the grid."""
    grid = make_grid(pictures, columns, pad)
    grid.save(path)
    return grid


# --- convolution as one GEMM (chapter 2) and its backward (chapter 4) ----------------------------
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


def show_source_maps(axes, image, maps, steps, titles, vmin=None, vmax=None, cmap="magma",
                     label=None):
    """The input, then one (m, m) map per source drawn over it, one square per cell; -> axes.

    axes: len(maps) + 1 Axes in a row (the input first), or len(maps) (no input panel; label then
    goes on the first map). image: uint8 (S, S, 3). maps: (m, m) arrays, e.g. a source
    map's mean over channels or its heads' best object score per cell. steps: each map's cell size
    in pixels (``cfg.steps``). vmin/vmax: one colour scale for all maps (None: each its own).
    label: a y-axis label for the input's panel (the row's name).
    """
    axes = list(np.ravel(axes))
    if not (len(maps) == len(steps) == len(titles) and len(axes) in (len(maps), len(maps) + 1)):
        raise ValueError(f"show_source_maps: {len(axes)} axes, {len(maps)} maps, {len(steps)} steps "
                         f"and {len(titles)} titles: expected as many maps, steps and titles, and "
                         f"as many axes or one more")
    image = to_numpy(image)
    S = image.shape[0]
    grey = image.mean(axis=2)
    if len(axes) > len(maps):
        axes[0].imshow(image, extent=(0, S, S, 0))
        axes[0].set_xticks([]); axes[0].set_yticks([])
    if label:
        axes[0].set_ylabel(label, fontsize=10)
    for ax, amap, step, title in zip(axes[len(axes) - len(maps):], maps, steps, titles):
        amap = to_numpy(amap)
        ax.imshow(grey, cmap="gray", extent=(0, S, S, 0))
        im = ax.imshow(amap, cmap=cmap, alpha=0.75, interpolation="nearest", extent=(0, S, S, 0),
                       vmin=vmin, vmax=vmax)
        ax.set_xticks(np.arange(0, S + 1, step)); ax.set_yticks(np.arange(0, S + 1, step))
        ax.tick_params(labelbottom=False, labelleft=False, length=0)
        ax.grid(color="white", lw=0.4, alpha=0.6)
        ax.set_title(title, fontsize=10)
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    return axes


def draw_receptive_fields(model, ax=None, width: float = 11.0):
    """Per source map, bars of its cell step, its two square default boxes and its receptive field
    (``summary.receptive_fields``), in input pixels on a log scale, the image side dashed; -> ax."""
    import matplotlib.pyplot as plt

    from minissd.ssd.summary import receptive_fields

    rows = receptive_fields(model)
    S = model.cfg.image_size
    if ax is None:
        _, ax = plt.subplots(figsize=(width, width * 0.5), dpi=max(100, plt.rcParams["figure.dpi"]))
    bars = (("step", "cell step (px between cells)", "#bab0ac"),
            ("min_size", "default box: small square", "#f28e2b"),
            ("extra_size", "default box: sqrt(min x max) square", "#e15759"),
            ("field", "receptive field", "#4e79a7"))
    x = np.arange(len(rows))
    w = 0.8 / len(bars)
    for b, (key, label, colour) in enumerate(bars):
        values = [r[key] for r in rows]
        ax.bar(x + (b - (len(bars) - 1) / 2) * w, values, w, color=colour, label=label)
        for xi, v in zip(x, values):
            ax.text(xi + (b - (len(bars) - 1) / 2) * w, v * 1.05, f"{v:.0f}", ha="center",
                    va="bottom", fontsize=8)
    ax.axhline(S, color="black", ls="--", lw=1)
    ax.text(-0.45, S * 1.04, f"image side {S} px", ha="left", va="bottom", fontsize=9)
    ax.set_yscale("log")
    ax.set_ylim(min(r["step"] for r in rows) / 1.6, max(r["field"] for r in rows) * 2.2)
    ax.set_xticks(x, [f"{r['name']}\n{r['size']}x{r['size']}" for r in rows])
    ax.set_ylabel("input pixels (log scale)")
    ax.set_title(f"{model.cfg.name}: what each source map's cell sees (receptive field) and the boxes "
                 f"it predicts", fontsize=11)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=9, ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3, which="both")
    return ax


# --- the budget of a network, a gradient check, the default boxes (chapters 5 and 6) -----
def draw_model_budget(maps, params, macs, title=None, width: float = 15.0):
    """Where a model's default boxes, parameters and compute are: three bar charts; -> the figure.

    maps: per source map (name, side m, boxes per cell k); its bar is k·m·m boxes, labelled
    "m²×k = ...". params, macs: {block name: count}, in the order to draw (e.g. parameters and
    multiply-adds summed per block from ``layer_shapes()``); blocks with neither are left out.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(width, width * 0.34),
                             dpi=max(100, plt.rcParams["figure.dpi"]))
    boxes = [k * m * m for _, m, k in maps]
    ax = axes[0]
    bars = ax.bar([f"{n}\n{m}x{m}" for n, m, _ in maps], boxes, color="tab:blue")
    for bar, (_, m, k), b in zip(bars, maps, boxes):
        ax.annotate(f"{m}²×{k}\n= {b:,}", (bar.get_x() + bar.get_width() / 2, b), ha="center",
                    va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_ylim(0, 1.2 * max(boxes))
    ax.set_ylabel("default boxes (k·m·n)")
    ax.set_title(f"Default boxes per source map (total {sum(boxes):,})", fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    groups = [g for g in params if params[g] or macs.get(g, 0)]
    for ax, values, scale, unit, colour, what in (
            (axes[1], params, 1e6, "M", "tab:orange", "Parameters"),
            (axes[2], macs, 1e9, "GMACs", "tab:green", "Compute")):
        ax.bar(groups, [values.get(g, 0) / scale for g in groups], color=colour)
        total = sum(values.values()) / scale
        ax.set_title(f"{what} per block (total {total:.1f} {unit})", fontsize=10)
        ax.tick_params(axis="x", labelsize=8, rotation=45)
    axes[1].set_ylabel("parameters (millions)")
    axes[2].set_ylabel("multiply-adds per image (billions)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


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


def backdrop(image, fade: float = 0.4, step: int = 32) -> np.ndarray:
    """A faded, posterised grey copy of a photo (H, W, 3) -> uint8 (H, W, 3): coloured boxes stand
    out on it, and its few grey levels keep a notebook's PNG small."""
    grey = np.asarray(to_numpy(image), np.float64).mean(axis=2, keepdims=True).repeat(3, axis=2)
    faded = fade * grey + (1 - fade) * 255
    return (np.round(faded / step) * step).clip(0, 255).astype(np.uint8)


def draw_nms_steps(image, boxes, scores, steps, keep, gt_boxes=None, class_name="",
                   shown_above=None, threshold=0.45, width: float = 16.0):
    """Greedy NMS as four panels: the candidates coloured by score, its first two steps
    (the kept box green, the boxes it suppresses dashed red) and what is left; -> figure.

    ``image`` (H, W, 3); ``boxes`` (N, 4) in [0, 1] xyxy, ``scores`` (N,);
    ``steps``: per step (kept index, [suppressed indices]) and ``keep`` the kept indices,
    as an NMS written out by hand returns them; ``gt_boxes`` (G, 4) pixel xyxy, dotted.
    """
    import matplotlib.pyplot as plt

    image = to_numpy(image)
    height, width_px = image.shape[:2]
    pixels = np.asarray(to_numpy(boxes), np.float64).reshape(-1, 4) * ([width_px, height] * 2)
    scores = np.asarray(to_numpy(scores), np.float64).reshape(-1)
    faded = backdrop(image, fade=0.7, step=8)

    fig, axes = plt.subplots(1, 4, figsize=(width, width * 0.28))
    cmap = plt.get_cmap("viridis")
    for ax in axes:
        ax.imshow(faded, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    for j in np.argsort(scores, kind="stable"):                         # the best drawn last
        add_boxes(axes[0], pixels[j], cmap(scores[j]), linewidth=1.2, alpha=0.4 + 0.6 * scores[j])
    above = f"\nwith score > {shown_above}" if shown_above is not None else ""
    axes[0].set_title(f"before NMS: {len(scores)} '{class_name}' boxes{above} (colour = score)",
                      fontsize=10)
    fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1)), ax=axes[0],
                 fraction=0.046, label="score")
    alive = set(range(len(scores)))
    for k, ax in enumerate(axes[1:3]):
        if k >= len(steps):                                              # NMS ended sooner
            ax.set_axis_off()
            continue
        best, suppressed = steps[k]
        add_boxes(ax, pixels[sorted(alive - {best} - set(suppressed))], "0.35", linewidth=0.8)
        add_boxes(ax, pixels[list(suppressed)], "tab:red", linewidth=1.0, linestyle="--")
        add_boxes(ax, pixels[best], "lime", linewidth=2.5)
        ax.set_title(f"step {k + 1}: keep the best ({scores[best]:.2f}, green),\n"
                     f"drop {len(suppressed)} with IoU > {threshold} (red)", fontsize=10)
        alive -= {best, *suppressed}
    add_boxes(axes[3], pixels[list(keep)], "lime", linewidth=2.0)
    for j in keep:
        axes[3].text(*pixels[j, :2], f"{scores[j]:.2f}", color="black", fontsize=8, va="bottom",
                     bbox=dict(facecolor="lime", edgecolor="none", pad=1))
    if gt_boxes is not None:
        add_boxes(axes[3], gt_boxes, "black", linewidth=1.2, linestyle=":")
    axes[3].set_title(f"after NMS: {len(keep)} boxes\n(dotted black: ground truth)", fontsize=10)
    fig.tight_layout()
    return fig


def draw_box_scales(rules, map_names, image_size, ax=None):
    """Default-box scales per source map under one or more rules; -> ax.

    rules: {label: [s_1, ..., s_{m+1}]} (fractions of the image side; the last is the last map's
    s_{m+1}). Per rule, s_k (dots, solid) and s'_k = sqrt(s_k s_{k+1}) (squares, dashed); the right
    axis gives the side in pixels of an image_size input.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 3.9), dpi=max(100, plt.rcParams["figure.dpi"]))
    k = np.arange(1, len(map_names) + 1)
    colours = ("tab:gray", "tab:red", "tab:blue", "tab:green")
    for n, (label, scales) in enumerate(rules.items()):
        scales = np.asarray(scales, np.float64)
        if len(scales) != len(map_names) + 1:
            raise ValueError(f"draw_box_scales: rule '{label}' has {len(scales)} scales, expected "
                             f"{len(map_names) + 1} (one per map and the last map's s_(m+1))")
        s, s_next = scales[:-1], scales[1:]
        colour = colours[n % len(colours)]
        ax.plot(k, s, "o-", color=colour, label=f"$s_k$, {label}")
        ax.plot(k, np.sqrt(s * s_next), "s--", color=colour, alpha=0.6,
                label=f"$s'_k=\\sqrt{{s_k s_{{k+1}}}}$, {label}")
    ax.set_xticks(k, list(map_names))
    ax.set_xlabel("source map $k$ (grid size)")
    ax.set_ylabel("box scale (side / image side)")
    ax.set_ylim(0, 1.05)
    px = ax.secondary_yaxis("right", functions=(lambda v: v * image_size, lambda p: p / image_size))
    px.set_ylabel(f"side in pixels (S = {image_size})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return ax


def _shape_styles(cfg):
    """(label, colour, line style, width) per box shape of any map of cfg, keyed like box_shapes'
    order: 's' and "s'" (the squares), then (a, 'wide') and (a, 'tall') per aspect ratio."""
    styles = {"s": ("square $s_k$", "tab:blue", "-", 2.2),
              "s'": ("square $s'_k$", "tab:cyan", "--", 2.2)}
    ratios = sorted({a for r in cfg.aspect_ratios for a in r})
    pairs = [("tab:orange", "tab:green", "-", 2.2), ("#6a3d9a", "#8c564b", "-.", 2.6),
             ("tab:red", "tab:olive", ":", 2.8)]
    for n, a in enumerate(ratios):
        wide, tall, ls, lw = pairs[n % len(pairs)]
        styles[(a, "wide")] = (f"$a={a:g}$ (wide)", wide, ls, lw)
        styles[(a, "tall")] = (f"$a=1/{a:g}$ (tall)", tall, ls, lw)
    return styles


def _shape_keys(cfg, k):
    """The keys of _shape_styles for map k's boxes, in box_shapes order."""
    return ["s", "s'"] + [(a, side) for a in cfg.aspect_ratios[k] for side in ("wide", "tall")]


def draw_default_boxes_at(image, cfg, cells, point=None, map_names=None, columns: int = 3,
                          panel: float = 4.3, title=None):
    """One panel per source map of cfg: the centres of all its cells, and one cell's default boxes.

    image: (S, S, 3) uint8, the network's input. cells: per map (i, j, boxes), the row and column
    of the cell drawn and its rows of ``default_boxes`` ((A, 4) cx, cy, w, h in [0, 1], in
    box_shapes order: squares s_k and s'_k, then a wide and a tall box per aspect ratio), each
    shape with its own colour and line style, outlined in white so they read on the photo.
    point: (x, y) pixels, marked with a red cross. Panels are ``panel`` inches square (430 px at
    dpi 100); the legend sits below them. -> the figure.
    """
    import matplotlib.pyplot as plt
    import matplotlib.patheffects as pe
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    m = len(cfg.feature_maps)
    if len(cells) != m:
        raise ValueError(f"draw_default_boxes_at: {len(cells)} cells for the {m} maps of {cfg.name}")
    names = map_names or [f"map {k + 1}" for k in range(m)]
    S = cfg.image_size
    rows = -(-m // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * panel, rows * panel + 0.9),
                             dpi=max(100, plt.rcParams["figure.dpi"]), squeeze=False)
    styles = _shape_styles(cfg)
    halo = [pe.withStroke(linewidth=4.5, foreground="white")]
    for k, ax in enumerate(axes.flat):
        if k >= m:
            ax.set_axis_off()
            continue
        f, step = cfg.feature_maps[k], cfg.steps[k]
        i, j, boxes = cells[k]
        boxes = np.asarray(to_numpy(boxes), np.float64).reshape(-1, 4) * S        # (A, 4) pixels
        keys = _shape_keys(cfg, k)
        if len(boxes) != len(keys):
            raise ValueError(f"draw_default_boxes_at: map {k} ({names[k]}) has {len(keys)} boxes "
                             f"per cell, got {len(boxes)}")
        ax.imshow(image, extent=(0, S, S, 0))
        centres = (np.arange(f) + 0.5) * step                                      # pixels
        cx, cy = np.meshgrid(centres, centres)
        ax.plot(cx.ravel(), cy.ravel(), ".", color="k", ms=1 if f > 40 else 1.5 if f > 20 else 4)
        for (bx, by, bw, bh), key in zip(boxes, keys):
            _, colour, style, lw = styles[key]
            ax.add_patch(Rectangle((bx - bw / 2, by - bh / 2), bw, bh, fill=False, ec=colour,
                                   ls=style, lw=lw, path_effects=halo))
        if point is not None:
            ax.plot(*point, "x", color="red", ms=9, mew=2.5)
        ax.set_xlim(-15, S + 15); ax.set_ylim(S + 15, -15)
        ax.set_title(f"{names[k]}: {f}×{f} cells, step {step} px\n{len(boxes)} boxes at cell "
                     f"(i={i}, j={j}), $s_k$ = {cfg.min_sizes[k]:.0f} px", fontsize=10)
        if k >= m - columns:
            ax.set_xlabel(f"x (pixels of the {S}×{S} input)")
        else:
            ax.tick_params(labelbottom=False)                  # the same 0..S as the panel below
        if k % columns == 0:
            ax.set_ylabel("y (pixels)")
    handles = [Line2D([], [], color=c, ls=s, lw=w, label=n) for n, c, s, w in styles.values()]
    handles.append(Line2D([], [], color="k", marker=".", ls="", label="cell centres"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), frameon=False,
               fontsize=10)
    if title:
        fig.suptitle(title, fontsize=12)
    height = rows * panel + 0.9
    fig.tight_layout(rect=(0, 0.9 / height, 1, 1 - (0.45 / height if title else 0)))
    fig.subplots_adjust(hspace=0.3)                            # titles clear of the panel above
    return fig


def draw_box_shapes(cfgs, width: float = 15.0):
    """Per config, every default-box shape centred on the image (a colour per map), then the
    number of default boxes per map (f_k²·k, log scale) of all of them side by side; -> the figure.

    Each legend sits below its panel, off the boxes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from minissd.ssd.priors import box_shapes

    n = len(cfgs)
    fig, axes = plt.subplots(1, n + 1, figsize=(width, width / (n + 1) * 1.3),
                             dpi=max(100, plt.rcParams["figure.dpi"]),
                             gridspec_kw={"width_ratios": [1] * n + [1.3]})
    for ax, c in zip(axes[:n], cfgs):
        colours = plt.cm.viridis(np.linspace(0, 0.9, len(c.feature_maps)))
        ax.add_patch(Rectangle((0, 0), 1, 1, fill=False, ec="k", lw=1.5, ls="--", zorder=3))
        for k, f in enumerate(c.feature_maps):                  # every box shape, centred on the image
            for s, (w, h) in enumerate(box_shapes(c, k)):
                ax.add_patch(Rectangle((0.5 - w / 2, 0.5 - h / 2), w, h, fill=False, ec=colours[k],
                                       lw=1.6, label=f"map {k + 1}: {f}×{f}" if s == 0 else None))
        ax.set_xlim(-0.35, 1.35); ax.set_ylim(1.35, -0.35); ax.set_aspect("equal")
        ax.set_xlabel("x (fraction of the image side)"); ax.set_ylabel("y")
        ax.set_title(f"{c.name}: all box shapes, unclipped\n(dashed: the image)", fontsize=10)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3,
                  frameon=False)
    bar = axes[n]
    width_bar = 0.8 / n
    colours = ("tab:red", "tab:blue", "tab:green", "tab:purple")
    for m, c in enumerate(cfgs):
        counts = c.boxes_per_map
        x = np.arange(len(counts)) + (m - (n - 1) / 2) * width_bar
        bars = bar.bar(x, counts, width_bar, color=colours[m % len(colours)],
                       label=f"{c.name}: P = {sum(counts)}")
        bar.bar_label(bars, fontsize=8)
    most = max(len(c.feature_maps) for c in cfgs)
    bar.set_yscale("log")
    bar.set_ylim(top=bar.get_ylim()[1] * 3)                    # room for the labels and the legend
    bar.set_xticks(range(most), [f"map {k + 1}" for k in range(most)])
    bar.set_xlabel("source map (finest first)"); bar.set_ylabel("default boxes (log scale)")
    bar.set_title("Default boxes per map", fontsize=10)
    bar.legend(fontsize=9, loc="upper right")
    fig.tight_layout()
    return fig


# --- augmentation: one photo through the transforms ------------------------------------------
def _display(image) -> np.ndarray:
    """An augmentation intermediate (float 0..255 or uint8, (H, W, 3)) as uint8 for imshow."""
    return np.clip(np.round(to_numpy(image)), 0, 255).astype(np.uint8)


def show_augmentation_steps(steps, class_names=None, columns: int = 3, panel: float = 3.6,
                            titles=None):
    """One panel per step of ``augment.trace``: its image (drawn to scale) and boxes; -> the figure.

    steps: [(transform or None, (H, W, 3) image in 0..255, (n, 4) pixel boxes, (n,) labels)].
    Each panel is titled with the transform's class name (or ``titles[k]``), the image size and
    the number of boxes; its axes are in pixels, so zooming out shows as larger numbers.
    """
    import matplotlib.pyplot as plt

    if not steps:
        raise ValueError("show_augmentation_steps: no steps given")
    if titles is not None and len(titles) != len(steps):
        raise ValueError(f"show_augmentation_steps: {len(titles)} titles for {len(steps)} steps")
    rows = -(-len(steps) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(panel * columns, panel * rows * 0.92),
                             dpi=max(100, plt.rcParams["figure.dpi"]), squeeze=False)
    for k, (ax, (t, image, boxes, labels)) in enumerate(zip(axes.flat, steps)):
        name = titles[k] if titles is not None else "original" if t is None else type(t).__name__
        h, w = image.shape[:2]
        show_detections(ax, _display(image), boxes, labels, class_names=class_names, fontsize=8,
                        linewidth=2.5)
        ax.set_axis_on()                                       # pixel axes: the sizes to compare
        ax.tick_params(labelsize=8)
        ax.set_title(f"{k}. {name}\n{w}x{h}, {len(boxes)} box{'es' * (len(boxes) != 1)}", fontsize=10)
    for ax in axes.flat[len(steps):]:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def show_augmented(image, boxes, labels, transform, seeds, class_names=None, axes=None,
                   panel: float = 3.2):
    """The photo, then ``transform`` (a training pipeline ending in Normalize and ToCHW, boxes in
    [0, 1]) applied once per seed, boxes drawn: what the network is given; -> the axes.

    image: uint8 (H, W, 3); boxes (n, 4) pixel xyxy; labels (n,). axes: len(seeds) + 1 Axes,
    or None for a new figure in one row.
    """
    import matplotlib.pyplot as plt

    seeds = list(seeds)
    if axes is None:
        _, axes = plt.subplots(1, len(seeds) + 1, figsize=(panel * (len(seeds) + 1), panel),
                               dpi=max(100, plt.rcParams["figure.dpi"]))
    axes = list(np.ravel(axes))
    if len(axes) != len(seeds) + 1:
        raise ValueError(f"show_augmented: {len(axes)} axes for the photo and {len(seeds)} seeds; "
                         f"expected {len(seeds) + 1}")
    h, w = image.shape[:2]
    show_detections(axes[0], image, boxes, labels, class_names=class_names, title=f"photo {w}x{h}")
    for ax, seed in zip(axes[1:], seeds):
        out, out_boxes, out_labels = transform(image, boxes, labels, np.random.default_rng(seed))
        picture = denormalize(out)
        size = np.array(picture.shape[1::-1] * 2, np.float32)            # (W, H, W, H)
        show_detections(ax, picture, out_boxes * size, out_labels, class_names=class_names,
                        title=f"seed {seed}")
    return axes


# --- detections judged against the ground truth ------------------------------------------------
JUDGED_COLOURS = {"true positive": "#1a9641", "false positive": "#d7191c",
                  "missed": "#fdae61", "ground truth": "white", "ignored (difficult)": "#999999"}


def judged_legend(where, **kwargs):
    """The legend of show_judged's colours: below a Figure's panels, or filling an (empty) Axes."""
    from matplotlib.axes import Axes
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, lw=3, ls="--" if k in ("missed", "ground truth") else "-",
                      label=k) for k, c in JUDGED_COLOURS.items()]
    for h in handles:
        h.set_path_effects(_outline(4.5))
    if isinstance(where, Axes):
        where.set_axis_off()
        options = dict(loc="center", ncol=1, frameon=False, fontsize=11, handlelength=3)
    else:
        options = dict(loc="lower center", ncol=len(handles), frameon=False, fontsize=10,
                       bbox_to_anchor=(0.5, 0.0))
    options.update(kwargs)
    return where.legend(handles=handles, **options)


def _outline(width):
    from matplotlib import patheffects

    return [patheffects.Stroke(linewidth=width, foreground="black"), patheffects.Normal()]


def show_judged(ax, image, boxes, labels, scores, gt_boxes, gt_labels, difficult=None,
                class_names=None, iou_threshold: float = 0.5, linewidth: float = 3.0,
                fontsize: float = 9.0, title: str | None = None):
    """Detections coloured by VOC's verdict (``metrics.judge_image``), with the ground truth drawn.

    True positives green, false positives red (wrong place, wrong class or a duplicate), ground
    truth dashed white, missed ground truth dashed orange, detections of difficult objects grey.
    Captions sit inside the boxes' top-left corners, so none is cut off at the image's edge.
    All boxes are pixel xyxy. -> (outcome (D,), found (G,)) as judge_image returns them.
    """
    from matplotlib.patches import Rectangle

    from minissd.evaluation.metrics import IGNORED, TRUE_POSITIVE, judge_image

    outcome, found = judge_image(to_numpy(boxes), to_numpy(labels), to_numpy(scores),
                                 to_numpy(gt_boxes), to_numpy(gt_labels), difficult, iou_threshold)
    image = to_numpy(image)
    ax.imshow(image)
    h, w = image.shape[:2]

    def rectangle(box, colour, dashed, caption=None):
        x0, y0, x1, y1 = (float(v) for v in box)
        patch = ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour,
                                       linewidth=linewidth, ls=(0, (4, 2)) if dashed else "-"))
        patch.set_path_effects(_outline(linewidth + 1.5))
        if caption:
            right = x0 > 0.6 * w                       # near the right edge: the top-right corner
            x = min(x1, w - 1) - 2 if right else max(x0, 0) + 2
            y = min(max(y0, 0), h - 1) + 2                                 # inside the image
            ax.text(x, y, caption, color="black" if colour == "white" else "white",
                    fontsize=fontsize, va="top", ha="right" if right else "left", clip_on=True,
                    bbox=dict(facecolor=colour, edgecolor="none", pad=1, alpha=0.85))

    gt_boxes, gt_labels = to_numpy(gt_boxes).reshape(-1, 4), to_numpy(gt_labels).reshape(-1)
    for box, label, hit in zip(gt_boxes, gt_labels, found):
        rectangle(box, JUDGED_COLOURS["ground truth" if hit else "missed"], True,
                  None if hit else "missed " + box_caption(label, None, class_names))
    kinds = {TRUE_POSITIVE: "true positive", IGNORED: "ignored (difficult)"}
    order = np.argsort(-to_numpy(scores).reshape(-1), kind="stable")[::-1]   # best drawn last
    boxes, labels, scores = (to_numpy(v) for v in (boxes, labels, scores))
    for d in order:
        rectangle(boxes[d], JUDGED_COLOURS[kinds.get(int(outcome[d]), "false positive")], False,
                  box_caption(labels[d], scores[d], class_names))
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=fontsize + 1)
    return outcome, found


# --- the architecture figure (the paper's Fig. 2, drawn from the model) ---------------------
ARCHITECTURE_PARTS = ("base", "extras", "heads", "priors", "matching", "loss", "decode", "nms")
_PART_COLOURS = {"base": "#4e79a7", "extras": "#59a14f", "heads": "#b07aa1", "priors": "#f28e2b",
                 "matching": "#edc948", "loss": "#e15759", "decode": "#76b7b2", "nms": "#9c755f"}


def _stages(model):
    """The trunk in blocks, one per conv stage of the paper's figure.

    -> [(block name, part, (C, H, W) output, is_source)]: 'conv1_2' ... 'conv5_3', 'fc6', 'fc7'
    (part 'base'), 'conv8_2' ... (part 'extras'); a block ends at its last conv, BatchNorm or ReLU
    (pools belong to the arrow to the next block).
    """
    blocks = []                                       # [name, part, shape, is_source]
    for dotted, _, shape in model.layer_shapes():
        prefix, _, name = dotted.partition(".")
        if prefix not in ("vgg", "extras") or name.startswith("pool"):
            continue
        if name.startswith(("conv", "fc")):
            stage = name.split("_")[0]                # 'conv4' of 'conv4_3', 'fc6'
            if not blocks or blocks[-1][0].split("_")[0] != stage:
                blocks.append([name, "base" if prefix == "vgg" else "extras", shape, False])
            blocks[-1][0] = name
        blocks[-1][2] = shape                         # the conv, its BatchNorm and its ReLU
        blocks[-1][3] = blocks[-1][3] or name in model.source_names
    return [tuple(b) for b in blocks]


def _hwc(shape) -> str:
    c, h, w = shape
    return f"{h}x{w}x{c}"


def draw_architecture(model, highlight=None, ax=None, width: float = 14.0):
    """SSD as the paper's Fig. 2, built from ``model.layer_shapes()``; returns the Axes.

    Top row: the input and the trunk's conv stages (base, then extras) as blocks, their height
    growing with the spatial side (sqrt), their depth with the channels, labelled H x W x C.
    Each of the source maps sends an arrow to its heads (k boxes x (4 + C+1) per cell), which
    concatenate into P x (4 + C+1); below, training (default boxes -> matching -> loss) and
    inference (decode -> NMS -> detections).
    highlight: one name of ARCHITECTURE_PARTS, or several, drawn in colour (the rest grey);
        None draws every part in its colour.
    ax: a matplotlib Axes to draw on; None makes a figure ``width`` inches wide, at dpi >= 100.
    """
    import inspect

    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Polygon

    from minissd.ssd.loss import MultiBoxLoss
    from minissd.ssd.matching import match
    from minissd.ssd.postprocess import DetectConfig

    parts = (ARCHITECTURE_PARTS if highlight is None else
             (highlight,) if isinstance(highlight, str) else tuple(highlight))
    unknown = [p for p in parts if p not in ARCHITECTURE_PARTS]
    if unknown:
        raise ValueError(f"draw_architecture: unknown part(s) {unknown} in highlight; "
                         f"known parts are {ARCHITECTURE_PARTS}")
    strong = highlight is not None

    def face(part):        # (fill, edge, text colour, font weight)
        if part not in parts:
            return "#f0f0f0", "#c8c8c8", "#999999", "normal"
        rgb = np.array(to_rgb(_PART_COLOURS[part]))
        tint = 0.3 if strong else 0.55                           # share of white in the fill
        return tuple(rgb * (1 - tint) + tint), tuple(rgb * 0.75), "black", "bold" if strong else "normal"

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    cfg, C1 = model.cfg, model.num_classes + 1
    S, P = cfg.image_size, cfg.num_priors
    stages = [("input", None, (model.arch.in_channels, S, S), False)] + _stages(model)
    n = len(stages)
    span = max(n, 13)                                            # x units (one per block)
    if ax is None:
        fig, ax = plt.subplots(figsize=(width, width * 7.0 / (span + 0.6)),
                               dpi=max(100, plt.rcParams["figure.dpi"]))     # readable labels
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.94)
    fig = ax.figure
    fs = 7.5 * (ax.get_position().width * fig.get_figwidth() / 13.0) ** 0.5   # font size, pt
    ax.set_xlim(-0.3, span + 0.3)
    ax.set_ylim(-1.45, 6.5)
    ax.set_axis_off()

    def box(x, y, w, h, part, text, size=fs, pad=0.04):
        fill, edge, colour, weight = face(part)
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle=f"round,pad={pad}",
                                    fc=fill, ec=edge, lw=1.6 if strong and part in parts else 1))
        ax.text(x, y, text, ha="center", va="center", fontsize=size, color=colour, fontweight=weight)

    def arrow(a, b, part=None, rad=0.0):
        colour = "#555555" if part is None or part in parts else "#c8c8c8"
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=9, lw=1, color=colour,
                                     connectionstyle=f"arc3,rad={rad}", shrinkA=1, shrinkB=1))

    # --- the trunk: one block per stage ------------------------------------------------------
    y_mid, w = 4.45, 0.42                                       # the blocks' centre line and width
    c_max = max(shape[0] for _, _, shape, _ in stages)
    heads = []                                                   # (x, y of the arrow's start, name)
    for i, (name, part, shape, is_source) in enumerate(stages):
        c, h, _ = shape
        x = i + 0.5
        side = 0.35 + 1.9 * (h / S) ** 0.5                      # block height ~ sqrt(H)
        depth = 0.06 + 0.22 * c / c_max                          # block depth ~ channels
        bottom, top = y_mid - side / 2, y_mid + side / 2
        fill, edge, colour, weight = face(part) if part else ("#ffffff", "#555555", "black", "normal")
        x0 = x - w / 2 - depth / 2
        ax.add_patch(Polygon([(x0, top), (x0 + depth, top + depth), (x0 + w + depth, top + depth),
                              (x0 + w + depth, bottom + depth), (x0 + w, bottom), (x0 + w, top)],
                             closed=True, fc=fill, ec=edge, lw=0.8, alpha=0.7))
        ax.add_patch(plt.Rectangle((x0, bottom), w, side, fc=fill, ec=edge, lw=1))
        ax.text(x, top + depth + 0.12, name, ha="center", va="bottom", fontsize=fs,
                color=colour, fontweight="bold" if is_source else weight)
        ax.text(x, bottom - 0.08, _hwc(shape), ha="center", va="top", fontsize=fs * 0.92,
                color=colour, fontweight="bold" if is_source else "normal")
        if i:
            arrow((x - 1 + w / 2 + 0.05, y_mid), (x0 - 0.02, y_mid))       # from the previous block
        if is_source:
            heads.append((x, bottom - 0.45, name))
    part_label_y = 6.15
    for part in ("base", "extras"):
        xs = [i + 0.5 for i, s in enumerate(stages) if s[1] == part]
        colour = face(part)[1] if part in parts else "#bbbbbb"
        ax.plot([xs[0] - 0.35, xs[-1] + 0.35], [part_label_y - 0.12] * 2, color=colour, lw=2)
        ax.text((xs[0] + xs[-1]) / 2, part_label_y, "VGG16 base, fc6/fc7 atrous" if part == "base"
                else "extra layers", ha="center", va="bottom", fontsize=fs, color=colour)

    # --- heads: one per source map -------------------------------------------------------------
    y_head, y_cat = 2.2, 1.1
    ks = cfg.num_boxes_per_location
    for (x, y_top, name), k, f in zip(heads, ks, cfg.feature_maps):
        label = "L2Norm" if name == model.source_names[0] else None
        arrow((x, y_top), (x, y_head + 0.42), "heads")
        if label:
            ax.text(x + 0.06, (y_top + y_head + 0.42) / 2, label, fontsize=fs * 0.85, va="center",
                    color=face("heads")[1] if "heads" in parts else "#999999")
        box(x, y_head, 0.86, 0.62, "heads", f"{k} x (4+{C1})\n{f * f * k} boxes", size=fs * 0.9)
        arrow((x, y_head - 0.35), (x, y_cat + 0.22), "heads")
    ax.text(heads[0][0] - 0.55, y_head, "heads: a 3x3 conv per source map,\n"
            "per cell k boxes x (4 offsets + C+1 scores)", ha="right", va="center",
            fontsize=fs * 0.9, color=face("heads")[1] if "heads" in parts else "#999999")
    x_lo, x_hi = heads[0][0] - 0.43, heads[-1][0] + 0.43
    box((x_lo + x_hi) / 2, y_cat, x_hi - x_lo, 0.36, "heads",
        f"P = {P} default boxes x (4 + {C1}):  loc (B, {P}, 4),  conf (B, {P}, {C1})")

    # --- training and inference ------------------------------------------------------------------
    y_low = -0.35
    ratio = default(MultiBoxLoss.__init__, "neg_pos_ratio")
    thr = default(match, "iou_threshold")
    nms_thr, top_k = DetectConfig().nms_threshold, DetectConfig().top_k
    left = [("priors", "priors", f"{P} default boxes\n(cx, cy, w, h)"),          # (box, part, text)
            ("matching", "matching", f"matching, IoU >= {thr}\nground truth -> targets"),
            ("loss", "loss", f"MultiBox loss: smooth L1\n+ cross-entropy, {ratio}:1 mining")]
    right = [("decode", "decode", "decode\noffsets -> boxes"),
             ("nms", "nms", f"NMS per class\nIoU > {nms_thr}"),
             ("detections", "nms", f"detections\n<= {top_k} per image")]
    bw, gap, xs = 1.9, 2.1, {}                                   # box width, spacing, box -> x
    for j, (key, part, text) in enumerate(left):
        xs[key] = 1.0 + j * gap
        box(xs[key], y_low, bw, 0.62, part, text, size=fs * 0.9)
    for j, (key, part, text) in enumerate(right):
        xs[key] = span - 1.0 - (2 - j) * gap
        box(xs[key], y_low, bw, 0.62, part, text, size=fs * 0.9)
    arrow((xs["priors"] + bw / 2 + 0.05, y_low), (xs["matching"] - bw / 2 - 0.05, y_low), "matching")
    arrow((xs["matching"] + bw / 2 + 0.05, y_low), (xs["loss"] - bw / 2 - 0.05, y_low), "loss")
    arrow((xs["decode"] + bw / 2 + 0.05, y_low), (xs["nms"] - bw / 2 - 0.05, y_low), "nms")
    arrow((xs["nms"] + bw / 2 + 0.05, y_low), (xs["detections"] - bw / 2 - 0.05, y_low), "nms")
    arrow((max(x_lo + 0.3, xs["loss"]), y_cat - 0.2), (xs["loss"] + 0.3, y_low + 0.33), "loss")
    arrow((min(x_hi - 0.3, xs["decode"]), y_cat - 0.2), (xs["decode"] - 0.3, y_low + 0.33), "decode")
    arrow((xs["priors"], y_low - 0.33), (xs["decode"], y_low - 0.33), "decode", rad=0.1)
    ax.text(xs["priors"] - bw / 2, y_low + 0.4, "training", fontsize=fs * 0.9, style="italic",
            color="#555555", va="bottom", ha="left")
    ax.text(xs["detections"] + bw / 2, y_low + 0.4, "inference", fontsize=fs * 0.9,
            style="italic", color="#555555", va="bottom", ha="right")
    ax.set_title(f"{cfg.name}: {S}x{S}x{model.arch.in_channels} image -> {len(heads)} source maps "
                 f"-> {P} x (4 + {C1}) -> decode -> NMS", fontsize=fs * 1.25)
    return ax


# --- the pictures of matching and loss (chapters 7 and 8) -----------------------------------
def add_boxes(ax, boxes_xyxy, color, names=None, linewidth: float = 2.0, linestyle: str = "-",
              alpha: float = 1.0, fontsize: float = 9.0, label: str | None = None, zorder: float = 2):
    """Outline boxes (n, 4) xyxy on a matplotlib Axes, each captioned with ``names[i]`` if given.

    color: one matplotlib colour, or an RGB tuple 0..255 as from ``class_color``. label names the
    whole set once in the legend. Returns ax. Works in any units (pixels or [0, 1]).
    """
    from matplotlib.patches import Rectangle

    boxes = to_numpy(boxes_xyxy).reshape(-1, 4)
    names = [None] * len(boxes) if names is None else list(names)
    if len(names) != len(boxes):
        raise ValueError(f"names has {len(names)} entries but there are {len(boxes)} boxes")
    if isinstance(color, tuple) and len(color) == 3 and max(color) > 1:
        color = tuple(np.array(color) / 255)
    for k, ((x0, y0, x1, y1), name) in enumerate(zip(boxes, names)):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=color, lw=linewidth,
                               ls=linestyle, alpha=alpha, zorder=zorder,
                               label=label if k == 0 else None))
        if name is not None:
            ax.text(x0, y0, f" {name}", color=color, fontsize=fontsize, va="top", ha="left",
                    fontweight="bold", zorder=zorder)
    return ax


def _image_axes(ax, boxes, margin=0.08):
    """Equal aspect, y downwards (image coordinates), limits around (n, 4) xyxy boxes."""
    lo, hi = boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)
    pad = margin * (hi - lo).max()
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(hi[1] + pad, lo[1] - pad)
    ax.set_aspect("equal")


def draw_iou(ax, box_a_xyxy, box_b_xyxy, names=("A", "B")):
    """Two boxes with their union shaded light and their intersection dark; returns the IoU.

    The title gives |A ∩ B| / |A ∪ B| = IoU, computed by ``minissd.ssd.boxes.iou``. Boxes are
    (4,) xyxy in any units; the picture is in image coordinates (y down).
    """
    from matplotlib.patches import Patch, Rectangle

    from minissd.ssd.boxes import area, iou

    a = np.asarray(to_numpy(box_a_xyxy), np.float64).reshape(4)
    b = np.asarray(to_numpy(box_b_xyxy), np.float64).reshape(4)
    value = float(iou(a[None], b[None])[0, 0])
    lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(area(np.concatenate([lo, hi])))
    union = float(area(a) + area(b) - inter)
    for box in (a, b):                                            # the union, light
        ax.add_patch(Rectangle(box[:2], *(box[2:] - box[:2]), fc="#cfe2f3", ec="none", zorder=1))
    if inter > 0:                                                 # the intersection, dark
        ax.add_patch(Rectangle(lo, *(hi - lo), fc="#3d85c6", ec="none", zorder=2))
    for box, name, colour, corner in zip((a, b), names, ("tab:red", "tab:green"), ("top", "bottom")):
        add_boxes(ax, box[None], colour, linewidth=2.5, zorder=3)
        ax.text(box[0], box[1] if corner == "top" else box[3], f" {name}", color=colour,  # a's name
                fontsize=10, fontweight="bold", va=corner, ha="left", zorder=4)            # top, b's bottom
    _image_axes(ax, np.stack([a, b]), margin=0.12)
    ax.legend(handles=[Patch(fc="#3d85c6", label=f"{names[0]} ∩ {names[1]}: {inter:.4g}"),
                       Patch(fc="#cfe2f3", label=f"{names[0]} ∪ {names[1]}: {union:.4g}")],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    ax.set_title(f"IoU({names[0]}, {names[1]}) = {inter:.4g} / {union:.4g} = {value:.3f}", fontsize=10)
    return value


def draw_encoding(ax, prior_cxcywh, box_xyxy, variances=None, names=("default box d", "object g")):
    """The encoding geometry: a default box, an object box and SSD's offsets; returns t (4,).

    Draws d (dashed) and g (solid), the centre shift (Δcx, Δcy) as arrows, the widths and heights
    as brackets, and beside the axes the four offsets of ``minissd.ssd.boxes.encode`` worked out,
    with and without the variances (v0, v1). Units: [0, 1] or pixels, the same for both boxes.
    """
    from minissd.ssd.boxes import VARIANCES, cxcywh_to_xyxy, encode, xyxy_to_cxcywh

    v0, v1 = VARIANCES if variances is None else variances
    d = np.asarray(to_numpy(prior_cxcywh), np.float64).reshape(4)
    g_xyxy = np.asarray(to_numpy(box_xyxy), np.float64).reshape(4)
    g = xyxy_to_cxcywh(g_xyxy)
    t = encode(g_xyxy[None], d[None], (v0, v1))[0]
    d_xyxy = cxcywh_to_xyxy(d)
    add_boxes(ax, d_xyxy[None], "tab:blue", names=[names[0]], linewidth=2, linestyle="--")
    add_boxes(ax, g_xyxy[None], "tab:red", names=[names[1]], linewidth=2.5)
    ax.plot(*d[:2], "o", color="tab:blue", ms=6, zorder=4)
    ax.plot(*g[:2], "o", color="tab:red", ms=6, zorder=4)
    arrow = dict(arrowstyle="-|>", lw=1.5, color="black", shrinkA=0, shrinkB=0)
    ax.annotate("", xy=(g[0], d[1]), xytext=(d[0], d[1]), arrowprops=arrow)          # Δcx
    ax.annotate("", xy=(g[0], g[1]), xytext=(g[0], d[1]), arrowprops=arrow)          # Δcy
    ax.text((d[0] + g[0]) / 2, d[1], "Δcx", ha="center", va="top" if g[1] < d[1] else "bottom",
            fontsize=9)
    ax.text(g[0], (d[1] + g[1]) / 2, "Δcy ", ha="right" if g[0] < d[0] else "left", va="center",
            fontsize=9)
    both = np.stack([d_xyxy, g_xyxy])
    span = (both[:, 2:].max(axis=0) - both[:, :2].min(axis=0)).max()
    gap = 0.06 * span
    bracket = dict(arrowstyle="<|-|>", lw=1, shrinkA=0, shrinkB=0)
    for box, colour, name, side in ((d_xyxy, "tab:blue", "d", -1), (g_xyxy, "tab:red", "g", 1)):
        y = (box[3] + gap) if side > 0 else (box[1] - gap)               # widths: g below, d above
        ax.annotate("", xy=(box[2], y), xytext=(box[0], y), arrowprops=dict(bracket, color=colour))
        ax.text((box[0] + box[2]) / 2, y, f"{name}_w", color=colour, fontsize=9, ha="center",
                va="top" if side > 0 else "bottom")
        x = (box[2] + gap) if side > 0 else (box[0] - gap)               # heights: g right, d left
        ax.annotate("", xy=(x, box[3]), xytext=(x, box[1]), arrowprops=dict(bracket, color=colour))
        ax.text(x, (box[1] + box[3]) / 2, f"{name}_h", color=colour, fontsize=9, rotation=90,
                ha="left" if side > 0 else "right", va="center")
    lo, hi = both[:, :2].min(axis=0) - 2.2 * gap, both[:, 2:].max(axis=0) + 2.2 * gap
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(hi[1], lo[1])
    ax.set_aspect("equal")
    raw = np.array([(g[0] - d[0]) / d[2], (g[1] - d[1]) / d[3], np.log(g[2] / d[2]), np.log(g[3] / d[3])])
    lines = [f"d = (cx {d[0]:.3g}, cy {d[1]:.3g}, w {d[2]:.3g}, h {d[3]:.3g})",
             f"g = (cx {g[0]:.3g}, cy {g[1]:.3g}, w {g[2]:.3g}, h {g[3]:.3g})", "",
             f"t_cx = (g_cx − d_cx) / (v0·d_w) = {g[0] - d[0]:.3g} / ({v0:g}·{d[2]:.3g}) = {t[0]:+.3f}",
             f"t_cy = (g_cy − d_cy) / (v0·d_h) = {g[1] - d[1]:.3g} / ({v0:g}·{d[3]:.3g}) = {t[1]:+.3f}",
             f"t_w = log(g_w / d_w) / v1 = log({g[2]:.3g} / {d[2]:.3g}) / {v1:g} = {t[2]:+.3f}",
             f"t_h = log(g_h / d_h) / v1 = log({g[3]:.3g} / {d[3]:.3g}) / {v1:g} = {t[3]:+.3f}", "",
             "without the variances (v0 = v1 = 1): (" + ", ".join(f"{r:+.3f}" for r in raw) + ")",
             f"the variances make them {1 / v0:g}x (centre) and {1 / v1:g}x (size) larger:",
             "about unit scale, where smooth L1 turns from quadratic to linear"]
    ax.text(1.03, 0.5, "\n".join(lines), transform=ax.transAxes, ha="left", va="center",
            fontsize=9, family="monospace")
    ax.set_title("SSD's offsets t from a default box d to an object g", fontsize=10)
    return t


def plot_regression_losses(x, functions, checks=None, width: float = 10.0):
    """Loss functions of an offset error x and their gradients, side by side; -> figure.

    ``functions``: {label: (loss (n,), gradient (n,))} over ``x`` (n,), one line each;
    ``checks``: (x, loss, gradient) measured on a library implementation, drawn as black
    dots over the lines. The grey band is |x| < 1, where smooth L1 is quadratic.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(width, width * 0.38))
    for n, (name, (f, df)) in enumerate(functions.items()):
        colour = f"C{n}"
        axes[0].plot(x, f, color=colour, lw=2, label=name)
        axes[1].plot(x, df, color=colour, lw=2, label=name)
    if checks is not None:
        x_lib, value_lib, grad_lib = checks
        axes[0].plot(x_lib, value_lib, "k.", ms=7, label="MultiBoxLoss.loss_loc")
        axes[1].plot(x_lib, grad_lib, "k.", ms=7, label="MultiBoxLoss.backward")
    for ax, title, ylabel in ((axes[0], "Regression losses", "loss"),
                              (axes[1], "Their gradients", "d loss / d x")):
        ax.axvspan(-1, 1, color="0.92")
        ax.set_xlabel("x = predicted offset − target offset")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylim(-0.1, 3)
    fig.tight_layout()
    return fig


def draw_loss_balance(ax, ce, positive, negative, neg_pos_ratio: int = 3, names=None):
    """Per-box confidence loss of one image, hardest first, coloured by what the loss does with it.

    ce, positive, negative: (P,) cross-entropies and the masks of ``MultiBoxLoss`` (its
    ``positive[b]`` and ``negative[b]``). Positives (blue) and mined negatives (red) enter L_conf;
    the ignored negatives (grey) do not. The dashed line ends the neg_pos_ratio:1 quota, and the
    legend gives each group's count and summed loss. Log rank axis when P > 50. names (P,):
    a caption beside each point (for a handful of boxes). Returns ax.
    """
    ce = np.asarray(to_numpy(ce), np.float64).reshape(-1)
    positive = np.asarray(to_numpy(positive), bool).reshape(-1)
    negative = np.asarray(to_numpy(negative), bool).reshape(-1)
    if not (len(ce) == len(positive) == len(negative)):
        raise ValueError(f"draw_loss_balance: ce, positive and negative must have the same length, "
                         f"got {len(ce)}, {len(positive)}, {len(negative)}")
    if (positive & negative).any():
        raise ValueError("draw_loss_balance: a box is both positive and a mined negative")
    order = np.argsort(-ce, kind="stable")                       # hardest first
    rank = np.empty(len(ce), int)
    rank[order] = np.arange(1, len(ce) + 1)                      # 1-based rank of each box
    ignored = ~(positive | negative)
    n_pos = int(positive.sum())
    quota = min(neg_pos_ratio * n_pos, int((~positive).sum()))
    big = len(ce) > 50
    groups = [(ignored, "0.6", 4 if big else 50, "ignored negatives"),
              (negative, "tab:red", 14 if big else 60, "mined negatives"),
              (positive, "tab:blue", 18 if big else 70, "positives")]
    def count(n, word):
        return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("x") else "s")

    for mask, colour, size, name in groups:
        ax.scatter(rank[mask], ce[mask], s=size, color=colour, zorder=3 if mask is not ignored else 2,
                   label=f"{name}: {count(int(mask.sum()), 'box')}, Σ CE = {ce[mask].sum():.3g}"
                   + ("  (not in the loss)" if mask is ignored else ""))
    if names is not None:
        if len(names) != len(ce):
            raise ValueError(f"draw_loss_balance: {len(names)} names for {len(ce)} boxes")
        for r, value, name in zip(rank, ce, names):
            ax.annotate(str(name), (r, value), xytext=(6, 4), textcoords="offset points", fontsize=9)
    if negative.any():
        edge = rank[negative].max() + 0.5
        ax.axvline(edge, color="k", ls="--", lw=1,
                   label=f"{neg_pos_ratio}:1 quota: min({neg_pos_ratio}·{n_pos}, negatives) = {quota}")
    if big:
        ax.set_xscale("log")
    else:
        ax.set_xticks(np.arange(1, len(ce) + 1))
    ax.set_xlabel("box, sorted by confidence loss (rank, hardest first)" + (", log scale" if big else ""))
    ax.set_ylabel("cross-entropy −log softmax(z)_y")
    ax.grid(alpha=0.3)
    if big:                                   # a falling curve over thousands of boxes: empty there
        ax.legend(fontsize=8, loc="lower left", framealpha=0.95)
    else:                                     # a few points can sit anywhere: below the axes
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    ax.set_title(f"Loss balance: {count(n_pos, 'positive')}, {int(negative.sum())} mined, "
                 f"{int(ignored.sum())} ignored", fontsize=10)
    return ax


def _read_log(path, key) -> list:
    import json
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {n} is not JSON ({e})") from None
            if key in record:
                records.append(record)
    return records


def read_eval_log(path) -> list:
    """The evaluation records (those with ``eval_map``) of a train_log.jsonl, in order."""
    return _read_log(path, "eval_map")


def read_train_log(path) -> list:
    """The step records (those with ``loss``) of a train_log.jsonl, in order."""
    return _read_log(path, "loss")


def moving_average(y, n: int) -> np.ndarray:
    """The mean of the last ``n`` values at each position (fewer at the start)."""
    c = np.concatenate([[0.0], np.cumsum(np.asarray(y, np.float64))])
    hi = np.arange(1, len(c))
    lo = np.maximum(0, hi - n)
    return (c[hi] - c[lo]) / (hi - lo)


def plot_train_log(records, title: str = "", window: int = 10, max_epoch_lines: int = 30,
                   width: float = 14.0):
    """A run's step records (``read_train_log``) as three panels: the localisation loss and
    the confidence loss, each per step and as the mean of the last ``window`` steps, and the
    learning rate (log axis); dotted lines mark new epochs when there are at most
    ``max_epoch_lines`` of them. Evaluation records mixed in are skipped. Returns the figure."""
    import matplotlib.pyplot as plt   # matplotlib only when plotting

    records = [r for r in records if "loss" in r]
    if not records:
        raise ValueError("plot_train_log: no step records (records with 'loss')")
    step = np.array([r["step"] for r in records])
    epoch = np.array([r["epoch"] for r in records])
    fig, axes = plt.subplots(1, 3, figsize=(width, width * 0.26))
    panels = (("loss_loc", "localisation loss (smooth L1)", "tab:blue"),
              ("loss_conf", "confidence loss (mined cross-entropy)", "tab:red"))
    for ax, (key, name, colour) in zip(axes, panels):
        y = np.array([r[key] for r in records])
        ax.plot(step, y, color=colour, alpha=0.3, lw=1, label="per step")
        ax.plot(step, moving_average(y, window), color=colour, lw=2,
                label=f"mean of {window} steps")
        ax.set_ylim(0, None)
        ax.set_ylabel(name)
        ax.set_title(name.split(" (")[0].capitalize())
        ax.legend(loc="upper right", fontsize=9)
    axes[2].plot(step, [r["lr"] for r in records], color="k", lw=2)
    axes[2].set_yscale("log")
    axes[2].set_ylabel("learning rate")
    axes[2].set_title("Learning rate: warm-up, then ×0.1 twice")
    starts = step[1:][np.diff(epoch) != 0]                       # first step of each new epoch
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        for s in (starts if len(starts) <= max_epoch_lines else ()):
            ax.axvline(s, color="0.5", ls=":", lw=0.8)
    if title:
        fig.suptitle(title, y=1.0)
    fig.tight_layout()
    return fig


def plot_eval_curves(logs, ax=None, per_class=True):
    """mAP against epoch from train_log.jsonl files (``--eval-every``), one line per run.

    logs: {label: path or list of records}. With ``per_class`` and a single run, each
    class's AP is drawn too (thin lines). Returns ax.
    """
    import matplotlib.pyplot as plt   # matplotlib only when plotting

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for label, log in logs.items():
        records = read_eval_log(log) if isinstance(log, (str, bytes)) or hasattr(log, "__fspath__") \
            else list(log)
        if not records:
            raise ValueError(f"plot_eval_curves: {label!r} has no evaluation records "
                             "(train with --eval-every N --eval-split SPLIT)")
        epochs = [r["epoch"] for r in records]
        ax.plot(epochs, [r["eval_map"] for r in records], marker="o", linewidth=2,
                label=f"{label} (mAP {records[-1]['eval_map']:.3f})")
        if per_class and len(logs) == 1:
            for name in records[-1]["eval_ap"]:
                ax.plot(epochs, [r["eval_ap"].get(name, float("nan")) for r in records],
                        linewidth=1, alpha=0.7, label=name)
    split = records[-1].get("eval_split", "")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"AP@0.5 (VOC07) on {split}" if split else "AP@0.5 (VOC07)")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return ax
