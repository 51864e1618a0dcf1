"""Drawing helpers: colours per class, captions, denormalize inverts the pipeline's last steps."""
import numpy as np
import pytest
from PIL import Image

from minissd import viz
from minissd.datasets.augment import Normalize, ToCHW

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def test_denormalize_inverts_normalize_and_chw():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 9, 3)).astype(np.uint8)
    chw = ToCHW()(*Normalize()(image.astype(np.float32), np.zeros((0, 4)), None))[0]
    np.testing.assert_array_equal(viz.denormalize(chw), image)
    custom = ToCHW()(*Normalize((1, 2, 3), (4, 5, 6))(image.astype(np.float32), None, None))[0]
    np.testing.assert_array_equal(viz.denormalize(custom, (1, 2, 3), (4, 5, 6)), image)
    with pytest.raises(ValueError, match=r"\(3, H, W\) image, got shape \(12, 9, 3\)"):
        viz.denormalize(image)


CAPTIONS = [
    (dict(label=3, score=0.8712, class_names=("bus", "car", "cat")), "cat 0.87"),
    (dict(label=1, class_names=("bus", "car", "cat")), "bus"),
    (dict(label=2, score=0.5), "2 0.50"),
    (dict(label=9, class_names=("bus",)), "9"),               # out of range: the number
    (dict(score=0.25), "0.25"),
    (dict(), ""),
]


@pytest.mark.parametrize("kwargs, caption", CAPTIONS)
def test_box_caption(kwargs, caption):
    assert viz.box_caption(**kwargs) == caption


def test_draw_boxes_outlines_each_box_in_its_class_colour():
    image = np.full((60, 80, 3), 255, np.uint8)
    boxes = np.array([[10, 30, 40, 55], [45, 20, 75, 50]], np.float32)
    picture = viz.draw_boxes(image, boxes, labels=[1, 2], scores=[0.9, 0.4], class_names=("cat", "dog"))
    assert isinstance(picture, Image.Image) and picture.size == (80, 60)
    pixels = np.asarray(picture)
    assert tuple(pixels[42, 10]) == viz.class_color(1)       # left edge of box 1
    assert tuple(pixels[35, 75]) == viz.class_color(2)       # right edge of box 2
    assert viz.class_color(1) != viz.class_color(2)
    caption_tab = pixels[18:30, 11:40]                        # above box 1: coloured tab, white text
    assert (caption_tab == 255).all(axis=-1).any() and (caption_tab == viz.class_color(1)).all(axis=-1).any()
    assert (image == 255).all()                               # the input is not drawn on
    plain = np.asarray(viz.draw_boxes(Image.fromarray(image), boxes))   # no labels: no captions
    assert (plain[10:25, 11:40] == 255).all()


def test_draw_boxes_keeps_a_caption_near_the_right_edge_inside_the_picture():
    image = np.zeros((60, 100, 3), np.uint8)
    picture = np.asarray(viz.draw_boxes(image, [[90, 30, 99, 50]], [1], [0.5], class_names=["cat"]))
    tab = np.all(picture == viz.class_color(1), axis=2)                  # the filled caption tab
    columns = np.flatnonzero(tab[18:26].any(axis=0))                      # rows above the box: the tab
    assert 0 < columns.min() < 90 and columns.max() == 99                # moved left, not cut off


def test_draw_boxes_checks_lengths():
    with pytest.raises(ValueError, match="scores has 1 entries but there are 2 boxes"):
        viz.draw_boxes(np.zeros((10, 10, 3), np.uint8), np.zeros((2, 4)), labels=[1, 1], scores=[0.5])


def test_show_detections_adds_a_rectangle_and_caption_per_box():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    viz.show_detections(ax, np.zeros((50, 60, 3), np.uint8), np.array([[5, 5, 20, 30], [30, 10, 55, 45]]),
                        labels=np.array([2, 1]), scores=np.array([0.9, 0.3]), class_names=("cat", "dog"),
                        title="two")
    assert len(ax.patches) == 2 and [t.get_text() for t in ax.texts] == ["dog 0.90", "cat 0.30"]
    assert ax.get_title() == "two"
    plt.close(fig)


