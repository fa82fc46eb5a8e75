"""`SPDistiller`: a student trained under a frozen teacher with the SP loss."""

from __future__ import annotations

import copy
import numbers
import warnings
from collections.abc import Sequence

import keras
import tensorflow as tf
from keras import ops

from keras_spkd._compat import MultiWorkerFitMixin, engine_loss_tracker
from keras_spkd.features import build_feature_extractor, check_layer_pairs, graph_inputs
from keras_spkd.losses import (
    BATCH_OF_ONE,
    _similarity_preserving_loss,
    attention_transfer_loss,
    check_weight,
    knowledge_distillation_loss,
)

__all__ = ["FitUnderStrategy", "MultiWorkerFitMixin", "SPDistiller"]

TEACHER_KEY = "teacher"
STUDENT_KEY = "student"


def _check_gamma(gamma, count: int) -> list[float]:
    values = list(gamma) if isinstance(gamma, (list, tuple)) else [gamma]
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        raise TypeError(
            "Expected `gamma` to be a float or a list of floats, one per layer "
            f"pair; received {gamma!r}."
        )
    if len(values) == 1:
        values = values * count
    if len(values) != count:
        raise ValueError(
            f"Expected one gamma per layer pair ({count} pairs); received "
            f"{len(values)} values: {list(gamma)}."
        )
    return [check_weight(v, "gamma") for v in values]


def _output_is_softmax(model: keras.Model) -> bool:
    """Whether the model's (single) output comes out of a softmax."""
    if len(model.outputs) != 1 or not model.layers:
        return False
    last = model.layers[-1]
    if isinstance(last, keras.Model):
        return _output_is_softmax(last) if last.layers else False
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", None) == "softmax"


def _check_batch_dimensions(teacher_inputs, student_inputs) -> None:
    b_t, b_s = teacher_inputs[0].shape[0], student_inputs[0].shape[0]
    if b_t is not None and b_s is not None and b_t != b_s:
        raise ValueError(
            "The teacher and the student must see mini-batches of the same "
            f"size b; the teacher's input has batch dimension {b_t} and the "
            f"student's {b_s}. Build both with the same (or no) batch_size."
        )


def _unique(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _num_replicas() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


def _with_compute_dtype(model: keras.Model, dtype: str | None) -> keras.Model:
    """`model`, or a frozen copy computing in `dtype` (float32 weights)."""
    if dtype is None:
        return model
    if dtype not in ("bfloat16", "float16"):
        raise ValueError(
            f"Expected teacher_dtype None, 'bfloat16' or 'float16'; received {dtype!r}."
        )
    policy = f"mixed_{dtype}"

    def in_policy(layer):
        config = layer.get_config()
        if "dtype" in config and not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=in_policy)
    copy.set_weights(model.get_weights())
    copy.trainable = False
    return copy


