"""Published weights into minissd's SSD, without torch.

Two kinds of checkpoint are read with :func:`minissd.interop.pth.load_state_dict_pth`
(a restricted unpickler: arrays only):

* torchvision's ImageNet VGG16 (``vgg16-397923af.pth``) -> the SSD300 base
  (:func:`load_vgg16_torchvision`). conv1_1 ... conv5_3 are copied; the fully
  connected fc6/fc7 become SSD's atrous fc6 (3x3, dilation 6, 1024) and 1x1 fc7
  (1024) by *decimation*, as the paper does ("we convert fc6 and fc7 to
  convolutional layers, subsample parameters from fc6 and fc7"):

      fc6: (4096, 25088) -> (4096, 512, 7, 7) -> W[0::4, :, 0::3, 0::3] = (1024, 512, 3, 3)
      fc7: (4096, 4096)  -> W[0::4, 0::4]  -> (1024, 1024, 1, 1);  biases b[0::4]

  keeping outputs 0, 4, 8, ... and kernel taps 0, 3, 6 of the 7x7 window
  (the dilation then spreads the 3 taps apart again). These are the indices of
  the ``decimate(tensor, m=[4, None, 3, 3])`` / ``m=[4, 4, None, None]`` helper
  in sgrvinod/a-PyTorch-Tutorial-to-Object-Detection (model.py, utils.py:
  ``index_select(d, arange(0, size, step=m))``). The Caffe model SSD started
  from (``VGG_ILSVRC_16_layers_fc_reduced``, from DeepLab) was subsampled the
  same way; its exact indices are not published, so an SSD trained from this
  conversion starts close to, not identical with, the paper's.
  The extras, heads and L2Norm keep their initialisation.
  Preprocessing for these weights: RGB in [0, 1], minus mean (0.485, 0.456,
  0.406), divided by std (0.229, 0.224, 0.225) — torchvision's ImageNet transform.

* ssd.pytorch's trained SSD300 (``ssd300_mAP_77.43_v2.pth``, VOC07+12, 21
  classes) -> the whole model (:func:`load_ssd_pytorch`). Keys map one to one:
  ``vgg.{i}`` is the i-th layer of ``model.vgg`` (same order: conv, relu, pool,
  ..., pool5, fc6, relu6, fc7, relu7), ``L2Norm.weight`` is ``l2norm.weight``,
  ``extras.{j}`` the j-th conv of ``model.extras``, ``loc.{m}``/``conf.{m}`` the
  heads of source m. Build the model as ``SSD(get_config('ssd300'), 20)``.
  Preprocessing for these weights (ssd.pytorch's BaseTransform, inherited from
  Caffe): resize to 300x300, **BGR** channel order, pixel values 0..255 minus the
  mean (104, 117, 123), no division by a std. :func:`ssd_pytorch_preprocess`
  does the colour part. (ssd.pytorch clamps its priors' (cx, cy, w, h) where
  minissd clips corners, see minissd.ssd.priors: border detections differ slightly.)

Both loaders are shape-generic (they follow the model's layer list), so a
small VGG-style model works as well as SSD300 — the tests use that. A missing
key or a wrong shape raises an error naming the checkpoint key.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from minissd.errors import UserError, UserKeyError
from minissd.nn.layers import Conv2d

SSD_PYTORCH_MEAN_BGR = (104.0, 117.0, 123.0)        # subtracted from 0..255 BGR pixels
TORCHVISION_MEAN_RGB = (0.485, 0.456, 0.406)        # of [0, 1] RGB pixels
TORCHVISION_STD_RGB = (0.229, 0.224, 0.225)
FC6_WINDOW = 7                                      # VGG16's fc6 sees a 7x7x512 window


def _read(path):
    """The checkpoint's arrays by key (no torch; a DataParallel 'module.' prefix is dropped)."""
    from minissd.interop.pth import load_state_dict_pth
    return load_state_dict_pth(path)


def _take(state, key, shape, source):
    """state[key] as a NumPy array, with a clear error if it is missing or the wrong shape."""
    if key not in state:
        raise UserKeyError(f"{source}: key {key!r} is missing (found {len(state)} keys, e.g. "
                           f"{', '.join(list(state)[:4])})")
    value = np.asarray(state[key])
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise UserError(f"{source}: key {key!r} has shape {tuple(value.shape)}, "
                        f"the model expects {tuple(shape)}")
    return value


def _convs(seq):
    """(name, conv) of the Conv2d layers of a named Sequential, with their index in it."""
    return [(i, name, layer) for i, (name, layer) in enumerate(seq.named_children())
            if isinstance(layer, Conv2d)]


# --------------------------------------------------------------------------- #
# ssd.pytorch
# --------------------------------------------------------------------------- #
def _state_keys(layer):
    """A layer's parameter and buffer keys ('weight', 'bias', 'running_mean', ...)."""
    return list(layer.params) + list(layer.buffers)


def ssd_pytorch_key_map(model) -> "OrderedDict[str, str]":
    """minissd state name -> ssd.pytorch checkpoint key, for every parameter and buffer of ``model``.

    ``vgg.{i}`` is the i-th layer of ``model.vgg`` (with ``batch_norm`` the BatchNorm
    sits between conv and ReLU, as in ssd.pytorch's ``vgg(cfg, batch_norm=True)``).
    ssd.pytorch's extras have no BatchNorm; an ssd-tiny's extras BatchNorm after
    ``extras.{j}`` is called ``extras_bn.{j}`` (tests/torch_reference.py does the same).
    """
    keys = OrderedDict()
    for i, (name, layer) in enumerate(model.vgg.named_children()):
        for p in _state_keys(layer):
            keys[f"vgg.{name}.{p}"] = f"vgg.{i}.{p}"
    keys["l2norm.weight"] = "L2Norm.weight"
    j = -1
    for name, layer in model.extras.named_children():
        if isinstance(layer, Conv2d):
            j += 1
            prefix = f"extras.{j}"
        else:
            prefix = f"extras_bn.{j}"
        for p in _state_keys(layer):
            keys[f"extras.{name}.{p}"] = f"{prefix}.{p}"
    for m, source in enumerate(model.source_names):
        for head in ("loc", "conf"):
            for p in getattr(model, head)[source].params:
                keys[f"{head}.{source}.{p}"] = f"{head}.{m}.{p}"
    return keys


