"""A stand-in for CuPy on machines without a GPU: NumPy inside, CuPy's rules outside.

minissd runs the same code on NumPy and CuPy arrays. The CuPy cases of the tests
need a GPU, so on a CPU-only machine (CI) the CuPy code paths would go untested.
The commonest CuPy bugs are not numerical: they are host/device mix-ups, which
NumPy forgives and CuPy refuses. This module keeps NumPy's arithmetic but enforces
those rules, so the `xp` fixture can run every test a third time, as "fake-cupy":

* ``np.asarray(device_array)`` and other implicit conversions raise TypeError
  (``__array__``), as in CuPy; ``.get()`` / ``asnumpy`` are the way to the host;
* an operation mixing a device array with a NumPy array (n-d, not a scalar)
  raises TypeError, as CuPy's kernels do;
* module functions refuse NumPy arrays, except the converters (``asarray``, ...);
* NumPy functions CuPy does not have, and NumPy-only methods, raise;
* reductions return 0-d device arrays, not NumPy scalars, and a device array
  has no ``__index__`` (``range(x.sum())`` fails in CuPy, so it fails here);
* ``argsort`` and ``sort`` are stable, as CuPy's always are (NumPy's default is not);
* ``cuda.runtime.getDeviceCount()``, ``cuda.Stream.null.synchronize()`` and a
  memory pool exist, so ``backend.check_device('cuda')`` and the benchmarks work.

It checks where the arrays live, not what a GPU computes: speed, kernels and
CUDA's rounding need the real thing (the `cupy` cases, on a GPU).
"""
from __future__ import annotations

import builtins
import sys
import types

import numpy as _np

__version__ = "fake"

# NumPy names CuPy 14 does not have (dir(numpy) - dir(cupy), the array-relevant ones)
_MISSING = {"asmatrix", "block", "bmat", "einsum_path", "errstate", "frompyfunc", "fromregex",
            "geomspace", "histogram_bin_edges", "insert", "isnat", "matrix", "matvec", "memmap",
            "nanpercentile", "nanquantile", "ndenumerate", "nditer", "nested_iters", "polyder",
            "polydiv", "polyint", "seterr", "geterr", "spacing", "unstack", "vecdot", "vecmat"}
_MISSING_METHODS = {"ctypes", "getfield", "resize", "setfield", "setflags", "to_device"}
_CONVERTERS = {"asarray", "array", "asanyarray", "asnumpy"}   # the ways from the host to the device
_PASSTHROUGH = (type, _np.dtype, _np.generic, builtins.int, builtins.float, builtins.bool,
                builtins.complex, builtins.str, type(None), slice, type(Ellipsis))


def _host_array_error(where):
    return TypeError(f"fake cupy: {where} got a NumPy array; CuPy does not move host arrays to the "
                     "GPU implicitly (use cupy.asarray / backend.to_device)")


def _unwrap(obj, where, allow_host=False):
    """Device arrays -> their NumPy buffer (no copy); NumPy arrays only where allowed."""
    if isinstance(obj, ndarray):
        return obj._a
    if isinstance(obj, _np.ndarray):
        if obj.ndim > 0 and not allow_host:
            raise _host_array_error(where)
        return obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o, where, allow_host) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v, where, allow_host) for k, v in obj.items()}
    return obj


def _wrap(obj):
    """NumPy results -> device arrays; NumPy scalars (from reductions) -> 0-d device arrays."""
    if isinstance(obj, _np.ndarray):
        return ndarray(obj)
    if isinstance(obj, _np.generic):
        return ndarray(_np.asarray(obj))
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


