"""Pascal VOC reader: annotations, images and image-set splits, for VOC and custom data.

A data set "in VOC layout" is a folder::

    root/
      Annotations/<id>.xml          one XML file per image (objects, boxes, flags)
      JPEGImages/<id>.jpg           the images (the XML <filename> names the file)
      ImageSets/Main/<split>.txt    one image id per line (trainval.txt, test.txt, ...)
      classes.txt                   optional: one class name per line (not in VOC itself)

Box convention. VOC writes pixel coordinates that are 1-based and inclusive: a box
touching the left edge has xmin = 1 and one touching the right edge has xmax = width.
Like ssd.pytorch and ChainerCV we subtract 1 from all four numbers, so boxes here are
0-based pixel ``xyxy``: ``[xmin - 1, ymin - 1, xmax - 1, ymax - 1]``, lying inside
``[0, width] x [0, height]``. Hand-made annotations are often one pixel off (xmin = 0,
or xmax = width + 1); we allow that one pixel of slack and clip it away.

    ds = VOCDataset([("VOC2007", "trainval"), ("VOC2012", "trainval")])
    image, boxes_xyxy, labels = ds.load(0)                 # for training
    boxes_xyxy, labels, difficult = ds.annotation(0)       # for evaluation: no image decode

Annotations are parsed up front (about 16k small XML files for VOC07+12 take a few
seconds), so a missing image, a broken XML file or a bad box is reported, with its
file name, when the data set is built rather than hours into training.

Data loading is CPU work (PIL decodes into NumPy arrays), so this module uses NumPy
directly; arrays move to the GPU later, one batch at a time.
"""
from __future__ import annotations

import os
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np
from PIL import Image

from minissd.errors import UserError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

# VOC coordinates are 1-based; we subtract this to make them 0-based.
VOC_COORD_OFFSET = 1.0
# How far (pixels) a box may stick out of the image before it counts as an error.
BOX_SLACK = 1.0
# Extensions tried, in order, when the XML <filename> does not name an existing image.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# The largest image decoded, in pixels (8192 x 8192: 201 MB as RGB uint8). PIL reads the
# size from the header, so a larger image (a decompression bomb) is refused before decoding.
MAX_IMAGE_PIXELS = 8192 * 8192


def check_class_names(names, source: str) -> tuple[str, ...]:
    """``names`` as a tuple; a UserError naming ``source`` if it is empty or repeats a name."""
    names = tuple(names)
    if not names:
        raise UserError(f"{source}: lists no class names")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"{source}: a class name is listed twice: {', '.join(twice)} "
                        f"(in {', '.join(names)})")
    return names


def read_class_names(root) -> tuple[str, ...]:
    """The class names listed in ``root/classes.txt``, one per line (blank lines skipped)."""
    path = os.path.join(root, "classes.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no classes.txt (one class name per line)")
    with open(path, encoding="utf-8") as f:
        return check_class_names((line.strip() for line in f if line.strip()), path)


def read_split(root, split: str) -> list[str]:
    """The image ids listed in ``root/ImageSets/Main/<split>.txt`` (first word of each line)."""
    path = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such split file (is {root!r} in VOC layout?)")
    with open(path, encoding="utf-8") as f:
        return [line.split()[0] for line in f if line.strip()]


@dataclass
class VOCRecord:
    """Everything one annotation file says about one image (boxes 0-based pixel xyxy)."""
    image_id: str
    image_path: str
    xml_path: str
    width: int
    height: int
    boxes_xyxy: np.ndarray    # (n, 4) float32
    labels: np.ndarray        # (n,) int64 in 1..C (0 is the background)
    difficult: np.ndarray     # (n,) bool
    truncated: np.ndarray     # (n,) bool


def _text(node, field: str, xml_path: str) -> str:
    """The text of a child element, or a ValueError naming the file and the field."""
    child = node.find(field)
    if child is None or child.text is None or not child.text.strip():
        raise UserError(f"{xml_path}: missing <{field}>")
    return child.text.strip()


