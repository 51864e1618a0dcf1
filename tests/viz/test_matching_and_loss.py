"""The pictures of matching and the loss: IoU, heat maps, positives, the encoding, the losses."""
import numpy as np
import pytest

from minissd import viz

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


@pytest.mark.parametrize("a, b, inter, union", [
    ([10, 20, 50, 60], [15, 20, 55, 60], 1400, 1800),       # 35 x 40 shared, 40 x 40 each
    ([60, 40, 100, 100], [60, 50, 90, 80], 900, 2400),      # one inside the other
    ([0, 0, 10, 10], [20, 20, 30, 30], 0, 200),             # apart: no intersection drawn
])
def test_draw_iou_shades_intersection_and_union_and_titles_the_value(a, b, inter, union):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    value = viz.draw_iou(ax, np.array(a, float), np.array(b, float), names=("d", "g"))
    assert value == pytest.approx(inter / union, abs=1e-12)
    assert ax.get_title() == f"IoU(d, g) = {inter:.4g} / {union:.4g} = {inter / union:.3f}"
    filled = [p for p in ax.patches if p.get_fill()]
    assert len(filled) == 2 + (inter > 0)                   # union: both boxes; intersection if any
    if inter:
        dark = filled[-1]
        assert dark.get_width() * dark.get_height() == pytest.approx(inter)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"d ∩ g: {inter:.4g}", f"d ∪ g: {union:.4g}"]
    fig.canvas.draw()
    plt.close(fig)


def test_draw_encoding_returns_and_writes_the_offsets_of_encode():
    import matplotlib.pyplot as plt
    from minissd.ssd.boxes import encode

    prior = np.array([0.8, 0.7, 0.4, 0.6])                  # cx, cy, w, h
    box = np.array([0.6, 0.5, 0.9, 0.8])                    # cx 0.75, cy 0.65, w = h = 0.3
    fig, ax = plt.subplots()
    t = viz.draw_encoding(ax, prior, box)
    expected = [(0.75 - 0.8) / (0.1 * 0.4), (0.65 - 0.7) / (0.1 * 0.6),
                np.log(0.3 / 0.4) / 0.2, np.log(0.3 / 0.6) / 0.2]
    np.testing.assert_allclose(t, expected, rtol=1e-12)
    np.testing.assert_allclose(t, encode(box[None], prior[None])[0], rtol=1e-12)
    text = "\n".join(t_.get_text() for t_ in ax.texts)
    for value in expected:
        assert f"{value:+.3f}" in text
    assert "(-0.125, -0.083, -0.288, -0.693)" in text          # the same offsets, variances (1, 1)
    t1 = viz.draw_encoding(ax, prior, box, variances=(1.0, 1.0))
    np.testing.assert_allclose(t1, [-0.125, -0.05 / 0.6, np.log(0.75), np.log(0.5)], rtol=1e-12)
    fig.canvas.draw()
    plt.close(fig)


def test_draw_loss_balance_colours_the_three_groups_and_marks_the_quota():
    import matplotlib.pyplot as plt

    ce = np.array([0.5, 2.5, 1.0, 1.5, 0.2, 1.9])
    positive = np.array([False, False, False, True, False, False])
    negative = np.array([False, True, False, False, False, True])   # the 2 hardest of 5 negatives
    fig, ax = plt.subplots()
    assert viz.draw_loss_balance(ax, ce, positive, negative, neg_pos_ratio=2) is ax   # as documented
    by_label = {c.get_label().split(":")[0]: c.get_offsets() for c in ax.collections}
    assert set(by_label) == {"ignored negatives", "mined negatives", "positives"}
    np.testing.assert_array_equal(by_label["mined negatives"], [[1, 2.5], [2, 1.9]])   # (rank, CE)
    np.testing.assert_array_equal(by_label["positives"], [[3, 1.5]])
    np.testing.assert_array_equal(by_label["ignored negatives"], [[5, 0.5], [4, 1.0], [6, 0.2]])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "positives: 1 box, Σ CE = 1.5" in labels
    assert "ignored negatives: 3 boxes, Σ CE = 1.7  (not in the loss)" in labels
    assert "2:1 quota: min(2·1, negatives) = 2" in labels
    assert ax.lines[0].get_xdata()[0] == 2.5                  # the quota line after the last mined
    assert ax.get_title() == "Loss balance: 1 positive, 2 mined, 3 ignored"
    viz.draw_loss_balance(ax, ce, positive, negative, neg_pos_ratio=2, names=[f"d{i}" for i in range(6)])
    assert [(t.get_text(), t.xy) for t in ax.texts][:2] == [("d0", (5, 0.5)), ("d1", (1, 2.5))]
    with pytest.raises(ValueError, match="5 names for 6 boxes"):
        viz.draw_loss_balance(ax, ce, positive, negative, names=["d"] * 5)
    with pytest.raises(ValueError, match="same length, got 6, 5, 6"):
        viz.draw_loss_balance(ax, ce, positive[:5], negative)
    with pytest.raises(ValueError, match="both positive and a mined negative"):
        viz.draw_loss_balance(ax, ce, positive, positive)
    plt.close(fig)


def test_plot_regression_losses_draws_each_function_and_the_library_s_points():
    import matplotlib.pyplot as plt

    x = np.linspace(-2, 2, 5)
    fig = viz.plot_regression_losses(x, {"L1": (np.abs(x), np.sign(x))},
                                     checks=(x, np.abs(x), np.sign(x)))
    loss, grad = fig.axes
    np.testing.assert_array_equal(loss.lines[0].get_ydata(), np.abs(x))
    np.testing.assert_array_equal(grad.lines[0].get_ydata(), np.sign(x))
    assert [l.get_label() for l in loss.lines] == ["L1", "MultiBoxLoss.loss_loc"]
    assert [l.get_label() for l in grad.lines] == ["L1", "MultiBoxLoss.backward"]
    plt.close(fig)


