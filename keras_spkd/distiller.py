"""`SPDistiller`: a student trained under a frozen teacher with distillation terms."""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import keras
from keras import ops

from keras_spkd import _backend
from keras_spkd._compat import MultiWorkerFitMixin, engine_loss_tracker
from keras_spkd.features import (
    build_feature_extractor,
    check_layer_pairs,
    check_model,
    checked_layer_name,
    graph_inputs,
)
from keras_spkd.losses import BATCH_OF_ONE, EPSILON, check_weight, pair_weights
from keras_spkd.terms import (
    AttentionTransferDistillation,
    KnowledgeDistillation,
    SimilarityPreservingDistillation,
)

__all__ = ["FitUnderStrategy", "MultiWorkerFitMixin", "SPDistiller"]

TEACHER_KEY = "teacher"
STUDENT_KEY = "student"

# Terms whose layers SPDistiller looks up itself (nested paths included):
# their own validate_model_compatibility is Keras's top-level-only lookup.
_LAYER_LOOKUPS = (
    keras.distillation.FeatureDistillation,
    SimilarityPreservingDistillation,
    AttentionTransferDistillation,
)


def _dead_layer_message(term) -> str:
    return (
        f"The teacher layer {term.teacher_layer_name!r} of {term!r} gave activations of about "
        "0 for a whole batch (an untrained or dead layer): G_T is 0, so this SP term is a "
        "constant gamma / b with no gradient. Tap another teacher layer, or check the teacher."
    )


def _log_stem(term) -> str:
    """`sp` for SimilarityPreservingDistillation; a user's `MyTerm` gives `my_term`."""
    stem = getattr(term, "log_name", None)
    if not stem:
        stem = re.sub(r"(Distillation|Loss)$", "", type(term).__name__) or "distillation"
        stem = re.sub(r"(?<!^)(?=[A-Z])", "_", stem).lower()
    return re.sub(r"[^0-9A-Za-z_.-]", "_", stem)


@dataclass
class _Entry:
    """One term of the objective, as the train step reads it."""

    term: keras.distillation.DistillationLoss
    weight: float
    key: str  # its own log key, weighted (e.g. sp_loss_group3-group3)
    group: str  # the key it adds to (sp_loss)
    teacher_index: int | None  # into the teacher's tapped features; None: its outputs
    student_index: int | None


def _check_batch_dimensions(teacher_inputs, student_inputs) -> None:
    b_t, b_s = teacher_inputs[0].shape[0], student_inputs[0].shape[0]
    if b_t is not None and b_s is not None and b_t != b_s:
        raise ValueError(
            "The teacher and the student must see mini-batches of the same "
            f"size b; the teacher's input has batch dimension {b_t} and the "
            f"student's {b_s}. Build both with the same (or no) batch_size."
        )


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

    clone = keras.models.clone_model(model, clone_function=in_policy)
    clone.set_weights(model.get_weights())
    clone.trainable = False
    return clone


def _short_form_terms(layer_pairs, gamma, kd_weight, temperature, at_pairs, at_weight):
    """The card's arguments, each checked once, as (terms, weights, settings as given)."""
    pairs = check_layer_pairs(layer_pairs)
    gammas = pair_weights(gamma, len(pairs), "gamma")
    settings = {
        "layer_pairs": pairs,
        "gamma": list(gammas) if isinstance(gamma, (list, tuple)) else gammas[0],
        "kd_weight": check_weight(kd_weight, "kd_weight"),
        "temperature": check_weight(temperature, "temperature", positive=True),
        "at_pairs": check_layer_pairs(at_pairs) if at_pairs else [],
        "at_weight": check_weight(at_weight, "at_weight"),
    }
    terms = [SimilarityPreservingDistillation(t, s) for t, s in pairs]
    weights = list(gammas)
    if settings["kd_weight"] > 0:
        terms.append(KnowledgeDistillation(settings["temperature"]))
        weights.append(settings["kd_weight"])
    if settings["at_weight"] > 0:
        for t, s in settings["at_pairs"] or pairs:
            terms.append(AttentionTransferDistillation(t, s))
            weights.append(settings["at_weight"])
    return terms, weights, settings