def test_save_grid_pastes_pictures_row_by_row(tmp_path):
    pictures = [Image.new("RGB", (20, 10), (k * 40, 0, 0)) for k in range(5)] + [np.zeros((12, 8, 3), np.uint8)]
    grid = viz.save_grid(pictures, tmp_path / "grid.png", columns=4, pad=2)
    assert grid.size == (4 * 22 + 2, 2 * 14 + 2) and Image.open(tmp_path / "grid.png").size == grid.size
    pixels = np.asarray(grid)
    assert tuple(pixels[2, 2 + 22 * 3]) == (120, 0, 0)        # fourth picture, first row
    assert tuple(pixels[16, 2]) == (160, 0, 0)               # fifth picture starts row two
    with pytest.raises(ValueError, match="no pictures"):
        viz.make_grid([])


def _texts(ax):
    return [t.get_text() for t in ax.texts] + [ax.get_title()]


@pytest.mark.parametrize("name, classes, sources, total", [
    ("ssd300", 20, ("38x38x512", "19x19x1024", "10x10x512", "5x5x256", "3x3x256", "1x1x256"), 8732),
    ("ssd512", 20, ("64x64x512", "32x32x1024", "16x16x512", "8x8x256", "4x4x256", "2x2x256",
                    "1x1x256"), 24564),
    ("ssd-tiny", 3, ("16x16x128", "8x8x256", "4x4x128", "2x2x128", "1x1x128"), 1524),
])
def test_draw_architecture_labels_the_source_maps_and_the_total(name, classes, sources, total):
    import matplotlib.pyplot as plt
    from minissd.ssd.config import get_config
    from minissd.ssd.model import SSD

    model = SSD(get_config(name), classes)
    ax = viz.draw_architecture(model)
    text = "\n".join(_texts(ax))
    for shape in sources:
        assert shape in text, f"{name}: source map {shape} not labelled"
    assert str(total) in text and f"4 + {classes + 1}" in text
    # one head box per source map, labelled with its boxes per cell and its box count
    cfg = model.cfg
    for f, k in zip(cfg.feature_maps, cfg.num_boxes_per_location):
        assert f"{k} x (4+{classes + 1})\n{f * f * k} boxes" in text
    ax.figure.canvas.draw()                          # renders on Agg without an error
    plt.close(ax.figure)


def test_draw_architecture_highlights_only_the_named_part():
    import matplotlib.pyplot as plt
    from minissd.ssd.config import get_config
    from minissd.ssd.model import SSD

    model = SSD(get_config("ssd-tiny"), 3)
    fig, ax = plt.subplots(figsize=(8, 4))
    assert viz.draw_architecture(model, highlight="matching", ax=ax) is ax
    bold = [t.get_text() for t in ax.texts if t.get_fontweight() == "bold"]
    assert any(t.startswith("matching") for t in bold)
    assert not any("MultiBox loss" in t for t in bold)
    with pytest.raises(ValueError, match=r"unknown part\(s\) \['backbone'\]"):
        viz.draw_architecture(model, highlight=("base", "backbone"))
    plt.close("all")


def test_add_boxes_outlines_and_names_each_box():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    boxes = np.array([[0.1, 0.2, 0.4, 0.6], [0.5, 0.5, 0.9, 0.8]])
    assert viz.add_boxes(ax, boxes, viz.class_color(2), names=["d0", "d1"], linestyle="--",
                         label="prior") is ax
    assert [p.get_xy() for p in ax.patches] == [(0.1, 0.2), (0.5, 0.5)]
    assert np.allclose([p.get_width() for p in ax.patches], [0.3, 0.4])
    assert np.allclose(ax.patches[0].get_edgecolor()[:3], np.array(viz.class_color(2)) / 255)
    assert [t.get_text() for t in ax.texts] == [" d0", " d1"]
    assert [p.get_label() for p in ax.patches][0] == "prior"               # one legend entry per set
    with pytest.raises(ValueError, match="names has 1 entries but there are 2 boxes"):
        viz.add_boxes(ax, boxes, "red", names=["d0"])
    plt.close(fig)


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


