"""Exports take images as stored, match the Keras student, and quantise honestly."""

import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spkd.data import load_digits
from keras_spkd.export import (
    calibration_sample,
    export_student,
    fingerprint,
    float32_student,
    tflite_io,
    tflite_predict,
)
from keras_spkd.models import digits_cnn

TEST_IMAGES = 240


def _trained(x_model, y, epochs=6):
    keras.utils.set_random_seed(0)
    student = digits_cnn(8)
    student.compile(
        keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    student.fit(x_model, y, epochs=epochs, batch_size=64, verbose=0)  # non-trivial BN statistics
    return student


@pytest.fixture(scope="module")
def digits():
    """The digits as stored (float 0..16), a student trained on them, its export."""
    bundle = load_digits()
    x_train, y_train = bundle.arrays["train"]
    x_test, y_test = (a[:TEST_IMAGES] for a in bundle.arrays["test"])
    student = _trained(bundle.preprocess(x_train).numpy(), y_train)
    return bundle, student, (x_train, y_train), (x_test, y_test)


@pytest.fixture(scope="module")
def digits_export(digits, tmp_path_factory):
    bundle, student, (x_train, _), (x_test, y_test) = digits
    report = export_student(
        student,
        tmp_path_factory.mktemp("export"),
        x_test,
        ("float", "dynamic", "int8"),
        test_labels=y_test,
        preprocessing=bundle.preprocessing,
        calibration_images=x_train,
    )
    return report


def test_exports_fed_stored_digits_agree_with_the_student(digits, digits_export):
    bundle, student, _, (x_test, y_test) = digits
    report = digits_export
    expected = student.predict(bundle.preprocess(x_test), verbose=0)
    keras_accuracy = float(np.mean(expected.argmax(-1) == y_test))
    assert report.keras["accuracy"] == pytest.approx(keras_accuracy)
    assert keras_accuracy > 0.6  # a student worth agreeing with
    # The student itself fed stored 0..16 pixels is another model (the 18.7%).
    raw = student.predict(x_test, verbose=0).argmax(-1)
    assert np.mean(raw == expected.argmax(-1)) < 0.9

    loaded = tf.saved_model.load(report.saved_model)  # keep it referenced while serving
    served = loaded.signatures["serving_default"](images=tf.constant(x_test))
    np.testing.assert_allclose(served["logits"].numpy(), expected, atol=1e-5)
    assert report.saved_model_max_abs_diff < 1e-5 and report.saved_model_accuracy == keras_accuracy

    float_tflite = tflite_predict(report.tflite["float"]["path"], x_test)
    np.testing.assert_allclose(float_tflite, expected, atol=1e-4)
    assert report.tflite["float"]["agreement"] == 1.0
    # Quantised variants: stated bounds (the logits span about +-10 here).
    assert report.tflite["dynamic"]["agreement"] >= 0.97
    assert report.tflite["dynamic"]["max_abs_diff"] < 0.5
    assert report.tflite["int8"]["agreement"] >= 0.95
    assert report.tflite["int8"]["max_abs_diff"] < 1.5
    for mode, figures in report.tflite.items():
        assert abs(figures["accuracy"] - keras_accuracy) <= 0.03, mode
        assert figures["bytes"] > 0
    assert report.tflite["int8"]["bytes"] < report.tflite["float"]["bytes"]
    assert report.tflite["dynamic"]["bytes"] < report.tflite["float"]["bytes"]
    rows = report.table()
    assert [row["model"] for row in rows] == [
        "keras student",
        "saved_model",
        "tflite float",
        "tflite dynamic",
        "tflite int8",
    ]
    assert all(row["accuracy"] is not None and row["bytes"] > 0 for row in rows)


def test_serving_signature_has_named_input_and_outputs(digits, digits_export):
    _, _, _, (x_test, _) = digits
    loaded = tf.saved_model.load(digits_export.saved_model)
    signature = loaded.signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert list(inputs) == ["images"]
    assert inputs["images"].dtype == tf.float32 and inputs["images"].shape.as_list() == [
        None,
        8,
        8,
        1,
    ]
    assert set(signature.structured_outputs) == {"logits", "probabilities"}
    out = loaded.serve(tf.constant(x_test[:5]))
    np.testing.assert_allclose(
        out["probabilities"].numpy(), tf.nn.softmax(out["logits"]).numpy(), atol=1e-6
    )
    for variant in ("float", "int8"):
        io = tflite_io(digits_export.tflite[variant]["path"])
        assert list(io["inputs"]) == ["images"]
        assert set(io["outputs"]) == {"logits", "probabilities"}


def test_int8_variant_is_full_integer(digits_export):
    path = digits_export.tflite["int8"]["path"]
    with warnings.catch_warnings():  # LiteRT's deprecation notice; the API still works
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=path)
    (inp,) = interpreter.get_input_details()
    assert inp["dtype"] == np.int8  # digits are stored as floats: int8 input
    scale, zero_point = inp["quantization"]
    assert scale == pytest.approx(16 / 255, rel=0.05)  # the calibrated range is 0..16
    assert [d["dtype"] for d in interpreter.get_output_details()] == [np.int8, np.int8]
    float_tensors = [
        d["name"] for d in interpreter.get_tensor_details() if d["dtype"] == np.float32
    ]
    assert float_tensors == []  # integer kernels only: no float activations or weights
    assert digits_export.tflite["int8"]["input_dtype"] == "int8"
    assert digits_export.tflite["int8"]["output_dtype"] == "int8"
    assert tflite_io(digits_export.tflite["dynamic"]["path"])["inputs"]["images"]["dtype"] == (
        "float32"  # dynamic range: float in
    )


