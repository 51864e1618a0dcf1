"""The fast path of SSD's training augmentation: the same draws and numbers, only the pixels kept.

The textbook pipeline (:func:`minissd.datasets.augment.train_transform`) works on whole
images, one step after another: it distorts the colours of the whole photo, puts it on a
mean-coloured canvas up to 4 x 4 times its area, cuts a patch out of the canvas, mirrors the
patch and resizes it to S x S. Most of those pixels are thrown away with the patch's
outside, and the canvas alone can be a million pixels for a 300-px photo.

This path makes the same random choices in the same order (each step's ``draw`` /
``choose``, which look only at the image's size and the boxes), works out the patch first,
and then computes only what lands in it:

    photo (H, W)         the part of it inside the patch      -> colours distorted
    canvas (CH, CW)      built only over the patch, one plane per channel, filled with
                         the mean, the distorted part pasted in
    patch (h, w)         mirrored, resized to S x S, normalised, written into (3, S, S)

Every pixel gets the operations the textbook gives it, in the same order (the colour
distortion works pixel by pixel; the resize sees the same patch), so the output is equal
to the textbook's bit for bit, and the boxes go through the same functions.
"""
from __future__ import annotations

import numpy as np


def train_sample(steps, image, boxes, labels, rng):
    """train_transform's steps on one photo, fused. -> (image (3, S, S), boxes [0, 1], labels).

    steps: the pipeline's transforms, (ToFloat, PhotometricDistort, [Expand,] RandomIoUCrop,
    RandomFlip, Resize, BoxesToUnit, Normalize, ToCHW); image uint8 (H, W, 3), boxes (n, 4)
    pixel xyxy, labels (n,).
    """
    if len(steps) == 9:
        _, photometric, expand, crop, flip, resize, to_unit, normalize, _ = steps
    else:                                                         # no zoom-out (zoom_out=1)
        _, photometric, crop, flip, resize, to_unit, normalize, _ = steps
        expand = None
    image = np.asarray(image)                                     # (H, W, 3), still uint8
    boxes, labels = np.asarray(boxes, dtype=np.float32), np.asarray(labels, dtype=np.int64)
    height, width = image.shape[:2]

    # 1. The random choices, in the textbook's order; boxes move as each step moves them.
    colours = photometric.draw(rng)
    place = expand.draw(height, width, rng) if expand is not None else None
    if place is None:
        canvas_h, canvas_w, top, left = height, width, 0, 0
    else:
        canvas_h, canvas_w, top, left = place
        boxes = boxes + np.array([left, top, left, top], dtype=boxes.dtype)
    patch, boxes, labels = crop.choose(canvas_h, canvas_w, boxes, labels, rng)
    x0, y0, x1, y1 = (0, 0, canvas_w, canvas_h) if patch is None else patch
    mirror = flip.draw(rng)
    if mirror:
        boxes = flip.mirror_boxes(boxes, x1 - x0)
    boxes = to_unit.scale_boxes(resize.scale_boxes(boxes, y1 - y0, x1 - x0),
                                resize.size, resize.size)

    # 2. The photo's part inside the patch (photo coordinates), its colours distorted.
    py0, py1 = max(y0 - top, 0), min(y1 - top, height)
    px0, px1 = max(x0 - left, 0), min(x1 - left, width)
    part = None
    if py0 < py1 and px0 < px1:
        part = image[py0:py1, px0:px1].astype(np.float32)                          # (h', w', 3)
        part = photometric.apply(part, colours, copy=False)         # part is ours: no 2nd copy
    whole = part is not None and part.shape[:2] == (y1 - y0, x1 - x0)  # the patch is all photo

    # 3. Per channel: the patch of the canvas, mirrored, resized, normalised.
    out = np.empty((3, resize.size, resize.size), dtype=np.float32)                      # (3, S, S)
    for c in range(3):
        if whole:
            plane = part[..., c]                                                         # (h, w)
        else:
            plane = np.empty((y1 - y0, x1 - x0), dtype=np.float32)
            plane[...] = np.float32(expand.fill[c])              # the canvas's mean colour
            if part is not None:
                oy, ox = py0 + top - y0, px0 + left - x0         # the part's corner in the patch
                plane[oy:oy + part.shape[0], ox:ox + part.shape[1]] = part[..., c]
        if mirror:
            plane = plane[:, ::-1]
        out[c] = normalize.normalize_plane(resize.resize_plane(plane), c)
    return out, boxes, labels
