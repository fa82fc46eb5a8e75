"""The SP maths against the NumPy reference, and its properties."""

import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from numpy.testing import assert_allclose

import keras_spkd
from tests import reference
from tests.conftest import small_cnn, sparse_ce

SHAPES = [  # (b, teacher activation shape, student activation shape)
    (2, (4, 4, 8), (2, 2, 3)),
    (7, (8, 8, 16), (8, 8, 4)),
    (16, (32,), (5, 5, 2)),
    (33, (2, 2, 64), (4, 4, 1)),
]


def _random(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("b, t_shape, s_shape", SHAPES)
def test_loss_matches_numpy_reference(b, t_shape, s_shape):
    t, s = _random((b, *t_shape), 1), _random((b, *s_shape), 2)
    got = float(keras_spkd.similarity_preserving_loss(t, s))
    assert got > 1e-3  # random maps are dissimilar: the check has teeth
    assert_allclose(got, reference.sp_loss([t], [s]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("b, t_shape, s_shape", SHAPES)
def test_similarity_matrix_matches_reference(b, t_shape, s_shape):
    a = np.maximum(_random((b, *t_shape), 3), 0)  # post-ReLU, like the paper
    assert_allclose(keras_spkd.similarity_matrix(a), reference.similarity_matrix(a), atol=1e-6)


def test_several_pairs_are_weighted_and_summed():
    ts = [_random((6, 4, 4, 3), 4), _random((6, 10), 5)]
    ss = [_random((6, 2, 2, 7), 6), _random((6, 3, 3, 3), 7)]
    got = keras_spkd.similarity_preserving_loss(ts, ss, gamma=[3000.0, 0.5])
    assert_allclose(float(got), reference.sp_loss(ts, ss, [3000.0, 0.5]), rtol=1e-6)


def test_gradient_matches_finite_differences():
    t, s = _random((5, 2, 2, 3), 8), _random((5, 3, 2), 9)
    s_var = tf.Variable(s)
    with tf.GradientTape() as tape:
        loss = keras_spkd.similarity_preserving_loss(t, s_var)
    grad = tape.gradient(loss, s_var).numpy()
    numeric, h = np.zeros_like(s, dtype=np.float64), 1e-6
    s64 = s.astype(np.float64)
    for index in np.ndindex(s.shape):
        up, down = s64.copy(), s64.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (reference.sp_loss([t], [up]) - reference.sp_loss([t], [down])) / (2 * h)
    assert np.abs(numeric).max() > 1e-3
    assert_allclose(grad, numeric, rtol=1e-3, atol=1e-5)


def test_zero_when_normalised_similarities_match():
    t = np.abs(_random((8, 4, 4, 6), 10))
    # A different shape whose Q Q^T is 2 x the teacher's: same normalised G.
    s = np.concatenate([t, t], axis=-1)
    assert_allclose(float(keras_spkd.similarity_preserving_loss(t, s)), 0.0, atol=1e-7)
    assert float(keras_spkd.similarity_preserving_loss(t, _random(s.shape, 11))) > 1e-3


def test_unchanged_by_positive_scaling():
    t, s = _random((9, 3, 3, 4), 12), _random((9, 6), 13)
    base = float(keras_spkd.similarity_preserving_loss(t, s))
    for c in (1e-3, 0.5, 7.5, 1e3):
        assert_allclose(float(keras_spkd.similarity_preserving_loss(c * t, s)), base, rtol=1e-5)
        assert_allclose(float(keras_spkd.similarity_preserving_loss(t, c * s)), base, rtol=1e-5)


def test_batch_permutation_permutes_g_and_keeps_loss():
    t, s = _random((10, 4, 4, 2), 14), _random((10, 8), 15)
    perm = np.random.default_rng(0).permutation(10)
    g = keras.ops.convert_to_numpy(keras_spkd.similarity_matrix(t))
    g_perm = keras.ops.convert_to_numpy(keras_spkd.similarity_matrix(t[perm]))
    assert_allclose(g_perm, g[perm][:, perm], atol=1e-6)
    assert_allclose(
        float(keras_spkd.similarity_preserving_loss(t[perm], s[perm])),
        float(keras_spkd.similarity_preserving_loss(t, s)),
        rtol=1e-6,
    )


def test_all_zero_map_gives_finite_loss_and_gradients():
    t = _random((8, 4, 4, 3), 16)
    for dead in ("student", "teacher"):
        zeros = tf.Variable(np.zeros((8, 2, 2, 5), np.float32))
        other = tf.Variable(t)
        with tf.GradientTape() as tape:
            pair = (other, zeros) if dead == "student" else (zeros, other)
            loss = keras_spkd.similarity_preserving_loss(*pair)
        grads = tape.gradient(loss, [zeros, other])
        assert np.isfinite(float(loss)) and float(loss) > 0
        assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert np.all(keras_spkd.similarity_matrix(np.zeros((4, 3))) == 0)


def test_float16_large_values_stay_finite_and_match_float32():
    # 2048 values of 8.0: Q Q^T = 131072 overflows float16 (max 65504).
    rng = np.random.default_rng(17)
    t = (8.0 * (1 + 0.1 * rng.random((6, 2048)))).astype(np.float16)
    s = tf.Variable((60.0 * rng.random((6, 4, 4, 128))).astype(np.float16))
    with tf.GradientTape() as tape:
        loss = keras_spkd.similarity_preserving_loss(t, s)
    grad = tape.gradient(loss, s)
    assert loss.dtype == "float32"
    assert np.isfinite(float(loss)) and np.all(np.isfinite(grad.numpy()))
    expected = reference.sp_loss([t.astype(np.float64)], [s.numpy().astype(np.float64)])
    assert_allclose(float(loss), expected, rtol=1e-3, atol=1e-7)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="batch 8.*batch 4"):
        keras_spkd.similarity_preserving_loss(np.ones((8, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="2 teacher and 1 student"):
        keras_spkd.similarity_preserving_loss([np.ones((2, 3))] * 2, [np.ones((2, 3))])
    with pytest.raises(ValueError, match="one gamma per layer pair"):
        keras_spkd.similarity_preserving_loss(np.ones((2, 3)), np.ones((2, 3)), [1, 2])
    with pytest.raises(ValueError, match="at least one pair"):
        keras_spkd.similarity_preserving_loss([], [])


def test_loss_class_forwards_and_round_trips_config():
    t, s = [_random((6, 5), 18), _random((6, 2, 2, 2), 19)], [_random((6, 3), 20)] * 2
    loss = keras_spkd.SimilarityPreservingLoss(gamma=[2.0, 0.25])
    expected = reference.sp_loss(t, s, [2.0, 0.25])
    assert_allclose(float(loss(t, s)), expected, rtol=1e-6)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, keras_spkd.SimilarityPreservingLoss)
    assert clone.get_config() == loss.get_config()
    assert_allclose(float(clone(t, s)), expected, rtol=1e-6)


def test_kd_loss_matches_reference_and_vanishes_on_equal_logits():
    zt, zs = _random((12, 10), 21), _random((12, 10), 22)
    for temperature in (1.0, 4.0):
        assert_allclose(
            float(keras_spkd.knowledge_distillation_loss(zt, zs, temperature)),
            reference.kd_loss(zt, zs, temperature),
            rtol=1e-5,
        )
    assert_allclose(float(keras_spkd.knowledge_distillation_loss(zt, zt)), 0.0, atol=1e-6)
    weights = np.r_[np.ones(6), np.zeros(6)]
    assert_allclose(
        float(keras_spkd.knowledge_distillation_loss(zt, zs, 4.0, weights)),
        reference.kd_loss(zt[:6], zs[:6], 4.0),
        rtol=1e-5,
    )


def test_sp_term_trains_inside_keras_distiller(data):
    x, y = data
    keras.utils.set_random_seed(1)
    teacher, student = small_cnn("t", 16), small_cnn("s", 4)
    sp = keras_spkd.SimilarityPreservingDistillation("t_group", "s_group")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sp))
    assert clone.get_config() == sp.get_config()
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=[sp],
        distillation_loss_weights=[100.0],
        student_loss_weight=0.5,
    )
    distiller.compile(optimizer="sgd", loss=sparse_ce())
    before = [w.copy() for w in student.get_weights()]
    history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    sp_logged = history.history["distillation_loss"]
    assert all(np.isfinite(sp_logged)) and sp_logged[0] > 0
    assert any(not np.allclose(a, b) for a, b in zip(before, student.get_weights()))


