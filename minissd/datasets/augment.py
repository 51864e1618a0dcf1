"""SSD data augmentation: box-aware transforms, composed into a training pipeline.

Every transform is a callable ``t(image, boxes, labels, rng) -> (image, boxes, labels)``:

    image   (H, W, 3) float32 RGB in 0..255 while augmenting; (3, S, S) at the very end
    boxes   (n, 4) float32 xyxy, pixel coordinates until BoxesToUnit makes them [0, 1]
    labels  (n,) int64 in 1..C (0 is the background)
    rng     a numpy Generator; all randomness comes from it, so a seed replays a draw

The training pipeline is the SSD paper's (section 2.2 and 3.6), following ssd.pytorch:

    ToFloat -> PhotometricDistort -> Expand (zoom out) -> RandomIoUCrop (zoom in)
    -> RandomFlip -> Resize(S) -> BoxesToUnit -> Normalize(mean, std) -> ToCHW

One step outside the paper, off by default: :class:`Mosaic` (``minissd train --mosaic P``)
makes a sample of four photos on one canvas (YOLOv4's mosaic) and hands it to the pipeline
above without Expand; it needs the data set, so the DataLoader calls it. Another, also off by
default: :class:`MixUp` (``--mixup P``) blends a finished sample with a second one.

Augmentation is CPU work (images come from PIL, one at a time), so this module uses
NumPy directly; the loader moves whole batches to the GPU.

Each random step first draws its choices (``draw`` / ``choose``: they look only at the
image's size and the boxes) and then applies them. That split lets the pipeline's fast path,
:mod:`minissd.datasets.augment_fast`, make every choice first and compute only the pixels the
final crop keeps; :class:`TrainTransform` dispatches to it, and the two give equal arrays.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from minissd.datasets import augment_fast
from minissd.nn import fast
from minissd.ssd.boxes import iou

# ImageNet RGB statistics in 0..255 units (VGG/ResNet backbones were trained with them).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# The minimum IoU constraints of the paper's crop sampler. None keeps the whole image;
# 0.0 is "randomly sample a patch" (no overlap needed, only a box centre inside it).
CROP_MIN_IOUS = (None, 0.0, 0.1, 0.3, 0.5, 0.7, 0.9)


class Compose:
    """Apply transforms in order, threading (image, boxes, labels) and one rng through."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, boxes, labels, rng=None):
        for t in self.transforms:
            image, boxes, labels = t(image, boxes, labels, rng)
        return image, boxes, labels

    def __repr__(self) -> str:
        steps = "".join(f"    {t!r},\n" for t in self.transforms)
        return f"{type(self).__name__}([\n{steps}])"


def trace(transforms, image, boxes, labels, seed=0):
    """Apply transforms one at a time, keeping every intermediate result (to show or check them).

    -> [(transform or None, image, boxes, labels)], the input first (None). Step k draws from
    its own Generator, ``np.random.default_rng([seed, k])``, so any one step can be replayed
    alone, on another image of the same shape, and make the same random choices.
    """
    transforms = transforms.transforms if isinstance(transforms, Compose) else list(transforms)
    steps = [(None, image, boxes, labels)]
    for k, t in enumerate(transforms):
        image, boxes, labels = t(image, boxes, labels, np.random.default_rng([seed, k]))
        steps.append((t, image, boxes, labels))
    return steps


class ToFloat:
    """uint8 image -> float32 in 0..255; boxes float32, labels int64."""

    def __call__(self, image, boxes, labels, rng=None):
        return (np.asarray(image, dtype=np.float32), np.asarray(boxes, dtype=np.float32),
                np.asarray(labels, dtype=np.int64))

    def __repr__(self) -> str:
        return "ToFloat()"


# ---------------------------------------------------------------- photometric distortion

def rgb_to_hsv(rgb):
    """RGB 0..255 (..., 3) -> HSV: hue in degrees [0, 360), saturation [0, 1], value 0..255."""
    r, g, b = np.moveaxis(rgb, -1, 0).copy()        # contiguous channels: faster than views
    value = np.maximum(np.maximum(r, g), b)
    chroma = value - np.minimum(np.minimum(r, g), b)
    safe_chroma = np.where(chroma > 0, chroma, 1)   # grey pixels: hue 0 (any hue would do)
    hue = 60 * np.where(value == r, (g - b) / safe_chroma,           # red is the largest
                np.where(value == g, (b - r) / safe_chroma + 2,      # green is the largest
                         (r - g) / safe_chroma + 4))                 # blue is the largest
    hue[hue < 0] += 360
    saturation = chroma / np.where(value > 0, value, 1)
    return np.stack([hue, saturation, value], axis=-1)