def test_show_augmentation_steps_draws_each_step_with_its_size_and_boxes():
    import matplotlib.pyplot as plt

    from minissd.datasets import augment

    image = np.full((40, 60, 3), 90, np.float32)
    boxes, labels = np.array([[5, 5, 20, 30], [30, 10, 55, 35]], np.float32), np.array([1, 2])
    steps = augment.trace([augment.Expand(p=1.0), augment.Resize(50)], image, boxes, labels, seed=0)
    fig = viz.show_augmentation_steps(steps, class_names=("cat", "dog"), columns=2)
    axes = fig.axes
    assert len(axes) == 4 and not axes[3].axison                # 3 steps, the 4th panel blank
    h, w = steps[1][1].shape[:2]
    assert [ax.get_title() for ax in axes[:3]] == [
        "0. original\n60x40, 2 boxes", f"1. Expand\n{w}x{h}, 2 boxes", "2. Resize\n50x50, 2 boxes"]
    assert all(len(ax.patches) == 2 for ax in axes[:3])         # a rectangle per box
    x0, y0 = axes[1].patches[0].get_xy()
    np.testing.assert_allclose((x0, y0), steps[1][2][0, :2])    # drawn where the step put it
    assert fig.dpi >= 100
    plt.close(fig)
    with pytest.raises(ValueError, match="1 titles for 3 steps"):
        viz.show_augmentation_steps(steps, titles=["a"])


def test_show_augmented_draws_the_photo_and_one_panel_per_seed():
    import matplotlib.pyplot as plt

    from minissd.datasets.augment import flip_transform

    image = np.zeros((30, 40, 3), np.uint8)
    image[:, :20] = 200                                         # left half bright
    boxes, labels = np.array([[2, 2, 12, 20]], np.float32), np.array([1])
    axes = viz.show_augmented(image, boxes, labels, flip_transform(32), seeds=range(4))
    assert len(axes) == 5 and axes[0].get_title() == "photo 40x30"
    for ax, seed in zip(axes[1:], range(4)):                    # the flip's own draw decides
        shown = ax.images[0].get_array()
        flipped = shown[:, -1].mean() > shown[:, 0].mean()
        x0 = ax.patches[0].get_xy()[0]
        assert shown.shape == (32, 32, 3) and (x0 > 16) == flipped and ax.get_title() == f"seed {seed}"
    assert len({ax.patches[0].get_xy()[0] > 16 for ax in axes[1:]}) == 2    # both outcomes seen
    plt.close(axes[0].figure)
    with pytest.raises(ValueError, match="2 axes for the photo and 4 seeds"):
        viz.show_augmented(image, boxes, labels, flip_transform(32), range(4), axes=axes[:2])


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


def test_draw_conv_gemm_labels_the_block_shapes_and_marks_the_window_s_column():
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    fig = viz.draw_conv_gemm(batch=2, channels=3, size=6, out_channels=4, kernel=3, output=(1, 2, 0),
                             out_channel=2)
    ax_images, ax_gemm = fig.axes
    texts = " ".join(t.get_text() for t in ax_gemm.texts)
    assert "W  (K, C·kh·kw) = (4, 27)" in texts and "col  (C·kh·kw, N·Ho·Wo) = (27, 32)" in texts
    assert "Y  (K, N·Ho·Wo) = (4, 32)" in texts
    red = [p for p in ax_gemm.patches if p.get_facecolor()[:3] == to_rgba("#d62728")[:3]]
    # the column of output (n, i, j) = (1, 2, 0) is n*Ho*Wo + i*Wo + j = 16 + 8 = 24; W's row 2
    col_x0 = 27 + 3.0                                                   # col starts after W and a gap
    assert sorted((p.get_x(), p.get_width(), p.get_height()) for p in red) == sorted(
        [(col_x0 + 24, 1, 27), (col_x0 + 32 + 3.0 + 24, 1, 1), (0.0, 27, 1)])
    windows = [p for p in ax_images.patches if not p.get_fill()]
    assert [(p.get_x(), p.get_y()) for p in windows][:1] == [(0 + 0, (6 + 1.6) + 2)]   # image 1, row 2
    assert len(windows) == 2 * 3                                        # red and orange, each channel
    plt.close(fig)
    with pytest.raises(ValueError, match=r"output \(2, 0, 0\)"):
        viz.draw_conv_gemm(output=(2, 0, 0))


