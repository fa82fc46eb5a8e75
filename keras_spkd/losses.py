"""The paper's maths: similarity matrices, the SP loss and a Hinton KD term.

Everything here is written once with `keras.ops` and computed in float32,
whatever dtype the activations arrive in (float16 `Q Q^T` overflows).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

EPSILON = 1e-8
"""Floor for the row norm of G: keeps all-zero activation maps finite."""

BATCH_OF_ONE = (
    "The similarity-preserving loss got a batch of one sample: G is 1 x 1, so L_SP is "
    "always 0 and gives no gradient. Use batches of two samples or more (e.g. "
    "drop_remainder=True, or a batch size that divides the data)."
)


def check_weight(value: Any, name: str, positive: bool = False) -> float:
    """Returns `value` as a float if it is a finite real number >= 0 (> 0 if `positive`).

    Accepts Python and NumPy numbers alike; rejects booleans, strings, NaN and
    infinities with an error that names the argument.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Expected `{name}` to be a real number; received {value!r} of type "
            f"{type(value).__name__}."
        )
    value = float(value)
    bound = "> 0" if positive else ">= 0"
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"Expected a finite {name} {bound}; received {value!r}.")
    return value


def _normalize_rows(x: Any, epsilon: float) -> Any:
    """Divides every row of `x` by its L2 norm, clamped at `epsilon`.

    A row whose norm is below `epsilon` (an all-zero sample) has no direction:
    its value is `row / epsilon` (0 for an all-zero row) and no gradient flows
    through its normalisation. Without that cut the gradient on such a row
    scales as `1 / epsilon`: 3e6 on one test batch whose other rows got at
    most 1e-2 (the research code's `F.normalize`, epsilon 1e-12: 3e10); with
    the cut, 3e-3. Every other row, and
    every loss value, is unchanged.
    """
    squared = ops.sum(ops.square(x), axis=1, keepdims=True)
    floor = epsilon * epsilon
    normalized = x * ops.rsqrt(ops.maximum(squared, floor))
    return ops.where(squared >= floor, normalized, ops.stop_gradient(normalized))


def _as_matrix(features: Any) -> Any:
    """Reshapes activations `(b, ...)` to Q of shape `(b, d)` in float32."""
    q = ops.cast(ops.convert_to_tensor(features), "float32")
    if len(q.shape) == 0:
        raise ValueError(
            "Expected activations with a batch dimension, shape (b, ...); received a scalar."
        )
    if len(q.shape) == 1:
        return ops.expand_dims(q, -1)
    tail = q.shape[1:]
    if all(dim is not None for dim in tail):
        return ops.reshape(q, (-1, math.prod(tail)))
    return ops.reshape(q, (ops.shape(q)[0], -1))


def similarity_matrix(features: Any, epsilon: float = EPSILON) -> Any:
    """Returns the row-normalised batch similarity matrix G of activations.

    The activation map `A` of shape `(b, h, w, c)` (any rank, batch first) is
    reshaped to `Q` of shape `(b, h*w*c)`; `G~ = Q Q^T` is `b x b`, and every
    row of `G~` is divided by its L2 norm. The norm is clamped at `epsilon`,
    so an all-zero activation map (a dead ReLU layer) gives `G = 0` with
    finite gradients instead of NaN. The maths runs in float32.

    Gradients: a row's gradient scales as `1 / ||G~_row||`, as the paper's
    formula implies. A sample whose activations are all zero has no
    direction: its row of `G` is 0 and no gradient flows through its
    normalisation (it would otherwise scale as `1 / epsilon`, about 1e6).

    Args:
        features: Activations `A` (tensor or NumPy array), batch first.
        epsilon: Smallest row norm divided by. Defaults to `1e-8`.

    Returns:
        A float32 tensor `G` of shape `(b, b)`.

    Example:

    >>> g = keras_spkd.similarity_matrix(np.ones((4, 8, 8, 3)))
    >>> tuple(g.shape)
    (4, 4)
    >>> np.round(keras.ops.convert_to_numpy(g)[0], 3)  # identical samples: rows of 1/sqrt(b)
    array([0.5, 0.5, 0.5, 0.5], dtype=float32)

    Reference: Tung & Mori, ICCV 2019, arXiv:1907.09682, eq. (1)-(2).
    """
    q = _as_matrix(features)
    return _normalize_rows(ops.matmul(q, ops.transpose(q)), epsilon)


