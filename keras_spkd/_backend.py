"""`SPDistiller`'s train and test steps, one pair per Keras backend.

The maths of a step (`SPDistiller._objective`) is written once with
`keras.ops`. What differs is how gradients are taken and state is carried:

- TensorFlow (the reference, the card's design): `tf.GradientTape` around
  the student only, `tf.distribute` replica counts and all-gathers.
- JAX: Keras's stateless step. The teacher runs under `stop_gradient`
  outside `jax.value_and_grad`; the student's pass runs inside, its
  variables mapped by a `StatelessScope`. Under `keras.distribution` the
  step is one global program, so SP is always over the global batch.
- PyTorch: the teacher under `torch.no_grad`, `backward()` on the student.

Each backend's module is imported only when its step runs.
"""

from __future__ import annotations

import keras
from keras import ops


def _name() -> str:
    return keras.backend.backend()


def num_replicas() -> int:
    """Replicas whose gradients are summed (TensorFlow's strategies); 1 elsewhere."""
    if _name() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def all_gather(tensor):
    """`tensor` gathered over the replicas' batch shares (TensorFlow's strategies)."""
    if _name() != "tensorflow":
        return tensor  # JAX's step is one global program; PyTorch has one process
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensor
    return context.all_gather(tensor, axis=0)


# JAX on an accelerator: a host callback inside the compiled step stalls the device
# on every step (1.5-2 ms of a 10 ms WRN-16-1 step on an H200, benchmarks/RESULTS.md).
# There the step returns its checks' conditions beside its logs instead, and the host
# reads them after calls 1, 2, 4, 8, ... of the step function (`defer_checks`).
# None: defer on accelerators, call back on the CPU (no device to stall); True or
# False forces one way (the tests force True on the CPU).
DEFER_JAX_CHECKS: bool | None = None
CHECKS_KEY = "_keras_spkd_checks"  # popped from the step's logs before Keras sees them


class Deferred:
    """The checks `warn_if` put off while a JAX step was traced, and their callbacks."""

    def __init__(self):
        self.checks: list = []  # (condition, callback) of the trace under way
        self.callbacks: dict = {}  # "train" / "test": callbacks in the order of the flags


def _defer_jax_checks() -> bool:
    if DEFER_JAX_CHECKS is not None:
        return DEFER_JAX_CHECKS
    import jax

    return jax.default_backend() != "cpu"


def warn_if(condition, callback, model):
    """Calls `callback()` when `condition` (a boolean tensor) holds at run time.

    Returns an op that TensorFlow's step must depend on, or None. Nothing is
    checked under XLA on TensorFlow, which compiles no Python call. JAX on an
    accelerator checks after the step (`DEFER_JAX_CHECKS`).
    """
    backend = _name()
    if backend == "tensorflow":
        if model.jit_compile:
            return None
        import tensorflow as tf

        def fire():
            callback()
            return True

        return tf.cond(
            condition, lambda: tf.py_function(fire, [], tf.bool), lambda: tf.constant(False)
        )
    if backend == "jax":
        import jax

        if isinstance(condition, jax.core.Tracer) and _defer_jax_checks():
            model._deferred.checks.append((condition, callback))
            return None
        jax.debug.callback(lambda holds: callback() if holds else None, condition)
        return None
    if bool(ops.convert_to_numpy(condition)):
        callback()
    return None


def _batch_size(x):
    return ops.shape(keras.tree.flatten(x)[0])[0]


def _check_privileged_static(x_teacher, x_student) -> bool:
    """Refuses teacher/student batches of different known sizes; True if both are known."""
    if x_teacher is x_student:
        return True
    b_t = keras.tree.flatten(x_teacher)[0].shape[0]
    b_s = keras.tree.flatten(x_student)[0].shape[0]
    if b_t is not None and b_s is not None:
        if b_t != b_s:
            raise ValueError(
                "Privileged inputs must hold the same samples: the 'teacher' batch has "
                f"{b_t} samples and the 'student' batch {b_s}."
            )
        return True
    return False


def train_step(model, *args):
    return _STEPS[_name()][0](model, *args)


def test_step(model, *args):
    return _STEPS[_name()][1](model, *args)


# -- TensorFlow -------------------------------------------------------------------


