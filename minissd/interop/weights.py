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
  heads of source m. Build the model as ``SSD(get_config('ssd300'), 20)``, or let
  ``Detector.from_ssd_pytorch`` build it.
  To run these weights as ssd.pytorch does, use
  ``minissd.evaluation.inference.Detector.from_ssd_pytorch(path)`` (or ``minissd detect
  --ssd-pytorch-weights PATH``); it sets the three things below together.

  1. Preprocessing (:func:`ssd_pytorch_preprocess`): resize to 300x300 with
     ``cv2.resize``'s bilinear, subtract the mean, **RGB** channel order, no division by
     a std: the network sees (R - 123, G - 117, B - 104). ssd.pytorch subtracts its BGR
     mean (104, 117, 123) from the BGR image OpenCV reads and then flips to RGB:
     data/__init__.py ``base_transform``: ``x = cv2.resize(image, (size, size)).astype(np.float32);
     x -= mean``; data/voc0712.py ``VOCDetection.pull_item``: ``img = img[:, :, (2, 1, 0)]``
     ("to rgb"), which its eval.py (the 77.43 mAP) and demo notebook go through. (Only its
     test.py and live.py feed BGR; ssd.pytorch issue #31 reports a channel swap costing
     about 4.7 mAP on a related model.)
  2. Priors: ssd.pytorch clamps the (cx, cy, w, h) numbers to [0, 1]
     (``SSDConfig.clip="cxcywh"``) where minissd clips corners (``"corners"``): 2865 of
     SSD300's 8732 priors (33 %) differ, by up to 0.43 of the image side in w or h and
     0.21 in cx or cy (IoU between the two versions of a prior: median 0.69, worst 0.21);
     see minissd.ssd.priors.
  3. Detection (``minissd.ssd.postprocess.SSD_PYTORCH_DETECT``): ssd.pytorch does not clip
     decoded boxes, keeps each class's 200 best candidates before NMS, and has no overall
     cap (up to 20 x 200 detections); minissd's default clips, keeps every candidate and
     caps at 200 of all classes.

  How much this matters, measured on a random SSD300 and a random image
  (tests/interop/test_ssd_pytorch_parity.py, where torch is installed): the same raw
  outputs through minissd's default priors and detection step keep 117 of ssd.pytorch's 144
  detections when few scores pass 0.01 (1035 of the 8732 x 20; the overall cap of 200 does
  not bind there: the priors, the clipping and the per-class cut make the difference) and
  122 of its 2193 when nearly all do (174,528). ``Detector.from_ssd_pytorch`` gives all of
  them, as an independent PyTorch replica of ssd.pytorch does: the same count per class,
  boxes within 1e-5.

Both loaders are shape-generic (they follow the model's layer list), so a
small VGG-style model works as well as SSD300 — the tests use that. A missing
key or a wrong shape raises an error naming the checkpoint key.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from minissd.errors import UserError, UserKeyError
from minissd.nn.layers import Conv2d

SSD_PYTORCH_MEAN_BGR = (104.0, 117.0, 123.0)        # ssd.pytorch's MEANS, of 0..255 BGR pixels
SSD_PYTORCH_MEAN_RGB = SSD_PYTORCH_MEAN_BGR[::-1]   # (123, 117, 104): what its network sees, in RGB
SSD_PYTORCH_SIZE = 300
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


def cv2_resize_linear(image, size):
    """uint8 (H, W, C) -> uint8 (size, size, C), as ``cv2.resize(image, (size, size))`` computes it.

    OpenCV's default INTER_LINEAR: half-pixel centres, no antialiasing when shrinking (PIL's
    bilinear averages over the whole footprint, so its pixels differ), and 8-bit fixed point:
    each axis's two weights rounded to 11 bits, the row sums cut to 4 fewer bits before the
    vertical pass. Checked against OpenCV 4.14 (tests/interop/test_weights.py): identical when
    both sides shrink (VOC's 500 x 375 photos), at most 1 grey level apart on 0.3 % of the
    pixels when a side grows.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"cv2_resize_linear: expected a uint8 (H, W, C) image, got "
                         f"{image.dtype} {image.shape}")

    def taps(n_in):
        """Per output pixel of one axis: the two source indices and their 11-bit weights."""
        src = ((np.arange(size) + 0.5) * (n_in / size) - 0.5).astype(np.float32)  # (size,)
        i0 = np.floor(src).astype(np.int64)
        frac = src - i0.astype(np.float32)
        frac[i0 < 0] = 0                                     # clamp at the first pixel ...
        frac[i0 >= n_in - 1] = 0                             # ... and at the last
        i0 = np.clip(i0, 0, n_in - 1)
        w0 = np.rint((1 - frac) * 2048).astype(np.int64)     # each weight rounded on its own
        w1 = np.rint(frac * 2048).astype(np.int64)
        return i0, np.minimum(i0 + 1, n_in - 1), w0, w1

    y0, y1, wy0, wy1 = taps(image.shape[0])
    x0, x1, wx0, wx1 = taps(image.shape[1])
    a = image.astype(np.int64)
    rows = (a[:, x0] * wx0[:, None] + a[:, x1] * wx1[:, None]) >> 4  # (H, size, C), scale 128
    out = (((rows[y0] * wy0[:, None, None]) >> 16) + ((rows[y1] * wy1[:, None, None]) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)                     # (size, size, C)


def ssd_pytorch_preprocess(image_rgb, size=SSD_PYTORCH_SIZE):
    """uint8 (H, W, 3) RGB -> (3, size, size) float32 (R - 123, G - 117, B - 104), as ssd.pytorch.

    ssd.pytorch's BaseTransform on OpenCV's BGR image, then pull_item's flip to RGB
    (module docstring): ``cv2.resize(image, (size, size)).astype(np.float32) - (104, 117, 123)``,
    then ``img[:, :, (2, 1, 0)]``. Resizing and subtracting work per channel, so doing them
    on the RGB image with the mean reversed gives the same numbers.
    """
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"ssd_pytorch_preprocess: expected an (H, W, 3) RGB image, got shape "
                         f"{image.shape}")
    if image.shape[:2] != (size, size):
        image = cv2_resize_linear(image, size)
    rgb = image.astype(np.float32) - np.asarray(SSD_PYTORCH_MEAN_RGB, np.float32)  # (S, S, 3)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))                            # (3, S, S)


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