def _as_list(features: Any) -> list:
    if isinstance(features, (list, tuple)):
        return list(features)
    return [features]


def pair_weights(weights: Any, count: int, name: str = "gamma") -> list[float]:
    """One checked weight per layer pair from a number, a list of them, or `None` (1.0).

    Raises:
        TypeError: Not a real number, or not a list of them.
        ValueError: Not finite, negative, or a list of another length.
    """
    if weights is None:
        return [1.0] * count
    if not isinstance(weights, (list, tuple)):
        if isinstance(weights, bool) or not isinstance(weights, numbers.Real):
            raise TypeError(
                f"Expected `{name}` to be a float or a list of floats, one per layer pair; "
                f"received {weights!r}."
            )
        return [check_weight(weights, name)] * count
    checked = [check_weight(w, name) for w in weights]
    if len(checked) == 1:
        return checked * count
    if len(checked) != count:
        raise ValueError(
            f"Expected one {name} per layer pair ({count} pairs); received "
            f"{len(checked)} values: {checked}."
        )
    return checked


def _renamed(old: str, new: str, old_value: Any, new_value: Any) -> Any:
    """`new_value`, or `old_value` with a DeprecationWarning when only the old name was used."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"Pass `{new}` only; `{old}` is its deprecated name.")
    warnings.warn(
        f"`{old}` is deprecated and will be removed in 0.4; pass `{new}` instead.",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value


def _check_batch_sizes(teacher: Any, student: Any, index: int) -> None:
    b_t, b_s = ops.shape(teacher)[0], ops.shape(student)[0]
    if isinstance(b_t, int) and isinstance(b_s, int) and b_t != b_s:
        raise ValueError(
            "Teacher and student activations must share the batch dimension "
            f"b; pair {index} received teacher batch {b_t} (shape "
            f"{tuple(ops.shape(teacher))}) and student batch {b_s} (shape "
            f"{tuple(ops.shape(student))}). Feed both the same mini-batch."
        )


def _weighted_pairs(teacher_features: Any, student_features: Any, weights: Any, name: str):
    """Validates paired activation maps; yields (index, weight, teacher, student)."""
    teachers, students = _as_list(teacher_features), _as_list(student_features)
    if not teachers:
        raise ValueError("Expected at least one pair of activations; received none.")
    if len(teachers) != len(students):
        raise ValueError(
            "Expected as many teacher as student activation maps; received "
            f"{len(teachers)} teacher and {len(students)} student maps."
        )
    for index, (weight, t, s) in enumerate(
        zip(pair_weights(weights, len(teachers), name), teachers, students)
    ):
        t, s = ops.convert_to_tensor(t), ops.convert_to_tensor(s)
        _check_batch_sizes(t, s, index)
        yield index, weight, t, s


def _warn_if_batch_of_one(features: Any) -> None:
    """Warns when the batch is statically one sample (SP is then always 0)."""
    if features.shape[0] == 1:
        warnings.warn(BATCH_OF_ONE, UserWarning, stacklevel=4)


def similarity_preserving_loss(
    teacher_features: Any,
    student_features: Any,
    gamma: float | Sequence[float] | None = None,
    *,
    weights: float | Sequence[float] | None = None,
) -> Any:
    """Computes the similarity-preserving distillation loss L_SP.

    For each pair `(A_T, A_S)` of teacher and student activations on the
    same mini-batch of size `b`, the loss is
    `(1 / b^2) * ||G_T - G_S||_F^2`, with `G` from `similarity_matrix`.
    Pairs are summed, each multiplied by its weight. Only similarities are
    compared, so the two maps may differ in spatial size and channel count.
    The result is a float32 scalar whatever the input dtype. With a batch of
    one sample `G` is 1 x 1 and the loss always 0: a `UserWarning` says so.

    Args:
        teacher_features: Teacher activations `A_T`: one tensor (or NumPy
            array) or a list of them, one per pair.
        student_features: Student activations `A_S`, matching
            `teacher_features` in count and batch size.
        gamma: The paper's weight gamma: a finite float >= 0, or one per
            pair. Defaults to `1.0` (the bare L_SP).
        weights: Deprecated name of `gamma`.

    Returns:
        A float32 scalar tensor.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> t = rng.random((8, 4, 4, 64))   # teacher group3 output, b = 8
    >>> s = rng.random((8, 8, 8, 16))   # student group3 output, other h, w, c
    >>> loss = keras_spkd.similarity_preserving_loss(t, s)
    >>> bool(0.0 < float(loss) < 1.0)
    True
    >>> round(float(keras_spkd.similarity_preserving_loss(t, 3.0 * t)), 9)  # same G
    0.0

    Reference: Tung & Mori, ICCV 2019, arXiv:1907.09682, eq. (3).
    """
    gamma = _renamed("weights", "gamma", weights, gamma)
    return _similarity_preserving_loss(teacher_features, student_features, gamma, warn=True)


def _similarity_preserving_loss(teacher_features, student_features, gamma, warn: bool):
    """`similarity_preserving_loss`; `warn=False` for callers that warn themselves."""
    total = ops.zeros((), dtype="float32")
    for _, weight, t, s in _weighted_pairs(teacher_features, student_features, gamma, "gamma"):
        if warn:
            _warn_if_batch_of_one(t)
        difference = similarity_matrix(t) - similarity_matrix(s)
        total = total + weight * ops.mean(ops.square(difference))
    return total


def knowledge_distillation_loss(
    teacher_logits: Any,
    student_logits: Any,
    temperature: float = 4.0,
    sample_weight: Any = None,
) -> Any:
    """Computes Hinton's KD term on softened logits, scaled by temperature^2.

    Per sample, `KL(softmax(z_T / T) || softmax(z_S / T))`, averaged over the
    batch (weighted by `sample_weight` when given) and multiplied by `T^2`
    so its gradients keep their size as `T` changes. Runs in float32.

    Args:
        teacher_logits: Teacher logits `z_T`, shape `(b, classes)`.
        student_logits: Student logits `z_S`, same shape.
        temperature: Softening temperature `T > 0`. Defaults to `4.0`.
        sample_weight: Optional per-sample weights, shape `(b,)`.

    Returns:
        A float32 scalar tensor.

    Example:

    >>> z = np.random.default_rng(0).random((8, 10))
    >>> float(keras_spkd.knowledge_distillation_loss(z, z))
    0.0
    >>> bool(keras_spkd.knowledge_distillation_loss(z, -z, temperature=2.0) > 0)
    True

    Reference: Hinton, Vinyals & Dean, 2015, arXiv:1503.02531.
    """
    temperature = check_weight(temperature, "temperature", positive=True)
    t = ops.cast(ops.convert_to_tensor(teacher_logits), "float32") / temperature
    s = ops.cast(ops.convert_to_tensor(student_logits), "float32") / temperature
    log_p_t = ops.log_softmax(t, axis=-1)
    per_sample = ops.sum(ops.exp(log_p_t) * (log_p_t - ops.log_softmax(s, axis=-1)), axis=-1)
    if sample_weight is None:
        mean = ops.mean(per_sample)
    else:
        w = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        mean = ops.sum(per_sample * w) / ops.maximum(ops.sum(w), EPSILON)
    return mean * (temperature * temperature)


def attention_map(features: Any, epsilon: float = EPSILON) -> Any:
    """Returns the spatial attention map Q of activations, rows L2-normalised.

    For `A` of shape `(b, h, w, c)`: the mean over channels of `A^2`, flattened
    to `(b, h*w)`, each row divided by its L2 norm (clamped at `epsilon`).
    Computed in float32.

    Args:
        features: Activations, batch first and channels last (rank >= 3).
        epsilon: Smallest norm divided by. Defaults to `1e-8`.

    Returns:
        A float32 tensor of shape `(b, h*w)`.

    Example:

    >>> q = keras_spkd.attention_map(np.ones((2, 4, 4, 8)))
    >>> tuple(q.shape), float(keras.ops.sum(q[0] ** 2))
    ((2, 16), 1.0)

    Reference: Zagoruyko & Komodakis, "Paying More Attention to Attention",
    ICLR 2017, arXiv:1612.03928.
    """
    a = ops.cast(ops.convert_to_tensor(features), "float32")
    if len(a.shape) < 3:
        raise ValueError(
            "Attention transfer needs spatial activations (b, h, w, c); received shape "
            f"{tuple(a.shape)}."
        )
    return _normalize_rows(_as_matrix(ops.mean(ops.square(a), axis=-1)), epsilon)


def attention_transfer_loss(
    teacher_features: Any,
    student_features: Any,
    beta: float | Sequence[float] | None = None,
    *,
    weights: float | Sequence[float] | None = None,
) -> Any:
    """Computes the attention-transfer (AT) loss between activation maps.

    For each pair, the mean over the batch and the h*w positions of
    `(Q_T - Q_S)^2`, with `Q` from `attention_map`; pairs are summed, each
    multiplied by its weight (the paper's beta, e.g. 1000). The two maps may
    differ in channels but must share their spatial size.

    Args:
        teacher_features: Teacher activations, one tensor or a list.
        student_features: Student activations, matching in count and size.
        beta: The paper's weight beta, a float or one per pair. Defaults
            to `1.0`.
        weights: Deprecated name of `beta`.

    Returns:
        A float32 scalar tensor.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> t, s = rng.random((4, 8, 8, 32)), rng.random((4, 8, 8, 16))  # same h, w
    >>> bool(keras_spkd.attention_transfer_loss(t, s, beta=1000.0) > 0)
    True

    Reference: Zagoruyko & Komodakis, ICLR 2017, arXiv:1612.03928.
    """
    beta = _renamed("weights", "beta", weights, beta)
    total = ops.zeros((), dtype="float32")
    for index, weight, t, s in _weighted_pairs(teacher_features, student_features, beta, "beta"):
        if tuple(t.shape[1:-1]) != tuple(s.shape[1:-1]):
            raise ValueError(
                f"Attention transfer compares spatial maps of one size; pair {index} has "
                f"teacher {tuple(t.shape[1:-1])} and student {tuple(s.shape[1:-1])}. Pair "
                "layers of equal resolution."
            )
        total = total + weight * ops.mean(ops.square(attention_map(t) - attention_map(s)))
    return total


@keras.saving.register_keras_serializable(package="keras_spkd")
class SimilarityPreservingLoss(keras.losses.Loss):
    """Similarity-preserving loss as a `keras.losses.Loss`.

    A thin wrapper over `similarity_preserving_loss`: `y_true` holds the
    teacher's activations `A_T` and `y_pred` the student's `A_S` (a tensor
    or a list of them, one per layer pair). The value is already a batch
    statistic, so the reduction leaves it unchanged.

    Args:
        gamma: The paper's weight gamma, a float or one per pair. Defaults
            to `1.0`.
        name: Defaults to `"similarity_preserving_loss"`.
        pair_weights: Deprecated name of `gamma`.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> teacher_activations = rng.random((8, 4, 4, 64))
    >>> student_activations = rng.random((8, 8, 8, 16))
    >>> loss = keras_spkd.SimilarityPreservingLoss(gamma=3000.0)
    >>> value = loss(teacher_activations, student_activations)
    >>> expected = 3000.0 * keras_spkd.similarity_preserving_loss(
    ...     teacher_activations, student_activations)
    >>> bool(np.isclose(float(value), float(expected)))
    True

    Reference: Tung & Mori, ICCV 2019, arXiv:1907.09682.
    """

    def __init__(
        self,
        gamma: float | Sequence[float] | None = None,
        name: str = "similarity_preserving_loss",
        reduction: str = "sum_over_batch_size",
        dtype: Any = None,
        pair_weights: float | Sequence[float] | None = None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gamma = _renamed("pair_weights", "gamma", pair_weights, gamma)

    @property
    def pair_weights(self):
        """Deprecated name of `gamma`."""
        return self.gamma

    def call(self, y_true, y_pred):
        return similarity_preserving_loss(y_true, y_pred, self.gamma)

    def get_config(self) -> dict:
        return {**super().get_config(), "gamma": self.gamma}
