"""keras-spkd: Similarity-Preserving Knowledge Distillation for Keras 3.

A student learns its task and, through `SPDistiller`, to keep the teacher's
pairwise similarities between the samples of a batch. The datasets and the
model zoo are `keras_spkd.data` and `keras_spkd.models`.

Example:

>>> distiller = keras_spkd.SPDistiller(
...     teacher, student, layer_pairs=[("t_group3", "s_group3")], gamma=3000.0)
>>> distiller.compile(optimizer="sgd",
...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
>>> float(history.history["sp_loss"][0]) > 0
True

Reference: Tung & Mori, "Similarity-Preserving Knowledge Distillation",
ICCV 2019, arXiv:1907.09682.
"""

from __future__ import annotations

import importlib
import importlib.util

__version__ = "0.3.0"

# The command line quiets TensorFlow's C++ logging before anything loads it;
# the package below imports Keras (and with it TensorFlow) at once.
from keras_spkd import _quiet

_quiet.quiet_if_command_line()

# Every public class is imported, so registered for `keras.saving.load_model`,
# as soon as `import keras_spkd` returns. The core runs on any Keras backend,
# without TensorFlow:
from keras_spkd import models  # noqa: E402, F401  (a public submodule)
from keras_spkd.distiller import FitUnderStrategy, SPDistiller  # noqa: E402
from keras_spkd.features import build_feature_extractor, layer_paths  # noqa: E402
from keras_spkd.losses import (  # noqa: E402
    SimilarityPreservingLoss,
    attention_map,
    attention_transfer_loss,
    knowledge_distillation_loss,
    similarity_matrix,
    similarity_preserving_loss,
)
from keras_spkd.pairs import describe_layers, suggest_layer_pairs  # noqa: E402
from keras_spkd.preprocessing import Preprocessing  # noqa: E402
from keras_spkd.terms import (  # noqa: E402
    AttentionTransferDistillation,
    KnowledgeDistillation,
    SimilarityPreservingDistillation,
)

# The rest is built on TensorFlow (tf.data pipelines, exports, tf.distribute,
# Keras Tuner, the workflow) or on the full install's other dependencies
# (matplotlib for the pictures and the report): imported where TensorFlow is
# installed. On JAX or PyTorch without it (the core's CI lanes install keras
# alone), their names raise `keras_spkd._tf`'s ImportError, which says what
# to install.
_NEEDS_TENSORFLOW = (
    "data",
    "experiment",
    "SimilarityMonitor",
    "check_global_batch",
    "make_strategy",
    "export_student",
    "SPHyperModel",
    "make_tuner",
    "plot_similarity_matrices",
    "plot_training_curves",
    "write_report",
)
if importlib.util.find_spec("tensorflow") is not None:
    from keras_spkd import data, experiment  # noqa: F401  (public submodules)
    from keras_spkd.callbacks import SimilarityMonitor
    from keras_spkd.distribute import check_global_batch, make_strategy
    from keras_spkd.export import export_student
    from keras_spkd.plots import plot_similarity_matrices, plot_training_curves
    from keras_spkd.report import write_report
    from keras_spkd.tuning import SPHyperModel, make_tuner
else:

    def __getattr__(name: str):
        if name in _NEEDS_TENSORFLOW:
            importlib.import_module("keras_spkd._tf")  # raises, saying what to install
        raise AttributeError(f"module 'keras_spkd' has no attribute {name!r}")


__all__ = [
    "AttentionTransferDistillation",
    "KnowledgeDistillation",
    "attention_map",
    "attention_transfer_loss",
    "FitUnderStrategy",
    "Preprocessing",
    "SPDistiller",
    "SPHyperModel",
    "SimilarityPreservingDistillation",
    "SimilarityMonitor",
    "SimilarityPreservingLoss",
    "build_feature_extractor",
    "check_global_batch",
    "export_student",
    "describe_layers",
    "knowledge_distillation_loss",
    "layer_paths",
    "make_strategy",
    "make_tuner",
    "plot_similarity_matrices",
    "plot_training_curves",
    "similarity_matrix",
    "similarity_preserving_loss",
    "suggest_layer_pairs",
    "write_report",
]
