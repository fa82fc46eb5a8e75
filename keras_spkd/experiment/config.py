"""`ExperimentConfig`: every setting of a run, validated once where it enters.

Fields left `None` take the dataset's preset (the paper's recipe for TFDS
datasets, small CNNs for the digits and Fashion-MNIST). A bad value names
itself and what is allowed, before any data is loaded or any model trained.

Settings come in layers, merged field by field by `merge`: the dataset's
preset < a config file < the command line's flags. A config records which
preset fields were set explicitly (`explicit`), so that a file written for
one dataset and used with another keeps what the user chose (gamma, say) and
takes the new dataset's preset for the rest (its architectures, epochs...).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keras_spkd.errors import ConfigError

SCHEDULES = ("step", "cosine", "constant")
OPTIMIZERS = ("sgd", "adam", "adamw")
AUGMENTS = ("none", "crop", "crop_flip")
ADAPTIVE_LR = 1e-3  # the learning rate adam and adamw get unless one is given
STRATEGIES = ("default", "mirrored", "multi_worker")
TFLITE_MODES = ("float", "dynamic", "int8")
PRESETS: dict[str, dict[str, Any]] = {
    "digits": {
        "teacher_arch": "digits-cnn-32",
        "student_arch": "digits-cnn-8",
        "pairs": [("group2", "group2")],
        "batch_size": 64,
        "lr": 0.05,
        "schedule": "step",
        "epochs": 30,
        "teacher_epochs": 40,
        "gamma": 100.0,
        "weight_decay": 0.0,
        "optimizer": "sgd",
        "augment": "none",
    },
    "fashion_mnist": {
        "teacher_arch": "fashion-cnn-16",
        "student_arch": "fashion-cnn-4",
        "pairs": [("group3", "group3")],
        "batch_size": 128,
        "lr": 0.05,
        "schedule": "cosine",
        "epochs": 8,
        "teacher_epochs": 30,
        "gamma": 740.0,  # Keras Tuner search on the validation split (tuning/RESULTS.md)
        "weight_decay": 5e-4,
        "optimizer": "sgd",
        "augment": "crop_flip",
    },
    "tfds": {  # the paper's CIFAR recipe, for any TFDS image dataset
        "teacher_arch": "wrn-16-2",
        "student_arch": "wrn-16-1",
        "pairs": [("group3", "group3")],
        "batch_size": 128,
        "lr": 0.1,
        "schedule": "step",
        "epochs": 200,
        "teacher_epochs": 200,
        "gamma": 3000.0,
        "weight_decay": 5e-4,
        "optimizer": "sgd",
        "augment": "crop_flip",
    },
    "data": {  # a user's folder or .npz: small CNNs that fit any image size, Adam
        "teacher_arch": "fashion-cnn-16",
        "student_arch": "fashion-cnn-4",
        "pairs": "auto",
        "batch_size": 64,
        "optimizer": "adam",
        "schedule": "cosine",
        "epochs": 20,
        "teacher_epochs": 30,
        "lr": 0.05,
        "gamma": 1000.0,
        "weight_decay": 0.0,
        "augment": "none",
    },
}
PRESET_FIELDS = tuple(sorted({key for preset in PRESETS.values() for key in preset}))


def parse_pairs(value: Any, name: str = "pairs") -> list[tuple[str, str]] | str:
    """`"t:s,t2:s2"`, `[["t", "s"], ...]` or `"auto"` -> pairs (or `"auto"`)."""
    if isinstance(value, str):
        if value.strip() == "auto":
            return "auto"
        items = [item.strip().partition(":") for item in value.split(",")]
        if not all(sep and t and s and ":" not in s for t, sep, s in items):
            raise ConfigError(
                f"{name} expects TEACHER_LAYER:STUDENT_LAYER[,...] or 'auto'; received {value!r}."
            )
        return parse_pairs([[t, s] for t, _, s in items], name)
    if isinstance(value, (list, tuple)) and value:
        pairs = []
        for item in value:
            if (
                not isinstance(item, (list, tuple))
                or len(item) != 2
                or not all(isinstance(n, str) and n for n in item)
            ):
                raise ConfigError(
                    f"{name} expects (teacher layer, student layer) pairs of names, e.g. "
                    f'[["group3", "group3"]]; received {value!r}.'
                )
            pairs.append((item[0], item[1]))
        if len(set(pairs)) != len(pairs):
            raise ConfigError(f"{name} lists a pair twice: {value!r}.")
        return pairs
    raise ConfigError(
        f"{name} expects 'auto', 'T:S[,...]' or a list of [teacher, student] names; "
        f"received {value!r}."
    )


def _int(name: str, value: Any, low: int, high: int = 10**9) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer >= {low}; received {value!r}.")
    if value < low:
        raise ConfigError(f"{name} must be >= {low}; received {value}.")
    if value > high:
        raise ConfigError(f"{name} must be at most {high:,}; received {value}.")
    return int(value)


def _float(name: str, value: Any, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number; received {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite; received {value}.")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{name} must be {'> 0' if positive else '>= 0'}; received {value:g}.")
    return value


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; received {value!r}.")
    return value


@dataclass
class ExperimentConfig:
    """The settings of a distillation experiment; validated when built.

    Every command-line flag of `keras-spkd distill`, `compare` and `tune`
    maps one to one onto a field (`--batch-size` -> `batch_size`). `None`
    takes the dataset's preset (`PRESETS`).

    Args:
        dataset: `"digits"` (embedded), `"fashion_mnist"` or a TFDS name.
        data: A user's data instead: an image folder or an `.npz` file (its own
            preset, `PRESETS["data"]`; `dataset` then names it and may not be given).
        image_size: Resize every image to `[height, width]` (or one int for a
            square); the resize is part of the models' preprocessing.
        data_dir: Folder of prepared data (TFDS, or the Fashion-MNIST files).
        download: Allow downloading missing data. Defaults to `False`.
        train_images: Train on this many training images only: a stratified
            subset fixed by the split seed, the same for every training seed and
            every teacher (validation, test and the normalisation statistics are
            unchanged). Defaults to `None`: the whole training split.
        batch_size: Mini-batch size b (>= 2 when an SP term is on).
        seed: Seed of the split, initial weights and data order.
        optimizer: `"sgd"` (Nesterov momentum 0.9), `"adam"` or `"adamw"`.
        lr: Initial learning rate (adam and adamw: 1e-3 unless given).
        schedule: `"step"` (x0.2 at 30/60/80%), `"cosine"` or `"constant"`.
        weight_decay: Weight decay: L2 on the kernels of any model (zoo, file,
            application or builder; kernels with a regularizer of their own keep
            it), or AdamW's decoupled decay with `optimizer="adamw"`.
        jit: XLA-compile the training step.
        strategy: `"default"`, `"mirrored"` or `"multi_worker"` (`tf.distribute`).
        teacher: A trained teacher `.keras` file; `None` trains one (cached).
        teacher_arch, student_arch: Model specs: a zoo name (`wrn-16-2`), a
            `.keras` file, a keras.applications spec (`MobileNetV2(alpha=0.35)`)
            or a builder `package.module:function` (`keras_spkd.sources`).
        teacher_preprocessing, student_preprocessing: What a user's model
            needs in front: `"none"` (stored pixels as float), a
            keras.applications module (`"mobilenet_v2"`) or
            `"scale=S,offset=O"`. Default: the zoo's normalisation for zoo
            models, the application's own `preprocess_input` for
            keras.applications models, none for files and builders.
        keep_student_weights: A student file's weights start every seed
            (default: seeds after 0 re-initialise it, seeded).
        augment: `"none"`, `"crop"` (4-pixel padded crop) or `"crop_flip"`.
        teacher_epochs, epochs: Training epochs of the teacher and students.
        pairs: `[(teacher layer, student layer), ...]`, `"T:S,..."`, or `"auto"`
            (found by `keras_spkd.suggest_layer_pairs`).
        gamma: SP weight gamma (>= 0), one float or one per pair.
        kd_weight, temperature: Hinton KD weight (>= 0) and temperature (> 0).
        at_weight, at_pairs: Attention-transfer weight and pairs (compare).
        tflite: TFLite variants of the distilled student (float, dynamic, int8; all by default).
        explicit: The preset fields (`PRESET_FIELDS`) the user set; the others
            came from the dataset's preset. Defaults to `None`: the fields
            given a value here. Recorded in the files a run writes, so that
            `merge` can give those files another dataset.

    Example:

    >>> config = experiment.ExperimentConfig(dataset="digits", gamma=100.0, epochs=30)
    >>> config.batch_size
    64
    """

    dataset: str = "digits"
    data: str | None = None
    image_size: Any = None
    data_dir: str | None = None
    download: bool = False
    train_images: int | None = None
    batch_size: int | None = None
    seed: int = 0
    optimizer: str | None = None
    lr: float | None = None
    schedule: str | None = None
    weight_decay: float | None = None
    jit: bool = False
    strategy: str = "default"
    teacher: str | None = None
    teacher_arch: str | None = None
    teacher_epochs: int | None = None
    student_arch: str | None = None
    teacher_preprocessing: str | None = None
    student_preprocessing: str | None = None
    keep_student_weights: bool = False
    augment: str | None = None
    pairs: Any = None
    gamma: Any = None
    kd_weight: float = 0.0
    temperature: float = 4.0
    at_weight: float = 0.0
    at_pairs: Any = None
    epochs: int | None = None
    tflite: tuple[str, ...] = field(default=("float", "dynamic", "int8"))
    explicit: list[str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise ConfigError(f"dataset must be a non-empty name; received {self.dataset!r}.")
        if self.data is not None:
            if not isinstance(self.data, (str, os.PathLike)) or not os.fspath(self.data):
                raise ConfigError(f"data must be a path; received {self.data!r}.")
            self.data = os.fspath(self.data)
            label = Path(self.data).stem or self.data
            if self.dataset not in ("digits", label):
                raise ConfigError(
                    f"Give data (--data) or dataset (--dataset), not both; received data "
                    f"{self.data!r} and dataset {self.dataset!r}."
                )
            self.dataset = label
            preset = PRESETS["data"]
        else:
            preset = PRESETS.get(self.dataset, PRESETS["tfds"])
        if self.explicit is None:
            self.explicit = [key for key in PRESET_FIELDS if getattr(self, key) is not None]
        if not isinstance(self.explicit, (list, tuple)) or any(
            key not in PRESET_FIELDS for key in self.explicit
        ):
            raise ConfigError(
                f"explicit must list preset fields ({', '.join(PRESET_FIELDS)}); "
                f"received {self.explicit!r}."
            )
        self.explicit = sorted(set(self.explicit))
        for key, value in preset.items():
            if getattr(self, key) is None and key != "lr":
                setattr(self, key, value)
        self.optimizer = _choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.lr is None:  # a learning rate that suits the optimizer
            self.lr = preset["lr"] if self.optimizer == "sgd" else ADAPTIVE_LR
        self.augment = _choice("augment", self.augment, AUGMENTS)
        if self.image_size is not None:
            size = self.image_size
            size = [size] if isinstance(size, numbers.Integral) else size
            size = list(size) * 2 if isinstance(size, (list, tuple)) and len(size) == 1 else size
            if not isinstance(size, (list, tuple)) or len(size) != 2:
                raise ConfigError(
                    f"image_size must be one int or [height, width]; received {self.image_size!r}."
                )
            self.image_size = [_int("image_size", v, 4, 4096) for v in size]
        for name in ("teacher_preprocessing", "student_preprocessing"):
            value = getattr(self, name)
            if value is not None:
                from keras_spkd.preprocessing import parse_preprocessing

                parse_preprocessing(value)  # a bad one names itself now
        for name in ("download", "jit", "keep_student_weights"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"{name} must be true or false; received {getattr(self, name)!r}."
                )
        for name in ("data_dir", "teacher"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise ConfigError(f"{name} must be a path; received {value!r}.")
            if value is not None:
                if not os.fspath(value):
                    raise ConfigError(f"{name} must be a path; received an empty string.")
                setattr(self, name, os.fspath(value))
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ConfigError(f"data_dir {self.data_dir!r} is not a directory.")
        for name in ("teacher_arch", "student_arch"):
            from keras_spkd.sources import parse_model_spec

            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
                setattr(self, name, value)
            try:
                parse_model_spec(value)
            except ConfigError as error:
                raise ConfigError(f"{name}: {error}") from None
        self.batch_size = _int("batch_size", self.batch_size, 1)
        self.seed = _int("seed", self.seed, 0)
        self.epochs = _int("epochs", self.epochs, 1)
        if self.train_images is not None:
            self.train_images = _int("train_images", self.train_images, 2)
        self.teacher_epochs = _int("teacher_epochs", self.teacher_epochs, 1)
        self.lr = _float("lr", self.lr, positive=True)
        self.weight_decay = _float("weight_decay", self.weight_decay)
        self.kd_weight = _float("kd_weight", self.kd_weight)
        self.temperature = _float("temperature", self.temperature, positive=True)
        self.at_weight = _float("at_weight", self.at_weight)
        self.schedule = _choice("schedule", self.schedule, SCHEDULES)
        self.strategy = _choice("strategy", self.strategy, STRATEGIES)
        self.pairs = parse_pairs(self.pairs)
        if self.at_pairs is not None:
            self.at_pairs = parse_pairs(self.at_pairs, "at_pairs")
        gammas = self.gamma if isinstance(self.gamma, (list, tuple)) else [self.gamma]
        gammas = [_float("gamma", g) for g in gammas]
        if isinstance(self.gamma, (list, tuple)):
            if self.pairs != "auto" and len(gammas) != len(self.pairs):
                raise ConfigError(
                    f"gamma lists {len(gammas)} values but there are {len(self.pairs)} "
                    f"layer pairs {self.pairs}; give one gamma, or one per pair."
                )
            self.gamma = gammas
        else:
            self.gamma = gammas[0]
        if isinstance(self.tflite, str):
            self.tflite = (self.tflite,)
        if not isinstance(self.tflite, (list, tuple)):
            raise ConfigError(f"tflite must be a list of {TFLITE_MODES}; received {self.tflite!r}.")
        self.tflite = tuple(_choice("tflite", mode, TFLITE_MODES) for mode in self.tflite)
        if self.sp_on and self.batch_size < 2:
            raise ConfigError(
                f"batch_size must be >= 2 with SP on (G is b x b; with b = 1 it is always 1 "
                f"and SP is 0); received {self.batch_size}."
            )

    @property
    def sp_on(self) -> bool:
        gammas = self.gamma if isinstance(self.gamma, list) else [self.gamma]
        return any(g > 0 for g in gammas)

    @property
    def gamma_label(self) -> str:
        return (
            ",".join(f"{g:g}" for g in self.gamma)
            if isinstance(self.gamma, list)
            else f"{self.gamma:g}"
        )

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with `changes` applied (and validated), merged as `merge` does.

        Changed preset fields become explicit; with another `dataset`, the
        fields that only came from the old dataset's preset take the new one's.
        """
        return merge(self.to_dict(), changes)

    def to_dict(self) -> dict:
        """Plain JSON-ready values (pairs as lists)."""
        out = dataclasses.asdict(self)
        for key in ("pairs", "at_pairs"):
            if isinstance(out[key], list):
                out[key] = [list(pair) for pair in out[key]]
        out["tflite"] = list(out["tflite"])
        return out

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The config as JSON; written (atomically) to `path` when given."""
        from keras_spkd.summary import atomic_write_json

        if path is not None:
            atomic_write_json(path, self.to_dict())
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Any) -> ExperimentConfig:
        """Builds a config from a dict; unknown keys are refused, naming the closest.

        Raises:
            ConfigError: Not a dict, unknown keys, or bad values.
        """
        if not isinstance(values, dict):
            raise ConfigError(
                f"A config must be a JSON object of settings; received a {type(values).__name__}."
            )
        names = cls.field_names()
        unknown = [key for key in values if key not in names]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), names, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(
                f"Unknown config key(s): {', '.join(hints)}. Valid keys: {', '.join(names)}."
            )
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> ExperimentConfig:
        """Reads a config file (e.g. `best_config.json` of a search)."""
        return cls.from_dict(read_settings(path))


def read_settings(path: str | os.PathLike) -> dict:
    """A config file's settings as written (not yet merged or validated).

    The file is a JSON object of `ExperimentConfig` fields (`best_config.json`,
    `ExperimentConfig.to_json`, or written by hand) or a run directory's
    `config.json` record, whose settings are its `config` object: a finished
    run's settings start another command (`--config runs/x/config.json`).

    Raises:
        ConfigError: Unreadable, not JSON, or not a JSON object.
    """
    try:
        values = json.loads(Path(path).read_text())
    except OSError as error:
        raise ConfigError(f"Cannot read config file {str(path)!r}: {error.strerror}.") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"Config file {str(path)!r} is not valid JSON: {error}.") from error
    if not isinstance(values, dict):
        raise ConfigError(
            f"A config must be a JSON object of settings; received a {type(values).__name__}."
        )
    if "kind" in values and isinstance(values.get("config"), dict):  # a run's record
        return values["config"]
    return values


def merge(*layers: dict | None) -> ExperimentConfig:
    """One config from layers of settings, later layers winning field by field.

    The dataset's preset is the bottom layer; then, typically, a config file
    and the command line's flags. A layer that records `explicit` (the files
    keras-spkd writes hold every field, presets filled in) contributes only
    its explicit preset fields when the merged dataset is another one than
    its own: a digits `best_config.json` used with `dataset="fashion_mnist"`
    keeps its gamma and takes Fashion-MNIST's architectures and epochs. A
    layer without `explicit` (a file written by hand) sets every field it has.

    Args:
        *layers: Dicts of `ExperimentConfig` fields (`None` skipped).

    Returns:
        The validated `ExperimentConfig`.

    Raises:
        ConfigError: A layer is not a dict, has unknown keys, or the merged
            values are invalid.
    """
    layers = [layer for layer in layers if layer is not None]
    for layer in layers:
        if not isinstance(layer, dict):
            raise ConfigError(
                f"A config must be a JSON object of settings; received a {type(layer).__name__}."
            )
    for layer in layers:
        if layer.get("data") is not None and "dataset" in layer and "explicit" not in layer:
            raise ConfigError(
                "Give data (--data) or dataset (--dataset), not both; received data "
                f"{layer['data']!r} and dataset {layer['dataset']!r}."
            )
    dataset = next((layer["dataset"] for layer in reversed(layers) if "dataset" in layer), None)
    values: dict[str, Any] = {}
    explicit: set[str] = set()
    for layer in layers:
        layer = dict(layer)
        marked = layer.pop("explicit", None)
        if marked is None:
            marked = [key for key in layer if key in PRESET_FIELDS and layer[key] is not None]
        elif not isinstance(marked, (list, tuple)):
            raise ConfigError(f"explicit must be a list of field names; received {marked!r}.")
        elif layer.get("dataset", dataset) != dataset:  # another dataset: its preset, not ours
            layer = {k: v for k, v in layer.items() if k not in PRESET_FIELDS or k in marked}
        explicit |= {key for key in marked if key in layer}
        values.update(layer)
    return ExperimentConfig.from_dict({**values, "explicit": sorted(explicit)})


IGNORED_IN_DIFFERENCES = ("explicit",)  # where a value came from, not what it is


def differences(saved: dict, given: dict) -> list[str]:
    """`"key: saved X, given Y"` for each setting that differs.

    A changed `data_fingerprint` (files of a folder or an .npz added, removed or
    edited) is said in words: the hashes alone do not tell a user what changed.
    """
    out = []
    for key in sorted(set(saved) | set(given)):
        if key in IGNORED_IN_DIFFERENCES or saved.get(key) == given.get(key):
            continue
        if key.rsplit(".", 1)[-1] == "data_fingerprint":
            out.append(
                "the data changed since the run started (files added, removed or edited: "
                f"fingerprint saved {saved.get(key)!r}, now {given.get(key)!r})"
            )
        else:
            out.append(f"{key}: saved {_shown(saved.get(key))}, given {_shown(given.get(key))}")
    return out


def _shown(value: Any) -> str:
    """A setting as a user wrote it: unset, true/false, else Python's repr."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)
