"""minissd.interop.pth reads torch checkpoints without torch, and refuses anything but data.

The files under tests/data/pth were made by tests/data/pth/make_checkpoints.py (with torch);
pickles for edge cases are written here from raw opcodes, so these tests need no torch.
The last tests compare with torch.load where torch is installed.
"""
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from minissd.interop.pth import UnsafeCheckpointError, load_pth, load_state_dict_pth

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "pth")
PWNED_FILE = "PWNED_BY_PTH"              # what the malicious pickles would create
PWNED_COMMAND = f"echo pwned > {PWNED_FILE}"
MAGIC_NUMBER, PROTOCOL_VERSION = 0x1950A86A20F9469CFC6C, 1001


def data(name):
    return os.path.join(DATA, name)


def assert_same_arrays(loaded, expected_npz):
    expected = np.load(data(expected_npz))
    assert list(loaded) == list(expected.files)
    for key in expected.files:
        assert loaded[key].dtype == expected[key].dtype, key
        np.testing.assert_array_equal(loaded[key], expected[key], err_msg=key)


# --- pickles from raw opcodes (protocol 2) ------------------------------------------------

def op_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_str(text):
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def op_int(value):
    return b"J" + struct.pack("<i", value)


def op_long(value):
    """An int of any size (LONG1), e.g. a storage numel past 2^31."""
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def op_tuple(*items):
    return b"(" + b"".join(items) + b"t"


def op_call(func, *args):
    """func(*args): the callable, a tuple of arguments, REDUCE."""
    return func + op_tuple(*args) + b"R"


def op_storage(storage_type, key, numel):
    """A zip-format storage reference: persistent id ('storage', type, key, 'cpu', numel)."""
    return op_tuple(op_str("storage"), op_global("torch", storage_type), op_str(key),
                    op_str("cpu"), op_int(numel)) + b"Q"