def test_keras_distiller_rejects_unknown_layer():
    teacher, student = small_cnn("t", 8), small_cnn("s", 4)
    with pytest.raises(ValueError, match=r"no layer 'nope'\. It has 4 layers, from 's_conv1'"):
        keras.distillation.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=keras_spkd.SimilarityPreservingDistillation("t_group", "nope"),
        )


@pytest.mark.parametrize("b, hw, c_t, c_s", [(2, 4, 8, 3), (5, 7, 16, 4), (9, 3, 2, 2)])
def test_attention_transfer_matches_numpy_reference(b, hw, c_t, c_s):
    t, s = _random((b, hw, hw, c_t), 30), _random((b, hw, hw, c_s), 31)
    assert_allclose(keras_spkd.attention_map(t), reference.attention_map(t), atol=1e-6)
    got = float(keras_spkd.attention_transfer_loss(t, s, beta=1000.0))
    assert got > 1e-3
    assert_allclose(got, reference.at_loss([t], [s], [1000.0]), rtol=1e-5)


def test_attention_transfer_gradient_matches_finite_differences():
    t, s = _random((3, 3, 3, 4), 32), _random((3, 3, 3, 2), 33)
    s_var = tf.Variable(s)
    with tf.GradientTape() as tape:
        loss = keras_spkd.attention_transfer_loss(t, s_var)
    grad = tape.gradient(loss, s_var).numpy()
    numeric, h, s64 = np.zeros(s.shape), 1e-6, s.astype(np.float64)
    for index in np.ndindex(s.shape):
        up, down = s64.copy(), s64.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (reference.at_loss([t], [up]) - reference.at_loss([t], [down])) / (2 * h)
    assert np.abs(numeric).max() > 1e-4
    assert_allclose(grad, numeric, rtol=1e-3, atol=1e-6)


