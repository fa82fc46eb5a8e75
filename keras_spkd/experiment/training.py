"""Training one phase so that a kill at any moment can be resumed exactly.

A phase (the teacher, the student alone, the student with SP, one compare
run) lives in its own folder: `backup/` (Keras's `BackupAndRestore`),
`history.csv`, and, once done, `result.json`. Epoch e's data order and
augmentation depend on `(seed, e)` only (`DataBundle.epochs`), so a run
restored at epoch e is fed what an uninterrupted run was fed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import sys
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_spkd import _compat
from keras_spkd.data import DataBundle
from keras_spkd.distiller import FitUnderStrategy
from keras_spkd.errors import ConfigError, NonFiniteLossError
from keras_spkd.experiment.config import ExperimentConfig
from keras_spkd.summary import atomic_write_json, atomic_write_text

logger = logging.getLogger("keras_spkd")


def model_preprocessing(spec, data: DataBundle, declared: str | None):
    """The `Preprocessing` layer a model gets in front: the data's (zoo) or a declared one."""
    from keras_spkd.preprocessing import Preprocessing, parse_preprocessing

    arguments = parse_preprocessing(declared)
    if arguments is None:
        if spec.kind == "zoo":
            return data.layer
        if spec.kind == "application":
            module = getattr(keras.applications, spec.name).__module__.rsplit(".", 1)[-1]
            arguments = {"application": module}
        else:
            arguments = {}
    return Preprocessing(**arguments, image_size=data.image_size)


def prepare_model(model, spec, data: DataBundle, config: ExperimentConfig, role: str, shape=None):
    """`model` checked against the data, with its preprocessing in front (unless it has one)."""
    from keras_spkd.preprocessing import find_preprocessing, with_preprocessing

    kd = "KD" if config.kd_weight > 0 else None
    if find_preprocessing(model) is not None:  # made by keras-spkd: it takes stored images
        stored = data.images("test", 1).shape[1:]
        check_model_fits_data(model, data, role, spec.label, stored, kd)
        return model
    check_model_fits_data(model, data, role, spec.label, shape, kd)
    declared = getattr(config, f"{role}_preprocessing", None)
    return with_preprocessing(model, model_preprocessing(spec, data, declared))


def build(
    arch: str,
    data: DataBundle,
    config: ExperimentConfig,
    name: str,
    input_shape=None,
    seed: int | None = None,
):
    """The model `arch` names (any model spec) for `data`, its preprocessing in front.

    Every model gets the config's weight decay on its kernels (L2; none under
    AdamW, whose optimizer decays), zoo models also `name`. A student file is
    its architecture and initial weights; with `seed` > 0 (a later seed of a
    comparison) it is re-initialised from its initializers, seeded, unless
    `config.keep_student_weights`. The model is checked against the data
    (input shape, classes, logits) before anything trains.
    """
    from keras_spkd.sources import add_weight_decay, build_from_spec, parse_model_spec, reinitialise

    role = "teacher" if name in ("teacher", "t") else "student"
    spec = parse_model_spec(arch)
    shape = tuple(input_shape or data.input_shape)
    decay = coupled_weight_decay(config)
    model = build_from_spec(spec, shape, data.num_classes, role, weight_decay=decay, name=name)
    if spec.kind == "file" and role == "student" and seed and not config.keep_student_weights:
        model = reinitialise(model)
    model = prepare_model(model, spec, data, config, role, shape)
    if spec.kind != "zoo":  # the zoo's models got it when built
        _say_own_regularizers(model, spec, config)
        add_weight_decay(model, decay)
    return model


def _say_own_regularizers(model, spec, config: ExperimentConfig) -> None:
    """Kernels that carry a regularizer of their own keep it: say so where the flag
    would have them decay otherwise (a weight decay, or AdamW's decoupled one)."""
    own = [
        v.path
        for v in model.trainable_variables
        if v.path.endswith("kernel") and v.regularizer is not None
    ]
    if not own or not (config.weight_decay or config.optimizer == "adamw"):
        return
    effect = (
        "under AdamW it adds to the optimizer's decoupled decay"
        if config.optimizer == "adamw"
        else f"weight_decay={config.weight_decay:g} goes only to the others"
    )
    logger.warning(
        "%s: %d kernel(s) carry a regularizer of their own (e.g. %s), kept as saved; %s.",
        spec.label,
        len(own),
        own[0],
        effect,
    )


def coupled_weight_decay(config: ExperimentConfig) -> float:
    """The L2 penalty the kernels carry: none under AdamW, whose decay is decoupled."""
    return 0.0 if getattr(config, "optimizer", "sgd") == "adamw" else config.weight_decay or 0.0


