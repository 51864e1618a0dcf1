"""Detector and data-set evaluation, end to end with a model that predicts the truth."""
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
