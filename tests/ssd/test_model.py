"""The SSD network: shapes and counts, prediction order, gradients (branches included), init,
state dicts, and (with torch) equality with an ssd.pytorch-layout reference."""
import copy
import dataclasses

import numpy as np
import pytest

from minissd.nn import backend, fast
from minissd.ssd.config import get_config
from minissd.nn.gradcheck import check_backward, sum_tolerance
from minissd.ssd.model import SSD
from minissd.ssd.priors import box_shapes, default_boxes
from minissd.ssd.architecture import PRESETS, SSD_TINY_ARCH, SSDArch

# ssd-tiny's architecture on a 64-px input: maps 8, 4, 2, 1, 1 (fc6's dilated taps still land)
TINY64 = dataclasses.replace(get_config("ssd-tiny"), name="ssd-tiny-64", image_size=64,
                             feature_maps=(8, 4, 2, 1, 1), steps=(8, 16, 32, 64, 64))


def tiny64(num_classes=2, seed=0, dtype=np.float64):
    return SSD(TINY64, num_classes, seed=seed, arch=SSD_TINY_ARCH).astype(dtype)


def images_for(cfg, batch, xp=np, dtype=np.float64, seed=1):
    x = np.random.default_rng(seed).standard_normal((batch, 3, cfg.image_size, cfg.image_size))
    return xp.asarray(x.astype(dtype))


def record_outputs(layer, log, key):
    """From now on, ``layer.forward`` also stores its output in ``log[key]``."""
    forward = layer.forward

    def wrapped(x):
        log[key] = forward(x)
        return log[key]
    layer.forward = wrapped


def record_head_outputs(model, log, sources=None):
    """From now on, each head's own conv output (B, k*4 or k*(C+1), H, W) is stored in
    ``log["loc" | "conf", source name]`` (and the map the heads see in ``sources[name]``):
    the model runs the two heads of a map as one stacked conv, so these also check that
    stacking them changes nothing."""
    stacked = model._heads_forward

    def wrapped(name, source):
        if sources is not None:
            sources[name] = source
        log["loc", name] = model.loc[name].forward(source)
        log["conf", name] = model.conf[name].forward(source)
        return stacked(name, source)
    model._heads_forward = wrapped


def abs_sums(conv, x):
    """S = sum |w * x| + |b| of each output of ``conv`` at ``x`` (the conv of |x| with |W| and |b|),
    for :func:`minissd.gradcheck.sum_tolerance`."""
    absolute = copy.deepcopy(conv).eval()
    for key in absolute.params:
        absolute.params[key] = abs(absolute.params[key])
    return absolute.forward(abs(x))


def record_gradients(layer, log, key):
    """From now on, ``layer.backward`` also stores the gradient it receives in ``log[key]``."""
    backward = layer.backward

    def wrapped(dy):
        log[key] = dy.copy()
        return backward(dy)
    layer.backward = wrapped


def map_slices(model):
    """Prediction rows of each source map: a slice of the P axis per map."""
    out, start = [], 0
    for f, k in zip(model.cfg.feature_maps, model.cfg.num_boxes_per_location):
        out.append(slice(start, start + f * f * k))
        start += f * f * k
    return out


# --------------------------------------------------------------------------- #
# Shapes, counts, structure
# --------------------------------------------------------------------------- #
def test_ssd300_outputs_and_parameter_count():
    cfg = get_config("ssd300")
    model = SSD(cfg, 20).eval()
    assert model.num_parameters() == 26_285_486                        # ssd.pytorch, 21 classes
    loc, conf = model.forward(images_for(cfg, 1, dtype=np.float32))
    assert loc.shape == (1, 8732, 4) and conf.shape == (1, 8732, 21)
    assert loc.dtype == np.float32 and np.isfinite(conf).all()
    assert default_boxes(cfg).shape[0] == 8732 == model.num_priors


@pytest.mark.parametrize("name, sources, maps", [
    ("ssd300", ("conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"), (38, 19, 10, 5, 3, 1)),
    ("ssd512", ("conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2", "conv12_2"),
     (64, 32, 16, 8, 4, 2, 1)),
    ("ssd-tiny", ("conv4_1", "fc7", "conv8_2", "conv9_2", "conv10_2"), (16, 8, 4, 2, 1)),
    ("ssd-cpu", ("conv3_2", "fc7", "conv8_2", "conv9_2", "conv10_2"), (24, 12, 6, 3, 1)),
])
def test_source_maps_match_config(name, sources, maps):
    model = SSD(get_config(name), 3)
    assert model.source_names == sources
    assert [h for h, _ in model.feature_map_sizes()] == list(maps) == list(model.cfg.feature_maps)