class ndarray:
    """A device array: a NumPy array that refuses to meet NumPy arrays."""

    __slots__ = ("_a",)
    __array_priority__ = 100

    def __init__(self, a):
        if isinstance(a, tuple) or not isinstance(a, _np.ndarray):   # cupy.ndarray(shape, dtype)
            raise TypeError("fake cupy: build arrays with cupy.zeros/empty/asarray")
        self._a = a

    # -- what CuPy refuses -------------------------------------------------- #
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        where = f"numpy.{ufunc.__name__}"
        inputs = _unwrap(inputs, where)
        kwargs = _unwrap(kwargs, where)
        return _wrap(getattr(ufunc, method)(*inputs, **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        name = func.__name__
        if name in _MISSING or not hasattr(_np, name):
            raise TypeError(f"fake cupy: no implementation of numpy.{name} for cupy arrays")
        where = f"numpy.{name}"
        return _wrap(func(*_unwrap(args, where), **_unwrap(kwargs, where)))

    def __getattr__(self, name):
        if name.startswith("__"):                # no __array_interface__, __dlpack__, ...: no way
            raise AttributeError(name)           # around __array__ for NumPy
        if name in _MISSING_METHODS:
            raise AttributeError(f"fake cupy: cupy.ndarray has no attribute {name!r}")
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr) if name in ("T", "real", "imag", "mT") else attr
        where = f"cupy.ndarray.{name}"

        def method(*args, **kwargs):
            return _wrap(attr(*_unwrap(args, where), **_unwrap(kwargs, where)))
        return method

    def argsort(self, axis=-1, kind=None):
        return argsort(self, axis=axis)          # stable, as CuPy's

    # -- CuPy's own --------------------------------------------------------- #
    def get(self, stream=None, order="C", out=None):
        return _np.array(self._a, order=order)

    def set(self, arr, stream=None):
        self._a[...] = arr

    # -- Python protocols --------------------------------------------------- #
    def __repr__(self):
        return f"fake_cupy.{self._a!r}"

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (ndarray(_np.asarray(v)) for v in self._a)

    def __bool__(self):
        return bool(self._a)

    def __int__(self):
        return int(self._a)

    def __float__(self):
        return float(self._a)

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key, "cupy.ndarray.__getitem__", allow_host=True)])

    def __setitem__(self, key, value):
        self._a[_unwrap(key, "cupy.ndarray.__setitem__", allow_host=True)] = \
            _unwrap(value, "cupy.ndarray.__setitem__", allow_host=True)

    def __copy__(self):
        return ndarray(self._a.copy())

    def __deepcopy__(self, memo):
        return ndarray(self._a.copy())


def _operator(name, in_place=False):
    def op(self, *args):
        result = getattr(self._a, name)(*_unwrap(args, f"cupy.ndarray.{name}"))
        if result is NotImplemented:
            return result
        if in_place:
            return self                                           # in place, same buffer
        return _wrap(result)
    op.__name__ = name
    return op


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul",
              "and", "or", "xor", "lshift", "rshift"):
    setattr(ndarray, f"__{_name}__", _operator(f"__{_name}__"))
    setattr(ndarray, f"__r{_name}__", _operator(f"__r{_name}__"))
    setattr(ndarray, f"__i{_name}__", _operator(f"__i{_name}__", in_place=True))
for _form in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__",
              "__neg__", "__pos__", "__abs__", "__invert__", "__divmod__"):
    setattr(ndarray, _form, _operator(_form))
ndarray.__hash__ = None


def _function(name, fn):
    where = f"cupy.{name}"
    allow_host = name in _CONVERTERS

    def call(*args, **kwargs):
        return _wrap(fn(*_unwrap(args, where, allow_host), **_unwrap(kwargs, where, allow_host)))
    call.__name__ = name
    return call


def argsort(a, axis=-1, kind=None):
    """CuPy's argsort is always stable (equal values keep index order); NumPy's default is not."""
    return _wrap(_np.argsort(_unwrap(a, "cupy.argsort"), axis=axis, kind="stable"))


def sort(a, axis=-1, kind=None):
    """Stable, like CuPy's."""
    return _wrap(_np.sort(_unwrap(a, "cupy.sort"), axis=axis, kind="stable"))


def asnumpy(a, stream=None, order="C", out=None):
    return a.get() if isinstance(a, ndarray) else _np.asarray(a, order=order)


def get_array_module(*args):
    return _this if any(isinstance(a, ndarray) for a in args) else _np


class _MemoryPool:
    """cupy.get_default_memory_pool(): nothing is pooled on the host."""

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self):
        pass


_POOL = _MemoryPool()


def get_default_memory_pool():
    return _POOL


cuda = types.SimpleNamespace(
    runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
    Stream=types.SimpleNamespace(null=types.SimpleNamespace(synchronize=lambda: None)),
    Device=lambda *a: types.SimpleNamespace(synchronize=lambda: None, id=0),
)
lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(
    as_strided=_function("lib.stride_tricks.as_strided", _np.lib.stride_tricks.as_strided),
    sliding_window_view=_function("lib.stride_tricks.sliding_window_view",
                                  _np.lib.stride_tricks.sliding_window_view)))


def __getattr__(name):
    """cupy.<name>: NumPy's dtypes and constants as they are, its functions under CuPy's rules."""
    if name.startswith("__") or name in _MISSING or not hasattr(_np, name):
        raise AttributeError(f"fake cupy: module 'cupy' has no attribute {name!r}")
    value = getattr(_np, name)
    if isinstance(value, _PASSTHROUGH) or isinstance(value, types.ModuleType) \
            or name in ("finfo", "iinfo", "dtype", "promote_types"):
        return value                     # float32, inf, newaxis, finfo, ...: CuPy's are NumPy's
    if callable(value):
        return _function(name, value)
    return value


_this = sys.modules[__name__]
