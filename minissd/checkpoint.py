"""Checkpoints: one ``.npz`` with the model, the optimiser state and a JSON record.

A checkpoint holds the model's arrays (``model.<layer>.<name>``), the momentum
buffers (``optim.<...>``), with ``--ema`` the weights' moving average
(``ema.<layer>.<name>``: what ``load_model`` and ``export_model`` then use) and, as a
uint8 array ``__meta__``, a JSON record of the config, the class names, the epoch and the
step -- no pickle. It is written atomically (a temporary file, then a rename), with a
readable copy of the JSON beside it (``last.json``). ``export_model`` drops the optimiser state
for shipping a model; ``load_model`` gives back a ready ``SSD`` in eval mode.

Finite or nothing: :func:`save_checkpoint` refuses to write an array holding NaN
or inf, and :func:`read_checkpoint` (so ``load_model``, ``export_model`` and
resume) refuses to read one, naming the file and the array.
"""
from __future__ import annotations

import glob
import json
import os

import numpy as np

from minissd.errors import UserError
from minissd.nn.module import NotNpzError, load_npz, save_npz
from minissd.ssd.architecture import SSDArch
from minissd.ssd.config import SSDConfig
from minissd.ssd.model import SSD

CHECKPOINT_FORMAT = "minissd-checkpoint-1"
TEMP_PATTERNS = ("tmp*.tmp.npz", "*.json.tmp")   # what an interrupted save leaves behind


def non_finite(arrays: dict):
    """``(key, count)`` of the first floating array (in dict order) holding NaN or inf, else None."""
    for key, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            return key, int(a.size - np.count_nonzero(np.isfinite(a)))
    return None


def remove_temp_files(folder) -> list:
    """Delete the temporary files an interrupted save left in ``folder``; their names."""
    found = sorted({p for pattern in TEMP_PATTERNS
                    for p in glob.glob(os.path.join(glob.escape(os.fspath(folder)), pattern))})
    for p in found:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    return [os.path.basename(p) for p in found]


def save_checkpoint(path, model, optimizer, meta: dict, average=None):
    """Write model + optimiser (+ the weights' moving average, ``average``: a
    :class:`~minissd.nn.optim.WeightAverage`) + JSON meta to one ``.npz`` atomically, and
    ``.json`` beside it.

    Refuses (``ValueError`` naming the array) to write NaN or inf, so a poisoned
    state never replaces a good checkpoint.
    """
    meta = dict(meta, arch=model.arch.to_dict())                     # the channel plan, with the config
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    optim_arrays, optim_meta = optimizer.state_dict() if optimizer is not None else ({}, None)
    arrays.update({f"optim.{k}": v for k, v in optim_arrays.items()})
    if average is not None:                                          # ema.* and its {decay, updates}
        average_arrays, meta["ema"] = average.state_dict()
        arrays.update({f"ema.{k}": v for k, v in average_arrays.items()})
    bad = non_finite(arrays)
    if bad is not None:
        raise UserError(f"refusing to write {path}: array {bad[0]!r} holds {bad[1]} NaN or "
                        f"infinite value(s)")
    _write_checkpoint(path, arrays, meta, optim_meta)


def _write_checkpoint(path, arrays, meta, optimizer_meta):
    meta = dict(meta, format=CHECKPOINT_FORMAT, optimizer=optimizer_meta)
    text = json.dumps(meta, indent=2)
    arrays["__meta__"] = np.frombuffer(text.encode(), dtype=np.uint8)
    save_npz(path, arrays)
    json_path = os.path.splitext(path)[0] + ".json"
    tmp = json_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, json_path)


def _meta_of(path, arrays):
    """The JSON record of a checkpoint's arrays, checked; a clear error naming the file."""
    if "__meta__" not in arrays:
        raise UserError(f"{path}: not a minissd checkpoint (no __meta__ record); "
                        "for bare weights use model.load()")
    try:
        meta = json.loads(bytes(np.asarray(arrays["__meta__"], dtype=np.uint8)).decode())
    except ValueError as e:            # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{path}: the checkpoint's JSON record (__meta__) is corrupt: {e}") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: the checkpoint's JSON record (__meta__) is a "
                        f"{type(meta).__name__}, not an object")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: unknown checkpoint format {meta.get('format')!r}")
    missing = [k for k in ("config", "class_names") if k not in meta]
    if missing:
        raise UserError(f"{path}: the checkpoint's JSON record lacks {', '.join(missing)}")
    return meta


def _load(path):
    try:
        return load_npz(path)
    except NotNpzError as e:
        raise UserError(f"{path}: not a minissd checkpoint ({e.reason})") from None


def read_meta(path) -> dict:
    """The JSON record of a checkpoint, without checking its arrays."""
    return _meta_of(path, _load(path))


def read_checkpoint(path):
    """(arrays, meta) of a checkpoint; a clear error naming the file for anything else.

    Refuses a checkpoint whose arrays hold NaN or inf, naming the array.
    """
    arrays = _load(path)
    meta = _meta_of(path, arrays)
    del arrays["__meta__"]
    bad = non_finite(arrays)
    if bad is not None:
        raise UserError(f"{path}: array {bad[0]!r} holds {bad[1]} NaN or infinite value(s); "
                        "this checkpoint cannot be used (train again, or from an earlier one, "
                        "with a lower --lr)")
    return arrays, meta


def section(arrays, prefix):
    """The arrays whose key starts with ``prefix`` ('model.', 'optim.', 'ema.'), keyed without it."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def model_weights(arrays):
    """The weights a checkpoint's model is used with: the moving average of a run trained
    with ``--ema`` (``ema.*``), else its own (``model.*``)."""
    return section(arrays, "ema.") or section(arrays, "model.")


def export_model(src, dst):
    """Copy a checkpoint without its optimiser state (half the size): for shipping a model.

    Refuses to write over ``src`` (or its ``.json``) and into a folder.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if os.path.isdir(dst):
        raise UserError(f"export: {dst} is a folder; give the .npz file to write, e.g. "
                        f"{os.path.join(dst, 'model.npz')}")
    same = os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst)
    if same or os.path.abspath(os.path.splitext(src)[0]) == os.path.abspath(os.path.splitext(dst)[0]):
        raise UserError(f"export: {dst} would overwrite its input {src} (and the run could no "
                        "longer be resumed); give another file name")
    arrays, meta = read_checkpoint(src)
    model = {f"model.{k}": v for k, v in model_weights(arrays).items()}     # --ema: the average
    meta = {k: v for k, v in meta.items() if k not in ("format", "optimizer", "ema")}
    meta["exported_from"] = os.path.basename(src)
    _write_checkpoint(dst, model, meta, optimizer_meta=None)


def load_model(path, device="cpu", class_names=None):
    """(model, meta) from a checkpoint; checks the class list if one is given."""
    arrays, meta = read_checkpoint(path)
    if class_names is not None and list(class_names) != list(meta["class_names"]):
        raise UserError(f"{path}: checkpoint was trained for classes {meta['class_names']}, "
                        f"not {list(class_names)}")
    cfg = SSDConfig.from_dict(meta["config"])
    arch = SSDArch.from_dict(meta["arch"]) if "arch" in meta else None   # older ones: the registry's
    model = SSD(cfg, len(meta["class_names"]), arch=arch)
    model.load_state_dict(model_weights(arrays), source=str(path))
    return model.to(device).eval(), meta