def _tf_privileged_checks(model, x_teacher, x_student) -> list:
    """Statically known sizes are checked while tracing; others by an assertion
    that gates the step, or the loss maths may fail first with a bare shape error."""
    if _check_privileged_static(x_teacher, x_student) or model.jit_compile:
        return []
    import tensorflow as tf

    return [
        tf.debugging.assert_equal(
            tf.shape(tf.nest.flatten(x_teacher)[0])[0],
            tf.shape(tf.nest.flatten(x_student)[0])[0],
            message="Privileged inputs must hold the same samples: the "
            "'teacher' and 'student' batches differ in size.",
        )
    ]


def _tf_train_step(model, data):
    import tensorflow as tf

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x_teacher, x_student = model._split_inputs(x)
    with tf.control_dependencies(_tf_privileged_checks(model, x_teacher, x_student)):
        teacher_out = model._teacher_pass(x_teacher)
        variables = model.student.trainable_variables
        with tf.GradientTape() as tape:
            student_out = model._student_extractor(x_student, training=True)
            loss, logs, y_pred, checks = model._objective(
                x_student, y, sample_weight, teacher_out, student_out, True
            )
            scaled_loss = model.optimizer.scale_loss(loss)
        with tf.control_dependencies(checks):
            gradients = tape.gradient(scaled_loss, variables)
        model.optimizer.apply(gradients, variables)
        model._log(logs, _batch_size(x_student))
        return model.compute_metrics(x_student, y, y_pred, sample_weight)


def _tf_test_step(model, data):
    import tensorflow as tf

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x_teacher, x_student = model._split_inputs(x)
    with tf.control_dependencies(_tf_privileged_checks(model, x_teacher, x_student)):
        teacher_out = model._teacher_pass(x_teacher)
        student_out = model._student_extractor(x_student, training=False)
        _, logs, y_pred, checks = model._objective(
            x_student, y, sample_weight, teacher_out, student_out, False
        )
        with tf.control_dependencies(checks):
            model._log(logs, _batch_size(x_student))
        return model.compute_metrics(x_student, y, y_pred, sample_weight)


# -- JAX ----------------------------------------------------------------------------


def _jax_values(scope, variables, values) -> list:
    out = []
    for variable, value in zip(variables, values):
        current = scope.get_current_value(variable)
        out.append(value if current is None else current)
    return out


def _jax_forward(model, x, y, sample_weight, teacher_out, state, training):
    """The student's pass and the objective, stateless: returns (loss, aux)."""

    trainable, non_trainable, metrics, optimizer = state
    mapping = [
        *zip(model.trainable_variables, trainable),
        *zip(model.non_trainable_variables, non_trainable),
        *zip(model.metrics_variables, metrics),
    ]
    if optimizer is not None:
        mapping += list(zip(model.optimizer.variables, optimizer))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        student_out = model._student_extractor(x, training=training)
        loss, logs, y_pred, _ = model._objective(
            x, y, sample_weight, teacher_out, student_out, training
        )
        scaled = model.optimizer.scale_loss(loss) if optimizer is not None else loss
    non_trainable = _jax_values(scope, model.non_trainable_variables, non_trainable)
    metrics = _jax_values(scope, model.metrics_variables, metrics)
    return scaled, (logs, y_pred, non_trainable, metrics)


def _jax_teacher(model, x_teacher, trainable, non_trainable):

    mapping = [
        *zip(model.trainable_variables, trainable),
        *zip(model.non_trainable_variables, non_trainable),
    ]
    with keras.StatelessScope(state_mapping=mapping):
        return model._teacher_pass(x_teacher)  # under stop_gradient


def _jax_log(model, logs, x, y, y_pred, sample_weight, metrics):

    with keras.StatelessScope(state_mapping=list(zip(model.metrics_variables, metrics))) as scope:
        model._log(logs, _batch_size(x))
        results = model.compute_metrics(x, y, y_pred, sample_weight)
        results = {key: ops.convert_to_tensor(value) for key, value in results.items()}
    return results, _jax_values(scope, model.metrics_variables, metrics)


def _with_deferred_checks(model, kind: str, results: dict) -> dict:
    """The step's logs, with the conditions `warn_if` deferred while it was traced."""
    checks, model._deferred.checks = model._deferred.checks, []
    model._deferred.callbacks[kind] = [callback for _, callback in checks]
    if checks:
        results[CHECKS_KEY] = ops.stack([ops.cast(c, "bool") for c, _ in checks])
    return results


