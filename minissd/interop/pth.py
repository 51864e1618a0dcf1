"""Read PyTorch ``.pth`` checkpoints into NumPy arrays, without torch and without running
any code from the file.

A ``.pth`` file is a Python pickle plus raw tensor bytes. ``pickle.load`` on an untrusted
file can run anything (a pickle may call ``os.system``), so we unpickle with a
*restricted* unpickler: ``find_class`` maps the handful of names a state dict uses to our
own small functions that build NumPy arrays, and refuses every other name with
:class:`UnsafeCheckpointError`; the BUILD opcode (which sets attributes on an object) is
allowed only where torch uses it. No torch class, and nothing named by the file, ever runs.

Two layouts are read:

* **zip** (``torch.save`` since torch 1.6): a zip archive ``<name>/data.pkl`` (the
  pickle), ``<name>/data/<key>`` (one raw storage each), ``<name>/byteorder``.
  A tensor is pickled as ``torch._utils._rebuild_tensor_v2(storage, storage_offset,
  size, stride, requires_grad, backward_hooks[, metadata])`` and its storage as the
  persistent id ``('storage', torch.FloatStorage, key, location, numel)``.
* **legacy** (torch 0.1.10 to 1.5, and ``_use_new_zipfile_serialization=False``): five
  pickles in a row -- a magic number, a protocol version, system info, the object, and the
  list of storage keys -- followed by each storage as an 8-byte little-endian element
  count and its raw little-endian bytes. Storage ids are ``('storage', storage_type,
  root_key, location, numel, view_metadata)``. Tensors are pickled with
  ``_rebuild_tensor_v2`` (torch >= 0.4), ``_rebuild_tensor`` (0.2 - 0.3), or as
  ``torch.FloatTensor()`` followed by a BUILD of ``(storage, offset, size, stride)``
  (0.1.x, e.g. torchvision's 2017 VGG16 file ``vgg16-397923af.pth``). GPU-saved files
  name ``torch.cuda.FloatStorage`` and location ``'cuda:0'``; we read them the same way
  (ssd.pytorch's ``ssd300_mAP_77.43_v2.pth`` and ``vgg16_reducedfc.pth`` are of this kind).

Reading has a budget: a hostile file costs no more memory than its own bytes. A tensor is
a view (offset, size, stride) of a storage, so a file may declare far more than it holds: a
stride-0 tensor of 2^26 float32 over a 16-byte storage is 256 MiB once copied, and 8 keys
(or 64 references to one tensor) make it 2 GiB (16 GiB) from a file under 1 KB; a zip member
deflated to 2 MB may inflate to 2 GiB. So, before anything is inflated or copied:

* **zip members** are read only up to the size their header declares (a storage member must
  declare exactly numel x itemsize bytes of its storage id), and the bytes by which the
  members inflate beyond their compressed size may add up to at most
  :data:`EXPANSION_ALLOWANCE` for the whole file (``torch.save`` stores members
  uncompressed, so a real checkpoint uses none of it);
* **tensors**: each reference to a tensor costs prod(size) x itemsize bytes (as stored:
  2 for bfloat16), summed over the whole object; the sum may exceed the bytes of the
  storages read by at most :data:`EXPANSION_ALLOWANCE`. Stride-0 (expanded) and
  overlapping views are copied within that budget, so every array still comes back as an
  independent writable copy; beyond it the file is refused.
* **legacy storages** must fit in what is left of the file before they are read.

A refusal raises :class:`UnsafeCheckpointError` naming the key (or zip member) and the bytes.

The even older tar format (before March 2017) and TorchScript archives (``torch.jit.save``)
are refused with a message saying how to re-save them.

Dtypes: float32/64/16, int8/16/32/64, uint8 (and uint16/32/64), bool, complex64/128 map
to the same NumPy dtype; bfloat16 (absent from NumPy) is widened exactly to float32.

Key names, for whoever maps them onto minissd's model:

* torchvision ``vgg16`` (``vgg16-397923af.pth``): ``features.{0,2,5,7,10,12,14,17,19,21,
  24,26,28}.weight`` / ``.bias`` (the 13 convs, (out, in, 3, 3)), and
  ``classifier.{0,3,6}.weight`` / ``.bias`` (the fully connected layers, (out, in)).
* ssd.pytorch ``SSD300`` (``ssd300_mAP_77.43_v2.pth``): ``vgg.{i}.weight`` / ``.bias``
  for i in 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28 (as torchvision) plus 31
  (conv6, dilated 3x3, 1024 x 512) and 33 (conv7, 1x1, 1024 x 1024); ``L2Norm.weight``
  (512,); ``extras.{0..7}.weight`` / ``.bias``; ``loc.{0..5}`` and ``conf.{0..5}``
  ``.weight`` / ``.bias`` (the six heads). ``vgg16_reducedfc.pth`` holds the ``{i}.weight``
  / ``{i}.bias`` of the same vgg list without the ``vgg.`` prefix.

    >>> from minissd.interop.pth import load_state_dict_pth
    >>> weights = load_state_dict_pth("tests/data/pth/tiny_zip.pth")
    >>> weights["conv1.weight"].shape, weights["conv1.weight"].dtype
    ((4, 3, 3, 3), dtype('float32'))
"""
from __future__ import annotations

