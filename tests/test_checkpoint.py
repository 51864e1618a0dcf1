"""Checkpoint files: finite or refused, a clear line for anything that is not one, temp files
cleared, export never over its input."""
import json
import os
import pickle
import re

import numpy as np
import pytest

from minissd.checkpoint import (export_model, load_model, model_weights, non_finite,
                                read_checkpoint, read_meta, remove_temp_files, save_checkpoint)
from minissd.nn.optim import SGD, WeightAverage
from minissd.ssd.config import get_config
from minissd.ssd.model import SSD

META = {"config": get_config("ssd-tiny").to_dict(), "class_names": ["a", "b"], "epoch": 1,
        "step": 2}


@pytest.fixture()
def model():
    return SSD(get_config("ssd-tiny"), 2, seed=0)


@pytest.fixture()
def ckpt(model, tmp_path):
    path = str(tmp_path / "last.npz")
    save_checkpoint(path, model, SGD(model), META)
    return path


def rewrite(src, dst, change):
    """Copy the .npz ``src`` to ``dst`` with ``change(arrays)`` applied (plain numpy, no checks)."""
    with np.load(src) as z:
        arrays = {k: z[k].copy() for k in z.files}
    change(arrays)
    np.savez(dst, **arrays)
    return str(dst)


def test_non_finite_names_the_first_bad_array_and_counts():
    arrays = {"a": np.ones(3), "n": np.arange(4), "b": np.array([1, np.inf, np.nan]), "c": [np.nan]}
    assert non_finite(arrays) == ("b", 2)
    assert non_finite({"a": np.ones(2, np.float32), "i": np.arange(3)}) is None


def test_save_checkpoint_refuses_nan_and_keeps_the_old_file(model, ckpt):
    before = open(ckpt, "rb").read()
    model.vgg.conv1_1.params["weight"][0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"refusing to write .*last.npz: array "
                                         r"'model.vgg.conv1_1.weight' holds 1 NaN"):
        save_checkpoint(ckpt, model, None, META)
    assert open(ckpt, "rb").read() == before


@pytest.mark.parametrize("key", ["model.vgg.conv1_1.weight", "model.vgg.bn1_1.running_var",
                                 "optim.momentum.vgg.conv1_1.weight"])
def test_read_checkpoint_refuses_non_finite_arrays_naming_file_and_array(model, ckpt, tmp_path, key):
    def poison(arrays):
        if key not in arrays:                       # no momentum before the first step
            arrays[key] = np.zeros_like(arrays["model.vgg.conv1_1.weight"])
        arrays[key].flat[0] = np.inf
    bad = rewrite(ckpt, tmp_path / "bad.npz", poison)
    for read in (read_checkpoint, load_model):
        with pytest.raises(ValueError, match=f"bad.npz: array '{key}' holds 1 NaN or infinite"):
            read(bad)
    with pytest.raises(ValueError, match=f"bad.npz: array '{key}'"):
        export_model(bad, tmp_path / "out.npz")
    assert not os.path.exists(tmp_path / "out.npz")


@pytest.mark.parametrize("content, reason", [
    (b"root:x:0:0:root:/root:/bin/bash\n", "not a zip archive"),
    (pickle.dumps({"weight": [1.0]}), "a pickle, which minissd never loads"),
    (b"", "empty"),
])
def test_a_file_that_is_no_checkpoint_is_named_without_numpys_pickle_hint(tmp_path, content, reason):
    path = tmp_path / "random.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError) as e:
        load_model(path)
    assert str(e.value) == f"{path}: not a minissd checkpoint ({reason})"
    assert "allow_pickle" not in str(e.value)


def test_object_arrays_npy_files_and_folders_are_refused_by_name(tmp_path):
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    np.save(tmp_path / "one.npy", np.zeros(2))
    for path, reason in [(tmp_path / "obj.npz", "array 'a' holds Python objects"),
                         (tmp_path / "one.npy", "a single .npy array"),
                         (tmp_path, "it is a folder")]:
        with pytest.raises(ValueError) as e:
            read_checkpoint(path)
        assert str(e.value).startswith(f"{path}: not a minissd checkpoint ({reason}")
        assert "allow_pickle" not in str(e.value)