def test_uint8_images_go_in_as_uint8_with_the_normalisation_inside(digits, tmp_path):
    bundle, _, (x_train, y_train), (x_test, y_test) = digits
    # Digits as 8-bit pixels, normalised by a made-up mean and std (as Fashion-MNIST is).
    as_uint8 = lambda x: np.round(x * 255 / 16).astype("uint8")  # noqa: E731
    train8, test8 = as_uint8(x_train), as_uint8(x_test)
    preprocessing = {"scale": 1 / 255, "mean": [0.3], "std": [0.4]}
    model_input = lambda x: (x.astype("float32") / 255 - 0.3) / 0.4  # noqa: E731
    student = _trained(model_input(train8), y_train, epochs=3)
    report = export_student(
        student,
        tmp_path,
        test8,
        ("float", "int8"),
        test_labels=y_test,
        preprocessing=preprocessing,
        calibration_images=train8,
        calibration_size=200,
    )
    expected = student.predict(model_input(test8), verbose=0)
    assert report.input_dtype == "uint8"
    loaded = tf.saved_model.load(report.saved_model)
    assert loaded.signatures["serving_default"].structured_input_signature[1]["images"].dtype == (
        tf.uint8
    )
    np.testing.assert_allclose(loaded.serve(tf.constant(test8))["logits"], expected, atol=1e-4)
    assert report.tflite["float"]["input_dtype"] == "uint8"
    assert report.tflite["float"]["max_abs_diff"] < 1e-4
    io = tflite_io(report.tflite["int8"]["path"])
    assert io["inputs"]["images"]["dtype"] == "uint8"
    assert io["outputs"]["logits"]["dtype"] == "int8"
    # Calibrated on 0..255 pixels: the quantised input is (almost) the pixel itself.
    assert io["inputs"]["images"]["scale"] == pytest.approx(1.0, rel=0.1)
    assert report.tflite["int8"]["agreement"] >= 0.95
    assert report.calibration["count"] == 200


def test_calibration_uses_training_images_only(digits, tmp_path, monkeypatch):
    bundle, student, (x_train, _), (x_test, y_test) = digits
    fed = []
    original = tf.lite.TFLiteConverter.from_saved_model

    def spying_from_saved_model(*args, **kwargs):
        converter = original(*args, **kwargs)
        convert = converter.convert

        def recording_convert():
            if converter.representative_dataset is not None:
                samples = converter.representative_dataset

                def recording():
                    for sample in samples():
                        fed.append(np.array(sample[0][0]))
                        yield sample

                converter.representative_dataset = recording
            return convert()

        converter.convert = recording_convert
        return converter

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model", spying_from_saved_model)
    report = export_student(
        student,
        tmp_path,
        x_test,
        ("int8",),
        test_labels=y_test,
        preprocessing=bundle.preprocessing,
        calibration_images=x_train,
        calibration_size=120,
        seed=3,
    )
    assert len(fed) == 120
    train_rows = {row.tobytes() for row in x_train}
    assert all(image.tobytes() in train_rows for image in fed)
    chosen = calibration_sample(x_train, 120, seed=3)
    assert fingerprint(np.stack(fed)) == fingerprint(chosen) == report.calibration["sha256"]
    assert report.calibration == {
        "split": "train",
        "count": 120,
        "seed": 3,
        "sha256": fingerprint(chosen),
    }
    assert fingerprint(calibration_sample(x_train, 120, seed=4)) != fingerprint(chosen)
    with pytest.raises(ValueError, match="calibration_images are the test images"):
        export_student(
            student, tmp_path / "bad", x_test, ("int8",), calibration_images=x_test.copy()
        )
    with pytest.raises(ValueError, match="needs calibration_images"):
        export_student(student, tmp_path / "none", x_test, ("int8",))


def test_tflite_predict_resizes_to_any_batch(digits, digits_export):
    _, _, _, (x_test, _) = digits
    for variant in ("float", "int8"):
        path = digits_export.tflite[variant]["path"]
        whole = tflite_predict(path, x_test[:7])
        assert whole.shape == (7, 10) and whole.dtype == np.float32
        np.testing.assert_allclose(tflite_predict(path, x_test[:3]), whole[:3], atol=1e-6)
        both = tflite_predict(path, x_test[:2], output=None)
        assert set(both) == {"logits", "probabilities"}
        np.testing.assert_allclose(both["probabilities"].sum(-1), 1.0, atol=0.05)


