"""Exported students reproduce the in-memory student and load without keras-spkd."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spkd.data import digits_arrays
from keras_spkd.export import export_student, float32_student, tflite_predict
from keras_spkd.models import digits_cnn


@pytest.fixture(scope="module")
def trained_student():
    keras.utils.set_random_seed(0)
    x, y = digits_arrays()["train"]
    student = digits_cnn(8)
    student.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    student.fit(x, y, epochs=3, batch_size=64, verbose=0)  # non-trivial BN statistics
    return student, digits_arrays()["test"][0][:64]


def test_saved_model_and_tflite_agree_with_the_student(trained_student, tmp_path):
    student, images = trained_student
    report = export_student(student, tmp_path, images, tflite=("float", "dynamic", "int8"))
    expected = student.predict(images, verbose=0)
    assert report.saved_model_max_abs_diff < 1e-5
    assert report.tflite["float"]["max_abs_diff"] < 1e-5
    assert report.tflite["float"]["argmax_agreement"] == 1.0
    # Quantised: stated bounds (logits span about +-10 here).
    assert report.tflite["dynamic"]["max_abs_diff"] < 0.5
    assert report.tflite["int8"]["max_abs_diff"] < 1.0
    assert report.tflite["int8"]["argmax_agreement"] >= 0.9
    assert report.tflite["int8"]["bytes"] < report.tflite["float"]["bytes"]
    again = tflite_predict(report.tflite["float"]["path"], images)
    np.testing.assert_allclose(again, expected, atol=1e-5)
    assert report.saved_model_bytes > 0


def test_saved_model_serves_in_a_process_without_keras_spkd(trained_student, tmp_path):
    student, images = trained_student
    report = export_student(student, tmp_path, images, tflite=())
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({report.saved_model!r})
        out = loaded.serve(tf.constant(np.load({str(tmp_path / "images.npy")!r}))).numpy()
        np.save({str(tmp_path / "served.npy")!r}, out)
        assert not any(m.startswith("keras_spkd") for m in sys.modules), "imported keras_spkd"
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=300)
    np.testing.assert_allclose(
        np.load(tmp_path / "served.npy"), student.predict(images, verbose=0), atol=1e-5
    )


def test_mixed_precision_student_exports_float32(trained_student, tmp_path):
    trained, images = trained_student
    keras.config.set_dtype_policy("mixed_float16")
    student = digits_cnn(8)
    keras.config.set_dtype_policy("float32")
    student.set_weights(trained.get_weights())
    assert student.get_layer("g1_conv").compute_dtype == "float16"
    copy = float32_student(student)
    assert all(layer.compute_dtype == "float32" for layer in copy.layers)
    report = export_student(student, tmp_path, images, tflite=("float",))
    loaded = tf.saved_model.load(report.saved_model)  # keep it referenced while serving
    served = loaded.serve(tf.constant(images))
    assert served.dtype == tf.float32
    # The float32 export matches the float32 twin exactly and the float16 student closely.
    assert report.saved_model_max_abs_diff < 1e-5
    np.testing.assert_allclose(served.numpy(), trained.predict(images, verbose=0), atol=1e-4)
    assert report.tflite["float"]["max_abs_diff"] < 1e-5


def test_unknown_tflite_mode_is_rejected(trained_student, tmp_path):
    student, images = trained_student
    with pytest.raises(ValueError, match="Unknown TFLite mode.*'int4'"):
        export_student(student, tmp_path, images, tflite=("int4",))
