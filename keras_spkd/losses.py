"""The paper's maths: similarity matrices, the SP loss and a Hinton KD term.

Everything here is written once with `keras.ops` and computed in float32,
whatever dtype the activations arrive in (float16 `Q Q^T` overflows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

EPSILON = 1e-8
"""Floor for the row norm of G: keeps all-zero activation maps finite."""


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

    Args:
        features: Activations `A` (tensor or NumPy array), batch first.
        epsilon: Smallest row norm divided by. Defaults to `1e-8`.

    Returns:
        A float32 tensor `G` of shape `(b, b)`.

    Example:

    >>> g = keras_spkd.similarity_matrix(np.ones((4, 8, 8, 3)))
    >>> g.shape
    (4, 4)

    Reference: Tung & Mori, ICCV 2019, arXiv:1907.09682, eq. (1)-(2).
    """
    q = _as_matrix(features)
    gram = ops.matmul(q, ops.transpose(q))
    squared_norm = ops.sum(ops.square(gram), axis=1, keepdims=True)
    return gram * ops.rsqrt(ops.maximum(squared_norm, epsilon * epsilon))


def _as_list(features: Any) -> list:
    if isinstance(features, (list, tuple)):
        return list(features)
    return [features]


def _pair_weights(weights: Any, count: int) -> list[float]:
    if weights is None:
        return [1.0] * count
    if isinstance(weights, (int, float)):
        return [float(weights)] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(
            f"Expected one weight per layer pair ({count}); received "
            f"{len(weights)} weights: {weights}."
        )
    return weights


def _check_batch_sizes(teacher: Any, student: Any, index: int) -> None:
    b_t, b_s = ops.shape(teacher)[0], ops.shape(student)[0]
    if isinstance(b_t, int) and isinstance(b_s, int) and b_t != b_s:
        raise ValueError(
            "Teacher and student activations must share the batch dimension "
            f"b; pair {index} received teacher batch {b_t} (shape "
            f"{tuple(ops.shape(teacher))}) and student batch {b_s} (shape "
            f"{tuple(ops.shape(student))}). Feed both the same mini-batch."
        )


def _weighted_pairs(teacher_features: Any, student_features: Any, weights: Any):
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
        zip(_pair_weights(weights, len(teachers)), teachers, students)
    ):
        t, s = ops.convert_to_tensor(t), ops.convert_to_tensor(s)
        _check_batch_sizes(t, s, index)
        yield index, weight, t, s


def similarity_preserving_loss(
    teacher_features: Any,
    student_features: Any,
    weights: float | Sequence[float] | None = None,
) -> Any:
    """Computes the similarity-preserving distillation loss L_SP.

    For each pair `(A_T, A_S)` of teacher and student activations on the
    same mini-batch of size `b`, the loss is
    `(1 / b^2) * ||G_T - G_S||_F^2`, with `G` from `similarity_matrix`.
    Pairs are summed, each multiplied by its weight. Only similarities are
    compared, so the two maps may differ in spatial size and channel count.
    The result is a float32 scalar whatever the input dtype.

    Args:
        teacher_features: Teacher activations `A_T`: one tensor (or NumPy
            array) or a list of them, one per pair.
        student_features: Student activations `A_S`, matching
            `teacher_features` in count and batch size.
        weights: Per-pair weight (the paper's gamma when the SP term is
            used alone): a float or one float per pair. Defaults to `1.0`.

    Returns:
        A float32 scalar tensor.

    Example:

    >>> t = np.random.rand(8, 4, 4, 64)   # teacher group3 output
    >>> s = np.random.rand(8, 8, 8, 16)   # student group3 output
    >>> float(keras_spkd.similarity_preserving_loss(t, s)) >= 0.0
    True

    Reference: Tung & Mori, ICCV 2019, arXiv:1907.09682, eq. (3).
    """
    total = ops.zeros((), dtype="float32")
    for _, weight, t, s in _weighted_pairs(teacher_features, student_features, weights):
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

    >>> z = np.random.rand(8, 10)
    >>> float(keras_spkd.knowledge_distillation_loss(z, z))
    0.0

    Reference: Hinton, Vinyals & Dean, 2015, arXiv:1503.02531.
    """
    if temperature <= 0:
        raise ValueError(f"Expected temperature > 0; received {temperature}.")
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

    Reference: Zagoruyko & Komodakis, "Paying More Attention to Attention",
    ICLR 2017, arXiv:1612.03928.
    """
    a = ops.cast(ops.convert_to_tensor(features), "float32")
    if len(a.shape) < 3:
        raise ValueError(
            "Attention transfer needs spatial activations (b, h, w, c); received shape "
            f"{tuple(a.shape)}."
        )
    q = _as_matrix(ops.mean(ops.square(a), axis=-1))
    norm = ops.sqrt(ops.maximum(ops.sum(ops.square(q), axis=1, keepdims=True), epsilon**2))
    return q / norm


