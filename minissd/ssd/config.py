"""SSD's geometry in one dataclass: which feature maps predict, and what default boxes they own.

Each source feature map k (a grid of f_k x f_k cells, one cell every ``steps[k]``
input pixels) puts a few default boxes at every cell: two squares, of side
``min_sizes[k]`` and sqrt(min_sizes[k] * max_sizes[k]) pixels, and for every
aspect ratio ar two boxes of the min size stretched to ar and 1/ar. Early,
fine maps get small boxes, late, coarse maps big ones.

The paper spaces the scales (box side / image side) linearly over m maps,

    s_k = s_min + (s_max - s_min) (k - 1) / (m - 1),   s_min = 0.2, s_max = 0.9,

and ``max_sizes[k]`` is the next map's scale s_{k+1}. The released Caffe code
(and ssd.pytorch's numbers, copied from it) changes two things: conv4_3 is set
apart with scale 0.1 (SSD512: 0.07) and max size s_min, the rule runs over the
remaining m - 1 maps, and its step is rounded down to a whole percent
(SSD300: floor(70 / 4) = 17 %, so 20, 37, 54, 71, 88 % -> 60, 111, 162, 213,
264 px). ``SSDConfig.from_scales`` implements both; the presets below are
checked against it in the tests.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Optional

from minissd.errors import UserError
from minissd.ssd.boxes import VARIANCES

CLIP_MODES = ("corners", "cxcywh", None)    # how default boxes are kept in the image (priors.py)
LEGACY_CLIP = {True: "corners", False: None}  # the bool ``clip`` of minissd <= 0.1


@dataclass
class SSDConfig:
    """Feature-map geometry and default-box sizes (pixels of the ``image_size`` input)."""
    name: str
    image_size: int                   # square input side, pixels
    feature_maps: tuple               # (M,) grid side of each source map
    steps: tuple                      # (M,) input pixels between neighbouring cells
    min_sizes: tuple                  # (M,) side of the small square box, pixels
    max_sizes: tuple                  # (M,) the extra square has side sqrt(min * max)
    aspect_ratios: tuple              # (M,) tuples of ratios > 1; 1/ar is added too
    variances: tuple = VARIANCES      # (centre, size) scaling of the encoded offsets
    clip: Optional[str] = "corners"   # default boxes to the image: "corners" (Caffe), "cxcywh"
                                      # (ssd.pytorch) or None; see minissd.ssd.priors
    box_centres: Optional[tuple] = None  # (M,) per map, the centres of a cell's copies of its boxes,
                                      # (x, y) in cells from the cell's corner; None: one copy at
                                      # (0.5, 0.5) on every map, the paper's tiling

    def __post_init__(self):
        # JSON gives lists; keep tuples so configs compare and hash predictably.
        for f in ("feature_maps", "steps", "min_sizes", "max_sizes", "variances"):
            setattr(self, f, tuple(getattr(self, f)))
        self.aspect_ratios = tuple(tuple(ar) for ar in self.aspect_ratios)
        # minissd <= 0.1 had clip: bool (checkpoints store it in their JSON): True clipped corners
        if isinstance(self.clip, bool):
            self.clip = LEGACY_CLIP[self.clip]
        if self.box_centres is not None:
            try:
                self.box_centres = tuple(tuple(tuple(c) for c in cs) for cs in self.box_centres)
            except TypeError:
                raise UserError(f"SSDConfig {self.name!r}: box_centres must list, per map, (x, y) "
                                f"centres, e.g. ((0.25, 0.5), (0.75, 0.5)); got {self.box_centres!r}")
        self.validate()

    def centres(self, k: int) -> tuple:
        """Where map k's copies of a cell's boxes are centred: (x, y) in cells from its corner."""
        return ((0.5, 0.5),) if self.box_centres is None else self.box_centres[k]

    @property
    def num_boxes_per_location(self) -> tuple:
        """Default boxes per cell of each map: (2 squares + 2 per aspect ratio) x centres per cell
        (SSD300: 4, 6, 6, 6, 4, 4)."""
        return tuple((2 + 2 * len(ar)) * len(self.centres(k))
                     for k, ar in enumerate(self.aspect_ratios))

    @property
    def boxes_per_map(self) -> tuple:
        """Default boxes of each map, f_k² cells x its boxes per cell (SSD300: 5776, 2166, ...)."""
        return tuple(f * f * n for f, n in zip(self.feature_maps, self.num_boxes_per_location))

    @property
    def num_priors(self) -> int:
        """Total number of default boxes P (SSD300: 8732)."""
        return sum(self.boxes_per_map)

    def validate(self) -> "SSDConfig":
        """Raise UserError (a ValueError) naming the field that is wrong; return self when all is well."""
        def bad(field_name, why):
            raise UserError(f"SSDConfig {self.name!r}: {field_name} {why}")

        if not isinstance(self.name, str) or not self.name:
            bad("name", f"must be a non-empty string, got {self.name!r}")
        if not isinstance(self.image_size, numbers.Integral) or self.image_size <= 0:
            bad("image_size", f"must be a positive int, got {self.image_size!r}")
        m = len(self.feature_maps)
        if m == 0:
            bad("feature_maps", "is empty")
        for f in ("steps", "min_sizes", "max_sizes", "aspect_ratios"):
            if len(getattr(self, f)) != m:
                bad(f, f"has {len(getattr(self, f))} entries but feature_maps has {m}")
        for f in ("feature_maps", "steps", "min_sizes", "max_sizes"):
            for k, v in enumerate(getattr(self, f)):
                if not isinstance(v, numbers.Real) or not v > 0:
                    bad(f, f"[{k}] must be a positive number, got {v!r}")
        if any(not isinstance(f, numbers.Integral) for f in self.feature_maps):
            bad("feature_maps", f"must be ints, got {self.feature_maps}")
        for k, (lo, hi) in enumerate(zip(self.min_sizes, self.max_sizes)):
            if hi <= lo:
                bad("max_sizes", f"[{k}] = {hi} must exceed min_sizes[{k}] = {lo}")
        for k, ars in enumerate(self.aspect_ratios):
            for ar in ars:
                if not isinstance(ar, numbers.Real) or not ar > 1:
                    bad("aspect_ratios", f"[{k}] has {ar!r}: ratios must be > 1 "
                                         "(1 is the square box; 1/ar is added automatically)")
        if len(self.variances) != 2 or any(not isinstance(v, numbers.Real) or v <= 0
                                           for v in self.variances):
            bad("variances", f"must be two positive numbers, got {self.variances}")
        if self.clip not in CLIP_MODES:
            bad("clip", f"must be one of {CLIP_MODES}, got {self.clip!r}")
        if self.box_centres is not None:
            if len(self.box_centres) != m:
                bad("box_centres", f"has {len(self.box_centres)} entries but feature_maps has {m}")
            for k, cs in enumerate(self.box_centres):
                if not cs:
                    bad("box_centres", f"[{k}] is empty: a map needs at least one centre, (0.5, 0.5)")
                if len(set(cs)) != len(cs):
                    bad("box_centres", f"[{k}] = {cs} repeats a centre")
                for c in cs:
                    if len(c) != 2 or any(not isinstance(v, numbers.Real) or not 0 <= v <= 1
                                          for v in c):
                        bad("box_centres", f"[{k}] has {c!r}: a centre is (x, y), each in [0, 1] "
                                           "(cells from the cell's top-left corner)")
        return self

    def to_dict(self) -> dict:
        """Plain lists and numbers, ready for json.dump (checkpoints)."""
        d = dataclasses.asdict(self)
        if d["box_centres"] is None:          # the paper's tiling: JSON as before the field existed
            del d["box_centres"]
        for f, v in d.items():
            if isinstance(v, tuple):
                d[f] = [list(x) if isinstance(x, tuple) else x for x in v]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SSDConfig":
        """Inverse of ``to_dict``; unknown or missing keys raise ValueError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING}
        unknown, missing = sorted(set(d) - names), sorted(required - set(d))
        if unknown or missing:
            raise UserError(f"SSDConfig.from_dict: unknown keys {unknown}, missing keys {missing}")
        return cls(**d)

    @classmethod
    def from_scales(cls, name, image_size, feature_maps, steps, aspect_ratios,
                    s_min=0.2, s_max=0.9, first_scale: Optional[float] = None,
                    round_percent=False, variances=VARIANCES, clip="corners") -> "SSDConfig":
        """Sizes from the paper's linear scale rule (see the module docstring).

        first_scale: None for the paper's rule over all maps; a number (0.1 for
            SSD300, 0.07 for SSD512) to give the first map that scale with max
            size s_min, and run the rule over the other maps (the Caffe code).
        round_percent: round the rule's step down to a whole percent, as Caffe.
        The last map's max size is the rule extrapolated one step past s_max.
        """
        m = len(feature_maps)
        n = m if first_scale is None else m - 1            # maps the linear rule covers
        if n < 2:
            raise ValueError(f"from_scales: the linear rule needs at least 2 maps, got {n}")
        step = (s_max - s_min) * 100 / (n - 1)              # percent
        if round_percent:
            step = math.floor(step + 1e-9)
        percents = [s_min * 100 + k * step for k in range(n + 1)]  # one extra for the last max
        lo, hi = percents[:-1], percents[1:]
        if first_scale is not None:
            lo, hi = [first_scale * 100] + lo, [s_min * 100] + hi
        px = lambda pct: round(image_size * pct / 100, 6)     # noqa: E731  (pixels)
        return cls(name=name, image_size=image_size, feature_maps=feature_maps, steps=steps,
                   min_sizes=tuple(px(p) for p in lo), max_sizes=tuple(px(p) for p in hi),
                   aspect_ratios=aspect_ratios, variances=variances, clip=clip)


