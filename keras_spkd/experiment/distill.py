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

from keras_spkd.callbacks import SimilarityMonitor
from keras_spkd.distiller import SPDistiller
from keras_spkd.errors import ConfigError
from keras_spkd.experiment.config import ExperimentConfig
from keras_spkd.experiment.session import Session, core_errors, data_record, prepare
from keras_spkd.experiment.tools import export_for
from keras_spkd.experiment.training import (
    accuracy,
    build,
    finish_phase,
    model_for_fit,
    read_result,
    run_phase,
    save_model,
    weights_fingerprint,
)
from keras_spkd.features import build_feature_extractor
from keras_spkd.plots import plot_similarity_matrices
from keras_spkd.report import write_report
from keras_spkd.summary import sp_phase_title, write_summary

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


def accuracy_table(summary: dict) -> str:
    """The main job's markdown table of test accuracies."""
    from keras_spkd.sources import model_label

    config, acc = summary["config"], summary["accuracy"]
    teacher, student = model_label(config, "teacher"), model_label(config, "student")
    rows = [
        ("teacher", teacher, acc["teacher"]),
        ("student alone", student, acc["alone"]),
        (sp_phase_title(config, summary["gamma_label"]), student, acc["sp"]),
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
    session = prepare(config, out, kind="distill", resume=resume)  # checks; writes nothing
    data = session.data
    # Training runs in the strategy's scope; exporting and plotting outside it
    # (restored SavedModel functions refuse a replica context).
    with session.open() as run_dir:
        with session.strategy.scope():
            teacher, teacher_meta = session.teacher()
            config = session.resolve_pairs(teacher)
            _initial_student(run_dir.path, config, data)
            teacher_accuracy = accuracy(teacher, data.test)
            results = {}
            for phase in PHASES:
                session.checkpoint(phase)
                results[phase] = _phase(phase, run_dir.path, config, data, teacher)
        session.checkpoint("export")
        return _finish(
            session, run_dir.path, config, teacher, teacher_meta, teacher_accuracy, results
        )


def _initial_student(run_dir: Path, config, data) -> None:
    """`student_init.weights.h5`: both students start from these weights."""
    init_path = run_dir / "student_init.weights.h5"
    if init_path.exists():
        return
    keras.utils.set_random_seed(config.seed)
    student = build(config.student_arch, data, config, "student")
    tmp = run_dir / ".student_init.partial.weights.h5"
    student.save_weights(tmp)
    tmp.replace(init_path)


def _phase(phase: str, run_dir: Path, config, data, teacher) -> dict:
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
        with core_errors():
            model = SPDistiller(
                teacher,
                student,
                layer_pairs=config.pairs,
                gamma=config.gamma,
                kd_weight=config.kd_weight,
                temperature=config.temperature,
                cross_replica=True,  # the same objective on any number of devices
            )
        callbacks.append(
            SimilarityMonitor(
                *data.probe,
                every_n_epochs=max(1, config.epochs // 10),
                out_dir=phase_dir / "similarity",
                log_dir=phase_dir / "tensorboard",
                log_metrics=False,  # Keras's own TensorBoard below writes the scalars
            )
        )
    else:
        model = model_for_fit(student)
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
    t_layer, s_layer = config.pairs[0]
    images, labels = data.probe
    panels = {f"teacher {t_layer}": build_feature_extractor(teacher, [t_layer], False)(images)}
    for phase, title in (("alone", "student alone"), ("sp", "SP student")):
        student = keras.saving.load_model(run_dir / phase / "student.keras")
        panels[f"{title} {s_layer}"] = build_feature_extractor(student, [s_layer], False)(images)
    path = run_dir / "similarity.png"
    plot_similarity_matrices(panels, labels, path, reference=f"teacher {t_layer}")
    return path.name


def _preprocessing(teacher, student) -> dict:
    """What each model does to the stored images before its first layer."""
    from keras_spkd.preprocessing import find_preprocessing

    layers = {"teacher": find_preprocessing(teacher), "student": find_preprocessing(student)}
    return {role: None if layer is None else layer.describe() for role, layer in layers.items()}


def _finish(session: Session, run_dir, config, teacher, teacher_meta, teacher_accuracy, results):
    data = session.data
    best = keras.saving.load_model(run_dir / "sp" / "student.keras")
    logger.info("Exporting the SP student to %s", run_dir / "export")
    export = export_for(best, run_dir / "export", data, config)
    session.checkpoint("the heat map")  # a Ctrl-C that the export's C++ calls swallowed
    similarity_png = _heat_map(run_dir, config, data, teacher)
    session.checkpoint("the summary")
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
        # measured here, never copied from the cache's metadata
        teacher={**teacher_meta, "test_accuracy": teacher_accuracy},
        preprocessing=_preprocessing(teacher, best),
        data=data_record(data),
        export=export,
        similarity_png=similarity_png,
    )
    write_report(run_dir)
    table = accuracy_table(summary) + "\n\n" + export_table(export)
    return RunSummary(dict(summary["accuracy"]), str(run_dir), summary, table)


def export_table(export: dict) -> str:
    """Each exported variant's size and test accuracy, next to the Keras student's."""
    lines = ["| export | size | test accuracy | agrees with student |", "|---|---|---|---|"]
    for row in export.get("table", []):
        acc = "-" if row["accuracy"] is None else f"{row['accuracy']:.2%}"
        agree = "-" if row["agreement"] is None else f"{row['agreement']:.2%}"
        lines.append(f"| {row['model']} | {row['bytes'] / 1024:.1f} KiB | {acc} | {agree} |")
    return "\n".join(lines)
