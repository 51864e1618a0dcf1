"""Pictures of matching and the loss (chapters 7 and 8): IoU, the IoU of every default box
with the objects, positives against the threshold, the offset encoding and its targets, the
regression losses and the balance of positives and mined negatives.

    draw_iou(ax, box_a, box_b)
    draw_iou_heatmaps(image, best_per_prior, cfg, gt_boxes, gt_labels)
    plot_positives_by_threshold(thresholds, per_object, total)
    draw_encoding(ax, prior_cxcywh, box_xyxy); plot_target_histograms(targets)
    plot_regression_losses(x, {"smooth L1": (loss, grad)})
    draw_loss_balance(ax, ce, loss.positive[0], loss.negative[0])
"""
from __future__ import annotations

import numpy as np

from minissd.nn.backend import to_numpy
from minissd.viz.photos import _image_axes, add_boxes, class_color, show_detections


def draw_iou(ax, box_a_xyxy, box_b_xyxy, names=("A", "B")):
    """Two boxes with their union shaded light and their intersection dark; returns the IoU.

    The title gives |A ∩ B| / |A ∪ B| = IoU, computed by ``minissd.ssd.boxes.iou``. Boxes are
    (4,) xyxy in any units; the picture is in image coordinates (y down).
    """
    from matplotlib.patches import Patch, Rectangle

    from minissd.ssd.boxes import area, iou

    a = np.asarray(to_numpy(box_a_xyxy), np.float64).reshape(4)
    b = np.asarray(to_numpy(box_b_xyxy), np.float64).reshape(4)
    value = float(iou(a[None], b[None])[0, 0])
    lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(area(np.concatenate([lo, hi])))
    union = float(area(a) + area(b) - inter)
    for box in (a, b):                                            # the union, light
        ax.add_patch(Rectangle(box[:2], *(box[2:] - box[:2]), fc="#cfe2f3", ec="none", zorder=1))
    if inter > 0:                                                 # the intersection, dark
        ax.add_patch(Rectangle(lo, *(hi - lo), fc="#3d85c6", ec="none", zorder=2))
    for box, name, colour, corner in zip((a, b), names, ("tab:red", "tab:green"), ("top", "bottom")):
        add_boxes(ax, box[None], colour, linewidth=2.5, zorder=3)
        ax.text(box[0], box[1] if corner == "top" else box[3], f" {name}", color=colour,  # a's name
                fontsize=10, fontweight="bold", va=corner, ha="left", zorder=4)            # top, b's bottom
    _image_axes(ax, np.stack([a, b]), margin=0.12)
    ax.legend(handles=[Patch(fc="#3d85c6", label=f"{names[0]} ∩ {names[1]}: {inter:.4g}"),
                       Patch(fc="#cfe2f3", label=f"{names[0]} ∪ {names[1]}: {union:.4g}")],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    ax.set_title(f"IoU({names[0]}, {names[1]}) = {inter:.4g} / {union:.4g} = {value:.3f}", fontsize=10)
    return value


def draw_encoding(ax, prior_cxcywh, box_xyxy, variances=None, names=("default box d", "object g")):
    """The encoding geometry: a default box, an object box and SSD's offsets; returns t (4,).

    Draws d (dashed) and g (solid), the centre shift (Δcx, Δcy) as arrows, the widths and heights
    as brackets, and beside the axes the four offsets of ``minissd.ssd.boxes.encode`` worked out,
    with and without the variances (v0, v1). Units: [0, 1] or pixels, the same for both boxes.
    """
    from minissd.ssd.boxes import VARIANCES, cxcywh_to_xyxy, encode, xyxy_to_cxcywh

    v0, v1 = VARIANCES if variances is None else variances
    d = np.asarray(to_numpy(prior_cxcywh), np.float64).reshape(4)
    g_xyxy = np.asarray(to_numpy(box_xyxy), np.float64).reshape(4)
    g = xyxy_to_cxcywh(g_xyxy)
    t = encode(g_xyxy[None], d[None], (v0, v1))[0]
    d_xyxy = cxcywh_to_xyxy(d)
    add_boxes(ax, d_xyxy[None], "tab:blue", names=[names[0]], linewidth=2, linestyle="--")
    add_boxes(ax, g_xyxy[None], "tab:red", names=[names[1]], linewidth=2.5)
    ax.plot(*d[:2], "o", color="tab:blue", ms=6, zorder=4)
    ax.plot(*g[:2], "o", color="tab:red", ms=6, zorder=4)
    arrow = dict(arrowstyle="-|>", lw=1.5, color="black", shrinkA=0, shrinkB=0)
    ax.annotate("", xy=(g[0], d[1]), xytext=(d[0], d[1]), arrowprops=arrow)          # Δcx
    ax.annotate("", xy=(g[0], g[1]), xytext=(g[0], d[1]), arrowprops=arrow)          # Δcy
    ax.text((d[0] + g[0]) / 2, d[1], "Δcx", ha="center", va="top" if g[1] < d[1] else "bottom",
            fontsize=9)
    ax.text(g[0], (d[1] + g[1]) / 2, "Δcy ", ha="right" if g[0] < d[0] else "left", va="center",
            fontsize=9)
    both = np.stack([d_xyxy, g_xyxy])
    span = (both[:, 2:].max(axis=0) - both[:, :2].min(axis=0)).max()
    gap = 0.06 * span
    bracket = dict(arrowstyle="<|-|>", lw=1, shrinkA=0, shrinkB=0)
    for box, colour, name, side in ((d_xyxy, "tab:blue", "d", -1), (g_xyxy, "tab:red", "g", 1)):
        y = (box[3] + gap) if side > 0 else (box[1] - gap)               # widths: g below, d above
        ax.annotate("", xy=(box[2], y), xytext=(box[0], y), arrowprops=dict(bracket, color=colour))
        ax.text((box[0] + box[2]) / 2, y, f"{name}_w", color=colour, fontsize=9, ha="center",
                va="top" if side > 0 else "bottom")
        x = (box[2] + gap) if side > 0 else (box[0] - gap)               # heights: g right, d left
        ax.annotate("", xy=(x, box[3]), xytext=(x, box[1]), arrowprops=dict(bracket, color=colour))
        ax.text(x, (box[1] + box[3]) / 2, f"{name}_h", color=colour, fontsize=9, rotation=90,
                ha="left" if side > 0 else "right", va="center")
    lo, hi = both[:, :2].min(axis=0) - 2.2 * gap, both[:, 2:].max(axis=0) + 2.2 * gap
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(hi[1], lo[1])
    ax.set_aspect("equal")
    raw = np.array([(g[0] - d[0]) / d[2], (g[1] - d[1]) / d[3], np.log(g[2] / d[2]), np.log(g[3] / d[3])])
    lines = [f"d = (cx {d[0]:.3g}, cy {d[1]:.3g}, w {d[2]:.3g}, h {d[3]:.3g})",
             f"g = (cx {g[0]:.3g}, cy {g[1]:.3g}, w {g[2]:.3g}, h {g[3]:.3g})", "",
             f"t_cx = (g_cx − d_cx) / (v0·d_w) = {g[0] - d[0]:.3g} / ({v0:g}·{d[2]:.3g}) = {t[0]:+.3f}",
             f"t_cy = (g_cy − d_cy) / (v0·d_h) = {g[1] - d[1]:.3g} / ({v0:g}·{d[3]:.3g}) = {t[1]:+.3f}",
             f"t_w = log(g_w / d_w) / v1 = log({g[2]:.3g} / {d[2]:.3g}) / {v1:g} = {t[2]:+.3f}",
             f"t_h = log(g_h / d_h) / v1 = log({g[3]:.3g} / {d[3]:.3g}) / {v1:g} = {t[3]:+.3f}", "",
             "without the variances (v0 = v1 = 1): (" + ", ".join(f"{r:+.3f}" for r in raw) + ")",
             f"the variances make them {1 / v0:g}x (centre) and {1 / v1:g}x (size) larger:",
             "about unit scale, where smooth L1 turns from quadratic to linear"]
    ax.text(1.03, 0.5, "\n".join(lines), transform=ax.transAxes, ha="left", va="center",
            fontsize=9, family="monospace")
    ax.set_title("SSD's offsets t from a default box d to an object g", fontsize=10)
    return t


def plot_regression_losses(x, functions, checks=None, width: float = 10.0):
    """Loss functions of an offset error x and their gradients, side by side; -> figure.

    ``functions``: {label: (loss (n,), gradient (n,))} over ``x`` (n,), one line each;
    ``checks``: (x, loss, gradient) measured on a library implementation, drawn as black
    dots over the lines. The grey band is |x| < 1, where smooth L1 is quadratic.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(width, width * 0.38))
    for n, (name, (f, df)) in enumerate(functions.items()):
        colour = f"C{n}"
        axes[0].plot(x, f, color=colour, lw=2, label=name)
        axes[1].plot(x, df, color=colour, lw=2, label=name)
    if checks is not None:
        x_lib, value_lib, grad_lib = checks
        axes[0].plot(x_lib, value_lib, "k.", ms=7, label="MultiBoxLoss.loss_loc")
        axes[1].plot(x_lib, grad_lib, "k.", ms=7, label="MultiBoxLoss.backward")
    for ax, title, ylabel in ((axes[0], "Regression losses", "loss"),
                              (axes[1], "Their gradients", "d loss / d x")):
        ax.axvspan(-1, 1, color="0.92")
        ax.set_xlabel("x = predicted offset − target offset")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylim(-0.1, 3)
    fig.tight_layout()
    return fig


def draw_loss_balance(ax, ce, positive, negative, neg_pos_ratio: int = 3, names=None):
    """Per-box confidence loss of one image, hardest first, coloured by what the loss does with it.

    ce, positive, negative: (P,) cross-entropies and the masks of ``MultiBoxLoss`` (its
    ``positive[b]`` and ``negative[b]``). Positives (blue) and mined negatives (red) enter L_conf;
    the ignored negatives (grey) do not. The dashed line ends the neg_pos_ratio:1 quota, and the
    legend gives each group's count and summed loss. Log rank axis when P > 50. names (P,):
    a caption beside each point (for a handful of boxes). Returns ax.
    """
    ce = np.asarray(to_numpy(ce), np.float64).reshape(-1)
    positive = np.asarray(to_numpy(positive), bool).reshape(-1)
    negative = np.asarray(to_numpy(negative), bool).reshape(-1)
    if not (len(ce) == len(positive) == len(negative)):
        raise ValueError(f"draw_loss_balance: ce, positive and negative must have the same length, "
                         f"got {len(ce)}, {len(positive)}, {len(negative)}")
    if (positive & negative).any():
        raise ValueError("draw_loss_balance: a box is both positive and a mined negative")
    order = np.argsort(-ce, kind="stable")                       # hardest first
    rank = np.empty(len(ce), int)
    rank[order] = np.arange(1, len(ce) + 1)                      # 1-based rank of each box
    ignored = ~(positive | negative)
    n_pos = int(positive.sum())
    quota = min(neg_pos_ratio * n_pos, int((~positive).sum()))
    big = len(ce) > 50
    groups = [(ignored, "0.6", 4 if big else 50, "ignored negatives"),
              (negative, "tab:red", 14 if big else 60, "mined negatives"),
              (positive, "tab:blue", 18 if big else 70, "positives")]
    def count(n, word):
        return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("x") else "s")

    for mask, colour, size, name in groups:
        ax.scatter(rank[mask], ce[mask], s=size, color=colour, zorder=3 if mask is not ignored else 2,
                   label=f"{name}: {count(int(mask.sum()), 'box')}, Σ CE = {ce[mask].sum():.3g}"
                   + ("  (not in the loss)" if mask is ignored else ""))
    if names is not None:
        if len(names) != len(ce):
            raise ValueError(f"draw_loss_balance: {len(names)} names for {len(ce)} boxes")
        for r, value, name in zip(rank, ce, names):
            ax.annotate(str(name), (r, value), xytext=(6, 4), textcoords="offset points", fontsize=9)
    if negative.any():
        edge = rank[negative].max() + 0.5
        ax.axvline(edge, color="k", ls="--", lw=1,
                   label=f"{neg_pos_ratio}:1 quota: min({neg_pos_ratio}·{n_pos}, negatives) = {quota}")
    if big:
        ax.set_xscale("log")
    else:
        ax.set_xticks(np.arange(1, len(ce) + 1))
    ax.set_xlabel("box, sorted by confidence loss (rank, hardest first)" + (", log scale" if big else ""))
    ax.set_ylabel("cross-entropy −log softmax(z)_y")
    ax.grid(alpha=0.3)
    if big:                                   # a falling curve over thousands of boxes: empty there
        ax.legend(fontsize=8, loc="lower left", framealpha=0.95)
    else:                                     # a few points can sit anywhere: below the axes
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    ax.set_title(f"Loss balance: {count(n_pos, 'positive')}, {int(negative.sum())} mined, "
                 f"{int(ignored.sum())} ignored", fontsize=10)
    return ax


def draw_iou_heatmaps(image, best_per_prior, cfg, gt_boxes, gt_labels, class_names=None,
                      map_names=None, threshold: float = 0.5, columns: int = 4, panel: float = 4.0,
                      title: str = ""):
    """One heat map per source map: each cell's best IoU of its default boxes with any object.

    ``image`` (S, S, 3) the input picture (``cfg.image_size`` square); ``best_per_prior`` (P,)
    each default box's best IoU, in ``default_boxes(cfg)`` order; ``gt_boxes`` (G, 4) [0, 1] xyxy,
    ``gt_labels`` (G,) 1..C. The first panel is the picture with its ground truth; cells at or
    above ``threshold`` are outlined in white; each cell is drawn at its pixels. -> axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    best_per_prior = np.asarray(to_numpy(best_per_prior)).reshape(-1)
    counts = cfg.boxes_per_map
    if best_per_prior.shape[0] != sum(counts):
        raise ValueError(f"draw_iou_heatmaps: best_per_prior has {best_per_prior.shape[0]} values, "
                         f"config '{cfg.name}' has {sum(counts)} default boxes")
    size = cfg.image_size
    names = list(map_names) if map_names is not None else [f"map {k + 1}" for k in range(len(counts))]
    if len(names) != len(counts):
        raise ValueError(f"draw_iou_heatmaps: {len(names)} map_names for the {len(counts)} maps of "
                         f"config '{cfg.name}'")
    gt_pixels = np.asarray(to_numpy(gt_boxes), np.float64).reshape(-1, 4) * size
    gt_labels = np.asarray(to_numpy(gt_labels)).reshape(-1)
    panels = len(counts) + 2                                   # the photo, the maps, the colour bar
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(panel * columns, panel * rows + 0.4),
                             squeeze=False)
    axes = axes.reshape(-1)
    show_detections(axes[0], image, gt_pixels, gt_labels, class_names=class_names, fontsize=7,
                    title=f"ground truth at {size}×{size}")
    offsets = np.cumsum((0,) + tuple(counts))
    for k, ax in enumerate(axes[1:1 + len(counts)]):
        f, a, step = cfg.feature_maps[k], cfg.num_boxes_per_location[k], cfg.steps[k]
        heat = best_per_prior[offsets[k]:offsets[k + 1]].reshape(f, f, a).max(axis=2)  # (f, f)
        im = ax.imshow(heat, cmap="Greys", vmin=0, vmax=1, extent=(0, f * step, f * step, 0))
        for i, j in zip(*np.nonzero(heat >= threshold)):
            ax.add_patch(Rectangle((j * step, i * step), step, step, fill=False, ec="white", lw=1))
        for box, label in zip(gt_pixels, gt_labels):
            add_boxes(ax, box, class_color(label), linewidth=1.5)
        ax.set_xlim(0, size)
        ax.set_ylim(size, 0)
        ax.set_title(f"{names[k]} ({f}×{f}): max IoU {heat.max():.2f}", fontsize=10)
        ax.set_xlabel("x (pixels)", fontsize=9)
    for row in range(rows):
        axes[row * columns + (1 if row == 0 else 0)].set_ylabel("y (pixels)", fontsize=9)
    for ax in axes[1 + len(counts):]:
        ax.axis("off")
    fig.colorbar(im, ax=axes[1 + len(counts)], fraction=0.5, shrink=0.9,
                 label="best IoU with an object")
    fig.suptitle(title or f"IoU heat maps, {cfg.name}: one pixel per cell "
                          f"(white outline: IoU ≥ {threshold:g})", fontsize=12)
    fig.tight_layout()
    return axes


