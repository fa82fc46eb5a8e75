"""The smaller commands as functions: train a teacher, export, evaluate, describe layers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import keras

from keras_spkd.distiller import SPDistiller
from keras_spkd.errors import ConfigError, DataError, RunDirectoryError
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
    _check_fits(student, model_path, data)
    return export_for(student, out, data, config)


def _check_fits(model, model_path, data) -> None:
    """A saved model must take the data's images: as stored when it carries its
    preprocessing (a student of the workflow), as model input otherwise."""
    from keras_spkd.preprocessing import find_preprocessing

    stored = data.images("test", 1).shape[1:] if find_preprocessing(model) else None
    check_model_fits_data(model, data, "model", str(model_path), input_shape=stored)


def export_for(student, out, data, config: ExperimentConfig) -> dict:
    """Exports `student` for `data`: stored images in, the config's TFLite variants, scored."""
    from keras_spkd.preprocessing import find_preprocessing

    train = data.images("train") if data.files is None else _train_sample(data, config.seed)
    report = export_student(
        student,
        out,
        data.images("test"),
        config.tflite,
        test_labels=data.labels("test"),
        # a student of the workflow carries its preprocessing; an older one gets the data's
        preprocessing=None if find_preprocessing(student) else data.layer,
        calibration_images=train,  # never the test images
        seed=config.seed,
        class_names=data.class_names,
    )
    return {**report.as_dict(), "table": report.table()}


def _train_sample(data, seed: int, count: int = 300):
    """`count` training images read from disk (a folder is not held in memory)."""
    import dataclasses

    import numpy as np

    paths, labels = data.files["train"]
    order = np.sort(np.random.default_rng(seed).permutation(len(labels))[:count])
    files = {**data.files, "train": (paths[order], labels[order])}
    return dataclasses.replace(data, files=files, _cache={}).images("train")


def run_evaluate(model_path, config: ExperimentConfig) -> dict:
    """Test loss and accuracy of a saved student on the config's dataset."""
    from keras_spkd.experiment.training import from_logits
    from keras_spkd.preprocessing import find_preprocessing

    model = load_student(model_path)
    data = load_data(config, for_training=False)  # nothing trains: any training-set size
    _check_fits(model, model_path, data)
    if find_preprocessing(model) is None:  # a model without the layer takes model input
        import dataclasses

        data = dataclasses.replace(data, preprocess_in_pipeline=True, _cache={})
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits(model)),
        metrics=["accuracy"],
    )
    logs = model.evaluate(data.test, verbose=0, return_dict=True)
    return {key: float(value) for key, value in logs.items()}


def run_layers(model_path) -> str:
    """The table of a saved model's tappable layers, stage ends marked."""
    model = load_student(model_path)
    with core_errors(f"{model_path}: "):
        return format_layer_table(describe_layers(model))


def run_predict(model_path, files) -> list[dict]:
    """Each image file's class and probability from an exported SavedModel.

    Args:
        model_path: An export's `saved_model` folder (or the export folder).
        files: PNG or JPEG files, as stored (any size when the export resizes).

    Returns:
        One `{"file", "class", "label", "probability"}` per file.

    Raises:
        DataError: The model or a file cannot be read, or an image does not fit.
    """
    import numpy as np
    import tensorflow as tf

    path = Path(model_path)
    if (path / "saved_model").is_dir():
        path = path / "saved_model"
    if not (path / "saved_model.pb").is_file():
        raise DataError(f"{str(model_path)!r} is not an exported SavedModel (no saved_model.pb).")
    model = tf.saved_model.load(str(path))
    serve = model.signatures["serving_default"]
    spec = serve.structured_input_signature[1]["images"]
    if hasattr(model, "class_names"):
        names = [n.decode() for n in model.class_names().numpy()]
    elif (path.parent / "class_names.txt").is_file():
        names = (path.parent / "class_names.txt").read_text().splitlines()
    else:
        names = None
    rows = []
    for file in files:
        try:
            image = tf.io.decode_image(
                tf.io.read_file(str(file)), channels=spec.shape[-1], expand_animations=False
            )
        except (tf.errors.OpError, ValueError) as error:
            reason = str(getattr(error, "message", error)).splitlines()[0]
            raise DataError(f"{file} is not a readable PNG or JPEG image ({reason}).") from None
        wanted = tuple(spec.shape[1:3])
        if None not in wanted and tuple(image.shape[:2]) != wanted:
            raise DataError(
                f"{file} is {image.shape[0]}x{image.shape[1]} but the model takes "
                f"{wanted[0]}x{wanted[1]} images (export with --image-size to resize)."
            )
        out = serve(images=tf.cast(image[None], spec.dtype))
        probabilities = np.asarray(out["probabilities"])[0]
        label = int(probabilities.argmax())
        rows.append(
            {
                "file": str(file),
                "class": names[label] if names else str(label),
                "label": label,
                "probability": float(probabilities[label]),
            }
        )
    return rows
