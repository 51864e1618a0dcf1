"""Boxes on photos: class colours and captions, PIL drawings and matplotlib axes, grids of
pictures, and one photo through the augmentation (chapter 9).

    draw_boxes(image, boxes_xyxy, labels, scores, class_names).save("out.png")
    show_detections(ax, denormalize(batch.images[0]), batch.boxes[0] * 300,
                    batch.labels[0], class_names=ds.class_names)
    add_boxes(ax, boxes_xyxy, "tab:blue", names=["d1", "d2"])      # outlines only
    show_augmentation_steps(trace(transforms, image, boxes, labels))   # each transform's output
    show_augmented(image, boxes, labels, train_transform(300), seeds=range(4))   # what training sees

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


def backdrop(image, fade: float = 0.4, step: int = 32) -> np.ndarray:
    """A faded, posterised grey copy of a photo (H, W, 3) -> uint8 (H, W, 3): coloured boxes stand
    out on it, and its few grey levels keep a notebook's PNG small."""
    grey = np.asarray(to_numpy(image), np.float64).mean(axis=2, keepdims=True).repeat(3, axis=2)
    faded = fade * grey + (1 - fade) * 255
    return (np.round(faded / step) * step).clip(0, 255).astype(np.uint8)


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
