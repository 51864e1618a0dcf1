"""Pictures of inference and evaluation (chapter 10): NMS step by step, detections judged
against the ground truth, and a precision/recall curve worked by hand.

    draw_nms_steps(image, boxes, scores, steps, keep, gt_boxes)
    show_judged(ax, image, boxes, labels, scores, gt_boxes, gt_labels)   # TP / FP / missed
    draw_ap_by_hand(recall, precision, names, num_gt)                    # the envelope, AP11, AP
"""
from __future__ import annotations

import numpy as np

from minissd.nn.backend import to_numpy
from minissd.viz.photos import add_boxes, backdrop, box_caption


JUDGED_COLOURS = {"true positive": "#1a9641", "false positive": "#d7191c",
                  "missed": "#fdae61", "ground truth": "white", "ignored (difficult)": "#999999"}


def judged_legend(where, **kwargs):
    """The legend of show_judged's colours: below a Figure's panels, or filling an (empty) Axes."""
    from matplotlib.axes import Axes
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, lw=3, ls="--" if k in ("missed", "ground truth") else "-",
                      label=k) for k, c in JUDGED_COLOURS.items()]
    for h in handles:
        h.set_path_effects(_outline(4.5))
    if isinstance(where, Axes):
        where.set_axis_off()
        options = dict(loc="center", ncol=1, frameon=False, fontsize=11, handlelength=3)
    else:
        options = dict(loc="lower center", ncol=len(handles), frameon=False, fontsize=10,
                       bbox_to_anchor=(0.5, 0.0))
    options.update(kwargs)
    return where.legend(handles=handles, **options)


def _outline(width):
    from matplotlib import patheffects

    return [patheffects.Stroke(linewidth=width, foreground="black"), patheffects.Normal()]


def show_judged(ax, image, boxes, labels, scores, gt_boxes, gt_labels, difficult=None,
                class_names=None, iou_threshold: float = 0.5, linewidth: float = 3.0,
                fontsize: float = 9.0, title: str | None = None):
    """Detections coloured by VOC's verdict (``metrics.judge_image``), with the ground truth drawn.

    True positives green, false positives red (wrong place, wrong class or a duplicate), ground
    truth dashed white, missed ground truth dashed orange, detections of difficult objects grey.
    Captions sit inside the boxes' top-left corners, so none is cut off at the image's edge.
    All boxes are pixel xyxy. -> (outcome (D,), found (G,)) as judge_image returns them.
    """
    from matplotlib.patches import Rectangle

    from minissd.evaluation.metrics import IGNORED, TRUE_POSITIVE, judge_image

    outcome, found = judge_image(to_numpy(boxes), to_numpy(labels), to_numpy(scores),
                                 to_numpy(gt_boxes), to_numpy(gt_labels), difficult, iou_threshold)
    image = to_numpy(image)
    ax.imshow(image)
    h, w = image.shape[:2]

    def rectangle(box, colour, dashed, caption=None):
        x0, y0, x1, y1 = (float(v) for v in box)
        patch = ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour,
                                       linewidth=linewidth, ls=(0, (4, 2)) if dashed else "-"))
        patch.set_path_effects(_outline(linewidth + 1.5))
        if caption:
            right = x0 > 0.6 * w                       # near the right edge: the top-right corner
            x = min(x1, w - 1) - 2 if right else max(x0, 0) + 2
            y = min(max(y0, 0), h - 1) + 2                                 # inside the image
            ax.text(x, y, caption, color="black" if colour == "white" else "white",
                    fontsize=fontsize, va="top", ha="right" if right else "left", clip_on=True,
                    bbox=dict(facecolor=colour, edgecolor="none", pad=1, alpha=0.85))

    gt_boxes, gt_labels = to_numpy(gt_boxes).reshape(-1, 4), to_numpy(gt_labels).reshape(-1)
    for box, label, hit in zip(gt_boxes, gt_labels, found):
        rectangle(box, JUDGED_COLOURS["ground truth" if hit else "missed"], True,
                  None if hit else "missed " + box_caption(label, None, class_names))
    kinds = {TRUE_POSITIVE: "true positive", IGNORED: "ignored (difficult)"}
    order = np.argsort(-to_numpy(scores).reshape(-1), kind="stable")[::-1]   # best drawn last
    boxes, labels, scores = (to_numpy(v) for v in (boxes, labels, scores))
    for d in order:
        rectangle(boxes[d], JUDGED_COLOURS[kinds.get(int(outcome[d]), "false positive")], False,
                  box_caption(labels[d], scores[d], class_names))
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=fontsize + 1)
    return outcome, found


