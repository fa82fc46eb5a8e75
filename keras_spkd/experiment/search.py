"""`run_search`: a Keras Tuner search of SP, KD or SP+KD weights on the validation split.

The test split is never seen by the search. Every trial distils from one
shared teacher. Its executions run on the tuning seeds (`TUNING_SEED_BASE`,
1000, and up), disjoint from the evaluation seeds of `run_compare` (0 and
up): execution k of every trial starts from seed 1000 + k's student weights
and data order, so trials differ only in their hyper-parameters and the
search never trains an evaluation run's start. Every search also trains the
no-distillation reference (gamma = 0, KD weight 0) on the same seeds and
reports it beside the best trial. Rerunning the same search in the same
directory resumes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import keras

from keras_spkd.errors import ConfigError, core_errors
from keras_spkd.experiment.config import ExperimentConfig, parse_pairs
from keras_spkd.experiment.methods import Method, TermSpec
from keras_spkd.experiment.rundir import check_out_path
from keras_spkd.experiment.session import prepare, resolve_pairs
from keras_spkd.experiment.tools import export_for
from keras_spkd.experiment.training import build, optimizer, verbosity
from keras_spkd.pairs import suggest_layer_pairs
from keras_spkd.summary import atomic_write_json, write_summary
from keras_spkd.tuning import (
    SPHyperModel,
    best_trial,
    check_gamma_range,
    check_range,
    check_search_state,
    check_trials_completed,
    make_tuner,
    objective_for,
    search_state_error,
    trial_table,
    trial_tensorboard,
)

logger = logging.getLogger("keras_spkd")
TUNERS = ("random", "bayesian", "hyperband")
METHODS = ("sp", "kd", "sp+kd")
TUNING_SEED_BASE = 1000  # tuning seeds; compare's evaluation seeds stay below


@dataclass
class SearchResult:
    """What `run_search` found.

    Attributes:
        trials: One row per trial (id, status, gamma, pair, KD weight,
            temperature, objective).
        best: The best trial's hyper-parameters.
        best_config: An `ExperimentConfig` with them (also `out/best_config.json`).
        out: The search directory.
        method: The method searched (`"sp"`, `"kd"`, `"sp+kd"`).
        best_method: The best trial as a `run_compare` method, its terms with
            their weights (also `out/best_method.json`).
        best_objective: The best trial's objective.
        reference: The no-distillation reference on the same tuning seeds:
            `{"objective", "executions", "seeds"}`.
        seeds: The tuning seeds, one per execution of a trial.
    """

    trials: list[dict]
    best: dict
    best_config: ExperimentConfig
    out: str
    method: str = "sp"
    best_method: dict = field(default_factory=dict)
    best_objective: float | None = None
    reference: dict = field(default_factory=dict)
    seeds: list = field(default_factory=list)


def _check_number(name, value, positive=True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number; received {value!r}.")
    if value <= 0 if positive else value < 0:
        raise ConfigError(f"{name} must be {'> 0' if positive else '>= 0'}; received {value!r}.")
    return float(value)


def _candidates(config, candidates, teacher, data):
    """Concrete, checked config pairs and pair candidates (`"auto"`: every stage found)."""
    if candidates == "auto":
        student = build(config.student_arch, data, config, "student")
        with core_errors("pair_candidates 'auto': "):
            candidates = suggest_layer_pairs(teacher, student, stages="all")
    config = resolve_pairs(config, teacher, data)
    for pair in candidates or []:
        resolve_pairs(config.replace(pairs=[list(pair)], gamma=1.0), teacher, data)
    return config, [tuple(p) for p in (candidates or config.pairs)]


def run_search(
    config: ExperimentConfig,
    tuner: str = "bayesian",
    max_trials: int = 10,
    out: str = "runs/tune",
    gamma_range: tuple[float, float] = (10.0, 1e4),
    pair_candidates=None,
    kd_weights=None,
    objective: str = "val_accuracy",
    executions_per_trial: int = 2,
    overwrite: bool = False,
    method: str = "sp",
    kd_weight_range: tuple[float, float] = (0.1, 10.0),
    temperature_range: tuple[float, float] = (1.0, 16.0),
) -> SearchResult:
    """Searches a method's weights: SP's gamma, KD's weight and temperature, or all together.

    Each method gets the same search (`max_trials`, `executions_per_trial`,
    the same tuning seeds), so SP, KD and SP+KD are tuned alike. Execution k
    of every trial runs on tuning seed `1000 + k` (weights and data order),
    never on an evaluation seed of `run_compare`. The no-distillation
    reference (the student alone) runs on the same seeds and is reported
    beside the best trial: whether the chosen weights beat no distillation on
    validation can be read off.

    Args:
        config: The experiment settings; `config.epochs` is the epochs per
            trial (Hyperband: the largest budget).
        tuner: `"random"`, `"bayesian"` or `"hyperband"`. Defaults to `"bayesian"`.
        max_trials: Trials (>= 1). Defaults to `10`.
        out: Search directory (resumed when it holds this search). Defaults
            to `"runs/tune"`.
        gamma_range: `(low, high)`, 0 < low <= high. Defaults to `(10, 1e4)`.
        pair_candidates: Pairs to choose among (`"T:S,T:S"`, a list, or
            `"auto"`: every stage `suggest_layer_pairs` finds). Defaults to
            `config.pairs`.
        kd_weights: With `method="sp"`, KD weights to choose among. Defaults
            to none (no KD).
        objective: A logged metric; losses are minimised. Defaults to
            `"val_accuracy"`.
        executions_per_trial: Fits per trial (one per tuning seed), averaged.
            Defaults to `2`.
        overwrite: Start afresh instead of resuming. Defaults to `False`.
        method: `"sp"` (gamma, pair), `"kd"` (KD weight and temperature) or
            `"sp+kd"` (gamma, KD weight and temperature jointly). Defaults to `"sp"`.
        kd_weight_range: `(low, high)` of the KD weight (log-uniform).
            Defaults to `(0.1, 10)`.
        temperature_range: `(low, high)` of the KD temperature (log-uniform).
            Defaults to `(1, 16)`.

    Returns:
        A `SearchResult`.
    """
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"config must be an ExperimentConfig; received {type(config).__name__}.")
    if tuner not in TUNERS:
        raise ConfigError(f"tuner must be one of {', '.join(TUNERS)}; received {tuner!r}.")
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}; received {method!r}.")
    if kd_weights and method != "sp":
        raise ConfigError(
            f"kd_weights is a choice list for method 'sp'; method {method!r} "
            "searches the KD weight in kd_weight_range."
        )
    for name, value in (("max_trials", max_trials), ("executions_per_trial", executions_per_trial)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1; received {value!r}.")
    try:
        gamma_range = tuple(_check_number("gamma_range", g) for g in gamma_range)
        gamma_range = check_gamma_range(gamma_range)
        kd_weight_range = check_range(
            [_check_number("kd_weight_range", w) for w in kd_weight_range], "kd_weight_range"
        )
        temperature_range = check_range(
            [_check_number("temperature_range", t) for t in temperature_range],
            "temperature_range",
        )
        objective_for(objective)
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error)) from error
    kd_weights = [_check_number("kd_weights", w, positive=False) for w in (kd_weights or [])]
    candidates = parse_pairs(pair_candidates, "pair_candidates") if pair_candidates else None
    seeds = [TUNING_SEED_BASE + k for k in range(executions_per_trial)]
    extra = {
        "tuner": tuner,
        "max_trials": max_trials,
        "gamma_range": list(gamma_range),
        "pair_candidates": candidates
        if candidates in (None, "auto")
        else [list(p) for p in candidates],
        "kd_weights": kd_weights,
        "objective": objective,
        "executions_per_trial": executions_per_trial,
        "method": method,
        "kd_weight_range": list(kd_weight_range),
        "temperature_range": list(temperature_range),
        "tuning_seeds": seeds,
    }
    resume = (Path(out) / "config.json").exists()  # a search resumes what `out` holds
    session = prepare(config, out, "search", resume, overwrite, extra=extra, check_pairs=False)
    if resume and not overwrite:  # a damaged search state, before any teacher trains
        check_search_state(Path(out) / "search")
    data, strategy = session.data, session.strategy
    with strategy.scope():  # layer names checked on the architecture before a teacher trains
        keras.utils.set_random_seed(config.seed)
        probe = (
            session.teacher()[0]
            if config.teacher
            else build(config.teacher_arch, data, config, "teacher")
        )
        _candidates(config, candidates, probe, data)
    worker = "chief" not in os.environ.get("KERASTUNER_TUNER_ID", "chief")
    directory = (  # a distributed search's workers share the chief's directory (it locks it)
        contextlib.nullcontext(SimpleNamespace(path=check_out_path(out, create=True)))
        if worker
        else session.open()
    )
    with directory as run_dir:
        out = run_dir.path
        with strategy.scope():
            teacher, teacher_meta = session.teacher()
        config, candidates = _candidates(config, candidates, teacher, data)
        keras.utils.set_random_seed(seeds[0])
        hypermodel = SPHyperModel(
            teacher,
            lambda: build(config.student_arch, data, config, "student"),
            candidates,
            gamma_range,
            kd_weights=kd_weights or None,
            optimizer=lambda: optimizer(config, data.steps_per_epoch, config.epochs),
            train_data=lambda seed: data.with_seed(seed).epochs(0),
            method=method,
            kd_weight_range=kd_weight_range,
            temperature_range=temperature_range,
            temperature=config.temperature,
            execution_seeds=seeds,
        )
        search = make_tuner(
            tuner,
            hypermodel,
            objective,
            max_trials,
            str(out),
            "search",
            overwrite=overwrite,
            max_epochs=config.epochs,
            seed=config.seed,
            executions_per_trial=executions_per_trial,
            distribution_strategy=strategy if config.strategy != "default" else None,
        )
        fit_kwargs = {
            "validation_data": data.val,
            "epochs": config.epochs,
            "steps_per_epoch": data.steps_per_epoch,
            "shuffle": False,  # the order is the tuning seed's, keyed on (seed, epoch)
            "verbose": verbosity(),
        }
        search.search(callbacks=[trial_tensorboard(str(out / "tensorboard"))], **fit_kwargs)
        if worker:  # its oracle client holds no trial table; the chief reports
            return SearchResult([], {}, config, str(out), method, seeds=seeds)
        check_trials_completed(search)
        rows = trial_table(search)
        winner = best_trial(search)  # ties: the earliest, on a resume too
        best, best_objective = winner.hyperparameters.values, winner.score
        reference = _reference(out, hypermodel, fit_kwargs, search.oracle.objective, strategy)
        best_config, best_method = _best(config, best, candidates, method)
        best_config.to_json(out / "best_config.json")
        atomic_write_json(out / "best_method.json", best_method)
        atomic_write_json(out / "trials.json", rows)
        try:
            best_student = search.load_model(winner).student
        except (OSError, ValueError) as err:  # e.g. a weights file cut off since
            raise search_state_error(
                out / "search",
                f"the best trial's ({winner.trial_id}) saved weights cannot be read "
                f"({type(err).__name__}: {str(err)[:100]})",
            ) from err
        export = export_for(best_student, out / "best_student", data, config.replace(tflite=()))
        write_summary(
            out,
            "search",
            config=config.to_dict(),
            accuracy={},
            trials=rows,
            best=best,
            best_objective=best_objective,
            best_config=best_config.to_dict(),
            best_method=best_method,
            method=method,
            tuning_seeds=seeds,
            reference=reference,
            teacher=teacher_meta,
            export=export,
        )
    return SearchResult(
        rows, best, best_config, str(out), method, best_method, best_objective, reference, seeds
    )


def _best(config: ExperimentConfig, best: dict, candidates, method: str):
    """The best trial as a config and as a `run_compare` method (its terms and weights)."""
    changes: dict = {}
    specs = []
    if "gamma" in best:
        pair = best.get("pair")
        changes.update(
            gamma=float(best["gamma"]), pairs=[pair.split(":")] if pair else [list(candidates[0])]
        )
        specs.append(TermSpec("sp", {}, changes["gamma"]))
    if best.get("kd_weight"):
        temperature = float(best.get("temperature", config.temperature))
        changes.update(kd_weight=float(best["kd_weight"]), temperature=temperature)
        specs.append(TermSpec("kd", {"temperature": temperature}, changes["kd_weight"]))
    return config.replace(**changes), Method(method, tuple(specs)).to_dict()


def _reference(out: Path, hypermodel, fit_kwargs: dict, objective, strategy) -> dict:
    """The no-distillation reference on the tuning seeds (kept in `reference.json`)."""
    path = out / "reference.json"
    if path.is_file():
        return json.loads(path.read_text())
    logger.info("Training the no-distillation reference (gamma = 0) on the tuning seeds")
    with strategy.scope():
        reference = hypermodel.reference(fit_kwargs, objective)
    atomic_write_json(path, reference)
    return reference


def read_best_config(out: str | os.PathLike) -> ExperimentConfig:
    """The best config a finished search wrote."""
    return ExperimentConfig.from_json(Path(out) / "best_config.json")