def hsv_to_rgb(hsv):
    """Inverse of rgb_to_hsv: channel n = v - v*s*clip(min(k, 4 - k), 0, 1), k = (n + h/60) % 6."""
    hue, saturation, value = np.moveaxis(hsv, -1, 0)
    sextant = hue / 60
    channels = []
    for n in (5, 3, 1):                                             # red, green, blue
        k = n + sextant
        k[k >= 6] -= 6
        channels.append(value - value * saturation * np.clip(np.minimum(k, 4 - k), 0, 1))
    return np.stack(channels, axis=-1)


class PhotometricDistort:
    """Random brightness, contrast, saturation, hue and channel order (ssd.pytorch's recipe).

    Each distortion is applied with probability 1/2: brightness (add a delta), then
    contrast either before or after the HSV steps (saturation scale, hue shift), then a
    random channel permutation. Boxes are untouched. The result is clipped to 0..255
    (ssd.pytorch leaves it unclipped; a real photograph cannot leave that range).
    """

    def __init__(self, brightness_delta=32.0, contrast_range=(0.5, 1.5),
                 saturation_range=(0.5, 1.5), hue_delta=18.0, p=0.5):
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta
        self.p = p

    def __call__(self, image, boxes, labels, rng):
        return self.apply(image, self.draw(rng)), boxes, labels

    def draw(self, rng) -> dict:
        """The random choices of one call, in the order __call__ makes them (none depends on
        the pixels): {"brightness": delta or None, "contrast": factor or None, "contrast_first",
        "saturation": factor or None, "hue": delta or None, "channels": permutation or None}."""
        choice = {"brightness": (rng.uniform(-self.brightness_delta, self.brightness_delta)
                                 if rng.random() < self.p else None)}
        choice["contrast_first"] = contrast_first = rng.random() < 0.5
        choice["contrast"] = None
        if contrast_first and rng.random() < self.p:
            choice["contrast"] = rng.uniform(*self.contrast_range)
        saturate, shift_hue = rng.random() < self.p, rng.random() < self.p
        choice["saturation"] = rng.uniform(*self.saturation_range) if saturate else None
        choice["hue"] = rng.uniform(-self.hue_delta, self.hue_delta) if shift_hue else None
        if not contrast_first and rng.random() < self.p:
            choice["contrast"] = rng.uniform(*self.contrast_range)
        choice["channels"] = rng.permutation(3) if rng.random() < self.p else None
        return choice

    @staticmethod
    def apply(image, choice, copy=True):
        """Distort a float32 (H, W, 3) image 0..255 as ``choice`` (from draw) says; pixel by
        pixel, so a part of the image comes out as that part of the whole image's result.
        copy=False lets the first steps write into ``image`` (a float32 array the caller owns)."""
        if copy:
            image = image.copy()
        if choice["brightness"] is not None:
            image += choice["brightness"]
        if choice["contrast_first"] and choice["contrast"] is not None:
            image *= choice["contrast"]
        if choice["saturation"] is not None or choice["hue"] is not None:
            hsv = rgb_to_hsv(np.clip(image, 0, 255))
            if choice["saturation"] is not None:
                hsv[..., 1] = np.clip(hsv[..., 1] * choice["saturation"], 0, 1)
            if choice["hue"] is not None:
                hue = hsv[..., 0] + choice["hue"]
                hue[hue < 0] += 360                 # wrap around the colour wheel
                hue[hue >= 360] -= 360              # (np.mod on floats is much slower)
                hsv[..., 0] = hue
            image = hsv_to_rgb(hsv)
        if not choice["contrast_first"] and choice["contrast"] is not None:
            image *= choice["contrast"]
        if choice["channels"] is not None:
            image = image[..., choice["channels"]]
        return np.clip(image, 0, 255)

    def __repr__(self) -> str:
        return (f"PhotometricDistort(brightness_delta={self.brightness_delta}, "
                f"contrast_range={self.contrast_range}, saturation_range={self.saturation_range}, "
                f"hue_delta={self.hue_delta}, p={self.p})")


