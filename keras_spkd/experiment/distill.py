"""`run_distill`: the main job. Teacher, student alone, student with SP, table, export.

Both students start from the same initial weights (`student_init.weights.h5`)
and are fed the same data order; only the loss differs. Each phase resumes
exactly after a kill; a finished phase is never trained again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import keras

from keras_spkd.errors import ConfigError
from keras_spkd.experiment.config import ExperimentConfig
from keras_spkd.experiment.rundir import RunDirectory, check_out_path
from keras_spkd.experiment.session import (
    data_record,
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
    save_model,
    trainable,
    weights_fingerprint,
)
from keras_spkd.summary import write_summary

logger = logging.getLogger("keras_spkd")
PHASES = ("alone", "sp")


@dataclass
class RunSummary:
    """What `run_distill` produced.

    Attributes:
        accuracy: Test accuracy of `"teacher"`, `"alone"` and `"sp"`.
        out: The run directory.
        summary: The whole `summary.json` (schema `keras_spkd.summary.SCHEMA_VERSION`).
        table: The accuracy table as markdown.
    """

    accuracy: dict[str, float]
    out: str
    summary: dict = field(default_factory=dict)
    table: str = ""


def _worker_index(strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(getattr(resolver, "task_id", 0) or 0) if resolver else 0


def accuracy_table(summary: dict) -> str:
    """The main job's markdown table of test accuracies."""
    from keras_spkd.sources import model_label

    config, acc = summary["config"], summary["accuracy"]
    teacher, student = model_label(config, "teacher"), model_label(config, "student")
    rows = [
        ("teacher", teacher, acc["teacher"]),
        ("student alone", student, acc["alone"]),
        (f"student + SP (gamma={summary['gamma_label']})", student, acc["sp"]),
    ]
    lines = [
        f"Test accuracy on {config['dataset']}:",
        "| model | architecture | test accuracy |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {arch} | {value:.2%} |" for name, arch, value in rows]
    return "\n".join(lines)


def run_distill(
    config: ExperimentConfig, out: str = "runs/distill", resume: bool = False
) -> RunSummary:
    """Runs the main job: teacher, student alone and with SP, export, pictures, report.

    Args:
        config: The experiment settings (validated when built).
        out: The run directory. Defaults to `"runs/distill"`.
        resume: Continue the run `out` holds; refused when `config` differs
            from the saved settings (the differences are listed). Defaults to
            `False`: a directory that already holds a run is refused.

    Returns:
        A `RunSummary`.

    Raises:
        ConfigError, DataError, RunDirectoryError: Bad input, before training.
        NonFiniteLossError: A loss became NaN or infinite (nothing is exported).

    Example:

    >>> summary = experiment.run_distill(experiment.ExperimentConfig(), out="runs/distill")
    >>> summary.accuracy["sp"]
    """
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"config must be an ExperimentConfig; received {type(config).__name__}.")
    if not config.sp_on:
        raise ConfigError("distill compares the student alone with SP: gamma must be > 0.")
    # Training runs in the strategy's scope; exporting and plotting outside it
    # (restored SavedModel functions refuse a replica context).
    strategy = strategy_for(config)
    worker = _worker_index(strategy)
    out = Path(out) / f"worker{worker}" if worker else Path(out)
    with strategy.scope():  # every check before the run directory is touched
        data = load_data(config)
        check_out_path(out)
        if config.teacher:
            get_teacher(config, data)
        else:  # the pairs, on the architecture, before spending time on a teacher
            prepare_cache()
            keras.utils.set_random_seed(config.seed)
            resolve_pairs(config, build(config.teacher_arch, data, config, "teacher"), data)
    extra = teacher_record(config)
    if resume and not (Path(out) / "config.json").exists():
        logger.warning("Nothing to resume in %s; starting a new run there", out)
    with RunDirectory(out, config, resume=resume, kind="distill", extra=extra) as run_dir:
        with strategy.scope():
            teacher, teacher_meta = get_teacher(config, data)
            config = resolve_pairs(config, teacher, data)
            init_path = run_dir.path / "student_init.weights.h5"
            keras.utils.set_random_seed(config.seed)
            student = build(config.student_arch, data, config, "student")
            if not init_path.exists():
                tmp = run_dir.path / ".student_init.partial.weights.h5"
                student.save_weights(tmp)
                tmp.replace(init_path)
            teacher_accuracy = accuracy(teacher, data.test)
            results = {
                phase: _phase(phase, run_dir.path, config, data, teacher) for phase in PHASES
            }
        return _finish(run_dir.path, config, data, teacher, teacher_meta, teacher_accuracy, results)


