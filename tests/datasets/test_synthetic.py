"""Synthetic shapes data set: VOC layout the reader accepts, tight boxes, byte-identical per seed."""
import filecmp
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from minissd.datasets import synthetic as shapes
from minissd.datasets.voc import VOCDataset
from minissd.errors import UserError


def all_files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return shapes.write_shapes_dataset(tmp_path_factory.mktemp("shapes") / "a", num_train=12,
                                       num_test=4, image_size=96, seed=3)


def test_same_seed_same_bytes_other_seed_other_images(shapes_root, tmp_path):
    again = shapes.write_shapes_dataset(tmp_path / "b", num_train=12, num_test=4, image_size=96, seed=3)
    files = all_files(shapes_root)
    assert files == all_files(again) and len(files) == 16 * 2 + 3
    match, mismatch, errors = filecmp.cmpfiles(shapes_root, again, files, shallow=False)
    assert mismatch == [] and errors == []
    other = shapes.write_shapes_dataset(tmp_path / "c", num_train=12, num_test=4, image_size=96, seed=4)
    assert not filecmp.cmp(os.path.join(shapes_root, "JPEGImages", "000000.jpg"),
                           os.path.join(other, "JPEGImages", "000000.jpg"), shallow=False)


def test_reader_accepts_it_with_classes_from_classes_txt(shapes_root):
    train, test = VOCDataset([(shapes_root, "trainval")]), VOCDataset([(shapes_root, "test")])
    assert train.class_names == shapes.SHAPE_CLASSES
    assert len(train) == 12 and len(test) == 4 and not set(train.ids) & set(test.ids)
    for i in range(len(train)):
        image, boxes, labels = train.load(i)
        assert image.shape == (96, 96, 3) and 1 <= len(labels) <= 4
        assert set(labels) <= {1, 2, 3}
        assert (boxes >= 0).all() and (boxes <= 96).all()
        sides = boxes[:, 2:] - boxes[:, :2]
        assert (sides >= 0.1 * 96 / shapes.MAX_ASPECT - 1).all() and (sides <= 0.6 * 96 * 1.2).all()


def test_objects_cover_each_other_at_most_max_cover():
    for seed in range(40):
        _, objects = shapes.make_shapes_image(np.random.default_rng(seed), 128, max_cover=0.3)
        boxes = [box for _, box in objects]
        for a in boxes:
            for b in boxes:
                assert a is b or shapes._cover(a, b) <= 0.3


@pytest.mark.parametrize("shape", shapes.SUPPORTED_SHAPES)
def test_each_shape_fills_its_box_exactly(shape):
    """Drawn on a blank canvas, the painted pixels span exactly the (inclusive) box."""
    for seed, box in enumerate([(5, 7, 40, 30), (10, 3, 25, 44), (0, 0, 63, 63)]):
        canvas = Image.new("RGB", (64, 64))
        shapes._draw(ImageDraw.Draw(canvas), shape, box, (255, 255, 255), np.random.default_rng(seed))
        ys, xs = np.nonzero(np.asarray(canvas)[..., 0])
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == box


def test_objects_stand_out_from_the_background():
    for seed in range(20):
        image, objects = shapes.make_shapes_image(np.random.default_rng(seed), 96)
        assert image.dtype == np.uint8 and image.shape == (96, 96, 3)
        assert image.std() > 10                                  # textured, not flat


def test_other_class_lists_and_unknown_shapes(tmp_path):
    root = shapes.write_shapes_dataset(tmp_path, num_train=6, num_test=0, image_size=64,
                                       classes=("cross", "circle"))
    ds = VOCDataset([(root, "trainval")])
    assert ds.class_names == ("cross", "circle")
    assert open(os.path.join(root, "ImageSets", "Main", "test.txt")).read() == ""
    with pytest.raises(ValueError, match="unknown shape classes \\['hexagon'\\]"):
        shapes.write_shapes_dataset(tmp_path, num_train=1, classes=("circle", "hexagon"))


@pytest.mark.parametrize("kwargs, words", [
    (dict(image_size=8), "image_size 8 is too small"),
    (dict(image_size=64.0), "image_size must be a whole number of pixels, got 64.0"),
    (dict(num_train=-5), "num_train must be a whole number >= 0, got -5"),
    (dict(num_test=-1), "num_test must be a whole number >= 0, got -1"),
])
def test_bad_arguments_are_refused_before_writing(tmp_path, kwargs, words):
    with pytest.raises(UserError, match=words):
        shapes.write_shapes_dataset(tmp_path / "s", **dict(dict(num_train=2, num_test=0), **kwargs))
    assert not (tmp_path / "s").exists()


def test_min_image_size_keeps_the_smallest_object_a_pixel_wide(tmp_path):
    size, low = shapes.min_image_size(), 0.1                 # the default size_range[0]
    narrowest = low / np.sqrt(shapes.MAX_ASPECT)             # side fraction at the widest aspect
    assert narrowest * (size - 1) < 1 <= narrowest * size
    root = shapes.write_shapes_dataset(tmp_path, num_train=20, num_test=0, image_size=size)
    assert len(VOCDataset([(root, "trainval")])) == 20


def test_xml_is_one_based():
    xml = shapes.voc_xml("a.jpg", 50, 40, [("circle", (0, 2, 49, 39))]).decode()
    for tag, value in (("xmin", 1), ("ymin", 3), ("xmax", 50), ("ymax", 40), ("filename", "a.jpg")):
        assert f"<{tag}>{value}</{tag}>" in xml
