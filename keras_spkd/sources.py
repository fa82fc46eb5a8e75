"""Models from anywhere: a zoo name, a `.keras` file, a keras.applications spec, a builder.

A *model spec* is the text a user gives for a teacher or a student:

- a zoo name: `wrn-16-2`, `fashion-cnn-4`, `digits-cnn-8`;
- a `.keras` file: `my_student.keras` (its architecture and initial weights);
- a `keras.applications` model with its arguments: `MobileNetV2(alpha=0.35)`.
  Unless given, `weights=None`, `classes` from the data and
  `classifier_activation=None` (logits). With `weights="imagenet"` the
  backbone comes without its top (`pooling="avg"`) and gets a new dense head
  for the data's classes;
- a Python builder `package.module:function`, called as
  `function(input_shape, classes)` and returning a functional `keras.Model`.

Tables and summaries name a model by `label(spec)`: the file's name or the
spec as given, never a default the user did not choose.
"""

from __future__ import annotations

import ast
import importlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import keras

from keras_spkd.errors import ConfigError, DataError
from keras_spkd.models import ARCHITECTURES, build_model, is_zoo_name
from keras_spkd.preprocessing import Preprocessing  # noqa: F401 - registered for load_model

FORMS = (
    f"a zoo name ({', '.join(ARCHITECTURES)}), a .keras file, a keras.applications model "
    "with its arguments (e.g. 'MobileNetV2(alpha=0.35)') or a builder 'package.module:function'"
)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    Attributes:
        kind: `"zoo"`, `"file"`, `"application"` or `"builder"`.
        text: The spec as the user gave it.
        name: Zoo name, file path, application class or `module:function`.
        kwargs: The application's arguments.
    """

    kind: str
    text: str
    name: str
    kwargs: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """What tables call the model: a file's name, otherwise the spec as given."""
        return Path(self.name).name if self.kind == "file" else self.text


def _application(text: str) -> ModelSpec | None:
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None
    if isinstance(tree, ast.Name):
        name, kwargs = tree.id, {}
    elif isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and not tree.args:
        name = tree.func.id
        try:
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in tree.keywords}
        except ValueError as error:
            raise ConfigError(
                f"Model {text!r}: arguments must be literals (numbers, strings, tuples)."
            ) from error
        if None in kwargs:
            raise ConfigError(f"Model {text!r}: use name=value arguments only.")
    else:
        return None
    if not callable(getattr(keras.applications, name, None)) or not name[:1].isupper():
        return None
    return ModelSpec("application", text.strip(), name, kwargs)


def parse_model_spec(text) -> ModelSpec:
    """Parses a model spec (see the module docstring); `ConfigError` names the forms."""
    if isinstance(text, os.PathLike):
        text = os.fspath(text)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"A model must be {FORMS}; received {text!r}.")
    text = text.strip()
    if text.endswith(".keras"):
        return ModelSpec("file", text, text)
    if is_zoo_name(text):
        return ModelSpec("zoo", text, text)
    module, sep, function = text.partition(":")
    if (
        sep
        and module
        and function.isidentifier()
        and all(part.isidentifier() for part in module.split("."))
    ):
        return ModelSpec("builder", text, text)
    spec = _application(text)
    if spec is not None:
        return spec
    raise ConfigError(f"Unknown model {text!r}: expected {FORMS}.")


