"""Shared fixtures: tiny functional teacher/student pairs and quiet TF."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Students and teachers the workflow saves start with keras_spkd.Preprocessing: register
# it for tests that load them with plain keras.saving.load_model.
import keras_spkd.preprocessing  # noqa: E402, F401


def small_cnn(
    prefix: str, width: int, input_shape=(8, 8, 1), classes=10, batch_size=None
) -> keras.Model:
    """Two conv layers (`{prefix}_conv1`, `{prefix}_group`) and a dense head."""
    inputs = keras.Input(input_shape, batch_size=batch_size, name=f"{prefix}_in")
    h = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{prefix}_conv1")(
        inputs
    )
    h = keras.layers.Conv2D(
        width, 3, strides=2, padding="same", activation="relu", name=f"{prefix}_group"
    )(h)
    h = keras.layers.GlobalAveragePooling2D(name=f"{prefix}_pool")(h)
    outputs = keras.layers.Dense(classes, name=f"{prefix}_logits")(h)
    return keras.Model(inputs, outputs, name=prefix)


@pytest.fixture
def pair():
    keras.utils.set_random_seed(0)
    return small_cnn("t", 16), small_cnn("s", 4)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 32)
    return x, y


@pytest.fixture(autouse=True)
def _float32_policy():
    yield
    keras.config.set_dtype_policy("float32")


def sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def to_numpy(value):
    """A backend tensor (TensorFlow, JAX or PyTorch, with grad or not) as a NumPy array."""
    if isinstance(value, (np.ndarray, float, int, np.generic)):
        return value
    return keras.ops.convert_to_numpy(value)


def assert_allclose(actual, desired, **kwargs):
    """`numpy.testing.assert_allclose` that takes tensors of any Keras backend."""
    np.testing.assert_allclose(to_numpy(actual), to_numpy(desired), **kwargs)