def check_model_fits_data(
    model,
    data: DataBundle,
    role: str = "teacher",
    source: str | None = None,
    input_shape=None,
    logits_needed_for: str | None = None,
) -> None:
    """Refuses, in one line, a model whose input or output does not fit `data`.

    Checks that `model` is a functional (or Sequential) Keras model with a
    symbolic graph, that its input shape matches the images' (dimensions
    the model leaves open match anything) and that it has one output per
    class.

    Args:
        model: The model (a teacher or a student).
        data: The dataset it will be trained or evaluated on.
        role: What the model is, for the message (`"teacher"`, `"student"`...).
        source: Where it came from (a file name), for the message.
        input_shape: The image shape the model must take, when not
            `data.input_shape` (stored images of a model that carries its
            preprocessing; the privileged student's half images).
        logits_needed_for: The term that needs logits (`"KD"`), if any: a
            softmax output is then refused.

    Raises:
        ConfigError: Not a model, no symbolic graph, input / classes that do
            not fit, or a softmax output where logits are needed.
    """
    name = f"The {role}" + (f" {source!r}" if source else "")
    if not isinstance(model, keras.Model):
        raise ConfigError(f"{name} is not a Keras model; received {type(model).__name__}.")
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ConfigError(
            f"{name} is a subclassed model without a symbolic graph; save a functional or "
            "Sequential model (built with keras.Input) instead."
        )
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConfigError(
            f"{name} has {len(inputs)} inputs and {len(outputs)} outputs; expected one image "
            "input and one output of class scores."
        )
    shape = tuple(inputs[0].shape[1:])
    expected = tuple(data.input_shape if input_shape is None else input_shape)
    if len(shape) != len(expected) or any(
        have is not None and have != want for have, want in zip(shape, expected)
    ):
        raise ConfigError(
            f"{name} takes inputs of shape {shape}, but {data.name!r} has images of shape "
            f"{expected}; pass the matching --data or --dataset (or --image-size), or a model "
            "built for these images."
        )
    classes = outputs[0].shape[-1]
    if classes != data.num_classes:
        raise ConfigError(
            f"{name} has {classes} outputs, but {data.name!r} has {data.num_classes} classes; "
            "pass the matching --data or --dataset, or a model built for these classes."
        )
    if logits_needed_for:
        from keras_spkd.sources import outputs_probabilities

        if outputs_probabilities(model):
            raise ConfigError(
                f"{name} ends in a softmax but {logits_needed_for} needs logits; remove the "
                "final softmax (keras.applications: classifier_activation=None)."
            )


def optimizer(config: ExperimentConfig, steps_per_epoch: int, epochs: int):
    """The config's optimizer (SGD with Nesterov momentum 0.9, Adam or AdamW) and schedule."""
    total = max(1, steps_per_epoch * epochs)
    if config.schedule == "step":  # x0.2 at 30%, 60%, 80% (60/120/160 of 200 epochs)
        bounds = [int(total * f) for f in (0.3, 0.6, 0.8)]
        lr = keras.optimizers.schedules.PiecewiseConstantDecay(
            bounds, [config.lr * 0.2**i for i in range(4)]
        )
    elif config.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(config.lr, total)
    else:
        lr = config.lr
    choice = getattr(config, "optimizer", "sgd")
    if choice == "adam":
        return keras.optimizers.Adam(lr)
    if choice == "adamw":
        # Decoupled decay (Loshchilov & Hutter): the config's weight_decay, not Keras's 0.004.
        return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay or 0.0)
    return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)


def from_logits(model) -> bool:
    """Whether the (student of the) model outputs logits, not softmax probabilities."""
    from keras_spkd.sources import outputs_probabilities

    inner = getattr(model, "student", None) or getattr(model, "wrapped", None) or model
    return not outputs_probabilities(inner)


def compile_model(model, config: ExperimentConfig, steps_per_epoch: int, epochs: int) -> None:
    model.compile(
        optimizer=optimizer(config, steps_per_epoch, epochs),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits(model)),
        metrics=["accuracy"],
        jit_compile=config.jit,
    )


def model_for_fit(model):
    """What to call `fit()` / `evaluate()` on to train `model` under the current strategy.

    That is `model` itself, except under `MultiWorkerMirroredStrategy`, where
    Keras's `fit()` is broken upstream (PITFALLS.md) and a `FitUnderStrategy`
    wrapper around `model` works instead (it trains `model`'s own weights).
    """
    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return FitUnderStrategy(model)
    return model


trainable = model_for_fit  # the 0.2 name, still imported by compare.py