def defer_checks(model, kind: str) -> None:
    """Wraps `model.<kind>_function` (JAX) to read deferred checks on the host.

    The conditions of every call are OR-ed on the device; the host reads them
    (one small transfer, which waits for that step) after calls 1, 2, 4, 8, ...
    and calls the callbacks of those that held. A condition true from the first
    step is seen at once; one that turns true later, within twice its step count.
    """
    attribute = f"{kind}_function"
    function = getattr(model, attribute, None)
    if _name() != "jax" or function is None or getattr(function, "_keras_spkd", False):
        return
    import jax.numpy as jnp
    import numpy as np

    calls, pending = 0, None

    def step_function(state, data):
        nonlocal calls, pending
        logs, state = function(state, data)
        flags = logs.pop(CHECKS_KEY, None) if isinstance(logs, dict) else None
        if flags is not None:
            pending = flags if pending is None else jnp.logical_or(pending, flags)
            calls += 1
            if calls & (calls - 1) == 0:
                callbacks = model._deferred.callbacks.get(kind, [])
                for holds, callback in zip(np.asarray(pending), callbacks):
                    if holds:
                        callback()
                pending = None
        return logs, state

    step_function._keras_spkd = True
    setattr(model, attribute, step_function)


def _jax_train_step(model, state, data):
    import jax

    model._deferred.checks = []
    trainable, non_trainable, optimizer_variables, metrics = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x_teacher, x_student = model._split_inputs(x)
    _check_privileged_static(x_teacher, x_student)
    teacher_out = _jax_teacher(model, x_teacher, trainable, non_trainable)

    def objective(trainable_values):
        return _jax_forward(
            model,
            x_student,
            y,
            sample_weight,
            teacher_out,
            (trainable_values, non_trainable, metrics, optimizer_variables),
            True,
        )

    (_, (logs, y_pred, non_trainable, metrics)), gradients = jax.value_and_grad(
        objective, has_aux=True
    )(trainable)
    trainable, optimizer_variables = model.optimizer.stateless_apply(
        optimizer_variables, gradients, trainable
    )
    results, metrics = _jax_log(model, logs, x_student, y, y_pred, sample_weight, metrics)
    results = _with_deferred_checks(model, "train", results)
    return results, (trainable, non_trainable, optimizer_variables, metrics)


def _jax_test_step(model, state, data):
    model._deferred.checks = []
    trainable, non_trainable, metrics = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x_teacher, x_student = model._split_inputs(x)
    _check_privileged_static(x_teacher, x_student)
    teacher_out = _jax_teacher(model, x_teacher, trainable, non_trainable)
    _, (logs, y_pred, non_trainable, metrics) = _jax_forward(
        model,
        x_student,
        y,
        sample_weight,
        teacher_out,
        (trainable, non_trainable, metrics, None),
        False,
    )
    results, metrics = _jax_log(model, logs, x_student, y, y_pred, sample_weight, metrics)
    results = _with_deferred_checks(model, "test", results)
    return results, (trainable, non_trainable, metrics)


# -- PyTorch --------------------------------------------------------------------------


def _torch_train_step(model, data):
    import torch

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x_teacher, x_student = model._split_inputs(x)
    _check_privileged_static(x_teacher, x_student)
    with torch.no_grad():
        teacher_out = model._teacher_pass(x_teacher)
    model.zero_grad()
    student_out = model._student_extractor(x_student, training=True)
    loss, logs, y_pred, _ = model._objective(
        x_student, y, sample_weight, teacher_out, student_out, True
    )
    model.optimizer.scale_loss(loss).backward()
    variables = model.trainable_weights
    gradients = [v.value.grad for v in variables]
    with torch.no_grad():
        model.optimizer.apply(gradients, variables)
    logs = {key: value.detach() for key, value in logs.items()}
    model._log(logs, _batch_size(x_student))
    return model.compute_metrics(x_student, y, y_pred.detach(), sample_weight)


def _torch_test_step(model, data):
    import torch

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x_teacher, x_student = model._split_inputs(x)
    _check_privileged_static(x_teacher, x_student)
    with torch.no_grad():
        teacher_out = model._teacher_pass(x_teacher)
        student_out = model._student_extractor(x_student, training=False)
        _, logs, y_pred, _ = model._objective(
            x_student, y, sample_weight, teacher_out, student_out, False
        )
        model._log(logs, _batch_size(x_student))
        return model.compute_metrics(x_student, y, y_pred, sample_weight)


_STEPS = {
    "tensorflow": (_tf_train_step, _tf_test_step),
    "jax": (_jax_train_step, _jax_test_step),
    "torch": (_torch_train_step, _torch_test_step),
}
