"""VOC evaluation: each case below is small enough to work by hand (the working is in comments)."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from minissd.evaluation.metrics import (box_iou_voc, evaluate_voc, format_ap_table, plot_pr_curves,
                                        precision_envelope, voc07_best_precision, voc_ap)

BOX = [0.0, 0.0, 9.0, 9.0]   # 10 x 10 pixels with inclusive corners: area 100
ELSEWHERE = [50.0, 50.0, 59.0, 59.0]


def image(det_boxes, det_labels, det_scores, gt_boxes, gt_labels, difficult=None, xp=np):
    """One image's (detections, ground truths) as the tuples evaluate_voc takes."""
    det = (xp.asarray(det_boxes, dtype=xp.float64).reshape(-1, 4),
           xp.asarray(det_labels, dtype=xp.int64), xp.asarray(det_scores, dtype=xp.float64))
    difficult = [False] * len(gt_labels) if difficult is None else difficult
    gt = (xp.asarray(gt_boxes, dtype=xp.float64).reshape(-1, 4),
          xp.asarray(gt_labels, dtype=xp.int64), xp.asarray(difficult, dtype=bool))
    return det, gt


def evaluate(images, **kwargs):
    dets, gts = zip(*images)
    return evaluate_voc(list(dets), list(gts), **kwargs)


# --- IoU with inclusive pixel coordinates ---------------------------------------------------

@pytest.mark.parametrize("a, b, expected", [
    (BOX, BOX, 1.0),
    (BOX, [9, 0, 18, 9], 10 / 190),      # touching in column 9: 1 x 10 shared pixels, 100 + 100 - 10
    (BOX, [10, 0, 19, 9], 0.0),          # side by side, no shared pixel
    (BOX, [0, 0, 9, 4], 0.5),            # the top half: 10 x 5 = 50 of 100
    (BOX, [2, 2, 6, 6], 25 / 100),       # 5 x 5 inside
    ([0, 0, 0, 0], [0, 0, 0, 0], 1.0),   # a single pixel is a box of area 1
])
def test_box_iou_voc(a, b, expected):
    assert box_iou_voc(np.array([a]), np.array([b]))[0, 0] == pytest.approx(expected, abs=1e-12)


def test_box_iou_voc_shape():
    assert box_iou_voc(np.zeros((3, 4)), np.zeros((5, 4))).shape == (3, 5)


# --- AP from a given curve --------------------------------------------------------------------

@pytest.mark.parametrize("recall, precision, use_07, expected", [
    ([1.0], [1.0], True, 1.0),
    ([1.0], [1.0], False, 1.0),
    ([0.5], [1.0], True, 6 / 11),        # levels 0 .. 0.5 reached with precision 1
    ([0.5], [1.0], False, 0.5),          # area: 0.5 x 1
    ([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3], False, 0.5 + 0.5 * 2 / 3),
    ([], [], True, 0.0),
    ([], [], False, 0.0),
])
def test_voc_ap(recall, precision, use_07, expected):
    assert voc_ap(np.array(recall), np.array(precision), use_07) == pytest.approx(expected)


def test_precision_envelope_is_the_best_precision_from_each_point_on():
    # chapter 10's example: TP, TP, FP, FP, TP, FP
    precision = np.array([1, 1, 2 / 3, 1 / 2, 3 / 5, 1 / 2])
    np.testing.assert_array_equal(precision_envelope(precision), [1, 1, 2 / 3, 3 / 5, 3 / 5, 1 / 2])
    assert precision_envelope([]).shape == (0,)


def test_voc07_best_precision_per_level_and_its_mean_is_the_11_point_ap():
    recall = np.array([0.25, 0.5, 0.5, 0.5, 0.75, 0.75])
    precision = np.array([1, 1, 2 / 3, 1 / 2, 3 / 5, 1 / 2])
    best = voc07_best_precision(recall, precision)
    # levels 0..0.5 reach precision 1; 0.6, 0.7 only at recall 0.75 (best 3/5); 0.8..1 never
    np.testing.assert_array_equal(best, [1] * 6 + [3 / 5] * 2 + [0] * 3)
    assert voc_ap(recall, precision, True) == pytest.approx(best.mean(), rel=1e-12)
    np.testing.assert_array_equal(voc07_best_precision([], []), np.zeros(11))


