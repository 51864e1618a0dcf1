"""SSD's networks in a small dataclass: the VGG base, the atrous fc6/fc7 and the extra layers.

SSD300 (Liu et al. 2016; ssd.pytorch's ``vgg()`` and ``add_extras()``) reads

    conv1_1 conv1_2 pool1                 300 -> 150      64 channels
    conv2_1 conv2_2 pool2                 150 -> 75      128
    conv3_1 conv3_2 conv3_3 pool3 (ceil)   75 -> 38      256
    conv4_1 conv4_2 conv4_3 ............  38x38  512   -> source 1 (through L2Norm, scale 20)
    pool4 conv5_1 conv5_2 conv5_3          38 -> 19      512
    pool5 (3x3, stride 1, pad 1)          keeps 19x19
    fc6 (3x3, dilation 6, pad 6) fc7 (1x1) 19x19 1024    -> source 2
    conv8_1 (1x1 256)  conv8_2 (3x3/2 p1 512)  10x10     -> source 3
    conv9_1 (1x1 128)  conv9_2 (3x3/2 p1 256)   5x5      -> source 4
    conv10_1 (1x1 128) conv10_2 (3x3 valid 256) 3x3      -> source 5
    conv11_1 (1x1 128) conv11_2 (3x3 valid 256) 1x1      -> source 6

with a ReLU after every convolution. :class:`SSDArch` holds these numbers;
:func:`build_vgg` and :func:`build_extras` turn them into named layers
(``conv4_3``, ``relu4_3``, ``pool4``, ``fc6`` ...) in exactly ssd.pytorch's
order, so the i-th layer here is ssd.pytorch's ``vgg[i]`` (used by
:mod:`minissd.interop.weights`).

``PRESETS`` maps a model name to its :class:`Preset`: the SSDConfig (default
boxes, :mod:`minissd.ssd.config`) and the SSDArch, so
``SSD(get_config('ssd-tiny'), 3)`` needs no further argument.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

from minissd.errors import UserError
from minissd.nn.layers import BatchNorm2d, Conv2d, MaxPool2d, ReLU, Sequential
from minissd.ssd.config import (SSD300, SSD512, SSD_CPU, SSD_CPU_160, SSD_CPU_256, SSD_CPU_W96, SSD_TINY,
                                SSDConfig)

POOL, CEIL_POOL = "M", "C"      # 2x2 max pool, stride 2 (floor / ceil output size)


@dataclass(frozen=True)
class SSDArch:
    """Channel plan of an SSD with a VGG-style base.

    base: the plan up to the first source (conv4_3 in SSD300): an int is a 3x3
        conv (padding 1) with that many output channels, then a ReLU;
        'M' is a 2x2/2 max pool, 'C' the same with ``ceil_mode``.
    base_tail: the plan from the first source to pool5 (pool4, conv5_x).
    fc6, fc6_dilation: the atrous 3x3 conv after pool5 (padding = dilation).
    fc7: the 1x1 conv after fc6; its output is the second source.
    extras: one (mid, out, kernel, stride, padding) per extra source: a 1x1 conv
        to ``mid`` channels, then a ``kernel`` conv to ``out`` channels.
    l2norm_scale: initial scale of the L2Norm on the first source.
    base_init: 'he' for the base (no ImageNet weights) or 'xavier'.
    batch_norm: a BatchNorm2d between each conv (then bias-free) and its ReLU, in
        the base and the extras (not the heads). Not in the paper: it lets a small
        model trained from scratch (no ImageNet weights) learn several times faster.
    stem_stride: stride of the first conv (1 in VGG; 2 halves the input at once,
        which spares a small model its most memory-hungry full-resolution map).
    background_maxout: background scores per default box on the FIRST source map, of
        which the largest is the background's logit (S3FD's max-out background label,
        Zhang et al. 2017, sec. 3.3: the first map's many small boxes are mostly
        background, and several background scores let it say so more easily).
        1: the paper's single background score.
    maxout_maps: how many source maps, from the first, have the max-out background
        scores when ``background_maxout`` > 1 (S3FD's: 1, the first map only).
    top_down: a top-down path into the first source (FPN's, Lin et al. 2017, one level;
        DSSD and FSSD bring context to SSD's small boxes the same way): the second source
        (fc7) through a 1x1 conv to the first source's channels, upsampled 2x (nearest),
        added to the first source before its L2Norm. Only the heads see the sum; the trunk
        goes on from the plain first source. Needs the first map twice the second's size.
        False: the paper's SSD.
    """
    name: str
    base: tuple
    base_tail: tuple
    fc6: int
    fc6_dilation: int
    fc7: int
    extras: tuple
    l2norm_scale: float = 20.0
    in_channels: int = 3
    base_init: str = "he"
    stem_stride: int = 1
    batch_norm: bool = False
    background_maxout: int = 1
    maxout_maps: int = 1
    top_down: bool = False

    def background_scores(self, i: int) -> int:
        """Background scores per default box on source map i: ``background_maxout`` on the
        first ``maxout_maps`` maps, 1 on the others."""
        return self.background_maxout if i < self.maxout_maps else 1

    @classmethod
    def from_dict(cls, d: dict) -> "SSDArch":
        """From JSON-style lists and numbers (inverse of ``to_dict``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        if set(d) - names:
            raise UserError(f"SSDArch.from_dict: unknown keys {sorted(set(d) - names)}")
        d = dict(d)
        for f in ("base", "base_tail"):
            d[f] = tuple(d[f])
        d["extras"] = tuple(tuple(e) for e in d["extras"])
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def source_channels(self) -> tuple:
        """Channels of each source map: last base conv, fc7, then each extra."""
        last = [v for v in self.base if isinstance(v, int)][-1]
        return (last, self.fc7) + tuple(e[1] for e in self.extras)


VGG16_BASE = (64, 64, POOL, 128, 128, POOL, 256, 256, 256, CEIL_POOL, 512, 512, 512)
VGG16_TAIL = (POOL, 512, 512, 512)

SSD300_ARCH = SSDArch(
    name="ssd300", base=VGG16_BASE, base_tail=VGG16_TAIL,
    fc6=1024, fc6_dilation=6, fc7=1024,
    extras=((256, 512, 3, 2, 1),        # conv8:  19 -> 10
            (128, 256, 3, 2, 1),        # conv9:  10 -> 5
            (128, 256, 3, 1, 0),        # conv10:  5 -> 3
            (128, 256, 3, 1, 0)))       # conv11:  3 -> 1

# Caffe SSD512 (ssd_pascal_512.py): one more stride-2 extra, and a 4x4 conv (pad 1) for 2 -> 1.
SSD512_ARCH = SSDArch(
    name="ssd512", base=VGG16_BASE, base_tail=VGG16_TAIL,
    fc6=1024, fc6_dilation=6, fc7=1024,
    extras=((256, 512, 3, 2, 1),        # conv8:  32 -> 16
            (128, 256, 3, 2, 1),        # conv9:  16 -> 8
            (128, 256, 3, 2, 1),        # conv10:  8 -> 4
            (128, 256, 3, 2, 1),        # conv11:  4 -> 2
            (128, 256, 4, 1, 1)))       # conv12:  2 -> 1

# ssd-tiny: the same design, scaled for 128-px inputs and a 2-core CPU. One conv per
# stage and narrow channels keep it at ~0.1 GMACs per image (see `minissd summary`).
SSD_TINY_ARCH = SSDArch(
    name="ssd-tiny",
    base=(16, POOL, 32, POOL, 64, POOL, 128),     # 128 -> 64 -> 32 -> 16: source 1 (16x16)
    base_tail=(POOL, 128),                         # 16 -> 8
    fc6=256, fc6_dilation=3, fc7=256,              # atrous 3x3 at 8x8: source 2
    extras=((64, 128, 3, 2, 1),                    # 8 -> 4
            (64, 128, 3, 2, 1),                    # 4 -> 2
            (64, 128, 3, 2, 1)),                   # 2 -> 1
    batch_norm=True)                               # trained from scratch: BN after each conv

# ssd-cpu: ssd-tiny's widths on a 192-px input. The stride-2 stem and a pool bring it to
# 48x48 at once; two convs at 24x24 give the first source (stride 8) four convs of depth, as
# ssd-tiny's; BN after every conv, the extras included. ~0.18 GMACs per image (`minissd summary`).
SSD_CPU_ARCH = SSDArch(
    name="ssd-cpu",
    base=(16, POOL, 32, POOL, 64, 64),            # 192 -/2-> 96 -> 48 -> 24: source 1 (24x24)
    base_tail=(POOL, 128, 128),                    # 24 -> 12
    fc6=256, fc6_dilation=3, fc7=256,              # atrous 3x3 at 12x12: source 2
    extras=((64, 128, 3, 2, 1),                    # 12 -> 6
            (64, 128, 3, 2, 1),                    # 6 -> 3
            (64, 128, 3, 1, 0)),                   # 3 -> 1
    stem_stride=2, batch_norm=True)

# ssd-cpu-w96: ssd-cpu with 96 channels (not 64) in the two convs at 24x24 that feed the first
# source, where the small objects (people) are found; +10 % parameters, +27 % MACs (~0.24
# GMACs with --top-down and --background-maxout 3). models/README.md, "A wider first source".
SSD_CPU_W96_ARCH = dataclasses.replace(SSD_CPU_ARCH, name="ssd-cpu-w96",
                                       base=(16, POOL, 32, POOL, 96, 96))

# --------------------------------------------------------------------------- #
# The model presets: one registry, name -> (default boxes, channel plan).
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Preset:
    """A named SSD: its default boxes and sizes (SSDConfig) and its channel plan (SSDArch)."""
    config: SSDConfig
    arch: SSDArch

    def __post_init__(self):
        if self.config.name != self.arch.name:
            raise ValueError(f"Preset: config {self.config.name!r} paired with architecture "
                             f"{self.arch.name!r}")


PRESETS = {p.config.name: p for p in (
    Preset(SSD300, SSD300_ARCH), Preset(SSD512, SSD512_ARCH), Preset(SSD_TINY, SSD_TINY_ARCH),
    Preset(SSD_CPU, SSD_CPU_ARCH), Preset(SSD_CPU_W96, SSD_CPU_W96_ARCH),
    # the same layers on other inputs (progressive resizing; the weights move between them)
    Preset(SSD_CPU_160, dataclasses.replace(SSD_CPU_ARCH, name="ssd-cpu-160")),
    Preset(SSD_CPU_256, dataclasses.replace(SSD_CPU_ARCH, name="ssd-cpu-256")))}


def get_arch(name: str) -> SSDArch:
    """The architecture registered for a config name ('ssd300', 'ssd512', 'ssd-tiny', 'ssd-cpu', ...)."""
    if name not in PRESETS:
        raise UserError(f"no SSD architecture registered for config {name!r}: known are "
                        f"{sorted(PRESETS)} (or pass arch=SSDArch(...) to SSD)")
    return PRESETS[name].arch


def __getattr__(name):
    """``ARCHS`` (name -> SSDArch) is now part of :data:`PRESETS`."""
    if name == "ARCHS":
        warnings.warn("minissd.ssd.architecture.ARCHS is now PRESETS[name].arch",
                      DeprecationWarning, stacklevel=2)
        return {key: preset.arch for key, preset in PRESETS.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _named_sequential(layers) -> Sequential:
    """A Sequential whose children carry readable names ('conv4_3', 'relu4_3', ...)."""
    seq = Sequential()
    for name, layer in layers:
        setattr(seq, name, layer)
    return seq


def _conv_block(name, suffix, conv, batch_norm):
    """[(conv name, conv), (bn name, BatchNorm2d)?, (relu name, ReLU)] for one conv."""
    block = [(name, conv)]
    if batch_norm:
        block.append((f"bn{suffix}", BatchNorm2d(conv.out_channels)))
    return block + [(f"relu{suffix}", ReLU(inplace=True))]          # nothing else keeps conv/bn outputs


def _plan_layers(plan, in_channels, stage, index, rng, init, first_stride=1, batch_norm=False):
    """Layers for a plan (ints and pools), numbering convs conv{stage}_{index}."""
    layers, stride = [], first_stride
    for v in plan:
        if v in (POOL, CEIL_POOL):
            layers.append((f"pool{stage}", MaxPool2d(2, 2, ceil_mode=(v == CEIL_POOL))))
            stage, index = stage + 1, 0
        elif isinstance(v, int):
            index += 1
            conv = Conv2d(in_channels, v, 3, stride=stride, padding=1, bias=not batch_norm,
                          rng=rng, init=init)
            layers += _conv_block(f"conv{stage}_{index}", f"{stage}_{index}", conv, batch_norm)
            in_channels, stride = v, 1
        else:
            raise UserError(f"SSDArch plan entry {v!r}: expected a channel count, "
                            f"{POOL!r} or {CEIL_POOL!r}")
    return layers, in_channels, stage, index


def build_vgg(arch: SSDArch, rng):
    """The base network as one named Sequential, and the name of the layer whose output is source 1.

    Layer order is ssd.pytorch's ``vgg`` list: conv, relu, ..., pool5, fc6, relu6, fc7, relu7.
    """
    init = arch.base_init
    bn = arch.batch_norm
    layers, c, stage, index = _plan_layers(arch.base, arch.in_channels, 1, 0, rng, init,
                                           first_stride=arch.stem_stride, batch_norm=bn)
    source = layers[-1][0]                                # relu4_3 in SSD300
    more, c, stage, _ = _plan_layers(arch.base_tail, c, stage, index, rng, init, batch_norm=bn)
    d = arch.fc6_dilation
    layers += more + [
        (f"pool{stage}", MaxPool2d(3, 1, padding=1)),     # pool5: 3x3/1, keeps the size
    ]
    layers += _conv_block("fc6", "6", Conv2d(c, arch.fc6, 3, padding=d, dilation=d, bias=not bn,
                                             rng=rng, init=init), bn)
    layers += _conv_block("fc7", "7", Conv2d(arch.fc6, arch.fc7, 1, bias=not bn, rng=rng,
                                             init=init), bn)
    return _named_sequential(layers), source


EXTRAS_FIRST = 8    # the paper numbers the extra layers conv8_x, conv9_x, ...


def build_extras(arch: SSDArch, rng):
    """The extra layers (Xavier init) as one named Sequential, and the layer names of their sources."""
    layers, sources, c = [], [], arch.fc7
    for n, (mid, out, k, s, p) in enumerate(arch.extras, start=EXTRAS_FIRST):
        bn = arch.batch_norm
        layers += _conv_block(f"conv{n}_1", f"{n}_1",
                              Conv2d(c, mid, 1, bias=not bn, rng=rng, init="xavier"), bn)
        layers += _conv_block(f"conv{n}_2", f"{n}_2",
                              Conv2d(mid, out, k, stride=s, padding=p, bias=not bn, rng=rng,
                                     init="xavier"), bn)
        sources.append(f"relu{n}_2")
        c = out
    return _named_sequential(layers), sources
