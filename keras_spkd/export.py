"""Export students that deploy as they are: stored images in, logits and probabilities out.

An export holds the student and its preprocessing, the same
`keras_spkd.Preprocessing` layer that training and evaluation used (cast,
any declared resize, normalisation), so it takes images exactly as the
dataset stores them: `uint8` 0-255 for image datasets, 0-16 floats for the
digits. When the preprocessing resizes (`--image-size`), the export takes
images of any height and width and resizes them as training did.
It holds no teacher and no keras-spkd code: the SavedModel loads with
`tf.saved_model.load`, the TFLite files with `tf.lite.Interpreter`.

The SavedModel's serving signature (`serving_default`, also callable as
`.serve`):

- input `images`: `(batch, *image shape)`, the stored dtype; `.serve` also
  takes float32 pixel values (taken as they are, never cast to integers;
  float64 is refused); images of another size are refused unless the
  preprocessing resizes; a batch of 0 images gives 0 rows;
- outputs `logits` (float32, `(batch, classes)`) and `probabilities`
  (their softmax).

The class names travel with it: `class_names.txt` beside the SavedModel
(one per line, label order) and a `class_names()` function on the loaded
object (`tf.saved_model.load(path).class_names()`).

TFLite comes in three variants: `float`; `dynamic` (dynamic-range: int8
weights, float activations); `int8` (full-integer: int8 built-in ops only,
`uint8` input for `uint8` images and `int8` input otherwise, `int8` outputs;
calibrated on a seeded sample of *training* images). A quantised input is
*not* the stored pixels: it is `q = round(x / scale + zero_point)` of the
stored pixel values `x`, with `scale, zero_point =
interpreter.get_input_details()[0]["quantization"]` (for the digits about
0.0627 and -128); `tflite_predict` applies it, and dequantises the outputs,
`(q - zero_point) * scale`.

A student trained under mixed precision is rebuilt in float32 first, so the
exports compute in float32 and convert to TFLite without Flex ops.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_spkd._quiet import drop_cpp_log_lines
from keras_spkd.preprocessing import Preprocessing, find_preprocessing

TFLITE_MODES = ("float", "dynamic", "int8")
INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probabilities")


@dataclass
class ExportReport:
    """What was written, its size, and how each export does on the test images.

    Attributes:
        saved_model: Path of the SavedModel directory.
        saved_model_bytes: Its size on disk.
        saved_model_max_abs_diff: Largest |export logits - student logits|
            over the test images.
        input_dtype: The dtype the exports take (the stored images' dtype;
            the SavedModel's `serve` takes float32 as well).
        preprocessing: The preprocessing built into the exports
            (`Preprocessing.describe()`: scale, mean, std, application,
            image_size), or `None`.
        keras: The Keras student's own figures (`accuracy` on the test set,
            `bytes` of its weights as float32).
        saved_model_accuracy: The SavedModel's test accuracy (with labels).
        tflite: Per TFLite variant: `path`, `bytes`, `accuracy` (with
            labels), `agreement` (share of test images whose class agrees
            with the Keras student's), `max_abs_diff` (of the logits,
            dequantised), `input_dtype`, `output_dtype`.
        calibration: For `int8`: `split` ("train"), `count`, `seed` and a
            `sha256` fingerprint of the calibration images, in order.
    """

    saved_model: str
    saved_model_bytes: int
    saved_model_max_abs_diff: float
    input_dtype: str = "float32"
    preprocessing: dict | None = None
    keras: dict = field(default_factory=dict)
    saved_model_accuracy: float | None = None
    tflite: dict = field(default_factory=dict)
    calibration: dict | None = None
    class_names: list | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self) -> list[dict]:
        """One row per model: `model`, `bytes`, `accuracy`, `agreement` with the student."""
        rows = [
            {
                "model": "keras student",
                "bytes": self.keras.get("bytes"),
                "accuracy": self.keras.get("accuracy"),
                "agreement": 1.0,
            },
            {
                "model": "saved_model",
                "bytes": self.saved_model_bytes,
                "accuracy": self.saved_model_accuracy,
                "agreement": self.keras.get("saved_model_agreement"),
            },
        ]
        for mode, figures in self.tflite.items():
            rows.append(
                {
                    "model": f"tflite {mode}",
                    "bytes": figures["bytes"],
                    "accuracy": figures["accuracy"],
                    "agreement": figures["agreement"],
                }
            )
        return rows


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def fingerprint(images: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes (C order)."""
    images = np.ascontiguousarray(images)
    digest = hashlib.sha256(f"{images.dtype}{images.shape}".encode())
    digest.update(images.tobytes())
    return digest.hexdigest()


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


