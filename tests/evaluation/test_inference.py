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


# --------------------------------------------------------------------------- #
# Test-time flipping: flip_average and Detector(flip=True)
# --------------------------------------------------------------------------- #
def mirror_xyxy(boxes):
    """(..., 4) xyxy in [0, 1] -> the boxes flipped left-right."""
    return np.stack([1 - boxes[..., 2], boxes[..., 1], 1 - boxes[..., 0], boxes[..., 3]], axis=-1)


def random_boxes(rng, shape):
    """(*shape, 4) xyxy boxes with positive sides inside [0, 1]."""
    lo = rng.uniform(0, 0.7, (*shape, 2))
    return np.concatenate([lo, lo + rng.uniform(0.05, 0.3, (*shape, 2))], axis=-1)


@pytest.mark.parametrize("name", ["ssd-tiny", "ssd300"])
def test_flip_average_of_agreeing_views_is_either_view(name):
    """When the flipped image's prediction is exactly the mirror of the image's, averaging the two
    changes nothing: the boxes decode to the same boxes, the probabilities are the same (float64).
    ssd300: its mirror boxes are not exact mirrors; flip_average re-encodes, so the boxes still agree."""
    from minissd.evaluation.inference import flip_average
    from minissd.ssd.boxes import decode, encode
    from minissd.ssd.postprocess import softmax
    from minissd.ssd.priors import mirror_index
    cfg = get_config(name)
    rng = np.random.default_rng(0)
    priors, m = default_boxes(cfg, dtype="float64"), mirror_index(cfg)
    truth = random_boxes(rng, (2, cfg.num_priors))                   # (B, P, 4) what box i sees
    logits = rng.normal(size=(2, cfg.num_priors, 4)) * 3             # (B, P, C+1)
    loc = encode(truth, priors)
    # on the mirrored image, box m[i] sees box i's object mirrored and gives box i's scores
    loc_f = encode(mirror_xyxy(truth)[:, m], priors)
    conf_f = logits[:, m]
    out_loc, out_logp = flip_average(loc, logits, loc_f, conf_f, priors, m)
    np.testing.assert_allclose(decode(out_loc, priors), truth, rtol=0, atol=1e-12)
    np.testing.assert_allclose(softmax(out_logp, axis=2), softmax(logits, axis=2), rtol=1e-12)


def test_flip_average_averages_probabilities_and_offsets(xp):
    """Two views that disagree: probabilities averaged, offsets (from box i) averaged (float64)."""
    from minissd.nn.backend import to_numpy
    from minissd.evaluation.inference import flip_average
    from minissd.ssd.boxes import encode
    from minissd.ssd.postprocess import softmax
    from minissd.ssd.priors import mirror_index
    cfg = get_config("ssd-tiny")
    rng = np.random.default_rng(1)
    priors, m = default_boxes(cfg, dtype="float64"), mirror_index(cfg)
    a, b = random_boxes(rng, (1, cfg.num_priors)), random_boxes(rng, (1, cfg.num_priors))
    conf, conf_f = rng.normal(size=(2, 1, cfg.num_priors, 3)) * 3
    out_loc, out_logp = (to_numpy(v) for v in flip_average(
        *(xp.asarray(v) for v in (encode(a, priors), conf, encode(mirror_xyxy(b)[:, m], priors), conf_f,
                                  priors, m))))
    np.testing.assert_allclose(out_loc, (encode(a, priors) + encode(b, priors)) / 2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.exp(out_logp), (softmax(conf, axis=2) + softmax(conf_f[:, m], axis=2)) / 2,
                               rtol=1e-12)


def test_flip_average_survives_an_underflowed_probability():
    from minissd.evaluation.inference import flip_average
    from minissd.ssd.priors import mirror_index
    cfg = get_config("ssd-tiny")
    priors, m = default_boxes(cfg), mirror_index(cfg)
    conf = np.zeros((1, cfg.num_priors, 3), np.float32)
    conf[..., 0] = 200.0                                             # the other two: exp(-200) = 0 in float32
    loc = np.zeros((1, cfg.num_priors, 4), np.float32)
    _, logp = flip_average(loc, conf, loc, conf, priors, m)
    assert np.isfinite(logp).all() and (logp[..., 1:] < -80).all()


def test_flipping_detector_treats_an_image_and_its_mirror_alike():
    """Flipping averages a view with its mirror view, so the detections of the mirrored input are
    the mirrored detections, whatever the (random, untrained) weights: scores exactly (a + b = b + a),
    boxes to float32 rounding. Without flipping an untrained network is not symmetric."""
    from minissd.ssd.model import SSD
    cfg = get_config("ssd-tiny")
    model = SSD(cfg, 3, seed=0)
    x = np.random.default_rng(0).normal(size=(2, 3, 128, 128)).astype(np.float32)
    x_m = np.ascontiguousarray(x[..., ::-1])
    sizes = [(90, 120), (128, 64)]
    for flip in (True, False):
        detector = Detector(model, flip=flip, top_k=50)
        found = []
        for a, b, (h, w) in zip(detector.predict_batch(x, sizes), detector.predict_batch(x_m, sizes), sizes):
            order_a, order_b = np.lexsort((a[1], a[2])), np.lexsort((b[1], b[2]))
            same = (len(a[2]) == len(b[2]) and np.array_equal(a[2][order_a], b[2][order_b])
                    and np.array_equal(a[1][order_a], b[1][order_b]))
            if same:
                unit = np.array([w, h, w, h], np.float32)
                np.testing.assert_allclose(mirror_xyxy(a[0][order_a] / unit), b[0][order_b] / unit,
                                           rtol=0, atol=1e-5)   # ~10 float32 steps on O(1) numbers: ~1e-6
            found.append(same and len(a[2]) > 0)
        assert all(found) if flip else not any(found)
