"""The SP maths against the NumPy reference, and its properties."""

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
    got = keras_spkd.similarity_preserving_loss(ts, ss, weights=[3000.0, 0.5])
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
    with pytest.raises(ValueError, match="one weight per layer pair"):
        keras_spkd.similarity_preserving_loss(np.ones((2, 3)), np.ones((2, 3)), [1, 2])
    with pytest.raises(ValueError, match="at least one pair"):
        keras_spkd.similarity_preserving_loss([], [])


def test_loss_class_forwards_and_round_trips_config():
    t, s = [_random((6, 5), 18), _random((6, 2, 2, 2), 19)], [_random((6, 3), 20)] * 2
    loss = keras_spkd.SimilarityPreservingLoss(pair_weights=[2.0, 0.25])
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
    with pytest.raises(ValueError, match="no layer named 'nope'.*s_group"):
        keras.distillation.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=keras_spkd.SimilarityPreservingDistillation("t_group", "nope"),
        )


@pytest.mark.parametrize("b, hw, c_t, c_s", [(2, 4, 8, 3), (5, 7, 16, 4), (9, 3, 2, 2)])
def test_attention_transfer_matches_numpy_reference(b, hw, c_t, c_s):
    t, s = _random((b, hw, hw, c_t), 30), _random((b, hw, hw, c_s), 31)
    assert_allclose(keras_spkd.attention_map(t), reference.attention_map(t), atol=1e-6)
    got = float(keras_spkd.attention_transfer_loss(t, s, weights=1000.0))
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
