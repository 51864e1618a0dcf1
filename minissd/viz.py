"""Drawing helpers: boxes with class names and scores, on PIL images or matplotlib axes.

    draw_boxes(image, boxes_xyxy, labels, scores, class_names).save("out.png")
    show_detections(ax, denormalize(batch.images[0]), batch.boxes[0] * 300,
                    batch.labels[0], class_names=ds.class_names)

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


def read_eval_log(path) -> list:
    """The evaluation records (those with ``eval_map``) of a train_log.jsonl, in order."""
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
            if "eval_map" in record:
                records.append(record)
    return records


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
