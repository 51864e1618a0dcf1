"""The `minissd` command, smoke-tested end to end on a tiny generated set."""
import os
import subprocess
import sys

import pytest

from minissd.cli import main

SUBCOMMANDS = [["train"], ["evaluate"], ["detect"], ["data", "shapes"], ["summary"], ["export"]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A shapes set and a checkpoint after a few training steps."""
    root = tmp_path_factory.mktemp("cli")
    data, run = str(root / "shapes"), str(root / "run")
    assert main(["data", "shapes", "--out", data, "--train", "8", "--test", "4", "--size", "96"]) == 0
    assert main(["train", "--data", data, "--epochs", "1", "--batch-size", "4", "--workers", "1",
                 "--out", run]) == 0
    return data, os.path.join(run, "last.npz")


def test_train_writes_checkpoint_and_log(trained):
    data, ckpt = trained
    assert os.path.isfile(ckpt)
    assert os.path.isfile(os.path.join(os.path.dirname(ckpt), "train_log.jsonl"))


def test_evaluate_prints_map_last(trained, capsys, tmp_path):
    data, ckpt = trained
    plot = str(tmp_path / "pr.png")
    assert main(["evaluate", "--checkpoint", ckpt, "--data", data, "--split", "test",
                 "--plot", plot]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("mAP@0.5 (VOC07): ")
    assert 0.0 <= float(last.split(": ")[1]) <= 1.0
    assert os.path.getsize(plot) > 0


def test_detect_draws_images(trained, tmp_path, capsys):
    data, ckpt = trained
    image = os.path.join(data, "JPEGImages", "000008.jpg")
    out = tmp_path / "det"
    assert main(["detect", image, "--checkpoint", ckpt, "--out", str(out), "--threshold", "0.0",
                 "--data", data, "--split", "test", "--limit", "2", "--grid", str(tmp_path / "g.png")]) == 0
    assert sorted(os.listdir(out)) == ["000008.png", "000009.png"]
    assert os.path.getsize(tmp_path / "g.png") > 0
    assert "000008.jpg:" in capsys.readouterr().out


def test_export_drops_optimiser_state(trained, tmp_path):
    from minissd.checkpoint import load_model, read_checkpoint
    data, ckpt = trained
    out = str(tmp_path / "model.npz")
    assert main(["export", ckpt, out]) == 0
    arrays, meta = read_checkpoint(out)
    assert arrays and not [k for k in arrays if not k.startswith("model.")]
    assert meta["class_names"] == ["circle", "square", "triangle"] and meta["optimizer"] is None
    exported, _ = load_model(out)
    original, _ = load_model(ckpt)
    for k, v in original.state_dict().items():
        assert (exported.state_dict()[k] == v).all(), k


def test_summary_prints_the_table(capsys):
    assert main(["summary", "--config", "ssd-tiny", "--num-classes", "3"]) == 0
    out = capsys.readouterr().out
    assert "default boxes: 1,524" in out and "parameters:" in out


def test_train_eval_every_logs_map(trained, tmp_path, capsys):
    import json
    data, _ = trained
    run = str(tmp_path / "run")
    assert main(["train", "--data", data, "--epochs", "1", "--batch-size", "4", "--workers", "1",
                 "--out", run, "--eval-every", "1", "--eval-split", "test"]) == 0
    records = [json.loads(l) for l in open(os.path.join(run, "train_log.jsonl"))]
    evals = [r for r in records if "eval_map" in r]
    assert len(evals) == 1 and evals[0]["epoch"] == 1 and evals[0]["eval_split"] == "test"
    assert "mAP@0.5 (VOC07) on test" in capsys.readouterr().out


def test_anchors_prints_coverage_and_plots(trained, capsys, tmp_path):
    data, _ = trained
    plot = str(tmp_path / "anchors.png")
    assert main(["anchors", "--data", data, "--config", "ssd-tiny", "--split", "test",
                 "--plot", plot]) == 0
    out = capsys.readouterr().out
    assert "default boxes of 'ssd-tiny' (1524 at 128 px)" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("circle", "all "))]
    assert len(rows) == 2 and 0 <= int(rows[-1][2]) <= int(rows[-1][1])
    assert os.path.getsize(plot) > 0
    assert main(["anchors", "--data", "/no/such/folder"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "/no/such/folder"], "data folder not found: /no/such/folder"),
    (["summary", "--config", "ssd999"], "ssd999"),
    (["evaluate", "--checkpoint", "/no/ckpt.npz", "--data", "."], "/no/ckpt.npz"),
    (["detect", "/no/image.jpg", "--checkpoint", "/no/ckpt.npz", "--out", "x"], "/no/ckpt.npz"),
    (["evaluate", "--checkpoint", "c.npz", "--data", ".", "--threads", "0"], "at least 1"),
])
def test_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minissd: error:") and message in err[0]


def test_threads_option_sets_minissd_threads(trained, monkeypatch, capsys):
    from minissd.nn import backend
    monkeypatch.setitem(backend._THREADS, "n", backend.num_threads())   # restored afterwards
    data, ckpt = trained
    assert main(["evaluate", "--checkpoint", ckpt, "--data", data, "--threads", "1"]) == 0
    assert backend.num_threads() == 1


def test_missing_vgg_weights_are_named(trained, capsys, tmp_path):
    data, _ = trained
    assert main(["train", "--data", data, "--epochs", "1", "--batch-size", "4", "--workers", "1",
                 "--out", str(tmp_path), "--vgg-weights", "/no/vgg16.pth"]) == 2
    assert "/no/vgg16.pth" in capsys.readouterr().err


def test_checkpoint_for_other_classes_is_refused(trained, capsys):
    data, ckpt = trained
    assert main(["evaluate", "--checkpoint", ckpt, "--data", data, "--classes", "cat,dog,bird"]) == 2
    assert "trained for classes" in capsys.readouterr().err


@pytest.mark.parametrize("sub", SUBCOMMANDS, ids=" ".join)
def test_help(sub, capsys):
    with pytest.raises(SystemExit) as e:
        main(sub + ["--help"])
    assert e.value.code == 0
    assert "usage: minissd" in capsys.readouterr().out


def test_python_dash_m_runs():
    out = subprocess.run([sys.executable, "-m", "minissd", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "train" in out and "evaluate" in out and "detect" in out