def test_attention_transfer_needs_equal_spatial_sizes():
    with pytest.raises(ValueError, match=r"teacher \(4, 4\) and student \(2, 2\)"):
        keras_spkd.attention_transfer_loss(np.ones((2, 4, 4, 3)), np.ones((2, 2, 2, 3)))
    with pytest.raises(ValueError, match="needs spatial activations"):
        keras_spkd.attention_map(np.ones((2, 5)))


GOLDEN = np.load(Path(__file__).parent / "golden" / "golden.npz")


def _golden_cases(kind):
    return sorted({key.split("_")[0] for key in GOLDEN.files if key.startswith(kind)})


def _pairs(case):
    count = len([key for key in GOLDEN.files if key.startswith(f"{case}_teacher")])
    return [GOLDEN[f"{case}_teacher{i}"] for i in range(count)], [
        GOLDEN[f"{case}_student{i}"] for i in range(count)
    ]


def _loss_and_gradients(loss_fn, teachers, students):
    variables = [tf.Variable(a) for a in [*teachers, *students]]
    with tf.GradientTape() as tape:
        loss = loss_fn(variables[: len(teachers)], variables[len(teachers) :])
    return float(loss), [g.numpy() for g in tape.gradient(loss, variables)]


def _assert_gradients(got, case, teachers):
    names = [f"teacher{i}" for i in range(len(teachers))] + [
        f"student{i}" for i in range(len(teachers))
    ]
    for name, grad in zip(names, got):
        expected = GOLDEN[f"{case}_grad_{name}"]
        scale = max(np.abs(expected).max(), 1e-12)
        assert_allclose(grad, expected, rtol=1e-4, atol=1e-5 * scale, err_msg=f"{case} {name}")