def test_draw_conv_backward_dx_is_the_sum_of_the_scatters_and_the_flipped_convolution():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    dy, weight = rng.integers(-3, 4, (3, 4)).astype(float), rng.integers(-2, 3, (2, 2)).astype(float)
    fig, dx = viz.draw_conv_backward(dy, weight, output=(1, 3), pixel=(3, 4))
    scatters = np.zeros((4, 5))
    for (i, j), g in np.ndenumerate(dy):                                # the loops of chapter 4
        scatters[i:i + 2, j:j + 2] += g * weight
    np.testing.assert_array_equal(dx, scatters)
    flipped = np.array([[np.sum(np.pad(dy, 1)[h:h + 2, w:w + 2] * weight[::-1, ::-1]) for w in range(5)]
                        for h in range(4)])
    np.testing.assert_array_equal(dx, flipped)
    assert fig.axes[4].get_title().endswith(f"dx[3, 4] = {dx[3, 4]:g}")
    shown = [t.get_text() for t in fig.axes[2].texts]                   # the scatter of dy[1, 3]
    assert shown[1 * 5 + 3] == f"{dy[1, 3] * weight[0, 0] + 0.0:g}"
    plt.close(fig)
    with pytest.raises(ValueError, match=r"pixel \(4, 0\) in dx \(4, 5\)"):
        viz.draw_conv_backward(dy, weight, pixel=(4, 0))


def test_show_source_maps_draws_each_map_over_the_input_one_square_per_cell():
    import matplotlib.pyplot as plt

    image = np.zeros((32, 32, 3), np.uint8)
    maps = [np.arange(16.0).reshape(4, 4), np.ones((2, 2))]
    fig, axes = plt.subplots(1, 3)
    viz.show_source_maps(axes, image, maps, [8, 16], ["a", "b"], label="row")
    assert [len(ax.images) for ax in axes] == [1, 2, 2]                 # the input; grey + map each
    overlay = axes[1].images[1]
    assert overlay.get_extent() == [0, 32, 32, 0] and overlay.get_array().shape == (4, 4)
    assert list(axes[1].get_xticks()) == [0, 8, 16, 24, 32] and axes[2].get_title() == "b"
    assert axes[0].get_ylabel() == "row"
    fig2, axes2 = plt.subplots(1, 2)                                    # no input panel
    viz.show_source_maps(axes2, image, maps, [8, 16], ["a", "b"], vmin=0, vmax=20, label="r")
    assert axes2[0].images[1].get_clim() == (0, 20) and axes2[0].get_ylabel() == "r"
    with pytest.raises(ValueError, match="4 axes, 2 maps"):
        viz.show_source_maps(list(axes) + [axes2[0]], image, maps, [8, 16], ["a", "b"])
    plt.close(fig)
    plt.close(fig2)


def test_draw_receptive_fields_has_four_bars_per_source_map():
    import matplotlib.pyplot as plt

    from minissd.ssd.config import get_config
    from minissd.ssd.model import SSD
    from minissd.ssd.summary import receptive_fields

    model = SSD(get_config("ssd-tiny"), 3)
    ax = viz.draw_receptive_fields(model)
    rows = receptive_fields(model)
    heights = sorted(round(p.get_height(), 3) for p in ax.patches)
    want = sorted(round(float(r[k]), 3) for r in rows for k in ("step", "min_size", "extra_size", "field"))
    assert heights == want and ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"{r['name']}\n{r['size']}x{r['size']}" for r in rows]
    plt.close(ax.figure)


