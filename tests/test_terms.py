"""Terms, not branches: SPDistiller composed of keras.distillation losses."""

import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_spkd
from tests import reference
from tests.conftest import assert_allclose, small_cnn, sparse_ce

DATA = Path(__file__).parent / "data"


@keras.saving.register_keras_serializable(package="keras_spkd_tests")
class MeanGap(keras.distillation.DistillationLoss):
    """A user's term, defined here: the squared gap of the two layers' means."""

    def __init__(self, teacher_layer_name, student_layer_name):
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        gap = keras.ops.mean(teacher_outputs) - keras.ops.mean(student_outputs)
        return keras.ops.square(gap)

    def get_config(self):
        return {
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _np(tensor):
    return keras.ops.convert_to_numpy(tensor)


def _mean_gap(t, s):
    return float((np.mean(t, dtype=np.float64) - np.mean(s, dtype=np.float64)) ** 2)


def _features(model, layer, x):
    return keras.ops.convert_to_numpy(keras_spkd.build_feature_extractor(model, [layer], False)(x))


def _mixed_terms():
    return [
        keras.distillation.FeatureDistillation("mse", "t_logits", "s_logits"),
        MeanGap("t_group", "s_group"),
        keras_spkd.SimilarityPreservingDistillation("t_group", "s_group"),
    ], [0.3, 2.0, 50.0]


def _by_hand(teacher, student, x, y):
    """task, and the three unweighted terms, in float64 from the models' own outputs."""
    logits_t, logits_s = _np(teacher(x)), _np(student(x))
    task = float(sparse_ce()(y, logits_s))
    t_group, s_group = _features(teacher, "t_group", x), _features(student, "s_group", x)
    feature = float(np.mean((logits_t.astype(np.float64) - logits_s) ** 2))
    return task, [feature, _mean_gap(t_group, s_group), reference.sp_loss([t_group], [s_group])]


def _compiled(distiller, lr=0.05):
    distiller.compile(optimizer=keras.optimizers.SGD(lr), loss=sparse_ce())
    return distiller


def test_mixed_terms_total_by_hand_and_equal_to_keras_distiller(data):
    """Keras's FeatureDistillation, a user's term and SP: the total, three ways."""
    x, y = data
    keras.utils.set_random_seed(1)
    teacher, student = small_cnn("t", 8), small_cnn("s", 4)  # no BN, dropout or regulariser
    terms, weights = _mixed_terms()
    ours = _compiled(
        keras_spkd.SPDistiller(
            teacher, student, distillation_losses=terms, distillation_loss_weights=weights
        )
    )
    ours.fit(x, y, batch_size=8, epochs=1, verbose=0)  # trains, then is judged
    task, values = _by_hand(teacher, student, x, y)
    weighted = [w * v for w, v in zip(weights, values)]
    logs = ours.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert weighted[1] > 1e-6 and weighted[2] > 1e-3  # every term is really there
    assert_allclose(logs["task_loss"], task, rtol=1e-5)
    assert_allclose(logs["feature_loss"], weighted[0], rtol=1e-4)
    assert_allclose(logs["mean_gap_loss"], weighted[1], rtol=1e-4)
    assert_allclose(logs["sp_loss"], weighted[2], rtol=1e-4)
    assert_allclose(logs["loss"], task + sum(weighted), rtol=1e-5)  # the paper's total

    a = 0.3
    blended = _compiled(
        keras_spkd.SPDistiller(
            teacher,
            student,
            distillation_losses=terms,
            distillation_loss_weights=weights,
            student_loss_weight=a,
        )
    )
    keras_distiller = _compiled(
        keras.distillation.Distiller(
            teacher,
            student,
            distillation_losses=terms,
            distillation_loss_weights=weights,
            student_loss_weight=a,
        )
    )
    mine = blended.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    theirs = keras_distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert_allclose(mine["loss"], a * task + (1 - a) * sum(weighted), rtol=1e-5)
    for key in ("total_loss", "student_loss", "distillation_loss"):
        assert_allclose(mine[key], theirs[key], rtol=1e-5, err_msg=key)
    assert_allclose(mine["total_loss"], mine["loss"], rtol=1e-6)


def test_the_short_form_is_the_same_list_of_terms(pair, data):
    x, y = data
    teacher, student = pair
    twin = keras.models.clone_model(student)
    twin.set_weights(student.get_weights())
    short = _compiled(
        keras_spkd.SPDistiller(
            teacher,
            student,
            layer_pairs=[("t_group", "s_group"), ("t_conv1", "s_group")],
            gamma=[10.0, 30.0],
            kd_weight=0.7,
            temperature=2.0,
            at_weight=800.0,
            at_pairs=[("t_conv1", "s_conv1")],
        )
    )
    explicit = _compiled(
        keras_spkd.SPDistiller(
            teacher,
            twin,
            distillation_losses=[
                keras_spkd.SimilarityPreservingDistillation("t_group", "s_group"),
                keras_spkd.SimilarityPreservingDistillation("t_conv1", "s_group"),
                keras_spkd.KnowledgeDistillation(temperature=2.0),
                keras_spkd.AttentionTransferDistillation("t_conv1", "s_conv1"),
            ],
            distillation_loss_weights=[10.0, 30.0, 0.7, 800.0],
        )
    )
    first = short.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    second = explicit.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert first == second
    # One SGD step on the whole batch: identical losses give identical gradients.
    short.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    explicit.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    moved = False
    for a, b, start in zip(student.get_weights(), twin.get_weights(), pair[1].get_weights()):
        np.testing.assert_array_equal(a, b)
        moved |= bool(np.abs(a - start).max() > 0)
    assert (short.gammas, short.kd_weight, short.at_weight) == ([10.0, 30.0], 0.7, 800.0)
    assert (
        explicit.layer_pairs
        == short.layer_pairs
        == [("t_group", "s_group"), ("t_conv1", "s_group")]
    )


def test_one_log_per_term_and_per_pair_with_keys_that_say_which(data):
    x, y = data
    keras.utils.set_random_seed(2)
    inputs, inner = keras.Input((8, 8, 1)), keras.Input((8, 8, 1))
    backbone = keras.Model(inner, keras.layers.Conv2D(4, 3, name="c")(inner), name="tb")
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    teacher = keras.Model(inputs, keras.layers.Dense(10)(pooled), name="nested_teacher")
    student = small_cnn("s", 4)
    terms = [
        keras_spkd.SimilarityPreservingDistillation("tb/c", "s_group"),
        keras_spkd.SimilarityPreservingDistillation("tb", "s_conv1"),
        keras.distillation.LogitsDistillation(temperature=3.0),
        keras.distillation.LogitsDistillation(temperature=2.0),
        MeanGap("tb/c", "s_group"),
        MeanGap("tb/c", "s_group"),
    ]
    weights = [5.0, 7.0, 0.5, 0.25, 1.0, 3.0]
    distiller = _compiled(
        keras_spkd.SPDistiller(
            teacher, student, distillation_losses=terms, distillation_loss_weights=weights
        )
    )
    logs = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    expected_keys = {
        "loss",
        "task_loss",
        "sp_loss",
        "sp_loss_tb.c-s_group",
        "sp_loss_tb-s_conv1",
        "logits_loss",
        "logits_loss_1",
        "logits_loss_2",
        "mean_gap_loss",
        "mean_gap_loss_1",
        "mean_gap_loss_2",
    }
    assert set(logs) == expected_keys and not any("/" in key for key in logs)
    t_c = _features(teacher, "tb/c", x)
    s_group, s_conv1 = _features(student, "s_group", x), _features(student, "s_conv1", x)
    t_tb = _features(teacher, "tb", x)
    assert_allclose(
        logs["sp_loss_tb.c-s_group"], 5.0 * reference.sp_loss([t_c], [s_group]), rtol=1e-4
    )
    assert_allclose(
        logs["sp_loss_tb-s_conv1"], 7.0 * reference.sp_loss([t_tb], [s_conv1]), rtol=1e-4
    )
    assert_allclose(
        logs["sp_loss"], logs["sp_loss_tb.c-s_group"] + logs["sp_loss_tb-s_conv1"], rtol=1e-6
    )
    assert_allclose(logs["mean_gap_loss_2"], 3.0 * logs["mean_gap_loss_1"], rtol=1e-5)
    assert logs["logits_loss_1"] != logs["logits_loss_2"]
    groups = ("sp_loss", "logits_loss", "mean_gap_loss")
    assert_allclose(logs["loss"], logs["task_loss"] + sum(logs[g] for g in groups), rtol=1e-6)
    assert distiller._teacher_extractor.name == "nested_teacher_features"
    assert distiller._student_extractor.name == "s_features"


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {
                "distillation_losses": keras_spkd.KnowledgeDistillation(),
                "distillation_loss_weights": [2.0],
            },
            ValueError,
            r"one distillation loss object with distillation_loss_weights \[2\.0\].*in a list",
        ),
        (
            {
                "layer_pairs": [("t_group", "s_group")],
                "distillation_losses": [keras_spkd.KnowledgeDistillation()],
            },
            ValueError,
            "either as the short form .* received both",
        ),
        ({}, ValueError, "received neither"),
        (
            {"distillation_losses": [keras_spkd.KnowledgeDistillation()], "gamma": 3.0},
            ValueError,
            "belong to the short form",
        ),
        (
            {
                "distillation_losses": [keras_spkd.KnowledgeDistillation()],
                "distillation_loss_weights": [1.0, 2.0],
            },
            ValueError,
            r"one weight per distillation loss \(1 losses\); received 2",
        ),
        (
            {
                "distillation_losses": [keras_spkd.KnowledgeDistillation()],
                "distillation_loss_weights": [-1.0],
            },
            ValueError,
            r"finite distillation_loss_weights entry >= 0; received -1\.0",
        ),
        ({"distillation_losses": ["sp"]}, TypeError, "must be a keras.distillation.Distillation"),
        (
            {"distillation_losses": [keras_spkd.KnowledgeDistillation()], "student_loss_weight": 2},
            ValueError,
            r"student_loss_weight None .* or a number in \[0, 1\]",
        ),
        (
            {
                "distillation_losses": [
                    keras_spkd.AttentionTransferDistillation("t_group", "s_conv1")
                ]
            },
            ValueError,
            r"one spatial size; \('t_group', 's_conv1'\) has teacher \(4, 4\) and student \(8, 8\)",
        ),
    ],
)
def test_bad_term_arguments_fail_before_training(pair, kwargs, error, message):
    teacher, student = pair
    with pytest.raises(error, match=message):
        keras_spkd.SPDistiller(teacher, student, **kwargs)


