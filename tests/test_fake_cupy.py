"""The fake CuPy (tests/fake_cupy.py) must refuse what CuPy refuses, or its test cases prove nothing."""
import numpy as np
import pytest

import fake_cupy as cp
from minissd.nn import backend


@pytest.fixture
def a():
    return cp.asarray(np.arange(6.0).reshape(2, 3))          # from the host: allowed


REFUSED = {
    "np.asarray": lambda a: np.asarray(a),
    "np.array of rows": lambda a: np.array([a[0], a[1]]),
    "device + host": lambda a: a + np.ones(3),
    "host + device": lambda a: np.ones(3) + a,
    "device * host in place": lambda a: a.__imul__(np.ones(3)),
    "cupy function given host": lambda a: cp.concatenate([a, np.ones((1, 3))]),
    "cupy.where given host": lambda a: cp.where(np.array([True, False, True]), a, 0),
    "numpy-only function": lambda a: np.insert(a, 0, 1.0),
    "numpy-only method": lambda a: a.resize(3),
    "0-d array as a Python index": lambda a: [1, 2][a[0, 1].astype(np.int64)],
    "0-d array as a range": lambda a: range(a.sum().astype(np.int64)),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_refuses_host_device_mixups(a, case):
    with pytest.raises((TypeError, AttributeError)):
        REFUSED[case](a)


def test_allowed_operations_compute_like_numpy(a):
    b = a * 2 + 1.5                                            # Python scalars
    assert isinstance(b, cp.ndarray) and b.get().tolist() == [[1.5, 3.5, 5.5], [7.5, 9.5, 11.5]]
    s = a.sum()
    assert isinstance(s, cp.ndarray) and s.ndim == 0 and float(s) == 15.0   # 0-d, like CuPy
    assert np.sum(a).get() == 15.0                             # NumPy's function, dispatched
    v = a[:, 1]
    v += 10                                                    # in place on a view: same buffer
    assert a.get()[:, 1].tolist() == [11.0, 14.0]
    assert a[np.array([1, 0])].get()[0].tolist() == [3.0, 14.0, 5.0]   # index arrays may be host
    assert cp.asnumpy(a).dtype == np.float64 and isinstance(a.get(), np.ndarray)
    assert cp.float32 is np.float32 and cp.finfo(cp.float32).eps == np.finfo(np.float32).eps


def test_backend_sees_it_as_cupy(a, monkeypatch):
    monkeypatch.setattr(backend, "_cupy", cp)
    assert backend.is_cupy(a) and backend.get_array_module(a) is cp
    assert backend.xp_for("cuda") is cp and backend.device_of(a) == "cuda"
    assert isinstance(backend.to_numpy(a), np.ndarray)
    assert isinstance(backend.to_device(np.ones(2), "cuda"), cp.ndarray)


def test_argsort_is_stable_like_cupys():
    x = np.zeros(100)                              # all tied: NumPy's default quicksort may reorder
    x[::7] = 1.0
    d = cp.asarray(x)
    want = np.argsort(x, kind="stable")
    assert np.array_equal(cp.asnumpy(cp.argsort(d)), want)
    assert np.array_equal(cp.asnumpy(d.argsort()), want)
    assert np.array_equal(cp.asnumpy(cp.sort(d)), np.sort(x))
