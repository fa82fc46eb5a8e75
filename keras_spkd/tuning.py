"""Searching gamma, the KD weight and temperature (and the layer pair) with Keras Tuner.

The paper's gamma = 3000 belongs to CIFAR-10 WideResNets; on other models and
data a badly chosen gamma makes the SP student worse than the student alone.
`SPHyperModel` builds a compiled `SPDistiller` per trial around one shared,
frozen teacher. Every trial starts from the same student initialisation and
data order (or, with `execution_seeds`, its k-th execution from the k-th
seed's), so trials differ only in their hyper-parameters. SP, KD and SP+KD
are searched alike (`method`), so each method gets the same tuning.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import keras_tuner as kt

from keras_spkd._compat import keras_tuner_atomic_json
from keras_spkd.distiller import SPDistiller
from keras_spkd.errors import RunDirectoryError
from keras_spkd.features import check_layer_pairs
from keras_spkd.summary import atomic_write_text

TUNERS = ("random", "bayesian", "hyperband")
METHODS = ("sp", "kd", "sp+kd")
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


def check_range(value: Sequence[float], name: str) -> tuple[float, float]:
    """Validates a positive (low, high) range for log-scale sampling."""
    if len(value) != 2:
        raise ValueError(f"Expected {name}=(low, high); received {value!r}.")
    low, high = (float(v) for v in value)
    if not (math.isfinite(low) and math.isfinite(high)) or low <= 0 or high <= 0:
        raise ValueError(
            f"{name} is searched on a log scale, so it must be finite and positive; received "
            f"({low:g}, {high:g})."
        )
    if low >= high:
        raise ValueError(f"Expected {name} low < high; received ({low:g}, {high:g}).")
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

    Hyper-parameters by `method`: `"sp"`: `gamma`, log-uniform in
    `gamma_range`, `pair`, a choice among `pair_candidates` (when there are
    several), and `kd_weight`, a choice among `kd_weights` (when given);
    `"kd"`: `kd_weight` and `temperature`, log-uniform in `kd_weight_range`
    and `temperature_range`; `"sp+kd"`: all of them together. Every trial
    distils from the same frozen teacher; its student starts from the same
    initial weights (or, with `execution_seeds`, execution k of every trial
    starts from seed k's weights and data order).

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
            then called without `x`. With `execution_seeds` it is called with
            the execution's seed. Defaults to `None` (pass `x` to search).
        method: `"sp"`, `"kd"` or `"sp+kd"`: the terms searched. Defaults to `"sp"`.
        kd_weight_range: `(low, high)` of the KD weight, both > 0. Defaults
            to `(0.1, 10)`.
        temperature_range: `(low, high)` of the KD temperature T. Defaults to
            `(1, 16)`.
        temperature: T when it is not searched (`kd_weights`). Defaults to `4.0`.
        execution_seeds: One seed per execution of a trial (Keras Tuner's
            `executions_per_trial`): execution k reseeds with seed k before
            building its student and gets `train_data(seed k)`. Defaults to
            `None`: one fixed initial student for every build.

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
        train_data: Callable[..., object] | None = None,
        name: str = "sp_hypermodel",
        method: str = "sp",
        kd_weight_range: Sequence[float] = (0.1, 10.0),
        temperature_range: Sequence[float] = (1.0, 16.0),
        temperature: float = 4.0,
        execution_seeds: Sequence[int] | None = None,
    ):
        super().__init__(name=name)
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; expected one of {METHODS}.")
        self.method = method
        self.kd_weight_range = check_range(kd_weight_range, "kd_weight_range")
        self.temperature_range = check_range(temperature_range, "temperature_range")
        self.temperature = float(temperature)
        self.execution_seeds = list(execution_seeds) if execution_seeds else None
        self._hp, self._execution = None, 0
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

    @property
    def seed(self) -> int | None:
        """The seed of the execution being built and fitted (`None` without `execution_seeds`)."""
        if not self.execution_seeds:
            return None
        return self.execution_seeds[self._execution % len(self.execution_seeds)]

    def _next_execution(self, hp) -> None:
        """Keras Tuner builds a trial's executions from one `hp` object, one after another."""
        if hp is self._hp:
            self._execution += 1
        else:
            self._hp, self._execution = hp, 0

    def student(self) -> keras.Model:
        """A fresh student: seeded by the current execution, or the fixed initial weights."""
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed)
            return self.student_builder()
        student = self.student_builder()
        student.set_weights(self._initial_weights)
        return student

    def compile(self, model: keras.Model) -> keras.Model:
        model.compile(
            optimizer=self.optimizer(),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=self.metrics,
        )
        return model

    def build(self, hp: kt.HyperParameters) -> SPDistiller:
        self._next_execution(hp)
        gamma, temperature, kd_weight = 0.0, self.temperature, 0.0
        pair = self.pair_candidates[0]
        if "sp" in self.method.split("+"):
            gamma = hp.Float("gamma", *self.gamma_range, sampling="log")
            pairs = {_pair_key(p): p for p in self.pair_candidates}
            if len(pairs) > 1:
                pair = pairs[hp.Choice("pair", list(pairs))]
        if "kd" in self.method.split("+"):
            kd_weight = hp.Float("kd_weight", *self.kd_weight_range, sampling="log")
            temperature = hp.Float("temperature", *self.temperature_range, sampling="log")
        elif self.kd_weights:
            kd_weight = hp.Choice("kd_weight", self.kd_weights)
        distiller = SPDistiller(
            self.teacher,
            self.student(),
            [pair],
            gamma=gamma,
            kd_weight=kd_weight,
            temperature=temperature,
        )
        return self.compile(distiller)

    def fit(self, hp, model, *args, **kwargs):
        if self.train_data is not None and not args and "x" not in kwargs:
            # a fresh pipeline: the same order every trial (per execution seed)
            seeded = self.seed is not None
            kwargs["x"] = self.train_data(self.seed) if seeded else self.train_data()
        return model.fit(*args, **kwargs)

    def reference(self, fit_kwargs: dict, objective: kt.Objective) -> dict:
        """The no-distillation reference (gamma = 0, KD weight 0) on the same executions.

        The student alone is trained once per execution seed (or once), with
        the trials' optimizer and `fit_kwargs`, and scored as Keras Tuner scores
        a trial: each execution's best epoch, averaged.

        Returns:
            `{"objective": value, "executions": [value per execution], "seeds": [...]}`;
            the objective is `None` for a distillation log (`val_sp_loss`) the
            student alone does not have.
        """
        histories, seeds = [], self.execution_seeds or [None]
        for execution in range(len(seeds)):
            self._hp, self._execution = None, execution
            student = self.compile(self.student())
            histories.append(self.fit(None, student, **fit_kwargs))
        best = max if objective.direction == "max" else min
        if any(objective.name not in history.history for history in histories):
            return {"objective": None, "executions": [], "seeds": seeds}  # e.g. val_sp_loss
        values = [float(best(history.history[objective.name])) for history in histories]
        return {"objective": sum(values) / len(values), "executions": values, "seeds": seeds}


