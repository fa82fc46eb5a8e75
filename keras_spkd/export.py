"""Export students as SavedModel and TFLite, and check the exports agree.

Exports hold only the student (no teacher, no keras-spkd code): they load
with `tf.saved_model.load` or `tf.lite.Interpreter` alone. A student trained
under mixed precision is rebuilt in float32 first, so the exports take and
return float32 and convert to TFLite without Flex ops.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

TFLITE_MODES = ("float", "dynamic", "int8")


@dataclass
class ExportReport:
    """What was written and how closely each export reproduces the student.

    Attributes:
        saved_model: Path of the SavedModel directory.
        saved_model_bytes: Its size on disk.
        saved_model_max_abs_diff: Largest |export - student| over the check
            batch.
        tflite: Per TFLite mode: path, size in bytes, largest difference and
            the share of check images whose arg-max class agrees.
    """

    saved_model: str
    saved_model_bytes: int
    saved_model_max_abs_diff: float
    tflite: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def float32_student(student: keras.Model) -> keras.Model:
    """Returns `student`, or a float32 copy of it if it computes in half precision."""
    if all(layer.compute_dtype == "float32" for layer in student.layers):
        return student

    def as_float32(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(student, clone_function=as_float32)
    copy.set_weights(student.get_weights())
    return copy


def _tflite_bytes(saved_model: Path, mode: str, representative: np.ndarray) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if mode in ("dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":

        def representative_dataset():
            for image in representative[:200]:
                yield [image[None].astype("float32")]

        converter.representative_dataset = representative_dataset
    return converter.convert()


def tflite_predict(model_path: str | os.PathLike, images: np.ndarray) -> np.ndarray:
    """Runs a TFLite model on a batch (the input is resized to the batch)."""
    with warnings.catch_warnings():  # tf.lite.Interpreter's LiteRT deprecation notice
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=str(model_path))
    (inp,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(inp["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images.astype(inp["dtype"]))
    interpreter.invoke()
    (out,) = interpreter.get_output_details()
    return interpreter.get_tensor(out["index"])


def export_student(
    student: keras.Model,
    directory: str | os.PathLike,
    check_images: np.ndarray,
    tflite: tuple[str, ...] = ("float",),
) -> ExportReport:
    """Exports the student and checks each export against it.

    Writes `directory/saved_model` (a `serve` signature) and, per mode in
    `tflite`, `directory/student_{mode}.tflite`; reloads every file, runs it
    on `check_images` and records the largest difference from the student.

    Args:
        student: The trained student.
        directory: Output directory (created).
        check_images: A batch of real inputs; also the int8 representative
            set.
        tflite: TFLite modes among `"float"`, `"dynamic"` (dynamic-range
            quantised) and `"int8"` (weights and activations). Defaults to
            `("float",)`.

    Returns:
        An `ExportReport`.

    Example:

    >>> report = keras_spkd.export_student(distiller.student, "out", x_test[:64])
    >>> report.saved_model_max_abs_diff < 1e-5
    True
    """
    unknown = [m for m in tflite if m not in TFLITE_MODES]
    if unknown:
        raise ValueError(f"Unknown TFLite mode(s) {unknown}; expected some of {TFLITE_MODES}.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = float32_student(student)
    expected = keras.ops.convert_to_numpy(model(check_images, training=False))

    saved_model = directory / "saved_model"
    model.export(str(saved_model), format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(str(saved_model))
    served = reloaded.serve(tf.constant(check_images, tf.float32)).numpy()
    report = ExportReport(
        str(saved_model), _size(saved_model), float(np.abs(served - expected).max())
    )
    for mode in tflite:
        path = directory / f"student_{mode}.tflite"
        path.write_bytes(_tflite_bytes(saved_model, mode, check_images))
        got = tflite_predict(path, check_images)
        report.tflite[mode] = {
            "path": str(path),
            "bytes": path.stat().st_size,
            "max_abs_diff": float(np.abs(got - expected).max()),
            "argmax_agreement": float(np.mean(got.argmax(-1) == expected.argmax(-1))),
        }
    return report