@pytest.mark.filterwarnings("ignore:The similarity-preserving loss got a batch of one")
@pytest.mark.parametrize("case", _golden_cases("sp"))
def test_sp_matches_pytorch_golden_values(case):
    """Values and gradients frozen from the research PyTorch formulation (make_golden.py)."""
    teachers, students = _pairs(case)
    weights = [float(w) for w in GOLDEN[f"{case}_weights"]]
    loss, grads = _loss_and_gradients(
        lambda t, s: keras_spkd.similarity_preserving_loss(t, s, weights), teachers, students
    )
    expected = float(GOLDEN[f"{case}_loss"])
    assert expected > 0 or teachers[0].shape[0] == 1  # only b = 1 is 0 by construction
    assert_allclose(loss, expected, rtol=1e-5, atol=1e-9)
    _assert_gradients(grads, case, teachers)


@pytest.mark.parametrize("case", _golden_cases("kd"))
def test_kd_matches_pytorch_golden_values(case):
    temperature = float(GOLDEN[f"{case}_temperature"])
    loss, grads = _loss_and_gradients(
        lambda t, s: keras_spkd.knowledge_distillation_loss(t[0], s[0], temperature),
        [GOLDEN[f"{case}_teacher"]],
        [GOLDEN[f"{case}_student"]],
    )
    expected = float(GOLDEN[f"{case}_loss"])
    assert expected > 1e-3
    assert_allclose(loss, expected, rtol=1e-5)
    for grad, name in zip(grads, ("teacher", "student")):
        golden = GOLDEN[f"{case}_grad_{name}"]
        assert_allclose(grad, golden, rtol=1e-4, atol=1e-5 * np.abs(golden).max())


@pytest.mark.parametrize("case", _golden_cases("at"))
def test_at_matches_pytorch_golden_values(case):
    teachers, students = _pairs(case)
    weights = [float(w) for w in GOLDEN[f"{case}_weights"]]
    loss, grads = _loss_and_gradients(
        lambda t, s: keras_spkd.attention_transfer_loss(t, s, weights), teachers, students
    )
    assert float(GOLDEN[f"{case}_loss"]) > 0
    assert_allclose(loss, float(GOLDEN[f"{case}_loss"]), rtol=1e-5)
    _assert_gradients(grads, case, teachers)


def test_golden_fixture_covers_the_cases_the_issue_asks_for():
    sp_batches = {GOLDEN[f"{case}_teacher0"].shape[0] for case in _golden_cases("sp")}
    sp_pairs = {len(_pairs(case)[0]) for case in _golden_cases("sp")}
    assert 1 in sp_batches and len(sp_batches) >= 3 and max(sp_pairs) >= 2
    assert len(_golden_cases("kd")) >= 3 and len(_golden_cases("at")) >= 3


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_non_finite_or_negative_pair_weights_are_refused(bad):
    t, s = _random((4, 3), 40), _random((4, 2), 41)
    with pytest.raises(ValueError, match=r"finite gamma >= 0; received"):
        keras_spkd.similarity_preserving_loss(t, s, gamma=bad)
    with pytest.raises(ValueError, match=r"finite beta >= 0; received"):
        keras_spkd.attention_transfer_loss(np.ones((2, 2, 2, 1)), np.ones((2, 2, 2, 1)), [bad])
    with pytest.raises(ValueError, match=r"finite temperature > 0; received"):
        keras_spkd.knowledge_distillation_loss(t, t, temperature=bad)


def test_numpy_scalar_weights_are_accepted_and_bools_refused():
    t, s = _random((5, 3), 42), _random((5, 4), 43)
    base = float(keras_spkd.similarity_preserving_loss(t, s))
    for weight in (np.float32(2.0), np.float64(2.0), np.int64(2)):
        got = float(keras_spkd.similarity_preserving_loss(t, s, gamma=weight))
        assert_allclose(got, 2.0 * base, rtol=1e-6)
    got = float(keras_spkd.similarity_preserving_loss([t, t], [s, s], [np.float32(1), 3]))
    assert_allclose(got, 4.0 * base, rtol=1e-6)
    with pytest.raises(
        TypeError, match="float or a list of floats, one per layer pair; received True"
    ):
        keras_spkd.similarity_preserving_loss(t, s, gamma=True)
    with pytest.raises(TypeError, match="real number; received '2'"):
        keras_spkd.knowledge_distillation_loss(t, t, temperature="2")


