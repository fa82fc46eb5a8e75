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


def test_importing_the_package_loads_no_tensorflow():
    code = "import sys, keras_spkd; print('tensorflow' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.stdout.strip() == "False"


def test_cli_errors_and_work_print_no_cpp_log_lines():
    result = _run("distill", "--gamma", "nan")  # loads TensorFlow, fails in validation
    assert result.returncode == 2
    assert not CPP.search(result.stderr), result.stderr
    assert result.stderr.strip() == "keras-spkd: error: gamma must be finite; received nan."
    loud = _run("--verbose", "evaluate", "missing.keras")
    assert loud.returncode == 2 and CPP.search(loud.stderr)  # --verbose brings them back