def draw_nms_steps(image, boxes, scores, steps, keep, gt_boxes=None, class_name="",
                   shown_above=None, threshold=0.45, width: float = 16.0):
    """Greedy NMS as four panels: the candidates coloured by score, its first two steps
    (the kept box green, the boxes it suppresses dashed red) and what is left; -> figure.

    ``image`` (H, W, 3); ``boxes`` (N, 4) in [0, 1] xyxy, ``scores`` (N,);
    ``steps``: per step (kept index, [suppressed indices]) and ``keep`` the kept indices,
    as an NMS written out by hand returns them; ``gt_boxes`` (G, 4) pixel xyxy, dotted.
    """
    import matplotlib.pyplot as plt

    image = to_numpy(image)
    height, width_px = image.shape[:2]
    pixels = np.asarray(to_numpy(boxes), np.float64).reshape(-1, 4) * ([width_px, height] * 2)
    scores = np.asarray(to_numpy(scores), np.float64).reshape(-1)
    faded = backdrop(image, fade=0.7, step=8)

    fig, axes = plt.subplots(1, 4, figsize=(width, width * 0.28))
    cmap = plt.get_cmap("viridis")
    for ax in axes:
        ax.imshow(faded, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    for j in np.argsort(scores, kind="stable"):                         # the best drawn last
        add_boxes(axes[0], pixels[j], cmap(scores[j]), linewidth=1.2, alpha=0.4 + 0.6 * scores[j])
    above = f"\nwith score > {shown_above}" if shown_above is not None else ""
    axes[0].set_title(f"before NMS: {len(scores)} '{class_name}' boxes{above} (colour = score)",
                      fontsize=10)
    fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1)), ax=axes[0],
                 fraction=0.046, label="score")
    alive = set(range(len(scores)))
    for k, ax in enumerate(axes[1:3]):
        if k >= len(steps):                                              # NMS ended sooner
            ax.set_axis_off()
            continue
        best, suppressed = steps[k]
        add_boxes(ax, pixels[sorted(alive - {best} - set(suppressed))], "0.35", linewidth=0.8)
        add_boxes(ax, pixels[list(suppressed)], "tab:red", linewidth=1.0, linestyle="--")
        add_boxes(ax, pixels[best], "lime", linewidth=2.5)
        ax.set_title(f"step {k + 1}: keep the best ({scores[best]:.2f}, green),\n"
                     f"drop {len(suppressed)} with IoU > {threshold} (red)", fontsize=10)
        alive -= {best, *suppressed}
    add_boxes(axes[3], pixels[list(keep)], "lime", linewidth=2.0)
    for j in keep:
        axes[3].text(*pixels[j, :2], f"{scores[j]:.2f}", color="black", fontsize=8, va="bottom",
                     bbox=dict(facecolor="lime", edgecolor="none", pad=1))
    if gt_boxes is not None:
        add_boxes(axes[3], gt_boxes, "black", linewidth=1.2, linestyle=":")
    axes[3].set_title(f"after NMS: {len(keep)} boxes\n(dotted black: ground truth)", fontsize=10)
    fig.tight_layout()
    return fig


def draw_ap_by_hand(recall, precision, names=None, num_gt=None, ax=None, title: str = ""):
    """One class's precision/recall after each detection, with what both VOC APs measure; -> ax.

    ``recall``, ``precision`` (K,): after each of the K detections, best score first; ``names``
    (K,) label the points. Shaded: the area under the envelope (precision made non-increasing
    in recall), VOC2010's AP; black dashes: the best precision at recall >= 0, 0.1, ..., 1,
    whose mean is VOC07's 11-point AP. Both come from ``minissd.evaluation.metrics``
    (``precision_envelope``, ``voc07_best_precision``, and the values from ``voc_ap``).
    """
    import matplotlib.pyplot as plt

    from minissd.evaluation.metrics import (VOC07_RECALL_LEVELS, precision_envelope,
                                            voc07_best_precision, voc_ap)

    recall = np.asarray(recall, np.float64).reshape(-1)
    precision = np.asarray(precision, np.float64).reshape(-1)
    if recall.shape != precision.shape:
        raise ValueError(f"draw_ap_by_hand: recall has {recall.size} values, precision "
                         f"{precision.size}")
    envelope = precision_envelope(precision)                    # (K,) best precision from k on
    levels = np.asarray(VOC07_RECALL_LEVELS, np.float64)
    best_at = voc07_best_precision(recall, precision)           # (11,)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.fill_between(np.r_[0.0, recall], np.r_[envelope[:1], envelope], step="pre",
                    color="tab:orange", alpha=0.2,
                    label=f"area under the envelope = AP_all = {voc_ap(recall, precision, False):.3f}")
    ax.plot(recall, precision, "o-", color="tab:blue", label="precision, recall after each detection")
    for name, r, p in zip([] if names is None else list(names), recall, precision):
        ax.annotate(name, (r, p), xytext=(5, 4), textcoords="offset points", fontsize=9)
    ax.plot(levels, best_at, "k_", ms=14, mew=2,
            label=f"best precision at recall ≥ t: AP11 = {voc_ap(recall, precision, True):.3f}")
    ax.set_xlabel("recall" + (f" (TP / {num_gt} ground truths)" if num_gt else ""))
    ax.set_ylabel("precision (TP / detections so far)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0, 1.1)
    ax.set_xticks(levels)
    ax.set_title(title or f"One class, {len(recall)} detections")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return ax