def test_ssd300_layers_are_the_papers():
    vgg = SSD(get_config("ssd300"), 20).vgg
    assert vgg.pool3.ceil_mode and not vgg.pool4.ceil_mode
    assert (vgg.pool5.kernel_size, vgg.pool5.stride, vgg.pool5.padding) == ((3, 3), (1, 1), (1, 1))
    assert (vgg.fc6.out_channels, vgg.fc6.dilation, vgg.fc6.padding) == (1024, (6, 6), (6, 6))
    assert (vgg.fc7.out_channels, vgg.fc7.kernel_size) == (1024, (1, 1))
    assert len(vgg) == 35                                               # ssd.pytorch's vgg[0..34]


def test_ssd_tiny_forward_shapes_and_dtype(xp):
    cfg = get_config("ssd-tiny")
    model = SSD(cfg, 3).to(backend.device_of(xp.zeros(1)))
    loc, conf = model.forward(images_for(cfg, 2, xp, np.float32))
    assert loc.shape == (2, 1524, 4) and conf.shape == (2, 1524, 4)
    assert loc.dtype == conf.dtype == np.float32
    assert backend.get_array_module(loc) is xp


@pytest.mark.parametrize("shape", [(1, 3, 127, 128), (1, 3, 300, 300), (1, 1, 128, 128), (3, 128, 128)])
def test_wrong_image_shape_names_the_expected_size(shape):
    model = SSD(get_config("ssd-tiny"), 3)
    with pytest.raises(ValueError, match=r"\(B, 3, 128, 128\).*image_size = 128"):
        model.forward(np.zeros(shape, np.float32))


@pytest.mark.parametrize("change, match", [
    (dict(feature_maps=(16, 8, 4, 2, 2)), "feature_maps"),
    (dict(name="ssd-huge"), "no SSD architecture registered"),
    (dict(image_size=96), "feature_maps"),
])
def test_config_architecture_mismatch_is_named(change, match):
    cfg = dataclasses.replace(get_config("ssd-tiny"), **change)
    with pytest.raises(ValueError, match=match):
        SSD(cfg, 3)


def test_backward_checks_gradient_shapes():
    model = tiny64()
    loc, conf = model.forward(images_for(TINY64, 1))
    with pytest.raises(ValueError, match="dconf"):
        model.backward(loc, conf[:, :, :2])


# --------------------------------------------------------------------------- #
# Prediction order: agrees with default_boxes, cell by cell (a naive loop beside the fast path)
# --------------------------------------------------------------------------- #
def test_prediction_order_matches_default_boxes():
    cfg = dataclasses.replace(get_config("ssd-tiny"), clip=False)     # unclipped: exact centres
    model = SSD(cfg, 2)
    head_out, sources = {}, {}
    record_head_outputs(model, head_out, sources)
    loc, conf = model.forward(images_for(cfg, 1, dtype=np.float32))
    priors, K = default_boxes(cfg), model.num_classes + 1
    p = 0
    for m, (name, f) in enumerate(zip(model.source_names, cfg.feature_maps)):
        shapes = box_shapes(cfg, m)
        step = cfg.steps[m] / cfg.image_size
        l_map, c_map = head_out["loc", name], head_out["conf", name]       # (1, k*4, f, f)...
        # one stacked conv vs each head alone: the same 3x3xC products and bias, summed in
        # another order (another BLAS kernel, another blocking), so equal up to float32 rounding
        k = 9 * sources[name].shape[1] + 1
        l_tol = sum_tolerance(k, abs_sums(model.loc[name], sources[name]).max())
        c_tol = sum_tolerance(k, abs_sums(model.conf[name], sources[name]).max())
        for i in range(f):                    # row
            for j in range(f):                # column
                for a, wh in enumerate(shapes):   # box
                    centre = [(j + .5) * step, (i + .5) * step]
                    np.testing.assert_allclose(priors[p], [*centre, *wh], atol=1e-6)
                    np.testing.assert_allclose(loc[0, p], l_map[0, 4 * a:4 * (a + 1), i, j], rtol=0, atol=l_tol)
                    np.testing.assert_allclose(conf[0, p], c_map[0, K * a:K * (a + 1), i, j], rtol=0, atol=c_tol)
                    p += 1
    assert p == loc.shape[1] == priors.shape[0]