def load_model_file(path: str | os.PathLike, what: str = "Model file") -> keras.Model:
    """`keras.saving.load_model` with clear errors for missing and invalid files."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            raise DataError(
                f"{what} {str(path)!r} is a SavedModel folder (an export, for serving); this "
                "command takes a .keras file, such as a run's sp/student.keras."
            )
        raise DataError(f"{what} {str(path)!r} is a directory; expected a .keras file.")
    if not path.is_file():
        raise DataError(f"{what} {str(path)!r} does not exist.")
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"{what} {str(path)!r} exists but is not a valid .keras archive (truncated, or "
            "another format); save models with `model.save('name.keras')`."
        )
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, TypeError, OSError, KeyError, zipfile.BadZipFile) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        first = first.split(". Make sure custom classes")[0]  # the rest repeats the config
        hint = ""
        if "Could not locate class" in str(error) or "custom_objects" in str(error):
            hint = (
                " A subclassed or custom model loads only where its classes are registered "
                "(keras.saving.register_keras_serializable); save a functional model instead."
            )
        raise DataError(f"{what} {str(path)!r} could not be loaded: {first}.{hint}") from error


def _functional(model, spec: ModelSpec, role: str) -> keras.Model:
    if not isinstance(model, keras.Model):
        raise ConfigError(
            f"The {role} {spec.label!r} is a {type(model).__name__}, not a keras.Model."
        )
    try:
        model.inputs, model.outputs  # noqa: B018 - subclassed models have neither
    except (AttributeError, ValueError):
        raise ConfigError(
            f"The {role} {spec.label!r} is a subclassed model without a symbolic graph; "
            "build it with the functional API or keras.Sequential (with keras.Input)."
        ) from None
    if not model.inputs or not model.outputs or len(model.inputs) != 1:
        raise ConfigError(
            f"The {role} {spec.label!r} needs one image input and a class output "
            f"(functional or Sequential with keras.Input)."
        )
    return model


def _application_model(spec: ModelSpec, input_shape, num_classes: int) -> keras.Model:
    factory = getattr(keras.applications, spec.name)
    kwargs = {"weights": None, "input_shape": tuple(input_shape), **spec.kwargs}
    try:
        if kwargs["weights"] is None:
            kwargs.setdefault("classes", num_classes)
            kwargs.setdefault("classifier_activation", None)
            return factory(**kwargs)
        kwargs.update(include_top=False, pooling=kwargs.get("pooling") or "avg")
        backbone = factory(**kwargs)
    except (ValueError, TypeError) as error:  # bad arguments, e.g. alpah=0.35
        raise ConfigError(f"Model {spec.text!r}: {error}") from error
    except Exception as error:  # get_file raises a bare Exception offline
        if (
            "fetch" in str(error).lower()
            or "url" in str(error).lower()
            or isinstance(error, OSError)
        ):
            raise DataError(
                f"Model {spec.text!r}: the weights {kwargs['weights']!r} cannot be downloaded "
                "(no network?); put them in Keras's cache (~/.keras/models) or use weights=None."
            ) from error
        raise
    logits = keras.layers.Dense(num_classes, name="logits")(backbone.outputs[0])
    return keras.Model(backbone.inputs, logits, name=f"{backbone.name}_head")


def _builder_model(spec: ModelSpec, input_shape, num_classes: int):
    module_name, _, function_name = spec.name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"Model {spec.text!r}: cannot import {module_name!r} ({error}); a module of your "
            "own must be on the import path (e.g. PYTHONPATH=. for one in this folder)."
        ) from error
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"Model {spec.text!r}: {module_name} has no function {function_name!r}.")
    try:
        return function(tuple(input_shape), num_classes)
    except Exception as error:  # the user's code: say whose error it is, in one line
        raise ConfigError(
            f"Model {spec.text!r}: {function_name}{(tuple(input_shape), num_classes)} raised "
            f"{type(error).__name__}: {error}"
        ) from error


def build_from_spec(
    spec: ModelSpec | str,
    input_shape,
    num_classes: int,
    role: str = "model",
    weight_decay: float = 0.0,
    name: str | None = None,
) -> keras.Model:
    """Builds (or loads) the model `spec` names, checked to be functional.

    Zoo models get `weight_decay` and `name`; files are loaded as they are;
    applications and builders are called with `input_shape` and `num_classes`.
    """
    if not isinstance(spec, ModelSpec):
        spec = parse_model_spec(spec)
    if spec.kind == "zoo":
        try:
            return build_model(
                spec.name, tuple(input_shape), num_classes, weight_decay=weight_decay, name=name
            )
        except ValueError as error:
            raise ConfigError(f"{role}: {error}") from error
    if spec.kind == "file":
        model = load_model_file(spec.name, f"The {role} file")
    elif spec.kind == "application":
        model = _application_model(spec, input_shape, num_classes)
    else:
        model = _builder_model(spec, input_shape, num_classes)
    return _functional(model, spec, role)


def add_weight_decay(model: keras.Model, weight_decay: float) -> int:
    """L2 weight decay on the kernels of a model keras-spkd did not build.

    The zoo's models carry `L2(weight_decay / 2)` on their kernels (coupled decay,
    as SGD's weight decay). A file, a `keras.applications` model or a builder's
    model gets the same on every kernel that has no regularizer of its own, so
    that `weight_decay` means one thing whatever the model. Returns how many
    kernels got it.
    """
    if not weight_decay:
        return 0
    count = 0
    for variable in model.trainable_variables:
        if variable.path.rsplit("/", 1)[-1].endswith("kernel") and variable.regularizer is None:
            variable.regularizer = keras.regularizers.L2(weight_decay / 2)
            count += 1
    return count


def reinitialise(model: keras.Model) -> keras.Model:
    """A copy of `model` with fresh weights from its own initializers (Keras's seed)."""
    return keras.models.clone_model(model)


def outputs_probabilities(model: keras.Model) -> bool:
    """Whether the model's output is a softmax (probabilities), not logits."""
    layer = model.layers[-1] if model.layers else None
    activation = getattr(layer, "activation", None)
    if isinstance(layer, keras.layers.Softmax):
        return True
    name = getattr(activation, "__name__", None)
    return name == "softmax"


def model_label(config: dict, role: str) -> str:
    """What the user gave for the teacher or student (a file's name, or the spec)."""
    if role == "teacher" and config.get("teacher"):
        return Path(config["teacher"]).name
    text = config.get(f"{role}_arch")
    try:
        return parse_model_spec(text).label
    except ConfigError:
        return str(text)