def plot_positives_by_threshold(thresholds, per_object, total, object_names=None,
                                object_labels=None, image_name="one image",
                                total_label="all images", tau: float = 0.5, title: str = "",
                                ax=None):
    """Positive default boxes against the matching threshold τ (log scale); -> ax.

    ``per_object`` (T, G): positives of each object of one image at each of the T ``thresholds``
    (their sum is drawn too); ``total`` (T,): positives over a set of images. Objects are
    coloured by ``class_color(object_labels[j])`` and named ``image_name: object_names[j] j``.
    """
    import matplotlib.pyplot as plt

    thresholds = np.asarray(thresholds, np.float64)
    per_object = np.asarray(per_object).reshape(len(thresholds), -1)
    total = np.asarray(total).reshape(-1)
    if total.shape[0] != len(thresholds):
        raise ValueError(f"plot_positives_by_threshold: total has {total.shape[0]} values for "
                         f"{len(thresholds)} thresholds")
    g = per_object.shape[1]
    names = list(object_names) if object_names is not None else [f"object {j}" for j in range(g)]
    if len(names) != g:
        raise ValueError(f"plot_positives_by_threshold: {len(names)} object_names for {g} objects")
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4))
    for j in range(g):
        colour = (np.array(class_color(object_labels[j])) / 255 if object_labels is not None
                  else None)
        ax.plot(thresholds, per_object[:, j], "-", color=colour, marker="os^vD<>p"[j % 8], ms=4,
                label=f"{image_name}: {names[j]} {j}")
    ax.plot(thresholds, per_object.sum(axis=1), "k-", lw=2, label=f"{image_name}: all objects")
    ax.plot(thresholds, total, "k--", lw=2, label=total_label)
    ax.axvline(tau, color="gray", ls=":", lw=1.5, label=f"SSD's τ = {tau:g}")
    ax.set_yscale("log")
    ax.set_xlabel("IoU threshold τ")
    ax.set_ylabel("positive default boxes (log scale)")
    ax.set_title(title or "Positives against the threshold")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper right")
    return ax