def op_tensor(storage, offset, size, stride, extra=b""):
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()...)."""
    return op_call(op_global("torch._utils", "_rebuild_tensor_v2"), storage, op_int(offset),
                   op_tuple(*map(op_int, size)), op_tuple(*map(op_int, stride)), b"\x89",
                   op_call(op_global("collections", "OrderedDict")), extra)


def one_entry_pickle(key, value):
    """{key: value} as a complete protocol-2 pickle."""
    return b"\x80\x02}" + op_str(key) + value + b"s."


def write_zip(path, data_pkl, storages=(), byteorder=b"little", extra_names=()):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", byteorder)
        for key, raw in storages:
            zf.writestr(f"archive/data/{key}", raw)
        for name in extra_names:
            zf.writestr(name, b"")
    return path


def write_legacy(path, body, storages=()):
    """A legacy file: magic, protocol, sys_info, body pickle, key list, (count, bytes) each."""
    with open(path, "wb") as f:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(body)
        pickle.dump([key for key, _, _ in storages], f, protocol=2)
        for _, numel, raw in storages:
            f.write(struct.pack("<q", numel) + raw)
    return path


def call_pickle(module, name, argument, protocol=2):
    """module.name(argument) as GLOBAL (protocol 2) or STACK_GLOBAL (protocol 4) opcodes."""
    if protocol == 2:
        return b"\x80\x02" + op_call(op_global(module, name), op_str(argument)) + b"."
    short = lambda s: b"\x8c" + bytes([len(s.encode())]) + s.encode()   # SHORT_BINUNICODE
    return b"\x80\x04" + short(module) + short(name) + b"\x93" + op_call(b"", op_str(argument)) + b"."


# --- the committed checkpoints ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny_zip.pth", "tiny_legacy.pth"])
def test_state_dict_matches_torch_values(name):
    state = load_pth(data(name))
    assert isinstance(state, OrderedDict)
    assert_same_arrays(state, "tiny_expected.npz")


@pytest.mark.parametrize("name", ["legacy_torch01.pth", "legacy_torch03_cuda.pth"])
def test_old_legacy_files(name):
    assert_same_arrays(load_pth(data(name)), "legacy_old_expected.npz")


@pytest.mark.parametrize("name", ["tiny_zip.pth", "tiny_legacy.pth"])
def test_layouts_and_dtypes(name):
    s = load_pth(data(name))
    np.testing.assert_array_equal(s["extra.view"], s["extra.base"][1:3, 2:5])  # shared storage
    assert s["extra.transposed"].shape == (5, 3) and s["extra.transposed"].flags.c_contiguous
    np.testing.assert_array_equal(s["extra.expanded"][0], s["extra.expanded"][1])  # stride 0
    assert s["extra.scalar"].shape == () and s["extra.scalar"] == 3.5
    assert s["extra.empty"].shape == (0, 3)
    assert s["bn1.num_batches_tracked"].dtype == np.int64 and s["bn1.num_batches_tracked"] == 7
    assert s["extra.bfloat16"].dtype == np.float32 and s["extra.float16"].dtype == np.float16
    assert s["extra.bool"].dtype == bool and s["extra.complex64"].dtype == np.complex64


def test_arrays_are_independent_writable_copies():
    s = load_pth(data("tiny_zip.pth"))
    s["extra.base"][:] = -1.0                 # its view and the expanded rows stay untouched
    assert s["extra.view"].min() >= 0
    s["extra.expanded"][0, 0] = 99.0
    assert s["extra.expanded"][1, 0] != 99.0


def test_wrapped_checkpoint_keeps_plain_values():
    ckpt = load_pth(data("wrapped_zip.pth"))
    assert ckpt["epoch"] == 3 and ckpt["best_map"] == 0.7743 and ckpt["arch"] == "tiny"
    assert ckpt["notes"] is None and ckpt["shape"] == (300, 300)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == 1e-3
    assert ckpt["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert set(ckpt["optimizer"]["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert all(k.startswith("module.") for k in ckpt["state_dict"])


def test_load_state_dict_pth_unwraps_and_strips_module_prefix():
    state = load_state_dict_pth(data("wrapped_zip.pth"))
    assert isinstance(state, OrderedDict)
    assert_same_arrays(state, "wrapped_expected.npz")
    kept = load_state_dict_pth(data("wrapped_zip.pth"), strip_prefix=None)
    assert list(kept) == ["module." + k for k in state]


def test_load_state_dict_pth_of_a_plain_state_dict():
    assert_same_arrays(load_state_dict_pth(data("tiny_legacy.pth")), "tiny_expected.npz")


def test_load_state_dict_pth_without_weights_is_named(tmp_path):
    path = write_zip(tmp_path / "x.pth", b"\x80\x02}" + op_str("epoch") + op_int(3) + b"s.")
    with pytest.raises(ValueError, match="no state dict found.*'epoch'"):
        load_state_dict_pth(path)


def test_plain_python_values(tmp_path):
    # Protocol 2 writes bytes, set and complex through _codecs.encode and builtins globals.
    value = {"b": b"\xff\x00", "s": {1, 2}, "c": 1 + 2j, "l": [1, (2, "x")], "n": None, "f": 1.5}
    path = write_zip(tmp_path / "x.pth", pickle.dumps(value, protocol=2))
    assert load_pth(path) == value


# --- refusing code ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, global_name", [
    ("malicious_zip.pth", "os.system"),
    ("malicious_legacy.pth", "builtins.eval"),
    ("whole_model.pth", "__main__.Tiny"),
])
def test_committed_malicious_files_are_refused(tmp_path, monkeypatch, name, global_name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match=f"{name}.*'{global_name}'"):
        load_pth(data(name))
    assert not (tmp_path / PWNED_FILE).exists()


@pytest.mark.parametrize("module, name, argument", [
    ("os", "system", PWNED_COMMAND),
    ("posix", "system", PWNED_COMMAND),
    ("subprocess", "getoutput", PWNED_COMMAND),
    ("builtins", "eval", f"__import__('os').system({PWNED_COMMAND!r})"),
    ("builtins", "exec", f"open({PWNED_FILE!r}, 'w').write('pwned')"),
    ("__builtin__", "eval", f"__import__('os').system({PWNED_COMMAND!r})"),   # py2 name
    ("builtins", "getattr", "x"),
    ("builtins", "open", PWNED_FILE),
    ("torch.nn.modules.conv", "Conv2d", "x"),
    ("torch.serialization", "load", PWNED_FILE),
    ("numpy.core.multiarray", "_reconstruct", "x"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy", "x"),
])
@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_any_other_global_is_refused(tmp_path, monkeypatch, module, name, argument, layout,
                                     protocol):
    monkeypatch.chdir(tmp_path)
    body = call_pickle(module, name, argument, protocol)
    path = (write_zip(tmp_path / "bad.pth", body) if layout == "zip"
            else write_legacy(tmp_path / "bad.pth", body))
    with pytest.raises(UnsafeCheckpointError, match=f"bad.pth.*'{module}.{name}'"):
        load_pth(path)
    assert not (tmp_path / PWNED_FILE).exists()


def test_unsafe_error_is_a_value_error():
    assert issubclass(UnsafeCheckpointError, ValueError)


def test_global_hidden_in_a_storage_id_is_refused(tmp_path):
    storage = op_tuple(op_str("storage"), op_global("os", "system"), op_str("0"), op_str("cpu"),
                       op_int(1)) + b"Q"
    path = write_zip(tmp_path / "x.pth", one_entry_pickle("w", storage), [("0", b"\0" * 4)])
    with pytest.raises(UnsafeCheckpointError, match="'os.system'"):
        load_pth(path)


@pytest.mark.parametrize("target", [
    op_global("torch._utils", "_rebuild_tensor_v2"),         # an allowed function
    op_global("torch", "FloatStorage"),                        # an allowed type
    b"]",                                                      # a list
])
def test_build_on_anything_but_a_legacy_tensor_is_refused(tmp_path, target):
    # BUILD with (None, {'__defaults__': ...}) would set attributes with a plain pickle.
    state = op_tuple(b"N", b"}" + op_str("__defaults__") + op_tuple(op_int(1)) + b"s")
    path = write_zip(tmp_path / "x.pth", b"\x80\x02" + target + state + b"b.")
    with pytest.raises(UnsafeCheckpointError, match="sets the state of"):
        load_pth(path)


def test_pickled_module_persistent_id_is_refused(tmp_path):
    body = b"\x80\x02" + op_tuple(op_str("module"), b"N", b"N", b"N") + b"Q."
    with pytest.raises(UnsafeCheckpointError, match="whole nn.Module"):
        load_pth(write_legacy(tmp_path / "x.pth", body))


# --- edge cases written by hand -----------------------------------------------------------------

F32 = np.arange(6, dtype="<f4")


@pytest.mark.parametrize("offset, size, stride, expected", [
    (0, (2, 3), (3, 1), F32.reshape(2, 3)),
    (0, (3, 2), (1, 3), F32.reshape(2, 3).T),                  # transposed
    (2, (2, 2), (2, 1), np.array([[2, 3], [4, 5]], np.float32)),
    (5, (), (), np.float32(5)),                                 # 0-d, last element
    (1, (2, 2), (0, 2), np.array([[1, 3], [1, 3]], np.float32)),  # stride 0 (expand)
    (6, (0, 4), (4, 1), np.zeros((0, 4), np.float32)),         # empty, offset at the end
])
def test_strided_views(tmp_path, offset, size, stride, expected):
    pkl = one_entry_pickle("x", op_tensor(op_storage("FloatStorage", "0", 6), offset, size, stride))
    out = load_pth(write_zip(tmp_path / "x.pth", pkl, [("0", F32.tobytes())]))["x"]
    assert out.shape == expected.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("offset, size, stride", [
    (0, (2, 4), (3, 1)),      # last element 7 of 6
    (5, (2,), (1,)),          # runs off the end
    (-1, (2,), (1,)),         # negative offset
    (0, (2, 2), (-1, 1)),     # negative stride
    (0, (2, 3), (3,)),        # size and stride of different lengths
])
def test_tensor_outside_its_storage_is_an_error(tmp_path, offset, size, stride):
    pkl = one_entry_pickle("x", op_tensor(op_storage("FloatStorage", "0", 6), offset, size, stride))
    with pytest.raises(ValueError, match="x.pth: tensor"):
        load_pth(write_zip(tmp_path / "x.pth", pkl, [("0", F32.tobytes())]))


def test_big_endian_zip(tmp_path):
    pkl = one_entry_pickle("x", op_tensor(op_storage("FloatStorage", "0", 6), 0, (6,), (1,)))
    path = write_zip(tmp_path / "x.pth", pkl, [("0", F32.astype(">f4").tobytes())], b"big")
    np.testing.assert_array_equal(load_pth(path)["x"], F32)


def test_bfloat16_is_widened_exactly(tmp_path):
    bits = np.array([0x3F80, 0xC000, 0x3EAB], dtype="<u2")      # 1.0, -2.0, 0.333984375
    pkl = one_entry_pickle("x", op_tensor(op_storage("BFloat16Storage", "0", 3), 0, (3,), (1,)))
    out = load_pth(write_zip(tmp_path / "x.pth", pkl, [("0", bits.tobytes())]))["x"]
    np.testing.assert_array_equal(out, np.array([1.0, -2.0, 0.333984375], np.float32))


def test_rebuild_tensor_v3_reads_untyped_bytes(tmp_path):
    # torch >= 2.3 writes uint16/32/64 as a byte storage plus a dtype.
    values = np.array([1, 2, 65535], dtype="<u2")
    tensor = op_call(op_global("torch._utils", "_rebuild_tensor_v3"),
                     op_storage("UntypedStorage", "0", 6), op_int(0), op_tuple(op_int(3)),
                     op_tuple(op_int(1)), b"\x89", b"}", op_global("torch", "uint16"))
    out = load_pth(write_zip(tmp_path / "x.pth", one_entry_pickle("x", tensor),
                             [("0", values.tobytes())]))["x"]
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, values)


@pytest.mark.parametrize("bit, expected", [("conj", [1 - 2j, 3 + 4j]), ("neg", [-1 - 2j, -3 + 4j])])
def test_conj_and_neg_bits(tmp_path, bit, expected):
    values = np.array([1 + 2j, 3 - 4j], dtype="<c8")
    metadata = b"}" + op_str(bit) + b"\x88s"
    pkl = one_entry_pickle("x", op_tensor(op_storage("ComplexFloatStorage", "0", 2), 0, (2,), (1,),
                                          metadata))
    out = load_pth(write_zip(tmp_path / "x.pth", pkl, [("0", values.tobytes())]))["x"]
    np.testing.assert_array_equal(out, np.array(expected, np.complex64))


def test_parameter_and_subclass_wrappers(tmp_path):
    def tensor_args():
        return (op_storage("FloatStorage", "0", 6), op_int(0), op_tuple(op_int(6)),
                op_tuple(op_int(1)), b"\x89", b"N")
    parameter = op_call(op_global("torch._utils", "_rebuild_parameter"),
                        op_call(op_global("torch._utils", "_rebuild_tensor_v2"), *tensor_args()),
                        b"\x88", b"N")
    subclass = op_call(op_global("torch._tensor", "_rebuild_from_type_v2"),
                       op_global("torch._utils", "_rebuild_tensor_v2"),
                       op_global("torch", "Tensor"), op_tuple(*tensor_args()), b"}")
    pkl = b"\x80\x02}(" + op_str("p") + parameter + op_str("t") + subclass + b"u."
    out = load_pth(write_zip(tmp_path / "x.pth", pkl, [("0", F32.tobytes())]))
    np.testing.assert_array_equal(out["p"], F32)
    np.testing.assert_array_equal(out["t"], F32)


def test_legacy_storage_view(tmp_path):
    # Root storage '1' of 6 floats; a view '2' from element 2, 3 long; tensor = view[1:3].
    storage = op_tuple(op_str("storage"), op_global("torch", "FloatStorage"), op_str("1"),
                       op_str("cpu"), op_int(6), op_tuple(op_str("2"), op_int(2), op_int(3))) + b"Q"
    body = one_entry_pickle("x", op_call(op_global("torch._utils", "_rebuild_tensor"), storage,
                                         op_int(1), op_tuple(op_int(2)), op_tuple(op_int(1))))
    out = load_pth(write_legacy(tmp_path / "x.pth", body, [("1", 6, F32.tobytes())]))["x"]
    np.testing.assert_array_equal(out, [3.0, 4.0])


# --- memory bombs: refused before anything is copied or inflated -----------------------------

BOMB_ELEMENTS = 2**26              # float32: 256 MiB per reference, from a 16-byte storage
RSS_LIMIT_MB = 300
# Loads the file in a fresh process and prints its peak RSS (MiB, VmHWM: the high-water mark of
# the new process's memory, which exec starts afresh) and the outcome. The
# address-space cap keeps a loader that does expand the bomb from taking the machine down.
MEASURE_LOAD = """
import resource, sys
cap = 1536 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
from minissd.interop.pth import load_pth
try:
    load_pth(sys.argv[1])
    outcome = "loaded"