def _checked_terms(losses, weights):
    """Keras's `distillation_losses` / `_weights` as two checked lists."""
    single = isinstance(losses, keras.distillation.DistillationLoss)
    if single and weights is not None:
        raise ValueError(
            "Received one distillation loss object with distillation_loss_weights "
            f"{weights!r}: keras.distillation.Distiller would silently weigh it 1.0. Pass "
            "the loss in a list, distillation_losses=[loss], with one weight per loss."
        )
    terms = [losses] if single else losses
    if not isinstance(terms, (list, tuple)) or not terms:
        raise ValueError(
            "Expected `distillation_losses` to be a keras.distillation.DistillationLoss or a "
            f"non-empty list of them; received {losses!r}."
        )
    for term in terms:
        if not isinstance(term, keras.distillation.DistillationLoss):
            raise TypeError(
                "Every distillation loss must be a keras.distillation.DistillationLoss "
                f"(keras_spkd's SP/KD/AT terms, Keras's own, or a subclass); received "
                f"{term!r} of type {type(term).__name__}."
            )
    if weights is None:
        return list(terms), [1.0] * len(terms)
    if not isinstance(weights, (list, tuple)):
        raise TypeError(
            "Expected `distillation_loss_weights` to be a list of numbers, one per loss; "
            f"received {weights!r}."
        )
    if len(weights) != len(terms):
        raise ValueError(
            f"Expected one weight per distillation loss ({len(terms)} losses); received "
            f"{len(weights)} distillation_loss_weights: {list(weights)}."
        )
    return list(terms), [check_weight(w, "distillation_loss_weights entry") for w in weights]