def plot_target_histograms(targets, clip: float = 4.0, bins: int = 33, width: float = 14.0,
                           title: str = ""):
    """Histograms of encoded regression targets (N, 4): t_cx, t_cy, t_w, t_h; -> axes.

    ``targets``: one (N, 4) array, or {label: (N, 4)} to overlay several encodings (e.g. two
    choices of variances). Values beyond ±``clip`` are counted at ±``clip``; the band |t| < 1,
    where chapter 8's smooth L1 is quadratic, is shaded. Titles give each set's std (and, for
    one set, the mean).
    """
    import matplotlib.pyplot as plt

    series = dict(targets) if isinstance(targets, dict) else {None: targets}
    series = {k: np.asarray(to_numpy(v), np.float64) for k, v in series.items()}
    for label, t in series.items():
        if t.ndim != 2 or t.shape[1] != 4:
            where = "" if label is None else f" {label!r}"
            raise ValueError(f"plot_target_histograms: targets{where} must be (N, 4), got {t.shape}")
    colours = ("tab:purple", "tab:orange", "tab:blue", "tab:red")
    fig, axes = plt.subplots(1, 4, figsize=(width, 0.3 * width), sharey=True)
    for c, (ax, name) in enumerate(zip(axes, ["$t_{cx}$", "$t_{cy}$", "$t_w$", "$t_h$"])):
        for k, (label, t) in enumerate(series.items()):
            ax.hist(t[:, c].clip(-clip, clip), bins=np.linspace(-clip, clip, bins),
                    color=colours[k % len(colours)], alpha=0.8 if len(series) == 1 else 0.55,
                    label=label)
        ax.axvspan(-1, 1, color="tab:green", alpha=0.12, label="|t| < 1: smooth L1 quadratic")
        ax.set_xlabel(f"target {name}")
        if len(series) == 1:
            t = next(iter(series.values()))
            ax.set_title(f"{name}: mean {t[:, c].mean():+.2f}, std {t[:, c].std():.2f}", fontsize=10)
        else:
            ax.set_title(f"{name}: std " + ", ".join(f"{t[:, c].std():.2f}" for t in series.values()),
                         fontsize=10)
    counts = sorted({len(t) for t in series.values()})
    axes[0].set_ylabel("positives (" + ", ".join(str(n) for n in counts) + ")")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title or f"Encoded regression targets; |t| > {clip:g} counted at ±{clip:g}",
                 fontsize=11)
    fig.tight_layout()
    return axes
