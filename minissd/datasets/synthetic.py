"""A synthetic detection data set of coloured shapes on textured backgrounds, in VOC layout.

    root = write_shapes_dataset("data/shapes", num_train=2000, num_test=200)
    ds = VOCDataset([(root, "trainval")])       # class names come from classes.txt

It is the built-in data of ``make demo`` and of the integration tests: small, made in
seconds, needing no download, and easy enough that a tiny SSD learns it in minutes.
Each image has 1-4 objects of a few classes (circles, squares, triangles, crosses)
with varied size (10-60 % of the side), aspect ratio and colour, on a background of
noise, a colour gradient or stripes. Objects may overlap a little, but each box is
covered by another by at most ``max_cover`` of its area and smaller objects are drawn
on top of larger ones, so every object stays recognisable.

Everything is drawn from ``numpy.random.default_rng([seed, image_number])``: the same
seed gives byte-identical files.
"""
from __future__ import annotations

import math
import numbers
import os
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image, ImageDraw

from minissd.errors import UserError

SHAPE_CLASSES = ("circle", "square", "triangle")
SUPPORTED_SHAPES = ("circle", "square", "triangle", "cross")
BACKGROUNDS = ("noise", "gradient", "stripes")
MAX_ASPECT = 1.4            # width/height of an object lies in [1/MAX_ASPECT, MAX_ASPECT]
MIN_COLOUR_DISTANCE = 100   # RGB distance between an object and the background around it
PIXEL_NOISE = 6.0           # std of the noise added to every pixel at the end
PLACEMENT_TRIES = 30


def _background(rng, size: int) -> np.ndarray:
    """A textured background, float (size, size, 3) in 0..255: noise, gradient or stripes."""
    low, high = rng.uniform(30, 225, size=(2, 3)).astype(np.float32)  # two colours
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    if kind == "noise":      # smooth blobs: coarse random grid, upsampled
        cells = int(rng.integers(3, 9))
        grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
        smooth = Image.fromarray(grid).resize((size, size), Image.BICUBIC)
        mix = np.asarray(smooth) / np.float32(255)
    else:
        coords = np.arange(size, dtype=np.float32) / size
        angle = rng.uniform(0, np.pi)
        along = np.cos(angle) * coords[None, :] + np.sin(angle) * coords[:, None]  # (size, size)
        if kind == "gradient":
            mix = (along - along.min()) / (along.max() - along.min())
        else:
            period = rng.uniform(0.05, 0.25)
            mix = 0.5 + 0.5 * np.sin(2 * np.pi * along / period)
    return low + mix[..., None].astype(np.float32) * (high - low)      # (size, size, 3)


def _place(rng, size, existing, size_range, max_cover):
    """A random integer box (x0, y0, x1, y1), inclusive pixels, or None if nothing fits."""
    for _ in range(PLACEMENT_TRIES):
        side = rng.uniform(*size_range) * size
        aspect = np.exp(rng.uniform(-np.log(MAX_ASPECT), np.log(MAX_ASPECT)))
        w = int(min(side * np.sqrt(aspect), size - 1))
        h = int(min(side / np.sqrt(aspect), size - 1))
        x0, y0 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        box = (x0, y0, x0 + w, y0 + h)
        if all(_cover(box, other) <= max_cover and _cover(other, box) <= max_cover
               for other in existing):
            return box
    return None