def test_draw_iou_heatmaps_shows_each_cell_s_best_iou_at_its_pixels():
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from minissd.ssd.config import get_config
    from minissd.ssd.priors import default_boxes

    cfg = get_config("ssd-tiny")
    priors = default_boxes(cfg, dtype="float64")                       # (P, 4) cx, cy, w, h
    rng = np.random.default_rng(0)
    best = rng.uniform(0, 0.7, len(priors))
    gt = np.array([[0.1, 0.2, 0.5, 0.9], [0.6, 0.1, 0.95, 0.4]])
    image = np.zeros((cfg.image_size, cfg.image_size, 3), np.uint8)
    axes = viz.draw_iou_heatmaps(image, best, cfg, gt, np.array([1, 2]), ["a", "b"], threshold=0.6)
    start = 0
    for k, (f, step) in enumerate(zip(cfg.feature_maps, cfg.steps)):
        n = cfg.boxes_per_map[k]
        centres = priors[start:start + n, :2] * cfg.image_size           # the map's box centres
        cells = (centres // step).astype(int)                            # (n, 2) column, row
        heat = np.zeros((f, f))
        for (j, i), v in zip(cells, best[start:start + n]):             # by hand, box by box
            heat[i, j] = max(heat[i, j], v)
        ax = axes[1 + k]
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), heat)
        assert ax.images[0].get_extent() == [0, f * step, f * step, 0]
        white = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_edgecolor()[:3] == (1, 1, 1)]
        assert len(white) == (heat >= 0.6).sum()
        assert f"max IoU {heat.max():.2f}" in ax.get_title()
        start += n
    assert len(axes[0].patches) == 2 and not axes[-1].axison
    plt.close(axes[0].figure)


def test_draw_iou_heatmaps_names_the_config_when_the_counts_differ():
    from minissd.ssd.config import get_config

    with pytest.raises(ValueError, match="'ssd-tiny' has 1524 default boxes"):
        viz.draw_iou_heatmaps(np.zeros((128, 128, 3)), np.zeros(100), get_config("ssd-tiny"),
                              np.zeros((0, 4)), np.zeros(0, int))
    with pytest.raises(ValueError, match="2 map_names for the 5 maps of config 'ssd-tiny'"):
        viz.draw_iou_heatmaps(np.zeros((128, 128, 3)), np.zeros(1524), get_config("ssd-tiny"),
                              np.zeros((0, 4)), np.zeros(0, int), map_names=["a", "b"])


def test_plot_positives_by_threshold_draws_each_object_their_sum_and_the_total():
    import matplotlib.pyplot as plt

    thresholds = np.array([0.3, 0.5, 0.7])
    per_object = np.array([[9, 4], [5, 2], [1, 1]])
    ax = viz.plot_positives_by_threshold(thresholds, per_object, [30, 12, 4], ["car", "bus"], [1, 2],
                                         image_name="000058", total_label="all eight images")
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    np.testing.assert_array_equal(lines["000058: car 0"], [9, 5, 1])
    np.testing.assert_array_equal(lines["000058: bus 1"], [4, 2, 1])
    np.testing.assert_array_equal(lines["000058: all objects"], [13, 7, 2])
    np.testing.assert_array_equal(lines["all eight images"], [30, 12, 4])
    assert ax.get_yscale() == "log" and "SSD's τ = 0.5" in lines
    with pytest.raises(ValueError, match="total has 2 values for 3 thresholds"):
        viz.plot_positives_by_threshold(thresholds, per_object, [1, 2])
    with pytest.raises(ValueError, match="1 object_names for 2 objects"):
        viz.plot_positives_by_threshold(thresholds, per_object, [1, 2, 3], ["car"])
    plt.close("all")


def test_plot_target_histograms_counts_every_target_clipped_into_the_end_bins():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(1)
    targets = rng.normal(0, 2, (500, 4))
    axes = viz.plot_target_histograms(targets, clip=4.0, bins=33)
    for c, ax in enumerate(axes):
        heights = np.array([p.get_height() for p in ax.patches if p.get_width() < 1])   # the bars
        assert heights.sum() == 500
        assert heights[-1] == (targets[:, c] >= 4.0 - 8 / 32).sum()     # the last bin holds |t| > 4
        assert f"std {targets[:, c].std():.2f}" in ax.get_title()
    with pytest.raises(ValueError, match=r"must be \(N, 4\), got \(3, 2\)"):
        viz.plot_target_histograms(np.zeros((3, 2)))
    plt.close("all")


def test_plot_target_histograms_overlays_several_encodings_each_with_its_label_and_std():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 2, (300, 4)), rng.normal(0, 0.3, (300, 4))
    axes = viz.plot_target_histograms({"(0.1, 0.2)": a, "(1, 1)": b})
    for c, ax in enumerate(axes):
        bars = [p for p in ax.patches if p.get_width() < 1]
        assert len(bars) == 2 * 32 and sum(p.get_height() for p in bars) == 600
        assert ax.get_title().endswith(f"std {a[:, c].std():.2f}, {b[:, c].std():.2f}")
    labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert labels[:2] == ["(0.1, 0.2)", "(1, 1)"]
    with pytest.raises(ValueError, match=r"targets '\(1, 1\)' must be \(N, 4\)"):
        viz.plot_target_histograms({"(1, 1)": np.zeros(4)})
    plt.close("all")
