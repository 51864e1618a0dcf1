"""Pictures of the network (chapter 5): the architecture figure drawn from the model (the
paper's Fig. 2), the source maps, receptive fields and the budget of each block.

    draw_architecture(SSD(get_config("ssd300"), 20), highlight="heads")
    show_source_maps(axes, image, maps, steps, titles)
    draw_receptive_fields(model)
    draw_model_budget(maps, params, macs)
"""
from __future__ import annotations

import numpy as np

from minissd.nn.backend import to_numpy


def show_source_maps(axes, image, maps, steps, titles, vmin=None, vmax=None, cmap="magma",
                     label=None):
    """The input, then one (m, m) map per source drawn over it, one square per cell; -> axes.

    axes: len(maps) + 1 Axes in a row (the input first), or len(maps) (no input panel; label then
    goes on the first map). image: uint8 (S, S, 3). maps: (m, m) arrays, e.g. a source
    map's mean over channels or its heads' best object score per cell. steps: each map's cell size
    in pixels (``cfg.steps``). vmin/vmax: one colour scale for all maps (None: each its own).
    label: a y-axis label for the input's panel (the row's name).
    """
    axes = list(np.ravel(axes))
    if not (len(maps) == len(steps) == len(titles) and len(axes) in (len(maps), len(maps) + 1)):
        raise ValueError(f"show_source_maps: {len(axes)} axes, {len(maps)} maps, {len(steps)} steps "
                         f"and {len(titles)} titles: expected as many maps, steps and titles, and "
                         f"as many axes or one more")
    image = to_numpy(image)
    S = image.shape[0]
    grey = image.mean(axis=2)
    if len(axes) > len(maps):
        axes[0].imshow(image, extent=(0, S, S, 0))
        axes[0].set_xticks([]); axes[0].set_yticks([])
    if label:
        axes[0].set_ylabel(label, fontsize=10)
    for ax, amap, step, title in zip(axes[len(axes) - len(maps):], maps, steps, titles):
        amap = to_numpy(amap)
        ax.imshow(grey, cmap="gray", extent=(0, S, S, 0))
        im = ax.imshow(amap, cmap=cmap, alpha=0.75, interpolation="nearest", extent=(0, S, S, 0),
                       vmin=vmin, vmax=vmax)
        ax.set_xticks(np.arange(0, S + 1, step)); ax.set_yticks(np.arange(0, S + 1, step))
        ax.tick_params(labelbottom=False, labelleft=False, length=0)
        ax.grid(color="white", lw=0.4, alpha=0.6)
        ax.set_title(title, fontsize=10)
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    return axes


def draw_receptive_fields(model, ax=None, width: float = 11.0):
    """Per source map, bars of its cell step, its two square default boxes and its receptive field
    (``summary.receptive_fields``), in input pixels on a log scale, the image side dashed; -> ax."""
    import matplotlib.pyplot as plt

    from minissd.ssd.summary import receptive_fields

    rows = receptive_fields(model)
    S = model.cfg.image_size
    if ax is None:
        _, ax = plt.subplots(figsize=(width, width * 0.5), dpi=max(100, plt.rcParams["figure.dpi"]))
    bars = (("step", "cell step (px between cells)", "#bab0ac"),
            ("min_size", "default box: small square", "#f28e2b"),
            ("extra_size", "default box: sqrt(min x max) square", "#e15759"),
            ("field", "receptive field", "#4e79a7"))
    x = np.arange(len(rows))
    w = 0.8 / len(bars)
    for b, (key, label, colour) in enumerate(bars):
        values = [r[key] for r in rows]
        ax.bar(x + (b - (len(bars) - 1) / 2) * w, values, w, color=colour, label=label)
        for xi, v in zip(x, values):
            ax.text(xi + (b - (len(bars) - 1) / 2) * w, v * 1.05, f"{v:.0f}", ha="center",
                    va="bottom", fontsize=8)
    ax.axhline(S, color="black", ls="--", lw=1)
    ax.text(-0.45, S * 1.04, f"image side {S} px", ha="left", va="bottom", fontsize=9)
    ax.set_yscale("log")
    ax.set_ylim(min(r["step"] for r in rows) / 1.6, max(r["field"] for r in rows) * 2.2)
    ax.set_xticks(x, [f"{r['name']}\n{r['size']}x{r['size']}" for r in rows])
    ax.set_ylabel("input pixels (log scale)")
    ax.set_title(f"{model.cfg.name}: what each source map's cell sees (receptive field) and the boxes "
                 f"it predicts", fontsize=11)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=9, ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3, which="both")
    return ax


