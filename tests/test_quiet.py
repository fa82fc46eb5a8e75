"""TensorFlow's C++ log lines stay out of a quieted program's output."""

import os
import re
import subprocess
import sys
from pathlib import Path

QUIET = Path(__file__).resolve().parents[1] / "keras_spkd" / "_quiet.py"
CPP_LINE = re.compile(r"^[IWE]\d{4} |absl::InitializeLog", re.M)

# Loads _quiet.py by path, as a program's first lines would (before TensorFlow).
PROGRAM = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("_quiet", {str(QUIET)!r})
q = importlib.util.module_from_spec(spec)
spec.loader.exec_module(q)
assert "tensorflow" not in sys.modules
q.quiet(verbose=VERBOSE)
import tensorflow as tf
tf.constant([1.0]) + 1.0  # first op: devices are set up (CUDA probing on GPU-less machines)
print("still here", file=sys.stderr)
"""


def _stderr(verbose: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM.replace("VERBOSE", str(verbose))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stderr


def test_quiet_drops_tensorflows_cpp_lines_and_verbose_keeps_them():
    quiet = _stderr(verbose=False)
    assert not CPP_LINE.search(quiet), quiet
    assert "still here" in quiet  # other output passes
    loud = _stderr(verbose=True)
    assert CPP_LINE.search(loud), (
        "TensorFlow printed no C++ lines here: the check above proves nothing"
    )


def test_the_filter_keeps_everything_but_cpp_log_lines(capfd):
    sys.path.insert(0, str(QUIET.parent))
    try:
        import _quiet
    finally:
        sys.path.pop(0)
    with _quiet.drop_cpp_log_lines():
        os.write(2, b"I0000 00:00:1795623363.284911    5114 port.cc:153] oneDNN ...\n")
        os.write(2, b"W0000 00:00:1795623363.285177    5114 cudart_stub.cc:31] no CUDA\n")
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called ...\n")
        os.write(2, b"Error: a real message\n")
    assert capfd.readouterr().err == "Error: a real message\n"
