"""The SSD network: base, extra layers and prediction heads, forward and backward by hand.

    images (B, 3, S, S)
      -> vgg: conv1_1 ... relu4_3 ..................... source 1 (B, 512, 38, 38) -> L2Norm -> heads
              pool4 ... fc6 relu6 fc7 relu7 ............ source 2 (B, 1024, 19, 19) -> heads
      -> extras: conv8_1 relu8_1 conv8_2 relu8_2 ....... source 3 (B, 512, 10, 10) -> heads
                 ...                                      sources 4..6
    each source -> loc head  (3x3 conv, k*4 channels)      -> (B, H*W*k, 4)
                -> conf head (3x3 conv, k*(C+1) channels)  -> (B, H*W*k, C+1)
    concatenated over the maps -> loc (B, P, 4), conf (B, P, C+1), P = 8732 for SSD300

With ``arch.background_maxout = m > 1`` the first map's conf head emits m background
scores per box (k*(m+C) channels) and :func:`maxout_background` keeps their max as the
box's one background logit (S3FD's max-out background label); the other maps are as above
(``arch.maxout_maps`` = n > 1: the first n maps have the m scores).

With ``arch.top_down`` (FPN's top-down path, one level) the first source's heads see
L2Norm(relu4_3 + up2(conv1x1(relu7))): fc7's map, through a 1x1 conv to 512 channels and
upsampled 2x (nearest), adds its wider context to the smallest boxes' features. fc7's
gradient then has three terms: its heads, the deeper layers, and this path.

A head's output (B, k*4, H, W) is transposed to (B, H, W, k*4) and reshaped to
(B, H*W*k, 4): prediction p of map m is cell (i, j) = row-major, then box a,
exactly the order of :func:`minissd.ssd.priors.default_boxes`.

Every source map feeds two consumers: its heads and the deeper layers. Its
gradient in ``backward`` is the SUM of both, written out where it happens.
conv4_3 is special (as in ssd.pytorch): the heads see L2Norm(relu4_3), while
pool4 sees the raw relu4_3 output. Each map also feeds its two heads, loc and
conf: two plain Conv2d layers, whose input gradients are summed too. With the
fast paths on (:mod:`minissd.nn.fast`) the two heads run as one conv, their
weights stacked.

    >>> from minissd.ssd.config import get_config
    >>> model = SSD(get_config('ssd-tiny'), num_classes=3, seed=0)
    >>> loc, conf = model.forward(images)          # (B, 3, 128, 128) -> (B, 1524, 4), (B, 1524, 3 + 1)
    >>> dimages = model.backward(dloc, dconf)      # fills every layer's grads
    >>> model.backward(dloc, dconf, need_dimages=False)   # training: skip conv1_1's dx
"""
from __future__ import annotations

import warnings

import numpy as np

from minissd.nn import fast
from minissd.nn.backend import get_array_module
from minissd.ssd.config import SSDConfig
from minissd.nn.layers import Conv2d, L2Norm, MaxPool2d, Upsample2d
from minissd.nn.module import Module
from minissd.ssd.summary import summary  # noqa: F401  (re-exported: `from minissd.ssd.model import summary`)
from minissd.ssd.architecture import SSDArch, build_extras, build_vgg, get_arch


def maxout_background(scores, m):
    """(B, N, m + C) scores -> (B, N, 1 + C) logits, and (B, N) the winning background score.

    The first m scores of each box are background scores; the logit of the background is
    their max (S3FD's max-out background label), the C class scores pass through.
    """
    xp = get_array_module(scores)
    background = scores[:, :, :m]                                   # (B, N, m)
    arg = background.argmax(axis=2)                                 # (B, N)
    top = background.max(axis=2, keepdims=True)                     # (B, N, 1)
    return xp.concatenate([top, scores[:, :, m:]], axis=2), arg