import io
import math
import os
import pickle
import sys
import tarfile
import zipfile
from collections import OrderedDict

import numpy as np

from minissd.errors import UserError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C   # first pickle of a legacy file (torch/serialization.py)
PROTOCOL_VERSION = 1001                 # second pickle of a legacy file
# How far a file may expand beyond its own bytes: decompressed zip members beyond their
# compressed size, and tensors beyond their storages (stride-0 or overlapping views).
EXPANSION_ALLOWANCE = 64 * 2**20
_NATIVE_ORDER = "<" if sys.byteorder == "little" else ">"
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")

# NumPy dtype for each torch storage class and dtype name; "bfloat16" is converted by hand.
_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
}
_TORCH_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16",
                 "int8", "uint8", "uint16", "uint32", "uint64", "bool", "complex64",
                 "complex128")
# torch 0.1.x tensor classes; the dtype comes from the storage the tensor is given.
_TENSOR_TYPES = ("FloatTensor", "DoubleTensor", "HalfTensor", "LongTensor", "IntTensor",
                 "ShortTensor", "CharTensor", "ByteTensor")


class UnsafeCheckpointError(UserError):
    """The checkpoint's pickle names a global that is not on the state-dict allow-list, or
    the file would expand past its memory budget (see the module docstring)."""


def _numpy_dtype(name):
    return np.dtype("uint16") if name == "bfloat16" else np.dtype(name)


# --- what the pickle builds: storages and tensors, as plain data ---------------------------

class _Storage:
    """A flat typed buffer, as in torch: ``raw`` bytes are filled in when read from the file."""
    __slots__ = ("dtype", "numel", "raw", "byteorder", "base", "offset", "_values")

    def __init__(self, dtype, numel, raw=None, byteorder="<", base=None, offset=0):
        self.dtype, self.numel, self.raw, self.byteorder = dtype, numel, raw, byteorder
        self.base, self.offset, self._values = base, offset, None   # base: a legacy view's root

    def values(self, dtype=None):
        """The storage as a 1-D native-order array of ``dtype`` (default: its own)."""
        dtype = dtype or self.dtype
        if self.base is not None:                  # a view into another storage
            return self.base.values(dtype)[self.offset:self.offset + self.numel]
        if self.raw is None:
            raise ValueError("a storage that the file never wrote")
        if self._values is None or self._values[0] != dtype:
            native = _numpy_dtype(dtype)
            stored = native if self.byteorder == _NATIVE_ORDER else native.newbyteorder(self.byteorder)
            if len(self.raw) % stored.itemsize:
                raise ValueError(f"storage of {len(self.raw)} bytes is not a whole number of "
                                 f"{dtype} elements")
            array = np.frombuffer(self.raw, dtype=stored).astype(native, copy=False)  # swap bytes
            if dtype == "bfloat16":               # the high half of a float32
                array = (array.astype(np.uint32) << 16).view(np.float32)
            self._values = (dtype, array)
        return self._values[1]


