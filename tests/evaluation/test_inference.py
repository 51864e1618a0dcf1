"""Detector and data-set evaluation, end to end with a model that predicts the truth."""
import dataclasses

import numpy as np
import pytest

from minissd.ssd.config import get_config
from minissd.evaluation.inference import Detector, evaluate_dataset
from minissd.ssd.matching import match
from minissd.ssd.priors import default_boxes
from minissd.datasets.synthetic import write_shapes_dataset
from minissd.datasets.voc import VOCDataset


class OracleModel:
    """Stands in for SSD: returns, batch by batch, the encoded ground truth as its prediction."""

    def __init__(self, cfg, num_classes, truths):
        self.cfg, self.num_classes = cfg, num_classes
        self.priors = default_boxes(cfg)
        self.queue = list(truths)          # per image (boxes normalised xyxy, labels)

    def eval(self):
        return self

    def parameters(self):
        yield np.zeros(1, np.float32)

    def forward(self, images):
        B = images.shape[0]
        locs, confs = [], []
        for boxes, labels in self.queue[:B]:
            loc, conf_t = match(boxes, labels, self.priors)            # (P, 4), (P,)
            logits = np.full((len(conf_t), self.num_classes + 1), -10.0, np.float32)
            logits[np.arange(len(conf_t)), conf_t] = 10.0
            locs.append(loc)
            confs.append(logits)
        del self.queue[:B]
        return np.stack(locs).astype(np.float32), np.stack(confs)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = write_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=2, num_test=6,
                                image_size=120, seed=3)
    return VOCDataset([(root, "test")], keep_difficult=True)


def truths(dataset):
    out = []
    for i in range(len(dataset)):
        boxes, labels, _ = dataset.annotation(i)
        image = dataset.load(i)[0]
        h, w = image.shape[:2]
        out.append((boxes / np.array([w, h, w, h], np.float32), labels))
    return out


def test_oracle_scores_perfect_map(dataset):
    cfg = get_config("ssd-tiny")
    detector = Detector(OracleModel(cfg, dataset.num_classes, truths(dataset)))
    result, detections = evaluate_dataset(detector, dataset, batch_size=4)
    assert result["map"] == pytest.approx(1.0)
    boxes, labels, scores = detections[0]
    gt_boxes, gt_labels, _ = dataset.annotation(0)
    assert sorted(labels.tolist()) == sorted(gt_labels.tolist())
    # boxes come back in pixels of the original image, not in [0, 1]
    order = np.lexsort(boxes.T[::-1])
    np.testing.assert_allclose(boxes[order], gt_boxes[np.lexsort(gt_boxes.T[::-1])], atol=0.5)


def test_detector_preprocess_shape(dataset):
    cfg = get_config("ssd-tiny")
    detector = Detector(OracleModel(cfg, dataset.num_classes, []))
    out = detector.preprocess(dataset.load(0)[0])
    assert out.shape == (3, cfg.image_size, cfg.image_size) and out.dtype == np.float32


# --------------------------------------------------------------------------- #
# Detector.from_ssd_pytorch: ssd.pytorch's preprocessing, priors and detection step at once
# (tests/interop/test_ssd_pytorch_parity.py checks its detections against a replica, with torch)
# --------------------------------------------------------------------------- #
def mini_ssd_pytorch():
    """The small ssd.pytorch-layout model of tests/data/weights/ (its JSON still says clip: true)."""
    import json
    import os
    from minissd.ssd.architecture import SSDArch
    from minissd.ssd.config import SSDConfig
    from minissd.ssd.model import SSD
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "weights")
    with open(os.path.join(here, "mini.json")) as f:
        d = json.load(f)
    model = SSD(SSDConfig.from_dict(d["config"]), d["num_classes"], arch=SSDArch.from_dict(d["arch"]))
    return model, os.path.join(here, "mini_ssd_pytorch.pth")


def test_from_ssd_pytorch_sets_preprocessing_priors_and_detection():
    from minissd.interop.weights import ssd_pytorch_preprocess
    from minissd.ssd.postprocess import SSD_PYTORCH_DETECT
    model, path = mini_ssd_pytorch()
    assert model.cfg.clip == "corners"                                  # as loaded from JSON
    detector = Detector.from_ssd_pytorch(path, model=model, class_names=["a", "b"])
    assert detector.cfg.clip == "cxcywh" and detector.config == SSD_PYTORCH_DETECT
    np.testing.assert_array_equal(detector.priors, np.clip(default_boxes(
        dataclasses.replace(detector.cfg, clip=None)), 0, 1))          # (cx, cy, w, h) clamped
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    np.testing.assert_array_equal(detector.preprocess(image), ssd_pytorch_preprocess(image, 44))
    assert detector.class_names == ["a", "b"]
    boxes, labels, scores = detector([image])[0]
    expected = detector.predict_batch(ssd_pytorch_preprocess(image, 44)[None], [(60, 80)])[0]
    np.testing.assert_array_equal(labels, expected[1])
    assert len(labels) > 0 and set(labels.tolist()) <= {1, 2}
    loose = Detector.from_ssd_pytorch(path, model=mini_ssd_pytorch()[0], class_names=["a", "b"],
                                      conf_threshold=0.5)                # an override of one field
    assert loose.config == dataclasses.replace(SSD_PYTORCH_DETECT, conf_threshold=0.5)


def test_from_ssd_pytorch_defaults_to_voc_and_checks_the_class_count():
    model, path = mini_ssd_pytorch()                                    # 2 classes, not VOC's 20
    with pytest.raises(ValueError, match="the model has 2 classes, class_names 20"):
        Detector.from_ssd_pytorch(path, model=model)


def test_detector_takes_a_detect_config():
    from minissd.ssd.postprocess import DetectConfig
    cfg = get_config("ssd-tiny")
    config = DetectConfig(conf_threshold=0.3, top_k=None)
    assert Detector(OracleModel(cfg, 3, []), config).config == config
    assert Detector(OracleModel(cfg, 3, []), nms_threshold=0.6).config == DetectConfig(nms_threshold=0.6)
    with pytest.raises(TypeError, match="top"):
        Detector(OracleModel(cfg, 3, []), topk=3)