def _phase(phase: str, run_dir: Path, config, data, teacher) -> dict:

    from keras_spkd.distiller import SPDistiller

    phase_dir = run_dir / phase
    done = read_result(phase_dir, "student.keras")
    if done is not None:
        return done
    student = build(config.student_arch, data, config, "student")
    try:
        student.load_weights(run_dir / "student_init.weights.h5")
    except (OSError, ValueError) as error:  # damaged by hand: the seed rebuilds it exactly
        logger.warning(
            "student_init.weights.h5 is damaged (%s); rebuilding it from the seed", error
        )
        keras.utils.set_random_seed(config.seed)
        student = build(config.student_arch, data, config, "student")
        tmp = run_dir / ".student_init.partial.weights.h5"
        student.save_weights(tmp)
        tmp.replace(run_dir / "student_init.weights.h5")
    initial = weights_fingerprint(student)
    callbacks = []
    if phase == "sp":
        import keras_spkd

        model = SPDistiller(
            teacher,
            student,
            config.pairs,
            gamma=config.gamma,
            kd_weight=config.kd_weight,
            temperature=config.temperature,
            cross_replica=True,  # the same objective on any number of devices
        )
        callbacks.append(
            keras_spkd.SimilarityMonitor(
                *data.probe,
                every_n_epochs=max(1, config.epochs // 10),
                out_dir=phase_dir / "similarity",
                log_dir=phase_dir / "tensorboard",
                log_metrics=False,  # Keras's own TensorBoard below writes the scalars
            )
        )
    else:
        model = trainable(student)
    callbacks.append(keras.callbacks.TensorBoard(str(phase_dir / "tensorboard")))
    logger.info(
        "Training the student %s (%s) for %d epochs",
        config.student_arch,
        "alone" if phase == "alone" else f"with SP, gamma={config.gamma_label}",
        config.epochs,
    )
    facts = run_phase(phase_dir, model, data, config, config.epochs, phase, callbacks)
    save_model(student, phase_dir / "student.keras")
    return finish_phase(
        phase_dir,
        {
            **facts,
            "test_accuracy": accuracy(student, data.test),
            "init_fingerprint": initial,
            "order_fingerprint": data.order_fingerprint(0),
        },
    )


def _heat_map(run_dir: Path, config, data, teacher) -> str:
    from keras_spkd.features import build_feature_extractor
    from keras_spkd.plots import plot_similarity_matrices

    t_layer, s_layer = config.pairs[0]
    images, labels = data.probe
    panels = {f"teacher {t_layer}": build_feature_extractor(teacher, [t_layer], False)(images)}
    for phase, title in (("alone", "student alone"), ("sp", "SP student")):
        student = keras.saving.load_model(run_dir / phase / "student.keras")
        panels[f"{title} {s_layer}"] = build_feature_extractor(student, [s_layer], False)(images)
    path = run_dir / "similarity.png"
    plot_similarity_matrices(panels, labels, path, reference=f"teacher {t_layer}")
    return path.name


def _finish(run_dir, config, data, teacher, teacher_meta, teacher_accuracy, results):
    from keras_spkd.report import write_report

    export = _export(run_dir, config, data)
    summary = write_summary(
        run_dir,
        "distill",
        config=config.to_dict(),
        gamma_label=config.gamma_label,
        accuracy={
            "teacher": teacher_accuracy,
            "alone": results["alone"]["test_accuracy"],
            "sp": results["sp"]["test_accuracy"],
        },
        phases=results,
        teacher=teacher_meta,
        preprocessing=data.layer.describe(),
        data=data_record(data),
        export=export,
        similarity_png=_heat_map(run_dir, config, data, teacher),
    )
    write_report(run_dir)
    table = accuracy_table(summary) + "\n\n" + export_table(export)
    return RunSummary(dict(summary["accuracy"]), str(run_dir), summary, table)


def _export(run_dir: Path, config, data) -> dict:
    from keras_spkd.experiment.tools import export_for

    best = keras.saving.load_model(run_dir / "sp" / "student.keras")
    return export_for(best, run_dir / "export", data, config)


def export_table(export: dict) -> str:
    """Each exported variant's size and test accuracy, next to the Keras student's."""
    lines = ["| export | size | test accuracy | agrees with student |", "|---|---|---|---|"]
    for row in export.get("table", []):
        acc = "-" if row["accuracy"] is None else f"{row['accuracy']:.2%}"
        agree = "-" if row["agreement"] is None else f"{row['agreement']:.2%}"
        lines.append(f"| {row['model']} | {row['bytes'] / 1024:.1f} KiB | {acc} | {agree} |")
    return "\n".join(lines)
