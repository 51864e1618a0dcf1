"""NMS step by step, detections judged against the truth, AP by hand."""
import numpy as np
import pytest

from minissd import viz

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def test_show_judged_colours_each_verdict_and_draws_the_truth():
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    fig, ax = plt.subplots()
    gt_boxes, gt_labels = np.array([[0, 0, 19, 19], [40, 40, 59, 59]], float), np.array([1, 2])
    boxes = np.array([[1, 0, 19, 19], [60, 0, 79, 19]], float)        # on gt 0; on nothing
    outcome, found = viz.show_judged(ax, np.zeros((80, 80, 3), np.uint8), boxes, [1, 1], [0.9, 0.8],
                                     gt_boxes, gt_labels, class_names=("cat", "dog"), title="t")
    assert outcome.tolist() == [1, 0] and found.tolist() == [True, False]
    colours = [p.get_edgecolor() for p in ax.patches]                 # truth first, then detections
    want = ["ground truth", "missed", "false positive", "true positive"]   # best detection drawn last
    assert colours == [to_rgba(viz.JUDGED_COLOURS[k]) for k in want]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["missed dog", "cat 0.80", "cat 0.90"]
    right = [t for t in ax.texts if t.get_text() == "cat 0.80"][0]     # near the right edge:
    assert right.get_ha() == "right" and right.get_position()[0] <= 79     # anchored inside
    assert ax.get_xlim() == (-0.5, 79.5) and ax.get_title() == "t"
    legend = viz.judged_legend(fig)
    assert [t.get_text() for t in legend.get_texts()] == list(viz.JUDGED_COLOURS)
    plt.close(fig)


def test_judged_legend_fills_an_empty_axes():
    import matplotlib.pyplot as plt

    fig, (ax, spare) = plt.subplots(1, 2)
    legend = viz.judged_legend(spare)
    assert legend.axes is spare and not spare.axison and len(legend.get_texts()) == len(viz.JUDGED_COLOURS)
    plt.close(fig)


def test_draw_nms_steps_shows_the_kept_and_suppressed_boxes_of_each_step():
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle

    image = np.full((50, 100, 3), 200, np.uint8)
    boxes = np.array([[0.1, 0.1, 0.4, 0.5], [0.12, 0.1, 0.42, 0.5], [0.6, 0.5, 0.9, 0.9]])
    scores = np.array([0.9, 0.8, 0.7])
    steps, keep = [(0, [1]), (2, [])], [0, 2]                 # as NMS by hand returns them
    fig = viz.draw_nms_steps(image, boxes, scores, steps, keep, gt_boxes=[[10, 5, 40, 25]],
                             class_name="circle", shown_above=0.1)
    axes = fig.axes[:4]                                       # the fifth is the colour bar
    rects = [[p for p in ax.patches if isinstance(p, Rectangle)] for ax in axes]
    assert len(rects[0]) == 3                                 # every candidate
    first = {tuple(np.round(p.get_xy(), 6)): (p.get_edgecolor(), p.get_linestyle()) for p in rects[1]}
    assert first[(10.0, 5.0)][0] == to_rgba("lime")           # step 1 keeps box 0 (x0 0.1 * 100)
    assert first[(12.0, 5.0)] == (to_rgba("tab:red"), "--")   # and drops box 1, dashed red
    assert first[(60.0, 25.0)][0] == to_rgba("0.35")          # box 2 still waits, grey
    assert [tuple(p.get_xy()) for p in rects[2]] == [(60.0, 25.0)]   # step 2: only box 2 is left
    kept = [p for p in rects[3] if p.get_edgecolor() == to_rgba("lime")]
    truth = [p for p in rects[3] if p.get_linestyle() == ":"]
    assert len(kept) == 2 and [tuple(p.get_xy()) for p in truth] == [(10.0, 5.0)]
    assert "3 'circle' boxes" in axes[0].get_title() and "drop 1" in axes[1].get_title()
    assert "after NMS: 2 boxes" in axes[3].get_title()
    plt.close(fig)


def test_draw_ap_by_hand_shows_the_envelope_and_the_11_point_levels_with_voc_ap_s_values():
    import matplotlib.pyplot as plt

    from minissd.evaluation.metrics import voc_ap

    # chapter 10's example: TP, TP, FP (duplicate), FP, TP, FP over 4 ground truths
    hits = np.array([1, 1, 0, 0, 1, 0])
    recall, precision = np.cumsum(hits) / 4, np.cumsum(hits) / np.arange(1, 7)
    names = [f"d{k}" for k in range(1, 7)]
    ax = viz.draw_ap_by_hand(recall, precision, names, num_gt=4)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"AP_all = {voc_ap(recall, precision, False):.3f}" in labels[0]
    assert labels[0].endswith("0.650") and labels[2].endswith("AP11 = 0.655")   # 7.2 / 11
    dashes = ax.get_lines()[1]
    np.testing.assert_allclose(dashes.get_ydata(), [1] * 6 + [0.6] * 2 + [0] * 3)
    assert [t.get_text() for t in ax.texts] == names
    assert ax.get_xlabel() == "recall (TP / 4 ground truths)"
    with pytest.raises(ValueError, match="recall has 6 values, precision 5"):
        viz.draw_ap_by_hand(recall, precision[:5])
    plt.close("all")
