"""Inference on images and VOC evaluation of a trained model.

    image (H, W, 3) uint8 --eval_transform--> (3, S, S) --model--> loc, conf
        --detect (decode + per-class NMS)--> boxes in [0, 1] --x (W, H)--> pixels
"""
from __future__ import annotations

import numpy as np

from minissd.nn import backend
from minissd.ssd.postprocess import detect
from minissd.ssd.priors import default_boxes


class Detector:
    """A trained model, its default boxes and the evaluation transform, ready to run."""

    def __init__(self, model, conf_threshold=0.01, nms_threshold=0.45, top_k=200):
        from minissd.datasets.augment import eval_transform
        self.model = model.eval()
        self.cfg = model.cfg
        xp = backend.get_array_module(next(model.parameters()))
        self.xp = xp
        self.priors = xp.asarray(default_boxes(self.cfg), dtype=xp.float32)   # (P, 4)
        self.transform = eval_transform(self.cfg.image_size)
        self.conf_threshold, self.nms_threshold, self.top_k = conf_threshold, nms_threshold, top_k

    def preprocess(self, image):
        """uint8 (H, W, 3) RGB -> float32 (3, S, S) (uint8 in: PIL's fast resize)."""
        empty = np.zeros((0, 4), np.float32)
        out, _, _ = self.transform(image, empty, np.zeros(0, np.int64), np.random.default_rng(0))
        return out

    def predict_batch(self, images_chw, sizes):
        """images (B, 3, S, S) float32 and their original (H, W) -> per image (boxes px, labels, scores)."""
        xp = self.xp
        loc, conf = self.model.forward(xp.asarray(images_chw))       # (B, P, 4), (B, P, C+1)
        results = detect(loc, conf, self.priors, conf_threshold=self.conf_threshold,
                         nms_threshold=self.nms_threshold, top_k=self.top_k,
                         variances=self.cfg.variances)
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
