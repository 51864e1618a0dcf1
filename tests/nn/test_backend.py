import numpy as np
import pytest

from minissd.nn import backend


def test_get_array_module_numpy():
    assert backend.get_array_module(np.zeros(2), 3.0, None) is np


def test_get_array_module_follows_array(xp):
    a = xp.zeros(3)
    assert backend.get_array_module(np.zeros(1), a) is xp


def test_to_numpy_round_trip(xp):
    a = xp.arange(6, dtype=xp.float32).reshape(2, 3)
    b = backend.to_numpy(a)
    assert isinstance(b, np.ndarray) and b.dtype == np.float32
    np.testing.assert_array_equal(b, np.arange(6).reshape(2, 3))


def test_to_device_cpu_is_numpy():
    out = backend.to_device([1, 2, 3], "cpu")
    assert isinstance(out, np.ndarray)


def test_unknown_device_is_named():
    with pytest.raises(ValueError, match="'tpu'"):
        backend.check_device("tpu")


@pytest.mark.skipif(backend.cuda_available(), reason="a GPU is present")
def test_cuda_missing_is_a_clear_error():
    with pytest.raises(RuntimeError, match="cuda"):
        backend.to_device(np.zeros(2), "cuda")


def test_xp_for():
    assert backend.xp_for("cpu") is np


def test_stable_argsort_keeps_ties_in_index_order(xp):
    x = xp.asarray([3.0, 1.0, 3.0, 1.0, 2.0])
    order = backend.to_numpy(backend.stable_argsort(-x))
    np.testing.assert_array_equal(order, [0, 2, 4, 1, 3])


def test_thread_settings_keep_their_old_names_here():
    from minissd.nn import threads
    assert backend.set_num_threads is threads.set_num_threads
    assert backend.num_threads is threads.num_threads