IGNORED_SUFFIXES = (".num_batches_tracked",)   # torch's BatchNorm step counter: not used


def from_ssd_pytorch(model, state: dict, source: str = "ssd.pytorch state dict"):
    """An ssd.pytorch-layout state dict -> minissd's, checked against ``model``'s shapes."""
    own = model.state_dict()
    keys = ssd_pytorch_key_map(model)
    unexpected = sorted(k for k in set(state) - set(keys.values()) if not k.endswith(IGNORED_SUFFIXES))
    if unexpected:
        raise UserKeyError(f"{source}: unexpected key(s) {', '.join(unexpected[:6])} — not an "
                           f"ssd.pytorch layout for architecture {model.arch.name!r}?")
    out = OrderedDict()
    for name, key in keys.items():
        out[name] = _take(state, key, own[name].shape, source)
    return out


def load_ssd_pytorch(model, path):
    """Load an ssd.pytorch SSD checkpoint (e.g. ssd300_mAP_77.43_v2.pth) into ``model``."""
    return model.load_state_dict(from_ssd_pytorch(model, _read(path), str(path)), source=str(path))


def ssd_pytorch_preprocess(image_rgb):
    """(S, S, 3) RGB 0..255 (already resized) -> (3, S, S) float32 as ssd.pytorch's weights expect."""
    bgr = np.asarray(image_rgb, dtype=np.float32)[:, :, ::-1]
    return np.ascontiguousarray((bgr - np.asarray(SSD_PYTORCH_MEAN_BGR, np.float32)).transpose(2, 0, 1))


# --------------------------------------------------------------------------- #
# torchvision VGG16 (ImageNet)
# --------------------------------------------------------------------------- #
def decimate_fc6(weight, bias, out_channels, in_channels, source="checkpoint"):
    """classifier.0 (F, C*7*7), (F,) -> atrous fc6 (out, C, 3, 3), (out,).

    Keeps every (F/out)-th output unit, all inputs, and kernel taps 0, 3, 6 of the 7x7 window.
    """
    F = weight.shape[0]
    if weight.shape[1] != in_channels * FC6_WINDOW ** 2 or F % out_channels:
        raise UserError(f"{source}: key 'classifier.0.weight' has shape {tuple(weight.shape)}; "
                        f"expected (a multiple of {out_channels}, {in_channels}*7*7)")
    step = F // out_channels
    w = weight.reshape(F, in_channels, FC6_WINDOW, FC6_WINDOW)           # (F, C, 7, 7)
    return w[::step, :, ::3, ::3].copy(), bias[::step].copy()            # (out, C, 3, 3), (out,)


def decimate_fc7(weight, bias, out_channels, in_channels, source="checkpoint"):
    """classifier.3 (F, F), (F,) -> fc7 (out, in, 1, 1), (out,).

    Keeps every (F/out)-th output unit and every (F/in)-th input (the fc6 units kept).
    """
    F_out, F_in = weight.shape
    if F_out % out_channels or F_in % in_channels:
        raise UserError(f"{source}: key 'classifier.3.weight' has shape {tuple(weight.shape)}; "
                        f"expected multiples of ({out_channels}, {in_channels})")
    w = weight[::F_out // out_channels, ::F_in // in_channels]                # (out, in)
    return w[:, :, None, None].copy(), bias[::F_out // out_channels].copy()  # (out, in, 1, 1)


def from_vgg16_torchvision(model, state: dict, source: str = "torchvision VGG16 state dict"):
    """torchvision VGG16 arrays -> the model's base parameters (conv1_1..conv5_3, fc6, fc7)."""
    own = model.state_dict()
    out = OrderedDict()
    for i, name, conv in _convs(model.vgg):
        if name in ("fc6", "fc7"):
            continue
        # torchvision's `features` list has the same conv/relu/pool order, hence the same index
        for p in conv.params:
            out[f"vgg.{name}.{p}"] = _take(state, f"features.{i}.{p}", own[f"vgg.{name}.{p}"].shape,
                                           source)
    fc6, fc7 = model.vgg.fc6, model.vgg.fc7
    w6, b6 = decimate_fc6(_take(state, "classifier.0.weight", None, source),
                          _take(state, "classifier.0.bias", None, source),
                          fc6.out_channels, fc6.in_channels, source)
    w7, b7 = decimate_fc7(_take(state, "classifier.3.weight", None, source),
                          _take(state, "classifier.3.bias", None, source),
                          fc7.out_channels, fc7.in_channels, source)
    if w6.shape[2:] != fc6.kernel_size:
        raise UserError(f"{source}: fc6 decimates to a {w6.shape[2:]} kernel, the model's fc6 "
                        f"is {fc6.kernel_size}")
    out.update({"vgg.fc6.weight": w6, "vgg.fc6.bias": b6, "vgg.fc7.weight": w7, "vgg.fc7.bias": b7})
    return out


def load_vgg16_torchvision(model, path):
    """Load torchvision's ImageNet VGG16 (vgg16-*.pth) into the SSD base; the rest keeps its init."""
    state = model.state_dict()
    state.update(from_vgg16_torchvision(model, _read(path), str(path)))
    return model.load_state_dict(state, source=str(path))
