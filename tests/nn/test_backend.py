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


# --------------------------------------------------------------------------- #
# CPU threads
# --------------------------------------------------------------------------- #
@pytest.fixture
def threads():
    """Restore minissd's thread count after a test changes it."""
    saved = dict(backend._THREADS)
    yield
    backend._THREADS.update(saved)


def test_set_num_threads_returns_the_previous_count(threads):
    backend.set_num_threads(3)
    assert backend.set_num_threads(1) == 3
    assert backend.num_threads() == 1


def test_set_num_threads_rejects_zero(threads):
    with pytest.raises(ValueError, match="at least 1"):
        backend.set_num_threads(0)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_parallel_map_keeps_the_order(threads, n):
    backend.set_num_threads(n)
    assert backend.parallel_map(lambda a, b: a * 10 + b, [(i, i + 1) for i in range(9)]) == \
        [i * 10 + i + 1 for i in range(9)]
    assert backend.parallel_map(lambda a: a, []) == []


def test_parallel_map_inside_a_task_runs_in_that_thread(threads):
    import threading
    backend.set_num_threads(2)

    def outer(i):
        me = threading.get_ident()
        assert backend.in_parallel_task()
        inner = backend.parallel_map(lambda j: threading.get_ident(), [(j,) for j in range(4)])
        return all(t == me for t in inner)                    # no nesting: no deadlock either

    assert all(backend.parallel_map(outer, [(i,) for i in range(4)]))
    assert not backend.in_parallel_task()


def test_parallel_map_passes_errors_on(threads):
    backend.set_num_threads(2)

    def fail(i):
        if i == 3:
            raise ValueError("chunk 3")
        return i

    with pytest.raises(ValueError, match="chunk 3"):
        backend.parallel_map(fail, [(i,) for i in range(6)])


@pytest.mark.parametrize("value, expected", [("3", 3), ("1", 1)])
def test_thread_count_from_the_environment(monkeypatch, threads, value, expected):
    monkeypatch.setenv("MINISSD_NUM_THREADS", value)
    monkeypatch.setitem(backend._THREADS, "n", None)
    assert backend.num_threads() == expected


def test_bad_thread_count_in_the_environment_is_named(monkeypatch, threads):
    monkeypatch.setenv("MINISSD_NUM_THREADS", "many")
    monkeypatch.setitem(backend._THREADS, "n", None)
    with pytest.raises(ValueError, match="MINISSD_NUM_THREADS='many'"):
        backend.num_threads()
