"""The one preprocessing layer: its formula, resize, config and .keras round trips."""

import keras
import numpy as np
import pytest

from keras_spkd.errors import ConfigError
from keras_spkd.preprocessing import (
    Preprocessing,
    find_preprocessing,
    parse_preprocessing,
    with_preprocessing,
)


def test_normalisation_is_the_zoo_formula_per_channel():
    x = np.random.default_rng(0).integers(0, 256, (4, 5, 5, 3)).astype("uint8")
    layer = Preprocessing(1 / 255, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    expected = (x.astype("float32") * np.float32(1 / 255) - [0.5, 0.4, 0.3]) / [0.2, 0.25, 0.3]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-6)
    cast_only = Preprocessing()
    assert not cast_only.normalises
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(cast_only(x)), x.astype("float32"))


def test_resize_and_applications_preprocess_input():
    x = np.full((2, 12, 10, 3), 255, "uint8")
    layer = Preprocessing(image_size=(8, 8), application="mobilenet_v2")
    out = keras.ops.convert_to_numpy(layer(x))
    assert out.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)  # mobilenet_v2: x / 127.5 - 1
    assert layer.compute_output_shape((None, 12, 10, 3)) == (None, 8, 8, 3)


def test_config_round_trip_and_keras_file(tmp_path):
    layer = Preprocessing(0.5, [1.0], [2.0], image_size=(6, 6), name="pre")
    again = Preprocessing.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, keras.layers.Flatten()(layer(inputs)))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(1).random((2, 9, 7, 1)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)
    assert isinstance(find_preprocessing(loaded), Preprocessing)


def test_declared_preprocessing_parses_or_names_the_choices():
    assert parse_preprocessing(None) is None
    assert parse_preprocessing("none") == {}
    assert parse_preprocessing("mobilenet_v2") == {"application": "mobilenet_v2"}
    assert parse_preprocessing("scale=1/255,offset=-0.5") == {"scale": 1 / 255, "mean": 0.5}
    with pytest.raises(ConfigError, match="Unknown preprocessing 'nonet'"):
        parse_preprocessing("nonet")
    with pytest.raises(ConfigError, match="scale=S,offset=O"):
        parse_preprocessing("scale=1,shift=2")
    with pytest.raises(ConfigError, match="positive std"):
        Preprocessing(std=[0.0])


def test_with_preprocessing_keeps_names_and_weights_and_takes_stored_images():
    from keras_spkd.models import digits_cnn

    model = digits_cnn(4)
    wrapped = with_preprocessing(model, Preprocessing(1 / 16))
    assert [layer.name for layer in wrapped.layers][1] == "preprocessing"
    assert {layer.name for layer in model.layers} <= {layer.name for layer in wrapped.layers}
    x = np.random.default_rng(2).integers(0, 17, (3, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(wrapped(x), model(x / 16), rtol=1e-5, atol=1e-6)
    assert wrapped.get_layer("group2") is not model.get_layer("group2")  # no shared state
