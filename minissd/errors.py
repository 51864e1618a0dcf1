"""The one exception class for mistakes a user can fix.

``UserError`` is raised where minissd checks what it was given -- a data folder
and its annotations, a config name, a class list, a device, a checkpoint or
weights file, an image, a command-line value -- and the message names the
argument, file or field that is wrong. The ``minissd`` command prints it as one
line and exits with code 2 (see :mod:`minissd.cli`); any other exception is a
bug and keeps its traceback.

It is a ``ValueError``, so code that caught the ValueError these checks raised
before keeps working.
"""


class UserError(ValueError):
    """A mistake in what the user gave (an argument, a file, a setting); the message names it."""


class UserKeyError(UserError, KeyError):
    """A UserError about a missing or unexpected key, still a KeyError for code that catches one."""
    __str__ = BaseException.__str__          # the message itself, not KeyError's repr of it