# --- evaluate_voc, case by case ---------------------------------------------------------------

@pytest.mark.parametrize("use_07", [True, False])
def test_perfect_detector_scores_one(xp, use_07):
    images = [image([BOX, ELSEWHERE], [1, 2], [0.9, 0.3], [BOX, ELSEWHERE], [1, 2], xp=xp),
              image([ELSEWHERE], [1], [0.6], [ELSEWHERE], [1], xp=xp)]
    result = evaluate(images, use_07_metric=use_07)
    np.testing.assert_array_equal(result["ap"], [1.0, 1.0])
    assert result["map"] == 1.0
    np.testing.assert_array_equal(result["num_positives"], [2, 1])


def test_duplicate_is_a_false_positive():
    # Two detections on one object: the better one is a TP, the second a duplicate (FP).
    # TP, FP -> precision [1/1, 1/2], recall [1/1, 1/1]; AP is still 1 (precision 1 at recall 1).
    result = evaluate([image([BOX, BOX], [1, 1], [0.9, 0.8], [BOX], [1])])
    np.testing.assert_array_equal(result["precision"][0], [1.0, 0.5])
    np.testing.assert_array_equal(result["recall"][0], [1.0, 1.0])
    assert result["ap"][0] == 1.0


def test_detection_matches_its_best_ground_truth_even_if_taken():
    # Objects A = BOX and B (shifted by 1 px) overlap with IoU 90/110. Detection 1 (0.9) is
    # exactly A: TP. Detection 2 (0.8) is also exactly A: its best IoU is with A, already
    # detected, so it is a duplicate (FP) although its IoU with the free B is > 0.5 (the devkit).
    b = [1.0, 0.0, 10.0, 9.0]
    result = evaluate([image([BOX, BOX], [1, 1], [0.9, 0.8], [BOX, b], [1, 1])])
    np.testing.assert_array_equal(result["precision"][0], [1.0, 0.5])
    np.testing.assert_array_equal(result["recall"][0], [0.5, 0.5])


def test_difficult_ground_truth_changes_nothing():
    # Object A (normal) and D (difficult). Detections: on D (0.95, ignored), on A (0.9, TP),
    # on nothing (0.5, FP). Without D and its detection: TP, FP. Both: precision [1, 1/2],
    # recall [1, 1] (D is not counted in the recall denominator).
    with_difficult = evaluate([image([ELSEWHERE, BOX, [100, 100, 110, 110]], [1, 1, 1],
                                     [0.95, 0.9, 0.5], [BOX, ELSEWHERE], [1, 1], [False, True])])
    without = evaluate([image([BOX, [100, 100, 110, 110]], [1, 1], [0.9, 0.5], [BOX], [1])])
    for key in ("precision", "recall"):
        np.testing.assert_array_equal(with_difficult[key][0], without[key][0])
        np.testing.assert_array_equal(without[key][0], [1.0, 0.5] if key == "precision" else [1, 1])
    assert with_difficult["num_positives"][0] == without["num_positives"][0] == 1


def test_only_difficult_ground_truth_is_nan():
    result = evaluate([image([BOX], [1], [0.9], [BOX], [1], [True])])
    assert np.isnan(result["ap"][0]) and np.isnan(result["map"])
    assert len(result["precision"][0]) == 0   # the only detection was ignored