# ---------------------------------------------------------------- geometry

class Expand:
    """Zoom out: put the image on a canvas up to ``max_ratio`` times larger, filled with the mean.

    Small objects become smaller, so the model sees more small-object examples (the
    paper's "zoom out" trick, worth +2-3 mAP). Applied with probability p.
    """

    def __init__(self, fill=IMAGENET_MEAN, max_ratio=4.0, p=0.5):
        self.fill = tuple(fill)
        self.max_ratio = max_ratio
        self.p = p

    def __call__(self, image, boxes, labels, rng):
        height, width, channels = image.shape
        place = self.draw(height, width, rng)
        if place is None:
            return image, boxes, labels
        canvas_h, canvas_w, top, left = place
        canvas = np.empty((canvas_h, canvas_w, channels), dtype=image.dtype)
        canvas[...] = np.asarray(self.fill, dtype=image.dtype)
        canvas[top:top + height, left:left + width] = image
        return canvas, boxes + np.array([left, top, left, top], dtype=boxes.dtype), labels

    def draw(self, height, width, rng):
        """The random choice of one call on a (height, width) image: None (no zoom-out, with
        probability 1 - p) or (canvas_h, canvas_w, top, left), where the image goes."""
        if rng.random() >= self.p:
            return None
        ratio = rng.uniform(1, self.max_ratio)
        canvas_h, canvas_w = int(height * ratio), int(width * ratio)
        top = int(rng.uniform(0, canvas_h - height))
        left = int(rng.uniform(0, canvas_w - width))
        return canvas_h, canvas_w, top, left

    def __repr__(self) -> str:
        return f"Expand(fill={self.fill}, max_ratio={self.max_ratio}, p={self.p})"


class RandomIoUCrop:
    """Zoom in: crop a random patch that overlaps the objects, as the SSD paper samples.

    Draw a mode from ``min_ious`` (None: keep the whole image). Then draw
    ``max_trials`` patches with sides in [min_scale, 1] of the image's and take the
    first whose aspect ratio h/w lies in ``aspect_range``, whose IoU with *at least one*
    box is >= the mode's minimum, and that contains at least one box centre. Boxes whose
    centre lies in the patch are kept (clipped to it), the others are dropped.

    "At least one box" is what the original Caffe SSD does (sampler.cpp, SatisfySampleConstraint).
    ssd.pytorch instead writes ``overlap.min() < min_iou and max_iou < overlap.max()``
    with max_iou = inf, which is always False, so its IoU constraint never rejects a
    crop (amdegroot/ssd.pytorch issues #68 and #119; it also leaves 0.5 out of its modes).
    If no patch passes, the image is returned unchanged.
    """

    def __init__(self, min_ious=CROP_MIN_IOUS, max_trials=50, min_scale=0.3,
                 aspect_range=(0.5, 2.0)):
        self.min_ious = tuple(min_ious)
        self.max_trials = max_trials
        self.min_scale = min_scale
        self.aspect_range = aspect_range

    def __call__(self, image, boxes, labels, rng):
        patch, boxes, labels = self.choose(image.shape[0], image.shape[1], boxes, labels, rng)
        if patch is None:
            return image, boxes, labels
        x0, y0, x1, y1 = patch
        return image[y0:y1, x0:x1], boxes, labels

    def choose(self, height, width, boxes, labels, rng):
        """The patch of one call on a (height, width) image with these boxes: (patch, boxes,
        labels), patch None (the whole image; boxes and labels as given) or the pixel
        (x0, y0, x1, y1) to keep, with the kept boxes moved into the patch's coordinates."""
        min_iou = self.min_ious[rng.integers(len(self.min_ious))]
        if min_iou is None or len(boxes) == 0:
            return None, boxes, labels
        # All trials at once; the first that passes is the one a trial loop would take.
        trials = self.max_trials
        w = rng.uniform(self.min_scale * width, width, trials)                  # (T,)
        h = rng.uniform(self.min_scale * height, height, trials)
        left, top = rng.random(trials) * (width - w), rng.random(trials) * (height - h)
        patches = np.stack([left, top, left + w, top + h], axis=1).astype(int)  # (T, 4) pixels
        patches = patches.astype(boxes.dtype)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2                             # (n, 2)
        inside = np.all((centres > patches[:, None, :2]) & (centres < patches[:, None, 2:]),
                        axis=2)                                                 # (T, n)
        ok = ((self.aspect_range[0] <= h / w) & (h / w <= self.aspect_range[1])
              & (iou(patches, boxes).max(axis=1) >= min_iou)       # some box overlaps enough
              & inside.any(axis=1))                                # some box centre inside
        if not ok.any():
            return None, boxes, labels
        t = int(np.argmax(ok))                                                  # first success
        patch, keep = patches[t], inside[t]
        kept = np.concatenate([np.maximum(boxes[keep, :2], patch[:2]),          # clip to the
                               np.minimum(boxes[keep, 2:], patch[2:])], axis=1)  # patch and
        kept -= patch[[0, 1, 0, 1]]                                             # move its origin
        return tuple(int(v) for v in patch), kept, labels[keep]

    def __repr__(self) -> str:
        return (f"RandomIoUCrop(min_ious={self.min_ious}, max_trials={self.max_trials}, "
                f"min_scale={self.min_scale}, aspect_range={self.aspect_range})")