def test_not_a_model_is_both_a_value_error_and_a_type_error(pair):
    teacher, student = pair
    for bad in ("not_a_model", None):
        for error in (ValueError, TypeError):
            with pytest.raises(error, match="Expected the teacher to be a keras.Model"):
                keras_spkd.SPDistiller(bad, student, [("t_group", "s_group")])


class Dense2(keras.Model):
    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(width, activation="relu")
        self.out = keras.layers.Dense(10)

    def call(self, inputs, training=None):
        return self.out(self.hidden(keras.ops.reshape(inputs, (keras.ops.shape(inputs)[0], -1))))


def test_subclassed_and_unbuilt_sequential_models_take_logits_terms(data):
    x, y = data
    keras.utils.set_random_seed(3)
    teacher, student = Dense2(16), Dense2(4)
    teacher(x[:2]), student(x[:2])
    distiller = _compiled(
        keras_spkd.SPDistiller(
            teacher, student, distillation_losses=[keras_spkd.KnowledgeDistillation(2.0)]
        )
    )
    before = [w.copy() for w in teacher.get_weights()]
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert history.history["kd_loss"][0] > 0
    kd = reference.kd_loss(_np(teacher(x)), _np(student(x)), 2.0)
    logs = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert_allclose(logs["kd_loss"], kd, rtol=1e-4)
    for a, b in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="subclassed model with no symbolic graph"):
        keras_spkd.SPDistiller(
            teacher,
            student,
            distillation_losses=[keras_spkd.SimilarityPreservingDistillation("a", "b")],
        )
    # Sequential models without an Input, built by the first call (Keras's own test does this).
    seq_teacher = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(10)])
    seq_student = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(10)])
    sequential = _compiled(
        keras_spkd.SPDistiller(
            seq_teacher, seq_student, keras.distillation.LogitsDistillation(temperature=3.0)
        )
    )
    assert_allclose(sequential(x), seq_student(x), atol=0)
    assert np.isfinite(sequential.fit(x, y, batch_size=8, verbose=0).history["loss"][0])