class _PendingTensor:
    """A tensor to cut out of a storage once all bytes are read (legacy files come last)."""
    __slots__ = ("storage", "offset", "size", "stride", "dtype", "metadata")

    def __init__(self, storage=None, offset=0, size=(), stride=(), dtype=None, metadata=None):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.dtype, self.metadata = dtype, metadata

    def set_state(self, state):
        """torch 0.1.x: ``FloatTensor()`` then BUILD with (storage, offset, size, stride)."""
        if not (isinstance(state, tuple) and len(state) == 4):
            raise ValueError(f"a legacy tensor state must be (storage, offset, size, stride), "
                             f"got {type(state).__name__}")
        _check_tensor_args(*state)
        self.storage, self.offset, self.size, self.stride = state

    def to_numpy(self):
        if not isinstance(self.storage, _Storage):
            raise ValueError("a tensor without a storage")
        values = self.storage.values(self.dtype)               # (numel,)
        size, stride = tuple(self.size), tuple(self.stride)
        if len(size) != len(stride) or min(size, default=0) < 0:
            raise ValueError(f"tensor size {size} and stride {stride} do not fit together")
        if any(s == 0 for s in size):
            out = np.zeros(size, dtype=values.dtype)
        else:
            last = self.offset + sum((n - 1) * st for n, st in zip(size, stride))
            if self.offset < 0 or min(stride, default=0) < 0 or last >= len(values):
                raise ValueError(f"tensor (offset {self.offset}, size {size}, stride {stride}) "
                                 f"reaches outside its storage of {len(values)} elements")
            view = np.lib.stride_tricks.as_strided(
                values[self.offset:], shape=size,
                strides=[st * values.itemsize for st in stride], writeable=False)
            out = np.array(view, order="C")                    # a C-contiguous copy
        metadata = self.metadata or {}
        if metadata.get("conj"):
            out = np.conj(out)
        if metadata.get("neg"):
            out = -out
        return out


def _check_tensor_args(storage, offset, size, stride):
    if not isinstance(storage, _Storage):
        raise ValueError(f"a tensor's storage must come from the file, got {type(storage).__name__}")
    for name, value in (("size", size), ("stride", stride)):
        if not (isinstance(value, tuple) and all(isinstance(v, int) for v in value)):
            raise ValueError(f"a tensor's {name} must be a tuple of ints, got {value!r}")
    if not isinstance(offset, int):
        raise ValueError(f"a tensor's storage offset must be an int, got {offset!r}")


# --- the allow-list: each name a state dict may use, and our function for it ---------------

def _rebuild_tensor(storage, storage_offset, size, stride):
    """torch._utils._rebuild_tensor (torch 0.2 - 0.3)."""
    _check_tensor_args(storage, storage_offset, size, stride)
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2 (torch >= 0.4); metadata may set conj / neg bits."""
    tensor = _rebuild_tensor(storage, storage_offset, size, stride)
    tensor.metadata = metadata if isinstance(metadata, dict) else None
    return tensor


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    """torch._utils._rebuild_tensor_v3: an untyped (byte) storage read as ``dtype``."""
    if dtype not in _TORCH_DTYPES:
        raise ValueError(f"unsupported tensor dtype {dtype!r}")
    tensor = _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
                                backward_hooks, metadata)
    tensor.dtype = dtype
    return tensor


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """torch._utils._rebuild_parameter(_with_state): a Parameter is its data."""
    if not isinstance(data, _PendingTensor):
        raise ValueError(f"a Parameter must wrap a tensor, got {type(data).__name__}")
    return data


class _TensorClass:
    """Stands for torch.Tensor / nn.Parameter where a pickle names the class as data."""


_TENSOR_CLASS = _TensorClass()
_REBUILD_FUNCTIONS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter)


def _rebuild_from_type_v2(func, new_type, args, state):
    """torch._tensor._rebuild_from_type_v2: a plain tensor with Python attributes."""
    if func not in _REBUILD_FUNCTIONS or new_type is not _TENSOR_CLASS:
        raise ValueError("_rebuild_from_type_v2 of something other than a plain tensor")
    return func(*args)


class _StorageType:
    """Stands for torch.FloatStorage & co: only its dtype matters."""
    __slots__ = ("dtype",)

    def __init__(self, dtype):
        self.dtype = dtype


class _LegacyTensorType:
    """Stands for torch.FloatTensor & co (torch 0.1.x): calling it gives an empty tensor."""
    __slots__ = ()

    def __call__(self):
        return _PendingTensor()


def _encode_latin1(text, encoding="latin1"):
    """_codecs.encode, which protocol-2 pickles use for bytes; only latin-1 is allowed."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not a bytes literal")
    return text.encode("latin1")


def _torch_size(dims=()):
    return tuple(dims)