def test_11_point_and_all_point_differ():
    # Three objects in three images; sorted detections: TP, FP, TP, FP, TP.
    #   cumulative TP 1 1 2 2 3, FP 0 1 1 2 2
    #   precision 1, 1/2, 2/3, 1/2, 3/5;   recall 1/3, 1/3, 2/3, 2/3, 1
    # 11-point: levels 0, .1, .2, .3 -> 1 (4 levels); .4, .5, .6 -> 2/3 (3); .7 .. 1 -> 3/5 (4)
    #   AP_07  = (4 * 1 + 3 * 2/3 + 4 * 3/5) / 11 = 8.4 / 11 = 0.7636...
    # all-point: envelope 1 on (0, 1/3], 2/3 on (1/3, 2/3], 3/5 on (2/3, 1]
    #   AP_all = (1 + 2/3 + 3/5) / 3 = 34 / 45 = 0.7556...
    a, b, c = BOX, ELSEWHERE, [20.0, 20.0, 29.0, 29.0]
    images = [image([a, c], [1, 1], [0.9, 0.6], [a], [1]),          # TP 0.9, FP 0.6
              image([c, b], [1, 1], [0.8, 0.5], [b], [1]),          # FP 0.8, TP 0.5
              image([a, c], [1, 1], [0.7, 0.4], [a], [1])]          # TP 0.7, FP 0.4
    # score order 0.9 TP, 0.8 FP, 0.7 TP, 0.6 FP, 0.5 TP, 0.4 FP: a sixth detection (FP)
    # at the end adds precision 3/6 at recall 1, which changes neither AP.
    ap_07 = evaluate(images, use_07_metric=True)
    ap_all = evaluate(images, use_07_metric=False)
    np.testing.assert_allclose(ap_07["precision"][0], [1, 1 / 2, 2 / 3, 1 / 2, 3 / 5, 1 / 2])
    np.testing.assert_allclose(ap_07["recall"][0], [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    assert ap_07["map"] == pytest.approx(8.4 / 11)
    assert ap_all["map"] == pytest.approx(34 / 45)


def test_iou_exactly_at_threshold_is_a_false_positive():
    # The top half of BOX has IoU 50 / 100 = 0.5: not > 0.5, so a miss.
    result = evaluate([image([[0, 0, 9, 4]], [1], [0.9], [BOX], [1])])
    np.testing.assert_array_equal(result["precision"][0], [0.0])
    assert result["ap"][0] == 0.0


def test_plus_one_convention_decides_a_match():
    # gt (0,0)-(1,1) is 2 x 2 pixels, detection (0,0)-(1,2) is 2 x 3: IoU 4/6 > 0.5, a TP.
    # Without the +1 the areas would be 1 and 2 and the IoU 1/2: a miss.
    result = evaluate([image([[0, 0, 1, 2]], [1], [0.9], [[0, 0, 1, 1]], [1])])
    assert result["ap"][0] == 1.0


def test_empty_detections():
    images = [image(np.zeros((0, 4)), [], [], [BOX], [1]), image(np.zeros((0, 4)), [], [], [], [])]
    result = evaluate(images)
    assert result["ap"][0] == 0.0 and result["map"] == 0.0
    assert len(result["precision"][0]) == len(result["recall"][0]) == 0


def test_class_without_ground_truth_is_nan_and_left_out():
    # Class 1: one TP (AP 1). Class 2: a detection but no object (NaN). Class 3: nothing (NaN).
    result = evaluate([image([BOX, ELSEWHERE], [1, 2], [0.9, 0.8], [BOX], [1])], num_classes=3)
    assert result["ap"][0] == 1.0 and np.isnan(result["ap"][1]) and np.isnan(result["ap"][2])
    assert result["map"] == 1.0
    np.testing.assert_array_equal(result["precision"][1], [0.0])
    assert np.isnan(result["recall"][1]).all()


def test_ties_keep_input_order():
    # Equal scores: the stable sort keeps the order given, so TP (first) comes before FP.
    result = evaluate([image([BOX, ELSEWHERE], [1, 1], [0.5, 0.5], [BOX], [1])])
    np.testing.assert_array_equal(result["precision"][0], [1.0, 0.5])


@pytest.mark.parametrize("images, match", [
    ([image([BOX], [0], [0.9], [BOX], [1])], "detections\\[0\\] has label 0"),
    ([image([BOX], [1], [0.9], [BOX], [4])], "ground_truths\\[0\\] has label 4"),
])
def test_bad_labels_are_named(images, match):
    with pytest.raises(ValueError, match=match):
        evaluate(images, num_classes=3)


def test_bad_inputs_are_named():
    det, gt = image([BOX], [1], [0.9], [BOX], [1])
    with pytest.raises(ValueError, match="2 images"):
        evaluate_voc([det, det], [gt])
    with pytest.raises(ValueError, match="detections\\[0\\]"):
        evaluate_voc([(det[0], det[1], np.array([0.9, 0.8]))], [gt])


# --- against a naive reference ------------------------------------------------------------------

def naive_voc(images, num_classes, iou_threshold, use_07):
    """py-faster-rcnn's voc_eval written with plain Python loops: a global score-sorted pass
    over each class with per-detection IoU. evaluate_voc instead matches per image first
    (as ChainerCV's eval_detection_voc does) and sorts afterwards; the two must agree."""
    aps = []
    for c in range(1, num_classes + 1):
        dets, npos, detected = [], 0, {}
        for i, ((boxes, labels, scores), (gboxes, glabels, gdiff)) in enumerate(images):
            dets += [(float(s), i, list(b)) for b, l, s in zip(boxes, labels, scores) if l == c]
            npos += sum(1 for l, d in zip(glabels, gdiff) if l == c and not d)
            detected[i] = [False] * len(glabels)
        dets.sort(key=lambda t: -t[0])
        flags = []
        for _, i, bb in dets:
            gboxes, glabels, gdiff = images[i][1]
            best, jbest = -1.0, -1
            for j, (g, l) in enumerate(zip(gboxes, glabels)):
                if l != c:
                    continue
                iw = max(min(g[2], bb[2]) - max(g[0], bb[0]) + 1, 0)
                ih = max(min(g[3], bb[3]) - max(g[1], bb[1]) + 1, 0)
                inter = iw * ih
                union = (g[2] - g[0] + 1) * (g[3] - g[1] + 1) + (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) - inter
                if inter / union > best:
                    best, jbest = inter / union, j
            if best > iou_threshold:
                if gdiff[jbest]:
                    continue
                flags.append(0 if detected[i][jbest] else 1)
                detected[i][jbest] = True
            else:
                flags.append(0)
        if npos == 0:
            aps.append(float("nan"))
            continue
        tp = np.cumsum(flags) if flags else np.zeros(0)
        prec = tp / np.arange(1, len(flags) + 1)
        rec = tp / npos
        if use_07:
            ap = sum(max([p for p, r in zip(prec, rec) if r >= t], default=0.0)
                     for t in np.arange(0.0, 1.1, 0.1)) / 11
        else:   # area: each recall step times the best precision at that recall or beyond
            ap, last = 0.0, 0.0
            for r in sorted(set(rec)):
                ap += (r - last) * max(p for p, rr in zip(prec, rec) if rr >= r)
                last = r
        aps.append(ap)
    return np.array(aps)


def random_images(seed, num_images=6, num_classes=3):
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(num_images):
        g = rng.integers(0, 5)
        xy = rng.uniform(0, 80, (g, 2))
        gboxes = np.concatenate([xy, xy + rng.uniform(5, 40, (g, 2))], axis=1)
        glabels = rng.integers(1, num_classes + 1, g)
        gdiff = rng.random(g) < 0.2
        # Detections: jittered copies of the objects (some good, some poor) and random boxes.
        near = gboxes[rng.integers(0, g, 2 * g)] + rng.normal(0, 4, (2 * g, 4)) if g else np.zeros((0, 4))
        near_labels = glabels[rng.integers(0, g, 2 * g)] if g else np.zeros(0, dtype=np.int64)
        k = rng.integers(0, 4)
        xy = rng.uniform(0, 80, (k, 2))
        far = np.concatenate([xy, xy + rng.uniform(5, 40, (k, 2))], axis=1)
        boxes = np.concatenate([near, far])
        labels = np.concatenate([near_labels, rng.integers(1, num_classes + 1, k)]).astype(np.int64)
        images.append(((boxes, labels, rng.random(len(boxes))), (gboxes, glabels, gdiff)))
    return images


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("use_07", [True, False])
def test_matches_naive_reference(seed, use_07):
    images = random_images(seed)
    result = evaluate(images, num_classes=3, use_07_metric=use_07)
    np.testing.assert_allclose(result["ap"], naive_voc(images, 3, 0.5, use_07), rtol=1e-12)


# --- reporting ------------------------------------------------------------------------------------

def test_format_ap_table():
    result = evaluate([image([BOX, ELSEWHERE], [1, 2], [0.9, 0.8], [BOX], [1])], num_classes=2)
    table = format_ap_table(result, ["bus", "car"])
    lines = table.splitlines()
    assert lines[0].split() == ["class", "AP", "#gt"]
    assert lines[1].split() == ["bus", "1.0000", "1"]
    assert lines[2].split() == ["car", "n/a", "0"]
    assert lines[-1].startswith("mAP") and "1.0000" in lines[-1] and "11-point" in lines[-1]
    assert format_ap_table(result, ["background", "bus", "car"]) == table
    with pytest.raises(ValueError, match="class_names has 1 names"):
        format_ap_table(result, ["bus"])


def test_plot_pr_curves():
    import matplotlib.pyplot as plt

    images = random_images(0)
    result = evaluate(images, num_classes=3)
    ax = plot_pr_curves(result, ["a", "b", "c"])
    assert ax.get_xlabel() == "recall" and ax.get_ylabel() == "precision"
    assert "mAP" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    drawn = [n for n, ap, r in zip("abc", result["ap"], result["recall"]) if np.isfinite(ap) and len(r)]
    assert [t.split()[0] for t in labels] == drawn and len(drawn) > 0
    plt.close(ax.figure)


def test_judge_image_gives_evaluate_voc_s_verdicts():
    from minissd.evaluation.metrics import FALSE_POSITIVE, IGNORED, TRUE_POSITIVE, judge_image

    gt_boxes = np.array([[0, 0, 9, 9], [20, 20, 39, 39], [50, 50, 59, 59], [0, 20, 9, 29]], float)
    gt_labels = np.array([1, 1, 2, 2])
    difficult = np.array([False, False, True, False])
    boxes = np.array([[0, 0, 9, 9],        # on gt 0: TP
                      [1, 0, 9, 9],        # on gt 0 again, lower score: a duplicate, FP
                      [20, 20, 39, 39],    # on gt 1 but the wrong class: FP
                      [50, 50, 59, 59],    # on the difficult gt 2: ignored
                      [70, 70, 79, 79]],   # on nothing: FP
                     float)
    labels = np.array([1, 1, 2, 2, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    outcome, found = judge_image(boxes, labels, scores, gt_boxes, gt_labels, difficult)
    assert outcome.tolist() == [TRUE_POSITIVE, FALSE_POSITIVE, FALSE_POSITIVE, IGNORED, FALSE_POSITIVE]
    assert found.tolist() == [True, False, False, False]
    # the duplicate scoring higher takes the object instead
    outcome, _ = judge_image(boxes[:2], labels[:2], [0.8, 0.9], gt_boxes, gt_labels, difficult)
    assert outcome.tolist() == [FALSE_POSITIVE, TRUE_POSITIVE]
    # the same verdicts as evaluate_voc: its true positives are judge_image's
    result = evaluate_voc([(boxes, labels, scores)], [(gt_boxes, gt_labels, difficult)], num_classes=2,
                          use_07_metric=False)
    assert result["ap"][0] == pytest.approx(0.5)     # class 1: one TP first, 1 of 2 objects found
    with pytest.raises(ValueError, match="2 boxes, 2 labels and 1 scores"):
        judge_image(boxes[:2], labels[:2], [0.5], gt_boxes, gt_labels)
    with pytest.raises(ValueError, match="4 gt_boxes, 3 gt_labels"):
        judge_image(boxes, labels, scores, gt_boxes, gt_labels[:3])


def test_recall_by_height_groups_the_objects_and_finds_their_best_detection():
    from minissd.evaluation.metrics import recall_by_height
    person, car = 1, 2
    truths = [(np.array([[0, 0, 9, 9], [0, 20, 9, 69], [50, 0, 59, 99]], float),   # 0.1, 0.5, 1.0 tall
               np.array([person, person, car]))]
    detections = [(np.array([[0, 0, 9, 9], [0, 0, 9, 9], [0, 20, 9, 69], [50, 0, 59, 99]], float),
                   np.array([person, person, car, person]), np.array([0.3, 0.6, 0.9, 0.2]))]
    rows = recall_by_height(detections, truths, [100], person, bins=(0, 0.2, 0.7))
    assert [(r["low"], r["objects"]) for r in rows] == [(0, 1), (0.2, 1), (0.7, 0)]
    assert rows[0]["covered"] == 1.0 and rows[0]["median_score"] == 0.6   # the best of two
    assert rows[1]["covered"] == 0.0 and rows[1]["median_score"] == 0.0   # only a car sits on it
    assert np.isnan(rows[2]["covered"])                                    # the car is not counted
    assert recall_by_height(detections, truths, [100], car, bins=(0,))[0]["covered"] == 0.0
    with pytest.raises(ValueError, match="image_heights has 2 entries but ground_truths has 1"):
        recall_by_height(detections, truths, [100, 200], person)
    with pytest.raises(ValueError, match=r"detections\[0\]: boxes"):     # the metric's own checks
        recall_by_height([(detections[0][0][:2],) + detections[0][1:]], truths, [100], person)


def test_ap_by_height_ignores_the_shorter_objects_as_difficult_ones():
    from minissd.evaluation.metrics import ap_by_height, evaluate_voc, format_ap_by_height
    person, car = 1, 2
    truths = [(np.array([[0, 0, 9, 59],          # A: a person 0.6 of the photo tall
                         [20, 80, 29, 84],       # B: a person 0.05 tall
                         [40, 0, 49, 49],        # C: a person 0.5 tall, flagged difficult
                         [60, 90, 69, 94]], float),   # a car 0.05 tall
               np.array([person, person, person, car]), np.array([False, False, True, False]))]
    detections = [(np.array([[40, 0, 49, 49], [20, 80, 29, 84], [70, 0, 79, 40], [0, 0, 9, 59]], float),
                   np.array([person] * 4), np.array([0.95, 0.9, 0.8, 0.7]))]
    (low0, every), (low2, tall) = ap_by_height(detections, truths, [100], lows=(0, 0.2))
    assert (low0, low2) == (0, 0.2)
    # every object: C ignored; B right, a false one, A right -> precision 1 up to recall 1/2,
    # 2/3 after it: VOC07's 11 points, 6 at 1 and 5 at 2/3
    assert every["ap"][0] == pytest.approx((6 + 5 * 2 / 3) / 11, abs=1e-12)
    np.testing.assert_array_equal(every["ap"], evaluate_voc(detections, truths)["ap"])
    # at least 0.2 tall: B ignored too -> a false one, then A: precision 1/2 at every point
    assert tall["ap"][0] == pytest.approx(0.5, abs=1e-12)
    np.testing.assert_array_equal(tall["num_positives"], [1, 0])
    assert np.isnan(tall["ap"][1]) and tall["map"] == tall["ap"][0]   # no car that tall
    table = format_ap_by_height([(low0, every), (low2, tall)], ["person", "car"])
    assert table.splitlines()[0].split() == ["class", "all", ">=", "0.2", "tall"]
    assert table.splitlines()[1].split() == ["person", "0.8485", "(", "2)", "0.5000", "(", "1)"]
    assert table.splitlines()[2].split() == ["car", "0.0000", "(", "1)", "-", "(", "0)"]
    with pytest.raises(ValueError, match="image_heights has 2 entries but ground_truths has 1"):
        ap_by_height(detections, truths, [100, 200])


# ---------------------------------------------------------------- error kinds (Hoiem et al.)
def _kinds_scene():
    """Two people, a car and a difficult person; one detection of each kind, scores 0.9 .. 0.4."""
    person, car = 1, 2
    truths = [(np.array([[0, 0, 9, 19], [30, 0, 39, 19], [60, 60, 79, 79], [90, 0, 99, 19]], float),
               np.array([person, person, car, person]), np.array([False, False, False, True]))]
    detections = [(np.array([[0, 0, 9, 19],          # correct
                             [0, 0, 9, 18],          # duplicate of the first person
                             [33, 0, 44, 19],        # the second person, IoU 0.47: localisation
                             [61, 61, 79, 79],       # on the car: confusion
                             [90, 0, 99, 19],        # on the difficult person: ignored
                             [100, 100, 120, 120]],  # nothing there: background
                            float),
                   np.full(6, person), np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]))]
    return detections, truths, person


def test_error_kinds_names_each_detection_and_drops_the_ignored():
    from minissd.evaluation.metrics import ERROR_KINDS, error_kinds
    detections, truths, person = _kinds_scene()
    scores, kinds, n = error_kinds(detections, truths, person)
    assert n == 2                                                   # the difficult one not counted
    np.testing.assert_array_equal(scores, [0.9, 0.8, 0.7, 0.6, 0.4])
    assert [ERROR_KINDS[k] for k in kinds] == ["correct", "duplicate", "localisation",
                                               "confusion", "background"]
    # near_iou decides localisation against background: at 0.5 the 0.47 box is neither
    _, kinds, _ = error_kinds(detections, truths, person, near_iou=0.5)
    assert ERROR_KINDS[kinds[2]] == "background"


def test_error_kinds_agree_with_evaluate_voc_on_random_scenes(rng):
    """The correct ones, counted down the list, are evaluate_voc's true positives, rank by rank."""
    from minissd.evaluation.metrics import error_kinds
    detections, truths = [], []
    for _ in range(6):
        g = rng.integers(0, 6)
        xy = rng.uniform(0, 80, (g, 2))
        gt = np.concatenate([xy, xy + rng.uniform(5, 40, (g, 2))], axis=1)
        d = rng.integers(0, 15)
        pick = rng.integers(0, max(g, 1), d)
        base = gt[pick] if g else rng.uniform(0, 80, (d, 4))
        boxes = np.sort((base + rng.normal(0, 4, (d, 4))).reshape(d, 2, 2), axis=1).reshape(d, 4)
        truths.append((gt, rng.integers(1, 3, g), rng.random(g) < 0.2))
        detections.append((boxes, rng.integers(1, 3, d), rng.random(d).round(1)))    # ties too
    result = evaluate_voc(detections, truths, num_classes=2)
    assert (result["num_positives"] > 0).all()
    for c in (1, 2):
        _, kinds, n = error_kinds(detections, truths, c)
        assert n == result["num_positives"][c - 1]
        np.testing.assert_array_equal(np.cumsum(kinds == 0) / n, result["recall"][c - 1])


def test_error_breakdown_shares_and_the_printed_table():
    from minissd.evaluation.metrics import error_breakdown, error_kinds, format_error_breakdown
    detections, truths, person = _kinds_scene()
    _, kinds, n = error_kinds(detections, truths, person)
    rows = error_breakdown(kinds, n, tops=(0.5, 1, 4))
    assert [r["top"] for r in rows] == [1, 2, 5]                     # 4 x 2 = 8, but only 5 exist
    np.testing.assert_allclose(rows[1]["share"], [0.5, 0.5, 0, 0, 0])
    np.testing.assert_allclose(rows[2]["share"], [0.2] * 5)
    table = format_error_breakdown(detections, truths, ["person", "car"])
    assert "localisation" in table.splitlines()[0]
    assert "car      no detections (1 objects)" in table