def test_saved_model_serves_in_a_process_without_keras_spkd(digits, digits_export, tmp_path):
    bundle, student, _, (x_test, _) = digits
    np.save(tmp_path / "images.npy", x_test)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({digits_export.saved_model!r})
        images = tf.constant(np.load({str(tmp_path / "images.npy")!r}))
        out = loaded.signatures["serving_default"](images=images)["logits"].numpy()
        np.save({str(tmp_path / "served.npy")!r}, out)
        assert not any(m.startswith("keras_spkd") for m in sys.modules), "imported keras_spkd"
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=300)
    np.testing.assert_allclose(
        np.load(tmp_path / "served.npy"),
        student.predict(bundle.preprocess(x_test), verbose=0),
        atol=1e-5,
    )


def test_mixed_precision_student_exports_float32(digits, tmp_path):
    bundle, trained, _, (x_test, _) = digits
    keras.config.set_dtype_policy("mixed_float16")
    student = digits_cnn(8)
    keras.config.set_dtype_policy("float32")
    student.set_weights(trained.get_weights())
    assert student.get_layer("g1_conv").compute_dtype == "float16"
    copy = float32_student(student)
    assert all(layer.compute_dtype == "float32" for layer in copy.layers)
    report = export_student(
        student, tmp_path, x_test[:32], ("float",), preprocessing=bundle.preprocessing
    )
    loaded = tf.saved_model.load(report.saved_model)
    served = loaded.serve(tf.constant(x_test[:32]))["logits"]
    assert served.dtype == tf.float32
    assert report.saved_model_max_abs_diff < 1e-5  # the float32 twin, exactly
    expected = trained.predict(bundle.preprocess(x_test[:32]), verbose=0)
    np.testing.assert_allclose(served.numpy(), expected, atol=1e-4)
    assert report.tflite["float"]["max_abs_diff"] < 1e-4


def test_bad_settings_are_rejected(digits, tmp_path):
    _, student, _, (x_test, _) = digits
    with pytest.raises(ValueError, match="Unknown TFLite mode.*'int4'"):
        export_student(student, tmp_path, x_test, tflite=("int4",))
    with pytest.raises(ValueError, match="'std'.*missing"):
        export_student(student, tmp_path, x_test, preprocessing={"scale": 1, "mean": [0]})
    with pytest.raises(ValueError, match="positive std"):
        export_student(
            student, tmp_path, x_test, preprocessing={"scale": 1, "mean": [0], "std": [0]}
        )


def test_per_channel_normalisation_of_colour_images(tmp_path):
    keras.utils.set_random_seed(1)
    student = digits_cnn(4, input_shape=(8, 8, 3))
    images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    preprocessing = {"scale": 1 / 255, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
    report = export_student(student, tmp_path, images, (), preprocessing=preprocessing)
    model_input = (images / 255 - np.array(preprocessing["mean"])) / np.array(preprocessing["std"])
    expected = student.predict(model_input.astype("float32"), verbose=0)
    loaded = tf.saved_model.load(report.saved_model)
    np.testing.assert_allclose(loaded.serve(tf.constant(images))["logits"], expected, atol=1e-4)
    assert report.input_dtype == "uint8"
    assert report.preprocessing == {
        **preprocessing,
        "scale": [1 / 255],
        "application": None,
        "image_size": None,
    }
    with pytest.raises(ValueError, match="1 or 3 values"):
        export_student(
            student, tmp_path, images, (), preprocessing={**preprocessing, "std": [1, 2]}
        )


def test_the_saved_model_refuses_other_sizes_serves_empty_batches_and_floats(digits, tmp_path):
    """Issue 20, 18: a 32x32 image is refused by an 8x8 model, a batch of 0 gives 0 rows,
    and float images are taken as they are (not cast to uint8)."""
    bundle, _, (x_train, y_train), (x_test, y_test) = digits
    as_uint8 = lambda x: np.round(x * 255 / 16).astype("uint8")  # noqa: E731
    model_input = lambda x: (x.astype("float32") / 255 - 0.3) / 0.4  # noqa: E731
    student = _trained(model_input(as_uint8(x_train)), y_train, epochs=3)
    preprocessing = {"scale": 1 / 255, "mean": [0.3], "std": [0.4]}
    report = export_student(
        student, tmp_path, as_uint8(x_test), (), test_labels=y_test, preprocessing=preprocessing
    )
    loaded = tf.saved_model.load(report.saved_model)
    with pytest.raises(tf.errors.InvalidArgumentError, match="images must be 8x8"):
        loaded.signatures["serving_default"](images=tf.zeros((2, 32, 32, 1), tf.uint8))
    empty = loaded.serve(np.zeros((0, 8, 8, 1), "uint8"))
    assert empty["logits"].shape == (0, 10) and empty["probabilities"].shape == (0, 10)
    floats = as_uint8(x_test).astype("float32") + 0.4  # not integers: a cast would floor them
    expected = student.predict(model_input(floats), verbose=0)
    np.testing.assert_allclose(loaded.serve(floats)["logits"], expected, atol=1e-4)
    np.testing.assert_allclose(
        loaded.serve(as_uint8(x_test))["logits"],
        student.predict(model_input(as_uint8(x_test)), verbose=0),
        atol=1e-4,
    )