except Exception as e:
    outcome = type(e).__name__ + ": " + str(e)
try:   # this process's own peak: ru_maxrss would also count the pytest process it was forked from
    with open("/proc/self/status") as f:
        peak_kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
except OSError:
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KiB on Linux
print(peak_kib // 1024)
print(outcome)
"""


def load_in_subprocess(path):
    """(peak RSS in MiB, 'ErrorName: message' or 'loaded') of load_pth(path) in its own process."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", MEASURE_LOAD, str(path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    peak, outcome = done.stdout.split("\n", 1)
    return int(peak), outcome.strip()


def legacy_storage(storage_type, key, numel):
    """A legacy storage reference: ('storage', type, key, 'cpu', numel, None)."""
    return op_tuple(op_str("storage"), op_global("torch", storage_type), op_str(key),
                    op_str("cpu"), op_long(numel), b"N") + b"Q"


def stride0_bomb(layout, keys=8, memo=False):
    """{w0..: 2^26 float32 with stride 0 over one 4-float storage}: 16 bytes of data, 256 MiB
    a key. memo: one tensor pickled once and referenced by every key (BINPUT / BINGET)."""
    storage = (op_storage("FloatStorage", "0", 4) if layout == "zip"
               else legacy_storage("FloatStorage", "0", 4))
    tensor = op_tensor(storage, 0, (BOMB_ELEMENTS,), (0,))
    body = b"\x80\x02}(" + op_str("w0") + tensor
    for i in range(1, keys):
        body += op_str(f"w{i}") + (b"h\x00" if memo else tensor)
    if memo:
        body = body.replace(tensor, tensor + b"q\x00", 1)
    return body + b"u."


def write_bomb(path, layout, **kwargs):
    body, raw = stride0_bomb(layout, **kwargs), np.zeros(4, "<f4").tobytes()
    return (write_zip(path, body, [("0", raw)]) if layout == "zip"
            else write_legacy(path, body, [("0", 4, raw)]))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("keys, memo", [(8, False), (64, True)], ids=["8-keys", "64-references"])
def test_stride0_bomb_is_refused_in_its_budget(tmp_path, layout, keys, memo):
    path = write_bomb(tmp_path / "bomb.pth", layout, keys=keys, memo=memo)
    assert os.path.getsize(path) < 2000                  # 2 GiB or 16 GiB declared
    peak, outcome = load_in_subprocess(path)
    assert outcome.startswith("UnsafeCheckpointError: ") and "bomb.pth" in outcome, outcome
    assert "'w" in outcome and "stride (0,)" in outcome and "EXPANSION_ALLOWANCE" in outcome
    assert peak < RSS_LIMIT_MB


def test_views_within_the_allowance_are_copied(tmp_path):
    # 2 keys of 2^22 stride-0 float32 = 32 MiB over 16 bytes: inside the 64 MiB allowance.
    body = stride0_bomb("zip", keys=2).replace(op_int(BOMB_ELEMENTS), op_int(2**22))
    out = load_pth(write_zip(tmp_path / "x.pth", body, [("0", np.ones(4, "<f4").tobytes())]))
    assert out["w0"].shape == (2**22,) and out["w0"].flags.writeable and out["w1"].all()
    assert not np.shares_memory(out["w0"], out["w1"])


def test_the_budget_counts_every_reference(tmp_path):
    # 5 references to one 16 MiB expanded tensor: 80 MiB, past 16 bytes + 64 MiB.
    body = stride0_bomb("zip", keys=5, memo=True).replace(op_int(BOMB_ELEMENTS), op_int(2**22))
    with pytest.raises(UnsafeCheckpointError, match="tensor 'w4' .* 83886080 bytes"):
        load_pth(write_zip(tmp_path / "x.pth", body, [("0", np.ones(4, "<f4").tobytes())]))


@pytest.fixture(scope="module")
def deflated_zeros(tmp_path_factory):
    """A zip holding archive/data/0: 2 GiB of zeros deflated to about 2 MB, written 1 MiB at
    a time (nothing here holds more than 1 MiB)."""
    path = tmp_path_factory.mktemp("deflate") / "zeros.zip"
    chunk = bytes(2**20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("archive/data/0", "w", force_zip64=True) as member:
            for _ in range(2048):
                member.write(chunk)
    return path


@pytest.mark.parametrize("numel, refusal", [
    (2**29, "UnsafeCheckpointError: .*archive/data/0 inflates from \\d+ to 2147483648 bytes"),
    (4, "UserError: .*storage archive/data/0 has 2147483648 bytes, expected 4 x float32"),
], ids=["declared-2GiB", "declared-16B"])
def test_deflate_bomb_is_refused_before_inflating(tmp_path, deflated_zeros, numel, refusal):
    path = tmp_path / "deflate.pth"
    shutil.copy(deflated_zeros, path)
    pkl = one_entry_pickle("x", op_tensor(op_storage("FloatStorage", "0", numel), 0, (numel,), (1,)))
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("archive/data.pkl", pkl)
    assert os.path.getsize(path) < 4 * 2**20
    peak, outcome = load_in_subprocess(path)
    assert re.match(refusal, outcome), outcome
    assert peak < RSS_LIMIT_MB


def test_zip_member_larger_than_the_file_is_not_read(tmp_path):
    # A stored member whose headers claim 2 GiB (as its storage id does) in a file of 1 KB.
    numel = 2**29
    pkl = one_entry_pickle("x", op_tensor(op_storage("FloatStorage", "0", numel), 0, (numel,), (1,)))
    path = write_zip(tmp_path / "x.pth", pkl, [("0", bytes(16))])
    raw = bytearray(path.read_bytes())
    name = b"archive/data/0"
    # (signature, offset of the two sizes, offset of the name): local and central headers
    for signature, sizes_at, name_at in ((b"PK\x03\x04", 18, 30), (b"PK\x01\x02", 20, 46)):
        header = raw.index(signature)
        while raw[header + name_at:header + name_at + len(name)] != name:
            header = raw.index(signature, header + 4)
        raw[header + sizes_at:header + sizes_at + 8] = struct.pack("<II", 4 * numel, 4 * numel)
    path.write_bytes(bytes(raw))
    with pytest.raises(UnsafeCheckpointError, match="archive/data/0 declares 2147483648 "
                                                   "compressed bytes, more than the file's"):
        load_pth(path)


def test_legacy_storage_larger_than_the_file_is_not_read(tmp_path):
    body = one_entry_pickle("x", op_call(op_global("torch._utils", "_rebuild_tensor"),
                                         legacy_storage("FloatStorage", "0", 2**40), op_int(0),
                                         op_tuple(op_int(1)), op_tuple(op_int(1))))
    path = write_legacy(tmp_path / "x.pth", body, [("0", 2**40, F32.tobytes())])
    with pytest.raises(ValueError, match="x.pth: storage '0' is truncated"):
        load_pth(path)


# --- files that are not readable checkpoints --------------------------------------------------

def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_pth("nowhere.pth")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello, this is text")
    with pytest.raises(ValueError, match="notes.pth"):
        load_pth(path)


def test_truncated_legacy_file(tmp_path):
    raw = open(data("tiny_legacy.pth"), "rb").read()
    path = tmp_path / "cut.pth"
    path.write_bytes(raw[:-10])
    with pytest.raises(ValueError, match="cut.pth.*truncated"):
        load_pth(path)


def test_storage_of_the_wrong_size(tmp_path):
    pkl = one_entry_pickle("x", op_tensor(op_storage("FloatStorage", "0", 6), 0, (6,), (1,)))
    with pytest.raises(ValueError, match="x.pth: storage archive/data/0 has 20 bytes"):
        load_pth(write_zip(tmp_path / "x.pth", pkl, [("0", F32.tobytes()[:20])]))


def test_tar_format_is_refused_with_advice(tmp_path):
    path = tmp_path / "old.pth"
    with tarfile.open(path, "w") as tar:
        tar.add(data("make_checkpoints.py"), arcname="pickle")
    with pytest.raises(ValueError, match="old.pth.*tar format.*re-save"):
        load_pth(path)


def test_torchscript_is_refused_with_advice(tmp_path):
    path = write_zip(tmp_path / "ts.pth", b"\x80\x02}.", extra_names=["archive/constants.pkl",
                                                                     "archive/code/__torch__/m.py"])
    with pytest.raises(ValueError, match="ts.pth is a TorchScript archive"):
        load_pth(path)


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "other.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(ValueError, match="other.pth is a zip file but not"):
        load_pth(path)


# --- against torch itself, where it is installed ------------------------------------------------

def random_tensors(torch):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(5, 7, generator=g)
    return OrderedDict([
        ("f32", torch.randn(3, 4, 5, generator=g)),
        ("f64", torch.randn(4, dtype=torch.float64, generator=g)),
        ("f16", torch.randn(6, generator=g).half()),
        ("bf16", torch.randn(6, generator=g).bfloat16()),
        ("i64", torch.randint(-9, 9, (2, 3), generator=g)),
        ("u8", torch.randint(0, 255, (4,), generator=g).to(torch.uint8)),
        ("bool", torch.randn(5, generator=g) > 0),
        ("base", base),
        ("slice", base[1:4, ::2]),
        ("permuted", torch.randn(2, 3, 4, generator=g).permute(2, 0, 1)),
        ("expanded", torch.randn(1, 3, generator=g).expand(4, 3)),
        ("scalar", torch.tensor(2.5)),
    ])


def reference(torch, tensor):
    tensor = tensor.resolve_conj().resolve_neg()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


@pytest.mark.parametrize("zip_format", [True, False])
def test_matches_torch_load(tmp_path, zip_format):
    torch = pytest.importorskip("torch")
    tensors = random_tensors(torch)
    path = tmp_path / "random.pth"
    torch.save(tensors, path, _use_new_zipfile_serialization=zip_format)
    ours = load_pth(path)
    theirs = torch.load(path, weights_only=True)
    assert list(ours) == list(theirs)
    for key, tensor in theirs.items():
        np.testing.assert_array_equal(ours[key], reference(torch, tensor), err_msg=key)
        assert ours[key].dtype == reference(torch, tensor).dtype, key


def test_module_state_dict_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                                torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1))
    path = tmp_path / "ckpt.pth"
    torch.save({"model": model.state_dict(), "epoch": 1}, path)
    ours = load_state_dict_pth(path)
    assert list(ours) == list(model.state_dict())
    for key, tensor in model.state_dict().items():
        np.testing.assert_array_equal(ours[key], tensor.numpy(), err_msg=key)
    torch.save(model, tmp_path / "model.pth")
    with pytest.raises(UnsafeCheckpointError, match="torch.nn.modules.container.Sequential"):
        load_pth(tmp_path / "model.pth")
