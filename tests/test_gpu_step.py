"""benchmarks/gpu_step.py runs where only JAX (or PyTorch) is installed (tiny sizes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    keras.backend.backend() == "tensorflow", reason="the GPU benchmark is for JAX and PyTorch"
)
def test_the_gpu_benchmark_measures_every_configuration(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_step.py"),
            "--smoke",
            "--cases",
            "wrn",
            "--batch",
            "8",
            "--steps",
            "1",
            "--rounds",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=os.environ.copy(),
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["backend"] == keras.backend.backend()
    assert set(results["cases"]) == {"wrn-fp32", "wrn-bf16"}
    for case in results["cases"].values():
        assert case["pair"] == ["group3", "group3"]
        assert set(case["measurements"]) == {
            "student_step",
            "teacher_forward",
            "spdistiller_step",
            "keras_distiller_step",
        }
        assert all(len(m["rounds_ms"]) == 2 for m in case["measurements"].values())
        assert case["ratios_median"]["spdistiller_over_bound"] > 0
    assert "| wrn-bf16 wrn-16-2->wrn-16-1 32px |" in done.stdout
