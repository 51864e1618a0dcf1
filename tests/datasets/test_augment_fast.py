"""The fused training augmentation equals the textbook pipeline bit for bit, and is entered by one switch."""
from pathlib import Path

import numpy as np
import pytest

from minissd.datasets import augment as A
from minissd.datasets import augment_fast
from minissd.datasets.voc import VOCDataset
from minissd.nn.fast import fast_paths

VOC5 = Path(__file__).resolve().parents[1] / "data" / "voc5"


def textbook_and_fast(transform, image, boxes, labels, seed):
    """(textbook output, fused output) for one draw."""
    with fast_paths(False):
        slow = transform(image, boxes, labels, np.random.default_rng(seed))
    with fast_paths(True):
        quick = transform(image, boxes, labels, np.random.default_rng(seed))
    return slow, quick


def assert_same(slow, quick):
    for a, b in zip(slow, quick):                       # image, boxes, labels
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def random_photo(rng):
    """A noisy uint8 photo of random size with 0-4 random boxes in it."""
    height, width = (int(v) for v in rng.integers(20, 90, 2))
    image = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
    n = int(rng.integers(0, 5))
    x = np.sort(rng.uniform(0, width, (n, 2)), axis=1)
    y = np.sort(rng.uniform(0, height, (n, 2)), axis=1)
    boxes = np.stack([x[:, 0], y[:, 0], x[:, 1] + 1, y[:, 1] + 1], axis=1).clip(0, [width, height] * 2)
    return image, boxes.astype(np.float32), rng.integers(1, 4, n)


def cases(transform, image, boxes, seed):
    """Which geometry the draw of ``seed`` picks: (zoomed out, cropped), replaying the steps' draws."""
    steps = transform.transforms
    rng = np.random.default_rng(seed)
    steps[1].draw(rng)                                               # the colours come first
    expand = steps[2] if isinstance(steps[2], A.Expand) else None
    place = expand.draw(*image.shape[:2], rng) if expand else None
    canvas = place[:2] if place else image.shape[:2]
    moved = boxes + np.array([place[3], place[2]] * 2, np.float32) if place else boxes
    patch = (steps[3] if expand else steps[2]).choose(*canvas, moved, np.ones(len(boxes)), rng)[0]
    return place is not None, patch is not None


@pytest.mark.parametrize("zoom_out", [4.0, 2.0, 1.0])
def test_fused_equals_textbook_on_random_photos(zoom_out):
    rng = np.random.default_rng(0)
    transform = A.train_transform(24, zoom_out=zoom_out)
    seen = set()
    for seed in range(120):
        image, boxes, labels = random_photo(rng)
        assert_same(*textbook_and_fast(transform, image, boxes, labels, seed))
        seen.add(cases(transform, image, boxes, seed))
    # every geometry was met: with and without zoom-out (unless it is off), cropped or whole
    assert seen == ({(True, True), (True, False), (False, True), (False, False)} if zoom_out > 1
                    else {(False, True), (False, False)})


def test_fused_equals_textbook_on_voc_photos():
    data = VOCDataset([(VOC5, "trainval")])
    transform = A.train_transform(64)
    for i in range(len(data)):
        image, boxes, labels = data.load(i)
        for seed in range(6):
            assert_same(*textbook_and_fast(transform, image, boxes, labels, [seed, i]))


def test_fused_path_is_taken_only_when_on_and_for_train_transform_s_steps(monkeypatch):
    calls = []
    real = augment_fast.train_sample
    monkeypatch.setattr(augment_fast, "train_sample", lambda *a: calls.append(1) or real(*a))
    image, boxes, labels = random_photo(np.random.default_rng(1))
    transform = A.train_transform(16)
    textbook_and_fast(transform, image, boxes, labels, 0)
    assert calls == [1]                                          # the fast run only
    transform.transforms.insert(2, A.RandomFlip())               # no longer the known sequence
    assert not transform.fusable()
    with fast_paths(True):
        out = transform(image, boxes, labels, np.random.default_rng(0))
    assert calls == [1] and out[0].shape == (3, 16, 16)          # ran step by step
    assert A.train_transform(16, zoom_out=1.0).fusable()


def test_photometric_draw_then_apply_is_the_call_and_works_pixel_by_pixel():
    rng = np.random.default_rng(2)
    image = rng.uniform(0, 255, (10, 12, 3)).astype(np.float32)
    distort = A.PhotometricDistort(p=1.0)                        # every distortion drawn
    whole = distort(image, None, None, np.random.default_rng(7))[0]
    choice = distort.draw(np.random.default_rng(7))
    assert all(choice[k] is not None for k in ("brightness", "contrast", "saturation", "hue", "channels"))
    np.testing.assert_array_equal(distort.apply(image, choice), whole)
    np.testing.assert_array_equal(distort.apply(image[3:7, 2:9], choice), whole[3:7, 2:9])


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_photometric_apply_in_place_gives_the_same_numbers_and_copy_leaves_the_input(p):
    rng = np.random.default_rng(4)
    distort = A.PhotometricDistort(p=p)
    for seed in range(8):
        image = rng.uniform(-20, 280, (9, 11, 3)).astype(np.float32)   # clipping is exercised
        before = image.copy()
        choice = distort.draw(np.random.default_rng(seed))
        copied = distort.apply(image, choice)
        np.testing.assert_array_equal(image, before)                  # copy=True: input untouched
        np.testing.assert_array_equal(distort.apply(image, choice, copy=False), copied)
