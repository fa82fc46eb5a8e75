"""The command line's own output holds no TensorFlow C++ log lines (unless --verbose)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPP = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)", re.M)


def _run(*args):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "keras_spkd.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_command_line_is_recognised_before_the_package_loads_tensorflow():
    sys.path.insert(0, str(ROOT / "keras_spkd"))
    try:
        import _quiet
    finally:
        sys.path.pop(0)
    python = sys.executable
    assert _quiet.launched_as_command_line([python, "-m", "keras_spkd.cli", "distill"])
    assert _quiet.launched_as_command_line([python, "-mkeras_spkd.cli"])
    assert _quiet.launched_as_command_line([python, "-X", "utf8", "/venv/bin/keras-spkd", "x"])
    assert not _quiet.launched_as_command_line([python, "-c", "import keras_spkd"])
    assert not _quiet.launched_as_command_line([python, "-m", "pytest", "keras-spkd"])
    assert not _quiet.launched_as_command_line([python, "train.py", "keras-spkd"])


def test_cli_errors_and_work_print_no_cpp_log_lines():
    result = _run("distill", "--gamma", "nan")  # loads TensorFlow, fails in validation
    assert result.returncode == 2
    assert not CPP.search(result.stderr), result.stderr
    assert result.stderr.strip() == "keras-spkd: error: gamma must be finite; received nan."
    loud = _run("--verbose", "evaluate", "missing.keras")
    assert loud.returncode == 2 and CPP.search(loud.stderr)  # --verbose brings them back