def _build_allow_list():
    allowed = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch", "Tensor"): _TENSOR_CLASS,
        ("torch._tensor", "Tensor"): _TENSOR_CLASS,
        ("torch.nn.parameter", "Parameter"): _TENSOR_CLASS,
        ("torch", "Size"): _torch_size,
        ("_codecs", "encode"): _encode_latin1,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
    }
    for module in ("torch", "torch.cuda", "torch.storage"):
        for name, dtype in _STORAGE_DTYPES.items():
            allowed[(module, name)] = _StorageType(dtype)
    for module in ("torch", "torch.cuda"):
        for name in _TENSOR_TYPES:
            allowed[(module, name)] = _LegacyTensorType()
    for dtype in _TORCH_DTYPES:
        allowed[("torch", dtype)] = dtype
    return allowed


_ALLOWED_GLOBALS = _build_allow_list()
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}   # protocol-2 names


class _RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that can build only what is in _ALLOWED_GLOBALS, and storages.

    It extends the pure-Python unpickler, whose table of opcodes we can change: pickle's
    BUILD would set any attribute on any object, ours only gives a torch 0.1.x tensor its
    (storage, offset, size, stride) and drops an OrderedDict's attributes (torch's
    ``_metadata`` of layer versions)."""
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, path, load_storage=None):
        super().__init__(file, encoding="utf-8")
        self._path, self._load_storage = path, load_storage

    def load_build(self):
        state = self.stack.pop()
        obj = self.stack[-1]
        if isinstance(obj, _PendingTensor):
            obj.set_state(state)
        elif type(obj) is not OrderedDict:
            raise UnsafeCheckpointError(f"{self._path}: refusing to load: the pickle sets the "
                                        f"state of a {type(obj).__name__}")

    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(_PY2_MODULES.get(module, module), name)]
        except KeyError:
            hint = ""
            if module.startswith(("torch.nn", "__main__", "__torch__")):
                hint = (" It looks like a whole pickled model (torch.save(model)); load it with "
                        "torch and save model.state_dict() instead.")
            raise UnsafeCheckpointError(
                f"{self._path}: refusing to load: the pickle asks for '{module}.{name}', which "
                f"is not one of the types a state dict needs; loading it could run code from "
                f"the file.{hint}") from None

    def persistent_load(self, pid):
        if self._load_storage is None or not (isinstance(pid, tuple) and pid):
            raise ValueError(f"{self._path}: unexpected persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module":
            raise UnsafeCheckpointError(
                f"{self._path}: refusing to load: the file pickles a whole nn.Module; load it "
                f"with torch and save model.state_dict() instead")
        if kind != "storage" or not isinstance(pid[1], _StorageType):
            raise ValueError(f"{self._path}: unexpected persistent id {pid!r}")
        return self._load_storage(*pid[1:])


# --- the two file layouts -------------------------------------------------------------------

def _zip_member_reader(path, zf):
    """A function name -> bytes that reads a zip member within the file's budget."""
    archive_bytes = os.path.getsize(path)
    inflated = [0]          # bytes by which the members read so far inflate

    def read(name):
        info = zf.getinfo(name)
        if info.compress_size > archive_bytes:
            raise UnsafeCheckpointError(
                f"{path}: refusing to load: zip member {name} declares {info.compress_size} "
                f"compressed bytes, more than the file's {archive_bytes}")
        inflated[0] += max(info.file_size - info.compress_size, 0)
        if inflated[0] > EXPANSION_ALLOWANCE:
            raise UnsafeCheckpointError(
                f"{path}: refusing to load: zip member {name} inflates from "
                f"{info.compress_size} to {info.file_size} bytes, past the "
                f"{EXPANSION_ALLOWANCE} bytes a file may expand by (EXPANSION_ALLOWANCE)")
        with zf.open(info) as member:
            return member.read(info.file_size)        # never more than the header declares

    return read