def _check_student_loss_weight(value):
    if value is None:
        return None
    value = check_weight(value, "student_loss_weight")
    if value > 1.0:
        raise ValueError(
            "Expected student_loss_weight None (task + sum of weighted terms, the paper's "
            f"total) or a number in [0, 1] (Keras's blend); received {value!r}."
        )
    return value


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
    """Trains a student with its task loss plus weighted distillation terms.

    The terms are `keras.distillation.DistillationLoss` objects, each with a
    weight: keras-spkd's `SimilarityPreservingDistillation` (SP, weight
    gamma), `KnowledgeDistillation` (KD) and `AttentionTransferDistillation`
    (AT), Keras's own `FeatureDistillation` and `LogitsDistillation`, or a
    user's subclass. The card's short form, `layer_pairs`, `gamma`,
    `kd_weight` and `at_weight`, is the same list written shorter: one SP term
    per pair (weight gamma), then KD, then one AT term per AT pair.

    The total is the paper's `task_loss + sum_i(w_i * term_i)` by default
    (`student_loss_weight=None`), or Keras's blend
    `a * task_loss + (1 - a) * sum_i(w_i * term_i)` with
    `student_loss_weight=a` in [0, 1]: with the same arguments this class is
    a drop-in for `keras.distillation.Distiller`, and adds nested layer paths
    (`"backbone/conv5"`), one student pass per step, SP over the global batch
    under `tf.distribute`, privileged inputs and sample weights.

    Each step runs the frozen teacher once in inference mode, outside the
    gradient computation, cut after its deepest tapped layer unless a term
    reads its outputs; and the student once, returning its tapped layers and
    its predictions. Gradients reach the student's variables only.
    `distiller(x)` is `student(x)`.

    Logs, each weighted as added to the total: `loss`, `task_loss` (the
    compiled loss plus the student's regularisation), one key per kind of
    term, `<stem>_loss` (`sp_loss`, `kd_loss`, `at_loss`, `feature_loss`,
    `logits_loss`, `my_term_loss` for a user's `MyTerm`; a term may set its
    own stem as `log_name`), and, where a kind has several terms, one key per
    term: `<stem>_loss_<teacher layer>-<student layer>` (a `/` in a nested
    path becomes `.`), or `<stem>_loss_<n>` (n = 1, 2... in order) for terms
    without layers or with the same layers. With `student_loss_weight` set,
    Keras's keys too: `total_loss`, `student_loss` and `distillation_loss`
    (the unblended weighted sum). Monitor `val_task_loss` (with
    `mode="min"`: Keras infers the mode of its own keys only) or
    `val_accuracy` in `EarlyStopping` and `ModelCheckpoint`: `val_loss`
    includes the distillation terms.

    Data may be `(x, y)`, `(x, y, sample_weight)` or, for privileged
    information, `({"teacher": x_t, "student": x_s}, y)` (exactly these two
    keys). Sample weights weigh the task and KD terms; SP is a statistic of
    the batch, and is always 0 for a batch of one sample (G is 1 x 1): a
    `UserWarning` says so once, as it does once for a teacher layer whose
    activations are about 0.

    Under `tf.distribute`, the default computes G on each replica's share of
    the batch (b / replicas samples): a different objective from one device.
    `cross_replica=True` all-gathers (in float32) the activations of every
    term with `batch_statistic = True` (SP), so that G is built over the
    global batch and the loss does not depend on the replica count.

    Where it differs from `keras.distillation.Distiller` on purpose: the
    task loss includes the student's regularisation losses and honours
    `sample_weight`; `evaluate` runs the student in inference mode
    (Keras's taps it with `training=True`); teacher and student inputs may
    differ in shape (privileged information), only their batch must agree.

    Args:
        teacher: Trained `keras.Model` (functional or Sequential when its
            layers are tapped; any model for terms on its outputs); it is set
            non-trainable.
        student: `keras.Model` to train, under the same condition.
        layer_pairs: Short form: `(teacher layer, student layer)` names, one
            SP term each; nested layers as `"backbone/layer"`.
        gamma: Short form: SP weight gamma, a finite float >= 0 or one per
            pair. Defaults to `3000.0` (the paper's CIFAR-10 value).
        kd_weight: Short form: weight of Hinton's KD term, finite, >= 0.
            Defaults to `0.0` (no KD term).
        temperature: Short form: KD temperature T, finite, > 0. Defaults to
            `4.0`.
        cross_replica: Build G over the global batch under `tf.distribute`.
            Defaults to `False`. (On JAX the step is one global program: G
            is always over the global batch.)
        teacher_dtype: Compute dtype of the teacher's forward pass,
            `"bfloat16"` or `"float16"` (a copy of the teacher with float32
            weights computes in it; the terms run in float32). Defaults to
            `None`: the teacher's own policy.
        at_pairs: Short form: layer pairs of the AT terms (equal spatial
            sizes). Defaults to `layer_pairs` when `at_weight > 0`.
        at_weight: Short form: weight (beta) of each AT term, finite, >= 0.
            Defaults to `0.0` (no AT term).
        distillation_losses: The terms: one `DistillationLoss` or a list.
            Instead of the short form.
        distillation_loss_weights: One weight per term (finite, >= 0).
            Defaults to `1.0` each.
        student_loss_weight: `None` for the paper's total, or `a` in [0, 1]
            for Keras's blend. Defaults to `None`.

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
        layer_pairs: Sequence[tuple[str, str]] | None = None,
        gamma: float | Sequence[float] | None = None,
        kd_weight: float = 0.0,
        temperature: float = 4.0,
        cross_replica: bool = False,
        teacher_dtype: str | None = None,
        at_pairs: Sequence[tuple[str, str]] | None = None,
        at_weight: float = 0.0,
        distillation_losses=None,
        distillation_loss_weights: Sequence[float] | None = None,
        student_loss_weight: float | None = None,
        name: str = "sp_distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        check_model(teacher, "teacher")
        check_model(student, "student")
        if teacher is student:
            raise ValueError(
                "The teacher and the student are the same model object; pass "
                "a trained teacher and a separate student to train."
            )
        if _is_terms(layer_pairs) and distillation_losses is None:
            # keras.distillation.Distiller(teacher, student, distillation_losses)
            layer_pairs, distillation_losses = None, layer_pairs
        short_form = layer_pairs is not None
        if short_form == (distillation_losses is not None):
            raise ValueError(
                "Give the terms either as the short form (layer_pairs=[...], gamma, kd_weight, "
                "at_weight) or as distillation_losses=[...]; received "
                + ("both." if short_form else "neither.")
            )
        if not short_form and (gamma is not None or kd_weight or at_weight or at_pairs):
            raise ValueError(
                "gamma, kd_weight, at_weight and at_pairs belong to the short form; with "
                "distillation_losses, give each term's weight in distillation_loss_weights."
            )
        if short_form:
            if distillation_loss_weights is not None:
                raise ValueError(
                    "distillation_loss_weights goes with distillation_losses; the short form "
                    "takes gamma, kd_weight and at_weight."
                )
            gamma = 3000.0 if gamma is None else gamma
            terms, weights, self._short_settings = _short_form_terms(
                layer_pairs, gamma, kd_weight, temperature, at_pairs, at_weight
            )
        else:
            terms, weights = _checked_terms(distillation_losses, distillation_loss_weights)
            self._short_settings = None
        self._short_form = short_form
        self.distillation_losses = terms
        self.distillation_loss_weights = weights
        self.student_loss_weight = _check_student_loss_weight(student_loss_weight)
        self.cross_replica = bool(cross_replica)
        self.teacher_dtype = teacher_dtype
        for term in terms:
            if not isinstance(term, _LAYER_LOOKUPS):
                term.validate_model_compatibility(teacher, student)

        teacher.trainable = False
        self.teacher = teacher
        self.student = student
        self._build_passes(teacher, student, teacher_dtype)
        self._trackers = {key: keras.metrics.Mean(name=key) for key in self._log_keys()}
        self._warned: set[str] = set()
        self._deferred = _backend.Deferred()  # JAX on accelerators: see _backend.warn_if
        self.built = True

    # -- construction ---------------------------------------------------------

    def _build_passes(self, teacher, student, teacher_dtype) -> None:
        """One extractor per model over the union of the tapped layers."""
        teacher_names, student_names = [], []
        for term in self.distillation_losses:
            for role, model, names in (
                ("teacher", teacher, teacher_names),
                ("student", student, student_names),
            ):
                name = getattr(term, f"{role}_layer_name", None)
                if name and name not in names:
                    graph_inputs(model, role)
                    names.append(checked_layer_name(model, name, role))
        if teacher_names or student_names:
            _check_batch_dimensions(
                graph_inputs(teacher, "teacher"), graph_inputs(student, "student")
            )
        self._teacher_reads_outputs = any(
            not getattr(term, "teacher_layer_name", None) for term in self.distillation_losses
        )
        self._teacher_names, self._student_names = teacher_names, student_names
        teacher_model = _with_compute_dtype(teacher, teacher_dtype)
        self._teacher_extractor = (
            build_feature_extractor(
                teacher_model, teacher_names, self._teacher_reads_outputs, role="teacher"
            )
            if teacher_names
            else teacher_model
        )
        self._student_extractor = (
            build_feature_extractor(student, student_names, True, role="student")
            if student_names
            else student
        )
        self._entries = []
        seen: dict[str, list[int]] = {}
        for term, weight in zip(self.distillation_losses, self.distillation_loss_weights):
            t_name = getattr(term, "teacher_layer_name", None)
            s_name = getattr(term, "student_layer_name", None)
            group = f"{_log_stem(term)}_loss"
            self._entries.append(
                _Entry(
                    term,
                    weight,
                    key="",
                    group=group,
                    teacher_index=teacher_names.index(t_name) if t_name else None,
                    student_index=student_names.index(s_name) if s_name else None,
                )
            )
            seen.setdefault(group, []).append(len(self._entries) - 1)
        for group, members in seen.items():
            if len(members) == 1:
                self._entries[members[0]].key = group
                continue
            tags = []
            for i in members:
                term = self._entries[i].term
                t_name = getattr(term, "teacher_layer_name", None)
                s_name = getattr(term, "student_layer_name", None)
                tags.append(f"{t_name}-{s_name}".replace("/", ".") if t_name and s_name else None)
            for n, (i, tag) in enumerate(zip(members, tags), start=1):
                unique = tag is not None and tags.count(tag) == 1
                self._entries[i].key = f"{group}_{tag if unique else n}"
        self._check_symbolic_outputs()

    def _check_symbolic_outputs(self) -> None:
        """Each term's own output checks, on the symbolic tensors, before any training."""
        try:
            teacher_out = self._as_list(self._teacher_extractor.outputs)
            student_out = self._as_list(self._student_extractor.outputs)
        except (AttributeError, ValueError):  # an unbuilt Sequential or subclassed model
            return
        if not teacher_out or not student_out:
            return
        features, predictions = self._split_student(student_out)
        for entry in self._entries:
            entry.term.validate_outputs(
                self._teacher_input(entry, teacher_out),
                self._student_input(entry, features, predictions),
            )

    def _log_keys(self) -> list[str]:
        keys = ["loss", "task_loss"]
        for entry in self._entries:
            for key in (entry.group, entry.key):
                if key not in keys:
                    keys.append(key)
        if self.student_loss_weight is not None:
            keys += ["total_loss", "student_loss", "distillation_loss"]
        return keys

    # -- the short form's names, for users and callbacks ----------------------

    @property
    def layer_pairs(self) -> list[tuple[str, str]]:
        """The (teacher layer, student layer) pair of each SP term, in order."""
        return [
            (e.term.teacher_layer_name, e.term.student_layer_name)
            for e in self._entries
            if isinstance(e.term, SimilarityPreservingDistillation)
        ]

    @property
    def gammas(self) -> list[float]:
        """gamma (the weight) of each SP term, in `layer_pairs` order."""
        return [
            e.weight for e in self._entries if isinstance(e.term, SimilarityPreservingDistillation)
        ]

    @property
    def gamma(self):
        """gamma as given in the short form (a float or a list); else one per SP term."""
        return self._short_settings["gamma"] if self._short_form else self.gammas

    @property
    def kd_weight(self) -> float:
        """Total weight of the KD terms (0.0 without one)."""
        return sum(e.weight for e in self._entries if isinstance(e.term, KnowledgeDistillation))

    @property
    def temperature(self) -> float:
        kd = [e.term for e in self._entries if isinstance(e.term, KnowledgeDistillation)]
        if kd:
            return kd[0].temperature
        return self._short_settings["temperature"] if self._short_form else None

    @property
    def at_weight(self) -> float:
        weights = [
            e.weight for e in self._entries if isinstance(e.term, AttentionTransferDistillation)
        ]
        return weights[0] if weights else 0.0

    @property
    def at_pairs(self) -> list[tuple[str, str]]:
        return [
            (e.term.teacher_layer_name, e.term.student_layer_name)
            for e in self._entries
            if isinstance(e.term, AttentionTransferDistillation)
        ]

    @property
    def metrics(self):
        # Keras's own "loss" tracker is never fed by this train_step: ours,
        # with the total loss, replaces it.
        engine_tracker = engine_loss_tracker(self)
        own = list(self._trackers.values())
        return own + [m for m in super().metrics if m is not engine_tracker and m not in own]

    # -- one step's maths, the same on every backend ---------------------------

    @staticmethod
    def _as_list(outputs) -> list:
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

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

    def _split_student(self, student_out: list):
        n = len(self._student_names)
        features = student_out[:n] if n else []
        predictions = student_out[n:] if n else student_out
        return features, predictions[0] if len(predictions) == 1 else list(predictions)

    def _teacher_input(self, entry: _Entry, teacher_out: list):
        if entry.teacher_index is not None:
            return teacher_out[entry.teacher_index]
        outputs = teacher_out[len(self._teacher_names) :]
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def _student_input(self, entry: _Entry, features: list, predictions):
        return predictions if entry.student_index is None else features[entry.student_index]

    @property
    def _teacher_needed(self) -> bool:
        return any(e.weight > 0 for e in self._entries)

    def _teacher_pass(self, x_teacher) -> list | None:
        """The frozen teacher's tapped features (and outputs), outside any gradient."""
        if not self._teacher_needed:
            return None
        outputs = self._as_list(self._teacher_extractor(x_teacher, training=False))
        return [ops.stop_gradient(t) for t in outputs]

    def _objective(self, x, y, sample_weight, teacher_out, student_out, training):
        """Returns (loss for gradients, logs, y_pred, run-time checks)."""
        features, y_pred = self._split_student(self._as_list(student_out))
        task = ops.cast(
            self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
            ),
            "float32",
        )
        replicas = _backend.num_replicas()
        logs = {key: ops.zeros((), "float32") for key in self._trackers}
        checks, gathered = [], {}
        for entry in self._entries:
            if entry.weight == 0:  # no teacher pass, no gather, no maths for an off term
                continue
            t = self._teacher_input(entry, teacher_out)
            s = self._student_input(entry, features, y_pred)
            if getattr(entry.term, "batch_statistic", False) and self.cross_replica:
                t = self._gather(gathered, ("t", entry.teacher_index), t)
                s = self._gather(gathered, ("s", entry.student_index), s)
            if isinstance(entry.term, SimilarityPreservingDistillation):
                checks += self._sp_checks(entry, t)
            entry.term.validate_outputs(t, s)
            kwargs = (
                {"sample_weight": sample_weight}
                if getattr(entry.term, "uses_sample_weight", False)
                else {}
            )
            value = entry.term.compute_loss(t, s, **kwargs)
            if len(getattr(value, "shape", ())) > 0:
                raise ValueError(
                    f"{type(entry.term).__name__}.compute_loss must return a scalar; it "
                    f"returned shape {tuple(value.shape)}."
                )
            value = entry.weight * ops.cast(value, "float32")
            logs[entry.key] = value
            if entry.group != entry.key:
                logs[entry.group] = logs[entry.group] + value
        distillation = sum((logs[e.key] for e in self._entries), ops.zeros((), "float32"))
        # Gradients are summed over replicas: Keras's losses come divided by
        # the replica count, the distillation terms are divided here, and every
        # logged value is the undivided one.
        a = self.student_loss_weight
        if a is None:
            loss = task + distillation / replicas
            logs["loss"] = task * replicas + distillation
        else:
            loss = a * task + (1.0 - a) * distillation / replicas
            logs["loss"] = a * task * replicas + (1.0 - a) * distillation
            logs["total_loss"] = logs["loss"]
            logs["student_loss"] = task * replicas
            logs["distillation_loss"] = distillation
        logs["task_loss"] = task * replicas
        return loss, logs, y_pred, checks

    def _gather(self, cache: dict, key, tensor):
        if key not in cache:
            # float32 first: the all-gather has no bfloat16 kernel.
            cache[key] = _backend.all_gather(ops.cast(tensor, "float32"))
        return cache[key]

    def _sp_checks(self, entry: _Entry, teacher_features) -> list:
        """Warn once: a batch of one sample, or a teacher layer of about-zero activations."""
        checks = []
        if teacher_features.shape[0] == 1:
            self._warn_once("batch_of_one", BATCH_OF_ONE)
        elif teacher_features.shape[0] is None:
            size = ops.shape(teacher_features)[0]
            checks.append(
                _backend.warn_if(
                    ops.equal(size, 1), lambda: self._warn_once("batch_of_one", BATCH_OF_ONE), self
                )
            )
        q = ops.cast(teacher_features, "float32")
        q = ops.reshape(q, (ops.shape(q)[0], -1))
        largest = ops.max(ops.sum(ops.square(q), axis=1))
        # Every row of G~ = Q Q^T has norm <= sqrt(b) * max_i ||q_i||^2: below
        # EPSILON, G_T is 0 (the norm clamp) and the term cannot teach.
        b = ops.cast(ops.shape(q)[0], "float32")
        dead = ops.less(ops.sqrt(b) * largest, EPSILON)
        message = _dead_layer_message(entry.term)
        checks.append(
            _backend.warn_if(dead, lambda: self._warn_once(f"dead:{entry.key}", message), self)
        )
        return [c for c in checks if c is not None]

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=2)

    def _log(self, logs: dict, batch_size) -> None:
        for key, tracker in self._trackers.items():
            tracker.update_state(logs[key], sample_weight=batch_size)

    # -- the steps --------------------------------------------------------------

    def call(self, inputs, training=None):
        return self.student(self._split_inputs(inputs)[1], training=training)

    def tapped_features(self, inputs) -> tuple[list, list]:
        """Returns the activations of each SP term's (teacher, student) layer pair.

        Both models run in inference mode; `inputs` may be privileged
        (`{"teacher": x_t, "student": x_s}`). For analysis and pictures, not
        training.

        Returns:
            `(teacher_features, student_features)`, lists ordered as
            `layer_pairs`.
        """
        x_teacher, x_student = self._split_inputs(inputs)
        teacher_out = self._as_list(self._teacher_extractor(x_teacher, training=False))
        features, predictions = self._split_student(
            self._as_list(self._student_extractor(x_student, training=False))
        )
        pairs = [e for e in self._entries if isinstance(e.term, SimilarityPreservingDistillation)]
        return (
            [self._teacher_input(e, teacher_out) for e in pairs],
            [self._student_input(e, features, predictions) for e in pairs],
        )

    def train_step(self, *args):
        return _backend.train_step(self, *args)

    def test_step(self, *args):
        return _backend.test_step(self, *args)

    def make_train_function(self, force=False):
        function = super().make_train_function(force)
        _backend.defer_checks(self, "train")
        return function

    def make_test_function(self, force=False):
        function = super().make_test_function(force)
        _backend.defer_checks(self, "test")
        return function

    # -- saving -------------------------------------------------------------------

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "teacher": keras.saving.serialize_keras_object(self.teacher),
                "student": keras.saving.serialize_keras_object(self.student),
                "cross_replica": self.cross_replica,
                "teacher_dtype": self.teacher_dtype,
                "student_loss_weight": self.student_loss_weight,
            }
        )
        if self._short_form:  # 0.2's keys: its saved distillers load unchanged
            settings = self._short_settings
            config.update(
                {
                    "layer_pairs": [list(pair) for pair in settings["layer_pairs"]],
                    "gamma": settings["gamma"],
                    "kd_weight": settings["kd_weight"],
                    "temperature": settings["temperature"],
                    "at_pairs": [list(pair) for pair in settings["at_pairs"]],
                    "at_weight": settings["at_weight"],
                }
            )
        else:
            config["distillation_losses"] = [
                keras.saving.serialize_keras_object(term) for term in self.distillation_losses
            ]
            config["distillation_loss_weights"] = list(self.distillation_loss_weights)
        return config

    @classmethod
    def from_config(cls, config: dict) -> SPDistiller:
        config = copy.deepcopy(config)  # the deserializer consumes what it reads
        for key in ("teacher", "student"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        if "distillation_losses" in config:
            config["distillation_losses"] = [
                keras.saving.deserialize_keras_object(term)
                for term in config["distillation_losses"]
            ]
        return cls(**config)


def _is_terms(value) -> bool:
    if isinstance(value, keras.distillation.DistillationLoss):
        return True
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(v, keras.distillation.DistillationLoss) for v in value)
    )
