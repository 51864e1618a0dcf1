"""Augmentation: boxes stay inside the image and on their object; seeds replay draws."""
import colorsys
import re
from pathlib import Path

import numpy as np
import pytest

from minissd.datasets import augment as A
from minissd.nn.fast import fast_paths
from minissd.ssd.boxes import iou
from minissd.datasets.voc import VOCDataset

VOC5 = Path(__file__).resolve().parents[1] / "data" / "voc5"


def coordinate_image(height, width):
    """float32 (H, W, 3) whose pixel (y, x) holds (x, y, 7): a crop reveals where it came from."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([xx, yy, np.full_like(xx, 7)], axis=-1)


def painted_image(rng, n=4, height=120, width=160):
    """A grey image with n non-overlapping rectangles, object k painted in a unique colour."""
    image = np.full((height, width, 3), 100, np.float32)
    boxes, colours = [], []
    for k in range(n):                           # one column band per object: no overlap
        band = width // n
        x0 = k * band + int(rng.integers(0, band // 3))
        x1 = x0 + int(rng.integers(band // 3, band - (x0 - k * band)))
        y0 = int(rng.integers(0, height // 2))
        y1 = int(rng.integers(y0 + 8, height))
        colour = (10 + 50 * k, 255 - 40 * k, 30 * k)
        image[y0:y1, x0:x1] = colour
        boxes.append([x0, y0, x1, y1])
        colours.append(colour)
    return image, np.array(boxes, np.float32), np.arange(1, n + 1, dtype=np.int64), np.array(colours)


def random_boxes(rng, n, height, width):
    x = np.sort(rng.uniform(0, width, (n, 2)), axis=1)
    y = np.sort(rng.uniform(0, height, (n, 2)), axis=1)
    return np.stack([x[:, 0], y[:, 0], x[:, 1] + 1, y[:, 1] + 1], axis=1).clip(0, [width, height] * 2)


def assert_boxes_inside(image, boxes, labels):
    height, width = image.shape[:2]
    assert boxes.dtype == np.float32 and boxes.shape == (len(labels), 4)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert (boxes[:, :2] < boxes[:, 2:]).all()


# ---------------------------------------------------------------- colour conversion

def test_hsv_matches_colorsys_and_round_trips():
    rgb = np.random.default_rng(0).uniform(0, 255, (500, 3))
    rgb[:3] = [[0, 0, 0], [255, 255, 255], [80, 80, 80]]       # greys: hue 0
    hsv = A.rgb_to_hsv(rgb)
    ref = np.array([colorsys.rgb_to_hsv(*(p / 255)) for p in rgb]) * [360, 1, 255]
    np.testing.assert_allclose(hsv, ref, atol=1e-9)
    np.testing.assert_allclose(A.hsv_to_rgb(hsv), rgb, atol=1e-9)
    assert A.rgb_to_hsv(rgb.astype(np.float32)).dtype == np.float32


# ---------------------------------------------------------------- each transform

GEOMETRIC = [
    ("expand", A.Expand(p=1.0)),
    ("crop", A.RandomIoUCrop()),
    ("crop any patch", A.RandomIoUCrop(min_ious=(0.0,))),
    ("flip", A.RandomFlip(p=1.0)),
    ("resize", A.Resize(50)),
    ("photometric", A.PhotometricDistort(p=1.0)),
    ("train pipeline to pixels", A.Compose([A.PhotometricDistort(), A.Expand(), A.RandomIoUCrop(),
                                            A.RandomFlip(), A.Resize(64)])),
]


@pytest.mark.parametrize("name, transform", GEOMETRIC, ids=[g[0] for g in GEOMETRIC])
def test_boxes_stay_inside_the_image(name, transform):
    for seed in range(30):
        rng = np.random.default_rng(seed)
        image = rng.uniform(0, 255, (90, 120, 3)).astype(np.float32)
        boxes = random_boxes(rng, 5, 90, 120).astype(np.float32)
        out, out_boxes, out_labels = transform(image, boxes, np.arange(1, 6), rng)
        assert out.dtype == np.float32 and out.ndim == 3 and out.shape[2] == 3
        assert_boxes_inside(out, out_boxes, out_labels)


def test_flip_twice_is_the_identity():
    rng = np.random.default_rng(1)
    image, boxes = rng.uniform(0, 255, (30, 40, 3)).astype(np.float32), random_boxes(rng, 6, 30, 40)
    flipped, flipped_boxes = A.hflip(image, boxes)
    assert not np.array_equal(flipped, image)
    np.testing.assert_array_equal(flipped[:, 0], image[:, -1])
    back, back_boxes = A.hflip(flipped, flipped_boxes)
    np.testing.assert_array_equal(back, image)
    np.testing.assert_allclose(back_boxes, boxes, atol=1e-12)


def test_expand_puts_the_image_on_a_mean_canvas():
    image = coordinate_image(20, 30)
    boxes = np.array([[2, 3, 12, 15]], np.float32)
    for seed in range(10):
        out, out_boxes, _ = A.Expand(fill=(1, 2, 3), p=1.0)(image, boxes, np.array([1]),
                                                            np.random.default_rng(seed))
        assert 20 <= out.shape[0] <= 80 and 30 <= out.shape[1] <= 120
        top, left = np.argwhere(out[..., 2] == 7)[0]             # where the image landed
        np.testing.assert_array_equal(out[top:top + 20, left:left + 30], image)
        assert (out[..., 2] == 3).sum() == out.shape[0] * out.shape[1] - 600   # the rest is fill
        np.testing.assert_array_equal(out_boxes, boxes + [left, top, left, top])


def test_crop_keeps_boxes_whose_centre_is_inside_and_clips_them():
    """Crop a coordinate image: the top-left pixel tells the patch; check every box against it."""
    height, width = 100, 140
    image, crops = coordinate_image(height, width), 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        boxes = random_boxes(rng, 6, height, width).astype(np.float32)
        labels = np.arange(1, 7)
        out, out_boxes, out_labels = A.RandomIoUCrop(min_ious=(0.0, 0.5))(image, boxes, labels, rng)
        left, top = out[0, 0, :2]
        patch = np.array([left, top, left + out.shape[1], top + out.shape[0]], np.float32)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = np.all((centres > patch[:2]) & (centres < patch[2:]), axis=1)
        np.testing.assert_array_equal(out_labels, labels[inside])        # the others are dropped
        expected = np.concatenate([np.maximum(boxes[inside, :2], patch[:2]),
                                   np.minimum(boxes[inside, 2:], patch[2:])], axis=1) - patch[[0, 1, 0, 1]]
        np.testing.assert_allclose(out_boxes, expected, atol=1e-4)
        crops += out.shape[:2] != (height, width)
    assert crops > 100


@pytest.mark.parametrize("min_iou", [0.3, 0.7, 0.9])
def test_crop_meets_the_min_iou_with_at_least_one_box(min_iou):
    """The constraint must really reject crops (ssd.pytorch's and/or slip never does)."""
    height, width = 100, 140
    image, crops = coordinate_image(height, width), 0
    boxes = np.array([[10, 10, 110, 90], [60, 20, 135, 95]], np.float32)
    for seed in range(200):
        out, _, _ = A.RandomIoUCrop(min_ious=(min_iou,))(image, boxes, np.array([1, 2]),
                                                         np.random.default_rng(seed))
        if out.shape[:2] == (height, width):
            continue                                               # no patch passed: unchanged
        left, top = out[0, 0, :2]
        patch = np.array([left, top, left + out.shape[1], top + out.shape[0]], np.float32)
        assert iou(boxes, patch[None]).max() >= min_iou
        crops += 1
    assert crops >= 5


def test_crop_without_boxes_or_in_whole_image_mode_is_a_no_op():
    image = np.zeros((20, 30, 3), np.float32)
    no_boxes = np.zeros((0, 4), np.float32)
    out, boxes, labels = A.RandomIoUCrop()(image, no_boxes, np.zeros(0, np.int64), np.random.default_rng(0))
    assert out is image and boxes.shape == (0, 4)
    box = np.array([[1, 1, 5, 5]], np.float32)
    assert A.RandomIoUCrop(min_ious=(None,))(image, box, np.array([1]), np.random.default_rng(0))[0] is image


def test_expand_then_crop_then_flip_keep_each_box_on_its_object():
    """Paint each object a unique colour: after the geometry, its box still holds only that colour."""
    chain = A.Compose([A.Expand(fill=(0, 0, 255)), A.RandomIoUCrop(), A.RandomFlip()])
    checked = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        image, boxes, labels, colours = painted_image(rng)
        out, out_boxes, out_labels = chain(image, boxes, labels, rng)
        assert_boxes_inside(out, out_boxes, out_labels)
        for (x0, y0, x1, y1), label in zip(out_boxes.astype(int), out_labels):
            region = out[y0:y1, x0:x1].reshape(-1, 3)
            assert len(region) and (region == colours[label - 1]).all(), f"seed {seed} label {label}"
            checked += 1
    assert checked > 100


def test_resize_scales_boxes_with_the_content():
    rng = np.random.default_rng(3)
    image, boxes, labels, colours = painted_image(rng, height=80, width=200)
    for input_image in (image, image.astype(np.uint8)):
        out, out_boxes, _ = A.Resize(100)(input_image, boxes, labels)
        assert out.shape == (100, 100, 3) and out.dtype == input_image.dtype
        np.testing.assert_allclose(out_boxes, boxes * [0.5, 1.25, 0.5, 1.25], rtol=1e-6)
        for (x0, y0, x1, y1), colour in zip(out_boxes, colours):   # box centres keep their colour
            np.testing.assert_allclose(out[int((y0 + y1) / 2), int((x0 + x1) / 2)], colour, atol=1)


def test_photometric_keeps_boxes_range_and_p0_is_identity():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (40, 50, 3)).astype(np.float32)
    boxes, labels = random_boxes(rng, 3, 40, 50).astype(np.float32), np.array([1, 2, 3])
    changed = 0
    for seed in range(20):
        out, out_boxes, out_labels = A.PhotometricDistort()(image, boxes, labels, np.random.default_rng(seed))
        assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255
        assert out_boxes is boxes and out_labels is labels
        changed += not np.allclose(out, image)
    assert changed > 10
    out, _, _ = A.PhotometricDistort(p=0.0)(image, boxes, labels, np.random.default_rng(0))
    np.testing.assert_allclose(out, image, atol=1e-3)          # contrast/hue skipped: HSV round trip only


