"""SPDistiller: what it trains, what it logs, what it refuses."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from numpy.testing import assert_allclose

import keras_spkd
from tests import reference
from tests.conftest import small_cnn, sparse_ce


def _distiller(teacher, student, **kwargs):
    kwargs.setdefault("layer_pairs", [("t_group", "s_group")])
    kwargs.setdefault("gamma", 100.0)
    distiller = keras_spkd.SPDistiller(teacher, student, **kwargs)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=sparse_ce(), metrics=["accuracy"]
    )
    return distiller


def _features(model, layer, x):
    return keras.Model(model.input, model.get_layer(layer).output)(x).numpy()


def test_fit_freezes_teacher_trains_student_and_logs_everything(pair, data):
    teacher, student = pair
    x, y = data
    distiller = _distiller(teacher, student)
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    history = distiller.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), verbose=0)
    for t_before, t_after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(t_before, t_after)
    assert all(not np.allclose(a, b) for a, b in zip(student_before, student.get_weights()))
    expected = {"loss", "task_loss", "sp_loss", "accuracy"}
    assert expected | {f"val_{k}" for k in expected} <= set(history.history)
    logs = {k: v[-1] for k, v in history.history.items()}
    assert logs["sp_loss"] > 0 and logs["task_loss"] > 0
    assert_allclose(logs["loss"], logs["task_loss"] + logs["sp_loss"], rtol=1e-5)
    assert not teacher.trainable
    assert len(distiller.trainable_variables) == len(student.trainable_variables)


def test_logged_sp_loss_equals_hand_computation(pair, data):
    teacher, student = pair
    x, y = data
    distiller = _distiller(teacher, student, gamma=250.0)
    t_feats, s_feats = _features(teacher, "t_group", x), _features(student, "s_group", x)
    by_hand = 250.0 * reference.sp_loss([t_feats], [s_feats])
    # One training step on one batch logs the value before the update...
    history = distiller.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert_allclose(history.history["sp_loss"][0], by_hand, rtol=1e-4)
    # ...and evaluation logs it for the updated student.
    s_after = _features(student, "s_group", x)
    logs = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert_allclose(logs["sp_loss"], 250.0 * reference.sp_loss([t_feats], [s_after]), rtol=1e-4)


def test_per_pair_gamma_and_kd_term_are_logged_as_weighted_terms(pair, data):
    teacher, student = pair
    x, y = data
    distiller = _distiller(
        teacher,
        student,
        kd_weight=0.7,
        temperature=2.0,
        layer_pairs=[("t_group", "s_group"), ("t_conv1", "s_group")],
        gamma=[10.0, 30.0],
    )
    logs = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    t_group, t_conv = _features(teacher, "t_group", x), _features(teacher, "t_conv1", x)
    s_group = _features(student, "s_group", x)
    assert_allclose(
        logs["sp_loss"],
        reference.sp_loss([t_group, t_conv], [s_group, s_group], [10.0, 30.0]),
        rtol=1e-4,
    )
    kd = 0.7 * reference.kd_loss(teacher(x).numpy(), student(x).numpy(), 2.0)
    assert_allclose(logs["kd_loss"], kd, rtol=1e-4)
    assert_allclose(logs["loss"], logs["task_loss"] + logs["sp_loss"] + logs["kd_loss"], rtol=1e-5)


def test_distiller_call_is_the_student(pair, data):
    teacher, student = pair
    x, _ = data
    distiller = _distiller(teacher, student)
    assert_allclose(distiller(x), student(x), atol=0)
    assert_allclose(distiller.predict(x, verbose=0), student.predict(x, verbose=0), atol=1e-6)


def test_gamma_zero_equals_plain_student_fit(data):
    x, y = data
    keras.utils.set_random_seed(3)
    teacher, student = small_cnn("t", 8), small_cnn("s", 4)
    twin = keras.models.clone_model(student)
    twin.set_weights(student.get_weights())
    initial = [w.copy() for w in student.get_weights()]
    distiller = _distiller(teacher, student, gamma=0.0)
    distiller.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    twin.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=sparse_ce())
    twin.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    for ours, plain, start in zip(student.get_weights(), twin.get_weights(), initial):
        assert_allclose(ours, plain, atol=1e-5)
        assert np.abs(plain - start).max() > 1e-3  # training did move them


def test_sample_weight_is_honoured(pair, data):
    teacher, student = pair
    x, y = data
    distiller = keras_spkd.SPDistiller(teacher, student, [("t_group", "s_group")], gamma=0.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=sparse_ce())
    before = [w.copy() for w in student.get_weights()]
    distiller.fit(x, y, sample_weight=np.zeros(len(x)), batch_size=8, verbose=0)
    for a, b in zip(before, student.get_weights()):
        np.testing.assert_array_equal(a, b)
    distiller.fit(x, y, sample_weight=np.ones(len(x)), batch_size=8, verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(before, student.get_weights()))


def test_jit_compiled_fit_matches_graph_fit(data):
    x, y = data
    results = []
    for jit in (False, True):
        keras.utils.set_random_seed(4)
        teacher, student = small_cnn("t", 8), small_cnn("s", 4)
        distiller = keras_spkd.SPDistiller(teacher, student, [("t_group", "s_group")], gamma=50.0)
        distiller.compile(optimizer="sgd", loss=sparse_ce(), jit_compile=jit)
        history = distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        results.append((history.history["sp_loss"][0], student.get_weights()))
    assert_allclose(results[0][0], results[1][0], rtol=1e-4)
    for a, b in zip(results[0][1], results[1][1]):
        assert_allclose(a, b, atol=1e-5)


def test_mixed_precision_scales_the_loss(data):
    x, y = data
    moves = {}
    for policy in ("float32", "mixed_float16"):
        keras.config.set_dtype_policy(policy)
        keras.utils.set_random_seed(5)
        teacher, student = small_cnn("t", 8), small_cnn("s", 4)
        distiller = keras_spkd.SPDistiller(teacher, student, [("t_group", "s_group")], gamma=100.0)
        distiller.compile(optimizer=keras.optimizers.SGD(0.05), loss=sparse_ce())
        before = [w.copy() for w in student.get_weights()]
        history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        moves[policy] = sum(np.abs(a - b).sum() for a, b in zip(before, student.get_weights()))
        if policy == "mixed_float16":
            assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
            assert student.get_layer("s_group").compute_dtype == "float16"
    # Without loss scaling a float16 step would move the weights ~32768x less.
    assert 0.5 < moves["mixed_float16"] / moves["float32"] < 2.0


def test_keras_file_round_trip_keeps_config_weights_and_trains_on(pair, data, tmp_path):
    teacher, student = pair
    x, y = data
    distiller = _distiller(teacher, student, kd_weight=0.5, gamma=[42.0])
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, keras_spkd.SPDistiller)
    assert loaded.layer_pairs == [("t_group", "s_group")]
    assert (loaded.gamma, loaded.kd_weight, loaded.temperature) == ([42.0], 0.5, 4.0)
    assert_allclose(loaded.predict(x, verbose=0), distiller.predict(x, verbose=0), atol=1e-6)
    for a, b in zip(loaded.teacher.get_weights(), teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    history = loaded.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["sp_loss"][0])
    config = distiller.get_config()
    assert keras_spkd.SPDistiller.from_config(config).get_config() == config


def test_privileged_inputs_feed_teacher_and_student_separately(data):
    x, y = data
    keras.utils.set_random_seed(6)
    teacher = small_cnn("t", 8, input_shape=(8, 8, 1))
    student = small_cnn("s", 4, input_shape=(4, 4, 1))  # a degraded view
    x_student = x[:, ::2, ::2, :]
    distiller = _distiller(teacher, student)
    history = distiller.fit(
        {"teacher": x, "student": x_student}, y, batch_size=8, epochs=1, verbose=0
    )
    assert np.isfinite(history.history["sp_loss"][0])
    assert_allclose(distiller({"teacher": x, "student": x_student}), student(x_student))
    logs = distiller.evaluate(
        {"teacher": x, "student": x_student}, y, batch_size=32, verbose=0, return_dict=True
    )
    expected = 100.0 * reference.sp_loss(
        [_features(teacher, "t_group", x)], [_features(student, "s_group", x_student)]
    )
    assert_allclose(logs["sp_loss"], expected, rtol=1e-4)


def test_privileged_batches_of_different_sizes_are_rejected(data):
    x, y = data
    teacher, student = small_cnn("t", 8), small_cnn("s", 4)
    distiller = _distiller(teacher, student)
    mismatched = tf.data.Dataset.zip(
        (
            tf.data.Dataset.zip(
                {
                    "teacher": tf.data.Dataset.from_tensor_slices(x).batch(8),
                    "student": tf.data.Dataset.from_tensor_slices(x).batch(4),
                }
            ),
            tf.data.Dataset.from_tensor_slices(y).batch(8),
        )
    )
    with pytest.raises(
        (ValueError, tf.errors.InvalidArgumentError), match="batches differ in size"
    ):
        distiller.fit(mismatched, epochs=1, verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="batches differ in size"):
        distiller.evaluate(mismatched, verbose=0)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(10)

    def call(self, x):
        return self.dense(keras.ops.reshape(x, (keras.ops.shape(x)[0], -1)))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"layer_pairs": [("t_group", "s_nope")]},
            ValueError,
            r"student 's' has no layer 's_nope'\. Did you mean 's_group'",
        ),
        (
            {"layer_pairs": [("t_typo", "s_group")]},
            ValueError,
            r"teacher 't' has no layer 't_typo'\. Did you mean 't_pool'\?",
        ),
        ({"layer_pairs": []}, ValueError, "non-empty list"),
        ({"layer_pairs": [("t_group",)]}, ValueError, r"pair of strings; received \('t_group',\)"),
        ({"gamma": -1.0}, ValueError, r"gamma >= 0; received -1\.0"),
        ({"gamma": [1.0, 2.0]}, ValueError, r"one gamma per layer pair \(1 pairs\); received 2"),
        ({"gamma": "big"}, TypeError, "float or a list of floats"),
        ({"kd_weight": -0.1}, ValueError, "kd_weight >= 0"),
        ({"temperature": 0.0}, ValueError, "temperature > 0"),
    ],
)
def test_bad_arguments_fail_before_training(pair, kwargs, error, message):
    teacher, student = pair
    with pytest.raises(error, match=message):
        _distiller(teacher, student, **kwargs)


def test_bad_models_fail_before_training():
    teacher = small_cnn("t", 8)
    with pytest.raises(ValueError, match="same model object"):
        keras_spkd.SPDistiller(teacher, teacher, [("t_group", "t_group")])
    subclassed = _Subclassed()
    subclassed(np.ones((2, 8, 8, 1)))
    with pytest.raises(ValueError, match="student .* subclassed model with no symbolic graph"):
        keras_spkd.SPDistiller(teacher, subclassed, [("t_group", "dense")])
    with pytest.raises(
        ValueError, match="teacher's input has batch dimension 16 and the student's 8"
    ):
        keras_spkd.SPDistiller(
            small_cnn("t", 8, batch_size=16),
            small_cnn("s", 4, batch_size=8),
            [("t_group", "s_group")],
        )


def test_fit_under_strategy_trains_the_wrapped_model_like_plain_fit(data, tmp_path):
    x, y = data
    keras.utils.set_random_seed(8)
    model = small_cnn("m", 4)
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    wrapper = keras_spkd.FitUnderStrategy(model)
    for trainee in (wrapper, twin):
        trainee.compile(optimizer=keras.optimizers.SGD(0.05), loss=sparse_ce())
        trainee.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        assert_allclose(a, b, atol=1e-6)
    assert_allclose(wrapper(x), model(x), atol=0)
    wrapper.save(tmp_path / "wrapper.keras")
    loaded = keras.saving.load_model(tmp_path / "wrapper.keras")
    assert isinstance(loaded, keras_spkd.FitUnderStrategy)
    assert_allclose(loaded(x), model(x), atol=1e-6)


def test_bfloat16_teacher_is_a_frozen_copy_close_to_the_exact_target(pair, data, tmp_path):
    teacher, student = pair
    x, y = data
    exact = _distiller(teacher, student)
    fast = _distiller(teacher, student, teacher_dtype="bfloat16")
    compute = {layer.compute_dtype for layer in fast._teacher_extractor.layers[1:]}
    assert compute == {"bfloat16"}
    assert all(layer.compute_dtype == "float32" for layer in teacher.layers)  # untouched
    logs_exact = exact.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    logs_fast = fast.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert logs_fast["sp_loss"] != logs_exact["sp_loss"]  # really computed in bfloat16
    assert_allclose(logs_fast["sp_loss"], logs_exact["sp_loss"], rtol=2e-2)
    before = [w.copy() for w in teacher.get_weights()]
    fast.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for a, b in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    fast.save(tmp_path / "fast.keras")
    assert keras.saving.load_model(tmp_path / "fast.keras").teacher_dtype == "bfloat16"
    with pytest.raises(ValueError, match="teacher_dtype None, 'bfloat16' or 'float16'"):
        _distiller(teacher, student, teacher_dtype="int8")


def test_combined_terms_sum_their_weighted_values_exactly(pair, data):
    teacher, student = pair
    x, y = data
    distiller = _distiller(
        teacher,
        student,
        gamma=40.0,
        kd_weight=0.5,
        temperature=3.0,
        at_weight=800.0,
        at_pairs=[("t_conv1", "s_conv1")],
    )
    logs = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    t_conv, s_conv = _features(teacher, "t_conv1", x), _features(student, "s_conv1", x)
    t_group, s_group = _features(teacher, "t_group", x), _features(student, "s_group", x)
    assert_allclose(logs["sp_loss"], 40.0 * reference.sp_loss([t_group], [s_group]), rtol=1e-4)
    assert_allclose(logs["at_loss"], 800.0 * reference.at_loss([t_conv], [s_conv]), rtol=1e-4)
    assert_allclose(
        logs["kd_loss"],
        0.5 * reference.kd_loss(teacher(x).numpy(), student(x).numpy(), 3.0),
        rtol=1e-4,
    )
    assert_allclose(
        logs["loss"],
        logs["task_loss"] + logs["sp_loss"] + logs["kd_loss"] + logs["at_loss"],
        rtol=1e-6,
    )
    config = distiller.get_config()
    assert config["at_pairs"] == [["t_conv1", "s_conv1"]] and config["at_weight"] == 800.0
    assert keras_spkd.SPDistiller.from_config(config).get_config() == config
    alone_at = _distiller(teacher, student, gamma=0.0, at_weight=10.0)  # AT on the SP pairs
    assert alone_at.at_pairs == [("t_group", "s_group")]
    logs = alone_at.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert logs["sp_loss"] == 0.0 and logs["at_loss"] > 0
    with pytest.raises(ValueError, match="at_weight >= 0"):
        _distiller(teacher, student, at_weight=-1.0)


def _wrapped(name):
    """Finding 1's model: a functional backbone nested in the outer model."""
    inputs, inner = keras.Input((8, 8, 1)), keras.Input((8, 8, 1))
    backbone = keras.Model(inner, keras.layers.Conv2D(4, 3, name="c")(inner), name=name)
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    return keras.Model(inputs, keras.layers.Dense(10)(pooled), name=f"{name}_outer"), backbone