def accuracy(model, dataset) -> float:
    """Test accuracy of a logits model on a batched dataset."""
    logits = from_logits(model)
    model = model_for_fit(model)
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=logits), metrics=["accuracy"]
    )
    logs = model.evaluate(dataset, verbose=0, return_dict=True)
    return float(np.ravel(logs["accuracy"])[0])


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 (16 hex digits) of the weights' bytes: any change, even a permutation, shows."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


def verbosity() -> int:
    return 1 if sys.stdout.isatty() else 2


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training at the first NaN or infinite loss and remembers where."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.bad: tuple[int, str, float] | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _check(self, logs):
        for key, value in (logs or {}).items():
            if "loss" in key:
                value = float(np.ravel(value)[0])
                if not math.isfinite(value):
                    self.bad = (self.epoch, key, value)
                    self.model.stop_training = True
                    return

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs)


def _trim_history(csv_path: Path, done: int) -> None:
    """Keeps the CSV rows of the epochs the backup holds (none lost, none twice)."""
    if not csv_path.exists():
        return
    with csv_path.open(newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [row for row in rows[1:] if row and row[0].isdigit() and int(row[0]) < done]
    out = io.StringIO()
    if len(kept) > 1:
        csv.writer(out).writerows(kept)
    atomic_write_text(csv_path, out.getvalue())


def save_model(model: keras.Model, path: Path) -> None:
    """Saves a `.keras` file atomically (a kill leaves the old file or none)."""
    tmp = path.with_name(f".{path.stem}.partial.keras")
    model.save(tmp)
    tmp.replace(path)


def run_phase(
    phase_dir: Path,
    model,
    data: DataBundle,
    config: ExperimentConfig,
    epochs: int,
    phase: str,
    extra_callbacks: list | None = None,
    view=None,
) -> dict:
    """Fits `model` (compiled here) for `epochs`, resumably; returns the fit's facts.

    `result.json` in `phase_dir` marks the phase done; a later call returns it
    without training.

    Raises:
        NonFiniteLossError: A loss became NaN or infinite.
    """
    done = read_result(phase_dir)
    if done is not None:
        return done
    phase_dir.mkdir(parents=True, exist_ok=True)
    csv_path, backup_dir = phase_dir / "history.csv", phase_dir / "backup"
    start = _compat.settle_backup(backup_dir)
    _trim_history(csv_path, start)
    compile_model(model, config, data.steps_per_epoch, epochs)
    guard = StopOnNonFinite()
    callbacks = [  # CSV row first, then the backup: a kill between them repeats no row
        guard,
        keras.callbacks.CSVLogger(str(csv_path), append=True),
        keras.callbacks.BackupAndRestore(str(backup_dir), double_checkpoint=True),
        *(extra_callbacks or []),
    ]
    if start:
        logger.info("Resuming phase %r at epoch %d of %d", phase, start + 1, epochs)
    began = time.perf_counter()
    train, val = data.epochs(start), data.val
    if view is not None:  # e.g. the privileged setting's {"teacher", "student"} inputs
        train, val = train.map(view), val.map(view)
    model.fit(
        train,
        steps_per_epoch=data.steps_per_epoch,
        validation_data=val,
        epochs=epochs,
        callbacks=callbacks,
        shuffle=False,  # the order is DataBundle's, keyed on (seed, epoch)
        verbose=verbosity(),
    )
    if guard.bad is not None:
        epoch, key, value = guard.bad
        raise NonFiniteLossError(
            f"Training stopped in phase {phase!r}, epoch {epoch + 1}: {key} became {value}. "
            "Lower the learning rate or the loss weights (gamma, kd_weight, at_weight); "
            "nothing was exported."
        )
    return {"fit_seconds": round(time.perf_counter() - began, 1), "epochs": epochs}


def read_result(phase_dir: Path, model_file: str | None = None) -> dict | None:
    """A finished phase's result, or `None` when it must run (again).

    A `result.json` that is not valid JSON, or a saved model that is not a
    valid archive, was damaged after the phase finished: the phase is redone
    (it is deterministic, so it gives the same result), with one warning.
    """
    path = phase_dir / "result.json"
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
        if not isinstance(result, dict):
            raise ValueError("not an object")
        if model_file and not zipfile.is_zipfile(phase_dir / model_file):
            raise ValueError(f"{model_file} is not a valid .keras archive")
    except (ValueError, UnicodeDecodeError, OSError) as error:
        logger.warning("%s is damaged (%s); running that phase again", phase_dir, error)
        path.unlink()
        return None
    logger.info("Phase %r already finished; reusing its result", phase_dir.name)
    return result


def finish_phase(phase_dir: Path, result: dict) -> dict:
    atomic_write_json(phase_dir / "result.json", result)
    return result
