"""Module base: parameter names, state dicts and .npz files, modes, devices, dtypes."""
import os
import zipfile

import numpy as np
import pytest

from minissd.nn import backend
from minissd.nn.backend import to_numpy
from minissd.nn.layers import Conv2d, L2Norm, MaxPool2d, ReLU, Sequential
from minissd.nn.module import Module, NotNpzError, load_npz, save_npz


def device_of(xp):
    return "cpu" if xp is np else "cuda"


class Net(Module):
    """A little tree: a Sequential, a layer, and a nested module."""

    def __init__(self, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.features = Sequential(Conv2d(3, 4, 3, padding=1, rng=rng), ReLU(),
                                   MaxPool2d(2, 2), Conv2d(4, 4, 1, bias=False, rng=rng))
        self.norm = L2Norm(4)
        self.head = Sequential(Conv2d(4, 2, 3, padding=1, rng=rng))

    def forward(self, x):
        return self.head.forward(self.norm.forward(self.features.forward(x)))

    def backward(self, dy):
        return self.features.backward(self.norm.backward(self.head.backward(dy)))


NAMES = ["features.0.weight", "features.0.bias", "features.3.weight", "norm.weight",
         "head.0.weight", "head.0.bias"]


def test_named_parameters_are_dotted_and_in_assignment_order():
    net = Net()
    assert [name for name, _, _ in net.named_parameters()] == NAMES
    assert list(net.state_dict()) == NAMES
    assert [name for name, _, _ in Net(seed=5).named_parameters()] == NAMES
    assert net.num_parameters() == 3 * 4 * 9 + 4 + 16 + 4 + 4 * 2 * 9 + 2


def test_named_parameters_give_owner_and_key_to_assign_through():
    net = Net()
    for name, mod, key in net.named_parameters():
        mod.params[key] = mod.params[key] + 1                   # what an optimiser does
    for (name, a), (_, b) in zip(Net().state_dict().items(), net.state_dict().items()):
        np.testing.assert_allclose(b, a + 1, err_msg=name)


def test_save_load_round_trip(xp, tmp_path):
    src, dst = Net(seed=1).to(device_of(xp)), Net(seed=2).to(device_of(xp))
    path = tmp_path / "ckpt" / "net.npz"                       # the folder is created
    src.save(path)
    with np.load(path, allow_pickle=False) as z:                # plain arrays, no pickle
        assert sorted(z.files) == sorted(NAMES)
    dst.load(path)
    for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert dst.device == device_of(xp)
    assert os.listdir(path.parent) == ["net.npz"]               # no temp file left behind


def test_load_keeps_the_parameters_dtype(tmp_path):
    src = Net(seed=1).astype(np.float64)
    src.save(tmp_path / "net.npz")
    dst = Net().load(str(tmp_path / "net.npz"))                  # float32 model
    assert all(p.dtype == np.float32 for p in dst.parameters())
    np.testing.assert_allclose(dst.state_dict()["norm.weight"], src.state_dict()["norm.weight"])


# (change to the state dict, error, pattern the message must match)
BAD_STATES = [
    pytest.param(lambda s: s.pop("head.0.bias"), KeyError, r"missing 1 key\(s\): head\.0\.bias",
                 id="missing"),
    pytest.param(lambda s: s.__setitem__("head.1.weight", np.zeros(2)), KeyError,
                 r"unexpected 1 key\(s\): head\.1\.weight", id="unexpected"),
    pytest.param(lambda s: s.__setitem__("features.0.weight", np.zeros((4, 3, 5, 5))), ValueError,
                 r"'features\.0\.weight' has shape \(4, 3, 5, 5\), the model expects \(4, 3, 3, 3\)",
                 id="wrong-shape"),
]


@pytest.mark.parametrize("change, error, message", BAD_STATES)
def test_load_state_dict_errors_name_the_key(change, error, message):
    net = Net()
    state = net.state_dict()
    change(state)
    before = net.state_dict()
    with pytest.raises(error, match=message):
        net.load_state_dict(state)
    for name, a in net.state_dict().items():                    # nothing half-loaded
        np.testing.assert_array_equal(a, before[name])


def test_load_state_dict_not_strict_ignores_unexpected_keys():
    net = Net()
    state = Net(seed=3).state_dict()
    state["extra.weight"] = np.zeros(3)
    net.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(net.state_dict()["head.0.weight"], state["head.0.weight"])


# (how to spoil the file)
CORRUPT_FILES = [
    pytest.param(lambda p: p.write_bytes(b"not a checkpoint at all" * 4), id="garbage"),
    pytest.param(lambda p: p.write_bytes(b""), id="empty"),
    pytest.param(lambda p: p.write_bytes(p.read_bytes()[:200]), id="truncated"),
    pytest.param(lambda p: np.save(open(p, "wb"), np.zeros(3)), id="a-bare-npy"),
    pytest.param(lambda p: np.savez(p, a=np.array([{"x": 1}], dtype=object)), id="pickled-object"),
]


@pytest.mark.parametrize("spoil", CORRUPT_FILES)
def test_loading_a_corrupt_file_names_the_path(tmp_path, spoil):
    path = tmp_path / "net.npz"
    Net().save(path)
    spoil(path)
    with pytest.raises(NotNpzError, match=f"{path}: not a readable .npz") as e:
        Net().load(path)
    assert "allow_pickle" not in str(e.value)          # numpy's hint to unpickle is never passed on


def test_loading_a_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        Net().load(tmp_path / "nowhere.npz")


def test_save_npz_load_npz_keep_names_and_order(tmp_path):
    arrays = {"b.x": np.arange(3), "a.y": np.ones((2, 2), np.float32)}
    save_npz(tmp_path / "a.npz", arrays)
    back = load_npz(tmp_path / "a.npz")
    assert list(back) == ["b.x", "a.y"]
    assert back["a.y"].dtype == np.float32


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")   # "Exception ignored"
def test_save_npz_interrupted_inside_the_zip_keeps_the_old_file_and_leaves_nothing(tmp_path, monkeypatch):
    """A Ctrl-C while numpy's zip opens a member (the half-made handle kept alive, as the
    traceback keeps it): the old file stays, no temporary file is left, and the abandoned zip
    closes quietly when freed (it sits on save_npz's buffer, not on a closed file)."""
    save_npz(tmp_path / "a.npz", {"w": np.arange(4)})
    open_to_write = zipfile.ZipFile._open_to_write

    def interrupted(self, zinfo, force_zip64=False):
        raise KeyboardInterrupt(open_to_write(self, zinfo, force_zip64))

    monkeypatch.setattr(zipfile.ZipFile, "_open_to_write", interrupted)
    with pytest.raises(ValueError, match="open writing handle") as caught:   # numpy's zip.close()
        save_npz(tmp_path / "a.npz", {"w": np.zeros(4)})
    assert isinstance(caught.value.__context__, KeyboardInterrupt)
    del caught
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["a.npz"]
    np.testing.assert_array_equal(load_npz(tmp_path / "a.npz")["w"], np.arange(4))


def test_assigning_a_parameter_is_honoured_by_the_next_forward(xp):
    conv = Conv2d(2, 3, 3, padding=1).to(device_of(xp))
    x = xp.ones((1, 2, 4, 4), dtype=xp.float32)
    conv.forward(x)
    conv.params["weight"] = xp.zeros((3, 2, 3, 3), dtype=xp.float32)
    conv.params["bias"] = xp.asarray([1.0, 2.0, 3.0], dtype=xp.float32)
    y = to_numpy(conv.forward(x))
    np.testing.assert_array_equal(y, np.broadcast_to(np.array([1.0, 2.0, 3.0])[:, None, None], (1, 3, 4, 4)))


def test_backward_before_forward_is_a_runtime_error(xp):
    net = Net().to(device_of(xp))
    with pytest.raises(RuntimeError, match="Conv2d.backward called before forward"):
        net.backward(xp.zeros((1, 2, 2, 2), dtype=xp.float32))


def test_eval_drops_the_cache_and_forward_keeps_none(xp):
    net = Net().to(device_of(xp))
    x = xp.ones((1, 3, 4, 4), dtype=xp.float32)
    y = net.forward(x)
    net.backward(xp.ones_like(y))                               # training mode: works
    net.forward(x)
    net.eval()
    assert all(getattr(m, "_cache", None) is None for _, m in net.named_modules())
    assert not any(m.training for _, m in net.named_modules())
    y_eval = net.forward(x)                                     # same numbers, nothing kept
    np.testing.assert_array_equal(to_numpy(y_eval), to_numpy(y))
    with pytest.raises(RuntimeError, match="before forward"):
        net.backward(xp.ones_like(y))
    net.train()
    assert all(m.training for _, m in net.named_modules())


def test_to_cpu_and_astype():
    net = Net().to("cpu")
    assert net.device == "cpu"
    assert all(isinstance(p, np.ndarray) for p in net.parameters())
    net.astype(np.float64)
    for _, mod, key in net.named_parameters():
        assert mod.params[key].dtype == np.float64 and mod.grads[key].dtype == np.float64
    y = net.forward(np.ones((1, 3, 4, 4)))
    assert y.dtype == np.float64


@pytest.mark.skipif(backend.cuda_available(), reason="a GPU is present")
def test_to_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="device 'cuda' was asked for"):
        Net().to("cuda")


def test_to_an_unknown_device_is_named():
    with pytest.raises(ValueError, match="'gpu'"):
        Net().to("gpu")


def test_zero_grad(xp):
    net = Net().to(device_of(xp))
    y = net.forward(xp.ones((1, 3, 4, 4), dtype=xp.float32))
    net.backward(xp.ones_like(y))
    net.zero_grad()
    for _, mod, key in net.named_parameters():
        assert float(abs(mod.grads[key]).max()) == 0.0
        assert mod.grads[key].shape == mod.params[key].shape


def test_setting_a_child_to_a_non_module_removes_it():
    net = Net()
    net.head = None
    assert [n for n, _ in net.named_children()] == ["features", "norm"]


def test_state_dict_is_a_copy():
    net = Net()
    net.state_dict()["norm.weight"][:] = 0
    assert float(net.norm.params["weight"].min()) == 20.0


def test_corrupt_zip_member_is_a_value_error(tmp_path):
    path = tmp_path / "net.npz"
    Net().save(path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.infolist()[0]
    data[info.header_offset + 30 + len(info.filename) + 100] ^= 0xFF   # inside the first array
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=str(path)):
        Net().load(path)
