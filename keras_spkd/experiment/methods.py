"""Methods of `run_compare`: lists of weighted distillation terms, parsed once.

A method is a name and its terms; a term is a built-in (`sp`, `kd`, `at`) or
a user's `keras.distillation.DistillationLoss` subclass named by import path
(`package.module:Class`), with its settings and its weight. What the user
writes (`"sp+kd"`, `"sp+my_terms:MyTerm@0.5"`, or a dict) is parsed once into
a `Method`; `Method.terms(config)` gives the concrete terms of a run (SP and
AT one per layer pair, weights from the config unless the term has its own),
and `build_method_model` the model that trains them. A new term needs no
change here, in the config or in the CLI.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import keras

from keras_spkd.distiller import SPDistiller
from keras_spkd.errors import ConfigError
from keras_spkd.experiment.config import ExperimentConfig
from keras_spkd.experiment.training import trainable
from keras_spkd.terms import (
    AttentionTransferDistillation,
    KnowledgeDistillation,
    SimilarityPreservingDistillation,
)

TERMS = ("sp", "kd", "at")
_TERM_KEYS = ("class", "config", "weight")
_BUILTIN_SETTINGS = {"sp": (), "kd": ("temperature",), "at": ()}


@dataclass(frozen=True)
class TermSpec:
    """One term of a method, as the user wrote it (checked, not yet built).

    Attributes:
        kind: `"sp"`, `"kd"`, `"at"`, or a user's `keras.distillation.DistillationLoss`
            subclass as `"package.module:Class"`.
        settings: The term's settings: keyword arguments of a user's class; for
            `kd`, optionally `{"temperature": T}`.
        weight: The term's weight; `None` takes the config's (`gamma`,
            `kd_weight`, `at_weight`; 1 for a user's term).
    """

    kind: str
    settings: dict = field(default_factory=dict)
    weight: float | None = None

    def to_dict(self) -> dict:
        out: dict = {"class": self.kind}
        if self.settings:
            out["config"] = dict(self.settings)
        if self.weight is not None:
            out["weight"] = self.weight
        return out


@dataclass(frozen=True)
class Term:
    """One concrete, weighted term of a run: what the distiller is given."""

    kind: str
    weight: float
    layers: tuple[str, str] | None = None
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out: dict = {"class": self.kind, "weight": self.weight}
        if self.layers:
            out["layers"] = list(self.layers)
        if self.settings:
            out["config"] = dict(self.settings)
        return out

    def build(self):
        """The `keras.distillation.DistillationLoss` object of this term."""
        cls = BUILTIN_CLASSES.get(self.kind) or _import_term(self.kind)
        return cls(*(self.layers or ()), **self.settings)


def _sp_terms(spec: TermSpec, config: ExperimentConfig) -> list[Term]:
    """One SP term per layer pair, weighted by gamma (one per pair) or the term's weight."""
    gammas = config.gamma if isinstance(config.gamma, list) else [config.gamma] * len(config.pairs)
    return [
        Term("sp", gamma if spec.weight is None else spec.weight, tuple(pair))
        for pair, gamma in zip(config.pairs, gammas)
    ]


def _kd_terms(spec: TermSpec, config: ExperimentConfig) -> list[Term]:
    weight = config.kd_weight if spec.weight is None else spec.weight
    return [Term("kd", weight, settings={"temperature": config.temperature, **spec.settings})]


def _at_terms(spec: TermSpec, config: ExperimentConfig) -> list[Term]:
    """One AT term per AT pair (the SP pairs unless `at_pairs` is given)."""
    pairs = config.pairs if config.at_pairs in (None, "auto") else config.at_pairs
    weight = config.at_weight if spec.weight is None else spec.weight
    return [Term("at", weight, tuple(pair)) for pair in pairs]


def _user_terms(spec: TermSpec, config: ExperimentConfig) -> list[Term]:
    return [Term(spec.kind, 1.0 if spec.weight is None else spec.weight, None, spec.settings)]


BUILTIN_CLASSES = {
    "sp": SimilarityPreservingDistillation,
    "kd": KnowledgeDistillation,
    "at": AttentionTransferDistillation,
}
_BUILTIN_TERMS = {"sp": _sp_terms, "kd": _kd_terms, "at": _at_terms}


@dataclass(frozen=True)
class Method:
    """A method of `run_compare`: a name and its list of terms (none: the student alone).

    Parsed once from what the user wrote (`parse_method`); `terms(config)`
    gives the concrete weighted terms of a run.
    """

    name: str
    specs: tuple[TermSpec, ...] = ()

    def uses(self, kind: str, config_weight: bool = False) -> bool:
        """Whether a term of `kind` is on (with `config_weight`: one weighted by the config)."""
        return any(
            spec.kind == kind and (spec.weight is None or not config_weight) for spec in self.specs
        )

    def to_dict(self) -> dict:
        return {"name": self.name, "terms": [spec.to_dict() for spec in self.specs]}

    def terms(self, config: ExperimentConfig) -> list[Term]:
        """The concrete terms: SP and AT one per layer pair, weights filled in from `config`."""
        return [
            term
            for spec in self.specs
            for term in _BUILTIN_TERMS.get(spec.kind, _user_terms)(spec, config)
        ]

    def label(self, config: ExperimentConfig) -> str:
        """`"sp@100 + kd@1 (T=4)"`: the terms with their weights, for tables."""
        parts = []
        for term in self.terms(config):
            text = f"{term.kind}@{term.weight:.4g}"
            if term.kind == "kd":
                text += f" (T={term.settings['temperature']:.4g})"
            if text not in parts:
                parts.append(text)
        return " + ".join(parts) or "task loss only"


def _import_term(path: str):
    """`"package.module:Class"` -> the class, which must subclass DistillationLoss."""
    module_name, _, class_name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"Term {path!r} cannot be imported: {error}.") from error
    if not (isinstance(cls, type) and issubclass(cls, keras.distillation.DistillationLoss)):
        raise ConfigError(f"Term {path!r} is not a keras.distillation.DistillationLoss subclass.")
    return cls