def _number(node, field: str, xml_path: str) -> float:
    text = _text(node, field, xml_path)
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{xml_path}: <{field}> is {text!r}, not a number") from None


def _flag(node, field: str) -> bool:
    """An optional 0/1 flag such as <difficult>; absent means 0."""
    child = node.find(field)
    return child is not None and child.text is not None and child.text.strip() in ("1", "true")


def _find_image(root, image_id: str, xml_filename: str | None) -> str:
    """The image file: the XML <filename> if it exists, else <id> with a usual extension."""
    folder = os.path.join(root, "JPEGImages")
    candidates = [xml_filename] if xml_filename else []
    candidates += [image_id + ext for ext in IMAGE_EXTENSIONS]
    for name in candidates:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{os.path.join(folder, candidates[0])}: image not found "
                            f"(tried {', '.join(candidates)} in {folder})")


def parse_voc_xml(xml_path, class_names, root=None, image_id=None) -> VOCRecord:
    """Parse one VOC annotation file into a VOCRecord (boxes converted to 0-based xyxy).

    ``root`` (the data set folder) and ``image_id`` default to the ones the path implies.
    Raises FileNotFoundError or UserError (a ValueError) naming the file for any problem.
    """
    xml_path = os.fspath(xml_path)
    root = root if root is not None else os.path.dirname(os.path.dirname(xml_path))
    image_id = image_id if image_id is not None else os.path.splitext(os.path.basename(xml_path))[0]
    if not os.path.isfile(xml_path):
        raise FileNotFoundError(f"{xml_path}: annotation file not found")
    try:
        tree = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise UserError(f"{xml_path}: malformed XML ({e})") from None

    filename = tree.find("filename")
    image_path = _find_image(root, image_id, filename.text.strip()
                             if filename is not None and filename.text else None)
    size = tree.find("size")
    if size is not None and size.find("width") is not None:
        width = int(_number(size, "width", xml_path))
        height = int(_number(size, "height", xml_path))
    else:  # some tools omit <size>: read it from the image header (no full decode)
        with Image.open(image_path) as im:
            width, height = im.size
    if width <= 0 or height <= 0:
        raise UserError(f"{xml_path}: image size {width}x{height} is empty")

    boxes, labels, difficult, truncated = [], [], [], []
    for obj in tree.findall("object"):
        name = _text(obj, "name", xml_path)
        if name not in class_names:
            raise UserError(f"{xml_path}: unknown class {name!r} "
                            f"(expected one of {', '.join(class_names)}; a custom data set lists its "
                            "classes in classes.txt in its root, or via --classes)")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise UserError(f"{xml_path}: object {name!r} has no <bndbox>")
        raw = [_number(bndbox, k, xml_path) for k in ("xmin", "ymin", "xmax", "ymax")]
        where = f"{xml_path}: object {len(boxes)} ({name!r}) box {raw}"
        if raw[0] >= raw[2] or raw[1] >= raw[3]:
            raise UserError(f"{where} has xmin >= xmax or ymin >= ymax")
        # 1-based inclusive: 1 <= xmin and xmax <= width, give or take BOX_SLACK
        if min(raw[0], raw[1]) < 1 - BOX_SLACK or raw[2] > width + BOX_SLACK \
                or raw[3] > height + BOX_SLACK:
            raise UserError(f"{where} lies outside the {width}x{height} image")
        x0, y0, x1, y1 = (v - VOC_COORD_OFFSET for v in raw)   # 0-based pixel xyxy
        boxes.append([max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)])
        labels.append(class_names.index(name) + 1)   # 0 is the background
        difficult.append(_flag(obj, "difficult"))
        truncated.append(_flag(obj, "truncated"))

    return VOCRecord(
        image_id=image_id, image_path=image_path, xml_path=xml_path, width=width, height=height,
        boxes_xyxy=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        difficult=np.asarray(difficult, dtype=bool),
        truncated=np.asarray(truncated, dtype=bool))