def test_draw_model_budget_bars_are_the_boxes_parameters_and_compute():
    import matplotlib.pyplot as plt

    maps = [("a", 4, 2), ("b", 2, 6), ("c", 1, 4)]                     # 32, 24, 4 boxes
    params, macs = {"conv1": 2e6, "pool1": 0, "heads": 5e5}, {"conv1": 3e9, "pool1": 0, "heads": 1e9}
    fig = viz.draw_model_budget(maps, params, macs, title="t")
    boxes, par, com = fig.axes
    assert [p.get_height() for p in boxes.patches] == [32, 24, 4]
    assert [t.get_text() for t in boxes.texts] == ["4²×2\n= 32", "2²×6\n= 24", "1²×4\n= 4"]
    assert boxes.get_title() == "Default boxes per source map (total 60)"
    assert [t.get_text() for t in par.get_xticklabels()] == ["conv1", "heads"]   # the pool: neither
    assert [p.get_height() for p in par.patches] == [2.0, 0.5] and [p.get_height() for p in com.patches] == [3.0, 1.0]
    assert par.get_title() == "Parameters per block (total 2.5 M)" and com.get_title() == "Compute per block (total 4.0 GMACs)"
    plt.close(fig)


def test_draw_gradient_check_plots_each_series_against_the_numerical_gradient():
    import matplotlib.pyplot as plt

    numeric = np.array([1.0, -2.0, 3.0])
    fig, ax = plt.subplots()
    viz.draw_gradient_check(ax, numeric, {"right": numeric, "half": numeric / 2})
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), np.stack([numeric, numeric], 1))
    np.testing.assert_array_equal(ax.collections[1].get_offsets(), np.stack([numeric, numeric / 2], 1))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["right", "half", "analytic = numerical"]
    assert tuple(ax.lines[0].get_xdata()) == (-3.3000000000000003, 3.3000000000000003)   # the diagonal
    fig2, ax2 = plt.subplots()                      # all zero (dy = 1 through a softmax): still a line
    viz.draw_gradient_check(ax2, np.zeros(3), {"zero": np.zeros(3), "bug": np.array([0.0, 2.0, 0.0])})
    assert tuple(ax2.lines[0].get_xdata()) == pytest.approx((-2.2, 2.2))
    viz.draw_gradient_check(ax2, np.zeros(3), {"zero": np.array([0.0, 1e-17, -1e-17])})
    assert tuple(ax2.lines[1].get_xdata()) == (-1.0, 1.0)
    plt.close(fig2)
    with pytest.raises(ValueError, match="'short' has 2 values, the numerical gradient 3"):
        viz.draw_gradient_check(ax, numeric, {"short": numeric[:2]})
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


def test_draw_default_boxes_at_draws_each_map_s_centres_and_one_cell_s_boxes():
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from minissd.ssd.config import get_config
    from minissd.ssd.priors import default_boxes

    cfg = get_config("ssd-tiny")                                       # 5 maps: 3 + 2 panels, one off
    priors = default_boxes(cfg, dtype="float64")
    offsets = np.cumsum([0] + [f * f * a for f, a in zip(cfg.feature_maps, cfg.num_boxes_per_location)])
    cells = [(0, 0, priors[offsets[k]:offsets[k] + a]) for k, a in enumerate(cfg.num_boxes_per_location)]
    S = cfg.image_size
    fig = viz.draw_default_boxes_at(np.zeros((S, S, 3), np.uint8), cfg, cells, point=(10, 20), title="t")
    axes = fig.axes
    assert len(axes) == 6 and not axes[5].axison
    for k, (ax, f, a) in enumerate(zip(axes, cfg.feature_maps, cfg.num_boxes_per_location)):
        rects = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert len(rects) == a and len(ax.lines[0].get_xdata()) == f * f   # A boxes, f*f centres
        cx, cy, w, h = priors[offsets[k]] * S                               # the first box, in pixels
        np.testing.assert_allclose([rects[0].get_x(), rects[0].get_y(), rects[0].get_width()],
                                   [cx - w / 2, cy - h / 2, w])
        assert ax.get_title().startswith(f"map {k + 1}: {f}×{f} cells")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]           # below the panels, not on them
    assert labels[:2] == ["square $s_k$", "square $s'_k$"] and "$a=1/3$ (tall)" in labels
    assert all(not ax.get_legend() for ax in axes)
    with pytest.raises(ValueError, match="2 cells for the 5 maps of ssd-tiny"):
        viz.draw_default_boxes_at(np.zeros((S, S, 3), np.uint8), cfg, cells[:2])
    plt.close("all")