def _load_zip(path, zf):
    names = zf.namelist()
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
    if any(n.endswith("constants.pkl") for n in names) or any("/code/" in n for n in names):
        raise ValueError(f"{path} is a TorchScript archive (torch.jit.save), not a state dict: "
                         f"load it with torch.jit.load and torch.save(model.state_dict()) instead")
    if len(pickles) != 1:
        raise ValueError(f"{path} is a zip file but not a torch.save checkpoint "
                         f"(no single <name>/data.pkl in {names[:5]})")
    prefix = pickles[0][:-len("data.pkl")]
    read_member = _zip_member_reader(path, zf)
    byteorder = "<"
    if prefix + "byteorder" in names:
        order = read_member(prefix + "byteorder").strip()
        if order not in (b"little", b"big"):
            raise ValueError(f"{path}: unknown byteorder {order!r}")
        byteorder = "<" if order == b"little" else ">"
    storages = {}

    def load_storage(storage_type, key, location, numel):
        if key not in storages:
            name = f"{prefix}data/{key}"
            if name not in names:
                raise ValueError(f"{path}: storage {name} is missing from the archive")
            if not isinstance(numel, int) or numel < 0:
                raise ValueError(f"{path}: storage {name} has {numel!r} elements")
            expected = numel * _numpy_dtype(storage_type.dtype).itemsize
            declared = zf.getinfo(name).file_size          # checked before inflating it
            if declared != expected:
                raise ValueError(f"{path}: storage {name} has {declared} bytes, expected "
                                 f"{numel} x {storage_type.dtype} = {expected}")
            raw = read_member(name)
            storages[key] = _Storage(storage_type.dtype, numel, raw, byteorder)
        return storages[key]

    data = io.BytesIO(read_member(pickles[0]))
    return _RestrictedUnpickler(data, path, load_storage).load()


def _load_legacy(path, f):
    header = [_RestrictedUnpickler(f, path).load() for _ in range(3)]
    if header[0] != MAGIC_NUMBER or header[1] != PROTOCOL_VERSION:
        raise ValueError(f"{path} is neither a zip nor a legacy torch.save checkpoint "
                         f"(magic number {header[0]!r}, protocol {header[1]!r})")
    roots = {}

    def load_storage(storage_type, root_key, location, numel, view_metadata):
        root = roots.setdefault(root_key, _Storage(storage_type.dtype, numel))
        if view_metadata is None:
            return root
        view_key, offset, view_numel = view_metadata
        if offset < 0 or offset + view_numel > root.numel:
            raise ValueError(f"{path}: storage view {view_key} ({offset} + {view_numel}) "
                             f"reaches outside storage {root_key} of {root.numel} elements")
        return _Storage(root.dtype, view_numel, base=root, offset=offset)

    result = _RestrictedUnpickler(f, path, load_storage).load()
    keys = _RestrictedUnpickler(f, path).load()
    file_bytes = os.fstat(f.fileno()).st_size
    for key in keys:                 # then each storage: int64 count, little-endian bytes
        if key not in roots:
            raise ValueError(f"{path}: the file stores storage {key!r} that nothing uses")
        storage = roots[key]
        numel = int.from_bytes(f.read(8), "little")
        nbytes = numel * _numpy_dtype(storage.dtype).itemsize
        storage.raw = f.read(min(nbytes, file_bytes - f.tell()))   # never past the file's end
        if numel != storage.numel or len(storage.raw) != nbytes:
            raise ValueError(f"{path}: storage {key!r} is truncated or has the wrong size "
                             f"({len(storage.raw)} bytes read, {storage.numel} elements expected)")
    return result


def _references(obj, where, seen):
    """(where, item) for each reference to a tensor or storage in obj, as _materialise meets
    them; ``where`` is the path of keys, e.g. 'state_dict/conv1.weight'."""
    if isinstance(obj, (_PendingTensor, _Storage)):
        yield where, obj
        return
    if id(obj) in seen or not isinstance(obj, (dict, list, tuple, set, frozenset)):
        return
    seen.add(id(obj))
    for key, value in (obj.items() if isinstance(obj, dict) else enumerate(obj)):
        yield from _references(value, f"{where}/{key}" if where else str(key), seen)


def _stored_bytes(item):
    """Bytes a tensor (or bare storage) will be copied to, counted as stored."""
    if isinstance(item, _Storage):
        return item.numel * _numpy_dtype(item.dtype).itemsize
    dtype = item.dtype or getattr(item.storage, "dtype", None)
    if dtype is None:                              # no storage: to_numpy refuses it
        return 0
    return math.prod(max(n, 0) for n in item.size) * _numpy_dtype(dtype).itemsize