# --------------------------------------------------------------------------- #
# Gradients
# --------------------------------------------------------------------------- #
# one or more tensors of every layer kind: plain, strided, 1x1 and dilated convs, BatchNorm, L2Norm, both heads
GRADCHECK_PARAMS = ["vgg.conv1_1.weight", "vgg.bn3_1.bias", "vgg.conv5_1.weight", "vgg.fc6.weight",
                    "vgg.bn6.weight", "vgg.fc7.weight", "l2norm.weight", "extras.conv8_1.weight",
                    "extras.conv8_2.weight", "extras.bn10_2.bias", "loc.conv4_1.weight",
                    "conf.conv4_1.bias", "conf.fc7.weight", "loc.conv10_2.weight"]


def test_gradient_check_end_to_end():
    """Sampled entries of every layer kind, and the images, against central differences."""
    model = tiny64()
    assert set(GRADCHECK_PARAMS) <= {n for n, _, _ in model.named_parameters()}
    check_backward(model, images_for(TINY64, 2), params=GRADCHECK_PARAMS,
                   rng=np.random.default_rng(3), max_checks=4, atol=1e-6, rtol=1e-4)


def _grads_after(model, dloc, dconf, capture):
    dimages = model.backward(dloc, dconf)
    return dimages, {n: mod.grads[k].copy() for n, mod, k in model.named_parameters()}, dict(capture)


@pytest.mark.parametrize("split_map, tap", [(0, "relu4_1"), (1, "relu7")])
def test_branch_gradients_add_up(split_map, tap):
    """At a source map, d(source) = d(from its heads) + d(from the deeper layers).

    Upstream gradient only on this map's rows reaches the map through its heads
    alone; only on the deeper maps' rows, through the deeper layers alone. The
    full gradient must be the sum of the two (backward is linear in the upstream
    gradient), at the tap itself, at the images and in every parameter.
    """
    model = tiny64()
    model.forward(images_for(TINY64, 2))
    capture = {}
    record_gradients(getattr(model.vgg, tap), capture, "dsource")     # what reaches the source map
    rng = np.random.default_rng(5)
    B, P, K = 2, TINY64.num_priors, model.num_classes + 1
    dloc, dconf = rng.standard_normal((B, P, 4)), rng.standard_normal((B, P, K))
    rows = map_slices(model)
    head = np.zeros(P, bool)
    head[rows[split_map]] = True                   # this map's heads
    deeper = np.zeros(P, bool)
    deeper[rows[split_map].stop:] = True           # every deeper map
    earlier = ~(head | deeper)

    full = _grads_after(model, dloc * ~earlier[:, None], dconf * ~earlier[:, None], capture)
    only_head = _grads_after(model, dloc * head[:, None], dconf * head[:, None], capture)
    only_deep = _grads_after(model, dloc * deeper[:, None], dconf * deeper[:, None], capture)

    np.testing.assert_allclose(full[2]["dsource"], only_head[2]["dsource"] + only_deep[2]["dsource"],
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(full[0], only_head[0] + only_deep[0], rtol=1e-10, atol=1e-12)
    for name in full[1]:
        np.testing.assert_allclose(full[1][name], only_head[1][name] + only_deep[1][name],
                                   rtol=1e-10, atol=1e-12, err_msg=name)
    # and both branches really carry gradient
    assert np.abs(only_head[2]["dsource"]).max() > 0 and np.abs(only_deep[2]["dsource"]).max() > 0
    # the deeper layers get nothing from this map's heads
    assert not only_head[1]["extras.conv8_2.weight"].any()
    assert not only_head[1]["vgg.fc7.weight"].any() or split_map == 1
    if split_map == 0:                             # only conv4_1's heads see L2Norm
        assert only_head[1]["l2norm.weight"].any() and not only_deep[1]["l2norm.weight"].any()


def test_backward_without_image_gradient_fills_the_same_grads():
    model = tiny64()
    x = images_for(TINY64, 2)
    loc, conf = model.forward(x)
    rng = np.random.default_rng(2)
    dloc, dconf = rng.standard_normal(loc.shape), rng.standard_normal(conf.shape)
    assert model.backward(dloc, dconf).shape == x.shape
    full = {n: mod.grads[k].copy() for n, mod, k in model.named_parameters()}
    for _, mod, k in model.named_parameters():
        mod.grads[k] = mod.grads[k] * np.nan
    assert model.backward(dloc, dconf, need_dimages=False) is None
    for n, mod, k in model.named_parameters():
        np.testing.assert_allclose(mod.grads[k], full[n], rtol=1e-12, atol=1e-14, err_msg=n)


def test_backward_before_forward_is_an_error():
    model = tiny64()
    with pytest.raises(RuntimeError, match="before forward"):
        model.backward(np.zeros((1, TINY64.num_priors, 4)), np.zeros((1, TINY64.num_priors, 3)))


# --------------------------------------------------------------------------- #
# Initialisation and state dicts
# --------------------------------------------------------------------------- #
def test_same_seed_same_parameters():
    a, b, c = (SSD(get_config("ssd-tiny"), 3, seed=s).state_dict() for s in (7, 7, 8))
    assert list(a) == list(b)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["vgg.conv1_1.weight"], c["vgg.conv1_1.weight"])
    d = SSD(get_config("ssd-tiny"), 3, rng=np.random.default_rng(7)).state_dict()
    assert all(np.array_equal(a[k], d[k]) for k in a)