def test_keras_file_round_trip_with_mixed_terms(data, tmp_path):
    x, y = data
    keras.utils.set_random_seed(4)
    teacher, student = small_cnn("t", 8), small_cnn("s", 4)
    terms, weights = _mixed_terms()
    terms.append(keras_spkd.KnowledgeDistillation(3.0))
    distiller = _compiled(
        keras_spkd.SPDistiller(
            teacher,
            student,
            distillation_losses=terms,
            distillation_loss_weights=[*weights, 0.5],
            student_loss_weight=0.8,
        )
    )
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    distiller.save(tmp_path / "mixed.keras")
    loaded = keras.saving.load_model(tmp_path / "mixed.keras")
    assert [type(t) for t in loaded.distillation_losses] == [type(t) for t in terms]
    assert loaded.distillation_loss_weights == [*weights, 0.5]
    assert loaded.student_loss_weight == 0.8 and loaded.distillation_losses[3].temperature == 3.0
    before = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    after = loaded.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert set(before) == set(after)
    for key in before:
        assert_allclose(after[key], before[key], rtol=1e-6, err_msg=key)
    config = distiller.get_config()
    assert keras_spkd.SPDistiller.from_config(config).get_config() == config


def test_a_distiller_saved_by_0_2_loads_and_gives_its_losses():
    """tests/data/spdistiller_0.2.keras was saved by keras-spkd 0.2 (short form, SP + KD + AT)."""
    recorded = np.load(DATA / "spdistiller_0.2_logs.npz")
    loaded = keras.saving.load_model(DATA / "spdistiller_0.2.keras")
    assert loaded.layer_pairs == [("t_group", "s_group")] and loaded.gamma == [42.0]
    assert (loaded.kd_weight, loaded.temperature, loaded.at_weight) == (0.5, 3.0, 7.0)
    assert loaded.at_pairs == [("t_conv1", "s_conv1")]
    logs = loaded.evaluate(recorded["x"], recorded["y"], batch_size=32, verbose=0, return_dict=True)
    for key in ("loss", "task_loss", "sp_loss", "kd_loss", "at_loss"):  # saved on TensorFlow
        assert_allclose(logs[key], recorded[key], rtol=1e-5, atol=1e-7, err_msg=key)


