"""Tapping intermediate layers: one pass, nested paths, clear errors."""

import keras
import numpy as np
import pytest

import keras_spkd
from tests.conftest import assert_allclose, small_cnn, to_numpy


def test_extractor_returns_features_and_the_models_own_predictions(data):
    x, _ = data
    model = small_cnn("m", 6)
    conv1, group, logits = keras_spkd.build_feature_extractor(model, ["m_conv1", "m_group"])(x)
    assert conv1.shape == (32, 8, 8, 6) and group.shape == (32, 4, 4, 6)
    assert_allclose(logits, model(x), atol=1e-6)
    direct = keras.Model(model.input, model.get_layer("m_group").output)(x)
    assert_allclose(group, direct, atol=1e-6)


def test_extractor_without_predictions_stops_at_deepest_tapped_layer():
    model = small_cnn("m", 6)
    extractor = keras_spkd.build_feature_extractor(model, ["m_conv1"], include_predictions=False)
    names = {layer.name for layer in extractor.layers}
    assert "m_conv1" in names and "m_logits" not in names and "m_group" not in names


def _backbone_model():
    backbone = small_cnn("bb", 5)
    backbone = keras.Model(backbone.input, backbone.get_layer("bb_pool").output, name="backbone")
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Rescaling(2.0, name="scale")(inputs)
    outputs = keras.layers.Dense(3, name="head")(backbone(h))
    return keras.Model(inputs, outputs, name="outer"), backbone


def test_nested_layer_is_reachable_by_path_and_shares_weights(data):
    x, _ = data
    model, backbone = _backbone_model()
    assert "backbone/bb_group" in keras_spkd.layer_paths(model)
    extractor = keras_spkd.build_feature_extractor(model, ["backbone/bb_group", "scale"])
    group, scaled, logits = extractor(x)
    inner = keras.Model(backbone.input, backbone.get_layer("bb_group").output)
    assert_allclose(group, inner(2.0 * x), atol=1e-5)
    assert_allclose(scaled, 2.0 * x, atol=1e-6)
    assert_allclose(logits, model(x), atol=1e-5)
    # Shared layers: a weight change in the model shows in the extractor.
    kernel = backbone.get_layer("bb_group").kernel
    kernel.assign(keras.ops.convert_to_numpy(kernel) * 3.0)
    assert_allclose(extractor(x)[0], inner(2.0 * x), atol=1e-5)
    assert not np.allclose(to_numpy(extractor(x)[0]), to_numpy(group))


def test_sequential_models_work_with_an_input_and_fail_clearly_without():
    seq = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="d1"), keras.layers.Dense(2, name="d2")]
    )
    feats, out = keras_spkd.build_feature_extractor(seq, ["d1"])(np.ones((5, 4)))
    assert feats.shape == (5, 3) and out.shape == (5, 2)
    unbuilt = keras.Sequential([keras.layers.Dense(3, name="d1")])
    with pytest.raises(ValueError, match=r"Sequential.*keras\.Input"):
        keras_spkd.build_feature_extractor(unbuilt, ["d1"])


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_subclassed_model_and_unknown_layer_are_rejected():
    model = _Subclassed()
    model(np.ones((1, 3)))
    with pytest.raises(ValueError, match="subclassed model with no symbolic graph"):
        keras_spkd.build_feature_extractor(model, ["dense"], role="teacher")
    with pytest.raises(ValueError, match=r"no layer 'conv9'\. Did you mean 'm_conv1'"):
        keras_spkd.build_feature_extractor(small_cnn("m", 2), ["conv9"])
    outer, _ = _backbone_model()
    with pytest.raises(ValueError, match="no layer 'backbone/nope'.*backbone/bb_group"):
        keras_spkd.build_feature_extractor(outer, ["backbone/nope"])
    with pytest.raises(TypeError, match="keras.Model"):
        keras_spkd.build_feature_extractor("not a model", ["x"])


def _wrapped(name, sequential=False):
    """The issue's model: a backbone (functional or Sequential) inside an outer model."""
    inputs = keras.Input((8, 8, 1))
    if sequential:
        backbone = keras.Sequential(
            [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="c")], name=name
        )
    else:
        inner = keras.Input((8, 8, 1))
        backbone = keras.Model(inner, keras.layers.Conv2D(4, 3, name="c")(inner), name=name)
    h = keras.layers.Rescaling(0.5, name="half")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(h))
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(pooled)), backbone


@pytest.mark.parametrize("sequential", [False, True])
@pytest.mark.parametrize("names", [["bb"], ["bb", "bb/c"], ["bb/c", "bb", "half"]])
def test_nested_model_is_tapped_by_its_own_name(data, sequential, names):
    x, _ = data
    model, backbone = _wrapped("bb", sequential)
    assert "bb" in keras_spkd.layer_paths(model)
    outputs = keras_spkd.build_feature_extractor(model, names)(x)
    tapped = dict(zip(names, outputs[: len(names)]))
    assert_allclose(tapped["bb"], backbone(0.5 * x), atol=1e-6)
    if "bb/c" in names:
        assert_allclose(tapped["bb/c"], tapped["bb"], atol=0)
    assert_allclose(outputs[-1], model(x), atol=1e-6)
    features_only = keras_spkd.build_feature_extractor(model, ["bb"], include_predictions=False)
    assert_allclose(features_only(x), backbone(0.5 * x), atol=1e-6)
