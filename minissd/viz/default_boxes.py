"""Pictures of the default boxes (chapter 6): their scales, one cell's boxes per map, and
every box shape of a config.

    draw_box_scales({"paper": paper_scales(6)}, MAP_NAMES, 300)   # s_k and s'_k per map
    draw_default_boxes_at(backdrop(photo), cfg, cells)           # one cell's default boxes per map
    draw_box_shapes([get_config("ssd300"), get_config("ssd-tiny")])
"""
from __future__ import annotations

import numpy as np

from minissd.nn.backend import to_numpy


def draw_box_scales(rules, map_names, image_size, ax=None):
    """Default-box scales per source map under one or more rules; -> ax.

    rules: {label: [s_1, ..., s_{m+1}]} (fractions of the image side; the last is the last map's
    s_{m+1}). Per rule, s_k (dots, solid) and s'_k = sqrt(s_k s_{k+1}) (squares, dashed); the right
    axis gives the side in pixels of an image_size input.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 3.9), dpi=max(100, plt.rcParams["figure.dpi"]))
    k = np.arange(1, len(map_names) + 1)
    colours = ("tab:gray", "tab:red", "tab:blue", "tab:green")
    for n, (label, scales) in enumerate(rules.items()):
        scales = np.asarray(scales, np.float64)
        if len(scales) != len(map_names) + 1:
            raise ValueError(f"draw_box_scales: rule '{label}' has {len(scales)} scales, expected "
                             f"{len(map_names) + 1} (one per map and the last map's s_(m+1))")
        s, s_next = scales[:-1], scales[1:]
        colour = colours[n % len(colours)]
        ax.plot(k, s, "o-", color=colour, label=f"$s_k$, {label}")
        ax.plot(k, np.sqrt(s * s_next), "s--", color=colour, alpha=0.6,
                label=f"$s'_k=\\sqrt{{s_k s_{{k+1}}}}$, {label}")
    ax.set_xticks(k, list(map_names))
    ax.set_xlabel("source map $k$ (grid size)")
    ax.set_ylabel("box scale (side / image side)")
    ax.set_ylim(0, 1.05)
    px = ax.secondary_yaxis("right", functions=(lambda v: v * image_size, lambda p: p / image_size))
    px.set_ylabel(f"side in pixels (S = {image_size})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return ax


def _shape_styles(cfg):
    """(label, colour, line style, width) per box shape of any map of cfg, keyed like box_shapes'
    order: 's' and "s'" (the squares), then (a, 'wide') and (a, 'tall') per aspect ratio."""
    styles = {"s": ("square $s_k$", "tab:blue", "-", 2.2),
              "s'": ("square $s'_k$", "tab:cyan", "--", 2.2)}
    ratios = sorted({a for r in cfg.aspect_ratios for a in r})
    pairs = [("tab:orange", "tab:green", "-", 2.2), ("#6a3d9a", "#8c564b", "-.", 2.6),
             ("tab:red", "tab:olive", ":", 2.8)]
    for n, a in enumerate(ratios):
        wide, tall, ls, lw = pairs[n % len(pairs)]
        styles[(a, "wide")] = (f"$a={a:g}$ (wide)", wide, ls, lw)
        styles[(a, "tall")] = (f"$a=1/{a:g}$ (tall)", tall, ls, lw)
    return styles


def _shape_keys(cfg, k):
    """The keys of _shape_styles for a cell's boxes on map k: box_shapes order, once per centre."""
    keys = ["s", "s'"] + [(a, side) for a in cfg.aspect_ratios[k] for side in ("wide", "tall")]
    return keys * len(cfg.centres(k))


