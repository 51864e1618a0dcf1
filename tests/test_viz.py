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
