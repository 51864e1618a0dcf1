"""minissd's thread pool: order, nesting, errors, the thread count."""
import pytest

from minissd.nn import threads


# --------------------------------------------------------------------------- #
# CPU threads
# --------------------------------------------------------------------------- #
@pytest.fixture
def saved_threads():
    """Restore minissd's thread count after a test changes it."""
    saved = dict(threads._THREADS)
    yield
    threads._THREADS.update(saved)


def test_set_num_threads_returns_the_previous_count(saved_threads):
    threads.set_num_threads(3)
    assert threads.set_num_threads(1) == 3
    assert threads.num_threads() == 1


def test_set_num_threads_rejects_zero(saved_threads):
    with pytest.raises(ValueError, match="at least 1"):
        threads.set_num_threads(0)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_parallel_map_keeps_the_order(saved_threads, n):
    threads.set_num_threads(n)
    assert threads.parallel_map(lambda a, b: a * 10 + b, [(i, i + 1) for i in range(9)]) == \
        [i * 10 + i + 1 for i in range(9)]
    assert threads.parallel_map(lambda a: a, []) == []


def test_parallel_map_inside_a_task_runs_in_that_thread(saved_threads):
    import threading
    threads.set_num_threads(2)

    def outer(i):
        me = threading.get_ident()
        assert threads.in_parallel_task()
        inner = threads.parallel_map(lambda j: threading.get_ident(), [(j,) for j in range(4)])
        return all(t == me for t in inner)                    # no nesting: no deadlock either

    assert all(threads.parallel_map(outer, [(i,) for i in range(4)]))
    assert not threads.in_parallel_task()


def test_parallel_map_passes_errors_on(saved_threads):
    threads.set_num_threads(2)

    def fail(i):
        if i == 3:
            raise ValueError("chunk 3")
        return i

    with pytest.raises(ValueError, match="chunk 3"):
        threads.parallel_map(fail, [(i,) for i in range(6)])


@pytest.mark.parametrize("value, expected", [("3", 3), ("1", 1)])
def test_thread_count_from_the_environment(monkeypatch, saved_threads, value, expected):
    monkeypatch.setenv("MINISSD_NUM_THREADS", value)
    monkeypatch.setitem(threads._THREADS, "n", None)
    assert threads.num_threads() == expected


def test_bad_thread_count_in_the_environment_is_named(monkeypatch, saved_threads):
    monkeypatch.setenv("MINISSD_NUM_THREADS", "many")
    monkeypatch.setitem(threads._THREADS, "n", None)
    with pytest.raises(ValueError, match="MINISSD_NUM_THREADS='many'"):
        threads.num_threads()
