"""The smaller commands as functions: train a teacher, export, evaluate, describe layers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import keras

from keras_spkd.distiller import SPDistiller
from keras_spkd.errors import ConfigError, RunDirectoryError
from keras_spkd.experiment.config import ExperimentConfig
from keras_spkd.experiment.rundir import RunDirectory
from keras_spkd.experiment.session import checkpoint, core_errors, load_data, strategy_for
from keras_spkd.experiment.teacher import load_keras_file, train_teacher
from keras_spkd.experiment.training import accuracy, check_model_fits_data, save_model
from keras_spkd.export import export_student
from keras_spkd.pairs import describe_layers, format_layer_table


def _model_path(path: str | os.PathLike, suffix: str = ".keras") -> Path:
    path = Path(path)
    if path.suffix != suffix:
        raise ConfigError(f"Expected a {suffix} file name; received {str(path)!r}.")
    if path.is_dir():
        raise ConfigError(f"{str(path)!r} is a directory; expected a {suffix} file.")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(
                    f"--out {str(path)!r} lies under {str(parent)!r}, which is a file, not a "
                    "folder; choose another --out."
                )
            break
    return path


def load_student(path: str | os.PathLike) -> keras.Model:
    """A saved student, or the student inside a saved `SPDistiller`."""
    model = load_keras_file(path)
    return model.student if isinstance(model, SPDistiller) else model


def run_teacher(config: ExperimentConfig, out: str | os.PathLike, overwrite: bool = False) -> float:
    """Trains the config's teacher and saves it to `out` (`.keras`); returns its test accuracy.

    The training lives in a hidden run directory beside `out`
    (`.NAME.training`) until it is done: a killed training resumes there with
    the same settings, is refused with other ones (the differences listed),
    and starts afresh with `overwrite`.

    Args:
        config: The settings (the teacher's architecture, epochs, recipe).
        out: Where to save the teacher (a `.keras` file name).
        overwrite: Replace `out` and any interrupted training. Defaults to `False`.

    Raises:
        ConfigError, RunDirectoryError: A bad `out`, an `out` that exists, or an
            interrupted training with other settings.
    """
    out = _model_path(out)
    if out.exists() and not overwrite:
        raise ConfigError(
            f"{str(out)!r} exists; choose another --out, or pass --overwrite to replace it."
        )
    with strategy_for(config).scope():
        data = load_data(config)
    work = out.with_name(f".{out.stem}.training")
    if not overwrite and work.is_dir() and not (work / "config.json").exists():
        raise RunDirectoryError(
            f"{str(work)!r} holds an interrupted training without its settings (keras-spkd "
            "0.2 or older); pass --overwrite to train afresh."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    training = RunDirectory(
        work,
        config,
        resume=True,
        kind="teacher",
        overwrite=overwrite,
        advice="Rerun with the saved settings, or pass --overwrite to train afresh.",
    )
    with training, strategy_for(config).scope():
        teacher, _ = train_teacher(config, data, work)
        result = accuracy(teacher, data.test)
        checkpoint("saving the teacher")
        save_model(teacher, out)
    shutil.rmtree(work, ignore_errors=True)
    return result


def run_export(model_path, config: ExperimentConfig, out: str | os.PathLike) -> dict:
    """Exports a saved student (SavedModel + the config's TFLite variants), checked."""
    student = load_student(model_path)
    if Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise ConfigError(
            f"--out {str(out)!r} exists and is not empty; choose a new folder (nothing "
            "is overwritten)."
        )
    data = load_data(config)
    check_model_fits_data(student, data, "model", str(model_path))
    return export_for(student, out, data, config)


def export_for(student, out, data, config: ExperimentConfig) -> dict:
    """Exports `student` for `data`: stored images in, the config's TFLite variants, scored."""
    x_test, y_test = data.arrays["test"]
    report = export_student(
        student,
        out,
        x_test,
        config.tflite,
        test_labels=y_test,
        preprocessing=data.preprocessing,
        calibration_images=data.arrays["train"][0],  # never the test images
        seed=config.seed,
    )
    return {**report.as_dict(), "table": report.table()}


def run_evaluate(model_path, config: ExperimentConfig) -> dict:
    """Test loss and accuracy of a saved student on the config's dataset."""
    model = load_student(model_path)
    data = load_data(config)
    check_model_fits_data(model, data, "model", str(model_path))
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    logs = model.evaluate(data.test, verbose=0, return_dict=True)
    return {key: float(value) for key, value in logs.items()}


def run_layers(model_path) -> str:
    """The table of a saved model's tappable layers, stage ends marked."""
    model = load_student(model_path)
    with core_errors(f"{model_path}: "):
        return format_layer_table(describe_layers(model))
