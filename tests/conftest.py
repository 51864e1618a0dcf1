"""Shared fixtures: `xp` runs a test on NumPy and, where a GPU exists, on CuPy."""
import numpy as np
import pytest

from minissd import backend

_XPS = [pytest.param("numpy", id="numpy"),
        pytest.param("cupy", id="cupy",
                     marks=pytest.mark.skipif(not backend.cuda_available(),
                                              reason="CuPy or a GPU is missing"))]


@pytest.fixture(params=_XPS)
def xp(request):
    """The array module under test: numpy, or cupy where a GPU exists."""
    return np if request.param == "numpy" else backend.cupy_module()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
