"""The module base: parameters, gradients, train/eval, devices and state dicts.

Every layer in minissd is a :class:`Module` with two ordered dicts of the same
keys, ``params`` and ``grads``, and a pair of methods::

    y  = layer.forward(x)     # stores what backward needs in a cache
    dx = layer.backward(dy)   # fills layer.grads and returns dL/dx

Modules assigned as attributes (``self.conv1 = Conv2d(...)``) become children,
in assignment order, so ``model.state_dict()`` has stable dotted names such as
``base.conv1_1.weight`` — the order never depends on a ``set``.

``backward`` *overwrites* ``grads`` (each layer runs once per forward in SSD),
so there is no ``zero_grad`` to forget.
"""
from __future__ import annotations

import io
import os
import tempfile
import zipfile
from collections import OrderedDict
from typing import Iterator

import numpy as np

from minissd.errors import UserError, UserKeyError
from minissd.nn import backend


class Module:
    """Base class: holds ``params``/``grads`` and child modules."""

    def __init__(self):
        object.__setattr__(self, "_modules", OrderedDict())
        self.params: OrderedDict = OrderedDict()
        self.grads: OrderedDict = OrderedDict()
        self.buffers: OrderedDict = OrderedDict()   # state that is saved but not trained
        self.training = True

    # --- children ---------------------------------------------------------
    def __setattr__(self, name, value):
        if isinstance(value, Module):
            self._modules[name] = value
        elif name in getattr(self, "_modules", ()):
            del self._modules[name]
        object.__setattr__(self, name, value)

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        yield from self._modules.items()

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """This module and all below it, depth first, with dotted names."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def __call__(self, *args):
        return self.forward(*args)

    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, *args):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    # --- parameters -------------------------------------------------------
    def named_parameters(self) -> Iterator[tuple[str, "Module", str]]:
        """Yield ``(dotted_name, owning_module, key)`` for every parameter.

        The owner and key let an optimiser *assign* ``owner.params[key]``,
        which the next forward honours.
        """
        for mod_name, mod in self.named_modules():
            for key in mod.params:
                yield (f"{mod_name}.{key}" if mod_name else key), mod, key

    def named_buffers(self) -> Iterator[tuple[str, "Module", str]]:
        """Yield ``(dotted_name, owning_module, key)`` for every buffer (e.g. running means)."""
        for mod_name, mod in self.named_modules():
            for key in mod.buffers:
                yield (f"{mod_name}.{key}" if mod_name else key), mod, key

    def _named_state(self):
        """(dotted name, the dict holding it, key): each module's parameters, then its buffers."""
        for mod_name, mod in self.named_modules():
            for store in (mod.params, mod.buffers):
                for key in store:
                    yield (f"{mod_name}.{key}" if mod_name else key), store, key

    def parameters(self) -> Iterator:
        for _, mod, key in self.named_parameters():
            yield mod.params[key]

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    def zero_grad(self):
        for _, mod, key in self.named_parameters():
            mod.grads[key] = mod.grads[key] * 0

    # --- modes, devices, dtypes --------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Training mode (forward caches what backward needs) or, with False, eval mode."""
        for _, mod in self.named_modules():
            mod.training = mode
            if not mode and getattr(mod, "_cache", None) is not None:
                mod._cache = None                    # eval: free the activations kept for backward
        return self

    def eval(self) -> "Module":
        """Inference mode: forward keeps no cache, and the caches held now are dropped."""
        return self.train(False)

    def to(self, device: str) -> "Module":
        """Move every parameter and gradient to 'cpu' (NumPy) or 'cuda' (CuPy), in place."""
        backend.check_device(device)
        for _, mod, key in self.named_parameters():
            mod.params[key] = backend.to_device(mod.params[key], device)
            mod.grads[key] = backend.to_device(mod.grads[key], device)
        for _, mod, key in self.named_buffers():
            mod.buffers[key] = backend.to_device(mod.buffers[key], device)
        return self

    def astype(self, dtype) -> "Module":
        """Cast parameters and gradients (float64 for gradient checks), in place."""
        for _, mod, key in self.named_parameters():
            mod.params[key] = mod.params[key].astype(dtype)
            mod.grads[key] = mod.grads[key].astype(dtype)
        for _, mod, key in self.named_buffers():
            mod.buffers[key] = mod.buffers[key].astype(dtype)
        return self

    @property
    def device(self) -> str:
        for p in self.parameters():
            return backend.device_of(p)
        return "cpu"

    # --- state dicts --------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Dotted name -> NumPy copy of each parameter and buffer."""
        return OrderedDict((name, backend.to_numpy(store[key]).copy())
                           for name, store, key in self._named_state())

    def load_state_dict(self, state: dict, strict: bool = True, source: str = "state dict"):
        """Copy arrays into the parameters and buffers, keeping each one's device and dtype.

        Raises ``KeyError`` naming missing (and, if ``strict``, unexpected) keys,
        and ``ValueError`` naming a key whose shape differs.
        """
        own = list(self._named_state())
        names = {name for name, _, _ in own}
        missing = [n for n, _, _ in own if n not in state]
        unexpected = [k for k in state if k not in names]
        if missing:
            raise UserKeyError(f"{source}: missing {len(missing)} key(s): {', '.join(missing[:8])}"
                           + (" ..." if len(missing) > 8 else ""))
        if strict and unexpected:
            raise UserKeyError(f"{source}: unexpected {len(unexpected)} key(s): "
                           f"{', '.join(unexpected[:8])}" + (" ..." if len(unexpected) > 8 else ""))
        for name, store, key in own:
            old = store[key]
            new = state[name]
            if tuple(new.shape) != tuple(old.shape):
                raise UserError(f"{source}: key {name!r} has shape {tuple(new.shape)}, "
                                f"the model expects {tuple(old.shape)}")
        for name, store, key in own:
            old = store[key]
            xp = backend.get_array_module(old)
            store[key] = xp.asarray(backend.to_numpy(state[name]), dtype=old.dtype).copy()
        return self

    def save(self, path: str):
        """Write the state dict as ``.npz`` (no pickle), atomically."""
        save_npz(path, self.state_dict())

    def load(self, path: str, strict: bool = True):
        return self.load_state_dict(load_npz(path), strict=strict, source=str(path))


