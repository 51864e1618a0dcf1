"""The `minissd` command, smoke-tested end to end on a tiny generated set."""
import json
import os
import re
import struct
import subprocess
import sys
import zlib

import pytest

from minissd import cli
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


def test_evaluate_errors_prints_each_class_s_mistakes(trained, capsys):
    data, ckpt = trained
    assert main(["evaluate", "--checkpoint", ckpt, "--data", data, "--split", "test", "--errors"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("class") and "localisation" in line)
    assert header.split()[2:] == ["correct", "duplicate", "localisation", "confusion", "background"]
    rows = [line.split() for line in out.splitlines() if line.endswith("%")]
    assert rows and all(abs(sum(float(v[:-1]) for v in r[2:]) - 100) < 0.3 for r in rows)
    assert out.strip().splitlines()[-1].startswith("mAP@0.5 (VOC07): ")


def test_evaluate_by_height_prints_the_ap_over_the_taller_objects(trained, capsys):
    data, ckpt = trained
    assert main(["evaluate", "--checkpoint", ckpt, "--data", data, "--split", "test", "--by-height"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    at = next(i for i, line in enumerate(out) if line.startswith("class") and "tall" in line)
    assert out[at].split()[1:] == ["all", ">=", "0.1", "tall", ">=", "0.2", "tall", ">=", "0.4", "tall"]
    first_map = float(next(line for line in out if line.startswith("mAP ")).split()[1])
    rows = out[at + 1:]
    map_row = next(line for line in rows if line.startswith("mAP"))
    assert float(map_row.split()[1]) == pytest.approx(first_map, abs=1e-4)   # low 0: the AP table's
    counts = [int(c.rstrip(")")) for c in re.findall(r"\(\s*(\d+\))", rows[0])]
    assert len(counts) == 4 and counts == sorted(counts, reverse=True)   # taller: fewer objects
    assert out[-1].startswith("mAP@0.5 (VOC07): ")


def test_evaluate_flip_scores_the_flipping_detector(trained, capsys):
    """--flip: the mAP of Detector(model, flip=True), to the printed digit."""
    from minissd.checkpoint import load_model
    from minissd.datasets.voc import VOCDataset
    from minissd.evaluation.inference import Detector, evaluate_dataset
    data, ckpt = trained
    model, meta = load_model(ckpt)
    dataset = VOCDataset([(data, "test")], class_names=meta["class_names"], keep_difficult=True)
    printed = {}
    for flip in (False, True):
        assert main(["evaluate", "--checkpoint", ckpt, "--data", data, "--split", "test"]
                    + ["--flip"] * flip) == 0
        printed[flip] = capsys.readouterr().out.strip().splitlines()[-1]
        expected = evaluate_dataset(Detector(model, flip=flip), dataset)[0]["map"]
        assert printed[flip] == f"mAP@0.5 (VOC07): {expected:.3f}"
    detections = [evaluate_dataset(Detector(model, flip=flip), dataset)[1] for flip in (False, True)]
    assert any(len(a[0]) != len(b[0]) or not (a[2] == b[2]).all() for a, b in zip(*detections))


def test_detect_flip_draws_images(trained, tmp_path, capsys):
    data, ckpt = trained
    image = os.path.join(data, "JPEGImages", "000008.jpg")
    assert main(["detect", image, "--checkpoint", ckpt, "--out", str(tmp_path / "det"), "--flip"]) == 0
    assert os.path.isfile(tmp_path / "det" / "000008.png")


def test_detect_draws_images(trained, tmp_path, capsys):
    data, ckpt = trained
    image = os.path.join(data, "JPEGImages", "000008.jpg")
    out = tmp_path / "det"
    assert main(["detect", image, "--checkpoint", ckpt, "--out", str(out), "--threshold", "0.0",
                 "--data", data, "--split", "test", "--limit", "2", "--grid", str(tmp_path / "g.png")]) == 0
    assert sorted(os.listdir(out)) == ["000008.png", "000009.png"]
    assert os.path.getsize(tmp_path / "g.png") > 0
    lines = capsys.readouterr().out.splitlines()
    # 000008 given twice (by name and in --data's first two) is drawn once: two images
    assert lines[0].startswith(image + ":") and "(1/2, " in lines[0] and lines[0].endswith(" left)")
    assert lines[1].endswith("(2/2, 0:00 left)")                # the count and the time left


def test_detect_of_one_image_prints_no_count(trained, tmp_path, capsys):
    data, ckpt = trained
    image = os.path.join(data, "JPEGImages", "000008.jpg")
    assert main(["detect", image, "--checkpoint", ckpt, "--out", str(tmp_path / "det")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(image + ":") and line.endswith("000008.png") and "left)" not in line


def test_detect_with_ssd_pytorch_weights(trained, tmp_path, capsys, monkeypatch):
    """--ssd-pytorch-weights goes through Detector.from_ssd_pytorch, with its class names.

    A real SSD300 .pth needs torch to write, so the small ssd.pytorch-layout model of
    tests/data/weights/ stands in for SSD300 here (its two classes named a, b).
    """
    import json
    from minissd.evaluation.inference import Detector
    from minissd.ssd.architecture import SSDArch
    from minissd.ssd.config import SSDConfig
    from minissd.ssd.model import SSD
    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "weights")
    with open(os.path.join(fixtures, "mini.json")) as f:
        d = json.load(f)
    model = SSD(SSDConfig.from_dict(d["config"]), d["num_classes"], arch=SSDArch.from_dict(d["arch"]))
    path = os.path.join(fixtures, "mini_ssd_pytorch.pth")
    calls = []
    original = Detector.from_ssd_pytorch.__func__

    def small(cls, weights, **options):
        calls.append((weights, options))
        return original(cls, weights, model=model, class_names=["a", "b"], **options)

    monkeypatch.setattr(Detector, "from_ssd_pytorch", classmethod(small))
    data, _ = trained
    image = os.path.join(data, "JPEGImages", "000008.jpg")
    assert main(["detect", image, "--ssd-pytorch-weights", path, "--out", str(tmp_path),
                 "--threshold", "0.0"]) == 0
    assert calls == [(path, {"device": "cpu", "conf_threshold": 0.0, "flip": False})]
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"{image}: ") and (" a 0." in line or " b 0." in line)
    assert os.path.isfile(tmp_path / "000008.png")


def test_detect_needs_checkpoint_or_ssd_pytorch_weights(capsys):
    with pytest.raises(SystemExit) as e:
        main(["detect", "x.jpg", "--out", "o"])
    assert e.value.code == 2
    assert "--checkpoint --ssd-pytorch-weights" in capsys.readouterr().err


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
    assert main(["summary"]) == 0                                   # ssd-tiny, 20 classes
    assert "parameters:    1,726,696" in capsys.readouterr().out


def test_summary_of_a_checkpoint_shows_its_own_model(trained, capsys):
    """--checkpoint: the saved model's config, architecture and classes, not the presets'."""
    from minissd.checkpoint import load_model
    from minissd.ssd.model import summary
    _, ckpt = trained
    assert main(["summary", "--checkpoint", ckpt]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{ckpt}: ssd-tiny, classes circle, square, triangle"
    assert summary(load_model(ckpt)[0]) in out
    assert main(["summary", "--checkpoint", ckpt, "--num-classes", "3"]) == 2
    assert "give --checkpoint or --config/--num-classes, not both" in capsys.readouterr().err


def test_train_eval_every_logs_map_and_scores_the_last_epoch_once(trained, tmp_path, capsys,
                                                                   monkeypatch):
    import json
    from minissd.evaluation import inference
    calls = []
    real = inference.evaluate_dataset
    monkeypatch.setattr(inference, "evaluate_dataset",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    data, _ = trained
    run = str(tmp_path / "run")
    assert main(["train", "--data", data, "--epochs", "1", "--batch-size", "4", "--workers", "1",
                 "--out", run, "--eval-every", "1", "--eval-split", "test"]) == 0
    records = [json.loads(l) for l in open(os.path.join(run, "train_log.jsonl"))]
    evals = [r for r in records if "eval_map" in r]
    assert len(evals) == 1 and evals[0]["epoch"] == 1 and evals[0]["eval_split"] == "test"
    out = capsys.readouterr().out
    assert "mAP@0.5 (VOC07) on test" in out
    assert len(calls) == 1                                  # the AP table reuses that score
    assert f"mAP@0.5 (VOC07): {evals[0]['eval_map']:.3f}" in out
    assert os.path.getsize(os.path.join(run, "pr_curves.png")) > 0


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
    (["detect", "/no/image.jpg", "--ssd-pytorch-weights", "/no/ssd300.pth", "--out", "x"], "/no/ssd300.pth"),
    (["evaluate", "--checkpoint", "c.npz", "--data", ".", "--threads", "0"], "at least 1"),
])
def test_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minissd: error:") and message in err[0]


def test_threads_option_sets_minissd_threads(trained, monkeypatch, capsys):
    from minissd.nn import threads
    monkeypatch.setitem(threads._THREADS, "n", threads.num_threads())   # restored afterwards
    data, ckpt = trained
    assert main(["evaluate", "--checkpoint", ckpt, "--data", data, "--threads", "1"]) == 0
    assert threads.num_threads() == 1


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


# --------------------------------------------------------------------------- #
# train and export: no lost or poisoned work, one line for each misuse
# --------------------------------------------------------------------------- #
def train_argv(data, out, *more):
    return ["train", "--data", data, "--epochs", "1", "--batch-size", "4", "--workers", "1",
            "--out", str(out), *more]


def files(folder):
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


def one_error_line(capsys):
    """The error of a failed command: one line (the progress lines of training aside)."""
    err = [l for l in capsys.readouterr().err.strip().splitlines()
           if not re.match(r"epoch \d+/\d+ \[", l)]
    assert len(err) == 1 and err[0].startswith("minissd: error: "), err
    return err[0]


# --- the error policy: one line for the user's mistakes, a traceback for bugs ------------------

def test_an_internal_bug_keeps_its_traceback(monkeypatch):
    def buggy(args):
        return {}["layer"]                    # a KeyError from deep inside: a bug, not the user's
    monkeypatch.setattr(cli, "cmd_summary", buggy)
    with pytest.raises(KeyError, match="layer"):
        main(["summary"])


def test_an_internal_bug_exits_1_with_a_traceback():
    code = ("import sys, minissd.cli as cli\n"
            "cli.cmd_summary = lambda args: int('not a number')\n"
            "sys.exit(cli.main(['summary']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "ValueError" in done.stderr


def test_debug_shows_the_traceback_of_a_user_error(capsys):
    assert main(["--debug", "summary", "--config", "ssd999"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "get_config" in err
    assert err.strip().splitlines()[-1].startswith("minissd: error: unknown SSD config 'ssd999'")


def raised_in(module, error):
    """``error`` as raised by a function defined in ``module`` (as its traceback shows it)."""
    namespace = {"__name__": module}
    exec("def fail(error):\n    raise error\n", namespace)
    try:
        namespace["fail"](error)
    except Exception as caught:
        return caught


def user_error(message):
    from minissd.errors import UserError
    return UserError(message)


def key_error(message):
    from minissd.errors import UserKeyError
    return UserKeyError(message)


def train_error(name, message):
    from minissd import train
    return getattr(train, name)(message)


@pytest.mark.parametrize("module, make_error, expected", [
    ("minissd.ssd.model", lambda: user_error("x"), True),
    ("numpy.core", lambda: FileNotFoundError("x"), True),
    ("minissd.train", lambda: train_error("NonFiniteLossError", "loss is nan"), True),
    ("minissd.train", lambda: train_error("NonFiniteWeightsError", "weights are inf"), True),
    ("minissd.train", lambda: train_error("RunExistsError", "runs/x holds a run"), True),
    ("minissd.nn.module", lambda: key_error("missing 1 key(s)"), True),
    ("minissd.train", lambda: ValueError("a plain ValueError"), False),      # not a UserError: a bug
    ("minissd.checkpoint", lambda: KeyError("class_names"), False),
    ("minissd.train", lambda: RuntimeError("something broke"), False),
    ("minissd.ssd.matching", lambda: ValueError("match: ..."), False),   # a bug's own check
    ("numpy.core", lambda: ValueError("operands could not be broadcast"), False),
    ("minissd.ssd.model", lambda: KeyError("conv4_3"), False),
    ("minissd.train", lambda: TypeError("'NoneType' object is not subscriptable"), False),
])
def test_is_user_error(module, make_error, expected):
    assert cli.is_user_error(raised_in(module, make_error())) is expected


@pytest.mark.parametrize("cause, expected", [
    (lambda: raised_in("minissd.datasets.voc", user_error("im1.jpg: cannot decode image")), True),
    (lambda: raised_in("minissd.datasets.augment", KeyError("crop")), False),
])
def test_an_error_raised_from_a_user_error_is_one(cause, expected):
    from minissd.datasets.loader import DataLoaderError
    wrapper = raised_in("minissd.datasets.loader", DataLoaderError("image 'im1' failed"))
    wrapper.__cause__ = cause()
    assert cli.is_user_error(wrapper) is expected


def test_a_bad_training_image_is_one_line(tmp_path, capsys):
    data = str(tmp_path / "shapes")
    assert main(["data", "shapes", "--out", data, "--train", "4", "--test", "0", "--size", "64"]) == 0
    with open(os.path.join(data, "JPEGImages", "000002.jpg"), "r+b") as f:
        f.truncate(100)                                 # passes the XML checks, fails to decode
    assert main(["train", "--data", data, "--epochs", "1", "--batch-size", "4", "--workers", "1",
                 "--out", str(tmp_path / "run")]) == 2
    assert "000002.jpg: cannot decode image" in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_checkpoint_module_check_is_one_line(trained, tmp_path, capsys):
    import numpy as np
    data, _ = trained
    np.savez(tmp_path / "bare.npz", w=np.zeros(3))
    assert main(["evaluate", "--checkpoint", str(tmp_path / "bare.npz"), "--data", data]) == 2
    assert "bare.npz: not a minissd checkpoint" in one_error_line(capsys)


@pytest.mark.parametrize("argv, words", [
    (["data", "shapes", "--out", "{tmp}/s", "--size", "8"], "--size 8 is too small"),
    (["data", "shapes", "--out", "{tmp}/s", "--train", "-5"], "--train must be 0 or more"),
    (["data", "shapes", "--out", "{tmp}/s", "--test", "-1"], "--test must be 0 or more"),
    (["export", "{ckpt}", "{tmp}"], "is a folder; give the .npz file"),
    (["evaluate", "--checkpoint", "{ckpt}", "--data", "{data}", "--split", "empty"],
     "empty.txt: lists no images"),
    (["evaluate", "--checkpoint", "{ckpt}", "--data", "{data}", "--classes", "circle,square,circle"],
     "--classes: a class name is listed twice: circle"),
    (["train", "--data", "{data}", "--classes", "circle,square,circle,triangle", "--out", "{tmp}/r"],
     "--classes: a class name is listed twice: circle"),
    (["train", "--data", "{data}", "--epochs", "ten", "--out", "{tmp}/r"],
     "--epochs: 'ten' is neither a whole number nor auto"),
    (["train", "--data", "{data}", "--epochs", "auto", "--out", "{tmp}/r"],
     "--epochs): auto fills the time of --max-minutes: give it"),
    (["detect", "{data}/JPEGImages/000000.jpg", "--checkpoint", "{ckpt}", "--out", "{ckpt}"],
     "is a file, not a folder"),
    (["detect", "{data}/JPEGImages/000000.jpg", "--checkpoint", "{ckpt}", "--out", "{tmp}/d",
      "--grid", "{tmp}"], "--grid"),
])
def test_misuse_is_one_line_naming_the_argument(trained, tmp_path, capsys, argv, words):
    data, ckpt = trained
    open(os.path.join(data, "ImageSets", "Main", "empty.txt"), "w").close()
    argv = [a.format(tmp=tmp_path, data=data, ckpt=ckpt) for a in argv]
    before = sorted(os.listdir(tmp_path))
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert words in line, line
    assert sorted(os.listdir(tmp_path)) == before            # nothing written


def test_data_shapes_at_the_smallest_size(tmp_path, capsys):
    from minissd.datasets.synthetic import min_image_size
    assert main(["data", "shapes", "--out", str(tmp_path), "--train", "3", "--test", "0",
                 "--size", str(min_image_size())]) == 0


# --- detect: unique names, and an unreadable image is skipped with one line ----------------------

def write_png_header(path, width, height):
    """A PNG whose header says width x height, with next to no pixel data: the size is read
    without decoding, as a decompression bomb's would be."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)            # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b""))
    return str(path)


def bad_image(kind, tmp_path, good):
    if kind == "/etc/passwd":
        return "/etc/passwd" if os.path.isfile("/etc/passwd") else str(tmp_path / "passwd")
    if kind == "truncated jpeg":
        raw = open(good, "rb").read()
        (tmp_path / "cut.jpg").write_bytes(raw[:len(raw) // 2])
        return str(tmp_path / "cut.jpg")
    if kind == "20000x20000 png":
        return write_png_header(tmp_path / "huge.png", 20000, 20000)
    if kind == "missing":
        return str(tmp_path / "nowhere.jpg")
    return str(tmp_path)                                                   # a folder


@pytest.mark.parametrize("kind, words", [
    ("/etc/passwd", "cannot decode image"),
    ("truncated jpeg", "cannot decode image"),
    ("20000x20000 png", "more than the 67108864 pixels minissd decodes"),
    ("missing", "image not found"),
    ("folder", "cannot decode image"),
])
def test_detect_skips_an_unreadable_image_and_exits_2(trained, tmp_path, capsys, kind, words):
    data, ckpt = trained
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    good, good2 = (os.path.join(data, "JPEGImages", f"00000{i}.jpg") for i in (0, 1))
    bad = bad_image(kind, tmp_path, good)
    out = tmp_path / "det"
    assert main(["detect", good, bad, good2, "--checkpoint", ckpt, "--out", str(out),
                 "--grid", str(tmp_path / "grid.png")]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"minissd: error: {bad}: ") and words in line and "skipped" in line
    assert sorted(os.listdir(out)) == ["000000.png", "000001.png"]
    assert os.path.getsize(tmp_path / "grid.png") > 0


def test_detect_keeps_two_images_of_the_same_name(trained, tmp_path, capsys):
    import shutil
    data, ckpt = trained
    for folder, image in (("a", "000000.jpg"), ("b", "000001.jpg")):
        os.makedirs(tmp_path / folder)
        shutil.copy(os.path.join(data, "JPEGImages", image), tmp_path / folder / "x1.jpg")
    out = tmp_path / "det"
    assert main(["detect", str(tmp_path / "a" / "x1.jpg"), str(tmp_path / "b" / "x1.jpg"),
                 "--checkpoint", ckpt, "--out", str(out)]) == 0
    a, b = (out / f / "x1.png" for f in ("a", "b"))
    assert a.is_file() and b.is_file() and a.read_bytes() != b.read_bytes()


@pytest.mark.parametrize("paths, names", [
    (["d/x.jpg"], ["x.png"]),
    (["a/x1.jpg", "b/x1.jpg"], ["a/x1.png", "b/x1.png"]),
    (["a/x1.jpg", "b/c/x1.jpg", "c/z.jpg"], ["a/x1.png", "b/c/x1.png", "z.png"]),
    (["d/x1.jpg", "d/x1.png", "d/e/y.jpg"], ["x1.png", "x1-2.png", "y.png"]),
    (["x1.jpg", "x1.png", "x1-2.jpg"], ["x1.png", "x1-2.png", "x1-2-2.png"]),
])
def test_picture_names_are_distinct(paths, names):
    assert cli.picture_names(paths) == [os.path.normpath(n) for n in names]


def test_train_options_come_from_train_config():
    """Each TrainConfig field is an option of `minissd train` with the field's help; nothing given
    means the dataclass's defaults (written once, there)."""
    import dataclasses
    from minissd.cli import build_parser
    from minissd.train import TrainConfig, config_from_options
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    options = {a.dest: a for a in train._actions}
    for f in dataclasses.fields(TrainConfig):
        assert options[f.name].option_strings == ["--" + f.name.replace("_", "-")]
        assert options[f.name].help.startswith(f.metadata["help"].replace("%", "%%"))
    args = parser.parse_args(["train", "--data", "d"])
    assert not [f.name for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)
                and f.name != "data"]
    assert config_from_options({"data": ["d"]}) == TrainConfig(data=["d"])
    args = parser.parse_args(["train", "--data", "a", "b", "--batch-size", "8", "--lr", "0.01",
                              "--momentum", "0.8", "--reset-heads", "--max-minutes", "2"])
    assert (args.data, args.batch_size, args.lr, args.momentum, args.reset_heads,
            args.max_minutes) == (["a", "b"], 8, 0.01, 0.8, True, 2.0)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_lr_100_leaves_a_finite_checkpoint_and_one_clear_line(trained, tmp_path, capsys):
    """Issue 14's first defect, at the size of this test set: the weights go non-finite in the
    last step of epoch 3 (a finite loss), which used to be saved as last.npz with rc 0."""
    import numpy as np
    data, _ = trained
    run = tmp_path / "lr100"
    rc = main(train_argv(data, run, "--epochs", "3", "--lr", "100", "--augment", "flip"))
    with np.load(run / "last.npz") as z:                          # whatever happened: finite
        assert all(np.isfinite(z[k]).all() for k in z.files if z[k].dtype.kind == "f")
    assert rc == 2
    line = one_error_line(capsys)
    assert re.search(r"non-finite (weights|loss) .*step \d+, epoch \d+ .*images in the batch: "
                     r"\d{6}(, \d{6}){3}", line), line


def test_a_second_run_into_the_same_out_is_refused_and_the_first_is_byte_identical(
        trained, tmp_path, capsys):
    data, _ = trained
    run = tmp_path / "run"
    assert main(train_argv(data, run)) == 0
    first = files(run)
    capsys.readouterr()
    assert main(train_argv(data, run, "--seed", "3")) == 2
    assert "holds a run (last.npz, train_log.jsonl)" in one_error_line(capsys)
    assert capsys.readouterr().out == ""                          # refused before the banner
    assert files(run) == first
    assert main(train_argv(data, run, "--seed", "3", "--overwrite")) == 0
    assert files(run).keys() == first.keys() and files(run)["last.npz"] != first["last.npz"]


def test_resume_takes_the_checkpoints_settings_and_checks_changes(trained, tmp_path, capsys):
    import shutil
    from minissd.checkpoint import read_checkpoint
    data, _ = trained
    run = tmp_path / "run"
    assert main(train_argv(data, run, "--epochs", "2", "--max-minutes", "1e-9")) == 0   # stops after 1
    assert read_checkpoint(run / "last.npz")[1]["epoch"] == 1
    shutil.copy(run / "last.npz", tmp_path / "epoch1.npz")
    capsys.readouterr()
    assert main(["train", "--resume", str(run / "last.npz"), "--batch-size", "2"]) == 2
    assert "other settings (--batch-size 4 -> 2)" in one_error_line(capsys)
    assert main(["train", "--resume", str(run / "last.npz"), "--max-minutes", "10"]) == 0
    _, meta = read_checkpoint(run / "last.npz")
    assert (meta["epoch"], meta["step"], meta["train_config"]["batch_size"]) == (2, 4, 4)
    assert main(["train", "--resume", str(run / "last.npz")]) == 2
    assert "has done 2 epoch(s); --epochs 2 leaves nothing to train" in one_error_line(capsys)
    assert main(["train", "--resume", str(tmp_path / "epoch1.npz"), "--out", str(run)]) == 0
    assert [json.loads(l)["step"] for l in open(run / "train_log.jsonl")] == [1, 2, 3, 4]


def test_fine_tuning_the_shipped_model_from_the_command_line(trained, tmp_path, capsys):
    data, _ = trained
    shipped = os.path.join(os.path.dirname(__file__), "..", "models", "ssd-tiny-shapes.npz")
    assert main(["train", "--data", data, "--epochs", "1", "--batch-size", "4", "--out",
                 str(tmp_path / "a"), "--resume", shipped]) == 2
    assert "cannot be resumed; to fine-tune from it, use --init" in one_error_line(capsys)
    assert main(train_argv(data, tmp_path / "a", "--init", shipped)) == 0
    assert f"initialised from {shipped}" in capsys.readouterr().out
    assert main(train_argv(data, tmp_path / "b", "--init", shipped, "--classes",
                           "circle,square,triangle,star", "--reset-heads")) == 0
    assert "(class heads re-initialised)" in capsys.readouterr().out


def test_export_refuses_to_write_over_its_input(trained, tmp_path, capsys):
    data, ckpt = trained
    before = open(ckpt, "rb").read()
    assert main(["export", ckpt, ckpt]) == 2
    assert "would overwrite its input" in one_error_line(capsys)
    assert main(["export", ckpt, str(tmp_path)]) == 2
    assert f"{tmp_path} is a folder" in one_error_line(capsys)
    assert open(ckpt, "rb").read() == before


@pytest.mark.parametrize("more, message", [
    (["--epochs", "-3"], "TrainConfig.epochs (--epochs): must be an integer >= 1 or auto, got -3"),
    (["--epochs", "0"], "TrainConfig.epochs (--epochs): must be an integer >= 1 or auto, got 0"),
    (["--workers", "-1"], "TrainConfig.workers (--workers): must be an integer >= 0, got -1"),
    (["--max-minutes", "nan"], "TrainConfig.max_minutes (--max-minutes): must be a finite number > 0"),
    (["--batch-size", "64"], "split 'trainval' has 8 image(s), fewer than --batch-size 64"),
    (["--split", "empty", "--batch-size", "1"], "split 'empty' is empty"),
    (["--out", "/etc/passwd"], "TrainConfig.out (--out): /etc/passwd is a file, not a folder"),
    (["--resume", "/etc/passwd"], "/etc/passwd: not a minissd checkpoint (not a zip archive)"),
    (["--init", "/etc/passwd"], "/etc/passwd: not a minissd checkpoint (not a zip archive)"),
    (["--decay-at", "0.5,x"], "--decay-at: '0.5,x' is not comma-separated numbers"),
])
def test_train_misuse_is_one_line_before_the_banner(trained, tmp_path, capsys, more, message):
    data, _ = trained
    open(os.path.join(data, "ImageSets", "Main", "empty.txt"), "w").close()
    argv = train_argv(data, tmp_path / "run")
    assert main(argv[:argv.index("--out")] + ["--out", str(tmp_path / "run")] + more) == 2
    assert message in one_error_line(capsys)
    assert capsys.readouterr().out == ""
    assert not os.path.exists(tmp_path / "run" / "last.npz")


def test_a_random_file_as_checkpoint_is_named_without_the_pickle_hint(trained, tmp_path, capsys):
    data, _ = trained
    path = tmp_path / "random.npz"
    path.write_bytes(os.urandom(2000).replace(b"PK", b"pk"))
    for argv in (["evaluate", "--checkpoint", str(path), "--data", data],
                 ["export", str(path), str(tmp_path / "out.npz")]):
        assert main(argv) == 2
        line = one_error_line(capsys)
        assert f"{path}: not a minissd checkpoint" in line and "allow_pickle" not in line


def start_training_and_wait(data, run, epochs):
    """Start `minissd train` in a child process; return it once its log is ahead of its first
    checkpoint (the log is flushed before each save), or once it has ended."""
    import time
    proc = subprocess.Popen([sys.executable, "-m", "minissd"] + train_argv(data, run, "--epochs", str(epochs)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    log, deadline = run / "train_log.jsonl", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run / "last.json").exists() and log.exists() and \
                open(log).read().count("\n") > json.load(open(run / "last.json"))["step"]:
            break
        time.sleep(0.01)
    return proc


def test_ctrl_c_stops_with_130_and_the_run_resumes(trained, tmp_path):
    import signal
    from minissd.checkpoint import read_checkpoint
    data, _ = trained
    run = tmp_path / "run"
    proc = start_training_and_wait(data, run, 20)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    tail = "\n".join(err.strip().splitlines()[-30:])         # what went wrong, if anything
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "minissd: interrupted", tail
    done = read_checkpoint(run / "last.npz")[1]["epoch"]
    assert main(["train", "--resume", str(run / "last.npz"), "--epochs", str(done + 1),
                 "--override"]) == 0
    assert [json.loads(l)["step"] for l in open(run / "train_log.jsonl")] == \
        list(range(1, 2 * (done + 1) + 1))


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")   # "Exception ignored"
def test_ctrl_c_inside_the_checkpoint_zip_write_is_an_interrupt(trained, tmp_path, monkeypatch, capsys):
    """Ctrl-C while zipfile opens a member for writing (inside ``_ZipWriteFile.__init__``, whose
    frame the traceback keeps, and the half-made handle with it): numpy's ``zip.close()`` then
    raises a ValueError (an open writing handle) with the KeyboardInterrupt as its context.
    That is still the interrupt: exit 130, one line, no temporary file, no checkpoint written;
    and the abandoned zip, on save_npz's in-memory buffer, closes quietly when it is freed."""
    import zipfile
    data, _ = trained
    open_to_write = zipfile.ZipFile._open_to_write

    def interrupted(self, zinfo, force_zip64=False):
        handle = open_to_write(self, zinfo, force_zip64)     # zip._writing, the handle alive ...
        raise KeyboardInterrupt(handle)                      # ... when Ctrl-C lands

    monkeypatch.setattr(zipfile.ZipFile, "_open_to_write", interrupted)
    run = tmp_path / "run"
    assert main(train_argv(data, run)) == 130
    err = [l for l in capsys.readouterr().err.strip().splitlines() if not re.match(r"epoch \d+/\d+ \[", l)]
    assert err == ["minissd: interrupted"]
    assert sorted(os.listdir(run)) == ["train_log.jsonl"]        # no last.npz, no *.tmp.npz


def test_raised_by_ctrl_c_looks_for_the_interrupt_in_the_context_chain():
    from minissd.cli import raised_by_ctrl_c
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("the cleanup failed")
    except ValueError as err:
        assert raised_by_ctrl_c(err)
    assert not raised_by_ctrl_c(ValueError("no interrupt anywhere"))
    try:
        try:
            raise OSError("disk full")
        except OSError as inner:
            raise RuntimeError("while saving") from inner
    except RuntimeError as err:
        assert not raised_by_ctrl_c(err)


def test_kill_9_during_training_then_resume_leaves_each_step_once_in_the_log(trained, tmp_path):
    """A real SIGKILL once the log is ahead of the checkpoint (it is flushed before each save):
    last.npz loads, and after --resume the log has steps 1..N exactly once."""
    import signal
    from minissd.checkpoint import read_checkpoint
    data, _ = trained
    run = tmp_path / "run"
    proc = start_training_and_wait(data, run, 20)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    _, meta = read_checkpoint(run / "last.npz")                 # loadable after the kill
    done = meta["epoch"]
    assert 1 <= done < 20
    assert main(["train", "--resume", str(run / "last.npz"), "--epochs", str(done + 1),
                 "--override"]) == 0
    steps = [json.loads(l)["step"] for l in open(run / "train_log.jsonl")]
    assert steps == list(range(1, 2 * (done + 1) + 1))
