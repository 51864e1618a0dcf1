"""The pictures of the network: the architecture figure, source maps, receptive fields, the budget."""
import numpy as np
import pytest

from minissd import viz

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


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
