"""The digits examples run as written (on a tiny epoch budget)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, cwd: Path) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--epochs", "2"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_quickstart_prints_three_accuracies_and_draws_the_matrices(tmp_path):
    out = _run("quickstart_digits.py", tmp_path)
    accuracies = re.findall(r"(teacher|student alone|student \+ SP): (\d+\.\d+)%", out)
    assert [name for name, _ in accuracies] == ["teacher", "student alone", "student + SP"]
    assert all(0 <= float(value) <= 100 for _, value in accuracies)
    assert (tmp_path / "quickstart_similarity.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_privileged_example_trains_the_student_on_half_images(tmp_path):
    out = _run("privileged_digits.py", tmp_path)
    assert "teacher (full images)" in out
    assert re.search(r"student \+ SP from the privileged teacher \(top half\): \d+\.\d+%", out)
