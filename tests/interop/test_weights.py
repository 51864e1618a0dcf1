"""Published-weight loaders: ssd.pytorch and torchvision VGG16 layouts, read without torch.

Small fixtures in tests/data/weights/ (made once by make_weights.py there, with torch)
test the no-torch path; where torch is installed, a full-size random SSD300 in
ssd.pytorch's layout is saved to tmp_path and loaded.
"""
import json
import os

import numpy as np
import pytest

from minissd.ssd.config import SSDConfig, get_config
from minissd.ssd.model import SSD
from minissd.ssd.architecture import SSDArch
from minissd.interop.weights import (cv2_resize_linear, decimate_fc6, from_ssd_pytorch,
                                     from_vgg16_torchvision, load_ssd_pytorch,
                                     load_vgg16_torchvision, ssd_pytorch_key_map,
                                     ssd_pytorch_preprocess)

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "weights")


def fixture(name):
    return os.path.join(HERE, name)


def mini_model(seed=0):
    with open(fixture("mini.json")) as f:
        d = json.load(f)
    return SSD(SSDConfig.from_dict(d["config"]), d["num_classes"], seed=seed,
               arch=SSDArch.from_dict(d["arch"]))


def pth_state(name):
    from minissd.interop.pth import load_state_dict_pth
    return load_state_dict_pth(fixture(name))


# --------------------------------------------------------------------------- #
# ssd.pytorch layout
# --------------------------------------------------------------------------- #
def test_ssd_pytorch_checkpoint_reproduces_torch_outputs():
    model = load_ssd_pytorch(mini_model(), fixture("mini_ssd_pytorch.pth")).eval()
    expected = np.load(fixture("mini_ssd_pytorch_expected.npz"))     # torch's, in float64
    loc, conf = model.astype(np.float64).forward(expected["images"].astype(np.float64))
    np.testing.assert_allclose(loc, expected["loc"], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(conf, expected["conf"], rtol=1e-9, atol=1e-10)


def test_ssd_pytorch_key_map_follows_layer_order():
    keys = ssd_pytorch_key_map(SSD(get_config("ssd300"), 20))
    assert len(keys) == 2 * (13 + 2) + 1 + 2 * 8 + 2 * 2 * 6             # 71 tensors
    table = [("vgg.conv1_1.weight", "vgg.0.weight"), ("vgg.conv3_3.bias", "vgg.14.bias"),
             ("vgg.conv4_3.weight", "vgg.21.weight"), ("vgg.conv5_3.weight", "vgg.28.weight"),
             ("vgg.fc6.weight", "vgg.31.weight"), ("vgg.fc7.bias", "vgg.33.bias"),
             ("l2norm.weight", "L2Norm.weight"), ("extras.conv8_1.weight", "extras.0.weight"),
             ("extras.conv11_2.bias", "extras.7.bias"), ("loc.conv4_3.weight", "loc.0.weight"),
             ("conf.fc7.bias", "conf.1.bias"), ("conf.conv11_2.weight", "conf.5.weight")]
    for ours, theirs in table:
        assert keys[ours] == theirs


def test_ssd_pytorch_missing_key_is_named():
    state = pth_state("mini_ssd_pytorch.pth")
    del state["extras.1.bias"]
    with pytest.raises(KeyError, match="extras.1.bias"):
        from_ssd_pytorch(mini_model(), state)


def test_ssd_pytorch_wrong_shape_is_named():
    state = pth_state("mini_ssd_pytorch.pth")
    state["conf.0.weight"] = state["conf.0.weight"][:6]                 # other class count
    with pytest.raises(ValueError, match=r"'conf.0.weight' has shape \(6,"):
        from_ssd_pytorch(mini_model(), state)


def test_ssd_pytorch_unexpected_key_is_named():
    state = pth_state("mini_ssd_pytorch.pth")
    state["vgg.99.weight"] = np.zeros(3, np.float32)
    with pytest.raises(KeyError, match="vgg.99.weight"):
        from_ssd_pytorch(mini_model(), state)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_ssd_pytorch(mini_model(), tmp_path / "nope.pth")


def test_ssd_pytorch_preprocess_is_rgb_minus_mean():
    rgb = np.zeros((300, 300, 3), np.uint8)
    rgb[..., 0] = 255                                                    # pure red
    out = ssd_pytorch_preprocess(rgb)                                    # (3, 300, 300): R, G, B
    assert out.shape == (3, 300, 300) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0, 0], [132, -117, -104])      # 255 - 123, 0 - 117, 0 - 104


def test_ssd_pytorch_preprocess_resizes_to_300():
    rgb = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    out = ssd_pytorch_preprocess(rgb)
    assert out.shape == (3, 300, 300)
    np.testing.assert_array_equal(out, cv2_resize_linear(rgb, 300).transpose(2, 0, 1)
                                  - np.array([123, 117, 104], np.float32)[:, None, None])
    with pytest.raises(ValueError, match=r"RGB image, got shape \(300, 300\)"):
        ssd_pytorch_preprocess(np.zeros((300, 300), np.uint8))


