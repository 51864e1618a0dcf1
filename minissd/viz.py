"""Drawing helpers: boxes with class names and scores, on PIL images or matplotlib axes;
the architecture figure of an SSD model; the pictures of IoU, the offset encoding and the loss balance.

    draw_boxes(image, boxes_xyxy, labels, scores, class_names).save("out.png")
    show_detections(ax, denormalize(batch.images[0]), batch.boxes[0] * 300,
                    batch.labels[0], class_names=ds.class_names)

    draw_architecture(SSD(get_config("ssd300"), 20), highlight="heads")   # the paper's Fig. 2
    draw_iou(ax, box_a, box_b); draw_encoding(ax, prior_cxcywh, box_xyxy)   # chapter 7
    draw_loss_balance(ax, ce, loss.positive[0], loss.negative[0])          # chapter 8

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
            tab_h = bottom - top + 4
            ty = y0 - tab_h if y0 - tab_h >= 0 else y0
            draw.rectangle((x0, ty, x0 + right - left + 4, ty + tab_h), fill=colour)
            draw.text((x0 + 2, ty + 2 - top), caption, fill=(255, 255, 255), font=font)
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
