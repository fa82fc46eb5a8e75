"""Distillation terms: SP, KD and AT as `keras.distillation.DistillationLoss` objects.

A term names the layers it reads (`teacher_layer_name`, `student_layer_name`;
`None` for the models' outputs, the logits) and turns the two activations
into a scalar with `compute_loss(teacher_outputs, student_outputs)`: Keras's
own protocol, so `keras_spkd.SPDistiller` and `keras.distillation.Distiller`
take these terms, and `SPDistiller` takes Keras's `FeatureDistillation`,
`LogitsDistillation` and a user's subclass alike. A term's weight (gamma for
SP) is not part of the term: it is the distiller's
`distillation_loss_weights`.

Three optional class attributes tell `SPDistiller` more than Keras's
protocol says; a user's term may set them too:

- `log_name`: the stem of the term's log key (`"sp"` logs `sp_loss`).
  Defaults to the class name in snake case, `Distillation` left out.
- `batch_statistic`: the loss compares samples of a batch with each other
  (SP's b x b matrix G), so under `tf.distribute` with
  `cross_replica=True` the distiller all-gathers its activations first.
- `uses_sample_weight`: `compute_loss` takes a `sample_weight` keyword.
"""

from __future__ import annotations

import keras

from keras_spkd.features import checked_layer_name, layer_paths
from keras_spkd.losses import (
    _similarity_preserving_loss,
    attention_transfer_loss,
    check_weight,
    knowledge_distillation_loss,
)

__all__ = [
    "AttentionTransferDistillation",
    "KnowledgeDistillation",
    "SimilarityPreservingDistillation",
]


def _refuse_nested_for_keras(term, teacher, student) -> None:
    """Keras's own Distiller taps top-level layers only (`model.get_layer(name).output`)."""
    for role, model, name in (
        ("teacher", teacher, term.teacher_layer_name),
        ("student", student, term.student_layer_name),
    ):
        top = {layer.name: layer for layer in getattr(model, "layers", [])}
        layer = top.get(name)
        nested_functional = isinstance(layer, keras.Model) and not isinstance(
            layer, keras.Sequential
        )
        if layer is not None and not nested_functional:
            continue
        if nested_functional or "/" in name:
            where = (
                "is a nested functional model, whose output lives in its own graph"
                if nested_functional
                else f"is inside the nested model {name.partition('/')[0]!r}"
            )
            raise ValueError(
                f"The {role} layer {name!r} {where}; keras.distillation.Distiller taps "
                "top-level layers only (model.get_layer(name).output, keras #16123). "
                "Use keras_spkd.SPDistiller, which taps nested models and their layers "
                "by path, or name a top-level layer: "
                f"{[n for n in layer_paths(model) if '/' not in n]}."
            )
        checked_layer_name(model, name, role)  # raises, suggesting the near names


class _LayerPairTerm(keras.distillation.DistillationLoss):
    """A term on one teacher layer and one student layer, both named."""

    def __init__(self, teacher_layer_name: str, student_layer_name: str):
        for role, name in (("teacher", teacher_layer_name), ("student", student_layer_name)):
            if not isinstance(name, str) or not name:
                raise ValueError(
                    f"Expected `{role}_layer_name` to be a layer name (nested layers as "
                    f'"backbone/layer"); received {name!r}.'
                )
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    def validate_model_compatibility(self, teacher, student):
        # Called by keras.distillation.Distiller; keras_spkd.SPDistiller looks
        # layers up itself (nested paths included) and does not call this.
        _refuse_nested_for_keras(self, teacher, student)

    def validate_outputs(self, teacher_outputs, student_outputs):
        for role, value in (("teacher", teacher_outputs), ("student", student_outputs)):
            if isinstance(value, (list, tuple, dict)):
                raise ValueError(
                    f"{type(self).__name__} compares one activation map per model; the "
                    f"{role} layer gave a {type(value).__name__} of tensors."
                )

    def get_config(self) -> dict:
        return {
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
        }

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.teacher_layer_name!r}, {self.student_layer_name!r})"


@keras.saving.register_keras_serializable(package="keras_spkd")
class SimilarityPreservingDistillation(_LayerPairTerm):
    """The SP term on one (teacher layer, student layer) pair.

    `compute_loss(A_T, A_S)` is `(1 / b^2) * ||G_T - G_S||_F^2`
    (`keras_spkd.similarity_preserving_loss`), float32 whatever the
    activations' dtype. Its weight, the paper's gamma, is the distiller's
    `distillation_loss_weights` entry. The two maps may differ in spatial
    size and channels; they share the batch.

    With `keras_spkd.SPDistiller` a layer inside a nested model is named by
    path (`"backbone/conv5"`), and `cross_replica=True` builds G over the
    global batch. With `keras.distillation.Distiller` (top-level layers only)
    mind its blend: it minimises `w * L_task + (1 - w) * sum_i(weight_i * L_i)`
    with `w = student_loss_weight` (0.5 by default). The paper's
    `L_task + gamma * L_SP` is that divided by `w` when
    `weight_i = gamma * w / (1 - w)`: pass those weights, in a list (given
    one loss object, not a list, Keras 3.12-3.15 weighs it 1.0), and divide
    the learning rate by `w` (exactly the same SGD steps; Adam keeps its
    learning rate).

    Args:
        teacher_layer_name: Teacher layer whose activations give G_T.
        student_layer_name: Student layer whose activations give G_S.

    Example:

    >>> sp = keras_spkd.SimilarityPreservingDistillation("t_group3", "s_group3")
    >>> distiller = keras_spkd.SPDistiller(
    ...     teacher, student, distillation_losses=[sp], distillation_loss_weights=[3000.0])
    >>> distiller.compile(optimizer="sgd",
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['loss', 'sp_loss', 'task_loss']

    With Keras's own distiller, the weights that give the paper's steps:

    >>> gamma, w = 3000.0, 0.5   # the paper's gamma; Keras's student_loss_weight
    >>> keras_distiller = keras.distillation.Distiller(
    ...     teacher=teacher, student=student,
    ...     distillation_losses=[keras_spkd.SimilarityPreservingDistillation(
    ...         "t_group3", "s_group3")],   # a list, or the weights are ignored
    ...     distillation_loss_weights=[gamma * w / (1 - w)], student_loss_weight=w)
    >>> keras_distiller.compile(  # learning rate / w: the steps of SGD(0.01) on CE + gamma * L_SP
    ...     optimizer=keras.optimizers.SGD(0.01 / w),
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = keras_distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)

    Reference: Tung & Mori, ICCV 2019, arXiv:1907.09682.
    """

    log_name = "sp"
    batch_statistic = True

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return _similarity_preserving_loss(teacher_outputs, student_outputs, None, warn=False)


