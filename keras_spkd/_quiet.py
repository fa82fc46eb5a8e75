"""Quiet TensorFlow before it loads: no `I0000`/`W0000` lines among a program's output.

`TF_CPP_MIN_LOG_LEVEL` silences TensorFlow's C++ logging once absl's logging
is initialised, but `import tensorflow` prints a few lines before that
(`WARNING: All log messages before absl::InitializeLog() ...`, then `I0000 ...
port.cc ...` and `cudart_stub.cc` lines) whatever the level. `quiet()` sets the
levels and imports TensorFlow with file descriptor 2 captured, dropping those
lines and passing everything else on.

This module imports nothing from keras-spkd or TensorFlow at import time, so
a program can call it first. `import keras_spkd` loads TensorFlow (it
registers its classes with Keras on import), so the package's first lines
call `quiet_if_command_line()`: in the `keras-spkd` program (the console
script, or `python -m keras_spkd.cli`) TensorFlow is quieted before the
package loads it, unless `--verbose` was given; anywhere else nothing changes.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# C++ log lines (glog/absl: severity letter, MMDD, time, thread, file:line]) and
# the two fixed lines TensorFlow prints before absl is initialised.
CPP_LOG_LINE = re.compile(
    r"^(?:[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    # TFLite prints these with printf, past TensorFlow's logging levels:
    r"|INFO: Created TensorFlow Lite .*delegate"
    r"|fully_quantize: \d+, inference_type: )"
)


@contextlib.contextmanager
def drop_cpp_log_lines() -> Iterator[None]:
    """Captures file descriptor 2 and re-emits it without C++ log lines.

    The capture is an anonymous temporary file (deleted on close; no
    directory is created).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                if not CPP_LOG_LINE.match(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def quiet(verbose: bool = False) -> None:
    """Silences TensorFlow's C++ and Python logging below errors, unless `verbose`.

    Call it before anything imports TensorFlow (a program's first lines).
    With `verbose`, nothing is changed, so TensorFlow logs as it would by
    default. Called after TensorFlow was imported it still sets the levels
    (later C++ lines are filtered by TensorFlow itself), but the lines of the
    import are already out.

    Args:
        verbose: Leave TensorFlow's logging as it is. Defaults to `False`.
    """
    if verbose:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # C++: only FATAL is left
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if "tensorflow" not in sys.modules:
        with drop_cpp_log_lines():
            importlib.import_module("tensorflow")
    from absl import logging as absl_logging  # installed with TensorFlow

    absl_logging.set_verbosity(absl_logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def launched_as_command_line(argv: list[str] | None = None) -> bool:
    """Whether this process is the `keras-spkd` program (console script or `-m`).

    Args:
        argv: The interpreter's command line. Defaults to `sys.orig_argv`.
    """
    argv = list(getattr(sys, "orig_argv", sys.argv) if argv is None else argv)
    index = 1
    while index < len(argv):
        item = argv[index]
        index += 2 if item in ("-X", "-W") else 1  # flags that take a value
        if item == "-m":
            return argv[index : index + 1] == ["keras_spkd.cli"]
        if item.startswith("-m"):
            return item == "-mkeras_spkd.cli"
        if not item.startswith("-"):  # the script (or -c's code): the interpreter's own flags end
            return os.path.basename(item) in ("keras-spkd", "keras-spkd.exe")
        if item == "-c":
            return False
    return False


def quiet_if_command_line() -> None:
    """`quiet()` for the `keras-spkd` program (kept loud by its `--verbose`); else nothing."""
    if (
        launched_as_command_line()
        and "tensorflow" not in sys.modules
        and importlib.util.find_spec("tensorflow") is not None  # else keras_spkd._tf explains
    ):
        quiet(verbose="--verbose" in getattr(sys, "orig_argv", sys.argv))