def test_a_saved_distiller_loads_in_a_fresh_process_after_the_public_import(tmp_path):
    code = (
        "import keras, keras_spkd, numpy as np\n"
        f"m = keras.saving.load_model({str(DATA / 'spdistiller_0.2.keras')!r})\n"
        "print(type(m).__name__, m.gamma)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("SPDistiller [42.0]")


def test_a_term_with_a_dead_teacher_layer_warns_once_naming_it(data):
    x, y = data
    keras.utils.set_random_seed(5)
    teacher, student = small_cnn("t", 8), small_cnn("s", 4)
    conv = teacher.get_layer("t_group")
    conv.set_weights([np.zeros_like(w) for w in conv.get_weights()])  # relu(0): a dead layer
    distiller = _compiled(keras_spkd.SPDistiller(teacher, student, [("t_group", "s_group")], 100.0))
    with pytest.warns(UserWarning, match="teacher layer 't_group'.*about 0.*gamma / b") as caught:
        history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert len([w for w in caught if "about 0" in str(w.message)]) == 1
    assert_allclose(history.history["sp_loss"], [100.0 / 8] * 2, rtol=1e-5)  # gamma / b
    alive = _compiled(keras_spkd.SPDistiller(small_cnn("t", 8), student, [("t_group", "s_group")]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alive.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert not [w for w in caught if "about 0" in str(w.message)]