@keras.saving.register_keras_serializable(package="keras_spkd")
class FitUnderStrategy(MultiWorkerFitMixin, keras.Model):
    """Trains a plain functional model with the multi-worker fixes applied.

    `FitUnderStrategy(model)` behaves as `model` in `compile`/`fit`/`evaluate`
    and trains `model`'s own variables. Only needed under
    `MultiWorkerMirroredStrategy`.

    Args:
        model: The `keras.Model` to train.

    Example:

    >>> trainee = keras_spkd.FitUnderStrategy(student)
    >>> trainee.compile(optimizer="sgd",
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = trainee.fit(x, y, batch_size=8, epochs=1, verbose=0)
    >>> bool(np.allclose(trainee(x), student(x)))   # student's own weights trained
    True
    """

    def __init__(self, model: keras.Model, **kwargs):
        kwargs.setdefault("name", f"{model.name}_fit")
        super().__init__(**kwargs)
        self.wrapped = model
        self.built = True

    def call(self, inputs, training=None):
        return self.wrapped(inputs, training=training)

    def get_config(self) -> dict:
        return {**super().get_config(), "model": keras.saving.serialize_keras_object(self.wrapped)}

    @classmethod
    def from_config(cls, config: dict) -> FitUnderStrategy:
        config = copy.deepcopy(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_spkd")
class SPDistiller(MultiWorkerFitMixin, keras.Model):
    """Trains a student with its task loss plus the similarity-preserving loss.

    Each step runs the frozen teacher once in inference mode (outside the
    gradient tape) and the student once, tapping the named layers of both.
    The loss is `task_loss + sum_i gamma_i * L_SP(pair_i)` and, with
    `kd_weight > 0`, `+ kd_weight * KD(teacher logits, student logits)` and,
    with `at_weight > 0`, `+ at_weight * AT(at_pairs)`: each term a weight and
    its layer pairs.
    Gradients flow to the student's variables only; the teacher never
    changes. `distiller(x)` is `student(x)`.

    Logged values: `loss` (the total), `task_loss` (the compiled loss plus
    the student's regularisation), `sp_loss` (the weighted SP term, gamma
    included, as added to `loss`), `kd_loss` (the weighted KD term, when
    used), and the compiled metrics on the student's predictions.

    Data may be `(x, y)`, `(x, y, sample_weight)` or, for privileged
    information, `({"teacher": x_t, "student": x_s}, y)` (exactly these two
    keys). Sample weights weigh the task and KD terms; the SP term is a
    statistic of the batch, and is always 0 for a batch of one sample (G is
    1 x 1): a `UserWarning` says so once.

    KD needs a teacher that outputs logits: with `kd_weight > 0` a teacher
    whose last layer is a softmax is refused (softening probabilities again
    leaves a KD term of about 1e-5, off in effect).

    Under `tf.distribute`, the default computes G on each replica's share of
    the batch (b / replicas samples): a different objective from one device.
    `cross_replica=True` all-gathers the tapped activations so that G is
    built over the global batch and the loss does not depend on the replica
    count.

    Args:
        teacher: Trained functional or Sequential `keras.Model`; it is set
            non-trainable.
        student: Functional or Sequential `keras.Model` to train.
        layer_pairs: List of `(teacher layer, student layer)` names; nested
            layers as `"backbone/layer"`.
        gamma: Weight gamma of the SP term, a finite float >= 0 or one per
            pair. Defaults to `3000.0` (the paper's CIFAR-10 value).
        kd_weight: Weight of Hinton's KD term, finite, >= 0. Defaults to
            `0.0` (off).
        temperature: KD temperature T, finite, > 0. Defaults to `4.0`.
        cross_replica: Build G over the global batch under `tf.distribute`.
            Defaults to `False`.
        at_pairs: Layer pairs for the attention-transfer baseline
            (Zagoruyko & Komodakis, 2017); equal spatial sizes. Defaults to
            `layer_pairs` when `at_weight > 0`.
        at_weight: Weight (beta) of the AT term, finite, >= 0. Defaults to
            `0.0` (off).
        teacher_dtype: Compute dtype of the teacher's forward pass, e.g.
            `"bfloat16"` or `"float16"` (a copy of the teacher with float32
            weights computes in it; the SP maths stays float32). Defaults to
            `None`: the teacher's own policy.

    Example:

    >>> distiller = keras_spkd.SPDistiller(
    ...     teacher, student, layer_pairs=[("t_group3", "s_group3")], gamma=3000.0)
    >>> distiller.compile(optimizer="sgd", metrics=["accuracy"],
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = distiller.fit(train_ds, validation_data=val_ds, epochs=2, verbose=0)
    >>> [key for key in sorted(history.history) if not key.startswith("val_")]
    ['accuracy', 'loss', 'sp_loss', 'task_loss']
    >>> bool(np.allclose(distiller(x), student(x)))   # distiller(x) is student(x)
    True

    Reference: Tung & Mori, ICCV 2019, arXiv:1907.09682.
    """

    def __init__(
        self,
        teacher: keras.Model,
        student: keras.Model,
        layer_pairs: Sequence[tuple[str, str]],
        gamma: float | Sequence[float] = 3000.0,
        kd_weight: float = 0.0,
        temperature: float = 4.0,
        cross_replica: bool = False,
        teacher_dtype: str | None = None,
        at_pairs: Sequence[tuple[str, str]] | None = None,
        at_weight: float = 0.0,
        name: str = "sp_distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if teacher is student:
            raise ValueError(
                "The teacher and the student are the same model object; pass "
                "a trained teacher and a separate student to train."
            )
        teacher_inputs = graph_inputs(teacher, "teacher")
        student_inputs = graph_inputs(student, "student")
        self.layer_pairs = check_layer_pairs(layer_pairs)
        self._gammas = _check_gamma(gamma, len(self.layer_pairs))
        # As given (one float or a list), as plain floats: get_config is JSON.
        self.gamma = list(self._gammas) if isinstance(gamma, (list, tuple)) else self._gammas[0]
        self.kd_weight = check_weight(kd_weight, "kd_weight")
        self.temperature = check_weight(temperature, "temperature", positive=True)
        self.at_weight = check_weight(at_weight, "at_weight")
        _check_batch_dimensions(teacher_inputs, student_inputs)
        if self.kd_weight > 0 and _output_is_softmax(teacher):
            raise ValueError(
                f"kd_weight={self.kd_weight} needs a teacher that outputs logits, but the "
                f"teacher {teacher.name!r} ends in a softmax: softening its probabilities "
                "again makes the KD term about 1e-5, off in effect. Pass a teacher whose "
                "last layer has no activation (e.g. rebuild it with activation=None and "
                "copy the weights)."
            )
        self.cross_replica = bool(cross_replica)
        self.teacher_dtype = teacher_dtype
        self._warned_batch_of_one = False
        self.at_pairs = check_layer_pairs(at_pairs) if at_pairs else []
        if self.at_weight > 0 and not self.at_pairs:
            self.at_pairs = list(self.layer_pairs)

        teacher.trainable = False
        self.teacher = teacher
        self.student = student
        all_pairs = self.layer_pairs + self.at_pairs
        teacher_names = _unique([t for t, _ in all_pairs])
        student_names = _unique([s for _, s in all_pairs])
        self._teacher_index = [teacher_names.index(t) for t, _ in self.layer_pairs]
        self._student_index = [student_names.index(s) for _, s in self.layer_pairs]
        self._at_teacher_index = [teacher_names.index(t) for t, _ in self.at_pairs]
        self._at_student_index = [student_names.index(s) for _, s in self.at_pairs]
        # The teacher is cut after its deepest tapped layer unless KD needs
        # its logits; the student returns [*features, predictions] in one pass.
        self._teacher_extractor = build_feature_extractor(
            _with_compute_dtype(teacher, teacher_dtype),
            teacher_names,
            include_predictions=self.kd_weight > 0,
            role="teacher",
        )
        self._student_extractor = build_feature_extractor(
            student, student_names, include_predictions=True, role="student"
        )
        self._num_teacher_features = len(teacher_names)
        self._num_student_features = len(student_names)
        for (t_name, s_name), i, j in zip(
            self.at_pairs, self._at_teacher_index, self._at_student_index
        ):
            t_size = tuple(self._teacher_extractor.outputs[i].shape[1:-1])
            s_size = tuple(self._student_extractor.outputs[j].shape[1:-1])
            if t_size != s_size:
                raise ValueError(
                    f"Attention transfer pairs layers of one spatial size; ({t_name!r}, "
                    f"{s_name!r}) has teacher {t_size} and student {s_size}."
                )

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.task_loss_tracker = keras.metrics.Mean(name="task_loss")
        self.sp_loss_tracker = keras.metrics.Mean(name="sp_loss")
        self.kd_loss_tracker = keras.metrics.Mean(name="kd_loss") if self.kd_weight > 0 else None
        self.at_loss_tracker = keras.metrics.Mean(name="at_loss") if self.at_weight > 0 else None
        self.built = True

    @property
    def metrics(self):
        # Keras's own "loss" tracker is never fed by this train_step: ours,
        # with the total loss, replaces it.
        engine_tracker = engine_loss_tracker(self)
        return [m for m in super().metrics if m is not engine_tracker]

    def _split_inputs(self, x):
        if not isinstance(x, dict):
            return x, x
        if set(x) == {TEACHER_KEY, STUDENT_KEY}:
            return x[TEACHER_KEY], x[STUDENT_KEY]
        lowered = {str(key).lower() for key in x}
        if lowered & {TEACHER_KEY, STUDENT_KEY}:
            raise ValueError(
                'Privileged inputs are a dict with exactly the keys "teacher" and "student" '
                f"(lower case); received keys {sorted(map(str, x))}."
            )
        return x, x  # a multi-input model's own dict, seen by both

    def _warn_if_batch_of_one(self, features) -> list:
        """Warns once when SP sees a batch of one sample (G is 1 x 1, SP is 0).

        A batch size known while tracing is checked then; an unknown one by
        the returned op, at run time (not under XLA, which compiles no Python
        call: there only static sizes are checked).
        """

        def warn():
            if not self._warned_batch_of_one:
                self._warned_batch_of_one = True
                warnings.warn(BATCH_OF_ONE, UserWarning, stacklevel=2)
            return True

        if features.shape[0] is not None:
            if features.shape[0] == 1:
                warn()
            return []
        if self.jit_compile:
            return []

        return [
            tf.cond(
                tf.equal(tf.shape(features)[0], 1),
                lambda: tf.py_function(warn, [], tf.bool),
                lambda: tf.constant(False),
            )
        ]

    @property
    def gammas(self) -> list[float]:
        """gamma for each layer pair, in `layer_pairs` order."""
        return list(self._gammas)

    def tapped_features(self, inputs) -> tuple[list, list]:
        """Returns the tapped activations, one (teacher, student) pair per layer pair.

        Both models run in inference mode; `inputs` may be privileged
        (`{"teacher": x_t, "student": x_s}`). For analysis and pictures, not
        training.

        Returns:
            `(teacher_features, student_features)`, lists ordered as
            `layer_pairs`.
        """
        x_teacher, x_student = self._split_inputs(inputs)
        teacher_out = self._teacher_outputs(x_teacher)
        student_out = self._student_extractor(x_student, training=False)
        return (
            [teacher_out[i] for i in self._teacher_index],
            [student_out[i] for i in self._student_index],
        )

    def call(self, inputs, training=None):
        return self.student(self._split_inputs(inputs)[1], training=training)

    def _privileged_batch_checks(self, x_teacher, x_student) -> list:
        """Rejects teacher/student batches of different sizes.

        Statically known sizes raise a ValueError while tracing; otherwise the
        returned assertion must gate the step (tf.control_dependencies), or the
        loss maths may fail first with a bare shape error.
        """
        if x_teacher is x_student:
            return []
        first_t = tf.nest.flatten(x_teacher)[0]
        first_s = tf.nest.flatten(x_student)[0]
        b_t, b_s = first_t.shape[0], first_s.shape[0]
        if b_t is not None and b_s is not None:
            if b_t != b_s:
                raise ValueError(
                    "Privileged inputs must hold the same samples: the "
                    f"'teacher' batch has {b_t} samples and the 'student' "
                    f"batch {b_s}."
                )
            return []
        if self.jit_compile:  # XLA compiles no Assert op
            return []
        return [
            tf.debugging.assert_equal(
                tf.shape(first_t)[0],
                tf.shape(first_s)[0],
                message="Privileged inputs must hold the same samples: the "
                "'teacher' and 'student' batches differ in size.",
            )
        ]

    def _teacher_outputs(self, x_teacher):
        outputs = self._teacher_extractor(x_teacher, training=False)
        return outputs if isinstance(outputs, (list, tuple)) else [outputs]

    def _gather(self, tensors):
        context = tf.distribute.get_replica_context()
        if not self.cross_replica or context is None:
            return tensors
        if context.num_replicas_in_sync == 1:
            return tensors
        return [context.all_gather(t, axis=0) for t in tensors]

    def _distillation_losses(self, x, y, sample_weight, teacher_out, student_out, training):
        """Returns (loss for gradients, unscaled parts for logs, y_pred)."""
        n_t, n_s = self._num_teacher_features, self._num_student_features
        y_pred = student_out[n_s:]
        y_pred = y_pred[0] if len(y_pred) == 1 else list(y_pred)
        task = self.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
        if any(self._gammas):
            teacher_feats = self._gather([teacher_out[i] for i in self._teacher_index])
            student_feats = self._gather([student_out[i] for i in self._student_index])
            with tf.control_dependencies(self._warn_if_batch_of_one(teacher_feats[0])):
                sp = _similarity_preserving_loss(
                    teacher_feats, student_feats, self._gammas, warn=False
                )
        else:  # gamma = 0: no all-gather, no SP maths (they would be multiplied by zero)
            sp = ops.zeros((), "float32")
        parts = {"sp_loss": sp}
        if self.at_weight > 0:
            parts["at_loss"] = attention_transfer_loss(
                [teacher_out[i] for i in self._at_teacher_index],
                [student_out[:n_s][i] for i in self._at_student_index],
                self.at_weight,
            )
        if self.kd_weight > 0:
            parts["kd_loss"] = self.kd_weight * knowledge_distillation_loss(
                teacher_out[n_t], y_pred, self.temperature, sample_weight
            )
        # Gradients are summed over replicas. Keras losses come already divided
        # by the replica count; the distillation terms are divided here, and
        # every logged value is the undivided one.
        replicas = _num_replicas()
        task = ops.cast(task, "float32")
        loss = task + sum(parts.values()) / replicas
        parts["task_loss"] = task * replicas
        return loss, parts, y_pred

    def _log(self, parts, batch_size):
        total = sum(parts.values())
        self.loss_tracker.update_state(total, sample_weight=batch_size)
        self.task_loss_tracker.update_state(parts["task_loss"], batch_size)
        self.sp_loss_tracker.update_state(parts["sp_loss"], batch_size)
        if self.kd_loss_tracker is not None:
            self.kd_loss_tracker.update_state(parts["kd_loss"], batch_size)
        if self.at_loss_tracker is not None:
            self.at_loss_tracker.update_state(parts["at_loss"], batch_size)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x_teacher, x_student = self._split_inputs(x)
        with tf.control_dependencies(self._privileged_batch_checks(x_teacher, x_student)):
            teacher_out = self._teacher_outputs(x_teacher)
            variables = self.student.trainable_variables
            with tf.GradientTape() as tape:
                student_out = self._student_extractor(x_student, training=True)
                loss, parts, y_pred = self._distillation_losses(
                    x_student, y, sample_weight, teacher_out, student_out, True
                )
                scaled_loss = self.optimizer.scale_loss(loss)
            gradients = tape.gradient(scaled_loss, variables)
            self.optimizer.apply(gradients, variables)
            self._log(parts, tf.shape(tf.nest.flatten(x_student)[0])[0])
            return self.compute_metrics(x_student, y, y_pred, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x_teacher, x_student = self._split_inputs(x)
        with tf.control_dependencies(self._privileged_batch_checks(x_teacher, x_student)):
            teacher_out = self._teacher_outputs(x_teacher)
            student_out = self._student_extractor(x_student, training=False)
            _, parts, y_pred = self._distillation_losses(
                x_student, y, sample_weight, teacher_out, student_out, False
            )
            self._log(parts, tf.shape(tf.nest.flatten(x_student)[0])[0])
            return self.compute_metrics(x_student, y, y_pred, sample_weight)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "teacher": keras.saving.serialize_keras_object(self.teacher),
                "student": keras.saving.serialize_keras_object(self.student),
                "layer_pairs": [list(pair) for pair in self.layer_pairs],
                "gamma": self.gamma,
                "kd_weight": self.kd_weight,
                "temperature": self.temperature,
                "cross_replica": self.cross_replica,
                "teacher_dtype": self.teacher_dtype,
                "at_pairs": [list(pair) for pair in self.at_pairs],
                "at_weight": self.at_weight,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> SPDistiller:
        config = copy.deepcopy(config)  # the deserializer consumes what it reads
        for key in ("teacher", "student"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
