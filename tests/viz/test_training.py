"""The training log and the mAP curves."""
import numpy as np
import pytest

from minissd import viz

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def test_plot_eval_curves_reads_the_eval_records(tmp_path):
    import json
    import matplotlib.pyplot as plt

    log = tmp_path / "train_log.jsonl"
    lines = [{"step": 1, "epoch": 0, "loss": 3.0},
             {"step": 2, "epoch": 1, "eval_split": "val", "eval_map": 0.1,
              "eval_ap": {"cat": 0.15, "dog": 0.05}},
             {"step": 3, "epoch": 1, "loss": 2.0},
             {"step": 4, "epoch": 2, "eval_split": "val", "eval_map": 0.3,
              "eval_ap": {"cat": 0.4, "dog": 0.2}}]
    log.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    assert [r["step"] for r in viz.read_eval_log(log)] == [2, 4]
    ax = viz.plot_eval_curves({"run": str(log)})
    assert [l.get_label() for l in ax.get_lines()] == ["run (mAP 0.300)", "cat", "dog"]
    np.testing.assert_array_equal(ax.get_lines()[0].get_xydata(), [[1, 0.1], [2, 0.3]])
    np.testing.assert_array_equal(ax.get_lines()[2].get_ydata(), [0.05, 0.2])
    assert ax.get_ylabel() == "AP@0.5 (VOC07) on val"
    plt.close(ax.figure)
    ax = viz.plot_eval_curves({"a": viz.read_eval_log(log), "b": lines[1:2]})   # runs: mAP only
    assert [l.get_label() for l in ax.get_lines()] == ["a (mAP 0.300)", "b (mAP 0.100)"]
    plt.close(ax.figure)
    log.write_text(json.dumps(lines[0]) + "\n")
    with pytest.raises(ValueError, match="no evaluation records"):
        viz.plot_eval_curves({"none": str(log)})
    log.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        viz.read_eval_log(log)


def test_read_train_log_keeps_the_step_records_and_plot_train_log_draws_them(tmp_path):
    import json
    import matplotlib.pyplot as plt

    path = tmp_path / "train_log.jsonl"
    steps = [{"step": k, "epoch": (k - 1) // 4, "loss": 3.0, "loss_loc": 1.0, "loss_conf": 2.0,
              "lr": 1e-3} for k in range(1, 13)]
    evals = [{"step": 12, "epoch": 3, "eval_map": 0.5, "eval_ap": {"a": 0.5}}]
    path.write_text("\n".join(json.dumps(r) for r in steps + evals) + "\n\n")
    assert viz.read_train_log(path) == steps and viz.read_eval_log(path) == evals
    fig = viz.plot_train_log(steps, "run", window=4)
    loc, conf, lr = fig.axes
    np.testing.assert_array_equal(loc.lines[0].get_ydata(), [1.0] * 12)
    np.testing.assert_array_equal(conf.lines[1].get_ydata(), [2.0] * 12)    # the moving mean
    assert [l.get_xdata()[0] for l in lr.lines[1:]] == [5, 9]                # two new epochs
    plt.close(fig)
    fig = viz.plot_train_log(steps, window=4, max_epoch_lines=1)              # too many: none
    assert len(fig.axes[2].lines) == 1
    plt.close(fig)
    with pytest.raises(ValueError, match="no step records"):
        viz.plot_train_log(evals)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        viz.read_train_log(path)


def test_moving_average_is_the_mean_of_the_last_n_values():
    y = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    np.testing.assert_allclose(viz.moving_average(y, 2), [1.0, 1.5, 2.5, 3.5, 7.0])
    np.testing.assert_allclose(viz.moving_average(y, 1), y)
    np.testing.assert_allclose(viz.moving_average(y, 10), np.cumsum(y) / np.arange(1, 6))
