"""Old module names, kept working for one release (0.1 -> 0.2) with a DeprecationWarning.

minissd 0.1 had all its modules in one folder (``minissd.layers``,
``minissd.priors``, ...). They now live in folders that follow the chapters
(``minissd.nn.layers``, ``minissd.ssd.priors``, ...). ``import minissd.layers``
still works: a finder on ``sys.meta_path`` answers the old name with a small
module that forwards every attribute to the new one.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

MOVED = {
    "backend": "nn.backend", "module": "nn.module", "layers": "nn.layers",
    "gradcheck": "nn.gradcheck", "optim": "nn.optim",
    "config": "ssd.config", "vgg": "ssd.architecture", "boxes": "ssd.boxes",
    "priors": "ssd.priors", "matching": "ssd.matching", "loss": "ssd.loss",
    "model": "ssd.model", "postprocess": "ssd.postprocess", "summary": "ssd.summary",
    "data": "datasets.voc", "augment": "datasets.augment", "loader": "datasets.loader",
    "shapes": "datasets.synthetic",
    "metrics": "evaluation.metrics", "inference": "evaluation.inference",
    "pth": "interop.pth", "weights": "interop.weights",
}


class _OldNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``minissd.<old name>`` and loads a module forwarding to its new place."""

    def find_spec(self, fullname, path=None, target=None):
        old = fullname.removeprefix("minissd.")
        if fullname.startswith("minissd.") and old in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None                                           # a fresh, empty module

    def exec_module(self, module: types.ModuleType):
        new_name = "minissd." + MOVED[module.__name__.removeprefix("minissd.")]
        warnings.warn(f"{module.__name__} moved to {new_name}; the old name goes in minissd 0.2",
                      DeprecationWarning, stacklevel=2)
        new = importlib.import_module(new_name)
        module.__doc__ = f"Moved to :mod:`{new_name}`."
        module.__getattr__ = lambda name: getattr(new, name)  # PEP 562: forward every name
        module.__dir__ = lambda: dir(new)


def install() -> None:
    if not any(isinstance(f, _OldNames) for f in sys.meta_path):
        sys.meta_path.append(_OldNames())
