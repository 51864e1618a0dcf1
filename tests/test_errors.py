"""minissd.errors: UserError is a ValueError; UserKeyError is also a KeyError with a plain message."""
import pytest

from minissd.errors import UserError, UserKeyError
from minissd.interop.pth import UnsafeCheckpointError
from minissd.nn.backend import DeviceUnavailableError


@pytest.mark.parametrize("error, bases", [
    (UserError, (ValueError,)),
    (UserKeyError, (UserError, ValueError, KeyError)),
    (UnsafeCheckpointError, (UserError, ValueError)),
    (DeviceUnavailableError, (UserError, RuntimeError)),
])
def test_user_errors_keep_the_types_callers_catch(error, bases):
    assert all(issubclass(error, base) for base in bases)


def test_user_key_error_message_is_not_quoted():
    assert str(UserKeyError("w.pth: key 'a' is missing")) == "w.pth: key 'a' is missing"