def as_layer(preprocessing) -> Preprocessing | None:
    """A `Preprocessing` layer from itself, or from `{"scale", "mean", "std"}` (`None` stays)."""
    if preprocessing is None or isinstance(preprocessing, Preprocessing):
        return preprocessing
    if not isinstance(preprocessing, Mapping):
        raise ValueError(
            f"preprocessing must be a keras_spkd.Preprocessing layer or a dict with 'scale', "
            f"'mean' and 'std'; received {type(preprocessing).__name__}."
        )
    missing = {"scale", "mean", "std"} - set(preprocessing)
    if missing:
        raise ValueError(
            f"preprocessing needs 'scale', 'mean' and 'std' (as DataBundle.preprocessing "
            f"records them); {sorted(missing)} missing from {dict(preprocessing)!r}."
        )
    return Preprocessing(float(preprocessing["scale"]), preprocessing["mean"], preprocessing["std"])


def _check_channels(layer: Preprocessing | None, channels: int) -> None:
    if layer is None:
        return
    for name in ("mean", "std"):
        if len(getattr(layer, name)) not in (1, channels):
            raise ValueError(
                f"preprocessing {name} needs 1 or {channels} values (one per channel); "
                f"received {len(getattr(layer, name))}."
            )


def _input_shape(student: keras.Model, layer: Preprocessing | None) -> tuple:
    """The stored images' shape: any height and width when a preprocessing resizes."""
    inner = find_preprocessing(student)
    shape = tuple(student.inputs[0].shape[1:])
    if any(p is not None and p.image_size for p in (layer, inner)):
        return (None, None, shape[-1])
    return shape


def deployable_model(
    student: keras.Model,
    preprocessing=None,
    input_dtype: str = "float32",
) -> keras.Model:
    """Wraps the student: stored images in, `{"logits", "probabilities"}` out.

    Args:
        student: The trained student (logits out); a half-precision student
            is copied to float32 first. One trained by the workflow carries
            its `Preprocessing` layer already.
        preprocessing: A `keras_spkd.Preprocessing` layer (e.g. `bundle.layer`)
            or `{"scale": s, "mean": [...], "std": [...]}` to put in front.
            Defaults to `None` (the student takes the images as they are).
        input_dtype: The stored images' dtype, e.g. `"uint8"`. Defaults to
            `"float32"`.

    Returns:
        A functional `keras.Model` with input `images`.
    """
    student = float32_student(student)
    layer = as_layer(preprocessing)
    shape = _input_shape(student, layer)
    _check_channels(layer, shape[-1])
    images = keras.Input(shape, dtype=input_dtype, name=INPUT_NAME)
    x = (layer or Preprocessing(name="to_float"))(images)  # casts to float32
    logits = keras.layers.Identity(name="logits")(student(x))
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    return keras.Model(
        images, {"logits": logits, "probabilities": probabilities}, name=f"{student.name}_deploy"
    )


def calibration_sample(images: np.ndarray, count: int = 300, seed: int = 0) -> np.ndarray:
    """`count` images drawn without replacement by `seed` (all of them if fewer)."""
    order = np.random.default_rng(seed).permutation(len(images))
    return images[np.sort(order[: min(count, len(images))])]