def test_all_zero_sample_gets_a_bounded_gradient_and_the_same_loss():
    t = _random((6, 4, 4, 3), 44)
    s = _random((6, 3, 3, 2), 45)
    s[2] = 0.0  # one dead sample in the student
    s_var = tf.Variable(s)
    with tf.GradientTape() as tape:
        loss = keras_spkd.similarity_preserving_loss(t, s_var)
    grad = tape.gradient(loss, s_var).numpy()
    # The loss value is the paper's (a zero row of G~ normalises to 0)...
    assert_allclose(float(loss), reference.sp_loss([t], [s]), rtol=1e-6)
    # ...the live rows keep their exact gradients...
    live = [i for i in range(6) if i != 2]
    numeric = _numeric_sp_gradient(t, s, rows=live)
    assert np.abs(numeric).max() > 1e-3
    assert_allclose(grad[live], numeric[live], rtol=1e-3, atol=1e-5)
    # ...and the dead row's gradient is of their size, not ~1 / epsilon (6e6 before).
    assert np.all(np.isfinite(grad[2]))
    assert np.abs(grad[2]).max() <= 10 * np.abs(grad[live]).max()
    g = keras.ops.convert_to_numpy(keras_spkd.similarity_matrix(s))
    assert np.all(g[2] == 0) and np.all(g[:, 2] == 0)


def _numeric_sp_gradient(t, s, rows, h=1e-6):
    numeric, s64 = np.zeros(s.shape), s.astype(np.float64)
    for index in np.ndindex(s.shape):
        if index[0] not in rows:
            continue
        up, down = s64.copy(), s64.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (reference.sp_loss([t], [up]) - reference.sp_loss([t], [down])) / (2 * h)
    return numeric


def test_batch_of_one_warns_that_sp_is_always_zero():
    with pytest.warns(UserWarning, match=r"batch of one sample: G is 1 x 1"):
        loss = keras_spkd.similarity_preserving_loss(np.ones((1, 3)), np.ones((1, 2)))
    assert float(loss) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two samples or more: no warning
        keras_spkd.similarity_preserving_loss(np.ones((2, 3)), np.ones((2, 2)))


def _nested(prefix, sequential=False):
    inner_in = keras.Input((8, 8, 1))
    conv = keras.layers.Conv2D(4, 3, padding="same", name=f"{prefix}_conv")
    if sequential:
        backbone = keras.Sequential([keras.Input((8, 8, 1)), conv], name=f"{prefix}_bb")
    else:
        backbone = keras.Model(inner_in, conv(inner_in), name=f"{prefix}_bb")
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.GlobalAveragePooling2D(name=f"{prefix}_pool")(backbone(inputs))
    return keras.Model(inputs, keras.layers.Dense(10, name=f"{prefix}_logits")(h), name=prefix)


@pytest.mark.parametrize(
    "teacher_layer, message",
    [
        ("t_bb/t_conv", r"'t_bb/t_conv' is inside the nested model 't_bb'.*SPDistiller"),
        ("t_bb", r"'t_bb' is a nested functional model.*SPDistiller.*'t_pool'"),
        ("t_nope", r"no layer 't_nope'\. Did you mean 't_pool'\?"),
    ],
)
def test_keras_adapter_names_layers_as_spdistiller_does(teacher_layer, message):
    teacher, student = _nested("t"), _nested("s")
    sp = keras_spkd.SimilarityPreservingDistillation(teacher_layer, "s_pool")
    with pytest.raises(ValueError, match=message):
        keras.distillation.Distiller(teacher=teacher, student=student, distillation_losses=sp)
    # SPDistiller taps the same names (the unknown one aside).
    if teacher_layer != "t_nope":
        keras_spkd.SPDistiller(teacher, student, [(teacher_layer, "s_pool")])


