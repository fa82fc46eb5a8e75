"""Searching gamma (and the layer pair, and the KD weight) with Keras Tuner.

The paper's gamma = 3000 belongs to CIFAR-10 WideResNets; on other models and
data a badly chosen gamma makes the SP student worse than the student alone.
`SPHyperModel` builds a compiled `SPDistiller` per trial around one shared,
frozen teacher and one fixed student initialisation, so trials differ only in
their hyper-parameters.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import keras
import keras_tuner as kt

from keras_spkd.distiller import SPDistiller
from keras_spkd.features import check_layer_pairs

TUNERS = ("random", "bayesian", "hyperband")
_LOGGED = ("loss", "task_loss", "sp_loss", "kd_loss")


def _pair_key(pair: tuple[str, str]) -> str:
    return f"{pair[0]}:{pair[1]}"


def check_gamma_range(gamma_range: Sequence[float]) -> tuple[float, float]:
    """Validates a (low, high) gamma range for log-scale sampling."""
    if len(gamma_range) != 2:
        raise ValueError(f"Expected gamma_range=(low, high); received {gamma_range!r}.")
    low, high = (float(v) for v in gamma_range)
    if low <= 0 or high <= 0:
        raise ValueError(
            f"gamma is searched on a log scale, so the range must be positive; received "
            f"({low:g}, {high:g})."
        )
    if low >= high:
        raise ValueError(
            f"Expected gamma_range low < high; received ({low:g}, {high:g}) "
            f"({'empty' if low == high else 'inverted'})."
        )
    return low, high


def objective_for(name: str, metrics: Sequence[str] = ("accuracy",)) -> kt.Objective:
    """The `kt.Objective` for a logged metric: losses minimised, others maximised."""
    base = name.removeprefix("val_")
    known = {*_LOGGED, *metrics}
    if base not in known:
        options = sorted(known | {f"val_{k}" for k in known})
        raise ValueError(f"Unknown objective {name!r}: the distiller logs {options}.")
    return kt.Objective(name, "min" if base in _LOGGED else "max")


class SPHyperModel(kt.HyperModel):
    """Builds a compiled `SPDistiller` per Keras Tuner trial.

    Hyper-parameters: `gamma`, log-uniform in `gamma_range`; `pair`, a choice
    among `pair_candidates` (when there are several); `kd_weight`, a choice
    among `kd_weights` (when given). Every trial starts its student from the
    same initial weights and distils from the same frozen teacher.

    Args:
        teacher: The trained teacher, shared by every trial and never trained.
        student_builder: A function returning a fresh, uncompiled student.
        pair_candidates: `(teacher layer, student layer)` pairs to choose from.
        gamma_range: `(low, high)`, both > 0. Defaults to `(10, 10000)`.
        kd_weights: KD weights to choose from. Defaults to `None` (no KD).
        optimizer: A function returning a fresh optimizer. Defaults to SGD
            0.05 with Nesterov momentum 0.9.
        metrics: Compiled metrics. Defaults to `("accuracy",)`.
        train_data: A function returning the training data, called once per
            trial so that every trial sees the same data order; `search()` is
            then called without `x`. Defaults to `None` (pass `x` to search).

    Example:

    >>> hypermodel = keras_spkd.SPHyperModel(teacher, lambda: digits_cnn(8),
    ...                                      [("group2", "group2")])
    >>> tuner = keras_spkd.make_tuner("bayesian", hypermodel, "val_accuracy",
    ...                               max_trials=10, directory="tuning/digits")
    >>> tuner.search(train_ds, validation_data=val_ds, epochs=30)

    Reference: Tung & Mori, ICCV 2019, arXiv:1907.09682.
    """

    def __init__(
        self,
        teacher: keras.Model,
        student_builder: Callable[[], keras.Model],
        pair_candidates: Sequence[tuple[str, str]],
        gamma_range: Sequence[float] = (10.0, 10_000.0),
        kd_weights: Sequence[float] | None = None,
        optimizer: Callable[[], keras.optimizers.Optimizer] | None = None,
        metrics: Sequence[str] = ("accuracy",),
        train_data: Callable[[], object] | None = None,
        name: str = "sp_hypermodel",
    ):
        super().__init__(name=name)
        self.gamma_range = check_gamma_range(gamma_range)
        self.pair_candidates = check_layer_pairs(list(pair_candidates))
        self.kd_weights = list(kd_weights) if kd_weights else None
        self.teacher = teacher
        self.student_builder = student_builder
        self.optimizer = optimizer or (
            lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True)
        )
        self.metrics = list(metrics)
        self.train_data = train_data
        probe = student_builder()
        self._initial_weights = probe.get_weights()
        # Building a distiller checks every candidate pair before any trial runs.
        for pair in self.pair_candidates:
            SPDistiller(teacher, student_builder(), [pair])

    def build(self, hp: kt.HyperParameters) -> SPDistiller:
        gamma = hp.Float("gamma", *self.gamma_range, sampling="log")
        pairs = {_pair_key(p): p for p in self.pair_candidates}
        pair = pairs[hp.Choice("pair", list(pairs))] if len(pairs) > 1 else self.pair_candidates[0]
        kd_weight = hp.Choice("kd_weight", self.kd_weights) if self.kd_weights else 0.0
        student = self.student_builder()
        student.set_weights(self._initial_weights)
        distiller = SPDistiller(self.teacher, student, [pair], gamma=gamma, kd_weight=kd_weight)
        distiller.compile(
            optimizer=self.optimizer(),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=self.metrics,
        )
        return distiller

    def fit(self, hp, model, *args, **kwargs):
        if self.train_data is not None and not args and "x" not in kwargs:
            kwargs["x"] = self.train_data()  # a fresh pipeline: the same order every trial
        return model.fit(*args, **kwargs)


def make_tuner(
    kind: str,
    hypermodel: SPHyperModel,
    objective: str = "val_accuracy",
    max_trials: int = 10,
    directory: str = "tuning_runs",
    project_name: str = "sp_gamma",
    overwrite: bool = False,
    max_epochs: int = 30,
    seed: int = 0,
    **kwargs,
) -> kt.Tuner:
    """Creates a Random, Bayesian or Hyperband tuner for an `SPHyperModel`.

    An existing search in `directory/project_name` resumes where it stopped
    unless `overwrite`. Chief and workers of a distributed search are set up
    by Keras Tuner's environment variables (`KERASTUNER_TUNER_ID`,
    `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`).

    Args:
        kind: `"random"`, `"bayesian"` or `"hyperband"`.
        hypermodel: The `SPHyperModel`.
        objective: A logged metric, e.g. `"val_accuracy"` (maximised) or
            `"val_loss"` (minimised). Defaults to `"val_accuracy"`.
        max_trials: Trials for random and Bayesian search. Defaults to `10`.
        directory: Where the search is stored. Defaults to `"tuning_runs"`.
        project_name: Sub-directory of the search. Defaults to `"sp_gamma"`.
        overwrite: Start afresh. Defaults to `False` (resume).
        max_epochs: Hyperband's largest epoch budget. Defaults to `30`.
        seed: Defaults to `0`.
        **kwargs: Passed on to the Keras Tuner class, e.g.
            `executions_per_trial=2` (each trial trained twice, the objective
            averaged) or `max_consecutive_failed_trials`.

    Returns:
        A `keras_tuner.Tuner`.

    Example:

    >>> tuner = keras_spkd.make_tuner("random", hypermodel, max_trials=8,
    ...                               executions_per_trial=2)
    >>> tuner.search(train_ds, validation_data=val_ds, epochs=30,
    ...              callbacks=[keras_spkd.tuning.trial_tensorboard("runs/tune/tb")])
    """
    goal = objective_for(objective, hypermodel.metrics)
    common = {
        "objective": goal,
        "directory": directory,
        "project_name": project_name,
        "overwrite": overwrite,
        "seed": seed,
        **kwargs,
    }
    if kind == "random":
        return kt.RandomSearch(hypermodel, max_trials=max_trials, **common)
    if kind == "bayesian":
        return kt.BayesianOptimization(hypermodel, max_trials=max_trials, **common)
    if kind == "hyperband":
        return kt.Hyperband(hypermodel, max_epochs=max_epochs, **common)
    raise ValueError(f"Unknown tuner {kind!r}; expected one of {TUNERS}.")


def trial_tensorboard(log_dir: str | os.PathLike) -> keras.callbacks.TensorBoard:
    """A TensorBoard callback for `tuner.search(callbacks=[...])`: every trial, logged.

    Keras Tuner recognises a callback whose class is named `TensorBoard`,
    points it at `log_dir/<trial id>/execution<n>` for each run of each trial
    and adds the trial's hyper-parameters for TensorBoard's HParams dashboard
    (`tensorboard --logdir log_dir`). Subclasses of it are not recognised.

    Args:
        log_dir: The search's TensorBoard directory.

    Returns:
        A plain `keras.callbacks.TensorBoard` that writes per-epoch scalars.
    """
    return keras.callbacks.TensorBoard(str(log_dir), write_graph=False, profile_batch=0)


def trial_table(tuner: kt.Tuner) -> list[dict]:
    """One row per trial: id, status, gamma, pair, KD weight and objective."""
    rows = []
    for trial in tuner.oracle.trials.values():
        values = trial.hyperparameters.values
        rows.append(
            {
                "trial": trial.trial_id,
                "status": str(trial.status),
                "gamma": values.get("gamma"),
                "pair": values.get("pair", _pair_key(tuner.hypermodel.pair_candidates[0])),
                "kd_weight": values.get("kd_weight", 0.0),
                "objective": trial.score,
            }
        )
    return sorted(rows, key=lambda row: row["trial"])


def check_trials_completed(tuner: kt.Tuner) -> None:
    """Raises if any trial did not complete (Keras Tuner's search() does not)."""
    failed = [row for row in trial_table(tuner) if row["status"] != "COMPLETED"]
    if failed:
        raise RuntimeError(
            f"{len(failed)} trial(s) did not complete: {failed}. Keras Tuner records a "
            "failing trial and carries on; see the trial's traceback in its directory "
            "(a missing `tensorboard` package fails every trial on TensorFlow)."
        )