# (image, output size, expected by hand)
RESIZE_CASES = [
    # halving: each output pixel sits between two source pixels, weights 1/2, 1/2
    (np.array([[0, 10, 20, 30]] * 2, np.uint8), 2, np.array([[5, 25]] * 2)),
    # a constant image stays constant, shrinking or growing
    (np.full((7, 5), 77, np.uint8), 3, np.full((3, 3), 77)),
    (np.full((2, 3), 200, np.uint8), 4, np.full((4, 4), 200)),
    # doubling: the first output pixel clamps to the edge, the next is 1/4 of the way on
    (np.array([[0, 100]] * 2, np.uint8), 4, np.array([[0, 25, 75, 100]] * 4)),
]


@pytest.mark.parametrize("image, size, expected", RESIZE_CASES)
def test_cv2_resize_linear_by_hand(image, size, expected):
    out = cv2_resize_linear(image[:, :, None], size)
    assert out.shape == (size, size, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 0], expected)


@pytest.mark.parametrize("shape", [(375, 500), (500, 333), (1000, 701), (300, 300)])
def test_cv2_resize_linear_is_opencvs_when_shrinking(shape):
    cv2 = pytest.importorskip("cv2")
    image = np.random.default_rng(1).integers(0, 256, shape + (3,), dtype=np.uint8)
    np.testing.assert_array_equal(cv2_resize_linear(image, 300), cv2.resize(image, (300, 300)))


@pytest.mark.parametrize("shape", [(200, 150), (100, 640), (37, 41)])
def test_cv2_resize_linear_within_one_level_when_growing(shape):
    cv2 = pytest.importorskip("cv2")
    image = np.random.default_rng(2).integers(0, 256, shape + (3,), dtype=np.uint8)
    gap = np.abs(cv2_resize_linear(image, 300).astype(int) - cv2.resize(image, (300, 300)))
    assert gap.max() <= 1 and (gap > 0).mean() < 0.005


# --------------------------------------------------------------------------- #
# torchvision VGG16 layout
# --------------------------------------------------------------------------- #
def test_torchvision_vgg16_loads_base_and_decimates_fc():
    model = mini_model()
    before = model.state_dict()
    load_vgg16_torchvision(model, fixture("mini_vgg16_torchvision.pth"))
    after = model.state_dict()
    expected = np.load(fixture("mini_vgg16_expected.npz"))
    for name in expected.files:                                          # convs, fc6, fc7
        np.testing.assert_array_equal(after[name], expected[name], err_msg=name)
    assert len(expected.files) == 2 * 9                                  # 7 convs + fc6 + fc7
    for name in after:                                                   # the rest keeps its init
        if name not in expected.files:
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def test_fc6_decimation_indices():
    F, C = 8, 2
    w = np.arange(F * C * 49, dtype=np.float32).reshape(F, C * 49)     # (F, C*7*7)
    w6, b6 = decimate_fc6(w, np.arange(F, dtype=np.float32), out_channels=2, in_channels=C)
    assert w6.shape == (2, C, 3, 3)
    full = w.reshape(F, C, 7, 7)
    np.testing.assert_array_equal(w6[1, 1], full[4, 1][np.ix_([0, 3, 6], [0, 3, 6])])
    np.testing.assert_array_equal(b6, [0, 4])


def test_torchvision_bad_classifier_is_named():
    state = pth_state("mini_vgg16_torchvision.pth")
    state["classifier.0.weight"] = state["classifier.0.weight"][:, :100]
    with pytest.raises(ValueError, match="classifier.0.weight"):
        from_vgg16_torchvision(mini_model(), state)
    state = pth_state("mini_vgg16_torchvision.pth")
    del state["features.16.weight"]
    with pytest.raises(KeyError, match="features.16.weight"):
        from_vgg16_torchvision(mini_model(), state)


# --------------------------------------------------------------------------- #
# Full-size SSD300 through a real .pth file, where torch is installed
# --------------------------------------------------------------------------- #
def test_ssd300_from_ssd_pytorch_file_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from torch_reference import TorchSSD, plan_of
    cfg = get_config("ssd300")
    model = SSD(cfg, 20, seed=1)
    torch.manual_seed(0)
    ref = TorchSSD(plan_of(model.arch), cfg.num_boxes_per_location, 21).eval()
    path = tmp_path / "ssd300_random.pth"
    torch.save(ref.state_dict(), path)
    load_ssd_pytorch(model, path).eval().astype(np.float64)   # float64 both: rounding stays ~1e-15
    x = np.random.default_rng(0).standard_normal((1, 3, 300, 300))
    loc, conf = model.forward(x)
    with torch.no_grad():
        tloc, tconf = ref.double()(torch.from_numpy(x))
    assert loc.shape == (1, 8732, 4) and conf.shape == (1, 8732, 21)
    np.testing.assert_allclose(loc, tloc.numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(conf, tconf.numpy(), rtol=1e-9, atol=1e-10)
