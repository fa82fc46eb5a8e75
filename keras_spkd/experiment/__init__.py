"""The workflow as a Python API: what `keras-spkd distill`, `compare` and `tune` run.

>>> from keras_spkd import experiment
>>> config = experiment.ExperimentConfig(dataset="digits", gamma=100.0, epochs=30)
>>> summary = experiment.run_distill(config, out="runs/distill")
>>> summary.accuracy
{'teacher': 0.986, 'alone': 0.964, 'sp': 0.978}

Every setting is validated when the config is built; run directories are
locked, written atomically and resumed exactly (`resume=True`).
"""

from keras_spkd.errors import (
    ConfigError,
    DataError,
    NonFiniteLossError,
    RunDirectoryError,
    SPKDError,
)
from keras_spkd.experiment.compare import CompareResult, run_compare
from keras_spkd.experiment.config import PRESETS, ExperimentConfig
from keras_spkd.experiment.distill import RunSummary, run_distill
from keras_spkd.experiment.rundir import RunDirectory
from keras_spkd.experiment.search import SearchResult, run_search
from keras_spkd.experiment.session import Session, check_model_fits_data, prepare
from keras_spkd.experiment.teacher import TeacherCache, get_teacher, load_keras_file
from keras_spkd.experiment.tools import (
    load_student,
    run_evaluate,
    run_export,
    run_layers,
    run_predict,
    run_teacher,
)

__all__ = [
    "CompareResult",
    "ConfigError",
    "DataError",
    "ExperimentConfig",
    "NonFiniteLossError",
    "PRESETS",
    "RunDirectory",
    "RunDirectoryError",
    "RunSummary",
    "SPKDError",
    "SearchResult",
    "Session",
    "TeacherCache",
    "check_model_fits_data",
    "get_teacher",
    "load_keras_file",
    "load_student",
    "prepare",
    "run_compare",
    "run_distill",
    "run_evaluate",
    "run_export",
    "run_layers",
    "run_predict",
    "run_search",
    "run_teacher",
]
