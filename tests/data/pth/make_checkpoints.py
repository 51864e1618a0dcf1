"""Make the small PyTorch checkpoints that tests/test_pth.py reads without torch.

Run once, with torch installed (`.venv/bin/pip install torch`), from the repository root:

    .venv/bin/python tests/data/pth/make_checkpoints.py

It writes, beside this script:

  tiny_zip.pth            torch.save(state_dict) in the zip format (torch >= 1.6)
  tiny_legacy.pth         the same with _use_new_zipfile_serialization=False (torch < 1.6)
  tiny_expected.npz       the arrays both must load to (bfloat16 stored as float32)
  wrapped_zip.pth         {'state_dict': {'module.' + key: ...}, 'epoch': 3, ...}: a training
                          checkpoint of a DataParallel model, with an Adam optimizer state
  wrapped_expected.npz    its 'state_dict' arrays, keys without 'module.'
  legacy_torch01.pth      written by hand like torch 0.1.x (torchvision's 2017 VGG files):
                          GLOBAL torch.FloatTensor, called with (), then BUILD (storage,
                          offset, size, stride)
  legacy_torch03_cuda.pth written by hand like torch 0.2-0.3 on a GPU (ssd.pytorch's weights):
                          torch._utils._rebuild_tensor, torch.cuda.FloatStorage on 'cuda:0',
                          and a storage *view* (view_metadata)
  legacy_old_expected.npz the arrays of both hand-written files
  whole_model.pth         torch.save(model): a pickled nn.Module, which the loader must refuse
  malicious_zip.pth       zip format whose data.pkl calls os.system (never run here)
  malicious_legacy.pth    legacy format whose pickle calls builtins.eval (never run here)

Each hand-written file is checked by loading it back with torch.load before it is kept.
The malicious files are built from raw pickle opcodes: nothing in them is ever executed.
"""
import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C    # torch/serialization.py, legacy format
PROTOCOL_VERSION = 1001
# What the malicious files would run: create a file in the current directory.
PWNED_FILE = "PWNED_BY_PTH"
PWNED_COMMAND = f"echo pwned > {PWNED_FILE}"


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 2, 1)
        self.fc = nn.Linear(8, 5)


def tiny_state_dict():
    """A conv-net state dict plus tensors in every layout the loader must handle."""
    torch.manual_seed(0)
    model = Tiny()
    model.bn1.running_mean.normal_()
    model.bn1.running_var.uniform_(0.5, 2.0)
    model.bn1.num_batches_tracked.fill_(7)               # int64, 0-d
    sd = model.state_dict()
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd["extra.base"] = base
    sd["extra.view"] = base[1:3, 2:5]                     # shares base's storage, offset 8
    sd["extra.transposed"] = torch.randn(3, 5).t()        # strides (1, 5)
    sd["extra.expanded"] = torch.randn(3).expand(2, 3)    # stride 0
    sd["extra.empty"] = torch.zeros(0, 3)
    sd["extra.scalar"] = torch.tensor(3.5)
    sd["extra.float16"] = torch.randn(2, 3).half()
    sd["extra.bfloat16"] = torch.randn(4).bfloat16()
    sd["extra.float64"] = torch.randn(3, dtype=torch.float64)
    sd["extra.int32"] = torch.tensor([-2, 0, 7], dtype=torch.int32)
    sd["extra.int16"] = torch.tensor([-300, 300], dtype=torch.int16)
    sd["extra.int8"] = torch.tensor([-5, 5], dtype=torch.int8)
    sd["extra.uint8"] = torch.tensor([0, 255], dtype=torch.uint8)
    sd["extra.bool"] = torch.tensor([True, False, True])
    sd["extra.complex64"] = torch.randn(2, dtype=torch.complex64)
    return model, sd


def to_expected(tensor):
    """The NumPy array minissd.interop.pth must give for a tensor (bfloat16 widened to float32)."""
    tensor = tensor.resolve_conj().resolve_neg()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.numpy().copy()


def save_npz(name, state_dict):
    np.savez(os.path.join(HERE, name), **{k: to_expected(v) for k, v in state_dict.items()})


def check_torch_loads(path, state_dict, **kwargs):
    loaded = torch.load(path, map_location="cpu", **kwargs)
    loaded = loaded.get("state_dict", loaded)
    assert list(loaded) == list(state_dict), path
    for key, value in state_dict.items():
        assert torch.equal(loaded[key], value), (path, key)


# --- legacy files written by hand, as old torch versions wrote them ----------------------

class StorageRef:
    """A storage to write: its key, storage class (torch.FloatStorage or torch.cuda.FloatStorage),
    location and data; a view also names its root storage and offset."""

    def __init__(self, key, storage_type, location, array, view=None):
        self.key, self.storage_type, self.location = key, storage_type, location
        self.array, self.view = array, view


class OldTorchPickler(pickle.Pickler):
    """Writes tensors the way torch 0.1.x ('setstate') or 0.2-0.3 ('rebuild_v1') did."""

    def __init__(self, file, style, tensors):
        super().__init__(file, protocol=2)
        self.style, self.tensors = style, tensors   # id(placeholder) -> (ref, off, size, stride)

    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            root, offset = obj.view if obj.view else (obj, 0)
            view_metadata = (obj.key, offset, obj.array.size) if obj.view else None
            return ("storage", root.storage_type, root.key, root.location, root.array.size,
                    view_metadata)
        return None

    def reducer_override(self, obj):
        if id(obj) in self.tensors:
            state = self.tensors[id(obj)]
            if self.style == "setstate":
                return (torch.FloatTensor, (), state)
            return (torch._utils._rebuild_tensor, state)
        return NotImplemented


