"""The model zoo: published parameter counts and tappable group names."""

import keras
import pytest

from keras_spkd.models import build_model, digits_cnn, wide_resnet


@pytest.mark.parametrize(
    "depth, width, published",
    [(16, 1, 0.17e6), (16, 2, 0.69e6), (40, 1, 0.56e6), (40, 2, 2.2e6)],
)
def test_wide_resnet_parameter_counts_match_the_published_ones(depth, width, published):
    model = wide_resnet(depth, width)
    assert abs(model.count_params() - published) / published < 0.04
    shapes = [model.get_layer(f"group{g}").output.shape for g in (1, 2, 3)]
    assert shapes == [
        (None, 32, 32, 16 * width),
        (None, 16, 16, 32 * width),
        (None, 8, 8, 64 * width),
    ]
    assert model.output.shape == (None, 10)


def test_any_valid_wide_resnet_builds_and_invalid_ones_are_rejected():
    model = build_model("wrn-22-3", (24, 24, 3), 100, weight_decay=5e-4)
    assert model.output.shape == (None, 100)
    assert model.get_layer("group3").output.shape == (None, 6, 6, 192)
    assert len(model.losses) > 0  # weight decay as kernel regularisers
    with pytest.raises(ValueError, match="6n \\+ 4.*received 17"):
        wide_resnet(17, 1)
    with pytest.raises(ValueError, match="Unknown architecture 'resnet-50'.*wrn-D-K"):
        build_model("resnet-50", (32, 32, 3), 10)


def test_digits_cnn_has_named_groups_and_runs():
    model = build_model("digits-cnn-8", (8, 8, 1), 10)
    assert model.get_layer("group1").output.shape == (None, 8, 8, 8)
    assert model.get_layer("group2").output.shape == (None, 4, 4, 16)
    assert digits_cnn(32).count_params() > 10 * model.count_params()
    assert keras.ops.convert_to_numpy(model(keras.ops.zeros((2, 8, 8, 1)))).shape == (2, 10)


def test_zoo_names_are_told_apart_from_other_model_specs():
    from keras_spkd.models import is_zoo_name
    from keras_spkd.sources import parse_model_spec

    assert all(is_zoo_name(n) for n in ("wrn-16-2", "WRN-40-2", "digits-cnn-8", "fashion-cnn-4"))
    assert not any(is_zoo_name(n) for n in ("wrn-16", "resnet-9", "s.keras", "MobileNetV2"))
    kinds = [parse_model_spec(n).kind for n in ("wrn-16-2", "s.keras", "MobileNetV2", "a.b:c")]
    assert kinds == ["zoo", "file", "application", "builder"]
