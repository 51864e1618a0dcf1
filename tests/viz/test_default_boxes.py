"""The pictures of the default boxes: scales, one cell's boxes per map, every shape."""
import numpy as np
import pytest

from minissd import viz

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


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


def test_draw_default_boxes_at_a_tiled_map_draws_every_copy_and_its_centres():
    import dataclasses

    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from minissd.ssd.config import get_config
    from minissd.ssd.priors import default_boxes

    cfg = get_config("ssd-tiny")
    cfg = dataclasses.replace(cfg, box_centres=(((0.25, 0.5), (0.75, 0.5)),) + (((0.5, 0.5),),) * 4)
    priors = default_boxes(cfg, dtype="float64")
    offsets = np.cumsum([0] + [f * f * a for f, a in zip(cfg.feature_maps, cfg.num_boxes_per_location)])
    cells = [(0, 0, priors[offsets[k]:offsets[k] + a]) for k, a in enumerate(cfg.num_boxes_per_location)]
    S = cfg.image_size
    fig = viz.draw_default_boxes_at(np.zeros((S, S, 3), np.uint8), cfg, cells)
    ax = fig.axes[0]
    assert len([p for p in ax.patches if isinstance(p, Rectangle)]) == 8          # 4 shapes x 2 centres
    xs = np.concatenate([line.get_xdata() for line in ax.lines])
    assert len(xs) == 2 * 16 * 16 and xs.min() == pytest.approx(0.25 * 8)        # both copies' centres
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
