"""What the dead-teacher-layer check costs per JAX step on a GPU (a benchmark, not a test).

Measures (a) the student's step, (b) the teacher's forward pass and (c) the
`SPDistiller` step of WRN-16-2 -> WRN-16-1 (32x32, b = 128, float32 and mixed
bfloat16) twice each: as shipped, and with `_backend.warn_if` patched out (no
dead-teacher-layer check at all). Before 0.3.0 shipped, the check was a
`jax.debug.callback` in the compiled step and cost 1.5-2 ms per step on an
H200; on accelerators it is now read after the step (`DEFER_JAX_CHECKS`), and
the two variants should match. Variants alternate, so machine noise hits them
alike. Run where gpu_step.py runs (benchmarks/RESULTS.md):

    KERAS_BACKEND=jax python benchmarks/gpu_check_cost.py --out $OUT/check_cost.json
"""

import argparse
import json
import sys
from pathlib import Path

import keras

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_step  # noqa: E402

from keras_spkd import _backend  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    shipped, results = _backend.warn_if, {}
    for variant in ("check", "nocheck", "check", "nocheck"):
        _backend.warn_if = shipped if variant == "check" else (lambda *a, **k: None)
        for bf16 in (False, True):
            configs, _ = gpu_step.build_configurations(gpu_step.CASES["wrn"], args.batch, bf16)
            configs.pop("keras_distiller_step")
            measured = gpu_step.measure(configs, args.steps, args.rounds)
            key = f"{variant}-{'bf16' if bf16 else 'fp32'}"
            row = {name: round(m["median_ms"], 2) for name, m in measured.items()}
            results.setdefault(key, []).append(row)
            bound = row["student_step"] + row["teacher_forward"]
            print(key, row, f"c/(a+b) = {row['spdistiller_step'] / bound:.2f}", flush=True)
            keras.backend.clear_session()
    _backend.warn_if = shipped
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