@pytest.mark.parametrize("record, message", [
    (b'{"format": "minissd-checkpoint-1", "class_names"', "JSON record (__meta__) is corrupt"),
    (b"\xff\xfe", "JSON record (__meta__) is corrupt"),
    (b"[1, 2]", "JSON record (__meta__) is a list"),
    (b'{"format": "minissd-checkpoint-1", "config": {}}', "JSON record lacks class_names"),
])
def test_a_corrupt_json_record_names_the_file(ckpt, tmp_path, record, message):
    bad = rewrite(ckpt, tmp_path / "corrupt.npz",
                  lambda a: a.update(__meta__=np.frombuffer(record, np.uint8)))
    for read in (read_checkpoint, read_meta, load_model):
        with pytest.raises(ValueError, match=rf"^{re.escape(bad)}: .*{re.escape(message)}"):
            read(bad)


def test_read_meta_gives_the_record(ckpt):
    meta = read_meta(ckpt)
    assert meta["class_names"] == ["a", "b"] and meta["step"] == 2
    assert meta["optimizer"]["lr"] == 1e-3


def test_remove_temp_files_clears_what_an_interrupted_save_left(tmp_path):
    for name in ("tmpab12.tmp.npz", "tmpzz.tmp.npz", "last.json.tmp", "last.npz", "notes.tmp",
                 "train_log.jsonl"):
        (tmp_path / name).write_bytes(b"x")
    assert remove_temp_files(tmp_path) == ["last.json.tmp", "tmpab12.tmp.npz", "tmpzz.tmp.npz"]
    assert sorted(os.listdir(tmp_path)) == ["last.npz", "notes.tmp", "train_log.jsonl"]


def test_export_refuses_its_input_and_a_folder(ckpt, tmp_path):
    before = open(ckpt, "rb").read()
    json_before = open(tmp_path / "last.json").read()
    for dst in (ckpt, str(tmp_path / "." / "last.npz"), str(tmp_path / "last")):
        with pytest.raises(ValueError, match="would overwrite its input"):
            export_model(ckpt, dst)
    with pytest.raises(ValueError, match=f"{tmp_path} is a folder"):
        export_model(ckpt, tmp_path)
    assert open(ckpt, "rb").read() == before
    assert open(tmp_path / "last.json").read() == json_before
    export_model(ckpt, tmp_path / "model.npz")
    arrays, meta = read_checkpoint(tmp_path / "model.npz")
    assert meta["optimizer"] is None and meta["exported_from"] == "last.npz"
    assert json.load(open(tmp_path / "model.json"))["class_names"] == ["a", "b"]


def test_a_checkpoint_with_an_average_is_used_through_it(model, tmp_path):
    average = WeightAverage(model, 0.9)
    average.average = {k: v + 1 for k, v in average.average.items()}   # unlike the weights
    average.updates = 7
    path = str(tmp_path / "ema.npz")
    save_checkpoint(path, model, SGD(model), META, average=average)
    arrays, meta = read_checkpoint(path)
    assert meta["ema"] == {"decay": 0.9, "updates": 7}
    own, averaged = model.state_dict(), average.state_dict()[0]
    for k in own:
        np.testing.assert_array_equal(arrays[f"model.{k}"], own[k], err_msg=k)
        np.testing.assert_array_equal(model_weights(arrays)[k], averaged[k], err_msg=k)
        np.testing.assert_array_equal(load_model(path)[0].state_dict()[k], averaged[k], err_msg=k)
    export_model(path, tmp_path / "shipped.npz")
    shipped, shipped_meta = read_checkpoint(tmp_path / "shipped.npz")
    assert "ema" not in shipped_meta and sorted(shipped) == sorted(f"model.{k}" for k in own)
    for k in own:
        np.testing.assert_array_equal(shipped[f"model.{k}"], averaged[k], err_msg=k)
    plain = str(tmp_path / "plain.npz")                                # without one: its own weights
    save_checkpoint(plain, model, SGD(model), META)
    arrays, meta = read_checkpoint(plain)
    assert "ema" not in meta and not any(k.startswith("ema.") for k in arrays)
    for k in own:
        np.testing.assert_array_equal(model_weights(arrays)[k], own[k], err_msg=k)