def _write_saved_model(
    model: keras.Model,
    path: Path,
    dtype: str,
    class_names: Sequence[str] | None = None,
    guard: bool = False,
) -> None:
    """Writes `model` as a SavedModel whose `serve` takes `dtype` images.

    With `guard` (the SavedModel users get), `serve` also takes float32
    images (the stored values, never cast to integers; `serving_default` keeps
    `dtype`), refuses images of another size than the model's (unless its
    preprocessing resizes) and answers a batch of 0 images with 0 rows; the
    TFLite conversions start from an unguarded twin (no control flow).
    """
    shape = (None, *model.inputs[0].shape[1:])
    size = tuple(shape[1:3])

    def serve(images):
        images = tf.cast(images, model.inputs[0].dtype)  # exact for stored integers
        if not guard:
            return model(images, training=False)
        if None not in size:
            tf.debugging.assert_equal(
                tf.shape(images)[1:3],
                tf.constant(size, tf.int32),
                message=f"images must be {size[0]}x{size[1]}: this model does not resize "
                "(export it with a preprocessing that does, e.g. keras-spkd --image-size)",
            )
        # A batch of 0 gives 0 rows: one blank image rides along and is dropped after
        # (no control flow, so the graph stays plain).
        blank = tf.zeros(tf.concat([[1], tf.shape(images)[1:]], 0), images.dtype)
        outputs = model(tf.concat([images, blank], 0), training=False)
        return {name: value[:-1] for name, value in outputs.items()}

    archive = keras.export.ExportArchive()
    archive.track(model)
    function = tf.function(serve)
    for each in dict.fromkeys([dtype, "float32"] if guard else [dtype]):
        function.get_concrete_function(tf.TensorSpec(shape, each, INPUT_NAME))
    archive.add_endpoint("serve", function)
    if class_names is not None:
        names = tf.constant(list(class_names))
        archive.add_endpoint("class_names", lambda: names, input_signature=[])
    archive.write_out(str(path), verbose=False)


