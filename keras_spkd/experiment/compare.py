"""`run_compare`: the paper's comparison (alone, KD, AT, SP and their sums) over seeds.

A method is a list of weighted distillation terms (`methods.Method`, parsed once from
names such as `"sp+kd"`, import paths of a user's term, or dicts). One
teacher (the config's seed) serves every seed, or with `teachers=N` the
student seeds are spread over N teachers round-robin. Within a seed every method
starts from the same student weights and is fed the same data order; both
are fingerprinted (sha256 of the weights' bytes, of the first epoch's label
sequence) and recorded beside each result, so equal starts can be checked.
Every run is its own resumable phase: a killed comparison continues where it
stopped, and finished runs are never trained again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from scipy.stats import t as student_t

from keras_spkd.errors import ConfigError, core_errors
from keras_spkd.experiment.config import ExperimentConfig
from keras_spkd.experiment.methods import (
    Method,
    build_method_model,
    check_weights,
    parse_methods,
)
from keras_spkd.experiment.search import TUNING_SEED_BASE
from keras_spkd.experiment.session import prepare
from keras_spkd.experiment.training import (
    accuracy,
    build,
    finish_phase,
    read_result,
    run_phase,
    save_model,
    trainable,
    weights_fingerprint,
)
from keras_spkd.sources import model_label
from keras_spkd.summary import atomic_write_text, write_summary

logger = logging.getLogger("keras_spkd")
DEFAULT_METHODS = ("alone", "kd", "at", "sp", "sp+kd")
PRIVILEGED_METHODS = ("alone", "kd", "sp", "sp+kd")  # AT needs equal resolutions


@dataclass
class CompareResult:
    """What `run_compare` measured.

    Attributes:
        rows: One dict per (seed, method) run: accuracy, fingerprints, terms.
        methods: Per method: `mean`, `sd`, `min`, `max`, and under `vs`, per
            baseline, the paired difference by seed (`mean`, `low`, `high`: a
            95% t interval, `None` with one seed). Against "alone" also
            `diff_mean`, `diff_low`, `diff_high`.
        table: The markdown table (also in `out/results.md`).
        out: The run directory.
    """

    rows: list[dict]
    methods: dict[str, dict] = field(default_factory=dict)
    table: str = ""
    out: str = ""


def degrade(images):
    """The privileged setting's student view: the top half of every image."""
    return images[:, : images.shape[1] // 2]


def _spread(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_interval(differences: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its two-sided t interval (NaN-free: n = 1 gives ±0)."""
    mean, sd = _spread(differences)
    n = len(differences)
    if n < 2:
        return mean, mean, mean
    half = float(student_t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def detectable_difference(sd: float, n: int, power: float = 0.8, level: float = 0.95) -> float:
    """The smallest true paired difference a two-sided t test of `n` pairs detects with `power`.

    `(t_{1 - alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)`, with the sd of
    the paired differences measured (the usual approximation, good from
    n of about 10; it understates the effect for fewer pairs).
    """
    if n < 2:
        return math.nan
    quantiles = student_t.ppf(0.5 + level / 2, n - 1) + student_t.ppf(power, n - 1)
    return float(quantiles) * sd / math.sqrt(n)


def summarise(rows: list[dict], methods, baselines=("alone",)) -> dict[str, dict]:
    """Per-method mean ± sd and paired differences (by seed) to each baseline.

    `stats[m]["vs"][b]` is `{"mean", "low", "high", "n"}` for `m - b` (a 95% t
    interval; `low`/`high` are `None` with one seed: no interval) and
    `detectable`, the smallest true difference 80% power would find. The
    difference to `"alone"` is also `diff_mean`, `diff_low`, `diff_high`.
    """
    out = {}
    names = [m.name if isinstance(m, Method) else m for m in methods]
    by_seed = {
        b: {r["seed"]: r["test_accuracy"] for r in rows if r["method"] == b} for b in baselines
    }
    for method in names:
        accs = [r["test_accuracy"] for r in rows if r["method"] == method]
        if not accs:
            continue
        mean, sd = _spread(accs)
        stats = {"mean": mean, "sd": sd, "min": min(accs), "max": max(accs), "runs": len(accs)}
        stats["fit_seconds"] = statistics.mean(
            r["fit_seconds"] for r in rows if r["method"] == method
        )
        stats["vs"] = {}
        for baseline in baselines:
            paired = [
                r["test_accuracy"] - by_seed[baseline][r["seed"]]
                for r in rows
                if r["method"] == method and r["seed"] in by_seed[baseline]
            ]
            if method == baseline or not paired:
                continue
            d_mean, low, high = paired_interval(paired)
            detectable = detectable_difference(_spread(paired)[1], len(paired))
            if len(paired) < 2:
                low = high = detectable = None
            stats["vs"][baseline] = {
                "mean": d_mean,
                "low": low,
                "high": high,
                "n": len(paired),
                "detectable": detectable,
            }
            if baseline == "alone":
                stats.update(diff_mean=d_mean, diff_low=low, diff_high=high)
        out[method] = stats
    return out


def _diff_cell(diff: dict | None) -> str:
    if diff is None:
        return "—"
    if diff["low"] is None:
        return f"{100 * diff['mean']:+.2f} (one seed: no interval)"
    return f"{100 * diff['mean']:+.2f} [{100 * diff['low']:+.2f}, {100 * diff['high']:+.2f}]"


def _table(config, methods, stats, seeds, privileged, teachers, baselines) -> str:
    setting = "privileged (student sees the top half of each image)" if privileged else "standard"
    pairs = ",".join(f"{t}:{s}" for t, s in config.pairs)
    if len(teachers) == 1:
        ((seed, acc),) = teachers.items()
        teacher = f"{100 * acc:.2f}% (one teacher, seed {seed}, shared by all seeds)"
    else:
        accs = [100 * a for a in teachers.values()]
        teacher = (
            f"{min(accs):.2f}-{max(accs):.2f}% ({len(teachers)} teachers, seeds "
            f"{', '.join(map(str, teachers))}; student seeds assigned round-robin)"
        )
    subset = f" ({config.train_images} training images)" if config.train_images else ""
    weights = [f"pairs {pairs}"]
    if any(m.uses("sp", config_weight=True) for m in methods):
        weights.append(f"gamma {config.gamma_label}")
    if any(m.uses("kd", config_weight=True) for m in methods):
        weights.append(f"KD weight {config.kd_weight:g} (T = {config.temperature:g})")
    if any(m.uses("at", config_weight=True) for m in methods):
        weights.append(f"AT weight {config.at_weight:g}")
    lines = [
        f"Test accuracy on {config.dataset}{subset}, {setting}; {seeds} seeds, "
        f"{config.epochs} epochs; "
        f"teacher {model_label(config.to_dict(), 'teacher')} {teacher}, student "
        f"{model_label(config.to_dict(), 'student')}; {', '.join(weights)}.",
        "",
        "| method | test accuracy (mean ± sd) | "
        + "".join(f"vs {b} (paired mean [95% CI]) | " for b in baselines)
        + "min | max | fit s / run | terms (weight) |",
        "|---|---|" + "---|" * len(baselines) + "---|---|---|---|",
    ]
    for method in methods:
        if method.name not in stats:
            continue
        s = stats[method.name]
        diffs = "".join(f"{_diff_cell(s['vs'].get(b))} | " for b in baselines)
        if s["runs"] > 1:
            accuracy = f"{100 * s['mean']:.2f} ± {100 * s['sd']:.2f}%"
        else:
            accuracy = f"{100 * s['mean']:.2f}% (one run: no sd)"
        lines.append(
            f"| {method.name} | {accuracy} | {diffs}"
            f"{100 * s['min']:.2f}% | {100 * s['max']:.2f}% | {s['fit_seconds']:.1f} "
            f"| {method.label(config)} |"
        )
    detectable = [
        f"{method.name} - {b} {100 * stats[method.name]['vs'][b]['detectable']:.2f}"
        for b in baselines
        for method in methods
        if (stats.get(method.name, {}).get("vs", {}).get(b) or {}).get("detectable") is not None
    ]
    if detectable:
        lines += [
            "",
            "Smallest difference detectable with 80% power (two-sided 5%, from each pair's "
            f"measured sd), points: {', '.join(detectable)}.",
        ]
    return "\n".join(lines)


def _label_fingerprint(dataset: tf.data.Dataset, steps: int) -> str:
    """sha256 (16 hex digits) of the labels a dataset feeds in its first `steps` batches."""
    labels = np.concatenate([y.numpy() for _, y in dataset.take(steps)]).astype("int32")
    return hashlib.sha256(labels.tobytes()).hexdigest()[:16]


# Settings added after rows were first recorded: left out of the hash while unset, so
# that a recorded row (the committed evidence's) keeps its hash under the newer code.
_LATER_FIELDS = ("train_images",)


def config_hash(config: ExperimentConfig) -> str:
    """sha256 (16 hex digits) of the config's JSON: equal hashes, equal settings."""
    settings = config.to_dict()
    for key in _LATER_FIELDS:
        if settings[key] is None:
            del settings[key]
    text = json.dumps(settings, sort_keys=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _seed_list(seeds) -> list[int]:
    """Evaluation seeds: `range(seeds)` or the list given, all below the tuning seeds."""
    if isinstance(seeds, (list, tuple)):
        if (
            not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
            or len(set(seeds)) != len(seeds)
        ):
            raise ConfigError(f"seeds must be distinct integers >= 0; received {seeds!r}.")
        seeds = list(seeds)
    else:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ConfigError(f"seeds must be an integer >= 1; received {seeds!r}.")
        seeds = list(range(seeds))
    if max(seeds) >= TUNING_SEED_BASE:
        raise ConfigError(
            f"Evaluation seeds must stay below {TUNING_SEED_BASE}, where the search's tuning "
            f"seeds start; received seed {max(seeds)}."
        )
    return seeds


def _baselines(baselines, methods: list[Method]) -> tuple[str, ...]:
    names = [m.name for m in methods]
    if baselines is None:
        return ("alone",) if "alone" in names else ()
    if isinstance(baselines, str):
        baselines = [b.strip() for b in baselines.split(",") if b.strip()]
    baselines = [b.strip() for item in baselines for b in str(item).split(",") if b.strip()]
    for baseline in baselines:
        if baseline not in names:
            raise ConfigError(
                f"baseline {baseline!r} is not among the methods {names}; add it to methods."
            )
    return tuple(dict.fromkeys(baselines))


@dataclass
class _Run:
    """What one (seed, method) run needs besides the method itself."""

    seed: int
    data: object  # the DataBundle, seeded for this run
    config: ExperimentConfig
    teacher: object
    teacher_seed: int
    teacher_accuracy: float
    initial: object  # the seed's initial student
    expected: str  # its weights' fingerprint
    student_shape: tuple | None
    privileged: bool
    test: object


def run_compare(
    config: ExperimentConfig,
    methods=None,
    seeds=5,
    out: str = "runs/compare",
    privileged: bool = False,
    resume: bool = True,
    baselines=None,
    teachers: int = 1,
) -> CompareResult:
    """Trains the student with each method over seeds and tabulates test accuracy.

    A method is a list of weighted distillation terms. Built-in names: `alone`
    (no term), `sp`, `kd`, `at` and `'+'`-joined sums (`sp+kd`); SP and AT
    give one term per layer pair, weighted by the config's `gamma`
    (`kd_weight`, `at_weight`). A term may carry its own weight (`kd@0.5`)
    or be a user's `keras.distillation.DistillationLoss` subclass by import
    path, `package.module:Class[@weight]` (weight 1 by default), e.g.
    `"sp+my_terms:MyTerm@0.5"`. In Python or a JSON file (`methods=
    "methods.json"`, a list), a method may be a dict: `{"name": "mine",
    "terms": ["sp", {"class": "my_terms:MyTerm", "config": {...},
    "weight": 0.5}]}`, `config` being the class's keyword arguments (layer
    names included). A class defined in the running script is
    `f"{__name__}:MyTerm"`. A new term needs no change here, in the config or
    in the CLI.

    Every row of `results.csv` can be rerun alone: it records the seed, the
    teacher seed, the concrete terms and weights (`terms`, JSON) and the
    config's hash (`config_hash`; the config is `out/config.json`); the
    trained student's weights' fingerprint (`final_fingerprint`) shows that a
    rerun (`seeds=[seed]`, `methods=[method]`) trained the same weights.

    Args:
        config: The experiment settings (`config.seed` seeds the split and
            the first teacher).
        methods: Methods as above (names, dicts, `Method`s, or one string of
            comma-separated names or a `.json` file). Defaults to alone, kd,
            at, sp, sp+kd (without `at` when `privileged`).
        seeds: Number of student seeds (>= 1: seeds `0 .. seeds - 1`), or a
            list of seeds to run. Defaults to `5`.
        out: Run directory (`results.csv`, `results.md`, `summary.json`, one
            folder per run). Defaults to `"runs/compare"`.
        privileged: The teacher sees whole images, the student only their top
            half. Defaults to `False`.
        resume: Continue a comparison that `out` holds (finished runs are
            reused). Defaults to `True`.
        baselines: Methods to pair every other method against, by seed (e.g.
            `("alone", "kd")` gives SP - alone, SP - KD, (SP+KD) - KD...), each
            with a 95% t interval (none with one seed). Defaults to `("alone",)`
            when alone is among the methods.
        teachers: Teachers to train (seeds `config.seed + k`); student seed `s`
            distils from teacher `s % teachers`, so teacher variance is sampled.
            Not with a `config.teacher` file. Defaults to `1`.

    Returns:
        A `CompareResult`.

    Example:

    >>> result = experiment.run_compare(config, methods=("alone", "kd", "sp", "sp+kd"),
    ...                                 seeds=5, baselines=("alone", "kd"))
    >>> result.methods["sp"]["vs"]["kd"]["mean"]
    """
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"config must be an ExperimentConfig; received {type(config).__name__}.")
    methods = parse_methods(methods or (PRIVILEGED_METHODS if privileged else DEFAULT_METHODS))
    seed_list = _seed_list(seeds)
    baselines = _baselines(baselines, methods)
    if isinstance(teachers, bool) or not isinstance(teachers, int) or teachers < 1:
        raise ConfigError(f"teachers must be an integer >= 1; received {teachers!r}.")
    if teachers > 1 and config.teacher:
        raise ConfigError(
            f"teachers={teachers} trains {teachers} teachers; it cannot be combined with the "
            f"teacher file {config.teacher!r} (give one or the other)."
        )
    check_weights(methods, config)
    extra = {
        "methods": [m.to_dict() for m in methods],
        "seeds": seeds if isinstance(seeds, int) else list(seeds),
        "privileged": privileged,
        "teachers": teachers,
    }
    session = prepare(config, out, "compare", resume, privileged=privileged, extra=extra)
    data = session.data
    student_shape = (data.input_shape[0] // 2, *data.input_shape[1:]) if privileged else None
    with session.strategy.scope():  # every method built on the teacher's architecture first
        keras.utils.set_random_seed(config.seed)
        probe = (
            session.teacher()[0]
            if config.teacher
            else build(config.teacher_arch, data, config, "teacher")
        )
        _check_methods(methods, probe, session, student_shape)
    with session.open() as run_dir, session.strategy.scope():
        teacher_models = _teachers(run_dir.path, session, teachers)
        config = _check_methods(methods, teacher_models[0][1], session, student_shape)
        test = data.test.map(lambda x, y: (degrade(x), y)) if privileged else data.test
        accuracies = {s: accuracy(t, data.test) for s, t, _ in teacher_models}
        rows = []
        for seed in seed_list:
            teacher_seed, teacher, _ = teacher_models[seed % teachers]
            keras.utils.set_random_seed(seed)
            initial = build(  # a student file: seeds after 0 re-initialise it
                config.student_arch, data, config, "student", student_shape, seed=seed
            )
            run = _Run(
                seed,
                data.with_seed(seed),
                config,
                teacher,
                teacher_seed,
                accuracies[teacher_seed],
                initial,
                weights_fingerprint(initial),
                student_shape,
                privileged,
                test,
            )
            for method in methods:
                session.checkpoint(f"seed {seed} {method.name}")
                rows.append(
                    _one_run(run_dir.path / "runs" / _phase_name(seed, method), method, run)
                )
                _write_results(run_dir.path, rows)
                logger.info(
                    "seed %d, %s: %.2f%%", seed, method.name, 100 * rows[-1]["test_accuracy"]
                )
        stats = summarise(rows, methods, baselines)
        table = _table(config, methods, stats, len(seed_list), privileged, accuracies, baselines)
        atomic_write_text(run_dir.path / "results.md", table + "\n")
        write_summary(
            run_dir.path,
            "compare",
            config=config.to_dict(),
            accuracy={
                "teacher": accuracies[teacher_models[0][0]],
                **{m: s["mean"] for m, s in stats.items()},
            },
            methods=stats,
            seeds=seed_list,
            privileged=privileged,
            baselines=list(baselines),
            teachers=[
                {"seed": s, "test_accuracy": accuracies[s], **meta} for s, _, meta in teacher_models
            ],
            teacher=teacher_models[0][2],
        )
    return CompareResult(rows, stats, table, str(run_dir.path))


def _phase_name(seed: int, method: Method) -> str:
    return f"seed{seed}-" + re.sub(r"[^A-Za-z0-9_.-]", "_", method.name)


def _teachers(out: Path, session, count: int) -> list[tuple]:
    """`(teacher seed, model, metadata)` for each teacher: the first is the session's
    (its file, or the cache's), the others (seeds `config.seed + k`) live in `out/teachers`."""
    config, data = session.config, session.data
    teacher, meta = session.teacher()
    found = [(config.seed, teacher, meta)]
    for k in range(1, count):
        seed = config.seed + k
        phase_dir = out / "teachers" / f"seed{seed}"
        if read_result(phase_dir, "teacher.keras") is None:
            session.checkpoint(f"teacher seed {seed}")
            keras.utils.set_random_seed(seed)
            model = build(config.teacher_arch, data, config, "teacher")
            facts = run_phase(
                phase_dir / "training",
                trainable(model),
                data.with_seed(seed),
                config,
                config.teacher_epochs,
                f"teacher seed {seed}",
            )
            save_model(model, phase_dir / "teacher.keras")
            shutil.rmtree(phase_dir / "training", ignore_errors=True)
            finish_phase(phase_dir, {"seed": seed, **facts})
        model = keras.saving.load_model(phase_dir / "teacher.keras", compile=False)
        found.append((seed, model, {"path": str(phase_dir / "teacher.keras"), "seed": seed}))
    return found


def _check_methods(methods, teacher, session, student_shape) -> ExperimentConfig:
    """Builds every method's model (so checks its layers) before anything trains."""
    config = session.resolve_pairs(teacher)
    for method in methods:
        student = build(config.student_arch, session.data, config, "student", student_shape)
        with core_errors(f"Method {method.name!r}: "):
            build_method_model(method, teacher, student, config)
    return config


def _one_run(phase_dir: Path, method: Method, run: _Run) -> dict:
    """Trains one (seed, method) run (or reads its finished result)."""
    done = read_result(phase_dir)
    if done is not None:
        return done
    config = run.config
    student = build(config.student_arch, run.data, config, "student", run.student_shape)
    student.set_weights(run.initial.get_weights())
    start_fingerprint = weights_fingerprint(student)
    model = build_method_model(method, run.teacher, student, config)
    view = None
    if run.privileged:
        view = (
            (lambda x, y: (degrade(x), y))
            if not method.specs
            else (lambda x, y: ({"teacher": x, "student": degrade(x)}, y))
        )
    train = run.data.epochs(0)
    order = _label_fingerprint(train.map(view) if view else train, run.data.steps_per_epoch)
    keras.utils.set_random_seed(run.seed)  # a rerun of this row alone starts from the same state
    facts = run_phase(
        phase_dir,
        model,
        run.data,
        config,
        config.epochs,
        f"seed {run.seed} {method.name}",
        view=view,
    )
    terms = method.terms(config)

    def weight(kind):
        return sum(t.weight for t in terms if t.kind == kind) / max(
            1, sum(t.kind == kind for t in terms)
        )

    return finish_phase(
        phase_dir,
        {
            "seed": run.seed,
            "method": method.name,
            "test_accuracy": accuracy(student, run.test),
            "teacher_seed": run.teacher_seed,
            "teacher_test_accuracy": run.teacher_accuracy,
            "fit_seconds": facts["fit_seconds"],
            "init_fingerprint": start_fingerprint,
            "expected_init_fingerprint": run.expected,
            "order_fingerprint": order,
            "final_fingerprint": weights_fingerprint(student),
            "gamma": weight("sp"),
            "kd_weight": weight("kd"),
            "at_weight": weight("at"),
            "terms": json.dumps([t.to_dict() for t in terms], sort_keys=True),
            "config_hash": config_hash(config),
        },
    )


def _write_results(out: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buffer.getvalue())
