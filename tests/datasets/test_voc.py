"""VOC reader: real voc5 annotations, the box convention, several roots, and every error case."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minissd.datasets.voc import (MAX_IMAGE_PIXELS, VOC_CLASSES, VOCDataset, check_class_names,
                                  load_image, parse_voc_xml, read_class_names, read_split)
from minissd.errors import UserError

VOC5 = Path(__file__).resolve().parents[1] / "data" / "voc5"
VOC5_CLASSES = ("bus", "car", "cat", "person", "train")
BOX = "<bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox>"


def obj(name="cat", box=(11, 21, 41, 31), difficult=0, truncated=0):
    """One <object> element in VOC XML (1-based box)."""
    return (f"<object><name>{name}</name><truncated>{truncated}</truncated>"
            f"<difficult>{difficult}</difficult>{BOX.format(*box)}</object>")


def make_voc(root, objects=(obj(),), size=(64, 48), image_id="im1", filename=None,
             image_name=None, xml=None, classes=None):
    """A one-image VOC folder: image_name is the file written (default <id>.jpg)."""
    root = Path(root)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    image_name = image_name or image_id + ".jpg"
    Image.new("RGB", size, (90, 120, 150)).save(root / "JPEGImages" / image_name)
    filename = image_name if filename is None else filename
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
    if xml is None:
        xml = f"<annotation><filename>{filename}</filename>{size_xml}{''.join(objects)}</annotation>"
    (root / "Annotations" / f"{image_id}.xml").write_text(xml)
    (root / "ImageSets/Main/trainval.txt").write_text(image_id + "\n")
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


# ---------------------------------------------------------------- real VOC XML (voc5-mini)

def test_reads_voc5_with_classes_txt():
    ds = VOCDataset([(VOC5, "trainval")])
    assert ds.class_names == VOC5_CLASSES and ds.num_classes == 5
    assert len(ds) == 8 and ds.ids == read_split(VOC5, "trainval")
    i = ds.ids.index("000058")                       # bus, person, car, car at 300x158
    boxes, labels, difficult = ds.annotation(i)
    assert boxes.dtype == np.float32 and labels.dtype == np.int64 and difficult.dtype == bool
    np.testing.assert_array_equal(boxes[0], [52, 52, 299, 119])   # XML 53 53 300 120, minus 1
    np.testing.assert_array_equal(labels, [1, 4, 2, 2])
    assert not difficult.any()
    image, train_boxes, train_labels = ds.load(i)
    assert image.dtype == np.uint8 and image.shape == (158, 300, 3)
    np.testing.assert_array_equal(train_boxes, boxes)
    np.testing.assert_array_equal(train_labels, labels)


def test_every_voc5_box_is_inside_its_image():
    ds = VOCDataset([(VOC5, "trainval")])
    for r in ds.records:
        assert len(r.labels) >= 1 and set(r.labels) <= {1, 2, 3, 4, 5}
        assert (r.boxes_xyxy[:, :2] >= 0).all() and (r.boxes_xyxy[:, :2] < r.boxes_xyxy[:, 2:]).all()
        assert (r.boxes_xyxy[:, 2] <= r.width).all() and (r.boxes_xyxy[:, 3] <= r.height).all()


def test_default_classes_are_voc_and_several_roots_concatenate(tmp_path):
    other = make_voc(tmp_path / "other", [obj("bus"), obj("person")])
    assert VOCDataset([(other, "trainval")]).class_names == VOC_CLASSES   # no classes.txt
    ds = VOCDataset([(VOC5, "trainval"), (other, "trainval")], class_names=VOC_CLASSES)
    assert len(ds) == 9 and ds.ids[-1] == "im1"
    np.testing.assert_array_equal(ds.annotation(8)[1], [VOC_CLASSES.index("bus") + 1,
                                                        VOC_CLASSES.index("person") + 1])
    assert len(VOCDataset((other, "trainval"))) == 1            # a single (root, split) pair
    with pytest.raises(ValueError, match=r"give \[\(root, split\), \.\.\.\]"):
        VOCDataset(str(other))                                   # a root alone: which split?


def test_difficult_dropped_for_training_kept_flagged_for_evaluation(tmp_path):
    root = make_voc(tmp_path, [obj("cat"), obj("dog", difficult=1, truncated=1)])
    for keep, n_train in ((False, 1), (True, 2)):
        ds = VOCDataset([(root, "trainval")], class_names=("cat", "dog"), keep_difficult=keep)
        boxes, labels, difficult = ds.annotation(0)
        np.testing.assert_array_equal(labels, [1, 2])
        np.testing.assert_array_equal(difficult, [False, True])
        np.testing.assert_array_equal(ds.records[0].truncated, [False, True])
        assert len(ds.load(0)[1]) == n_train and len(ds.load(0)[2]) == n_train


def test_one_based_coordinates_become_zero_based_with_one_pixel_slack(tmp_path):
    root = make_voc(tmp_path, [obj(box=(1, 1, 64, 48)), obj(box=(0, 5, 65, 49)), obj(box=(3.5, 4, 9, 8))])
    boxes = VOCDataset([(root, "trainval")], class_names=("cat",)).annotation(0)[0]
    np.testing.assert_array_equal(boxes, [[0, 0, 63, 47], [0, 4, 64, 48], [2.5, 3, 8, 7]])


def test_image_file_from_xml_filename_or_id(tmp_path):
    named = make_voc(tmp_path / "a", image_name="picture.png")                  # XML names it
    assert VOCDataset([(named, "trainval")], ("cat",)).records[0].image_path.endswith("picture.png")
    fallback = make_voc(tmp_path / "b", filename="wrong_name.jpg")              # XML is wrong
    assert VOCDataset([(fallback, "trainval")], ("cat",)).records[0].image_path.endswith("im1.jpg")
    png = make_voc(tmp_path / "c", filename="", image_name="im1.png")           # no filename
    image, _, _ = VOCDataset([(png, "trainval")], ("cat",)).load(0)
    assert image.shape == (48, 64, 3)


def test_size_read_from_the_image_when_the_xml_has_none(tmp_path):
    xml = f"<annotation><filename>im1.jpg</filename>{obj()}</annotation>"
    record = VOCDataset([(make_voc(tmp_path, xml=xml), "trainval")], ("cat",)).records[0]
    assert (record.width, record.height) == (64, 48)


def test_read_class_names(tmp_path):
    (tmp_path / "classes.txt").write_text("circle\n\nsquare\n")
    assert read_class_names(tmp_path) == ("circle", "square")
    (tmp_path / "classes.txt").write_text("circle\ncircle\n")
    with pytest.raises(ValueError, match="twice"):
        read_class_names(tmp_path)
    with pytest.raises(FileNotFoundError, match="classes.txt"):
        read_class_names(tmp_path / "nowhere")


@pytest.mark.parametrize("names, error", [
    (("circle", "square"), None),
    (("circle", "square", "circle", "triangle"), "--classes: a class name is listed twice: circle "),
    (("b", "a", "b", "a"), "--classes: a class name is listed twice: a, b "),
    ((), "--classes: lists no class names"),
])
def test_check_class_names(names, error):
    if error is None:
        assert check_class_names(list(names), "--classes") == names
    else:
        with pytest.raises(UserError, match=f"^{error}"):
            check_class_names(names, "--classes")


def test_dataset_refuses_a_class_list_with_a_name_twice(tmp_path):
    root = make_voc(tmp_path)
    with pytest.raises(UserError, match="class_names: a class name is listed twice: cat"):
        VOCDataset([(root, "trainval")], class_names=("cat", "dog", "cat"))


# ---------------------------------------------------------------- errors name the file

def _xml_case(text):
    return dict(xml=f"<annotation><filename>im1.jpg</filename>"
                    f"<size><width>64</width><height>48</height></size>{text}</annotation>")


# (case, make_voc arguments, exception, words in the message, file named in the message)
ERRORS = [
    ("missing image", dict(image_name="other.jpg", filename="im1.jpg"), FileNotFoundError, "image not found", "im1.jpg"),
    ("malformed xml", dict(xml="<annotation><object></annotation>"), ValueError, "malformed XML", "im1.xml"),
    ("unknown class", dict(objects=[obj("unicorn")]), ValueError, "unknown class 'unicorn'", "im1.xml"),
    ("xmin >= xmax", dict(objects=[obj(box=(30, 5, 30, 9))]), ValueError, "xmin >= xmax", "im1.xml"),
    ("ymin >= ymax", dict(objects=[obj(box=(3, 9, 30, 5))]), ValueError, "ymin >= ymax", "im1.xml"),
    ("right of image", dict(objects=[obj(box=(3, 5, 66, 9))]), ValueError, "outside the 64x48", "im1.xml"),
    ("below image", dict(objects=[obj(box=(3, 5, 9, 50))]), ValueError, "outside the 64x48", "im1.xml"),
    ("left of image", dict(objects=[obj(box=(-1, 5, 9, 9))]), ValueError, "outside the 64x48", "im1.xml"),
    ("not a number", dict(objects=[obj(box=("x", 5, 9, 9))]), ValueError, "<xmin> is 'x'", "im1.xml"),
    ("no bndbox", _xml_case("<object><name>cat</name></object>"), ValueError, "no <bndbox>", "im1.xml"),
    ("no name", _xml_case(f"<object>{BOX.format(1, 1, 5, 5)}</object>"), ValueError, "missing <name>", "im1.xml"),
    ("no ymax", _xml_case("<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
                          "<xmax>5</xmax></bndbox></object>"), ValueError, "missing <ymax>", "im1.xml"),
]


@pytest.mark.parametrize("case, kwargs, error, words, file", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_annotations_raise_naming_the_file(tmp_path, case, kwargs, error, words, file):
    root = make_voc(tmp_path, **kwargs)
    with pytest.raises(error) as info:
        VOCDataset([(root, "trainval")], class_names=("cat",))
    assert words in str(info.value) and os.path.join(str(tmp_path), "") in str(info.value)
    assert file in str(info.value)


def test_missing_split_and_missing_annotation_name_the_file(tmp_path):
    root = make_voc(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"ImageSets.Main.test\.txt"):
        VOCDataset([(root, "test")], ("cat",))
    (root / "ImageSets/Main/trainval.txt").write_text("im1\nim2\n")
    with pytest.raises(FileNotFoundError, match=r"im2\.xml: annotation file not found"):
        VOCDataset([(root, "trainval")], ("cat",))


def test_load_errors_name_the_image(tmp_path):
    root = make_voc(tmp_path)
    ds = VOCDataset([(root, "trainval")], ("cat",))
    Image.new("RGB", (32, 32)).save(root / "JPEGImages" / "im1.jpg")      # not the XML's 64x48
    with pytest.raises(ValueError, match=r"im1\.jpg: image is 32x32 but .*im1\.xml says 64x48"):
        ds.load(0)
    (root / "JPEGImages" / "im1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"im1\.jpg: cannot decode image"):
        ds.load(0)
    os.remove(root / "JPEGImages" / "im1.jpg")
    with pytest.raises(FileNotFoundError, match=r"im1\.jpg: image not found"):
        ds.load(0)


def test_parse_voc_xml_alone():
    record = parse_voc_xml(VOC5 / "Annotations" / "000004.xml", VOC5_CLASSES)
    assert record.image_id == "000004" and record.image_path.endswith("000004.jpg")
    np.testing.assert_array_equal(record.labels, [3])                           # a cat


def test_copy_of_voc5_without_classes_txt_uses_voc_labels(tmp_path):
    root = tmp_path / "voc5"
    shutil.copytree(VOC5, root)
    os.remove(root / "classes.txt")
    ds = VOCDataset([(root, "trainval")])
    assert ds.class_names == VOC_CLASSES
    assert set(np.concatenate([ds.annotation(i)[1] for i in range(len(ds))])) <= {
        VOC_CLASSES.index(c) + 1 for c in VOC5_CLASSES}


def png_header(path, width, height):
    """A PNG that says it is width x height, with hardly any pixel data behind the header."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("width, height, words", [
    (8193, 8193, "image is 8193x8193, more than the 67108864 pixels"),      # our limit
    (20000, 20000, "more than the 67108864 pixels minissd decodes"),         # PIL's, past ours
])
def test_load_image_refuses_too_many_pixels_before_decoding(tmp_path, width, height, words):
    assert width * height > MAX_IMAGE_PIXELS
    with pytest.raises(UserError, match=words):
        load_image(png_header(tmp_path / "big.png", width, height))


def test_decompression_bomb_warning_is_an_error(tmp_path, monkeypatch):
    Image.new("RGB", (12, 12)).save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)      # 144 pixels: PIL warns, not raises
    with pytest.raises(UserError, match="a.png: image has more than"):
        load_image(tmp_path / "a.png")


def test_truncated_jpeg_is_named(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        tmp_path / "a.jpg")
    raw = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(UserError, match="a.jpg: cannot decode image"):
        load_image(tmp_path / "a.jpg")