def write_old_legacy(path, style, entries, roots):
    """entries: name -> (StorageRef, offset, size, stride); roots: StorageRefs holding data."""
    placeholders = OrderedDict((name, object()) for name in entries)
    tensors = {id(placeholders[name]): tuple(args) for name, args in entries.items()}
    body = io.BytesIO()
    OldTorchPickler(body, style, tensors).dump(placeholders)
    with open(path, "wb") as f:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION,
                       {"protocol_version": PROTOCOL_VERSION, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, f, protocol=2)
        f.write(body.getvalue())
        keys = sorted(root.key for root in roots)
        pickle.dump(keys, f, protocol=2)
        for key in keys:
            root = next(r for r in roots if r.key == key)
            f.write(struct.pack("<q", root.array.size))
            f.write(root.array.astype("<f4").tobytes())


def old_legacy_files():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal(2 * 3 * 3 * 3).astype(np.float32)
    bias = rng.standard_normal(2).astype(np.float32)
    expected = {"conv.weight": weight.reshape(2, 3, 3, 3), "conv.bias": bias}

    # torch 0.1.x: FloatTensor() then BUILD with (storage, offset, size, stride); CPU storages.
    w = StorageRef("140001", torch.FloatStorage, "cpu", weight)
    b = StorageRef("140002", torch.FloatStorage, "cpu", bias)
    write_old_legacy(os.path.join(HERE, "legacy_torch01.pth"), "setstate",
                     {"conv.weight": (w, 0, (2, 3, 3, 3), (27, 9, 3, 1)),
                      "conv.bias": (b, 0, (2,), (1,))}, [w, b])

    # torch 0.3 on a GPU: _rebuild_tensor(storage, offset, size, stride) with cuda storages,
    # and one tensor living in a storage view: root holds [pad(4), bias(2), pad(3)].
    root_data = np.concatenate([np.full(4, -1, np.float32), bias, np.full(3, -1, np.float32)])
    w = StorageRef("93001", torch.cuda.FloatStorage, "cuda:0", weight)
    root = StorageRef("93002", torch.cuda.FloatStorage, "cuda:0", root_data)
    view = StorageRef("93003", None, None, root_data[3:8], view=(root, 3))
    write_old_legacy(os.path.join(HERE, "legacy_torch03_cuda.pth"), "rebuild_v1",
                     {"conv.weight": (w, 0, (2, 3, 3, 3), (27, 9, 3, 1)),
                      "conv.bias": (view, 1, (2,), (1,))}, [w, root])

    for name in ("legacy_torch01.pth", "legacy_torch03_cuda.pth"):
        check_torch_loads(os.path.join(HERE, name),
                          {k: torch.from_numpy(v) for k, v in expected.items()}, weights_only=False)
    np.savez(os.path.join(HERE, "legacy_old_expected.npz"), **expected)


# --- malicious files, from raw opcodes -----------------------------------------------------

def call_global_pickle(module, name, argument):
    """Protocol-2 pickle bytes for module.name(argument): GLOBAL, one-tuple, REDUCE, STOP."""
    arg = argument.encode()
    return (b"\x80\x02" + b"c" + module.encode() + b"\n" + name.encode() + b"\n"
            + b"X" + struct.pack("<I", len(arg)) + arg + b"\x85" + b"R" + b".")


def write_zip_checkpoint(path, data_pkl, storages=(), byteorder=b"little"):
    """A zip laid out like torch.save's: archive/data.pkl, archive/data/<key>, byteorder, version."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", byteorder)
        for key, raw in storages:
            zf.writestr(f"archive/data/{key}", raw)
        zf.writestr("archive/version", b"3\n")


def malicious_files():
    write_zip_checkpoint(os.path.join(HERE, "malicious_zip.pth"),
                         call_global_pickle("os", "system", PWNED_COMMAND))
    with open(os.path.join(HERE, "malicious_legacy.pth"), "wb") as f:
        pickle.dump(MAGIC_NUMBER, f, protocol=2)
        pickle.dump(PROTOCOL_VERSION, f, protocol=2)
        pickle.dump({"protocol_version": PROTOCOL_VERSION, "little_endian": True}, f, protocol=2)
        f.write(call_global_pickle("builtins", "eval",
                                   f"__import__('os').system({PWNED_COMMAND!r})"))


def main():
    model, sd = tiny_state_dict()
    torch.save(sd, os.path.join(HERE, "tiny_zip.pth"))
    torch.save(sd, os.path.join(HERE, "tiny_legacy.pth"), _use_new_zipfile_serialization=False)
    for name in ("tiny_zip.pth", "tiny_legacy.pth"):
        check_torch_loads(os.path.join(HERE, name), sd, weights_only=True)
    save_npz("tiny_expected.npz", sd)

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    state = OrderedDict(("module." + k, v) for k, v in model.state_dict().items())
    checkpoint = {"state_dict": state, "epoch": 3, "best_map": 0.7743, "arch": "tiny",
                  "optimizer": optimizer.state_dict(), "notes": None, "shape": (300, 300)}
    torch.save(checkpoint, os.path.join(HERE, "wrapped_zip.pth"))
    check_torch_loads(os.path.join(HERE, "wrapped_zip.pth"), state, weights_only=True)
    save_npz("wrapped_expected.npz", model.state_dict())

    torch.save(model, os.path.join(HERE, "whole_model.pth"))
    old_legacy_files()
    malicious_files()
    total = sum(os.path.getsize(os.path.join(HERE, n)) for n in os.listdir(HERE))
    print(f"wrote {HERE}: {total / 1024:.1f} KiB in all")


if __name__ == "__main__":
    main()