def load_image(path) -> np.ndarray:
    """Decode an image file to uint8 RGB, (H, W, 3); errors name the file.

    An image of more than MAX_IMAGE_PIXELS is refused from its header, before decoding;
    PIL's own decompression-bomb warning is an error here too.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:                 # reads the header only
                width, height = im.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise UserError(f"{path}: image is {width}x{height}, more than the "
                                    f"{MAX_IMAGE_PIXELS} pixels minissd decodes "
                                    f"(MAX_IMAGE_PIXELS)")
                return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise UserError(f"{path}: image has more than the {MAX_IMAGE_PIXELS} pixels minissd "
                        f"decodes (MAX_IMAGE_PIXELS; PIL: {e})") from None
    except (OSError, SyntaxError, EOFError) as e:  # PIL's ways of saying "not an image"
        raise UserError(f"{path}: cannot decode image ({e})") from None


class VOCDataset:
    """Images and boxes from one or more (root, split) pairs in VOC layout.

    sources: ``[(root, split), ...]`` (a single ``(root, split)`` pair also works), e.g.
        ``[("VOC2007", "trainval"), ("VOC2012", "trainval")]``.
    class_names: the C object classes; labels are 1..C in this order (0 = background).
        None means ``classes.txt`` of the first root if it has one, else VOC_CLASSES.
    keep_difficult: whether ``load`` returns objects flagged difficult. Leave it False
        to train (like the SSD paper); evaluation reads them from ``annotation``.
    """

    def __init__(self, sources, class_names=None, keep_difficult: bool = False):
        if isinstance(sources, (str, os.PathLike)):
            raise ValueError(f"VOCDataset: sources is {sources!r}; give [(root, split), ...], "
                             f"e.g. [({os.fspath(sources)!r}, 'trainval')]")
        if len(sources) == 2 and all(isinstance(s, (str, os.PathLike)) for s in sources):
            sources = [tuple(sources)]        # a single (root, split) pair
        self.sources = [(os.fspath(root), split) for root, split in sources]
        if not self.sources:
            raise ValueError("VOCDataset: no (root, split) sources given")
        if class_names is None:
            first_root = self.sources[0][0]
            has_list = os.path.isfile(os.path.join(first_root, "classes.txt"))
            class_names = read_class_names(first_root) if has_list else VOC_CLASSES
        self.class_names = check_class_names(class_names, "class_names")
        self.keep_difficult = keep_difficult
        self.records: list[VOCRecord] = []
        for root, split in self.sources:
            for image_id in read_split(root, split):
                xml_path = os.path.join(root, "Annotations", image_id + ".xml")
                self.records.append(parse_voc_xml(xml_path, self.class_names, root, image_id))
        self.ids = [r.image_id for r in self.records]

    @property
    def num_classes(self) -> int:
        """C, the number of object classes (the detector predicts C + 1 with background)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return (f"VOCDataset({len(self)} images from {self.sources}, "
                f"{self.num_classes} classes, keep_difficult={self.keep_difficult})")

    def annotation(self, i: int):
        """All objects of image i, difficult ones included and flagged; no image decode.

        Returns boxes (n, 4) float32 0-based pixel xyxy, labels (n,) int64 in 1..C,
        difficult (n,) bool.
        """
        r = self.records[i]
        return r.boxes_xyxy.copy(), r.labels.copy(), r.difficult.copy()

    def load(self, i: int):
        """Image i for training: image uint8 (H, W, 3) RGB, boxes (n, 4) float32, labels (n,).

        Objects flagged difficult are dropped unless ``keep_difficult``.
        """
        r = self.records[i]
        image = load_image(r.image_path)
        if image.shape[:2] != (r.height, r.width):
            raise UserError(f"{r.image_path}: image is {image.shape[1]}x{image.shape[0]} but "
                            f"{r.xml_path} says {r.width}x{r.height}")
        keep = np.ones(len(r.labels), dtype=bool) if self.keep_difficult else ~r.difficult
        return image, r.boxes_xyxy[keep].copy(), r.labels[keep].copy()