# Caffe SSD (weiliu89/caffe, examples/ssd/ssd_pascal.py) and ssd.pytorch (data/config.py, voc).
SSD300 = SSDConfig(
    name="ssd300", image_size=300,
    feature_maps=(38, 19, 10, 5, 3, 1),
    steps=(8, 16, 32, 64, 100, 300),
    min_sizes=(30, 60, 111, 162, 213, 264),
    max_sizes=(60, 111, 162, 213, 264, 315),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)))

# Caffe SSD512 (ssd_pascal_512.py: min_ratio 15, max_ratio 90, conv4_3 at 7 %), as used
# by the ssd.pytorch SSD512 forks.
SSD512 = SSDConfig(
    name="ssd512", image_size=512,
    feature_maps=(64, 32, 16, 8, 4, 2, 1),
    steps=(8, 16, 32, 64, 128, 256, 512),
    min_sizes=(35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8),
    max_sizes=(76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)))

# A small detector for the synthetic shapes data (objects ~10-70 % of the side) and
# quick CPU runs. Same rule as SSD300: first map 10 %, then 20..90 % in whole-percent
# steps (floor(70 / 3) = 23 %): scales 0.10, 0.20, 0.43, 0.66, 0.89; the extra square
# sqrt(s_k s_k+1) tops out at sqrt(0.89 * 1.12) = 1.0 of the image. 1524 default boxes.
SSD_TINY = SSDConfig.from_scales(
    name="ssd-tiny", image_size=128,
    feature_maps=(16, 8, 4, 2, 1),
    steps=(8, 16, 32, 64, 128),
    aspect_ratios=((2,), (2, 3), (2, 3), (2,), (2,)),
    s_min=0.2, s_max=0.9, first_scale=0.1, round_percent=True)