def test_initialisation_follows_ssd():
    model = SSD(get_config("ssd-tiny"), 3, seed=0)
    sd = model.state_dict()
    for name, value in sd.items():
        if name.endswith(".bias"):
            assert not value.any(), name                           # bias 0
    np.testing.assert_array_equal(sd["l2norm.weight"], 20.0)
    w = sd["vgg.fc6.weight"]                                       # He normal for the base
    assert abs(w.std() / np.sqrt(2.0 / (w[0].size)) - 1) < 0.02
    for name in ("extras.conv8_2.weight", "loc.fc7.weight", "conf.conv4_1.weight"):  # Xavier uniform
        w = sd[name]
        bound = np.sqrt(6.0 / (w[0].size + w.shape[0] * w[0, 0].size))
        assert np.abs(w).max() <= bound and abs(w.std() / (bound / np.sqrt(3)) - 1) < 0.05, name


def test_state_dict_round_trip(tmp_path):
    cfg = get_config("ssd-tiny")
    model = SSD(cfg, 3, seed=0)
    path = tmp_path / "model.npz"
    model.save(path)
    other = SSD(cfg, 3, seed=1).load(path)
    a, b = model.state_dict(), other.state_dict()
    assert list(a)[:5] == ["vgg.conv1_1.weight", "vgg.bn1_1.weight", "vgg.bn1_1.bias",
                           "vgg.bn1_1.running_mean", "vgg.bn1_1.running_var"]
    assert "l2norm.weight" in a and "conf.conv10_2.bias" in a
    assert all(np.array_equal(a[k], b[k]) for k in a)
    x = images_for(cfg, 1, dtype=np.float32)
    for y, z in zip(model.eval().forward(x), other.eval().forward(x)):
        np.testing.assert_array_equal(y, z)
    with pytest.raises(ValueError, match="conf.conv4_1.weight"):   # other class count
        SSD(cfg, 5).load(path)


def test_registry_covers_presets():
    assert set(PRESETS) >= {"ssd300", "ssd512", "ssd-tiny", "ssd-cpu"}
    arch = SSDArch.from_dict(SSD_TINY_ARCH.to_dict())
    assert arch == SSD_TINY_ARCH