# ---------------------------------------------------------------- pipelines

def test_train_transform_output_and_determinism():
    image, boxes, labels = VOCDataset([(VOC5, "trainval")]).load(0)
    t = A.train_transform(96)
    outs = [t(image, boxes, labels, np.random.default_rng(s)) for s in (5, 5, 6)]
    out, out_boxes, out_labels = outs[0]
    assert out.shape == (3, 96, 96) and out.dtype == np.float32 and out.flags.c_contiguous
    assert out_boxes.dtype == np.float32 and out_labels.dtype == np.int64
    assert (out_boxes >= 0).all() and (out_boxes <= 1).all() and len(out_boxes) == len(out_labels)
    assert abs(out.mean()) < 3                                  # normalised, roughly centred
    for a, b in zip(outs[0], outs[1]):
        np.testing.assert_array_equal(a, b)                    # same seed: same draw
    assert not np.array_equal(outs[0][0], outs[2][0])           # another seed: another draw


def test_eval_transform_is_resize_and_normalise():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 60, 3)).astype(np.uint8)
    boxes = np.array([[6, 3, 30, 27]], np.float32)
    out, out_boxes, labels = A.eval_transform(20, mean=(10, 20, 30), std=(2, 4, 8))(image, boxes, np.array([4]))
    resized = A.Resize(20)(image, boxes, labels)[0].astype(np.float32)
    np.testing.assert_allclose(out, ((resized - [10, 20, 30]) / [2, 4, 8]).transpose(2, 0, 1), rtol=1e-6)
    np.testing.assert_allclose(out_boxes, [[0.1, 0.1, 0.5, 0.9]], rtol=1e-6)
    assert labels.dtype == np.int64