class RandomFlip:
    """Mirror left-right with probability p; a pixel box [x0, x1] becomes [W - x1, W - x0]."""

    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, image, boxes, labels, rng):
        if not self.draw(rng):
            return image, boxes, labels
        return hflip(image, boxes) + (labels,)

    def draw(self, rng) -> bool:
        """The random choice of one call: mirror or not."""
        return rng.random() < self.p

    @staticmethod
    def mirror_boxes(boxes, width):
        """Pixel xyxy boxes of a ``width`` wide image, mirrored (see hflip_boxes)."""
        return hflip_boxes(boxes, width)

    def __repr__(self) -> str:
        return f"RandomFlip(p={self.p})"


def hflip(image, boxes):
    """Mirror an (H, W, C) image and its pixel xyxy boxes left-right (its own inverse)."""
    return image[:, ::-1], hflip_boxes(boxes, image.shape[1])


def hflip_boxes(boxes, width):
    """Pixel xyxy boxes (..., 4) of a ``width`` wide image, mirrored left-right (width 1: boxes
    in [0, 1], as test-time flipping uses it)."""
    flipped = boxes.copy()
    flipped[..., 0], flipped[..., 2] = width - boxes[..., 2], width - boxes[..., 0]
    return flipped


class Resize:
    """Resize to size x size (bilinear, ignoring aspect ratio, as SSD does); scales pixel boxes.

    Keeps the dtype: a uint8 image is resized by PIL in one call (fast, for evaluation);
    a float32 image one channel at a time in PIL's float mode "F" (no rounding to 0..255 ints).
    """

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, image, boxes, labels, rng=None):
        height, width = image.shape[:2]
        target = (self.size, self.size)
        if image.dtype == np.uint8:
            resized = np.asarray(Image.fromarray(image).resize(target, Image.BILINEAR))
        else:
            resized = np.stack([self.resize_plane(image[..., c]) for c in range(image.shape[2])],
                               axis=-1)
        return resized, self.scale_boxes(boxes, height, width), labels

    def resize_plane(self, plane):
        """One float32 (H, W) channel -> (size, size), bilinear, in PIL's float mode "F"."""
        plane = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
        return np.asarray(plane.resize((self.size, self.size), Image.BILINEAR))

    def scale_boxes(self, boxes, height, width):
        """Pixel boxes of a (height, width) image -> pixel boxes of the size x size one."""
        scale = np.array([self.size / width, self.size / height] * 2, dtype=np.float32)
        # clip: float32 rounding can put an edge at size + 4e-6
        return np.clip(np.asarray(boxes, dtype=np.float32) * scale, 0, self.size)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class BoxesToUnit:
    """Pixel xyxy boxes -> [0, 1] xyxy, dividing by the current image width and height."""

    def __call__(self, image, boxes, labels, rng=None):
        return image, self.scale_boxes(boxes, *image.shape[:2]), labels

    @staticmethod
    def scale_boxes(boxes, height, width):
        """Pixel boxes of a (height, width) image -> [0, 1] boxes."""
        scale = np.array([width, height, width, height], dtype=boxes.dtype)
        return np.clip(boxes / scale, 0, 1)

    def __repr__(self) -> str:
        return "BoxesToUnit()"


