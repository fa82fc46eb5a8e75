"""The smaller commands as functions: train a teacher, export, evaluate, describe layers."""

from __future__ import annotations

import os
from pathlib import Path

import keras

from keras_spkd.errors import ConfigError, DataError
from keras_spkd.experiment.config import ExperimentConfig
from keras_spkd.experiment.session import load_data, strategy_for
from keras_spkd.experiment.teacher import load_keras_file, train_teacher
from keras_spkd.experiment.training import accuracy, save_model


def _model_path(path: str | os.PathLike, suffix: str = ".keras") -> Path:
    path = Path(path)
    if path.suffix != suffix:
        raise ConfigError(f"Expected a {suffix} file name; received {str(path)!r}.")
    if path.is_dir():
        raise ConfigError(f"{str(path)!r} is a directory; expected a {suffix} file.")
    return path


def load_student(path: str | os.PathLike) -> keras.Model:
    """A saved student, or the student inside a saved `SPDistiller`."""
    from keras_spkd.distiller import SPDistiller

    model = load_keras_file(path)
    return model.student if isinstance(model, SPDistiller) else model


def run_teacher(config: ExperimentConfig, out: str | os.PathLike) -> float:
    """Trains the config's teacher and saves it to `out` (`.keras`); returns its test accuracy."""
    out = _model_path(out)
    if out.exists():
        raise ConfigError(f"{str(out)!r} exists; choose another --out (nothing is overwritten).")
    out.parent.mkdir(parents=True, exist_ok=True)
    with strategy_for(config).scope():
        data = load_data(config)
        work = out.with_name(f".{out.stem}.training")
        teacher, _ = train_teacher(config, data, work)
        result = accuracy(teacher, data.test)
    save_model(teacher, out)
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
    if tuple(student.inputs[0].shape[1:]) != tuple(data.input_shape):
        raise DataError(
            f"{model_path} takes inputs of shape {tuple(student.inputs[0].shape[1:])} but "
            f"{config.dataset!r} has images of shape {data.input_shape}; pass its --dataset."
        )
    return export_for(student, out, data, config)


def export_for(student, out, data, config: ExperimentConfig) -> dict:
    """Exports `student` for `data`: stored images in, the config's TFLite variants, scored."""
    from keras_spkd.export import export_student

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
    if tuple(model.inputs[0].shape[1:]) != tuple(data.input_shape):
        raise DataError(
            f"{model_path} takes inputs of shape {tuple(model.inputs[0].shape[1:])} but "
            f"{config.dataset!r} has images of shape {data.input_shape}; pass its --dataset."
        )
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    logs = model.evaluate(data.test, verbose=0, return_dict=True)
    return {key: float(value) for key, value in logs.items()}


def run_layers(model_path) -> str:
    """The table of a saved model's tappable layers, stage ends marked."""
    from keras_spkd.pairs import describe_layers, format_layer_table

    try:
        return format_layer_table(describe_layers(load_student(model_path)))
    except ValueError as error:
        raise ConfigError(str(error)) from error