def test_flip_transform_is_eval_or_its_mirror():
    image, boxes, labels = VOCDataset([(VOC5, "trainval")]).load(0)
    plain, plain_boxes, _ = A.eval_transform(64)(image, boxes, labels)
    seen = set()
    for seed in range(8):
        out, out_boxes, out_labels = A.flip_transform(64)(image, boxes, labels, np.random.default_rng(seed))
        np.testing.assert_array_equal(out_labels, labels)
        if np.array_equal(out, plain):
            np.testing.assert_allclose(out_boxes, plain_boxes, rtol=1e-6)
            seen.add("plain")
        else:
            np.testing.assert_array_equal(out, plain[:, :, ::-1])                # mirrored image
            mirrored = np.stack([1 - plain_boxes[:, 2], plain_boxes[:, 1],
                                 1 - plain_boxes[:, 0], plain_boxes[:, 3]], axis=1)
            np.testing.assert_allclose(out_boxes, mirrored, rtol=1e-6, atol=1e-7)
            seen.add("flipped")
    assert seen == {"plain", "flipped"}


@pytest.mark.parametrize("kind, first", [("ssd", A.ToFloat), ("flip", A.Resize), ("none", A.Resize)])
def test_get_transform_by_name(kind, first):
    assert isinstance(A.get_transform(kind, 32).transforms[0], first)


