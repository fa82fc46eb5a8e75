"""Keras's own tests of `keras.distillation.Distiller`, run with `SPDistiller` in its place.

The tests come from the installed Keras at test time
(`keras/src/distillation/distiller_test.py`), never copied here; the names
they use for the distiller point at `keras_spkd.SPDistiller` while they run.
A Keras wheel without its tests (3.12.0 ships none) skips, saying so.
"""

import importlib

import pytest

import keras_spkd

try:
    keras_tests = importlib.import_module("keras.src.distillation.distiller_test")
except ImportError as error:  # pragma: no cover - depends on the installed wheel
    pytest.skip(
        f"the installed Keras ships no distiller_test.py ({error}); nothing to run",
        allow_module_level=True,
    )


class TestKerasDistillerSuiteOnSPDistiller(keras_tests.TestDistiller):
    """Every test of Keras's TestDistiller, with `Distiller` meaning `SPDistiller`."""

    def setUp(self):
        self._keras_distiller = keras_tests.Distiller
        keras_tests.Distiller = keras_spkd.SPDistiller
        super().setUp()
        assert isinstance(self.distiller, keras_spkd.SPDistiller)

    def tearDown(self):
        keras_tests.Distiller = self._keras_distiller
        super().tearDown()


def test_the_suite_is_keras_own_and_runs_against_spdistiller():
    names = [n for n in dir(keras_tests.TestDistiller) if n.startswith("test_")]
    assert len(names) >= 10, names
    assert keras_tests.Distiller.__module__ == "keras.src.distillation.distiller"