def _weight(value, where: str) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: a weight must be a finite number; received {value!r}.")
    if value <= 0:
        raise ConfigError(f"{where}: a weight must be > 0; received {value!r}.")
    return float(value)


def _parse_term(value, method: str) -> TermSpec:
    """`"sp"`, `"kd@0.5"`, `"pkg.mod:Class@2"` or `{"class", "config", "weight"}` -> TermSpec."""
    where = f"Method {method!r}"
    if isinstance(value, str):
        kind, at, weight = value.strip().partition("@")
        value = {"class": kind, **({"weight": weight} if at else {})}
    if not isinstance(value, dict) or "class" not in value:
        raise ConfigError(
            f"{where}: a term is a name (sp, kd, at, or package.module:Class[@weight]) or "
            f'{{"class": ..., "config": {{...}}, "weight": w}}; received {value!r}.'
        )
    unknown = sorted(set(value) - set(_TERM_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown term key(s) {unknown}; allowed: {list(_TERM_KEYS)}.")
    kind, settings = value["class"], value.get("config") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: a term's config must be a dict; received {settings!r}.")
    if kind in _BUILTIN_SETTINGS:
        extra = sorted(set(settings) - set(_BUILTIN_SETTINGS[kind]))
        if extra:
            raise ConfigError(
                f"{where}: term {kind!r} takes no setting {extra} (its layers and weight come "
                "from the config)."
            )
        if "temperature" in settings:
            settings = {"temperature": _weight(settings["temperature"], f"{where} temperature")}
    elif isinstance(kind, str) and ":" in kind and all(kind.partition(":")[::2]):
        _import_term(kind)
    else:
        raise ConfigError(
            f"Unknown method {method!r} (term {kind!r}); use 'alone' or '+'-joined terms of "
            f"{TERMS} or package.module:Class[@weight], e.g. alone,kd,at,sp,sp+kd."
        )
    weight = value.get("weight")
    return TermSpec(kind, settings, None if weight is None else _weight(weight, where))


def parse_method(value) -> Method:
    """One method: `"alone"`, `"sp+kd"`, `"sp+pkg.mod:Class@0.5"`, a dict or a `Method`.

    A dict is `{"name": "mine", "terms": [term, ...]}`, each term a string as
    above or `{"class": "pkg.mod:Class", "config": {...}, "weight": 0.5}`.
    """
    if isinstance(value, Method):
        return value
    if isinstance(value, str):
        name = value.strip()
        terms = [] if name == "alone" else name.split("+")
    elif isinstance(value, dict):
        unknown = sorted(set(value) - {"name", "terms"})
        if unknown or not isinstance(value.get("name"), str) or not value["name"]:
            raise ConfigError(
                f'A method given as a dict is {{"name": ..., "terms": [...]}}; received {value!r}.'
            )
        name, terms = value["name"], value.get("terms") or []
        if not isinstance(terms, list):
            raise ConfigError(f"Method {name!r}: terms must be a list; received {terms!r}.")
    else:
        raise ConfigError(f"A method is a name or a dict; received {value!r}.")
    specs = tuple(_parse_term(term, name) for term in terms)
    if not specs and name != "alone" and isinstance(value, str):
        raise ConfigError(f"Unknown method {name!r}; use 'alone' or '+'-joined terms of {TERMS}.")
    builtin = [spec.kind for spec in specs if spec.kind in TERMS]
    if len(set(builtin)) != len(builtin):  # sp is already one term per layer pair
        raise ConfigError(f"Method {name!r} lists a built-in term twice.")
    return Method(name, specs)


def parse_methods(methods) -> list[Method]:
    """`"alone,kd,sp+kd"`, a `.json` file holding a list, or a sequence -> methods (checked)."""
    if isinstance(methods, str) and methods.strip().endswith(".json"):
        path = Path(methods.strip())
        try:
            methods = json.loads(path.read_text())
        except OSError as error:
            raise ConfigError(
                f"Cannot read methods file {str(path)!r}: {error.strerror}."
            ) from error
        except json.JSONDecodeError as error:
            raise ConfigError(f"Methods file {str(path)!r} is not valid JSON: {error}.") from error
        if not isinstance(methods, list):
            raise ConfigError(f"Methods file {str(path)!r} must hold a JSON list of methods.")
    elif isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = [parse_method(m) for m in (methods or [])]
    if not methods:
        raise ConfigError("methods lists no method; e.g. alone,kd,sp,sp+kd.")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"methods lists a method twice: {names}.")
    return methods


def check_weights(methods: list[Method], config: ExperimentConfig) -> None:
    """A built-in term weighted 0 by the config would silently be the student alone: refused."""
    fields = {"sp": "gamma", "kd": "kd_weight", "at": "at_weight"}
    on = {"sp": config.sp_on, "kd": config.kd_weight > 0, "at": config.at_weight > 0}
    for method in methods:
        for spec in method.specs:  # a term's own weight is > 0 (checked when parsed)
            if spec.kind in fields and spec.weight is None and not on[spec.kind]:
                raise ConfigError(
                    f"Method {method.name!r}: term {spec.kind!r} needs {fields[spec.kind]} > 0; "
                    f"received {fields[spec.kind]} 0."
                )


def build_method_model(method: Method, teacher, student, config: ExperimentConfig):
    """The model a method trains: the student itself, or an `SPDistiller` over its terms."""
    terms = method.terms(config)
    if not terms:
        return trainable(student)
    return SPDistiller(
        teacher,
        student,
        distillation_losses=[term.build() for term in terms],
        distillation_loss_weights=[term.weight for term in terms],
        cross_replica=True,
    )