def test_get_transform_unknown_name_is_named():
    with pytest.raises(ValueError, match="'zoom'.*flip"):
        A.get_transform("zoom", 32)


def test_zoom_out_sets_expand_s_largest_canvas_and_1_leaves_it_out():
    steps = lambda t: [type(step) for step in t.transforms]
    default, two, off = (A.get_transform("ssd", 32, zoom_out=z) for z in (4.0, 2.0, 1.0))
    assert [s.max_ratio for s in default.transforms if isinstance(s, A.Expand)] == [4.0]
    assert [s.max_ratio for s in two.transforms if isinstance(s, A.Expand)] == [2.0]
    assert A.Expand not in steps(off)
    assert [s for s in steps(default) if s is not A.Expand] == steps(off)
    image = np.full((40, 60, 3), 200, np.uint8)
    boxes = np.array([[10, 10, 30, 30]], np.float32)
    # the canvas of zoom_out=2: 1 to 2 times the photo's size, never 4
    canvas = [A.Expand(max_ratio=2.0, p=1.0)(image.astype(np.float32), boxes, np.ones(1),
                                             np.random.default_rng(s))[0].shape[1]
              for s in range(50)]
    assert 60 <= min(canvas) and max(canvas) <= 120


def test_empty_boxes_go_through_the_training_pipeline():
    image = np.full((50, 70, 3), 128, np.uint8)
    for seed in range(10):
        out, boxes, labels = A.train_transform(32)(image, np.zeros((0, 4), np.float32),
                                                   np.zeros(0, np.int64), np.random.default_rng(seed))
        assert out.shape == (3, 32, 32) and boxes.shape == (0, 4) and labels.shape == (0,)


def test_compose_repr_lists_the_steps():
    text = repr(A.train_transform(300))
    assert text.startswith("TrainTransform([\n") and repr(A.eval_transform(8)).startswith("Compose([")
    for step in ("PhotometricDistort", "Expand", "RandomIoUCrop", "RandomFlip", "Resize(300)",
                 "BoxesToUnit", "Normalize", "ToCHW"):
        assert step in text