# --------------------------------------------------------------------------- #
# Against PyTorch (ssd.pytorch's layout), where torch is installed
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("batch_norm", [True, False], ids=["ssd-tiny", "ssd-tiny-no-bn"])
def test_ssd_tiny_matches_torch_forward_and_backward(batch_norm):
    """Training-mode forward (BatchNorm on batch statistics), running stats, dimages and every grad."""
    torch = pytest.importorskip("torch")
    from torch_reference import TorchSSD, plan_of
    from minissd.interop.weights import from_ssd_pytorch, ssd_pytorch_key_map
    cfg = get_config("ssd-tiny")
    arch = dataclasses.replace(SSD_TINY_ARCH, batch_norm=batch_norm)
    model = SSD(cfg, 3, arch=arch).astype(np.float64)
    torch.manual_seed(0)
    ref = TorchSSD(plan_of(arch), cfg.num_boxes_per_location, 4).double().train()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.load_state_dict(from_ssd_pytorch(model, {k: v.numpy() for k, v in ref.state_dict().items()}))
    x = images_for(cfg, 2)
    loc, conf = model.forward(x)
    xt = torch.from_numpy(x).requires_grad_()
    tloc, tconf = ref(xt)
    np.testing.assert_allclose(loc, tloc.detach().numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(conf, tconf.detach().numpy(), rtol=1e-9, atol=1e-10)
    rng = np.random.default_rng(0)
    dloc, dconf = rng.standard_normal(loc.shape), rng.standard_normal(conf.shape)
    dx = model.backward(dloc, dconf)
    torch.autograd.backward([tloc, tconf], [torch.from_numpy(dloc), torch.from_numpy(dconf)])
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-7, atol=1e-10)
    ours = {n: mod.grads[k] for n, mod, k in model.named_parameters()}
    state, theirs = model.state_dict(), ref.state_dict()
    named = dict(ref.named_parameters())
    for name, key in ssd_pytorch_key_map(model).items():
        if name in ours:
            np.testing.assert_allclose(ours[name], named[key].grad.numpy(), rtol=1e-7, atol=1e-10,
                                       err_msg=name)
        else:                                                  # BatchNorm running statistics
            np.testing.assert_allclose(state[name], theirs[key].numpy(), rtol=1e-9, err_msg=name)


@pytest.mark.parametrize("stacked", [True, False], ids=["stacked", "plain"])
def test_stacked_heads_give_each_head_its_own_gradients(stacked):
    """With the fast paths on the model runs loc[name] and conf[name] as one stacked conv;
    each head's grads, and the source's gradient (the sum of the two), must be what the two
    convs give alone. With them off, the model runs the two plain convs."""
    with fast.fast_paths(stacked):
        _check_heads(stacked)


def _check_heads(stacked):
    model = tiny64()
    rng = np.random.default_rng(4)
    name = model.source_names[1]
    loc_conv, conf_conv = model.loc[name], model.conf[name]
    source = rng.standard_normal((2, loc_conv.in_channels, 4, 4))
    loc, conf = model._heads_forward(name, source)
    assert model._heads_stacked is stacked
    np.testing.assert_allclose(loc, loc_conv.forward(source), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conf, conf_conv.forward(source), rtol=1e-12, atol=1e-12)
    dl, dc = rng.standard_normal(loc.shape), rng.standard_normal(conf.shape)
    want_dsource = loc_conv.backward(dl) + conf_conv.backward(dc)
    want = {k: v.copy() for conv, tag in ((loc_conv, "loc"), (conf_conv, "conf"))
            for k, v in ((f"{tag}.{g}", conv.grads[g]) for g in conv.grads)}
    dsource = model._heads_backward(name, source, dl, dc)
    np.testing.assert_allclose(dsource, want_dsource, rtol=1e-12, atol=1e-12)
    for key, value in want.items():
        conv = loc_conv if key.startswith("loc") else conf_conv
        np.testing.assert_allclose(conv.grads[key.split(".")[1]], value, rtol=1e-12, atol=1e-12,
                                   err_msg=key)


def test_taps_is_the_old_name_of_source_layers():
    model = tiny64()
    assert model.source_layers == ("relu4_1", "relu7", "relu8_2", "relu9_2", "relu10_2")
    with pytest.warns(DeprecationWarning, match="source_layers"):
        assert model.taps == model.source_layers


# --------------------------------------------------------------------------- #
# S3FD's max-out background label on the first map(s) (arch.background_maxout, maxout_maps)
# --------------------------------------------------------------------------- #
def tiny64_maxout(m, num_classes=2, seed=0, maps=1):
    arch = dataclasses.replace(SSD_TINY_ARCH, background_maxout=m, maxout_maps=maps)
    return SSD(TINY64, num_classes, seed=seed, arch=arch).astype(np.float64)


