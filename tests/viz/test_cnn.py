"""The pictures of chapters 1-4: the backend diagram, ceil mode, the GEMM, dilation's taps, the backward passes."""
import numpy as np
import pytest

from minissd import viz

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


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


def test_draw_backend_diagram_has_both_memories_and_one_arrow_each_way():
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    ax = viz.draw_backend_diagram()
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "numpy.ndarray" in texts and "cupy.ndarray" in texts
    assert "to_device(x, 'cuda')" in texts and "to_numpy(x)" in texts
    assert sum(isinstance(p, FancyBboxPatch) for p in ax.patches) == 2
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == 2
    plt.close(ax.figure)


@pytest.mark.parametrize("n_in, kernel, stride", [(7, 2, 2), (10, 3, 2), (6, 2, 2)])
def test_draw_ceil_mode_draws_the_windows_conv_output_size_counts(n_in, kernel, stride):
    import matplotlib.pyplot as plt

    axes = viz.draw_ceil_mode(n_in, kernel, stride)
    for ax, ceil in zip(axes, [False, True]):
        n_out = ((n_in - kernel + (stride - 1 if ceil else 0)) // stride) + 1   # by hand
        windows = [t.get_text() for t in ax.texts if t.get_text().startswith("y")]
        assert windows == [f"y{o}" for o in range(n_out)]
        dashed = [t for t in ax.texts if t.get_text() == "−∞"]
        assert len(dashed) == max(0, (n_out - 1) * stride + kernel - n_in)   # the -inf padding read
        assert f"-> {n_out} outputs" in ax.get_title()
    plt.close(axes[0].figure)


def test_draw_dilation_taps_marks_nine_taps_dilation_apart_inside_the_spanned_window():
    import matplotlib.pyplot as plt

    axes = viz.draw_dilation_taps((1, 2, 6))
    for ax, d in zip(axes, (1, 2, 6)):
        grid = np.asarray(ax.images[0].get_array())
        centre = grid.shape[0] // 2
        rows, cols = np.nonzero(grid == 2)                                 # the taps
        assert len(rows) == 9
        assert sorted(set(rows - centre)) == [-d, 0, d] and sorted(set(cols - centre)) == [-d, 0, d]
        assert (grid >= 1).sum() == (2 * d + 1) ** 2                       # the window spanned
        assert f"{2 * d + 1}×{2 * d + 1} window" in ax.get_title()
    plt.close(axes[0].figure)


def test_draw_tap_subsampling_keeps_every_third_tap_as_a_3x3_kernel_with_dilation_6():
    import matplotlib.pyplot as plt

    axes = viz.draw_tap_subsampling(kernel=7, keep_every=3, spread=2)
    old, spread, ssd = (np.asarray(ax.images[0].get_array()) for ax in axes)
    assert old.shape == (7, 7) and (old >= 1).sum() == 49
    assert list(zip(*np.nonzero(old == 2))) == [(p, q) for p in (0, 3, 6) for q in (0, 3, 6)]
    assert spread.shape == (13, 13) and (spread >= 1).sum() == 49 and (spread[1::2, :] == 0).all()
    kept = [(p, q) for p in (0, 6, 12) for q in (0, 6, 12)]
    assert list(zip(*np.nonzero(spread == 2))) == kept
    assert list(zip(*np.nonzero(ssd))) == kept and (ssd[ssd > 0] == 2).all()
    assert "3×3, dilation 6: 13×13 window" in axes[2].get_title()
    plt.close(axes[0].figure)


def test_show_tap_counts_shows_the_counts_and_labels_each_block_once():
    import matplotlib.pyplot as plt

    from minissd.nn.fast import valid_tap_ranges

    ranges = valid_tap_ranges(19, 19, 3, 6, 6)
    taps = np.zeros((19, 19), dtype=int)
    for y in range(19):                                   # by hand: taps y + 6 (i - 1) inside 0..18
        for x in range(19):
            taps[y, x] = sum(0 <= y + 6 * (i - 1) < 19 for i in range(3)) * \
                         sum(0 <= x + 6 * (j - 1) < 19 for j in range(3))
    ax = viz.show_tap_counts(taps, ranges, title="fc6")
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), taps)
    labels = [t.get_text() for t in ax.texts]
    assert len(labels) == len(ranges) ** 2
    assert sorted(labels) == sorted(str(taps[r0, c0]) for r0, *_ in ranges for c0, *_ in ranges)
    assert ax.get_title() == "fc6" and ax.get_xlabel() == "output column x (of 19)"
    plt.close(ax.figure)


def test_show_column_matrix_writes_every_value_and_marks_one_window_and_its_column():
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    image = np.arange(30.0).reshape(5, 6)
    k, ho, wo = 3, 3, 4
    col = np.array([[image[i + p, j + q] for i in range(ho) for j in range(wo)]   # by hand
                    for p in range(k) for q in range(k)])
    a0, a1 = viz.show_column_matrix(image, col, k, output=(1, 2))
    np.testing.assert_array_equal(np.asarray(a1.images[0].get_array()), col)
    assert len(a0.texts) == 30 and len(a1.texts) == 9 * 12
    window = [p for p in a0.patches if isinstance(p, Rectangle)][0]
    assert window.get_xy() == (1.5, 0.5) and window.get_width() == 3
    column = [p for p in a1.patches if isinstance(p, Rectangle)][0]
    assert column.get_xy() == (1 * wo + 2 - 0.5, -0.5) and column.get_height() == 9
    # the marked column holds the marked window's pixels, row by row
    np.testing.assert_array_equal(col[:, 1 * wo + 2], image[1:4, 2:5].reshape(-1))
    with pytest.raises(ValueError, match=r"has a \(9, 12\) column matrix, got \(9, 9\)"):
        viz.show_column_matrix(image, col[:, :9], k)
    plt.close("all")
