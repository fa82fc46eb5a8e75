"""Every Keras backend: the maths, a fit and saved files, on TensorFlow, JAX and PyTorch.

This module imports no TensorFlow: it runs as it is under `KERAS_BACKEND=jax`
or `torch` (`.ci/core_jax.sh`, `.ci/core_torch.sh`). Under TensorFlow, the
cross-backend tests run the other backends in subprocesses, where they are
installed, on the same weights and data.
"""

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from numpy.testing import assert_allclose

import keras_spkd
from tests import reference
from tests.conftest import small_cnn, sparse_ce

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = np.load(ROOT / "tests" / "golden" / "golden.npz")
BACKEND = keras.backend.backend()


def value_and_grads(fn, arrays):
    """`fn(*arrays)` as a float and its gradients with respect to each array, on this backend."""
    arrays = [np.asarray(a) for a in arrays]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        variables = [tf.Variable(a) for a in arrays]
        with tf.GradientTape() as tape:
            loss = fn(*variables)
        return float(loss), [g.numpy() for g in tape.gradient(loss, variables)]
    if BACKEND == "jax":
        import jax

        argnums = tuple(range(len(arrays)))
        loss, grads = jax.value_and_grad(lambda *xs: fn(*xs), argnums=argnums)(*arrays)
        return float(loss), [np.asarray(g) for g in grads]
    import torch

    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    loss = fn(*tensors)
    loss.backward()
    return float(loss.detach()), [t.grad.numpy() for t in tensors]


def _golden(kind):
    return sorted({key.split("_")[0] for key in GOLDEN.files if key.startswith(kind)})


def _pairs(case):
    count = len([key for key in GOLDEN.files if key.startswith(f"{case}_teacher")])
    return [GOLDEN[f"{case}_teacher{i}"] for i in range(count)], [
        GOLDEN[f"{case}_student{i}"] for i in range(count)
    ]


def _check_grads(grads, case, count):
    names = [f"teacher{i}" for i in range(count)] + [f"student{i}" for i in range(count)]
    for name, grad in zip(names, grads):
        expected = GOLDEN[f"{case}_grad_{name}"]
        scale = max(np.abs(expected).max(), 1e-6)  # an all-zero gradient: round-off only
        assert_allclose(grad, expected, rtol=1e-4, atol=1e-5 * scale, err_msg=f"{case} {name}")


@pytest.mark.filterwarnings("ignore:The similarity-preserving loss got a batch of one")
@pytest.mark.parametrize("kind", ["sp", "at"])
def test_golden_values_and_gradients_on_this_backend(kind):
    loss_fn = {
        "sp": keras_spkd.similarity_preserving_loss,
        "at": keras_spkd.attention_transfer_loss,
    }[kind]
    cases = _golden(kind)
    assert len(cases) >= 3
    for case in cases:
        teachers, students = _pairs(case)
        weights = [float(w) for w in GOLDEN[f"{case}_weights"]]
        n = len(teachers)
        loss, grads = value_and_grads(
            lambda *xs, w=weights, n=n: loss_fn(list(xs[:n]), list(xs[n:]), w),
            [*teachers, *students],
        )
        assert_allclose(loss, float(GOLDEN[f"{case}_loss"]), rtol=1e-5, atol=1e-9, err_msg=case)
        _check_grads(grads, case, n)


def test_kd_golden_values_and_gradients_on_this_backend():
    for case in _golden("kd"):
        temperature = float(GOLDEN[f"{case}_temperature"])
        loss, grads = value_and_grads(
            lambda t, s, T=temperature: keras_spkd.knowledge_distillation_loss(t, s, T),
            [GOLDEN[f"{case}_teacher"], GOLDEN[f"{case}_student"]],
        )
        assert_allclose(loss, float(GOLDEN[f"{case}_loss"]), rtol=1e-5, err_msg=case)
        for grad, name in zip(grads, ("teacher", "student")):
            golden = GOLDEN[f"{case}_grad_{name}"]
            assert_allclose(grad, golden, rtol=1e-4, atol=1e-5 * np.abs(golden).max())