def attention_transfer_loss(
    teacher_features: Any,
    student_features: Any,
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
        weights: Per-pair weight. Defaults to `1.0`.

    Returns:
        A float32 scalar tensor.

    Reference: Zagoruyko & Komodakis, ICLR 2017, arXiv:1612.03928.
    """
    total = ops.zeros((), dtype="float32")
    for index, weight, t, s in _weighted_pairs(teacher_features, student_features, weights):
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
        pair_weights: Per-pair weight, a float or one per pair (gamma when
            this is the only distillation term). Defaults to `1.0`.
        name: Defaults to `"similarity_preserving_loss"`.

    Example:

    >>> loss = keras_spkd.SimilarityPreservingLoss()
    >>> loss(teacher_activations, student_activations)

    Reference: Tung & Mori, ICCV 2019, arXiv:1907.09682.
    """

    def __init__(
        self,
        pair_weights: float | Sequence[float] | None = None,
        name: str = "similarity_preserving_loss",
        reduction: str = "sum_over_batch_size",
        dtype: Any = None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.pair_weights = pair_weights

    def call(self, y_true, y_pred):
        return similarity_preserving_loss(y_true, y_pred, self.pair_weights)

    def get_config(self) -> dict:
        return {**super().get_config(), "pair_weights": self.pair_weights}


@keras.saving.register_keras_serializable(package="keras_spkd")
class SimilarityPreservingDistillation(keras.distillation.DistillationLoss):
    """SP loss for Keras's own `keras.distillation.Distiller`.

    Names one teacher layer and one student layer; the Keras distiller taps
    them and hands their activations to `similarity_preserving_loss`. Weight
    it (gamma) with the distiller's `distillation_loss_weights`.
    `keras_spkd.SPDistiller` does the same in one student pass; this class is
    for users who already build on `keras.distillation`.

    Args:
        teacher_layer_name: Name of the tapped teacher layer.
        student_layer_name: Name of the tapped student layer.

    Example:

    >>> keras.distillation.Distiller(
    ...     teacher=teacher, student=student,
    ...     distillation_losses=keras_spkd.SimilarityPreservingDistillation(
    ...         "t_group3", "s_group3"),
    ...     distillation_loss_weights=[3000.0], student_loss_weight=0.5)

    Reference: Tung & Mori, ICCV 2019, arXiv:1907.09682.
    """

    def __init__(self, teacher_layer_name: str, student_layer_name: str):
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    def validate_model_compatibility(self, teacher, student):
        for role, model, name in (
            ("teacher", teacher, self.teacher_layer_name),
            ("student", student, self.student_layer_name),
        ):
            available = [layer.name for layer in model.layers]
            if name not in available:
                raise ValueError(
                    f"The {role} has no layer named {name!r}; available layers: {available}."
                )

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return similarity_preserving_loss(teacher_outputs, student_outputs)

    def get_config(self) -> dict:
        return {
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
        }

    @classmethod
    def from_config(cls, config: dict) -> SimilarityPreservingDistillation:
        return cls(**config)
