"""0.1's flat module names still import for one release, with a DeprecationWarning."""
import importlib
import sys

import pytest

from minissd import _moved


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_old_name_forwards_to_the_new_module(old):
    sys.modules.pop(f"minissd.{old}", None)
    with pytest.warns(DeprecationWarning, match=f"minissd.{old} moved to minissd.{_moved.MOVED[old]}"):
        shim = importlib.import_module(f"minissd.{old}")
    new = importlib.import_module(f"minissd.{_moved.MOVED[old]}")
    public = [n for n in vars(new) if not n.startswith("_")]
    assert public, new
    for name in public:
        assert getattr(shim, name) is getattr(new, name)


def test_old_from_import_works():
    sys.modules.pop("minissd.layers", None)
    with pytest.warns(DeprecationWarning):
        from minissd.layers import Conv2d
    from minissd.nn.layers import Conv2d as new
    assert Conv2d is new


def test_unknown_old_name_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("minissd.no_such_module")