def draw_model_budget(maps, params, macs, title=None, width: float = 15.0):
    """Where a model's default boxes, parameters and compute are: three bar charts; -> the figure.

    maps: per source map (name, side m, boxes per cell k); its bar is k·m·m boxes, labelled
    "m²×k = ...". params, macs: {block name: count}, in the order to draw (e.g. parameters and
    multiply-adds summed per block from ``layer_shapes()``); blocks with neither are left out.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(width, width * 0.34),
                             dpi=max(100, plt.rcParams["figure.dpi"]))
    boxes = [k * m * m for _, m, k in maps]
    ax = axes[0]
    bars = ax.bar([f"{n}\n{m}x{m}" for n, m, _ in maps], boxes, color="tab:blue")
    for bar, (_, m, k), b in zip(bars, maps, boxes):
        ax.annotate(f"{m}²×{k}\n= {b:,}", (bar.get_x() + bar.get_width() / 2, b), ha="center",
                    va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_ylim(0, 1.2 * max(boxes))
    ax.set_ylabel("default boxes (k·m·n)")
    ax.set_title(f"Default boxes per source map (total {sum(boxes):,})", fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    groups = [g for g in params if params[g] or macs.get(g, 0)]
    for ax, values, scale, unit, colour, what in (
            (axes[1], params, 1e6, "M", "tab:orange", "Parameters"),
            (axes[2], macs, 1e9, "GMACs", "tab:green", "Compute")):
        ax.bar(groups, [values.get(g, 0) / scale for g in groups], color=colour)
        total = sum(values.values()) / scale
        ax.set_title(f"{what} per block (total {total:.1f} {unit})", fontsize=10)
        ax.tick_params(axis="x", labelsize=8, rotation=45)
    axes[1].set_ylabel("parameters (millions)")
    axes[2].set_ylabel("multiply-adds per image (billions)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


ARCHITECTURE_PARTS = ("base", "extras", "heads", "priors", "matching", "loss", "decode", "nms")


_PART_COLOURS = {"base": "#4e79a7", "extras": "#59a14f", "heads": "#b07aa1", "priors": "#f28e2b",
                 "matching": "#edc948", "loss": "#e15759", "decode": "#76b7b2", "nms": "#9c755f"}


def _stages(model):
    """The trunk in blocks, one per conv stage of the paper's figure.

    -> [(block name, part, (C, H, W) output, is_source)]: 'conv1_2' ... 'conv5_3', 'fc6', 'fc7'
    (part 'base'), 'conv8_2' ... (part 'extras'); a block ends at its last conv, BatchNorm or ReLU
    (pools belong to the arrow to the next block).
    """
    blocks = []                                       # [name, part, shape, is_source]
    for dotted, _, shape in model.layer_shapes():
        prefix, _, name = dotted.partition(".")
        if prefix not in ("vgg", "extras") or name.startswith("pool"):
            continue
        if name.startswith(("conv", "fc")):
            stage = name.split("_")[0]                # 'conv4' of 'conv4_3', 'fc6'
            if not blocks or blocks[-1][0].split("_")[0] != stage:
                blocks.append([name, "base" if prefix == "vgg" else "extras", shape, False])
            blocks[-1][0] = name
        blocks[-1][2] = shape                         # the conv, its BatchNorm and its ReLU
        blocks[-1][3] = blocks[-1][3] or name in model.source_names
    return [tuple(b) for b in blocks]


def _hwc(shape) -> str:
    c, h, w = shape
    return f"{h}x{w}x{c}"


def draw_architecture(model, highlight=None, ax=None, width: float = 14.0):
    """SSD as the paper's Fig. 2, built from ``model.layer_shapes()``; returns the Axes.

    Top row: the input and the trunk's conv stages (base, then extras) as blocks, their height
    growing with the spatial side (sqrt), their depth with the channels, labelled H x W x C.
    Each of the source maps sends an arrow to its heads (k boxes x (4 + C+1) per cell), which
    concatenate into P x (4 + C+1); below, training (default boxes -> matching -> loss) and
    inference (decode -> NMS -> detections).
    highlight: one name of ARCHITECTURE_PARTS, or several, drawn in colour (the rest grey);
        None draws every part in its colour.
    ax: a matplotlib Axes to draw on; None makes a figure ``width`` inches wide, at dpi >= 100.
    """
    import inspect

    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Polygon

    from minissd.ssd.loss import MultiBoxLoss
    from minissd.ssd.matching import match
    from minissd.ssd.postprocess import DetectConfig

    parts = (ARCHITECTURE_PARTS if highlight is None else
             (highlight,) if isinstance(highlight, str) else tuple(highlight))
    unknown = [p for p in parts if p not in ARCHITECTURE_PARTS]
    if unknown:
        raise ValueError(f"draw_architecture: unknown part(s) {unknown} in highlight; "
                         f"known parts are {ARCHITECTURE_PARTS}")
    strong = highlight is not None

    def face(part):        # (fill, edge, text colour, font weight)
        if part not in parts:
            return "#f0f0f0", "#c8c8c8", "#999999", "normal"
        rgb = np.array(to_rgb(_PART_COLOURS[part]))
        tint = 0.3 if strong else 0.55                           # share of white in the fill
        return tuple(rgb * (1 - tint) + tint), tuple(rgb * 0.75), "black", "bold" if strong else "normal"

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    cfg, C1 = model.cfg, model.num_classes + 1
    S, P = cfg.image_size, cfg.num_priors
    stages = [("input", None, (model.arch.in_channels, S, S), False)] + _stages(model)
    n = len(stages)
    span = max(n, 13)                                            # x units (one per block)
    if ax is None:
        fig, ax = plt.subplots(figsize=(width, width * 7.0 / (span + 0.6)),
                               dpi=max(100, plt.rcParams["figure.dpi"]))     # readable labels
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.94)
    fig = ax.figure
    fs = 7.5 * (ax.get_position().width * fig.get_figwidth() / 13.0) ** 0.5   # font size, pt
    ax.set_xlim(-0.3, span + 0.3)
    ax.set_ylim(-1.45, 6.5)
    ax.set_axis_off()

    def box(x, y, w, h, part, text, size=fs, pad=0.04):
        fill, edge, colour, weight = face(part)
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle=f"round,pad={pad}",
                                    fc=fill, ec=edge, lw=1.6 if strong and part in parts else 1))
        ax.text(x, y, text, ha="center", va="center", fontsize=size, color=colour, fontweight=weight)

    def arrow(a, b, part=None, rad=0.0):
        colour = "#555555" if part is None or part in parts else "#c8c8c8"
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=9, lw=1, color=colour,
                                     connectionstyle=f"arc3,rad={rad}", shrinkA=1, shrinkB=1))

    # --- the trunk: one block per stage ------------------------------------------------------
    y_mid, w = 4.45, 0.42                                       # the blocks' centre line and width
    c_max = max(shape[0] for _, _, shape, _ in stages)
    heads = []                                                   # (x, y of the arrow's start, name)
    for i, (name, part, shape, is_source) in enumerate(stages):
        c, h, _ = shape
        x = i + 0.5
        side = 0.35 + 1.9 * (h / S) ** 0.5                      # block height ~ sqrt(H)
        depth = 0.06 + 0.22 * c / c_max                          # block depth ~ channels
        bottom, top = y_mid - side / 2, y_mid + side / 2
        fill, edge, colour, weight = face(part) if part else ("#ffffff", "#555555", "black", "normal")
        x0 = x - w / 2 - depth / 2
        ax.add_patch(Polygon([(x0, top), (x0 + depth, top + depth), (x0 + w + depth, top + depth),
                              (x0 + w + depth, bottom + depth), (x0 + w, bottom), (x0 + w, top)],
                             closed=True, fc=fill, ec=edge, lw=0.8, alpha=0.7))
        ax.add_patch(plt.Rectangle((x0, bottom), w, side, fc=fill, ec=edge, lw=1))
        ax.text(x, top + depth + 0.12, name, ha="center", va="bottom", fontsize=fs,
                color=colour, fontweight="bold" if is_source else weight)
        ax.text(x, bottom - 0.08, _hwc(shape), ha="center", va="top", fontsize=fs * 0.92,
                color=colour, fontweight="bold" if is_source else "normal")
        if i:
            arrow((x - 1 + w / 2 + 0.05, y_mid), (x0 - 0.02, y_mid))       # from the previous block
        if is_source:
            heads.append((x, bottom - 0.45, name))
    part_label_y = 6.15
    for part in ("base", "extras"):
        xs = [i + 0.5 for i, s in enumerate(stages) if s[1] == part]
        colour = face(part)[1] if part in parts else "#bbbbbb"
        ax.plot([xs[0] - 0.35, xs[-1] + 0.35], [part_label_y - 0.12] * 2, color=colour, lw=2)
        ax.text((xs[0] + xs[-1]) / 2, part_label_y, "VGG16 base, fc6/fc7 atrous" if part == "base"
                else "extra layers", ha="center", va="bottom", fontsize=fs, color=colour)

    # --- heads: one per source map -------------------------------------------------------------
    y_head, y_cat = 2.2, 1.1
    ks = cfg.num_boxes_per_location
    for (x, y_top, name), k, f in zip(heads, ks, cfg.feature_maps):
        label = "L2Norm" if name == model.source_names[0] else None
        arrow((x, y_top), (x, y_head + 0.42), "heads")
        if label:
            ax.text(x + 0.06, (y_top + y_head + 0.42) / 2, label, fontsize=fs * 0.85, va="center",
                    color=face("heads")[1] if "heads" in parts else "#999999")
        box(x, y_head, 0.86, 0.62, "heads", f"{k} x (4+{C1})\n{f * f * k} boxes", size=fs * 0.9)
        arrow((x, y_head - 0.35), (x, y_cat + 0.22), "heads")
    ax.text(heads[0][0] - 0.55, y_head, "heads: a 3x3 conv per source map,\n"
            "per cell k boxes x (4 offsets + C+1 scores)", ha="right", va="center",
            fontsize=fs * 0.9, color=face("heads")[1] if "heads" in parts else "#999999")
    x_lo, x_hi = heads[0][0] - 0.43, heads[-1][0] + 0.43
    box((x_lo + x_hi) / 2, y_cat, x_hi - x_lo, 0.36, "heads",
        f"P = {P} default boxes x (4 + {C1}):  loc (B, {P}, 4),  conf (B, {P}, {C1})")

    # --- training and inference ------------------------------------------------------------------
    y_low = -0.35
    ratio = default(MultiBoxLoss.__init__, "neg_pos_ratio")
    thr = default(match, "iou_threshold")
    nms_thr, top_k = DetectConfig().nms_threshold, DetectConfig().top_k
    left = [("priors", "priors", f"{P} default boxes\n(cx, cy, w, h)"),          # (box, part, text)
            ("matching", "matching", f"matching, IoU >= {thr}\nground truth -> targets"),
            ("loss", "loss", f"MultiBox loss: smooth L1\n+ cross-entropy, {ratio}:1 mining")]
    right = [("decode", "decode", "decode\noffsets -> boxes"),
             ("nms", "nms", f"NMS per class\nIoU > {nms_thr}"),
             ("detections", "nms", f"detections\n<= {top_k} per image")]
    bw, gap, xs = 1.9, 2.1, {}                                   # box width, spacing, box -> x
    for j, (key, part, text) in enumerate(left):
        xs[key] = 1.0 + j * gap
        box(xs[key], y_low, bw, 0.62, part, text, size=fs * 0.9)
    for j, (key, part, text) in enumerate(right):
        xs[key] = span - 1.0 - (2 - j) * gap
        box(xs[key], y_low, bw, 0.62, part, text, size=fs * 0.9)
    arrow((xs["priors"] + bw / 2 + 0.05, y_low), (xs["matching"] - bw / 2 - 0.05, y_low), "matching")
    arrow((xs["matching"] + bw / 2 + 0.05, y_low), (xs["loss"] - bw / 2 - 0.05, y_low), "loss")
    arrow((xs["decode"] + bw / 2 + 0.05, y_low), (xs["nms"] - bw / 2 - 0.05, y_low), "nms")
    arrow((xs["nms"] + bw / 2 + 0.05, y_low), (xs["detections"] - bw / 2 - 0.05, y_low), "nms")
    arrow((max(x_lo + 0.3, xs["loss"]), y_cat - 0.2), (xs["loss"] + 0.3, y_low + 0.33), "loss")
    arrow((min(x_hi - 0.3, xs["decode"]), y_cat - 0.2), (xs["decode"] - 0.3, y_low + 0.33), "decode")
    arrow((xs["priors"], y_low - 0.33), (xs["decode"], y_low - 0.33), "decode", rad=0.1)
    ax.text(xs["priors"] - bw / 2, y_low + 0.4, "training", fontsize=fs * 0.9, style="italic",
            color="#555555", va="bottom", ha="left")
    ax.text(xs["detections"] + bw / 2, y_low + 0.4, "inference", fontsize=fs * 0.9,
            style="italic", color="#555555", va="bottom", ha="right")
    ax.set_title(f"{cfg.name}: {S}x{S}x{model.arch.in_channels} image -> {len(heads)} source maps "
                 f"-> {P} x (4 + {C1}) -> decode -> NMS", fontsize=fs * 1.25)
    return ax
