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
from typing import TYPE_CHECKING

# Public names and the module that defines each. Importing `keras_spkd` loads
# no TensorFlow: the CLI quiets TensorFlow's logging before anything loads it,
# and `keras-spkd --help` answers at once.
_EXPORTS = {
    "SimilarityMonitor": "callbacks",
    "FitUnderStrategy": "distiller",
    "SPDistiller": "distiller",
    "check_global_batch": "distribute",
    "make_strategy": "distribute",
    "export_student": "export",
    "build_feature_extractor": "features",
    "layer_paths": "features",
    "SimilarityPreservingLoss": "losses",
    "attention_map": "losses",
    "attention_transfer_loss": "losses",
    "knowledge_distillation_loss": "losses",
    "similarity_matrix": "losses",
    "similarity_preserving_loss": "losses",
    "describe_layers": "pairs",
    "Preprocessing": "preprocessing",
    "AttentionTransferDistillation": "terms",
    "KnowledgeDistillation": "terms",
    "SimilarityPreservingDistillation": "terms",
    "suggest_layer_pairs": "pairs",
    "plot_similarity_matrices": "plots",
    "plot_training_curves": "plots",
    "write_report": "report",
    "SPHyperModel": "tuning",
    "make_tuner": "tuning",
}
_SUBMODULES = ("data", "models", "experiment")

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time names load on first use
    from keras_spkd import data as data
    from keras_spkd import experiment as experiment
    from keras_spkd import models as models
    from keras_spkd.callbacks import SimilarityMonitor
    from keras_spkd.distiller import FitUnderStrategy, SPDistiller
    from keras_spkd.distribute import check_global_batch, make_strategy
    from keras_spkd.export import export_student
    from keras_spkd.features import build_feature_extractor, layer_paths
    from keras_spkd.losses import (
        SimilarityPreservingLoss,
        attention_map,
        attention_transfer_loss,
        knowledge_distillation_loss,
        similarity_matrix,
        similarity_preserving_loss,
    )
    from keras_spkd.pairs import describe_layers, suggest_layer_pairs
    from keras_spkd.plots import plot_similarity_matrices, plot_training_curves
    from keras_spkd.preprocessing import Preprocessing
    from keras_spkd.report import write_report
    from keras_spkd.terms import (
        AttentionTransferDistillation,
        KnowledgeDistillation,
        SimilarityPreservingDistillation,
    )
    from keras_spkd.tuning import SPHyperModel, make_tuner


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"keras_spkd.{_EXPORTS[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"keras_spkd.{name}")
    else:
        raise AttributeError(f"module 'keras_spkd' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])


__version__ = "0.2.0"

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
