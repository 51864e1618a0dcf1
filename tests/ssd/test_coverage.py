"""Default-box coverage: three objects against three default boxes, worked out by hand."""
import math
from dataclasses import dataclass

import matplotlib
import numpy as np
import pytest

from minissd.ssd.config import SSD_TINY, SSDConfig
from minissd.ssd.coverage import (anchor_coverage, best_default_box, coverage_rows,
                                  format_coverage, plot_coverage, prior_map_index,
                                  unit_ground_truth)
from minissd.ssd.priors import default_boxes

matplotlib.use("Agg")

# 100-px input; map 0: 2x2 cells every 50 px, squares of 50 and sqrt(50 * 100) = 70.7 px;
# map 1: one cell, squares of 90 and sqrt(90 * 100) px. Unclipped, so the sides are exact.
CFG = SSDConfig(name="hand", image_size=100, feature_maps=(2, 1), steps=(50, 100),
                min_sizes=(50, 90), max_sizes=(100, 100), aspect_ratios=((), ()), clip=False)


@dataclass
class Record:
    width: int
    height: int


class TinyDataset:
    """One 200 x 100 photo (W x H): the network's 100-px input halves x and keeps y."""
    class_names = ("a", "b")
    records = [Record(200, 100)]

    def annotation(self, i):
        boxes = np.array([[0, 0, 100, 50],        # a: -> 50 x 50 px at (25, 25): map 0's square
                          [20, 20, 40, 30],       # b: -> 10 x 10 px inside it: IoU 100 / 2500
                          [10, 5, 190, 95],       # a: -> 90 x 90 px, centred: map 1's square
                          [0, 0, 200, 100]],      # a, difficult: left out
                         dtype=np.float32)
        return boxes, np.array([1, 2, 1, 1]), np.array([False, False, False, True])


def test_unit_ground_truth_divides_by_the_image_side():
    boxes, labels = unit_ground_truth(TinyDataset())
    np.testing.assert_allclose(boxes, [[0, 0, .5, .5], [.1, .2, .2, .3], [.05, .05, .95, .95]])
    assert labels.tolist() == [1, 2, 1]
    assert len(unit_ground_truth(TinyDataset(), keep_difficult=True)[1]) == 4


def test_coverage_by_hand():
    report = anchor_coverage(TinyDataset(), CFG)
    np.testing.assert_allclose(report.best_iou, [1.0, 100 / 2500, 1.0])
    np.testing.assert_allclose(report.wh_px, [[50, 50], [10, 10], [90, 90]], atol=1e-9)
    assert report.best_map.tolist() == [0, 0, 1]
    assert report.covered.tolist() == [True, False, True]
    rows = {r["class"]: r for r in coverage_rows(report)}
    assert (rows["a"]["objects"], rows["a"]["covered"]) == (2, 2)
    assert (rows["b"]["objects"], rows["b"]["covered"]) == (1, 0)
    assert (rows["all"]["objects"], rows["all"]["covered"]) == (3, 2)
    np.testing.assert_allclose(rows["b"]["quantiles"], [0.04] * 5)
    np.testing.assert_allclose(rows["a"]["median_wh_px"], [70, 70])
    text = format_coverage(report)
    b_row = next(line for line in text.splitlines() if line.startswith("b "))
    assert b_row.split()[:4] == ["b", "1", "0", "0.0%"] and "0.04" in b_row
    assert "best default box on map: 2x2: 2, 1x1: 1" in text


def test_classes_without_objects_get_no_row():
    class WithCow(TinyDataset):
        class_names = ("a", "b", "cow")
    text = format_coverage(anchor_coverage(WithCow(), CFG))
    assert not any(line.startswith("cow") for line in text.splitlines())
    assert text.splitlines()[-1] == "no objects of: cow" and "nan" not in text


def test_threshold_moves_the_count():
    assert anchor_coverage(TinyDataset(), CFG, threshold=0.03).covered.all()


def test_best_default_box_chunks_agree():
    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 0.7, (50, 2))
    gt = np.concatenate([lo, lo + rng.uniform(0.02, 0.3, (50, 2))], axis=1)
    priors = default_boxes(SSD_TINY, dtype="float64")
    best, index = best_default_box(gt, priors)
    best_1, index_1 = best_default_box(gt, priors, chunk=7)
    np.testing.assert_array_equal(best, best_1)
    np.testing.assert_array_equal(index, index_1)
    assert np.all((best > 0) & (best <= 1))


def test_prior_map_index_follows_the_prior_order():
    index = prior_map_index(SSD_TINY)
    assert len(index) == SSD_TINY.num_priors == 1524
    assert np.bincount(index).tolist() == [16 * 16 * 4, 8 * 8 * 6, 4 * 4 * 6, 2 * 2 * 4, 4]
    assert np.all(np.diff(index) >= 0)


def test_plot_coverage_has_log_axes():
    import matplotlib.pyplot as plt
    ax = plot_coverage(anchor_coverage(TinyDataset(), CFG))
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["a (2/2 IoU>=0.5)", "b (0/1 IoU>=0.5)"]
    # default boxes: map 0's 50 and 70.7 px squares, map 1's 90 and 94.9 px
    marks = np.concatenate([c.get_offsets() for c in ax.collections[2:]])
    np.testing.assert_allclose(marks, [[50, 50], [math.sqrt(5000)] * 2, [90, 90],
                                       [math.sqrt(9000)] * 2])
    plt.close(ax.figure)
