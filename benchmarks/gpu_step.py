"""Distillation step time on a GPU, with JAX (or PyTorch) and no TensorFlow.

Measures, for WRN-16-2 -> WRN-16-1 at 32x32 and ResNet50V2 -> MobileNetV2 at
224x224 (b = 128 by default), float32 and mixed bfloat16:

- (a) a plain student training step, (b) a teacher forward pass;
- (c) an `SPDistiller` training step: its bound is (a) + (b);
- (d) a `keras.distillation.Distiller` step with the same SP term, on the
  same backend (the term in a list, Keras's default blend).

Every configuration is compiled first (a warm-up step), then all run
round-robin for `--rounds` rounds of `--steps` steps; each step ends in a
host transfer of its logs (`train_on_batch` returns NumPy values), so the
asynchronous dispatch of JAX cannot hide work. Figures: the median and the
best round per configuration, and the ratios c / (a + b) and d / c of each.

Run on a machine with only JAX (or PyTorch), keras and this package:

    KERAS_BACKEND=jax python benchmarks/gpu_step.py --out results.json

`--smoke` runs tiny sizes on any machine (the test suite does that). How to
carry keras's wheels to a lent GPU machine: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import keras_spkd  # noqa: E402
from keras_spkd.models import build_model  # noqa: E402

CASES = {
    "wrn": {"teacher": "wrn-16-2", "student": "wrn-16-1", "size": 32, "classes": 10},
    "apps": {"teacher": "ResNet50V2", "student": "MobileNetV2", "size": 224, "classes": 1000},
}


def _model(name: str, size: int, classes: int, tag: str) -> keras.Model:
    if name.startswith("wrn-"):
        return build_model(name, (size, size, 3), classes, name=f"{tag}_{name}")
    app = getattr(keras.applications, name)
    model = app(
        weights=None, input_shape=(size, size, 3), classes=classes, classifier_activation=None
    )
    model.name = f"{tag}_{name}"  # two MobileNetV2s must not share a name
    return model


def _sce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def build_configurations(case: dict, batch: int, bf16: bool) -> dict:
    """The four step functions of one case, each already compiled."""
    keras.config.set_dtype_policy("mixed_bfloat16" if bf16 else "float32")
    try:
        size, classes = case["size"], case["classes"]
        teacher = _model(case["teacher"], size, classes, "teacher")
        students = {k: _model(case["student"], size, classes, k) for k in ("alone", "sp", "kd")}
        (pair,) = keras_spkd.suggest_layer_pairs(teacher, students["sp"], stages="last")
        s_kd = keras_spkd.suggest_layer_pairs(teacher, students["kd"], stages="last")[0][1]
    finally:
        keras.config.set_dtype_policy("float32")
    alone = students["alone"]
    alone.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=_sce())
    ours = keras_spkd.SPDistiller(teacher, students["sp"], [pair], gamma=3000.0)
    ours.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=_sce())
    theirs = keras.distillation.Distiller(
        teacher,
        students["kd"],
        distillation_losses=[keras_spkd.SimilarityPreservingDistillation(pair[0], s_kd)],
        distillation_loss_weights=[3000.0],
    )
    theirs.compile(optimizer=keras.optimizers.SGD(0.02, momentum=0.9), loss=_sce())
    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, 3), dtype=np.float32)
    y = rng.integers(0, classes, batch).astype("int32")
    return {
        "student_step": lambda: alone.train_on_batch(x, y),
        "teacher_forward": lambda: teacher.predict_on_batch(x),
        "spdistiller_step": lambda: ours.train_on_batch(x, y),
        "keras_distiller_step": lambda: theirs.train_on_batch(x, y),
    }, pair


def measure(configs: dict, steps: int, rounds: int) -> dict:
    for step in configs.values():  # compile
        step()
        step()
    times = {name: [] for name in configs}
    for _ in range(rounds):
        for name, step in configs.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[name].append(1000 * (time.perf_counter() - start) / steps)
    return {
        name: {"median_ms": statistics.median(ms), "best_ms": min(ms), "rounds_ms": ms}
        for name, ms in times.items()
    }


def ratios(m: dict, key: str) -> dict:
    bound = m["student_step"][key] + m["teacher_forward"][key]
    return {
        "spdistiller_over_bound": m["spdistiller_step"][key] / bound,
        "keras_over_spdistiller": m["keras_distiller_step"][key] / m["spdistiller_step"][key],
    }


def run(cases, batch: int, steps: int, rounds: int, smoke: bool = False, out=None) -> dict:
    results = {"backend": keras.backend.backend(), "batch": batch, "cases": {}}
    if results["backend"] == "jax":
        import jax

        results["devices"] = [str(d) for d in jax.devices()]
    elif results["backend"] == "torch":
        import torch

        results["devices"] = [torch.cuda.get_device_name(0)] if torch.cuda.is_available() else []
    for name in cases:
        case = dict(CASES[name])
        if smoke:
            case.update(size=32, classes=10)
        for bf16 in (False, True):
            start = time.perf_counter()
            configs, pair = build_configurations(case, batch, bf16)
            m = measure(configs, steps, rounds)
            label = f"{name}-{'bf16' if bf16 else 'fp32'}"
            results["cases"][label] = {
                "teacher": case["teacher"],
                "student": case["student"],
                "image": case["size"],
                "pair": list(pair),
                "measurements": m,
                "ratios_median": ratios(m, "median_ms"),
                "ratios_best": ratios(m, "best_ms"),
                "seconds": time.perf_counter() - start,
            }
            keras.backend.clear_session()
            if out:  # after each case, so that a run cut short keeps what it measured
                Path(out).write_text(json.dumps(results, indent=2))
            print(table(results).splitlines()[-1], flush=True)
    return results


def table(results: dict) -> str:
    lines = [
        f"backend {results['backend']}, devices {results.get('devices')}, b = {results['batch']}",
        "",
        "| case | (a) student | (b) teacher | (c) SPDistiller | (d) keras | c/(a+b) | d/c |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, case in results["cases"].items():
        m, r = case["measurements"], case["ratios_median"]
        lines.append(
            f"| {label} {case['teacher']}->{case['student']} {case['image']}px "
            f"| {m['student_step']['median_ms']:.1f} | {m['teacher_forward']['median_ms']:.1f} "
            f"| {m['spdistiller_step']['median_ms']:.1f} "
            f"| {m['keras_distiller_step']['median_ms']:.1f} "
            f"| {r['spdistiller_over_bound']:.3f} | {r['keras_over_spdistiller']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="wrn,apps", help="wrn, apps or both (comma-separated)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, any machine")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; expected {sorted(CASES)}")
    if keras.backend.backend() == "tensorflow" and not os.environ.get("GPU_STEP_ALLOW_TF"):
        parser.error("set KERAS_BACKEND=jax (or torch): this benchmark is for machines without TF")
    results = run(cases, args.batch, args.steps, args.rounds, args.smoke, args.out)
    print(table(results), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
