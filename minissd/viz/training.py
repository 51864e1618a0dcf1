"""Pictures of training (chapter 9): the per-step log and the mAP curves of runs.

    plot_train_log(read_train_log("runs/x/train_log.jsonl"))      # losses and lr per step
    plot_eval_curves({"run": "runs/x/train_log.jsonl"})            # val mAP against epoch
"""
from __future__ import annotations

import numpy as np



def _read_log(path, key) -> list:
    import json
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {n} is not JSON ({e})") from None
            if key in record:
                records.append(record)
    return records


def read_eval_log(path) -> list:
    """The evaluation records (those with ``eval_map``) of a train_log.jsonl, in order."""
    return _read_log(path, "eval_map")


def read_train_log(path) -> list:
    """The step records (those with ``loss``) of a train_log.jsonl, in order."""
    return _read_log(path, "loss")


def moving_average(y, n: int) -> np.ndarray:
    """The mean of the last ``n`` values at each position (fewer at the start)."""
    c = np.concatenate([[0.0], np.cumsum(np.asarray(y, np.float64))])
    hi = np.arange(1, len(c))
    lo = np.maximum(0, hi - n)
    return (c[hi] - c[lo]) / (hi - lo)


def plot_train_log(records, title: str = "", window: int = 10, max_epoch_lines: int = 30,
                   width: float = 14.0):
    """A run's step records (``read_train_log``) as three panels: the localisation loss and
    the confidence loss, each per step and as the mean of the last ``window`` steps, and the
    learning rate (log axis); dotted lines mark new epochs when there are at most
    ``max_epoch_lines`` of them. Evaluation records mixed in are skipped. Returns the figure."""
    import matplotlib.pyplot as plt   # matplotlib only when plotting

    records = [r for r in records if "loss" in r]
    if not records:
        raise ValueError("plot_train_log: no step records (records with 'loss')")
    step = np.array([r["step"] for r in records])
    epoch = np.array([r["epoch"] for r in records])
    fig, axes = plt.subplots(1, 3, figsize=(width, width * 0.26))
    panels = (("loss_loc", "localisation loss (smooth L1)", "tab:blue"),
              ("loss_conf", "confidence loss (mined cross-entropy)", "tab:red"))
    for ax, (key, name, colour) in zip(axes, panels):
        y = np.array([r[key] for r in records])
        ax.plot(step, y, color=colour, alpha=0.3, lw=1, label="per step")
        ax.plot(step, moving_average(y, window), color=colour, lw=2,
                label=f"mean of {window} steps")
        ax.set_ylim(0, None)
        ax.set_ylabel(name)
        ax.set_title(name.split(" (")[0].capitalize())
        ax.legend(loc="upper right", fontsize=9)
    axes[2].plot(step, [r["lr"] for r in records], color="k", lw=2)
    axes[2].set_yscale("log")
    axes[2].set_ylabel("learning rate")
    axes[2].set_title("Learning rate: warm-up, then ×0.1 twice")
    starts = step[1:][np.diff(epoch) != 0]                       # first step of each new epoch
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        for s in (starts if len(starts) <= max_epoch_lines else ()):
            ax.axvline(s, color="0.5", ls=":", lw=0.8)
    if title:
        fig.suptitle(title, y=1.0)
    fig.tight_layout()
    return fig


def plot_eval_curves(logs, ax=None, per_class=True):
    """mAP against epoch from train_log.jsonl files (``--eval-every``), one line per run.

    logs: {label: path or list of records}. With ``per_class`` and a single run, each
    class's AP is drawn too (thin lines). Returns ax.
    """
    import matplotlib.pyplot as plt   # matplotlib only when plotting

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for label, log in logs.items():
        records = read_eval_log(log) if isinstance(log, (str, bytes)) or hasattr(log, "__fspath__") \
            else list(log)
        if not records:
            raise ValueError(f"plot_eval_curves: {label!r} has no evaluation records "
                             "(train with --eval-every N --eval-split SPLIT)")
        epochs = [r["epoch"] for r in records]
        ax.plot(epochs, [r["eval_map"] for r in records], marker="o", linewidth=2,
                label=f"{label} (mAP {records[-1]['eval_map']:.3f})")
        if per_class and len(logs) == 1:
            for name in records[-1]["eval_ap"]:
                ax.plot(epochs, [r["eval_ap"].get(name, float("nan")) for r in records],
                        linewidth=1, alpha=0.7, label=name)
    split = records[-1].get("eval_split", "")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"AP@0.5 (VOC07) on {split}" if split else "AP@0.5 (VOC07)")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return ax