_STATE_KEYS = {  # what a Keras Tuner 1.4.8 state file must hold, and of which type
    "oracle.json": {"ongoing_trials": dict, "tried_so_far": list},
    "trial.json": {"trial_id": str, "status": str},
}


def _unusable(path) -> str | None:
    """Why a Keras Tuner state file cannot be reloaded, or `None`."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return f"is not a readable JSON file ({type(err).__name__}: {str(err)[:80]})"
    fields = _STATE_KEYS.get(path.name, {})
    wrong = [
        f"{key}: {kind.__name__}"
        for key, kind in fields.items()
        if not isinstance(state, dict) or not isinstance(state.get(key), kind)
    ]
    if not isinstance(state, dict) or wrong:
        return "is JSON but not Keras Tuner's state (" + ", ".join(wrong or ["an object"]) + ")"
    return None


def _raised_in_reload(error: BaseException) -> bool:
    """Whether Keras Tuner raised `error` while reloading a saved search."""
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name in ("reload", "set_state", "from_state"):
            return True
        tb = tb.tb_next
    return False


def search_state_error(project_dir: str | os.PathLike, problem: str) -> RunDirectoryError:
    """The one error for a search that cannot resume: what is wrong, and what to do."""
    finished = sum(
        '"COMPLETED"' in trial.read_text(encoding="utf-8", errors="replace")
        for trial in Path(project_dir).glob("trial_*/trial.json")
        if trial.is_file()
    )
    return RunDirectoryError(
        f"The search in {project_dir} cannot resume: {problem}; a kill during a write or "
        f"an edit since can do this. Start it afresh with overwrite (--overwrite; its "
        f"{finished} finished trial(s) are lost), or restore the file from a copy."
    )


def check_search_state(project_dir: str | os.PathLike) -> None:
    """Refuses to resume a search whose saved state cannot be reloaded, naming the file.

    Keras Tuner would fail deep inside `json.loads` or its `set_state`. Searches
    written by keras-spkd 0.3.0 on are saved whole (a kill leaves the previous
    state); an older search killed mid-write, or a file damaged since, lands
    here. Only Keras Tuner's own files are read (`oracle.json`, `tuner*.json`,
    `chief.json`, `trial_*/trial.json`): others in the folder are the user's.
    """
    project = Path(project_dir)
    if "://" in str(project_dir) or not project.is_dir():
        return
    files = [project / "oracle.json", *project.glob("tuner*.json"), project / "chief.json"]
    files = [f for f in files if f.exists() or f.is_symlink()]
    files += sorted(project.glob("trial_*/trial.json"))
    for path in files:
        problem = _unusable(path)
        if problem:
            raise search_state_error(project, f"{path.relative_to(project)} {problem}")


def _mark_resumable(project: Path) -> None:
    """Writes the tuner's own state file where a kill left the oracle's without it.

    Keras Tuner reloads a project only when `<tuner id>.json` exists, and writes
    it after the oracle's files at the end of each trial; a kill in between (CI
    hit it) made the next run start the search afresh over the finished trials.
    The tuner's state is empty (`BaseTuner.get_state` returns `{}`).
    """
    tuner_file = project / f"{os.environ.get('KERASTUNER_TUNER_ID', 'tuner0')}.json"
    if (project / "oracle.json").is_file() and not tuner_file.exists():
        atomic_write_text(tuner_file, "{}")


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
    keras_tuner_atomic_json()  # a kill mid-save leaves the previous state, never half a file
    if not overwrite:
        check_search_state(os.path.join(str(directory), project_name))
    common = {
        "objective": goal,
        "directory": directory,
        "project_name": project_name,
        "overwrite": overwrite,
        "seed": seed,
        **kwargs,
    }
    tuners = {
        "random": lambda: kt.RandomSearch(hypermodel, max_trials=max_trials, **common),
        "bayesian": lambda: kt.BayesianOptimization(hypermodel, max_trials=max_trials, **common),
        "hyperband": lambda: kt.Hyperband(hypermodel, max_epochs=max_epochs, **common),
    }
    if kind not in tuners:
        raise ValueError(f"Unknown tuner {kind!r}; expected one of {TUNERS}.")
    project = os.path.join(str(directory), project_name)
    if overwrite or not os.path.isdir(project):
        return tuners[kind]()
    _mark_resumable(Path(project))
    try:
        return tuners[kind]()
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, OSError) as err:
        if not _raised_in_reload(err):
            raise  # e.g. a misspelt keyword: not the saved state's fault
        cause = err.__cause__ or err  # Keras Tuner wraps its reload errors in RuntimeError
        raise search_state_error(
            project, f"Keras Tuner could not reload it ({type(cause).__name__}: {cause})"
        ) from err


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


def _trial_order(trial_id: str) -> tuple:
    """Trials in the order they were created ("2" before "10")."""
    return (0, int(trial_id), "") if str(trial_id).isdigit() else (1, 0, str(trial_id))


def best_trial(tuner: kt.Tuner):
    """The best completed trial; among equal scores, the earliest.

    Keras Tuner's `get_best_trials` keeps ties in the order of its trial table,
    which on a resume is the order the trial folders are listed in: a finished
    search reloaded could name another of its tied trials best (seen on the
    digits SP search, where 4 of 8 trials scored 176/180).
    """
    completed = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    if not completed:
        raise RuntimeError("The search has no completed trial.")
    sign = -1 if tuner.oracle.objective.direction == "max" else 1
    return min(completed, key=lambda t: (sign * t.score, _trial_order(t.trial_id)))


def trial_table(tuner: kt.Tuner) -> list[dict]:
    """One row per trial: id, status, gamma, pair, KD weight, temperature and objective."""
    rows = []
    for trial in tuner.oracle.trials.values():
        values = trial.hyperparameters.values
        rows.append(
            {
                "trial": trial.trial_id,
                "status": str(trial.status),
                "gamma": values.get("gamma"),
                "pair": values.get("pair", _pair_key(tuner.hypermodel.pair_candidates[0]))
                if "sp" in tuner.hypermodel.method.split("+")
                else None,  # KD alone taps no layer
                "kd_weight": values.get("kd_weight", 0.0),
                "temperature": values.get("temperature", tuner.hypermodel.temperature),
                "objective": trial.score,
            }
        )
    return sorted(rows, key=lambda row: _trial_order(row["trial"]))


def check_trials_completed(tuner: kt.Tuner) -> None:
    """Raises if any trial did not complete (Keras Tuner's search() does not)."""
    failed = [row for row in trial_table(tuner) if row["status"] != "COMPLETED"]
    if failed:
        raise RuntimeError(
            f"{len(failed)} trial(s) did not complete: {failed}. Keras Tuner records a "
            "failing trial and carries on; see the trial's traceback in its directory "
            "(a missing `tensorboard` package fails every trial on TensorFlow)."
        )
