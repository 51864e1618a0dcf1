"""The array backend: NumPy on the CPU, CuPy on the GPU.

This is the only module in minissd that imports CuPy. Numeric code elsewhere
opens with ``xp = get_array_module(x)`` and then calls ``xp.*``, so the same
lines run on both backends.

    >>> import numpy as np
    >>> from minissd.nn.backend import get_array_module
    >>> get_array_module(np.zeros(3)) is np
    True
"""
from __future__ import annotations

import numpy as np

from minissd.errors import UserError

try:  # CuPy is optional: `pip install -e .[cuda12]` (or .[cuda13]) brings it.
    import cupy as _cupy
except Exception:  # ImportError, or a CuPy whose CUDA libraries fail to load
    _cupy = None

DEVICES = ("cpu", "cuda")


class DeviceUnavailableError(UserError, RuntimeError):
    """'cuda' was asked for but CuPy or a GPU is missing (a RuntimeError, as it was before)."""


def cupy_module():
    """The ``cupy`` module, or None when it is not installed."""
    return _cupy


def cuda_available() -> bool:
    """True when CuPy is installed and sees at least one GPU."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def check_device(device: str) -> str:
    """Validate a device name; raise a clear error if CUDA is asked for but missing."""
    if device not in DEVICES:
        raise UserError(f"unknown device {device!r}: expected one of {DEVICES}")
    if device == "cuda" and not cuda_available():
        if _cupy is None:
            raise DeviceUnavailableError(
                "device 'cuda' was asked for but CuPy is not installed: "
                "pip install -e '.[cuda12]' (or '.[cuda13]') to match your CUDA version")
        raise DeviceUnavailableError("device 'cuda' was asked for but CuPy finds no GPU "
                                     "(cupy.cuda.runtime.getDeviceCount() is 0 or failed)")
    return device


def xp_for(device: str):
    """The array module for a device name: numpy for 'cpu', cupy for 'cuda'."""
    return np if check_device(device) == "cpu" else _cupy


def get_array_module(*arrays):
    """numpy, or cupy if any argument is a CuPy array (like ``cupy.get_array_module``)."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def stable_argsort(x, axis=-1):
    """argsort that keeps equal values in index order (NMS scores, mining losses).

    CuPy's argsort is always stable and (in some versions) takes no ``kind``;
    NumPy's default quicksort is not stable, so ask for it.
    """
    xp = get_array_module(x)
    return xp.argsort(x, axis=axis, kind="stable") if xp is np else xp.argsort(x, axis=axis)


def is_cupy(x) -> bool:
    return _cupy is not None and isinstance(x, _cupy.ndarray)


def device_of(x) -> str:
    """'cuda' for a CuPy array, 'cpu' otherwise."""
    return "cuda" if is_cupy(x) else "cpu"


def to_numpy(x):
    """A NumPy array (copied off the GPU if needed); scalars and lists go through np.asarray."""
    if is_cupy(x):
        return _cupy.asnumpy(x)
    return np.asarray(x)


def to_device(x, device: str):
    """Move an array to 'cpu' (NumPy) or 'cuda' (CuPy); a no-op if it is already there."""
    if check_device(device) == "cpu":
        return to_numpy(x)
    return _cupy.asarray(x)


def synchronize(xp) -> None:
    """Wait for queued GPU work (for timing); nothing to do on NumPy."""
    if xp is not np:
        xp.cuda.Stream.null.synchronize()


def __getattr__(name):
    """The thread settings moved to :mod:`minissd.nn.threads`; their old names here still work."""
    if name in ("num_threads", "set_num_threads", "_THREADS"):
        from minissd.nn import threads
        return getattr(threads, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
