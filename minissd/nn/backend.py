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

import ctypes
import functools
import glob
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

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


# --------------------------------------------------------------------------- #
# CPU threads.
#
# NumPy runs each array operation on one core; only its BLAS (the GEMMs) may
# use more. minissd runs its CPU work -- a layer's batch, cut into chunks small
# enough to stay in the cache -- on a small pool of threads of its own (NumPy
# lets go of Python's lock inside its loops, so the threads really run at
# once), and asks BLAS for one thread, so that idle BLAS threads spinning for
# work never compete with the pool for the cores. This is PyTorch's model too:
# one intra-op pool, torch.set_num_threads(n).
# --------------------------------------------------------------------------- #
_THREADS = {"n": None}                # None: not yet resolved (see _default_threads)
_POOL = {"pool": None, "size": 0, "blas_pinned": False}
_WORKER = threading.local()          # .active: this thread is running a pool task
_BLAS_SETTERS = ("openblas_set_num_threads", "scipy_openblas_set_num_threads64_",
                 "scipy_openblas_set_num_threads")


@functools.lru_cache(maxsize=None)
def _blas_thread_setter():
    """The C function that sets OpenBLAS's thread count, or None (another BLAS, not found).

    Looked up once, in the OpenBLAS that NumPy has loaded: the one shipped in
    the wheel's numpy.libs folder, or (conda, distributions) one in the
    process's memory map.
    """
    paths = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
    try:
        with open("/proc/self/maps") as f:
            paths += sorted({line.split()[-1] for line in f if "openblas" in line.lower()})
    except OSError:                                                   # not Linux
        pass
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _BLAS_SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                return fn
    return None


def _default_threads() -> int:
    """MINISSD_NUM_THREADS if set, else the cores this process may use (1 if BLAS can't be told)."""
    env = os.environ.get("MINISSD_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise UserError(f"MINISSD_NUM_THREADS={env!r} is not a whole number") from None
    if _blas_thread_setter() is None:
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                                            # macOS, Windows
        return max(1, os.cpu_count() or 1)


def num_threads() -> int:
    """How many threads minissd's CPU layers use (see :func:`set_num_threads`)."""
    if _THREADS["n"] is None:
        _THREADS["n"] = _default_threads()
    return _THREADS["n"]


def set_num_threads(n: int) -> int:
    """Run minissd's CPU work on ``n`` threads; returns the previous count.

    OpenBLAS is asked for one thread when minissd first runs a layer (for the
    whole process, as ``torch.set_num_threads`` does for its BLAS): each of
    minissd's threads calls it for its own chunk, and idle BLAS threads
    spinning for work would take the cores from them. The default is the
    number of cores, or the environment variable MINISSD_NUM_THREADS. Results
    do not depend on ``n``: the work is cut into the same chunks whatever the
    count, and partial sums are added in chunk order.
    """
    n = int(n)
    if n < 1:
        raise UserError(f"set_num_threads: n must be at least 1, got {n}")
    previous = num_threads()
    _THREADS["n"] = n
    return previous


def _pool(n):
    """The n - 1 helper threads (the calling thread is the n-th)."""
    if _POOL["size"] != n - 1:
        if _POOL["pool"] is not None:
            _POOL["pool"].shutdown(wait=True)
        _POOL["pool"] = ThreadPoolExecutor(n - 1, thread_name_prefix="minissd")
        _POOL["size"] = n - 1
    return _POOL["pool"]


def parallel_map(fn, items):
    """[fn(*item) for item in items], run on minissd's threads; results in order.

    Each thread (the calling one too) takes the next item not yet taken until
    none is left, so a few big items and many small ones still share out
    evenly: put the big ones first. Which thread ran an item never changes its
    result. Runs everything in the calling thread when there is one thread,
    one item, or when called from inside an item (no nested parallelism, so it
    cannot deadlock). Only for NumPy work: CuPy work is queued on the GPU.
    """
    items = list(items)
    if not _POOL["blas_pinned"]:                                      # once: GEMMs run 1 thread each
        setter = _blas_thread_setter()
        if setter is not None:
            setter(1)
        _POOL["blas_pinned"] = True
    n = min(num_threads(), len(items))
    if n <= 1 or getattr(_WORKER, "active", False):
        return [fn(*item) for item in items]
    results = [None] * len(items)
    taken = itertools.count()                                         # next() is atomic under the GIL

    def work():
        _WORKER.active = True
        try:
            while (i := next(taken)) < len(items):
                results[i] = fn(*items[i])
        finally:
            _WORKER.active = False

    futures = [_pool(num_threads()).submit(work) for _ in range(n - 1)]
    try:
        work()
    finally:                                                          # never leave items running
        wait(futures)
    for f in futures:
        f.result()                                                    # re-raises an item's error
    return results


def in_parallel_task() -> bool:
    """True inside a :func:`parallel_map` task (where further splitting runs serially)."""
    return getattr(_WORKER, "active", False)