def _tflite_bytes(
    student: keras.Model,
    layer,
    mode: str,
    input_dtype: str,
    calibration: np.ndarray | None,
) -> bytes:
    def convert(source: Path) -> bytes:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(source))
        if mode in ("dynamic", "int8"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "int8":

            def representative_dataset():
                for image in calibration:
                    yield [image[None].astype("float32")]

            converter.representative_dataset = representative_dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8 if input_dtype == "uint8" else tf.int8
            converter.inference_output_type = tf.int8
        with drop_cpp_log_lines():  # the converter's printf lines
            return converter.convert()

    # TFLite takes the stored dtype (float for full-integer, which quantises a float
    # input): convert an unguarded twin, written to a directory that is removed after.
    dtype = "float32" if mode == "int8" else input_dtype
    with tempfile.TemporaryDirectory(prefix="keras_spkd_tflite_") as twin:
        _write_saved_model(deployable_model(student, layer, dtype), Path(twin), dtype)
        return convert(Path(twin))


def _interpreter(model_path: str | os.PathLike):
    with warnings.catch_warnings():  # tf.lite.Interpreter's LiteRT deprecation notice
        warnings.simplefilter("ignore", UserWarning)
        with drop_cpp_log_lines():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
            interpreter = tf.lite.Interpreter(model_path=str(model_path))
            interpreter.allocate_tensors()
        return interpreter


def _quantise(values: np.ndarray, details: dict) -> np.ndarray:
    dtype = np.dtype(details["dtype"])
    scale, zero_point = details["quantization"]
    if dtype.kind not in "iu" or not scale:
        return values.astype(dtype)
    info = np.iinfo(dtype)
    q = np.round(values.astype("float64") / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantise(values: np.ndarray, details: dict) -> np.ndarray:
    scale, zero_point = details["quantization"]
    if values.dtype.kind not in "iu" or not scale:
        return values
    return ((values.astype("float32") - zero_point) * scale).astype("float32")


def tflite_io(model_path: str | os.PathLike) -> dict:
    """`{"inputs"|"outputs": {name: {"dtype", "scale", "zero_point"}}}` of a TFLite model."""
    runner = _interpreter(model_path).get_signature_runner()

    def describe(details):
        return {
            name: {
                "dtype": np.dtype(d["dtype"]).name,
                "scale": float(d["quantization"][0]),
                "zero_point": int(d["quantization"][1]),
            }
            for name, d in details.items()
        }

    return {
        "inputs": describe(runner.get_input_details()),
        "outputs": describe(runner.get_output_details()),
    }


def tflite_predict(
    model_path: str | os.PathLike, images: np.ndarray, output: str | None = "logits"
) -> np.ndarray | dict[str, np.ndarray]:
    """Runs a TFLite model on a batch of real values; returns real values.

    The input is resized to the batch. A quantised input (int8 / uint8) is
    fed `round(images / scale + zero_point)` (clipped); quantised outputs come
    back dequantised, `(q - zero_point) * scale`.

    Args:
        model_path: A `.tflite` file with one input.
        images: The batch, as real values (e.g. stored pixels).
        output: The output to return. Defaults to `"logits"`; `None` returns
            `{name: array}` of every output.

    Returns:
        A float32 array (or a dict of them).
    """
    interpreter = _interpreter(model_path)
    if interpreter.get_signature_list():
        runner = interpreter.get_signature_runner()
        ((name, details),) = runner.get_input_details().items()
        raw = runner(**{name: _quantise(np.asarray(images), details)})
        out_details = runner.get_output_details()
        results = {k: _dequantise(v, out_details[k]) for k, v in raw.items()}
    else:  # a model converted without a signature: one input, outputs by index
        (details,) = interpreter.get_input_details()
        interpreter.resize_tensor_input(details["index"], np.shape(images))
        interpreter.allocate_tensors()
        interpreter.set_tensor(details["index"], _quantise(np.asarray(images), details))
        interpreter.invoke()
        results = {
            d["name"]: _dequantise(interpreter.get_tensor(d["index"]), d)
            for d in interpreter.get_output_details()
        }
    if output is None:
        return results
    if output not in results and len(results) == 1:
        return next(iter(results.values()))
    return results[output]


def _figures(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> dict:
    predicted = logits.argmax(-1)
    return {
        "accuracy": None if labels is None else float(np.mean(predicted == labels)),
        "agreement": float(np.mean(predicted == reference.argmax(-1))),
        "max_abs_diff": float(np.abs(logits - reference).max()),
    }


def export_student(
    student: keras.Model,
    directory: str | os.PathLike,
    test_images: np.ndarray,
    tflite: Sequence[str] = ("float",),
    *,
    test_labels: np.ndarray | None = None,
    preprocessing: Mapping | Preprocessing | None = None,
    calibration_images: np.ndarray | None = None,
    calibration_size: int = 300,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> ExportReport:
    """Exports the student with its preprocessing inside and checks every export.

    Writes `directory/saved_model` (see the module docstring for its
    signature) and, per variant in `tflite`, `directory/student_{variant}.tflite`;
    reloads each, feeds it `test_images` as stored and compares it with the
    Keras student fed the preprocessed images.

    Args:
        student: The trained student (takes preprocessed images, returns
            logits).
        directory: Output directory (created).
        test_images: Held-out images *as stored* (their dtype becomes the
            exports' input dtype), e.g. `bundle.arrays["test"][0]`.
        tflite: Variants among `"float"`, `"dynamic"` and `"int8"`.
            Defaults to `("float",)`.
        test_labels: Their labels, for accuracies. Defaults to `None`.
        preprocessing: A `keras_spkd.Preprocessing` layer (`bundle.layer`) or
            `bundle.preprocessing` (model input = `(stored * scale - mean) /
            std`) to put in front. Defaults to `None` (the student takes the
            stored images: it carries its own preprocessing, or needs none).
        calibration_images: Training images as stored; `int8` is calibrated
            on `calibration_size` of them drawn by `seed`. Required for
            `int8`; never the test images.
        calibration_size: Calibration images. Defaults to `300`.
        seed: Seed of the calibration sample. Defaults to `0`.
        class_names: One name per label, written beside the SavedModel and
            served by its `class_names()` function. Defaults to `None`.

    Returns:
        An `ExportReport`.

    Example:

    >>> x_train, _ = bundle.arrays["train"]
    >>> x_test, y_test = bundle.arrays["test"]
    >>> report = keras_spkd.export_student(
    ...     student, "out", x_test, ("float", "dynamic", "int8"), test_labels=y_test,
    ...     preprocessing=bundle.preprocessing, calibration_images=x_train)
    >>> report.table()
    """
    unknown = [m for m in tflite if m not in TFLITE_MODES]
    if unknown:
        raise ValueError(f"Unknown TFLite mode(s) {unknown}; expected some of {TFLITE_MODES}.")
    test_images = np.asarray(test_images)
    calibration = None
    if "int8" in tflite:
        if calibration_images is None:
            raise ValueError(
                "The int8 TFLite export needs calibration_images: training images as stored "
                "(e.g. bundle.arrays['train'][0]), never the test images it is checked on."
            )
        calibration_images = np.asarray(calibration_images)
        if np.shares_memory(calibration_images, test_images) or (
            calibration_images.shape == test_images.shape
            and np.array_equal(calibration_images, test_images)
        ):
            raise ValueError(
                "calibration_images are the test images; calibrate on training images."
            )
        calibration = calibration_sample(calibration_images, calibration_size, seed)
    input_dtype = test_images.dtype.name
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    layer = as_layer(preprocessing)
    model = deployable_model(student, layer, "float32")  # the stored dtype is cast in serve
    inner = float32_student(student)
    preprocessed = test_images.astype("float32")
    if layer is not None:  # the same layer, outside the exported graph
        preprocessed = keras.ops.convert_to_numpy(layer(preprocessed))
    expected = keras.ops.convert_to_numpy(inner.predict(preprocessed, verbose=0))
    labels = None if test_labels is None else np.asarray(test_labels).ravel()
    described = layer or find_preprocessing(student)

    saved_model = directory / "saved_model"
    _write_saved_model(model, saved_model, input_dtype, class_names, guard=True)
    if class_names is not None:
        (directory / "class_names.txt").write_text("".join(f"{n}\n" for n in class_names))
    reloaded = tf.saved_model.load(str(saved_model))
    served = reloaded.signatures["serving_default"](**{INPUT_NAME: tf.constant(test_images)})
    served_logits = served["logits"].numpy()
    figures = _figures(served_logits, expected, labels)
    report = ExportReport(
        saved_model=str(saved_model),
        saved_model_bytes=_size(saved_model),
        saved_model_max_abs_diff=figures["max_abs_diff"],
        input_dtype=input_dtype,
        preprocessing=None if described is None else described.describe(),
        class_names=None if class_names is None else list(class_names),
        keras={
            "accuracy": None if labels is None else float(np.mean(expected.argmax(-1) == labels)),
            "bytes": int(sum(np.prod(w.shape) for w in inner.weights) * 4),
            "saved_model_agreement": figures["agreement"],
        },
        saved_model_accuracy=figures["accuracy"],
    )
    if calibration is not None:
        report.calibration = {
            "split": "train",
            "count": len(calibration),
            "seed": seed,
            "sha256": fingerprint(calibration),
        }
    for mode in tflite:
        path = directory / f"student_{mode}.tflite"
        path.write_bytes(_tflite_bytes(student, layer, mode, input_dtype, calibration))
        io = tflite_io(path)
        got = tflite_predict(path, test_images)
        report.tflite[mode] = {
            "path": str(path),
            "bytes": path.stat().st_size,
            **_figures(got, expected, labels),
            "input_dtype": io["inputs"][INPUT_NAME]["dtype"],
            "output_dtype": io["outputs"]["logits"]["dtype"],
        }
    return report