def _ssd_cpu_boxes(name, image_size, feature_maps):
    """ssd-cpu's default boxes on an input of ``image_size``: each map spans the input
    (step = image_size / map size), the same scales as fractions of the side, the same ratios."""
    steps = tuple(image_size // f if image_size % f == 0 else image_size / f for f in feature_maps)
    return SSDConfig.from_scales(
        name=name, image_size=image_size, feature_maps=feature_maps, steps=steps,
        aspect_ratios=((2, 3), (2, 3), (2, 3), (2,), (2,)),
        s_min=0.2, s_max=0.9, first_scale=0.07, round_percent=True)


# A small detector for real photographs on a CPU (in voc5-mini, people are often 10-40 px of
# a 300-px photo, and thin). A 192-px input, paid for by a stride-2 stem, and a first map at
# stride 8 (24x24) with boxes of 7 % of the side (13 px; its 1:3 boxes 8 x 23 px): the Caffe
# rule with SSD512's first scale, then 20, 43, 66, 89 % (floor(70 / 3) = 23 % steps), and
# 1:3 boxes on the first map too. On voc5-mini trainval (`minissd anchors`) 79 % of the
# objects and 56 % of the people have a default box with IoU >= 0.5, against 66 % and 41 %
# for ssd-tiny. 4576 default boxes.
SSD_CPU = _ssd_cpu_boxes("ssd-cpu", 192, (24, 12, 6, 3, 1))          # steps 8, 16, 32, 64, 192

# ssd-cpu's layers on a smaller and a larger input, for progressive resizing: train most epochs
# on the small input, then continue the weights on the large one (`minissd train --init`), the
# maps' default boxes rebuilt for their sizes (models/README.md measures it). 3190 and 8144
# default boxes.
SSD_CPU_160 = _ssd_cpu_boxes("ssd-cpu-160", 160, (20, 10, 5, 3, 1))
SSD_CPU_256 = _ssd_cpu_boxes("ssd-cpu-256", 256, (32, 16, 8, 4, 2))

# ssd-cpu's default boxes for a wider network (ssd-cpu-w96: 96 channels at the first source,
# minissd.ssd.architecture); the boxes are ssd-cpu's, only the name is its own.
SSD_CPU_W96 = dataclasses.replace(SSD_CPU, name="ssd-cpu-w96")


def get_config(name: str) -> SSDConfig:
    """A fresh copy of a preset's config: 'ssd300', 'ssd512', 'ssd-tiny', 'ssd-cpu' ...

    The presets are registered, each with its architecture, in
    :data:`minissd.ssd.architecture.PRESETS`.
    """
    from minissd.ssd.architecture import PRESETS      # it imports this module: import here
    if name not in PRESETS:
        raise UserError(f"unknown SSD config {name!r}: known configs are {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name].config)


def __getattr__(name):
    """``PRESETS`` (name -> SSDConfig) is now :data:`minissd.ssd.architecture.PRESETS`."""
    if name == "PRESETS":
        import warnings
        from minissd.ssd.architecture import PRESETS
        warnings.warn("minissd.ssd.config.PRESETS is now minissd.ssd.architecture.PRESETS[name].config",
                      DeprecationWarning, stacklevel=2)
        return {key: preset.config for key, preset in PRESETS.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