class Normalize:
    """(image - mean) / std per channel, both in 0..255 units."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image, boxes, labels, rng=None):
        out = np.empty(image.shape, dtype=np.float32)
        for c in range(len(self.mean)):                  # per channel: faster than (H, W, 3) - (3,)
            out[..., c] = self.normalize_plane(image[..., c], c)
        return out, boxes, labels

    def normalize_plane(self, plane, c):
        """(plane - mean) / std of channel c."""
        return (plane - self.mean[c]) / self.std[c]

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class ToCHW:
    """(H, W, 3) -> (3, H, W), contiguous float32: the layout the network takes."""

    def __call__(self, image, boxes, labels, rng=None):
        return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32), boxes, labels

    def __repr__(self) -> str:
        return "ToCHW()"


# ---------------------------------------------------------------- pipelines

class TrainTransform(Compose):
    """The SSD training pipeline (train_transform): a Compose of the steps above, with a fast path.

    Called, it runs the steps one after another (the textbook version: every step on the
    whole image), or, with minissd's fast paths on (the default; ``MINISSD_FAST=0`` or
    ``minissd.nn.fast.set_enabled(False)`` turns them off), :func:`augment_fast.train_sample`:
    the same random choices and the same numbers, computed only for the pixels that end up
    in the output. Both give the same arrays, bit for bit (tests/datasets/test_augment_fast.py).
    The fast path is taken only while ``transforms`` is still train_transform's sequence.
    """

    STEPS = (ToFloat, PhotometricDistort, Expand, RandomIoUCrop, RandomFlip, Resize, BoxesToUnit,
             Normalize, ToCHW)

    def fusable(self) -> bool:
        """True if ``transforms`` is train_transform's sequence (Expand may be left out)."""
        kinds = tuple(type(t) for t in self.transforms)
        return kinds in (self.STEPS, self.STEPS[:2] + self.STEPS[3:])

    def __call__(self, image, boxes, labels, rng=None):
        check_sample(image, boxes, labels)
        if fast.enabled() and self.fusable():   # fast path: only the pixels that survive
            return augment_fast.train_sample(self.transforms, image, boxes, labels, rng)
        return super().__call__(image, boxes, labels, rng)      # textbook: step after step


def check_sample(image, boxes, labels):
    """Raise a ValueError naming the argument whose shape is wrong: image (H, W, 3) RGB with
    H, W >= 1, boxes (n, 4) xyxy, labels (n,)."""
    image_shape, box_shape, label_shape = np.shape(image), np.shape(boxes), np.shape(labels)
    if len(image_shape) != 3 or image_shape[2] != 3 or min(image_shape[:2]) < 1:
        raise ValueError(f"train_transform: image has shape {image_shape}; expected (H, W, 3) RGB")
    if len(box_shape) != 2 or box_shape[1] != 4:
        raise ValueError(f"train_transform: boxes have shape {box_shape}; expected (n, 4) xyxy")
    if label_shape != box_shape[:1]:
        raise ValueError(f"train_transform: labels have shape {label_shape}; expected "
                         f"({box_shape[0]},), one per box")


def train_transform(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    zoom_out: float = 4.0) -> TrainTransform:
    """The SSD training pipeline: uint8 (H, W, 3) + pixel boxes -> (3, S, S) + [0, 1] boxes.

    ``zoom_out``: Expand's largest canvas / photo ratio (the paper's 4; 1 leaves it out).
    """
    return TrainTransform([
        ToFloat(),
        PhotometricDistort(),
        *([Expand(fill=mean, max_ratio=zoom_out)] if zoom_out > 1 else []),
        RandomIoUCrop(),
        RandomFlip(),
        Resize(size),
        BoxesToUnit(),
        Normalize(mean, std),
        ToCHW(),
    ])


