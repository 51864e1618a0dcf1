"""Inference on images and VOC evaluation of a trained model.

    image (H, W, 3) uint8 --preprocess--> (3, S, S) --model--> loc, conf
        --detect (decode + per-class NMS)--> boxes in [0, 1] --x (W, H)--> pixels

``Detector(model)`` runs a minissd model (ImageNet-normalised input, minissd's priors and
detection step); ``Detector.from_ssd_pytorch(path)`` runs ssd.pytorch's published SSD300
the way ssd.pytorch does (see minissd.interop.weights).

``Detector(model, flip=True)`` is test-time flipping: the network also sees every image
mirrored left-right, and each default box's prediction is averaged with its mirror box's
prediction on the mirrored image (``flip_average``) before the detection step. Twice the
network's work; on voc5-mini about +0.01 mAP, with the people lower (models/README.md,
"Test-time flipping").
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from minissd.datasets.augment import eval_transform, hflip_boxes
from minissd.nn import backend
from minissd.ssd.boxes import VARIANCES, decode, encode
from minissd.ssd.postprocess import SSD_PYTORCH_DETECT, DetectConfig, detect, softmax
from minissd.ssd.priors import default_boxes, mirror_index


def flip_average(loc, conf_logits, loc_flipped, conf_flipped, priors_cxcywh, mirror,
                 variances=VARIANCES):
    """Average each default box's prediction with its mirror box's on the mirrored image.

    loc, conf_logits (B, P, 4), (B, P, C+1): the network on the images; loc_flipped,
    conf_flipped: on the images flipped left-right; mirror (P,): box i's mirror box
    (:func:`minissd.ssd.priors.mirror_index`). Box m = mirror[i] of the flipped image sees
    what box i sees, mirrored: its class probabilities are averaged with box i's as they
    are, and the box it predicts is decoded, flipped back (x -> 1 - x) and encoded as an
    offset from box i, then the two offsets are averaged. Returns (loc (B, P, 4),
    log-probabilities (B, P, C+1)): logits whose softmax is the averaged probabilities,
    so ``detect`` takes them as they are.
    """
    xp = backend.get_array_module(loc, conf_logits, loc_flipped, conf_flipped)
    boxes = decode(loc_flipped[:, mirror], priors_cxcywh[mirror], variances)   # (B, P, 4) xyxy, mirrored
    boxes = hflip_boxes(boxes, 1.0)                                            # flipped back
    loc_back = encode(boxes, priors_cxcywh, variances)                         # (B, P, 4) offsets from box i
    probs = (softmax(conf_logits, axis=2) + softmax(conf_flipped[:, mirror], axis=2)) / 2  # (B, P, C+1)
    tiny = np.finfo(probs.dtype).tiny                  # a probability that underflowed to 0
    return (loc + loc_back) / 2, xp.log(xp.maximum(probs, tiny))


class Detector:
    """A trained model, its default boxes, its preprocessing and the detection step, ready to run.

    config: the detection step's settings (default ``DetectConfig()``); ``options`` override
        its fields by name, e.g. ``Detector(model, conf_threshold=0.3)``.
    preprocess: uint8 (H, W, 3) RGB -> float32 (3, S, S); default: resize with PIL's bilinear
        and normalise with the ImageNet mean and std (minissd's evaluation transform).
    class_names: the names of labels 1..C, kept for whoever draws the detections.
    flip: test-time flipping: run the network on each image and on its mirror image and
        average the two per default box (``flip_average``); twice the network's work.
    """

    def __init__(self, model, config: Optional[DetectConfig] = None, preprocess=None,
                 class_names=None, flip=False, **options):
        self.model = model.eval()
        self.cfg = model.cfg
        xp = backend.get_array_module(next(model.parameters()))
        self.xp = xp
        self.priors = xp.asarray(default_boxes(self.cfg), dtype=xp.float32)   # (P, 4)
        self.flip = bool(flip)
        self.mirror = mirror_index(self.cfg, xp=xp) if self.flip else None   # (P,) mirror boxes
        self.config = dataclasses.replace(config or DetectConfig(), **options)
        if preprocess is None:
            transform = eval_transform(self.cfg.image_size)
            empty_boxes, empty_labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
            preprocess = lambda image: transform(image, empty_boxes, empty_labels, None)[0]  # noqa: E731
        self._preprocess = preprocess
        self.class_names = None if class_names is None else list(class_names)

    @classmethod
    def from_ssd_pytorch(cls, path, model=None, class_names=None, device="cpu", **options):
        """ssd.pytorch's SSD300 weights (e.g. ssd300_mAP_77.43_v2.pth), run as ssd.pytorch runs them.

        Sets the three things that differ from minissd's defaults together: RGB input minus
        (123, 117, 104) after OpenCV's resize (``ssd_pytorch_preprocess``), priors clamped as
        (cx, cy, w, h) (``SSDConfig.clip="cxcywh"``), and ssd.pytorch's detection step
        (``SSD_PYTORCH_DETECT``: no box clipping, 200 per class before NMS, no overall cap).
        model: an SSD in ssd.pytorch's layout to load into (default: SSD300 for the 20 VOC
            classes); its config's clip is set to "cxcywh".
        class_names: default: the 20 VOC classes, in ssd.pytorch's order (labels 1..20).
        options: overrides of ``SSD_PYTORCH_DETECT``'s fields, e.g. conf_threshold=0.6.
        """
        from minissd.datasets.voc import VOC_CLASSES
        from minissd.interop.weights import load_ssd_pytorch, ssd_pytorch_preprocess
        from minissd.ssd.config import get_config
        from minissd.ssd.model import SSD
        class_names = VOC_CLASSES if class_names is None else class_names
        if model is None:
            model = SSD(dataclasses.replace(get_config("ssd300"), clip="cxcywh"), len(class_names))
        else:
            model.cfg = dataclasses.replace(model.cfg, clip="cxcywh")
        if model.num_classes != len(class_names):
            raise ValueError(f"{path}: the model has {model.num_classes} classes, class_names "
                             f"{len(class_names)}")
        load_ssd_pytorch(model, path)
        size = model.cfg.image_size
        return cls(model.to(device), SSD_PYTORCH_DETECT,
                   preprocess=lambda image: ssd_pytorch_preprocess(image, size),
                   class_names=class_names, **options)

    def preprocess(self, image):
        """uint8 (H, W, 3) RGB -> float32 (3, S, S), the network's input."""
        return self._preprocess(image)

    def predict_batch(self, images_chw, sizes):
        """images (B, 3, S, S) float32 and their original (H, W) -> per image (boxes px, labels, scores)."""
        xp = self.xp
        images = xp.asarray(images_chw)                              # (B, 3, S, S)
        loc, conf = self.model.forward(images)                       # (B, P, 4), (B, P, C+1)
        if self.flip:                                                # test-time flipping
            loc_f, conf_f = self.model.forward(xp.ascontiguousarray(images[..., ::-1]))
            loc, conf = flip_average(loc, conf, loc_f, conf_f, self.priors, self.mirror,
                                     self.cfg.variances)
        results = detect(loc, conf, self.priors, self.config, variances=self.cfg.variances)
        out = []
        for (boxes, labels, scores), (h, w) in zip(results, sizes):
            scale = np.array([w, h, w, h], dtype=np.float32)
            out.append((boxes * scale, labels, scores))               # xyxy in pixels
        return out

    def __call__(self, images, batch_size=16):
        """List of uint8 (H, W, 3) images -> list of (boxes (D, 4) px xyxy, labels 1..C, scores)."""
        results = []
        for i in range(0, len(images), batch_size):
            chunk = images[i:i + batch_size]
            batch = np.stack([self.preprocess(im) for im in chunk])
            results += self.predict_batch(batch, [im.shape[:2] for im in chunk])
        return results


def evaluate_dataset(detector, dataset, batch_size=16, use_07_metric=True, iou_threshold=0.5,
                     progress=None):
    """Run ``detector`` over every image of ``dataset`` and score it with the VOC metric.

    Ground truth comes from ``dataset.annotation(i)`` and keeps difficult
    objects (flagged), as the devkit does. Returns (result, detections).
    """
    from minissd.evaluation.metrics import evaluate_voc
    detections, truths = [], []
    n = len(dataset)
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        images = [dataset.load(i)[0] for i in idx]
        detections += detector(images, batch_size=batch_size)
        truths += [dataset.annotation(i) for i in idx]
        if progress is not None:
            progress(min(n, start + batch_size), n)
    result = evaluate_voc(detections, truths, num_classes=len(dataset.class_names),
                          iou_threshold=iou_threshold, use_07_metric=use_07_metric)
    return result, detections