def _cover(box, other) -> float:
    """Fraction of box's area that other overlaps."""
    iw = min(box[2], other[2]) - max(box[0], other[0])
    ih = min(box[3], other[3]) - max(box[1], other[1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    return max(iw, 0) * max(ih, 0) / area


def _colour(rng, avoid) -> tuple[int, int, int]:
    """A random colour at least MIN_COLOUR_DISTANCE from each colour in ``avoid`` (k, 3)."""
    avoid = np.asarray(avoid, dtype=np.float32).reshape(-1, 3)
    for _ in range(PLACEMENT_TRIES):
        colour = rng.integers(0, 256, size=3)
        if np.linalg.norm(colour - avoid, axis=1).min() >= MIN_COLOUR_DISTANCE:
            break
    else:  # unlucky: take the opposite of the background colour
        colour = 255 - np.round(avoid[0]).astype(int)
    return tuple(int(c) for c in colour)


def _draw(draw, shape, box, colour, rng) -> None:
    """Draw one shape filling the box exactly (so the box is tight)."""
    x0, y0, x1, y1 = box
    if shape == "circle":                                    # an ellipse, if the box is not square
        draw.ellipse(box, fill=colour)
    elif shape == "square":                                  # a rectangle, if the box is not square
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":                                # apex anywhere on top or bottom edge
        apex = x0 + rng.uniform(0, 1) * (x1 - x0)
        base_y, apex_y = (y1, y0) if rng.random() < 0.5 else (y0, y1)
        draw.polygon([(x0, base_y), (x1, base_y), (apex, apex_y)], fill=colour)
    elif shape == "cross":                                   # a plus sign, arms a third thick
        tw, th = (x1 - x0) / 3, (y1 - y0) / 3
        draw.rectangle((x0, round(y0 + th), x1, round(y1 - th)), fill=colour)
        draw.rectangle((round(x0 + tw), y0, round(x1 - tw), y1), fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}: expected one of {SUPPORTED_SHAPES}")


def make_shapes_image(rng, image_size=160, classes=SHAPE_CLASSES, max_objects=4,
                      size_range=(0.1, 0.6), max_cover=0.3):
    """One image: uint8 (S, S, 3) and its objects [(class name, (x0, y0, x1, y1)), ...].

    Boxes are 0-based inclusive pixel extents of the drawn shapes.
    """
    background = _background(rng, image_size)
    boxes = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        box = _place(rng, image_size, boxes, size_range, max_cover)
        if box is not None:
            boxes.append(box)
    boxes.sort(key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))   # big first, small on top
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    objects, colours = [], []
    for box in boxes:
        shape = classes[rng.integers(len(classes))]
        # stand out from the background here and from the objects this one overlaps
        around = background[box[1]:box[3] + 1, box[0]:box[2] + 1].reshape(-1, 3).mean(axis=0)
        below = [c for (_, other), c in zip(objects, colours) if _cover(box, other) > 0]
        colour = _colour(rng, [around] + below)
        _draw(draw, shape, box, colour, rng)
        objects.append((shape, box))
        colours.append(colour)
    noise = rng.standard_normal((image_size, image_size, 3), dtype=np.float32)
    pixels = np.asarray(image) + PIXEL_NOISE * noise
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8), objects


def voc_xml(filename: str, width: int, height: int, objects) -> bytes:
    """A VOC annotation; objects are (name, 0-based inclusive box), written 1-based."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "shapes"
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for field, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, field).text = str(value)
    for name, box in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bndbox = ET.SubElement(obj, "bndbox")
        for field, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bndbox, field).text = str(int(value) + 1)       # VOC is 1-based
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="utf-8") + b"\n"


def min_image_size(size_range=(0.1, 0.6)) -> int:
    """The smallest image side whose smallest object (``size_range[0]`` of the side, at the
    widest aspect ratio) is still 1 pixel across: 12 for the default range."""
    return math.ceil(math.sqrt(MAX_ASPECT) / size_range[0])


def write_shapes_dataset(out_dir, num_train=1000, num_test=200, image_size=160, seed=0,
                         classes=SHAPE_CLASSES, max_objects=4, size_range=(0.1, 0.6),
                         max_cover=0.3, jpeg_quality=95) -> str:
    """Write a shapes data set in VOC layout to out_dir and return out_dir.

    Splits: ImageSets/Main/trainval.txt (ids 000000..) and test.txt (the next ids).
    classes.txt lists ``classes``, so ``VOCDataset([(out_dir, split)])`` finds them.
    """
    unknown = [c for c in classes if c not in SUPPORTED_SHAPES]
    if unknown:
        raise UserError(f"unknown shape classes {unknown}: expected some of {SUPPORTED_SHAPES}")
    for name, count in (("num_train", num_train), ("num_test", num_test)):
        if not isinstance(count, numbers.Integral) or count < 0:
            raise UserError(f"write_shapes_dataset: {name} must be a whole number >= 0, "
                            f"got {count!r}")
    if not isinstance(image_size, numbers.Integral):
        raise UserError(f"write_shapes_dataset: image_size must be a whole number of pixels, "
                        f"got {image_size!r}")
    smallest = min_image_size(size_range)
    if image_size < smallest:
        raise UserError(f"write_shapes_dataset: image_size {image_size!r} is too small: the "
                        f"smallest objects ({size_range[0]:.0%} of the side) need at least "
                        f"{smallest} pixels")
    out_dir = os.fspath(out_dir)
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    with open(os.path.join(out_dir, "classes.txt"), "w", encoding="utf-8") as f:
        f.write("".join(name + "\n" for name in classes))

    ids = [f"{i:06d}" for i in range(num_train + num_test)]
    for number, image_id in enumerate(ids):
        rng = np.random.default_rng([seed, number])
        image, objects = make_shapes_image(rng, image_size, tuple(classes), max_objects,
                                           size_range, max_cover)
        filename = image_id + ".jpg"
        Image.fromarray(image).save(os.path.join(out_dir, "JPEGImages", filename),
                                    quality=jpeg_quality)
        with open(os.path.join(out_dir, "Annotations", image_id + ".xml"), "wb") as f:
            f.write(voc_xml(filename, image_size, image_size, objects))
    for split, split_ids in (("trainval", ids[:num_train]), ("test", ids[num_train:])):
        with open(os.path.join(out_dir, "ImageSets", "Main", split + ".txt"), "w") as f:
            f.write("".join(i + "\n" for i in split_ids))
    return out_dir
