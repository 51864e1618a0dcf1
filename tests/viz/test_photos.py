"""Boxes on photos: colours per class, captions, grids, denormalize, the augmentation pictures."""
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


def test_backdrop_fades_to_a_few_grey_levels():
    image = np.zeros((2, 3, 3), np.uint8)
    image[0, 0] = (0, 30, 60)                                          # grey 30
    image[1, 2] = 255
    out = viz.backdrop(image)                                          # 0.4 grey + 0.6 white, to 32s
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert out[0, 0, 0] == 160 and out[0, 1, 0] == 160 and out[1, 2, 0] == 255   # 165 -> 160, 153 -> 160
    assert len(np.unique(viz.backdrop(np.arange(256, dtype=np.uint8)[None, :, None].repeat(3, 2)))) <= 4
