"""Errors a user can cause: the message names the input and the fix; no traceback is shown."""

import errno
import sys
from pathlib import Path


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


def disk_full(error: BaseException, work_dir: Path) -> MnistExpError | None:
    """A full disk as a user's error naming where, or None if `error` is something else. (h5py
    reports it in its message, without an errno.)"""
    if not isinstance(error, OSError):
        return None
    if error.errno != errno.ENOSPC and "No space left on device" not in str(error):
        return None
    where = error.filename or work_dir
    return MnistExpError(
        f"No space left on device writing {where}: free some space there, or point "
        "hydra.run.dir (or the MLflow store) at a disk with room."
    )
