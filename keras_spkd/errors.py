"""The one family of errors a user can fix: bad settings, missing data, busy run directories.

The command line prints these in one line (exit code 2); anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class SPKDError(Exception):
    """Base of every error the user can fix by changing the input."""


class ConfigError(SPKDError, ValueError):
    """A setting is out of range, of the wrong type, unknown or inconsistent."""


class DataError(SPKDError, ValueError):
    """Data cannot be had or read as asked (not prepared, not found, not valid)."""


class RunDirectoryError(SPKDError):
    """The run directory is in use, holds another run, or cannot be written."""


class NonFiniteLossError(SPKDError, RuntimeError):
    """Training produced a NaN or infinite loss; nothing was exported."""


@contextlib.contextmanager
def core_errors(prefix: str = "") -> Iterator[None]:
    """Translates the core's `ValueError` / `TypeError` on user settings into `ConfigError`.

    The one place where errors of the library's core (distiller, terms,
    features, pairs, zoo, strategies) become the workflow's error family:
    the workflow wraps each call into the core made with settings the user
    gave. Errors already in the family pass unchanged; anything else keeps
    its traceback.

    Args:
        prefix: Put before the core's message (e.g. `"pairs 'auto': "`).
    """
    try:
        yield
    except SPKDError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{prefix}{error}") from error