@pytest.mark.parametrize("image_shape, boxes_shape, labels_shape, named", [
    ((50, 70), (1, 4), (1,), "image has shape (50, 70)"),          # grey, no channel axis
    ((3, 50, 70), (1, 4), (1,), "image has shape (3, 50, 70)"),    # already CHW
    ((0, 70, 3), (1, 4), (1,), "image has shape (0, 70, 3)"),
    ((50, 70, 3), (4,), (1,), "boxes have shape (4,)"),
    ((50, 70, 3), (1, 5), (1,), "boxes have shape (1, 5)"),
    ((50, 70, 3), (2, 4), (1,), "labels have shape (1,); expected (2,)"),
], ids=["grey", "chw", "no rows", "flat boxes", "5 numbers a box", "a label short"])
@pytest.mark.parametrize("fast_on", [True, False], ids=["fast", "textbook"])
def test_train_transform_names_the_wrong_shape(image_shape, boxes_shape, labels_shape, named,
                                               fast_on):
    transform = A.train_transform(32)
    boxes = np.tile(np.float32([5, 5, 20, 20]), 2)[:int(np.prod(boxes_shape))].reshape(boxes_shape)
    with fast_paths(fast_on), pytest.raises(ValueError, match=re.escape(named)):
        transform(np.zeros(image_shape, np.uint8), boxes, np.ones(labels_shape, np.int64),
                  np.random.default_rng(0))


def test_trace_keeps_every_step_and_each_replays_alone():
    rng = np.random.default_rng(3)
    image, boxes, labels, _ = painted_image(rng)
    steps_in = [A.PhotometricDistort(p=1.0), A.Expand(p=1.0), A.RandomFlip(p=1.0), A.Resize(64)]
    steps = A.trace(steps_in, image, boxes, labels, seed=7)
    assert steps[0][0] is None and steps[0][1] is image and len(steps) == len(steps_in) + 1
    assert [s[0] for s in steps[1:]] == steps_in
    for k, (t, out, out_boxes, out_labels) in enumerate(steps[1:]):
        _, before, before_boxes, before_labels = steps[k]
        again = t(before, before_boxes, before_labels, np.random.default_rng([7, k]))
        np.testing.assert_array_equal(again[0], out)
        np.testing.assert_array_equal(again[1], out_boxes)
    assert steps[-1][1].shape == (64, 64, 3)
    assert steps[2][1].shape[0] > image.shape[0]                       # the forced zoom out acted
    composed = A.trace(A.Compose(steps_in), image, boxes, labels, seed=7)
    np.testing.assert_array_equal(composed[-1][1], steps[-1][1])       # a Compose is traced alike


class Photos:
    """A data set of four photos of different sizes; photo k is filled with 10 (k + 1) and
    has one box (its middle half)."""

    sizes = [(30, 40), (24, 18), (40, 40), (16, 50)]                 # (H, W)

    def __len__(self):
        return len(self.sizes)

    def load(self, i):
        h, w = self.sizes[i]
        box = np.array([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]], np.float32)
        return np.full((h, w, 3), 10 * (i + 1), np.uint8), box, np.array([i + 1])


def test_mosaic_puts_each_photo_s_corner_at_the_centre_and_cuts_it_at_the_edges():
    photos = Photos()
    mosaic = A.Mosaic(transform=None, side=30, fill=(1, 2, 3), min_visible=0.3)
    xc, yc = 25, 35                                            # canvas 60 x 60
    quadrants = [3, 0, 1, 2]              # photo 0 bottom right, 1 top left, 2 top right, 3 bottom left
    canvas, boxes, labels = mosaic.combine([photos.load(i) for i in range(4)], quadrants, (xc, yc))
    assert canvas.shape == (60, 60, 3) and canvas.dtype == np.uint8
    expected = np.empty((60, 60, 3), np.uint8)
    expected[...] = (1, 2, 3)
    expected[yc:yc + 30, xc:xc + 40] = 10             # photo 0 (30 x 40) from the centre, cut at y 60
    expected[yc - 24:yc, xc - 18:xc] = 20             # photo 1 (24 x 18) ends at the centre
    expected[max(yc - 40, 0):yc, xc:xc + 40] = 30     # photo 2 (40 x 40): its top 5 rows cut off
    expected[yc:yc + 16, max(xc - 50, 0):xc] = 40     # photo 3 (16 x 50): its left 25 columns cut off
    np.testing.assert_array_equal(canvas, expected)
    # photo 0's box (10..30, 7.5..22.5) moves by the corner and is cut at the canvas's bottom
    # (60 - 42.5 = 17.5 of 15 rows visible: all); photo 2's box (10..30 x 10..30) moved to
    # (35..55, -5+10..-5+30) is whole; photo 3's box (12.5..37.5 wide) is cut at x 0: 12.5 of
    # 25 columns = 1/2 >= 0.3, kept; photo 1's box is whole.
    want = {1: [xc + 10, yc + 7.5, xc + 30, yc + 22.5],
            2: [xc - 18 + 4.5, yc - 24 + 6, xc - 18 + 13.5, yc - 24 + 18],
            3: [xc + 10, yc - 40 + 10, xc + 30, yc - 40 + 30],
            4: [0, yc + 4, xc - 50 + 37.5, yc + 12]}
    assert sorted(labels.tolist()) == [1, 2, 3, 4]
    for box, label in zip(boxes, labels):
        np.testing.assert_allclose(box, want[int(label)], err_msg=f"photo {label - 1}")
    assert boxes.dtype == np.float32