def test_draw_box_shapes_draws_every_shape_and_counts_the_boxes_per_map():
    import matplotlib.pyplot as plt

    from minissd.ssd.config import get_config

    big, tiny = get_config("ssd300"), get_config("ssd-tiny")
    fig = viz.draw_box_shapes([big, tiny])
    for ax, c in zip(fig.axes[:2], (big, tiny)):
        assert len(ax.patches) == 1 + sum(c.num_boxes_per_location)   # the image, then every shape
        legend = ax.get_legend()
        assert legend.get_bbox_to_anchor().y1 < ax.get_window_extent().y0 + 1   # below the axes
    heights = [p.get_height() for p in fig.axes[2].patches]
    assert heights == [f * f * a for c in (big, tiny) for f, a in zip(c.feature_maps, c.num_boxes_per_location)]
    assert sum(heights[:6]) == 8732 and sum(heights[6:]) == 1524
    plt.close(fig)


def test_backdrop_fades_to_a_few_grey_levels():
    image = np.zeros((2, 3, 3), np.uint8)
    image[0, 0] = (0, 30, 60)                                          # grey 30
    image[1, 2] = 255
    out = viz.backdrop(image)                                          # 0.4 grey + 0.6 white, to 32s
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert out[0, 0, 0] == 160 and out[0, 1, 0] == 160 and out[1, 2, 0] == 255   # 165 -> 160, 153 -> 160
    assert len(np.unique(viz.backdrop(np.arange(256, dtype=np.uint8)[None, :, None].repeat(3, 2)))) <= 4


def test_draw_box_scales_plots_s_k_and_its_geometric_mean_with_the_next():
    import matplotlib.pyplot as plt

    scales = [0.1, 0.2, 0.4, 0.8]
    ax = viz.draw_box_scales({"r": scales, "flat": [0.5] * 4}, ["a", "b", "c"], 300)
    s, s_prime = ax.lines[0].get_ydata(), ax.lines[1].get_ydata()
    np.testing.assert_allclose(s, scales[:3])
    np.testing.assert_allclose(s_prime, np.sqrt(np.array(scales[:3]) * scales[1:]))
    np.testing.assert_allclose(ax.lines[3].get_ydata(), [0.5] * 3)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="rule 'short' has 3 scales, expected 4"):
        viz.draw_box_scales({"short": scales[:3]}, ["a", "b", "c"], 300, ax=ax)
    plt.close(ax.figure)