def test_maxout_background_takes_the_largest_background_score():
    """(B, N, m + C) -> (B, N, 1 + C): the max of the first m, the classes unchanged; the
    backward sends the background's gradient to the winner only."""
    from minissd.ssd.model import maxout_background, maxout_background_backward
    scores = np.array([[[0.5, 2.0, -1.0, 7.0, 8.0],          # m = 3 backgrounds, C = 2 classes
                        [-3.0, -4.0, -2.5, 1.0, 0.0]]])     # (1, 2, 5)
    logits, arg = maxout_background(scores, 3)
    np.testing.assert_array_equal(logits, [[[2.0, 7.0, 8.0], [-2.5, 1.0, 0.0]]])
    np.testing.assert_array_equal(arg, [[1, 2]])
    d = np.array([[[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]]])
    np.testing.assert_array_equal(maxout_background_backward(d, arg, 3),
                                  [[[0.0, 10.0, 0.0, 20.0, 30.0], [0.0, 0.0, 40.0, 50.0, 60.0]]])


def test_maxout_background_gradient_check():
    """float64 central differences of sum(dy * maxout(x)) against the backward, random dy."""
    from minissd.ssd.model import maxout_background, maxout_background_backward
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 3 + 4))                    # scores well apart: no tie at 1e-6
    dy = rng.standard_normal((2, 7, 1 + 4))
    _, arg = maxout_background(x, 3)
    got = maxout_background_backward(dy, arg, 3)
    want = np.zeros_like(x)
    eps = 1e-6
    for i in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[i] += eps
        minus[i] -= eps
        want[i] = ((dy * maxout_background(plus, 3)[0]).sum()
                   - (dy * maxout_background(minus, 3)[0]).sum()) / (2 * eps)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


def test_background_maxout_widens_only_the_first_conf_head():
    plain, maxout = tiny64(num_classes=2), tiny64_maxout(3, num_classes=2)
    for i, name in enumerate(plain.source_names):
        k = plain.loc[name].out_channels // 4
        assert plain.conf[name].out_channels == k * 3
        assert maxout.conf[name].out_channels == k * (5 if i == 0 else 3)   # C + m on map 0
    loc, conf = maxout.forward(images_for(TINY64, 2))
    assert loc.shape == (2, TINY64.num_priors, 4) and conf.shape == (2, TINY64.num_priors, 3)


def test_background_maxout_with_silent_extra_scores_is_the_plain_model():
    """Give the m - 1 extra background scores of each first-map box zero weights and a bias
    of -1e3: they never win the max, and the model is the plain one with the same weights,
    forward and backward (the extra scores get no gradient)."""
    plain, maxout = tiny64(num_classes=2), tiny64_maxout(3, num_classes=2)
    state = plain.state_dict()
    name = plain.source_names[0]
    k = plain.loc[name].out_channels // 4
    w, b = state[f"conf.{name}.weight"], state[f"conf.{name}.bias"]     # (k*3, C_s, 3, 3), (k*3,)
    w5 = np.zeros((k, 5) + w.shape[1:])                                 # per box: bg, bg', bg'', c1, c2
    b5 = np.full((k, 5), -1e3)
    w5[:, [0, 3, 4]] = w.reshape((k, 3) + w.shape[1:])
    b5[:, [0, 3, 4]] = b.reshape(k, 3)
    maxout.load_state_dict(dict(state, **{f"conf.{name}.weight": w5.reshape((k * 5,) + w.shape[1:]),
                                          f"conf.{name}.bias": b5.reshape(-1)}))
    x = images_for(TINY64, 2)
    plain.train(), maxout.train()
    (l1, c1), (l2, c2) = plain.forward(x), maxout.forward(x)
    np.testing.assert_allclose(l2, l1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c2, c1, rtol=1e-12, atol=1e-12)
    rng = np.random.default_rng(5)
    dloc, dconf = rng.standard_normal(l1.shape), rng.standard_normal(c1.shape)
    d1, d2 = plain.backward(dloc, dconf), maxout.backward(dloc, dconf)
    np.testing.assert_allclose(d2, d1, rtol=1e-10, atol=1e-12)
    g = maxout.conf[name].grads["weight"].reshape((k, 5) + w.shape[1:])
    np.testing.assert_allclose(g[:, [0, 3, 4]].reshape(w.shape), plain.conf[name].grads["weight"],
                               rtol=1e-10, atol=1e-12)
    assert not g[:, [1, 2]].any()