def _models(seed=0):
    keras.utils.set_random_seed(seed)
    return small_cnn("t", 8), small_cnn("s", 4)


def _data():
    rng = np.random.default_rng(0)
    return rng.random((32, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, 32).astype("int32")


def _distiller(teacher, student):
    distiller = keras_spkd.SPDistiller(
        teacher,
        student,
        layer_pairs=[("t_group", "s_group")],
        gamma=200.0,
        kd_weight=0.5,
        temperature=3.0,
        at_weight=100.0,
        at_pairs=[("t_conv1", "s_conv1")],
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=sparse_ce())
    return distiller


def _np(tensor):
    return keras.ops.convert_to_numpy(tensor)


def _features(model, layer, x):
    return _np(keras_spkd.build_feature_extractor(model, [layer], False)(x))


def test_a_fit_on_this_backend_freezes_the_teacher_and_logs_the_reference_values():
    x, y = _data()
    teacher, student = _models()
    distiller = _distiller(teacher, student)
    teacher_before = [np.array(w) for w in teacher.get_weights()]
    student_before = [np.array(w) for w in student.get_weights()]
    history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    for a, b in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert all(not np.allclose(a, b) for a, b in zip(student_before, student.get_weights()))
    assert {"loss", "task_loss", "sp_loss", "kd_loss", "at_loss"} <= set(history.history)
    logs = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    t_group, s_group = _features(teacher, "t_group", x), _features(student, "s_group", x)
    t_conv, s_conv = _features(teacher, "t_conv1", x), _features(student, "s_conv1", x)
    assert_allclose(logs["sp_loss"], 200.0 * reference.sp_loss([t_group], [s_group]), rtol=1e-4)
    assert_allclose(logs["at_loss"], 100.0 * reference.at_loss([t_conv], [s_conv]), rtol=1e-4)
    kd = 0.5 * reference.kd_loss(_np(teacher(x)), _np(student(x)), 3.0)
    assert_allclose(logs["kd_loss"], kd, rtol=1e-4)
    task = float(sparse_ce()(y, student(x)))
    assert_allclose(logs["task_loss"], task, rtol=1e-5)
    parts = ("task_loss", "sp_loss", "kd_loss", "at_loss")
    assert_allclose(logs["loss"], sum(logs[k] for k in parts), rtol=1e-6)


PROBE = """
import json, sys
import numpy as np
import keras, keras_spkd
path, data, out = sys.argv[1:4]
arrays = np.load(data)
x, y = arrays["x"], arrays["y"]
distiller = keras.saving.load_model(path)
logs = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
teacher_before = [np.array(w) for w in distiller.teacher.get_weights()]
distiller.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
moved = max(float(np.abs(a - b).max())
            for a, b in zip(teacher_before, distiller.teacher.get_weights()))
weights = [np.asarray(w) for w in distiller.student.get_weights()]
np.savez(out, *weights)
print(json.dumps({"backend": keras.backend.backend(), "logs": logs, "teacher_moved": moved}))
"""


def _installed(backend: str) -> bool:
    module = {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}[backend]
    return importlib.util.find_spec(module) is not None


def _probe(backend, model_path, data_path, out):
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(model_path), str(data_path), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"},
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("other", ["jax", "torch", "tensorflow"])
def test_a_distiller_saved_here_loads_and_trains_the_same_on_another_backend(other, tmp_path):
    """Same weights and data: the other backend's losses and first step equal this one's."""
    if other == BACKEND or not _installed(other):
        pytest.skip(f"{other} is this backend or is not installed here")
    x, y = _data()
    teacher, student = _models(1)
    distiller = _distiller(teacher, student)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)  # a trained state, not the init
    distiller.save(tmp_path / "distiller.keras")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    here = _probe(BACKEND, tmp_path / "distiller.keras", tmp_path / "data.npz", tmp_path / "a.npz")
    there = _probe(other, tmp_path / "distiller.keras", tmp_path / "data.npz", tmp_path / "b.npz")
    assert (here["backend"], there["backend"]) == (BACKEND, other)
    assert there["teacher_moved"] == 0.0
    for key, value in here["logs"].items():
        assert_allclose(there["logs"][key], value, rtol=1e-5, err_msg=key)
    mine, theirs = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    for key in mine.files:
        assert_allclose(theirs[key], mine[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_losses_and_a_step_equal_tensorflows_on_the_same_weights_and_data():
    """tests/data: a distiller saved (keras-spkd 0.2, TensorFlow) with TensorFlow's own
    losses on it and its student's weights after one SGD step, recorded on TensorFlow."""
    data = ROOT / "tests" / "data"
    recorded = np.load(data / "spdistiller_0.2_logs.npz")
    after_step = np.load(data / "spdistiller_0.2_tf_step.npz")
    distiller = keras.saving.load_model(data / "spdistiller_0.2.keras")
    x, y = recorded["x"], recorded["y"]
    logs = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    for key in ("loss", "task_loss", "sp_loss", "kd_loss", "at_loss"):
        assert_allclose(logs[key], recorded[key], rtol=1e-5, atol=1e-7, err_msg=key)
    teacher_before = [np.array(w) for w in distiller.teacher.get_weights()]
    distiller.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(teacher_before, distiller.teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    for key, weight in zip(after_step.files, distiller.student.get_weights()):
        assert_allclose(np.asarray(weight), after_step[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.skipif(_installed("tensorflow"), reason="TensorFlow is installed here")
def test_tensorflow_only_parts_say_so_where_it_is_missing():
    import importlib

    for module in ("keras_spkd.distribute", "keras_spkd.bench"):
        with pytest.raises(ImportError, match="needs TensorFlow: pip install"):
            importlib.import_module(module)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX's deferred run-time checks")
def test_jax_checks_left_out_of_the_compiled_step_still_warn_once(monkeypatch, data):
    """On accelerators the dead-layer check leaves the compiled step (no host callback
    stalls it); it is read on the host after the step and still warns, once."""
    import jax

    from keras_spkd import _backend

    monkeypatch.setattr(_backend, "DEFER_JAX_CHECKS", True)  # as on a GPU

    def no_callback(*args, **kwargs):
        raise AssertionError("a host callback was compiled into the step")

    monkeypatch.setattr(jax.debug, "callback", no_callback)
    x, y = data
    keras.utils.set_random_seed(5)
    teacher, student = small_cnn("t", 8), small_cnn("s", 4)
    conv = teacher.get_layer("t_group")
    conv.set_weights([np.zeros_like(w) for w in conv.get_weights()])  # relu(0): a dead layer
    distiller = keras_spkd.SPDistiller(teacher, student, [("t_group", "s_group")], gamma=100.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), loss=sparse_ce())
    with pytest.warns(UserWarning, match="teacher layer 't_group'.*about 0") as caught:
        history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
        logs = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
        one = distiller.train_on_batch(x[:8], y[:8], return_dict=True)
    assert len([w for w in caught if "about 0" in str(w.message)]) == 1
    for keys in (history.history, logs, one):
        assert _backend.CHECKS_KEY not in keys and "sp_loss" in keys
    assert_allclose(history.history["sp_loss"], [100.0 / 8] * 2, rtol=1e-5)  # gamma / b
    alive = keras_spkd.SPDistiller(small_cnn("t", 8), student, [("t_group", "s_group")])
    alive.compile(optimizer=keras.optimizers.SGD(0.01), loss=sparse_ce())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alive.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert not [w for w in caught if "about 0" in str(w.message)]
