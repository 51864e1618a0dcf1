"""Checkpoints: one ``.npz`` with the model, the optimiser state and a JSON record.

A checkpoint holds the model's arrays (``model.<layer>.<name>``), the momentum
buffers (``optim.<...>``) and, as a uint8 array ``__meta__``, a JSON record of
the config, the class names, the epoch and the step -- no pickle. It is
written atomically (a temporary file, then a rename), with a readable copy of
the JSON beside it (``last.json``). ``export_model`` drops the optimiser state
for shipping a model; ``load_model`` gives back a ready ``SSD`` in eval mode.
"""
from __future__ import annotations

import json
import os

import numpy as np

from minissd.nn.module import load_npz, save_npz
from minissd.ssd.architecture import SSDArch
from minissd.ssd.config import SSDConfig
from minissd.ssd.model import SSD

CHECKPOINT_FORMAT = "minissd-checkpoint-1"


def save_checkpoint(path, model, optimizer, meta: dict):
    """Write model + optimiser + JSON meta to one ``.npz`` atomically, and ``.json`` beside it."""
    meta = dict(meta, arch=model.arch.to_dict())                     # the channel plan, with the config
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    optim_arrays, optim_meta = optimizer.state_dict() if optimizer is not None else ({}, None)
    arrays.update({f"optim.{k}": v for k, v in optim_arrays.items()})
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


def read_checkpoint(path):
    """(arrays, meta) of a checkpoint; a clear error for anything else."""
    arrays = load_npz(path)
    if "__meta__" not in arrays:
        raise ValueError(f"{path}: not a minissd checkpoint (no __meta__ record); "
                         "for bare weights use model.load()")
    meta = json.loads(bytes(arrays.pop("__meta__")).decode())
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: unknown checkpoint format {meta.get('format')!r}")
    return arrays, meta


def section(arrays, prefix):
    """The arrays whose key starts with ``prefix`` ('model.', 'optim.'), keyed without it."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def export_model(src, dst):
    """Copy a checkpoint without its optimiser state (half the size): for shipping a model."""
    arrays, meta = read_checkpoint(src)
    model = {f"model.{k}": v for k, v in section(arrays, "model.").items()}
    meta = {k: v for k, v in meta.items() if k not in ("format", "optimizer")}
    meta["exported_from"] = os.path.basename(os.fspath(src))
    _write_checkpoint(dst, model, meta, optimizer_meta=None)


def load_model(path, device="cpu", class_names=None):
    """(model, meta) from a checkpoint; checks the class list if one is given."""
    arrays, meta = read_checkpoint(path)
    if class_names is not None and list(class_names) != list(meta["class_names"]):
        raise ValueError(f"{path}: checkpoint was trained for classes {meta['class_names']}, "
                         f"not {list(class_names)}")
    cfg = SSDConfig.from_dict(meta["config"])
    arch = SSDArch.from_dict(meta["arch"]) if "arch" in meta else None   # older ones: the registry's
    model = SSD(cfg, len(meta["class_names"]), arch=arch)
    model.load_state_dict(section(arrays, "model."), source=str(path))
    return model.to(device).eval(), meta