@pytest.mark.parametrize("stacked", [True, False], ids=["stacked", "plain"])
def test_background_maxout_gradient_check_end_to_end(stacked):
    model = tiny64_maxout(3)
    first = model.source_names[0]
    with fast.fast_paths(stacked):
        check_backward(model, images_for(TINY64, 2),
                       params=[f"conf.{first}.weight", f"conf.{first}.bias", "vgg.conv1_1.weight"],
                       rng=np.random.default_rng(3), max_checks=6, atol=1e-6, rtol=1e-4)


def test_maxout_maps_widens_the_first_n_conf_heads():
    """arch.maxout_maps = 2: the first two maps have C + m scores per box, the rest C + 1;
    the logits are C + 1 everywhere."""
    model = tiny64_maxout(3, num_classes=2, maps=2)
    for i, name in enumerate(model.source_names):
        k = model.loc[name].out_channels // 4
        assert model.conf[name].out_channels == k * (5 if i < 2 else 3)
        assert model.scores_per_box(i) == (5 if i < 2 else 3)
    loc, conf = model.forward(images_for(TINY64, 2))
    assert loc.shape == (2, TINY64.num_priors, 4) and conf.shape == (2, TINY64.num_priors, 3)
    plain = tiny64_maxout(1, maps=2)                  # one background score: maxout_maps idle
    assert all(plain.scores_per_box(i) == 3 for i in range(len(plain.source_names)))


