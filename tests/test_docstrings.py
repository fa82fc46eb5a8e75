"""The `>>>` examples in the core modules' docstrings run, and say what they show.

Each docstring gets fresh small models and data under the names the examples
use: `teacher` and `student` (functional CNNs tapped at `t_group3` and
`s_group3`), `x`, `y`, `train_ds` and `val_ds`.
"""

import doctest

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_spkd
from keras_spkd import _compat, distiller, features, losses

MODULES = [keras_spkd, losses, features, distiller, _compat]


def _cnn(prefix, width):
    inputs = keras.Input((8, 8, 1), name=f"{prefix}_in")
    h = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{prefix}_conv1")(
        inputs
    )
    h = keras.layers.Conv2D(
        width, 3, strides=2, padding="same", activation="relu", name=f"{prefix}_group3"
    )(h)
    h = keras.layers.GlobalAveragePooling2D(name=f"{prefix}_pool")(h)
    return keras.Model(inputs, keras.layers.Dense(10, name=f"{prefix}_logits")(h), name=prefix)


def _globals():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    return {
        "np": np,
        "keras": keras,
        "keras_spkd": keras_spkd,
        "teacher": _cnn("t", 16),
        "student": _cnn("s", 4),
        "x": x,
        "y": y,
        "train_ds": dataset,
        "val_ds": dataset,
    }


EXAMPLES = [
    test
    for module in MODULES
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, module.__name__)
    if test.examples and test.name.startswith(module.__name__)
]


@pytest.mark.parametrize("test", EXAMPLES, ids=[test.name for test in EXAMPLES])
def test_docstring_example_runs(test):
    test.globs = _globals()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=lambda text: pytest.fail(text, pytrace=False))
    assert runner.failures == 0 and runner.tries == len(test.examples)


def test_every_public_function_and_class_here_has_an_example():
    documented = {test.name.rsplit(".", 1)[-1] for test in EXAMPLES}
    public = [
        name
        for name in keras_spkd.__all__
        if getattr(keras_spkd, name).__module__ in {m.__name__ for m in MODULES}
    ]
    assert len(public) >= 10
    missing = [name for name in public if name not in documented]
    assert not missing, f"no `>>>` example in the docstring of {missing}"


def test_names_the_docstrings_use_are_reachable_from_the_package():
    """Issue 13's list: keras_spkd.export_student, keras_spkd.data, keras_spkd.models."""
    import subprocess
    import sys

    code = (
        "import keras_spkd; "
        "print(keras_spkd.export_student.__name__, keras_spkd.data.__name__, "
        "keras_spkd.models.__name__)"
    )
    out = subprocess.run(  # a fresh interpreter: no test has imported the submodules yet
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["export_student", "keras_spkd.data", "keras_spkd.models"]