def test_keras_adapter_accepts_a_nested_sequential_by_name(data):
    x, y = data
    teacher, student = _nested("t", sequential=True), small_cnn("s", 4)
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=keras_spkd.SimilarityPreservingDistillation("t_bb", "s_group"),
    )
    distiller.compile(optimizer="sgd", loss=sparse_ce())
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert history.history["distillation_loss"][0] > 0


@pytest.mark.parametrize("w", [0.5, 0.8])
def test_keras_distiller_mapping_reproduces_the_papers_objective(data, w):
    """distillation_loss_weights=[gamma * w / (1 - w)] and lr / w: the paper's SGD steps."""
    x, y = data
    gamma, lr = 300.0, 0.02
    keras.utils.set_random_seed(9)
    teacher, student = small_cnn("t", 8), small_cnn("s", 4)
    twin = keras.models.clone_model(student)
    twin.set_weights(student.get_weights())
    ours = keras_spkd.SPDistiller(teacher, student, [("t_group", "s_group")], gamma=gamma)
    ours.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9), loss=sparse_ce())
    theirs = keras.distillation.Distiller(
        teacher=teacher,
        student=twin,
        distillation_losses=[keras_spkd.SimilarityPreservingDistillation("t_group", "s_group")],
        distillation_loss_weights=[gamma * w / (1 - w)],
        student_loss_weight=w,
    )
    theirs.compile(optimizer=keras.optimizers.SGD(lr / w, momentum=0.9), loss=sparse_ce())
    start = [v.copy() for v in student.get_weights()]
    for model in (ours, theirs):
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    moved = max(np.abs(a - b).max() for a, b in zip(student.get_weights(), start))
    assert moved > 1e-3
    for a, b in zip(student.get_weights(), twin.get_weights()):
        assert_allclose(a, b, atol=1e-5 * max(1.0, moved))


def test_keras_distiller_ignores_weights_of_a_single_loss_so_the_docs_use_a_list(data):
    """The pitfall behind the docstring's list: one loss object is weighed 1.0."""
    x, y = data
    teacher, student = small_cnn("t", 8), small_cnn("s", 4)
    sp = keras_spkd.SimilarityPreservingDistillation("t_group", "s_group")
    single = keras.distillation.Distiller(
        teacher=teacher, student=student, distillation_losses=sp, distillation_loss_weights=[300.0]
    )
    listed = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=[sp],
        distillation_loss_weights=[300.0],
    )
    assert single.distillation_loss_weights == [1.0]
    assert listed.distillation_loss_weights == [300.0]
    doc = keras_spkd.SimilarityPreservingDistillation.__doc__
    assert "distillation_losses=[keras_spkd.SimilarityPreservingDistillation(" in doc


def test_old_weight_names_still_work_with_a_deprecation_warning():
    t, s = _random((4, 3), 50), _random((4, 2), 51)
    expected = float(keras_spkd.similarity_preserving_loss(t, s, gamma=7.0))
    with pytest.warns(DeprecationWarning, match="`weights` is deprecated.*pass `gamma`"):
        assert float(keras_spkd.similarity_preserving_loss(t, s, weights=7.0)) == expected
    with pytest.warns(DeprecationWarning, match="`pair_weights` is deprecated"):
        old = keras_spkd.SimilarityPreservingLoss(pair_weights=7.0)
    assert old.gamma == 7.0 and float(old(t, s)) == pytest.approx(expected)
    # A 0.2 config (pair_weights) still rebuilds, and the new one says gamma.
    with pytest.warns(DeprecationWarning):
        rebuilt = keras_spkd.SimilarityPreservingLoss.from_config(
            {"name": "sp", "reduction": "sum_over_batch_size", "pair_weights": 2.0}
        )
    assert rebuilt.get_config()["gamma"] == 2.0 and "pair_weights" not in rebuilt.get_config()
    with pytest.warns(DeprecationWarning, match="`weights` is deprecated.*pass `beta`"):
        keras_spkd.attention_transfer_loss(
            np.ones((2, 2, 2, 1)), np.ones((2, 2, 2, 1)), weights=1.0
        )
    with pytest.raises(TypeError, match="Pass `gamma` only"):
        keras_spkd.similarity_preserving_loss(t, s, gamma=1.0, weights=1.0)