@pytest.mark.parametrize("stacked", [True, False], ids=["stacked", "plain"])
def test_maxout_maps_gradient_check_end_to_end(stacked):
    """float64 central differences through both max-out maps' heads and the trunk below them."""
    model = tiny64_maxout(3, maps=2)
    first, second = model.source_names[:2]
    with fast.fast_paths(stacked):
        check_backward(model, images_for(TINY64, 2),
                       params=[f"conf.{first}.weight", f"conf.{second}.weight", f"conf.{second}.bias",
                               "vgg.conv1_1.weight"],
                       rng=np.random.default_rng(4), max_checks=6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("n", [0, len(TINY64.feature_maps) + 1, True, 1.0])
def test_maxout_maps_must_count_source_maps(n):
    with pytest.raises(ValueError, match=r"maxout_maps must be an integer from 1 to the "
                                         rf"{len(TINY64.feature_maps)} source maps"):
        tiny64_maxout(3, maps=n)


@pytest.mark.parametrize("m", [0, 1.5, True])
def test_background_maxout_must_be_a_positive_integer(m):
    with pytest.raises(ValueError, match="background_maxout must be an integer >= 1"):
        tiny64_maxout(m)


def same_on_every_backend(xp, ref, grad):
    """Forward and backward of the float64 model ``ref`` and of a copy on xp give the same
    numbers: loc, conf, dimages and the parameter gradient ``grad`` (a dotted name)."""
    model = copy.deepcopy(ref).to(backend.device_of(xp.zeros(1)))
    x = images_for(TINY64, 2)
    rng = np.random.default_rng(6)
    dloc = rng.standard_normal((2, TINY64.num_priors, 4))
    dconf = rng.standard_normal((2, TINY64.num_priors, 3))
    outs = []
    for m, arr in ((ref, np), (model, xp)):
        m.train()
        loc, conf = m.forward(arr.asarray(x))
        assert backend.get_array_module(conf) is arr
        dimages = m.backward(arr.asarray(dloc), arr.asarray(dconf))
        owner, key = {name: (mod, k) for name, mod, k in m.named_parameters()}[grad]
        outs.append([backend.to_numpy(a) for a in (loc, conf, dimages, owner.grads[key])])
    for got, want in zip(*reversed(outs)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_background_maxout_runs_on_every_backend(xp):
    """A max-out model on xp gives NumPy's numbers (float64)."""
    ref = tiny64_maxout(3)
    same_on_every_backend(xp, ref, f"conf.{ref.source_names[0]}.weight")


# FPN's top-down path, one level, into the first source (arch.top_down)
def tiny64_top_down(num_classes=2, seed=0, randomise=True):
    """A top-down model; ``randomise``: the path's zero-initialised 1x1 conv given random weights,
    so that the checks below see it do something."""
    model = SSD(TINY64, num_classes, seed=seed,
                arch=dataclasses.replace(SSD_TINY_ARCH, top_down=True)).astype(np.float64)
    if randomise:
        w = model.top_down.params["weight"]
        model.top_down.params["weight"] = np.random.default_rng(7).standard_normal(w.shape) * 0.1
    return model


def test_top_down_starts_as_the_plain_model():
    """The path's conv starts at zero: the same seed gives the plain model's outputs, bit for bit,
    and the path's own weights still get a gradient (it learns from the first step)."""
    plain, td = tiny64(), tiny64_top_down(randomise=False)
    assert td.top_down.in_channels == SSD_TINY_ARCH.fc7
    assert td.top_down.out_channels == SSD_TINY_ARCH.source_channels[0]
    x = images_for(TINY64, 2)
    plain.train(), td.train()
    (l1, c1), (l2, c2) = plain.forward(x), td.forward(x)
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(c1, c2)
    rng = np.random.default_rng(8)
    dloc, dconf = rng.standard_normal(l1.shape), rng.standard_normal(c1.shape)
    td.backward(dloc, dconf)
    assert np.abs(td.top_down.grads["weight"]).sum() > 0


def test_top_down_adds_the_upsampled_second_source_to_the_first():
    """The first heads' input is L2Norm(first source + 2x nearest upsampling of conv1x1(fc7))."""
    model = tiny64_top_down().train()
    log, sources = {}, {}
    record_outputs(getattr(model.vgg, model.source_layers[0]), log, "first")
    record_outputs(model.vgg.relu7, log, "fc7")
    record_head_outputs(model, log, sources)
    model.forward(images_for(TINY64, 2))
    w, b = model.top_down.params["weight"][:, :, 0, 0], model.top_down.params["bias"]
    lateral = np.einsum("oc,nchw->nohw", w, log["fc7"]) + b[None, :, None, None]
    up = lateral.repeat(2, axis=2).repeat(2, axis=3)
    fused = log["first"] + up
    weight = model.l2norm.params["weight"]
    want = weight[None, :, None, None] * fused / (np.sqrt((fused ** 2).sum(1, keepdims=True)) + model.l2norm.eps)
    assert fused.shape == log["first"].shape                    # (B, 128, 8, 8) at 64 px
    np.testing.assert_allclose(sources[model.source_names[0]], want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("stacked", [True, False], ids=["stacked", "plain"])
def test_top_down_gradient_check_end_to_end(stacked):
    """float64 central differences through the path's conv, fc7 (three consumers now) and the base."""
    model = tiny64_top_down()
    with fast.fast_paths(stacked):
        check_backward(model, images_for(TINY64, 2),
                       params=["top_down.weight", "top_down.bias", "vgg.fc7.weight", "vgg.conv1_1.weight"],
                       rng=np.random.default_rng(9), max_checks=6, atol=1e-6, rtol=1e-4)


def test_top_down_needs_the_first_map_twice_the_second():
    cfg = dataclasses.replace(TINY64, feature_maps=(8, 8, 2, 1, 1))
    with pytest.raises(ValueError, match=r"top_down needs the first feature map twice the second, "
                                         r"config 'ssd-tiny-64' has feature_maps \(8, 8, 2, 1, 1\)"):
        SSD(cfg, 2, arch=dataclasses.replace(SSD_TINY_ARCH, top_down=True))


def test_top_down_must_be_a_bool():
    with pytest.raises(ValueError, match="top_down must be True or False, got 1"):
        SSD(TINY64, 2, arch=dataclasses.replace(SSD_TINY_ARCH, top_down=1))


def test_top_down_runs_on_every_backend(xp):
    """A top-down model on xp gives NumPy's numbers (float64)."""
    same_on_every_backend(xp, tiny64_top_down(), "top_down.weight")


@pytest.mark.parametrize("m", [1, 3])
def test_background_prior_gives_each_box_the_background_probability(m):
    """set_background_prior(p): from the biases alone every box's softmax gives the background
    p (each of the m max-out background scores at the same bias), whatever the map."""
    model = tiny64_maxout(m, num_classes=4).set_background_prior(0.99)
    for i, name in enumerate(model.source_names):
        bias = model.conf[name].params["bias"].reshape(-1, model.scores_per_box(i))
        logits = np.concatenate([bias[:, :model.arch.background_scores(i)].max(axis=1, keepdims=True),
                                 bias[:, model.arch.background_scores(i):]], axis=1)   # (k, 1 + C)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(probs[:, 0], 0.99, rtol=1e-12)
    assert model.arch.background_scores(0) == m
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\)"):
        model.set_background_prior(1.0)