def maxout_background_backward(dlogits, arg, m):
    """dL/dlogits (B, N, 1 + C) -> dL/dscores (B, N, m + C): the background's gradient goes
    to the background score that won the max, none to the others."""
    xp = get_array_module(dlogits)
    won = (xp.arange(m) == arg[:, :, None]).astype(dlogits.dtype)   # (B, N, m) one-hot
    return xp.concatenate([won * dlogits[:, :, :1], dlogits[:, :, 1:]], axis=2)


class Heads(Module):
    """One 3x3 prediction conv per source map, named after the source ('conv4_3', 'fc7', ...)."""

    def __getitem__(self, name):
        return self._modules[name]


class SSD(Module):
    """Single Shot MultiBox Detector: ``forward(images) -> (loc, conf)``, ``backward(dloc, dconf)``.

    cfg: the SSDConfig (image size, feature maps, boxes per location).
    num_classes: object classes C; ``conf`` has C + 1 scores (0 = background).
    seed / rng: the initialisation is drawn from ``rng`` or ``default_rng(seed)``;
        the same seed gives identical parameters.
    arch: the channel plan; by default the one registered for ``cfg.name``.
    """

    def __init__(self, cfg: SSDConfig, num_classes: int, seed: int = 0, rng=None,
                 arch: SSDArch | None = None):
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"SSD: num_classes must be >= 1 (background is added), got {num_classes}")
        cfg.validate()
        self.cfg, self.num_classes = cfg, int(num_classes)
        self.arch = arch if arch is not None else get_arch(cfg.name)
        rng = rng if rng is not None else np.random.default_rng(seed)

        self.vgg, first_source = build_vgg(self.arch, rng)        # He init (no ImageNet weights)
        self.l2norm = L2Norm(self.arch.source_channels[0], self.arch.l2norm_scale)
        self.extras, extra_sources = build_extras(self.arch, rng)  # Xavier init
        self.source_layers = (first_source, "relu7", *extra_sources)  # layers whose output is a source
        trunk = self.trunk()
        names = [n for n, _ in trunk]
        # a source is named after the conv it comes from: relu4_3 -> conv4_3, relu7 -> fc7
        # (skipping a BatchNorm between the conv and its ReLU, as ssd-tiny has)
        self.source_names = tuple(next(n for n in reversed(names[:names.index(t)])
                                       if n.startswith(("conv", "fc"))) for t in self.source_layers)
        if len(self.source_layers) != len(cfg.feature_maps):
            raise ValueError(f"SSD: architecture {self.arch.name!r} has {len(self.source_layers)} source maps, "
                             f"config {cfg.name!r} lists {len(cfg.feature_maps)} feature_maps")

        m, n = self.arch.background_maxout, self.arch.maxout_maps
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise ValueError(f"SSD: architecture {self.arch.name!r}: background_maxout must be an "
                             f"integer >= 1, got {m!r}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(cfg.feature_maps):
            raise ValueError(f"SSD: architecture {self.arch.name!r}: maxout_maps must be an integer "
                             f"from 1 to the {len(cfg.feature_maps)} source maps, got {n!r}")
        self.loc, self.conf = Heads(), Heads()                     # Xavier init, bias 0
        for i, (name, channels, k) in enumerate(zip(self.source_names, self.arch.source_channels,
                                                    cfg.num_boxes_per_location)):
            scores = self.scores_per_box(i)                          # C + 1 (C + m on a max-out map)
            setattr(self.loc, name, Conv2d(channels, k * 4, 3, padding=1, rng=rng, init="xavier"))
            setattr(self.conf, name, Conv2d(channels, k * scores, 3, padding=1,
                                            rng=rng, init="xavier"))
        if not isinstance(self.arch.top_down, (bool, np.bool_)):
            raise ValueError(f"SSD: architecture {self.arch.name!r}: top_down must be True or "
                             f"False, got {self.arch.top_down!r}")
        if self.arch.top_down:        # fc7 -> 1x1 conv -> 2x up, added to the first source
            if cfg.feature_maps[0] != 2 * cfg.feature_maps[1]:
                raise ValueError(f"SSD: architecture {self.arch.name!r}: top_down needs the first "
                                 f"feature map twice the second, config {cfg.name!r} has "
                                 f"feature_maps {cfg.feature_maps}")
            c1, c2 = self.arch.source_channels[:2]
            self.top_down = Conv2d(c2, c1, 1, rng=rng, init="xavier")
            self.top_down.params["weight"][...] = 0      # starts as the plain SSD, learns the rest
            self.upsample = Upsample2d(2)
        self._check_feature_maps()
        self._maps = self._head_inputs = None
        self._maxout_args = {}                                     # map i -> (B, N) winners
        self._heads_stacked = False

    def maxout(self, i):
        """Whether source map i has max-out background scores: ``arch.background_maxout`` > 1
        and i among the first ``arch.maxout_maps`` maps."""
        return self.arch.background_scores(i) > 1

    def scores_per_box(self, i):
        """Scores source map i's conf head emits per default box: C + 1, and C + m on a
        max-out map when ``arch.background_maxout`` = m > 1 (its m background scores)."""
        return self.num_classes + self.arch.background_scores(i)

    def set_background_prior(self, p):
        """Start every default box at background probability ~``p`` (RetinaNet's prior
        initialisation, for the focal loss): each background bias log(C p / (1 - p)), class
        biases 0, so softmax(biases) gives the background p. Without it the focal loss's first
        steps are ruled by the thousands of background boxes at probability 1 / (C + 1)."""
        if not 0 < p < 1:
            raise ValueError(f"SSD.set_background_prior: p must be in (0, 1), got {p}")
        value = np.log(self.num_classes * p / (1 - p))
        for i, name in enumerate(self.source_names):
            bias = self.conf[name].params["bias"]                    # (k * scores,)
            scores, m = self.scores_per_box(i), self.arch.background_scores(i)
            per_box = bias.reshape(-1, scores)                       # (k, scores): a view
            per_box[:, :m] = value                                   # the background score(s)
            per_box[:, m:] = 0
        return self

    # --- structure --------------------------------------------------------------
    def trunk(self):
        """(name, layer) of the base and the extras in forward order (one chain, no heads)."""
        return list(self.vgg.named_children()) + list(self.extras.named_children())

    def layer_shapes(self):
        """(dotted name, layer, output shape (C, H, W)) for every layer, computed without data."""
        shape = (self.arch.in_channels, self.cfg.image_size, self.cfg.image_size)
        rows, sources = [], []
        for prefix, seq in (("vgg", self.vgg), ("extras", self.extras)):
            for name, layer in seq.named_children():
                c, h, w = shape
                if isinstance(layer, Conv2d):
                    shape = (layer.out_channels, *layer.output_shape(h, w))
                elif isinstance(layer, MaxPool2d):
                    shape = (c, *layer.output_shape(h, w))
                if min(shape[1:]) <= 0:
                    raise ValueError(f"SSD {self.arch.name!r}: layer {prefix}.{name} gets no output "
                                     f"from a {self.cfg.image_size}-px input (shape {shape})")
                rows.append((f"{prefix}.{name}", layer, shape))
                if name in self.source_layers:
                    sources.append(shape)
                    if len(sources) == 1 and not self.arch.top_down:
                        rows.append(("l2norm", self.l2norm, shape))
                    if len(sources) == 2 and self.arch.top_down:     # fc7 -> the first source
                        rows.append(("top_down", self.top_down, (sources[0][0], *shape[1:])))
                        rows.append(("upsample", self.upsample, sources[0]))
                        rows.append(("l2norm", self.l2norm, sources[0]))
        for name, (c, h, w) in zip(self.source_names, sources):
            for head in ("loc", "conf"):
                conv = getattr(self, head)[name]
                rows.append((f"{head}.{name}", conv, (conv.out_channels, h, w)))
        return rows

    def feature_map_sizes(self):
        """(H, W) of each source map for a cfg.image_size input."""
        return [shape[1:] for name, _, shape in self.layer_shapes() if name.startswith("loc.")]

    def _check_feature_maps(self):
        sizes = self.feature_map_sizes()
        if any(h != w for h, w in sizes) or tuple(h for h, _ in sizes) != self.cfg.feature_maps:
            raise ValueError(
                f"SSD: architecture {self.arch.name!r} gives source maps "
                f"{[f'{h}x{w}' for h, w in sizes]} for a {self.cfg.image_size}-px input, but config "
                f"{self.cfg.name!r} has feature_maps {self.cfg.feature_maps}")

    @property
    def taps(self):
        """Old name of :attr:`source_layers` (kept for one release; "tap" now means a kernel tap)."""
        warnings.warn("SSD.taps is now SSD.source_layers", DeprecationWarning, stacklevel=2)
        return self.source_layers

    @property
    def num_priors(self) -> int:
        return self.cfg.num_priors

    def _check_images(self, images):
        S, C = self.cfg.image_size, self.arch.in_channels
        if images.ndim != 4 or images.shape[1] != C or images.shape[2:] != (S, S):
            raise ValueError(f"SSD {self.cfg.name!r} expects images of shape (B, {C}, {S}, {S}) "
                             f"(cfg.image_size = {S}), got {tuple(images.shape)}")

    # --- forward ------------------------------------------------------------------
    def forward(self, images):
        """images (B, 3, S, S) -> loc (B, P, 4) offsets, conf (B, P, C+1) logits."""
        self._check_images(images)
        xp = get_array_module(images)
        B = images.shape[0]
        x, sources = images, []
        for name, layer in self.trunk():
            x = layer.forward(x)
            if name in self.source_layers:
                sources.append(x)                               # also goes on to the next layer
        if self.arch.top_down:      # the first source's heads also see fc7's context
            up = self.upsample.forward(self.top_down.forward(sources[1]))   # (B, 512, 38, 38)
            sources[0] = sources[0] + up                        # a new array: pool4 kept relu4_3
        # conv4_3: the heads see L2Norm(relu4_3); pool4 (already run) took the raw relu4_3
        sources[0] = self.l2norm.forward(sources[0])            # (B, 512, 38, 38)

        locs, confs, maps = [], [], []
        self._head_inputs = sources if self.training else None
        for i, (name, s) in enumerate(zip(self.source_names, sources)):
            _, _, H, W = s.shape
            loc, conf = self._heads_forward(name, s)            # (B, k*4, H, W), (B, k*(C+1), H, W)
            k = loc.shape[1] // 4
            locs.append(loc.transpose(0, 2, 3, 1).reshape(B, H * W * k, 4))       # (B, H*W*k, 4)
            conf = conf.transpose(0, 2, 3, 1).reshape(B, H * W * k, -1)           # (B, H*W*k, C+1)
            if self.maxout(i):                                      # a max-out map has C+m: -> C+1
                conf, self._maxout_args[i] = maxout_background(conf, self.arch.background_maxout)
            confs.append(conf)
            maps.append((H, W, k))
        self._maps = maps
        return xp.concatenate(locs, axis=1), xp.concatenate(confs, axis=1)  # (B, P, 4), (B, P, C+1)

    # --- the two heads of a source ------------------------------------------------
    def _heads_forward(self, name, source):
        """source (B, C_s, H, W) -> loc (B, k*4, H, W), conf (B, k*(C+1), H, W) (k*(C+m) on a
        max-out map)."""
        loc, conf = self.loc[name], self.conf[name]
        self._heads_stacked = fast.enabled()
        if self._heads_stacked:     # fast path: both heads as ONE conv, their weights stacked
            return tuple(fast.sibling_conv2d(source, (loc, conf)))
        return loc.forward(source), conf.forward(source)          # two plain layers

    def _heads_backward(self, name, source, dl, dc):
        """Fill both heads' grads from dl (B, k*4, H, W), dc (B, k*(C+1), H, W); return d source."""
        loc, conf = self.loc[name], self.conf[name]
        if self._heads_stacked:     # fast path: one stacked conv gives the sum below directly
            return fast.sibling_conv2d_backward(source, (loc, conf), (dl, dc))
        # the source feeds two consumers, its loc head and its conf head: its gradient is the SUM
        return loc.backward(dl) + conf.backward(dc)             # (B, C_s, H, W)

    # --- backward -----------------------------------------------------------------
    def backward(self, dloc, dconf, need_dimages=True):
        """dL/dloc (B, P, 4), dL/dconf (B, P, C+1) -> dL/dimages (B, 3, S, S); fills every grads.

        need_dimages=False (training: nothing upstream of the images) skips the first
        conv's input gradient, a full-resolution transposed convolution, and returns None.
        """
        if self._maps is None:
            raise RuntimeError("SSD.backward called before forward")
        B = dloc.shape[0]
        P, K = sum(h * w * k for h, w, k in self._maps), self.num_classes + 1
        if dloc.shape != (B, P, 4) or dconf.shape != (B, P, K):
            raise ValueError(f"SSD.backward: expected dloc ({B}, {P}, 4) and dconf ({B}, {P}, {K}), "
                             f"got {tuple(dloc.shape)} and {tuple(dconf.shape)}")
        # heads, map by map: undo the concatenation and the (B, H, W, k*4) transpose
        dsources, start = [], 0
        if self._head_inputs is None:
            raise RuntimeError("SSD.backward needs a forward in training mode first (model.train())")
        for i, (name, (H, W, k), source) in enumerate(zip(self.source_names, self._maps,
                                                          self._head_inputs)):
            stop = start + H * W * k
            dl = dloc[:, start:stop].reshape(B, H, W, k * 4).transpose(0, 3, 1, 2)   # (B, k*4, H, W)
            dc = dconf[:, start:stop]                                                 # (B, H*W*k, K)
            if self.maxout(i):                                  # back through the max: (.., C+m)
                dc = maxout_background_backward(dc, self._maxout_args[i], self.arch.background_maxout)
            n = self.scores_per_box(i)
            dc = dc.reshape(B, H, W, k * n).transpose(0, 3, 1, 2)                    # (B, k*n, H, W)
            dsources.append(self._heads_backward(name, source, dl, dc))   # (B, C_s, H, W)
            start = stop
        dsources[0] = self.l2norm.backward(dsources[0])         # conv4_3's heads saw L2Norm(x)
        if self.arch.top_down:      # the sum passed dsources[0] to both terms: fc7's goes back up
            dsources[1] = dsources[1] + self.top_down.backward(self.upsample.backward(dsources[0]))

        # the trunk in reverse; dx is the gradient from the deeper layers
        trunk = self.trunk()
        dx, m = None, len(self.source_layers) - 1
        for i in reversed(range(len(trunk))):
            name, layer = trunk[i]
            if m >= 0 and name == self.source_layers[m]:
                # this output feeds its heads AND the deeper layers: add both gradients
                # (the last source, relu11_2, has no deeper layers)
                dx = dsources[m] if dx is None else dx + dsources[m]
                m -= 1
            if i == 0 and not need_dimages and isinstance(layer, Conv2d):
                layer.param_grads(dx)                           # conv1_1's dW, db; no dx
                return None
            dx = layer.backward(dx)
        return dx                                               # (B, 3, S, S)

    def __repr__(self):
        return (f"SSD(config={self.cfg.name!r}, arch={self.arch.name!r}, "
                f"num_classes={self.num_classes}, parameters={self.num_parameters():,})")