def test_plot_eval_curves_reads_the_eval_records(tmp_path):
    import json
    import matplotlib.pyplot as plt

    log = tmp_path / "train_log.jsonl"
    lines = [{"step": 1, "epoch": 0, "loss": 3.0},
             {"step": 2, "epoch": 1, "eval_split": "val", "eval_map": 0.1,
              "eval_ap": {"cat": 0.15, "dog": 0.05}},
             {"step": 3, "epoch": 1, "loss": 2.0},
             {"step": 4, "epoch": 2, "eval_split": "val", "eval_map": 0.3,
              "eval_ap": {"cat": 0.4, "dog": 0.2}}]
    log.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    assert [r["step"] for r in viz.read_eval_log(log)] == [2, 4]
    ax = viz.plot_eval_curves({"run": str(log)})
    assert [l.get_label() for l in ax.get_lines()] == ["run (mAP 0.300)", "cat", "dog"]
    np.testing.assert_array_equal(ax.get_lines()[0].get_xydata(), [[1, 0.1], [2, 0.3]])
    np.testing.assert_array_equal(ax.get_lines()[2].get_ydata(), [0.05, 0.2])
    assert ax.get_ylabel() == "AP@0.5 (VOC07) on val"
    plt.close(ax.figure)
    ax = viz.plot_eval_curves({"a": viz.read_eval_log(log), "b": lines[1:2]})   # runs: mAP only
    assert [l.get_label() for l in ax.get_lines()] == ["a (mAP 0.300)", "b (mAP 0.100)"]
    plt.close(ax.figure)
    log.write_text(json.dumps(lines[0]) + "\n")
    with pytest.raises(ValueError, match="no evaluation records"):
        viz.plot_eval_curves({"none": str(log)})
    log.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        viz.read_eval_log(log)


def test_read_train_log_keeps_the_step_records_and_plot_train_log_draws_them(tmp_path):
    import json
    import matplotlib.pyplot as plt

    path = tmp_path / "train_log.jsonl"
    steps = [{"step": k, "epoch": (k - 1) // 4, "loss": 3.0, "loss_loc": 1.0, "loss_conf": 2.0,
              "lr": 1e-3} for k in range(1, 13)]
    evals = [{"step": 12, "epoch": 3, "eval_map": 0.5, "eval_ap": {"a": 0.5}}]
    path.write_text("\n".join(json.dumps(r) for r in steps + evals) + "\n\n")
    assert viz.read_train_log(path) == steps and viz.read_eval_log(path) == evals
    fig = viz.plot_train_log(steps, "run", window=4)
    loc, conf, lr = fig.axes
    np.testing.assert_array_equal(loc.lines[0].get_ydata(), [1.0] * 12)
    np.testing.assert_array_equal(conf.lines[1].get_ydata(), [2.0] * 12)    # the moving mean
    assert [l.get_xdata()[0] for l in lr.lines[1:]] == [5, 9]                # two new epochs
    plt.close(fig)
    fig = viz.plot_train_log(steps, window=4, max_epoch_lines=1)              # too many: none
    assert len(fig.axes[2].lines) == 1
    plt.close(fig)
    with pytest.raises(ValueError, match="no step records"):
        viz.plot_train_log(evals)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        viz.read_train_log(path)


def test_moving_average_is_the_mean_of_the_last_n_values():
    y = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    np.testing.assert_allclose(viz.moving_average(y, 2), [1.0, 1.5, 2.5, 3.5, 7.0])
    np.testing.assert_allclose(viz.moving_average(y, 1), y)
    np.testing.assert_allclose(viz.moving_average(y, 10), np.cumsum(y) / np.arange(1, 6))


def test_show_pool_backward_draws_the_four_maps_and_dots_the_maxima():
    import matplotlib.pyplot as plt

    x = np.arange(16.0).reshape(4, 4)
    dy = np.array([[1.0, -2.0], [3.0, 0.5]])
    dx = np.zeros((4, 4))
    dx[1::2, 1::2] = dy                                      # the maxima of x's 2x2 windows
    wins = np.ones((4, 4))
    fig = viz.show_pool_backward(x, dy, dx, wins)
    axes = fig.axes[:4]                                      # the others are colour bars
    for ax, values in zip(axes, (x, dy, dx, wins)):
        np.testing.assert_array_equal(ax.images[0].get_array(), values)
    assert axes[1].images[0].get_clim() == axes[2].images[0].get_clim() == (-3.0, 3.0)
    dots = axes[0].collections[0].get_offsets()              # (column, row) of dx's nonzeros
    assert sorted(map(tuple, np.asarray(dots).tolist())) == [(1, 1), (1, 3), (3, 1), (3, 3)]
    assert "(2×2)" in axes[1].get_title() and "(4×4)" in axes[2].get_title()
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
