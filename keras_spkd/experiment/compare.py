"""`run_compare`: the paper's comparison (alone, KD, AT, SP and their sums) over seeds.

One teacher (the config's seed) serves every seed. Within a seed every method
starts from the same student weights and is fed the same data order; both
are fingerprinted (sha256 of the weights' bytes, of the first epoch's label
sequence) and recorded beside each result, so equal starts can be checked.
Every run is its own resumable phase: a killed comparison continues where it
stopped, and finished runs are never trained again.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import keras
import tensorflow as tf

from keras_spkd.errors import ConfigError
from keras_spkd.experiment.config import ExperimentConfig
from keras_spkd.experiment.rundir import RunDirectory, check_out_path
from keras_spkd.experiment.session import (
    load_data,
    prepare_cache,
    resolve_pairs,
    strategy_for,
    teacher_record,
)
from keras_spkd.experiment.teacher import get_teacher
from keras_spkd.experiment.training import (
    accuracy,
    build,
    finish_phase,
    read_result,
    run_phase,
    trainable,
    weights_fingerprint,
)
from keras_spkd.sources import model_label
from keras_spkd.summary import atomic_write_text, write_summary

logger = logging.getLogger("keras_spkd")
TERMS = ("sp", "kd", "at")
DEFAULT_METHODS = ("alone", "kd", "at", "sp", "sp+kd")
PRIVILEGED_METHODS = ("alone", "kd", "sp", "sp+kd")  # AT needs equal resolutions


@dataclass
class CompareResult:
    """What `run_compare` measured.

    Attributes:
        rows: One dict per (seed, method) run: accuracy, fingerprints, weights.
        methods: Per method: `mean`, `sd`, `min`, `max`, and against "alone"
            (paired by seed) `diff_mean`, `diff_low`, `diff_high` (95% t interval).
        table: The markdown table (also in `out/results.md`).
        out: The run directory.
    """

    rows: list[dict]
    methods: dict[str, dict] = field(default_factory=dict)
    table: str = ""
    out: str = ""


def parse_methods(methods) -> list[str]:
    """`"alone,kd,sp+kd"` or a sequence -> validated method names."""
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = list(methods or [])
    if not methods:
        raise ConfigError("methods lists no method; e.g. alone,kd,sp,sp+kd.")
    for method in methods:
        if not isinstance(method, str) or (
            method != "alone" and not set(method.split("+")) <= set(TERMS)
        ):
            raise ConfigError(
                f"Unknown method {method!r} in methods; use 'alone' or '+'-joined terms "
                f"of {TERMS}, e.g. alone,kd,at,sp,sp+kd."
            )
    if len(set(methods)) != len(methods):
        raise ConfigError(f"methods lists a method twice: {methods}.")
    return methods


def degrade(images):
    """The privileged setting's student view: the top half of every image."""
    return images[:, : images.shape[1] // 2]


def _model(method: str, teacher, student, config: ExperimentConfig, pairs):
    from keras_spkd.distiller import SPDistiller

    if method == "alone":
        return trainable(student)
    terms = set(method.split("+"))
    return SPDistiller(
        teacher,
        student,
        pairs,
        gamma=config.gamma if "sp" in terms else 0.0,
        kd_weight=config.kd_weight if "kd" in terms else 0.0,
        temperature=config.temperature,
        at_weight=config.at_weight if "at" in terms else 0.0,
        at_pairs=config.at_pairs if config.at_pairs not in (None, "auto") else None,
        cross_replica=True,
    )


def _spread(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_interval(differences: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its two-sided t interval (NaN-free: n = 1 gives ±0)."""
    mean, sd = _spread(differences)
    n = len(differences)
    if n < 2:
        return mean, mean, mean
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def summarise(rows: list[dict], methods: list[str]) -> dict[str, dict]:
    """Per-method mean ± sd and the paired difference to "alone" (by seed)."""
    out = {}
    alone = {r["seed"]: r["test_accuracy"] for r in rows if r["method"] == "alone"}
    for method in methods:
        accs = [r["test_accuracy"] for r in rows if r["method"] == method]
        if not accs:
            continue
        mean, sd = _spread(accs)
        stats = {"mean": mean, "sd": sd, "min": min(accs), "max": max(accs), "runs": len(accs)}
        stats["fit_seconds"] = statistics.mean(
            r["fit_seconds"] for r in rows if r["method"] == method
        )
        paired = [
            r["test_accuracy"] - alone[r["seed"]]
            for r in rows
            if r["method"] == method and r["seed"] in alone
        ]
        if method != "alone" and paired:
            d_mean, low, high = paired_interval(paired)
            stats.update(diff_mean=d_mean, diff_low=low, diff_high=high)
        out[method] = stats
    return out


def _table(config, methods, stats, seeds, privileged, teacher_accuracy) -> str:
    setting = "privileged (student sees the top half of each image)" if privileged else "standard"
    pairs = ",".join(f"{t}:{s}" for t, s in config.pairs)
    lines = [
        f"Test accuracy on {config.dataset}, {setting}; {seeds} seeds, {config.epochs} epochs; "
        f"teacher {model_label(config.to_dict(), 'teacher')} {100 * teacher_accuracy:.2f}% (one "
        f"teacher, seed {config.seed}, shared by all seeds), student "
        f"{model_label(config.to_dict(), 'student')}; pairs {pairs}, "
        f"gamma {config.gamma_label}, KD weight {config.kd_weight:g} "
        f"(T = {config.temperature:g}), AT weight {config.at_weight:g}.",
        "",
        "| method | test accuracy (mean ± sd) | vs alone (paired mean [95% CI]) | min | max "
        "| fit s / run |",
        "|---|---|---|---|---|---|",
    ]
    for method in methods:
        if method not in stats:
            continue
        s = stats[method]
        diff = (
            f"{100 * s['diff_mean']:+.2f} [{100 * s['diff_low']:+.2f}, {100 * s['diff_high']:+.2f}]"
            if "diff_mean" in s
            else "—"
        )
        lines.append(
            f"| {method} | {100 * s['mean']:.2f} ± {100 * s['sd']:.2f}% | {diff} "
            f"| {100 * s['min']:.2f}% | {100 * s['max']:.2f}% | {s['fit_seconds']:.1f} |"
        )
    return "\n".join(lines)


def _label_fingerprint(dataset: tf.data.Dataset, steps: int) -> str:
    """sha256 (16 hex digits) of the labels a dataset feeds in its first `steps` batches."""
    import hashlib

    import numpy as np

    labels = np.concatenate([y.numpy() for _, y in dataset.take(steps)]).astype("int32")
    return hashlib.sha256(labels.tobytes()).hexdigest()[:16]


def run_compare(
    config: ExperimentConfig,
    methods=None,
    seeds: int = 5,
    out: str = "runs/compare",
    privileged: bool = False,
    resume: bool = True,
) -> CompareResult:
    """Trains the student with each method over `seeds` seeds and tabulates test accuracy.

    Args:
        config: The experiment settings (`config.seed` seeds the split and the
            shared teacher; run seeds are `0 .. seeds - 1`).
        methods: `"alone"` and `'+'`-joined terms of `sp`, `kd`, `at`. Defaults
            to alone, kd, at, sp, sp+kd (without `at` when `privileged`).
        seeds: Number of seeds (>= 1). Defaults to `5`.
        out: Run directory (`results.csv`, `results.md`, `summary.json`, one
            folder per run). Defaults to `"runs/compare"`.
        privileged: The teacher sees whole images, the student only their top
            half. Defaults to `False`.
        resume: Continue a comparison that `out` holds (finished runs are
            reused). Defaults to `True`.

    Returns:
        A `CompareResult`.

    Example:

    >>> result = experiment.run_compare(config, methods=("alone", "sp"), seeds=5)
    >>> result.methods["sp"]["diff_mean"]
    """
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"config must be an ExperimentConfig; received {type(config).__name__}.")
    methods = parse_methods(methods or (PRIVILEGED_METHODS if privileged else DEFAULT_METHODS))
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be an integer >= 1; received {seeds!r}.")
    if any("kd" in m.split("+") for m in methods) and config.kd_weight == 0:
        raise ConfigError("Method 'kd' needs kd_weight > 0; received kd_weight 0.")
    if any("at" in m.split("+") for m in methods) and config.at_weight == 0:
        raise ConfigError("Method 'at' needs at_weight > 0; received at_weight 0.")
    if any("sp" in m.split("+") for m in methods) and not config.sp_on:
        raise ConfigError("Method 'sp' needs gamma > 0; received gamma 0.")
    strategy = strategy_for(config)
    extra = {"methods": methods, "seeds": seeds, "privileged": privileged}
    extra.update(teacher_record(config))
    with strategy.scope():  # every check before the run directory is touched
        data = load_data(config)
        check_out_path(out)
        student_shape = (data.input_shape[0] // 2, *data.input_shape[1:]) if privileged else None
        if config.teacher:
            probe_teacher = get_teacher(config, data)[0]
        else:
            prepare_cache()
            keras.utils.set_random_seed(config.seed)
            probe_teacher = build(config.teacher_arch, data, config, "teacher")
        _check_methods(methods, probe_teacher, data, config, student_shape, privileged)
    with RunDirectory(out, config, resume=resume, kind="compare", extra=extra) as run_dir:
        with strategy.scope():
            teacher, teacher_meta = get_teacher(config, data)
            config = _check_methods(methods, teacher, data, config, student_shape, privileged)
            test = data.test.map(lambda x, y: (degrade(x), y)) if privileged else data.test
            teacher_accuracy = accuracy(teacher, data.test)
            rows = []
            for seed in range(seeds):
                seeded = data.with_seed(seed)
                keras.utils.set_random_seed(seed)
                initial = build(  # a student file: seeds after 0 re-initialise it
                    config.student_arch, data, config, "student", student_shape, seed=seed
                )
                expected = weights_fingerprint(initial)
                for method in methods:
                    rows.append(
                        _one_run(
                            run_dir.path / "runs" / f"seed{seed}-{method.replace('+', '_')}",
                            method,
                            seed,
                            seeded,
                            config,
                            teacher,
                            initial,
                            expected,
                            student_shape,
                            privileged,
                            test,
                            teacher_accuracy,
                        )
                    )
                    _write_results(run_dir.path, rows)
                    logger.info(
                        "seed %d/%d, %s: %.2f%%",
                        seed + 1,
                        seeds,
                        method,
                        100 * rows[-1]["test_accuracy"],
                    )
        stats = summarise(rows, methods)
        table = _table(config, methods, stats, seeds, privileged, teacher_accuracy)
        atomic_write_text(run_dir.path / "results.md", table + "\n")
        write_summary(
            run_dir.path,
            "compare",
            config=config.to_dict(),
            accuracy={"teacher": teacher_accuracy, **{m: s["mean"] for m, s in stats.items()}},
            methods=stats,
            seeds=seeds,
            privileged=privileged,
            teacher=teacher_meta,
        )
    return CompareResult(rows, stats, table, str(run_dir.path))


def _check_methods(methods, teacher, data, config, student_shape, privileged):
    """Builds every method's model (so checks its layers) before anything trains."""
    config = resolve_pairs(config, teacher, data, privileged)
    for method in methods:
        student = build(config.student_arch, data, config, "student", student_shape)
        try:
            _model(method, teacher, student, config, config.pairs)
        except ValueError as error:
            raise ConfigError(f"Method {method!r}: {error}") from error
    return config


def _one_run(
    phase_dir: Path,
    method,
    seed,
    data,
    config,
    teacher,
    initial,
    expected,
    student_shape,
    privileged,
    test,
    teacher_accuracy,
) -> dict:

    done = read_result(phase_dir)
    if done is not None:
        return done
    student = build(config.student_arch, data, config, "student", student_shape)
    student.set_weights(initial.get_weights())
    start_fingerprint = weights_fingerprint(student)
    model = _model(method, teacher, student, config, config.pairs)
    view = None
    if privileged:
        view = (
            (lambda x, y: (degrade(x), y))
            if method == "alone"
            else (lambda x, y: ({"teacher": x, "student": degrade(x)}, y))
        )
    train = data.epochs(0)
    order = _label_fingerprint(train.map(view) if view else train, data.steps_per_epoch)
    facts = run_phase(
        phase_dir, model, data, config, config.epochs, f"seed {seed} {method}", view=view
    )
    return finish_phase(
        phase_dir,
        {
            "seed": seed,
            "method": method,
            "test_accuracy": accuracy(student, test),
            "teacher_test_accuracy": teacher_accuracy,
            "fit_seconds": facts["fit_seconds"],
            "init_fingerprint": start_fingerprint,
            "expected_init_fingerprint": expected,
            "order_fingerprint": order,
            "gamma": config.gamma if "sp" in method.split("+") else 0.0,
            "kd_weight": config.kd_weight if "kd" in method.split("+") else 0.0,
            "at_weight": config.at_weight if "at" in method.split("+") else 0.0,
        },
    )


def _write_results(out: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    columns = list(rows[0])
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buffer.getvalue())
