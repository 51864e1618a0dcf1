"""Shared fixtures: `xp` runs a test on NumPy, on a fake CuPy, and where a GPU exists on CuPy.

"fake-cupy" (tests/fake_cupy.py) is NumPy under CuPy's rules: it takes the CuPy
code paths and fails on host/device mix-ups, so CI (no GPU) checks them too.
"""
import numpy as np
import pytest

import fake_cupy
from minissd.nn import backend

_XPS = [pytest.param("numpy", id="numpy"),
        pytest.param("fake-cupy", id="fake-cupy"),
        pytest.param("cupy", id="cupy",
                     marks=pytest.mark.skipif(not backend.cuda_available(),
                                              reason="CuPy or a GPU is missing"))]


@pytest.fixture(params=_XPS)
def xp(request, monkeypatch):
    """The array module under test: numpy, the fake cupy, or cupy where a GPU exists."""
    if request.param == "fake-cupy":
        monkeypatch.setattr(backend, "_cupy", fake_cupy)   # backend's CuPy, for this test only
        return fake_cupy
    return np if request.param == "numpy" else backend.cupy_module()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