@keras.saving.register_keras_serializable(package="keras_spkd")
class AttentionTransferDistillation(_LayerPairTerm):
    """Attention transfer (Zagoruyko & Komodakis, 2017) on one layer pair.

    `compute_loss(A_T, A_S)` is the mean over the batch and the h*w positions
    of `(Q_T - Q_S)^2`, `Q` the L2-normalised spatial attention map
    (`keras_spkd.attention_map`). The two layers must share their spatial
    size; channels may differ. The paper's beta (e.g. 1000) is the weight.

    Args:
        teacher_layer_name: Teacher layer, channels last.
        student_layer_name: Student layer of the same height and width.

    Example:

    >>> at = keras_spkd.AttentionTransferDistillation("t_group3", "s_group3")
    >>> float(at.compute_loss(np.ones((2, 4, 4, 8)), np.ones((2, 4, 4, 2))))
    0.0

    Reference: Zagoruyko & Komodakis, ICLR 2017, arXiv:1612.03928.
    """

    log_name = "at"

    def validate_outputs(self, teacher_outputs, student_outputs):
        super().validate_outputs(teacher_outputs, student_outputs)
        t_size, s_size = tuple(teacher_outputs.shape[1:-1]), tuple(student_outputs.shape[1:-1])
        if len(t_size) < 1 or t_size != s_size:
            raise ValueError(
                "Attention transfer pairs layers of one spatial size; "
                f"({self.teacher_layer_name!r}, {self.student_layer_name!r}) has teacher "
                f"{t_size} and student {s_size}."
            )

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return attention_transfer_loss(teacher_outputs, student_outputs)


@keras.saving.register_keras_serializable(package="keras_spkd")
class KnowledgeDistillation(keras.distillation.DistillationLoss):
    """Hinton's KD term on the models' logits, scaled by T^2.

    `compute_loss(z_T, z_S)` is `T^2` times the batch mean of
    `KL(softmax(z_T / T) || softmax(z_S / T))`, weighted by `sample_weight`
    when the distiller passes one (`keras_spkd.SPDistiller` does; Keras's
    `LogitsDistillation` has no sample weights). A teacher that ends in a
    softmax is refused: softening its probabilities again leaves a term of
    about 1e-5, off in effect.

    Args:
        temperature: Softening temperature T, finite, > 0. Defaults to `4.0`.

    Example:

    >>> kd = keras_spkd.KnowledgeDistillation(temperature=4.0)
    >>> z = np.random.default_rng(0).random((8, 10))
    >>> float(kd.compute_loss(z, z))
    0.0

    Reference: Hinton, Vinyals & Dean, 2015, arXiv:1503.02531.
    """

    log_name = "kd"
    uses_sample_weight = True
    teacher_layer_name = None
    student_layer_name = None

    def __init__(self, temperature: float = 4.0):
        self.temperature = check_weight(temperature, "temperature", positive=True)

    def validate_model_compatibility(self, teacher, student):
        if output_is_softmax(teacher):
            raise ValueError(
                f"KnowledgeDistillation needs a teacher that outputs logits, but the teacher "
                f"{teacher.name!r} ends in a softmax: softening its probabilities again makes "
                "the KD term about 1e-5, off in effect. Pass a teacher whose last layer has no "
                "activation (e.g. rebuild it with activation=None and copy the weights)."
            )

    def compute_loss(self, teacher_outputs, student_outputs, sample_weight=None, **kwargs):
        return knowledge_distillation_loss(
            teacher_outputs, student_outputs, self.temperature, sample_weight
        )

    def get_config(self) -> dict:
        return {"temperature": self.temperature}

    @classmethod
    def from_config(cls, config: dict) -> KnowledgeDistillation:
        return cls(**config)

    def __repr__(self) -> str:
        return f"KnowledgeDistillation(temperature={self.temperature:g})"


def output_is_softmax(model: keras.Model) -> bool:
    """Whether the model's (single) output comes out of a softmax."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return False
    if not outputs or len(outputs) != 1 or not model.layers:
        return False
    last = model.layers[-1]
    if isinstance(last, keras.Model):
        return output_is_softmax(last)
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", None) == "softmax"