def eval_transform(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Compose:
    """Evaluation: resize and normalise only (deterministic; rng may be None)."""
    # Resize before ToFloat: PIL resizes uint8 images several times faster.
    return Compose([Resize(size), ToFloat(), BoxesToUnit(), Normalize(mean, std), ToCHW()])


def flip_transform(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Compose:
    """Light training pipeline: horizontal flip, resize, normalise (for data without scale variety
    to learn, like the synthetic shapes, where SSD's zoom in/out mostly slows training down)."""
    return Compose([Resize(size), ToFloat(), RandomFlip(), BoxesToUnit(), Normalize(mean, std),
                    ToCHW()])


TRANSFORMS = {"ssd": train_transform, "flip": flip_transform, "none": eval_transform}


def get_transform(kind: str, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  zoom_out: float = 4.0) -> Compose:
    """The pipeline named ``kind``: 'ssd' (the paper's augmentation, zooming out up to
    ``zoom_out`` times), 'flip' or 'none'."""
    if kind not in TRANSFORMS:
        raise ValueError(f"unknown augmentation {kind!r}: expected one of {sorted(TRANSFORMS)}")
    if kind == "ssd":
        return train_transform(size, mean, std, zoom_out=zoom_out)
    return TRANSFORMS[kind](size, mean, std)


# ---------------------------------------------------------------- several photos in one sample

class Mosaic:
    """Four photos in one training sample (YOLOv4's mosaic), then a per-photo pipeline.

    Not one of the paper's steps: a sample of the data set becomes, with probability p, a
    (2 side, 2 side) canvas filled with ``fill`` on which the photo and three others drawn at
    random sit at their own size, one in each quadrant around a centre drawn in the middle
    half of the canvas (each with its corner at the centre, cut off at the canvas's edges).
    A box keeps its part on the canvas if that is at least ``min_visible`` of its area and
    2 px a side; the others are dropped. The canvas then goes through ``transform``,
    train_transform without Expand: kept whole by the crop, the canvas is a 2x zoom-out that
    shows objects and backgrounds from four photos.

    It needs the data set, so the DataLoader calls it (``DataLoader(..., mosaic=Mosaic(...))``)
    with the photo's index and two Generators: ``rng`` for the mosaic's choices, ``sample_rng``
    for the transform's.
    """

    def __init__(self, transform, p=0.5, side=300, fill=IMAGENET_MEAN, min_visible=0.3):
        self.transform = transform
        self.p = p
        self.side = int(side)
        self.fill = np.round(np.asarray(fill)).astype(np.uint8)     # the canvas is uint8
        self.min_visible = min_visible

    def __call__(self, dataset, index, rng, sample_rng, photo=None):
        """Sample ``index`` of ``dataset``: a transformed mosaic, or None (no mosaic this time,
        or no box survived it: the caller then transforms the photo alone).

        photo: ``dataset.load(index)`` if the caller has it already (the DataLoader does, so
        that a mosaic without boxes costs no second decode); default: loaded here."""
        plan = self.draw(len(dataset), rng)
        if plan is None:
            return None
        others, quadrants, centre = plan
        photo = dataset.load(index) if photo is None else photo
        photos = [photo] + [dataset.load(int(i)) for i in others]
        image, boxes, labels = self.combine(photos, quadrants, centre)
        if len(boxes) == 0:
            return None
        return self.transform(image, boxes, labels, sample_rng)

    def draw(self, n, rng):
        """The random choices of one call on a data set of n photos: None (no mosaic, with
        probability 1 - p) or (others (3,) indices, quadrants (4,): where the photo and the
        others go, 0 top left, 1 top right, 2 bottom left, 3 bottom right; centre (x, y))."""
        if rng.random() >= self.p:
            return None
        others = rng.integers(n, size=3)
        quadrants = rng.permutation(4)
        centre = tuple(int(v) for v in rng.uniform(0.5 * self.side, 1.5 * self.side, 2))
        return others, quadrants, centre

    def combine(self, photos, quadrants, centre):
        """Four (image uint8 (H, W, 3), boxes (n, 4) pixels, labels (n,)) -> one canvas
        uint8 (2 side, 2 side, 3) and the boxes (m, 4) and labels (m,) that stay on it."""
        size = 2 * self.side
        canvas = np.empty((size, size, 3), np.uint8)
        canvas[...] = self.fill
        xc, yc = centre
        kept_boxes, kept_labels = [], []
        for (image, boxes, labels), q in zip(photos, quadrants):
            h, w = image.shape[:2]
            x0 = xc - w if q in (0, 2) else xc         # the photo's top-left corner on the canvas
            y0 = yc - h if q in (0, 1) else yc
            cx0, cy0 = max(x0, 0), max(y0, 0)          # its part on the canvas
            cx1, cy1 = min(x0 + w, size), min(y0 + h, size)
            canvas[cy0:cy1, cx0:cx1] = image[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
            moved = boxes + np.array([x0, y0, x0, y0], np.float32)
            clipped = np.concatenate([np.maximum(moved[:, :2], [cx0, cy0]),
                                      np.minimum(moved[:, 2:], [cx1, cy1])],
                                     axis=1).astype(np.float32)                  # (n, 4)
            wh = clipped[:, 2:] - clipped[:, :2]
            area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
            keep = ((wh.min(axis=1) >= 2)
                    & (np.prod(np.clip(wh, 0, None), axis=1) >= self.min_visible * area))
            kept_boxes.append(clipped[keep])
            kept_labels.append(np.asarray(labels)[keep])
        return canvas, np.concatenate(kept_boxes), np.concatenate(kept_labels)

    def __repr__(self) -> str:
        return (f"Mosaic(p={self.p}, side={self.side}, min_visible={self.min_visible}, "
                f"transform={self.transform!r})")


def get_mosaic(p: float, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """The mosaic of ``minissd train --mosaic p`` for an S = ``size`` input (None for p = 0)."""
    if p == 0:
        return None
    return Mosaic(train_transform(size, mean, std, zoom_out=1.0), p=p, fill=mean)


# ---------------------------------------------------------------- two samples in one

class MixUp:
    """Two finished training samples in one (mixup for detection; not one of the paper's steps).

    With probability p a sample becomes ``r * first + (1 - r) * second``, pixel by pixel, with
    the boxes and labels of both; r is drawn from Beta(a, a), about one half for YOLOv5's
    a = 32 (0.5 +- 0.06). Zhang et al. 2019 ("Bag of Freebies for Training Object Detection
    Neural Networks") blend two photos so that a detector learns objects out of their usual
    context; as in YOLOv5 the loss is not weighted by r: each box counts as it does alone.

    It blends samples after their pipelines ((3, S, S) normalised images, [0, 1] boxes): as
    Normalize is affine, ``r * (x1 - mean) / std + (1 - r) * (x2 - mean) / std`` is the blend
    of the pixels, normalised. The DataLoader calls it (``DataLoader(..., mixup=MixUp(...))``)
    and makes the second sample with Generators of its own.
    """

    def __init__(self, p=0.5, a=32.0):
        self.p = p
        self.a = a

    def draw(self, n, rng):
        """The random choices for one sample of a data set of n photos: None (no mixup, with
        probability 1 - p) or (the other photo's index, r in (0, 1), the first sample's share)."""
        if rng.random() >= self.p:
            return None
        return int(rng.integers(n)), float(rng.beta(self.a, self.a))

    @staticmethod
    def blend(first, second, r):
        """Two samples (image (3, S, S), boxes (n, 4), labels (n,)) -> their mixture."""
        (image1, boxes1, labels1), (image2, boxes2, labels2) = first, second
        if image1.shape != image2.shape:
            raise ValueError(f"mixup: the two samples' images differ in shape "
                             f"({image1.shape} and {image2.shape})")
        image = (r * image1 + (1 - r) * image2).astype(image1.dtype, copy=False)  # (3, S, S)
        boxes = np.concatenate([np.reshape(boxes1, (-1, 4)), np.reshape(boxes2, (-1, 4))])
        labels = np.concatenate([np.reshape(labels1, -1), np.reshape(labels2, -1)])
        return image, boxes.astype(np.float32, copy=False), labels

    def __repr__(self) -> str:
        return f"MixUp(p={self.p}, a={self.a})"


def get_mixup(p: float):
    """The mixup of ``minissd train --mixup p`` (None for p = 0)."""
    return None if p == 0 else MixUp(p=p)