def draw_default_boxes_at(image, cfg, cells, point=None, map_names=None, columns: int = 3,
                          panel: float = 4.3, title=None):
    """One panel per source map of cfg: the centres of all its cells, and one cell's default boxes.

    image: (S, S, 3) uint8, the network's input. cells: per map (i, j, boxes), the row and column
    of the cell drawn and its rows of ``default_boxes`` ((A, 4) cx, cy, w, h in [0, 1], in
    box_shapes order: squares s_k and s'_k, then a wide and a tall box per aspect ratio), each
    shape with its own colour and line style, outlined in white so they read on the photo.
    point: (x, y) pixels, marked with a red cross. Panels are ``panel`` inches square (430 px at
    dpi 100); the legend sits below them. -> the figure.
    """
    import matplotlib.pyplot as plt
    import matplotlib.patheffects as pe
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    m = len(cfg.feature_maps)
    if len(cells) != m:
        raise ValueError(f"draw_default_boxes_at: {len(cells)} cells for the {m} maps of {cfg.name}")
    names = map_names or [f"map {k + 1}" for k in range(m)]
    S = cfg.image_size
    rows = -(-m // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * panel, rows * panel + 0.9),
                             dpi=max(100, plt.rcParams["figure.dpi"]), squeeze=False)
    styles = _shape_styles(cfg)
    halo = [pe.withStroke(linewidth=4.5, foreground="white")]
    for k, ax in enumerate(axes.flat):
        if k >= m:
            ax.set_axis_off()
            continue
        f, step = cfg.feature_maps[k], cfg.steps[k]
        i, j, boxes = cells[k]
        boxes = np.asarray(to_numpy(boxes), np.float64).reshape(-1, 4) * S        # (A, 4) pixels
        keys = _shape_keys(cfg, k)
        if len(boxes) != len(keys):
            raise ValueError(f"draw_default_boxes_at: map {k} ({names[k]}) has {len(keys)} boxes "
                             f"per cell, got {len(boxes)}")
        ax.imshow(image, extent=(0, S, S, 0))
        for x0, y0 in cfg.centres(k):                          # the paper: one, (0.5, 0.5)
            cx, cy = np.meshgrid((np.arange(f) + x0) * step, (np.arange(f) + y0) * step)  # pixels
            ax.plot(cx.ravel(), cy.ravel(), ".", color="k", ms=1 if f > 40 else 1.5 if f > 20 else 4)
        for (bx, by, bw, bh), key in zip(boxes, keys):
            _, colour, style, lw = styles[key]
            ax.add_patch(Rectangle((bx - bw / 2, by - bh / 2), bw, bh, fill=False, ec=colour,
                                   ls=style, lw=lw, path_effects=halo))
        if point is not None:
            ax.plot(*point, "x", color="red", ms=9, mew=2.5)
        ax.set_xlim(-15, S + 15); ax.set_ylim(S + 15, -15)
        ax.set_title(f"{names[k]}: {f}×{f} cells, step {step} px\n{len(boxes)} boxes at cell "
                     f"(i={i}, j={j}), $s_k$ = {cfg.min_sizes[k]:.0f} px", fontsize=10)
        if k >= m - columns:
            ax.set_xlabel(f"x (pixels of the {S}×{S} input)")
        else:
            ax.tick_params(labelbottom=False)                  # the same 0..S as the panel below
        if k % columns == 0:
            ax.set_ylabel("y (pixels)")
    handles = [Line2D([], [], color=c, ls=s, lw=w, label=n) for n, c, s, w in styles.values()]
    handles.append(Line2D([], [], color="k", marker=".", ls="", label="cell centres"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), frameon=False,
               fontsize=10)
    if title:
        fig.suptitle(title, fontsize=12)
    height = rows * panel + 0.9
    fig.tight_layout(rect=(0, 0.9 / height, 1, 1 - (0.45 / height if title else 0)))
    fig.subplots_adjust(hspace=0.3)                            # titles clear of the panel above
    return fig


def draw_box_shapes(cfgs, width: float = 15.0):
    """Per config, every default-box shape centred on the image (a colour per map), then the
    number of default boxes per map (f_k²·k, log scale) of all of them side by side; -> the figure.

    Each legend sits below its panel, off the boxes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from minissd.ssd.priors import box_shapes

    n = len(cfgs)
    fig, axes = plt.subplots(1, n + 1, figsize=(width, width / (n + 1) * 1.3),
                             dpi=max(100, plt.rcParams["figure.dpi"]),
                             gridspec_kw={"width_ratios": [1] * n + [1.3]})
    for ax, c in zip(axes[:n], cfgs):
        colours = plt.cm.viridis(np.linspace(0, 0.9, len(c.feature_maps)))
        ax.add_patch(Rectangle((0, 0), 1, 1, fill=False, ec="k", lw=1.5, ls="--", zorder=3))
        for k, f in enumerate(c.feature_maps):                  # every box shape, centred on the image
            for s, (w, h) in enumerate(box_shapes(c, k)):
                ax.add_patch(Rectangle((0.5 - w / 2, 0.5 - h / 2), w, h, fill=False, ec=colours[k],
                                       lw=1.6, label=f"map {k + 1}: {f}×{f}" if s == 0 else None))
        ax.set_xlim(-0.35, 1.35); ax.set_ylim(1.35, -0.35); ax.set_aspect("equal")
        ax.set_xlabel("x (fraction of the image side)"); ax.set_ylabel("y")
        ax.set_title(f"{c.name}: all box shapes, unclipped\n(dashed: the image)", fontsize=10)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3,
                  frameon=False)
    bar = axes[n]
    width_bar = 0.8 / n
    colours = ("tab:red", "tab:blue", "tab:green", "tab:purple")
    for m, c in enumerate(cfgs):
        counts = c.boxes_per_map
        x = np.arange(len(counts)) + (m - (n - 1) / 2) * width_bar
        bars = bar.bar(x, counts, width_bar, color=colours[m % len(colours)],
                       label=f"{c.name}: P = {sum(counts)}")
        bar.bar_label(bars, fontsize=8)
    most = max(len(c.feature_maps) for c in cfgs)
    bar.set_yscale("log")
    bar.set_ylim(top=bar.get_ylim()[1] * 3)                    # room for the labels and the legend
    bar.set_xticks(range(most), [f"map {k + 1}" for k in range(most)])
    bar.set_xlabel("source map (finest first)"); bar.set_ylabel("default boxes (log scale)")
    bar.set_title("Default boxes per map", fontsize=10)
    bar.legend(fontsize=9, loc="upper right")
    fig.tight_layout()
    return fig