def _check_budget(path, obj):
    """Refuse a file whose tensors would take more than its storages plus the allowance."""
    references = list(_references(obj, "", set()))
    roots = {}                                     # id -> bytes of each storage read
    for _, item in references:
        storage = item if isinstance(item, _Storage) else item.storage
        if isinstance(storage, _Storage):
            root = storage.base if storage.base is not None else storage
            roots[id(root)] = len(root.raw or b"")
    storage_bytes = sum(roots.values())
    total = 0
    for where, item in references:
        nbytes = _stored_bytes(item)
        total += nbytes
        if total > storage_bytes + EXPANSION_ALLOWANCE:
            shape = (f"storage of {item.numel} elements" if isinstance(item, _Storage) else
                     f"size {tuple(item.size)}, stride {tuple(item.stride)}")
            raise UnsafeCheckpointError(
                f"{path}: refusing to load: tensor {where!r} ({shape}) takes {nbytes} bytes, "
                f"which brings the tensors to {total} bytes, more than the file's "
                f"{storage_bytes} bytes of storage plus {EXPANSION_ALLOWANCE} "
                f"(EXPANSION_ALLOWANCE): stride-0 or overlapping views repeat the same bytes")


def _materialise(obj, seen):
    """Replace pending tensors by NumPy arrays, inside dicts, lists, tuples and sets."""
    if isinstance(obj, _PendingTensor):
        return obj.to_numpy()
    if isinstance(obj, _Storage):                   # a bare storage was saved
        return obj.values().copy()
    if id(obj) in seen or not isinstance(obj, (dict, list, tuple, set, frozenset)):
        return obj
    seen.add(id(obj))
    if isinstance(obj, dict):                       # in place: keeps OrderedDict and its order
        for key in list(obj):
            obj[key] = _materialise(obj[key], seen)
        return obj
    if isinstance(obj, list):
        obj[:] = [_materialise(v, seen) for v in obj]
        return obj
    return type(obj)(_materialise(v, seen) for v in obj)


def load_pth(path):
    """Load a .pth file: whatever it holds, with every tensor as a NumPy array.

    Dicts, lists, tuples, numbers, strings and None come back as plain Python values.
    Raises UnsafeCheckpointError if the pickle names anything beyond what a state dict
    needs or the file would expand past its budget, FileNotFoundError if there is no such
    file, and UserError with the file name for anything else that is not a readable
    checkpoint (both are ValueErrors, see :mod:`minissd.errors`).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path!r}")
    try:
        with open(path, "rb") as f:
            if zipfile.is_zipfile(f):
                with zipfile.ZipFile(f) as zf:
                    result = _load_zip(path, zf)
            elif tarfile.is_tarfile(path):
                raise ValueError(
                    f"{path} is in torch's pre-2017 tar format, which minissd does not read: "
                    f"load it with torch (weights_only=False, if you trust it) and re-save with "
                    f"torch.save(state_dict) using torch >= 1.6")
            else:
                f.seek(0)
                result = _load_legacy(path, f)
        _check_budget(path, result)             # before any tensor is copied
        return _materialise(result, set())
    except UserError:
        raise
    except ValueError as err:  # a bad tensor or storage: name the file
        raise UserError(str(err) if str(err).startswith(path) else f"{path}: {err}") from err
    except Exception as err:   # a corrupt pickle: EOFError, UnpicklingError, TypeError, ...
        raise UserError(f"{path}: not a readable torch checkpoint "
                        f"({type(err).__name__}: {err})") from err


def _is_state_dict(obj):
    return (isinstance(obj, dict) and len(obj) > 0 and
            all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()))


def load_state_dict_pth(path, strip_prefix="module."):
    """The flat ``OrderedDict[str, np.ndarray]`` of a checkpoint's weights.

    The file may hold the state dict itself, or a training checkpoint that wraps it under
    one of STATE_DICT_KEYS (e.g. ``{'state_dict': ..., 'epoch': 3}``). If every key starts
    with ``strip_prefix`` (``'module.'``, added by nn.DataParallel) it is removed; pass
    ``strip_prefix=None`` to keep keys as they are.
    """
    obj = load_pth(path)
    if not _is_state_dict(obj):
        found = None
        if isinstance(obj, dict):
            found = next((obj[k] for k in STATE_DICT_KEYS if _is_state_dict(obj.get(k))), None)
        if found is None:
            what = f"a dict with keys {list(obj)[:10]}" if isinstance(obj, dict) else type(obj).__name__
            raise UserError(f"{path}: no state dict found: the file holds {what}; expected a "
                            f"dict of str -> tensor, or one under a key in {STATE_DICT_KEYS}")
        obj = found
    state = OrderedDict(obj)
    if strip_prefix and all(k.startswith(strip_prefix) for k in state):
        state = OrderedDict((k[len(strip_prefix):], v) for k, v in state.items())
    return state
