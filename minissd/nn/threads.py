"""minissd's CPU threads: a small pool for the fast paths, and OpenBLAS told to use one thread.

Only the CPU fast paths (:mod:`minissd.nn.fast`) use this module; the
textbook operations (:mod:`minissd.nn.functional`) run on one thread.

    >>> from minissd.nn.threads import parallel_map, set_num_threads
    >>> parallel_map(lambda a, b: a + b, [(1, 2), (3, 4)])
    [3, 7]
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