def test_mosaic_drops_the_boxes_mostly_off_the_canvas_and_the_thin_ones():
    photo = (np.zeros((40, 40, 3), np.uint8), np.array([[0, 0, 20, 20], [20, 20, 40, 40]],
                                                       np.float32), np.array([1, 2]))
    mosaic = A.Mosaic(transform=None, side=20, min_visible=0.3)        # canvas 40 x 40
    # the same photo in all four quadrants around (25, 25). Top left (from -15, -15): box 1
    # keeps a 5 x 5 corner (1/16: dropped), box 2 is whole. Top right (from 25, -15): box 1
    # keeps 15 x 5 (dropped), box 2 is off. Bottom left: the mirror image. Bottom right
    # (from 25, 25): box 1 keeps 15 x 15 (9/16: kept), box 2 is off.
    _, boxes, labels = mosaic.combine([photo] * 4, [0, 1, 2, 3], (25, 25))
    assert labels.tolist() == [2, 1]
    np.testing.assert_array_equal(boxes, [[5, 5, 25, 25], [25, 25, 40, 40]])
    # a box under 2 px a side is dropped however much of it is on the canvas
    for x0, kept in ((8.5, 0), (7.0, 4)):
        thin = (np.zeros((10, 10, 3), np.uint8), np.array([[x0, 0, 10, 10]], np.float32),
                np.array([1]))
        _, boxes, _ = mosaic.combine([thin] * 4, [0, 1, 2, 3], (20, 20))
        assert len(boxes) == kept, x0


def test_mosaic_draw_and_call():
    photos, seen = Photos(), set()
    never = A.Mosaic(transform=None, p=0.0)
    assert all(never.draw(4, np.random.default_rng(s)) is None for s in range(20))
    always = A.Mosaic(transform=A.train_transform(16, zoom_out=1.0), p=1.0, side=30)
    for s in range(50):
        others, quadrants, (xc, yc) = always.draw(4, np.random.default_rng(s))
        assert sorted(quadrants.tolist()) == [0, 1, 2, 3] and set(others.tolist()) <= {0, 1, 2, 3}
        assert 15 <= xc < 45 and 15 <= yc < 45
        seen.update(quadrants[:1].tolist())
    assert seen == {0, 1, 2, 3}                          # the photo goes to every quadrant
    # called: the same rngs give the same sample, the mosaic's pipeline's output
    image, boxes, labels = always(photos, 2, np.random.default_rng(1), np.random.default_rng(2))
    again = always(photos, 2, np.random.default_rng(1), np.random.default_rng(2))
    assert image.shape == (3, 16, 16) and np.all((boxes >= 0) & (boxes <= 1))
    np.testing.assert_array_equal(image, again[0])
    others, quadrants, centre = always.draw(4, np.random.default_rng(1))
    canvas = always.combine([photos.load(int(i)) for i in (2, *others)], quadrants, centre)
    np.testing.assert_array_equal(image, always.transform(*canvas, np.random.default_rng(2))[0])
    # a photo the caller has decoded already stands in for dataset.load(index)
    given = always(photos, 2, np.random.default_rng(1), np.random.default_rng(3), photo=photos.load(3))
    canvas = always.combine([photos.load(int(i)) for i in (3, *others)], quadrants, centre)
    np.testing.assert_array_equal(given[0], always.transform(*canvas, np.random.default_rng(3))[0])
    loaded = always(photos, 2, np.random.default_rng(1), np.random.default_rng(3))
    assert not np.array_equal(given[0], loaded[0])       # photo 3 shows where photo 2 would
    # no box left on the canvas: None, and the loader takes the photo alone
    boxless = Photos()
    boxless.load = lambda i: (np.zeros((8, 8, 3), np.uint8), np.zeros((0, 4), np.float32),
                              np.zeros(0, np.int64))
    assert always(boxless, 0, np.random.default_rng(1), np.random.default_rng(2)) is None
    assert A.get_mosaic(0.0, 32) is None
    m = A.get_mosaic(0.5, 32)
    assert m.p == 0.5 and A.Expand not in [type(t) for t in m.transform.transforms]
    assert "Mosaic(p=0.5" in repr(m)


