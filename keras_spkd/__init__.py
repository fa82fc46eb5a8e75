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

from keras_spkd import data as data  # keras_spkd.data.load_digits(...), as the docs say
from keras_spkd import models as models  # keras_spkd.models.wide_resnet(...)
from keras_spkd.callbacks import SimilarityMonitor
from keras_spkd.distiller import FitUnderStrategy, SPDistiller
from keras_spkd.distribute import check_global_batch, make_strategy
from keras_spkd.export import export_student
from keras_spkd.features import build_feature_extractor, layer_paths
from keras_spkd.losses import (
    SimilarityPreservingDistillation,
    SimilarityPreservingLoss,
    attention_map,
    attention_transfer_loss,
    knowledge_distillation_loss,
    similarity_matrix,
    similarity_preserving_loss,
)
from keras_spkd.pairs import describe_layers, suggest_layer_pairs
from keras_spkd.plots import plot_similarity_matrices, plot_training_curves
from keras_spkd.report import write_report
from keras_spkd.tuning import SPHyperModel, make_tuner

__version__ = "0.1.0"

__all__ = [
    "attention_map",
    "attention_transfer_loss",
    "FitUnderStrategy",
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
