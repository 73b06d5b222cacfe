"""Errors a user can cause: the message names the input and the fix; no traceback is shown."""

import sys


class MnistExpError(Exception):
    """Base class for user-facing errors; the CLI prints the message and exits with status 2."""


class ConfigError(MnistExpError):
    """A config value is of the right type but not allowed."""


class DataError(MnistExpError):
    """MNIST could not be obtained, or a file failed verification."""


class DivergedError(MnistExpError):
    """The training loss became NaN or infinite."""


def exit_with(error: MnistExpError) -> None:
    """Print a user error in one or two lines, without a traceback, and exit with status 2."""
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2)