def test_mixup_draw_blend_and_get_mixup():
    never = A.MixUp(p=0.0)
    assert all(never.draw(4, np.random.default_rng(s)) is None for s in range(20))
    always = A.MixUp(p=1.0)
    draws = [always.draw(5, np.random.default_rng(s)) for s in range(400)]
    assert {other for other, _ in draws} == set(range(5))
    shares = np.array([r for _, r in draws])
    # Beta(32, 32): mean 1/2, standard deviation 1 / (2 sqrt(65)) = 0.062
    assert np.all((shares > 0.2) & (shares < 0.8))
    assert abs(shares.mean() - 0.5) < 4 * 0.062 / np.sqrt(len(shares))
    assert abs(shares.std() - 0.062) < 0.01
    half = A.MixUp(p=0.5)
    drawn = [half.draw(5, np.random.default_rng(s)) is not None for s in range(400)]
    assert 160 < sum(drawn) < 240                          # binomial(400, 1/2): 200 +- 10
    # the blend: pixels r : 1 - r, the boxes and labels of both, first then second
    rng = np.random.default_rng(0)
    first = (rng.normal(size=(3, 4, 4)).astype(np.float32),
             np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), np.array([2]))
    second = (rng.normal(size=(3, 4, 4)).astype(np.float32),
              np.array([[0.0, 0.2, 0.3, 0.9], [0.5, 0.5, 1.0, 1.0]], np.float32), np.array([1, 3]))
    image, boxes, labels = A.MixUp.blend(first, second, 0.3)
    assert image.dtype == np.float32 and boxes.dtype == np.float32
    np.testing.assert_allclose(image, 0.3 * first[0] + 0.7 * second[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(boxes, np.concatenate([first[1], second[1]]))
    np.testing.assert_array_equal(labels, [2, 1, 3])
    empty = (second[0], np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert len(A.MixUp.blend(first, empty, 0.5)[1]) == 1   # a sample without boxes adds none
    # blending normalised planes is normalising the blended pixels (Normalize is affine): float64
    x1, x2 = rng.uniform(0, 255, size=(2, 4, 4))
    norm = A.Normalize(A.IMAGENET_MEAN, A.IMAGENET_STD)
    for c in range(3):
        n1, n2, n12 = (norm.normalize_plane(x, c) for x in (x1, x2, 0.3 * x1 + 0.7 * x2))
        np.testing.assert_allclose(0.3 * n1 + 0.7 * n2, n12, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"mixup: the two samples' images differ in shape "
                                         r"\(\(3, 4, 4\) and \(3, 2, 2\)\)"):
        A.MixUp.blend(first, (np.zeros((3, 2, 2), np.float32),) + second[1:], 0.5)
    assert A.get_mixup(0.0) is None
    assert A.get_mixup(0.3).p == 0.3 and repr(A.get_mixup(0.3)) == "MixUp(p=0.3, a=32.0)"