def save_npz(path, arrays: dict):
    """Save a dict of arrays to ``path`` atomically: write a temp file, then rename.

    The .npz is built in memory first, then written in one go: a Ctrl-C inside numpy's zip
    writing then leaves its half-open zip on a buffer that stays open, which it can still close
    when it is freed, instead of on a file this function has closed (Python would then print
    "Exception ignored ... seek of closed file" after minissd's "interrupted")."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **{k: backend.to_numpy(v) for k, v in arrays.items()})
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp.npz")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)      # mkstemp made it private; a checkpoint is not
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class NotNpzError(UserError):
    """A file that is not a ``.npz`` of plain arrays; ``reason`` says what it is instead."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: not a readable .npz of arrays ({reason})")
        self.path, self.reason = path, reason


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")      # a zip with members, an empty zip


def load_npz(path) -> "OrderedDict[str, np.ndarray]":
    """Read a ``.npz`` written by :func:`save_npz`; anything else (pickles included) is refused.

    Raises ``FileNotFoundError`` for a missing file and :class:`NotNpzError` (a
    ``ValueError``) naming the file and what it is instead: never numpy's hint to
    allow pickles.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    if os.path.isdir(path):
        raise NotNpzError(path, "it is a folder")
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:4] not in _ZIP_MAGIC:
        what = ("a single .npy array, not named arrays" if head == b"\x93NUMPY" else
                "a pickle, which minissd never loads" if head[:1] == b"\x80" else
                "empty" if not head else "not a zip archive")
        raise NotNpzError(path, what)
    try:
        with np.load(path, allow_pickle=False) as z:
            other = [n for n in z.zip.namelist() if not n.endswith(".npy")]
            if other:
                raise NotNpzError(path, f"member {other[0]!r} is not a .npy array")
            arrays = OrderedDict()
            for k in z.files:
                try:
                    arrays[k] = z[k]
                except ValueError as e:
                    if "allow_pickle" in str(e):
                        raise NotNpzError(path, f"array {k!r} holds Python objects (a pickle), "
                                                "which minissd never loads") from None
                    raise
            return arrays
    except NotNpzError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise NotNpzError(path, str(e)) from None