def test_nested_backbone_is_tapped_by_its_own_name(data):
    x, y = data
    (teacher, t_backbone), (student, s_backbone) = _wrapped("tb"), _wrapped("sb")
    distiller = _distiller(teacher, student, layer_pairs=[("tb/c", "sb")], gamma=10.0)
    logs = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    expected = 10.0 * reference.sp_loss([t_backbone(x).numpy()], [s_backbone(x).numpy()])
    assert expected > 1e-3
    assert_allclose(logs["sp_loss"], expected, rtol=1e-4)


@pytest.mark.parametrize("name", ["gamma", "kd_weight", "temperature", "at_weight"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(pair, name, bad):
    teacher, student = pair
    with pytest.raises(ValueError, match=rf"finite {name} (>=|>) 0; received -?(nan|inf)"):
        _distiller(teacher, student, **{name: bad})
    if name == "gamma":
        with pytest.raises(ValueError, match="finite gamma >= 0; received nan"):
            _distiller(
                teacher,
                student,
                layer_pairs=[("t_group", "s_group"), ("t_conv1", "s_conv1")],
                gamma=[1.0, float("nan")],
            )


def test_numpy_numbers_are_accepted_and_other_types_refused(pair, data, tmp_path):
    teacher, student = pair
    x, y = data
    distiller = _distiller(
        teacher,
        student,
        gamma=np.float32(100.0),
        kd_weight=np.float32(0.5),
        temperature=np.int64(2),
        at_weight=np.float16(1.0),
    )
    assert distiller.gamma == 100.0 and type(distiller.gamma) is float
    assert (distiller.kd_weight, distiller.temperature, distiller.at_weight) == (0.5, 2.0, 1.0)
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    distiller.save(tmp_path / "numpy.keras")  # the config is plain JSON
    assert keras.saving.load_model(tmp_path / "numpy.keras").gamma == 100.0
    listed = _distiller(teacher, student, gamma=[np.float32(3.0)])
    assert listed.gamma == [3.0] and type(listed.gamma[0]) is float
    for name, bad in [("kd_weight", "0.5"), ("temperature", None), ("at_weight", True)]:
        with pytest.raises(TypeError, match=rf"`{name}` to be a real number; received"):
            _distiller(teacher, student, **{name: bad})
    with pytest.raises(TypeError, match="float or a list of floats"):
        _distiller(teacher, student, gamma=np.bool_(True))


@pytest.mark.parametrize("keys", [("pupil", "teacher"), ("Teacher", "Student"), ("teacher",)])
def test_privileged_inputs_with_wrong_keys_name_the_expected_ones(pair, data, keys):
    teacher, student = pair
    x, y = data
    distiller = _distiller(teacher, student)
    inputs = {key: x for key in keys}
    message = r'exactly the keys "teacher" and "student".*received keys \[' + repr(sorted(keys)[0])
    with pytest.raises(ValueError, match=message):
        distiller.fit(inputs, y, batch_size=8, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=message):
        distiller(inputs)


def _softmax_teacher(kind):
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="t_group")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    if kind == "dense":
        outputs = keras.layers.Dense(10, activation="softmax")(h)
    elif kind == "layer":
        outputs = keras.layers.Softmax()(keras.layers.Dense(10)(h))
    else:
        outputs = keras.layers.Activation("softmax")(keras.layers.Dense(10)(h))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("kind", ["dense", "layer", "activation"])
def test_kd_with_a_softmax_teacher_is_refused(kind):
    teacher, student = _softmax_teacher(kind), small_cnn("s", 4)
    with pytest.raises(ValueError, match="needs a teacher that outputs logits.*ends in a softmax"):
        _distiller(teacher, student, kd_weight=0.5)
    # Without KD the teacher's last layer does not matter.
    assert _distiller(teacher, student, kd_weight=0.0).kd_weight == 0.0


def test_batch_of_one_warns_once(pair, data):
    teacher, student = pair
    x, y = data
    distiller = _distiller(teacher, student)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = distiller.fit(x[:4], y[:4], batch_size=1, epochs=2, verbose=0)
        distiller.evaluate(x[:3], y[:3], batch_size=1, verbose=0)
    ours = [w for w in caught if "batch of one sample" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert_allclose(history.history["sp_loss"], [0.0, 0.0], atol=1e-10)  # 0 up to round-off
    fresh = _distiller(teacher, student)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh.fit(x[:4], y[:4], batch_size=2, epochs=1, verbose=0)
    assert not [w for w in caught if "batch of one sample" in str(w.message)]


def test_a_teacher_with_dropout_is_read_in_inference_mode(data):
    """SP is computed on the teacher's inference-mode features (training=True would drop units)."""
    x, y = data
    keras.utils.set_random_seed(9)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.Dropout(0.5, name="t_group")(h)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h))
    teacher, student = keras.Model(inputs, outputs, name="t"), small_cnn("s", 4)
    distiller = _distiller(teacher, student, gamma=100.0, kd_weight=1.0)
    history = distiller.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    t_feats = _features(teacher, "t_group", x)  # keras.Model(...)(x): inference mode
    s_feats = _features(student, "s_group", x)
    logs = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert_allclose(logs["sp_loss"], 100.0 * reference.sp_loss([t_feats], [s_feats]), rtol=1e-4)
    kd = reference.kd_loss(teacher(x, training=False).numpy(), student(x).numpy(), 4.0)
    assert_allclose(logs["kd_loss"], kd, rtol=1e-4)
    assert np.isfinite(history.history["loss"][0])


def test_distillation_terms_are_divided_by_the_replica_count_and_logged_whole(
    pair, data, monkeypatch
):
    """Under N replicas gradients are summed: each replica's terms count 1/N (fast lane)."""
    from keras_spkd import _backend

    x, y = data
    teacher, student = pair
    twin = keras.models.clone_model(student)
    twin.set_weights(student.get_weights())
    as_two = _distiller(teacher, student, gamma=300.0)
    as_half = _distiller(teacher, twin, gamma=150.0)
    probe = as_two.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    monkeypatch.setattr(_backend, "num_replicas", lambda: 2)
    logs = as_two.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0).history
    monkeypatch.setattr(_backend, "num_replicas", lambda: 1)
    as_half.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(student.get_weights(), twin.get_weights()):
        assert_allclose(a, b, atol=1e-6)  # the step of task + (gamma / 2) * SP
    assert_allclose(logs["sp_loss"][0], probe["sp_loss"], rtol=1e-5)  # logged undivided
