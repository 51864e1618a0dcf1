"""The `minissd` command, smoke-tested end to end on a tiny generated set."""
import os
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


# --- the error policy: one line for the user's mistakes, a traceback for bugs ------------------

def one_error_line(capsys):
    """The single stderr line of a command that failed with a user error."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minissd: error: "), err
    return err[0]


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


@pytest.mark.parametrize("module, make_error, expected", [
    ("minissd.ssd.model", lambda: user_error("x"), True),
    ("numpy.core", lambda: FileNotFoundError("x"), True),
    ("minissd.train", lambda: ValueError("TrainConfig.epochs must be >= 1"), True),
    ("minissd.checkpoint", lambda: KeyError("class_names"), True),
    ("minissd.nn.module", lambda: KeyError("missing 1 key(s)"), True),
    ("minissd.train", lambda: RuntimeError("loss is nan"), True),
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
