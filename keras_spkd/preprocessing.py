"""A model's preprocessing as one Keras layer: stored pixels in, model input out.

The same `Preprocessing` object serves training, evaluation and export (the
pattern of KerasHub's image converters): the workflow puts it in front of a
model, so the trained model, its `.keras` file and its SavedModel all take
images as they are stored. It does, in order:

1. cast to float32;
2. resize to `image_size` (when set; `--image-size`), so an export resizes
   raw images exactly as training did;
3. normalise: `(x * scale - mean) / std` per channel (the zoo's recipe, and a
   user's "scale and offset": `mean = -offset`, `std = 1`), or a named
   `keras.applications` module's own `preprocess_input` (`"mobilenet_v2"`).

With none of these it only casts: a user's model gets the stored pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from keras_spkd.errors import ConfigError


def _vector(name: str, value) -> list[float]:
    values = np.asarray(value, "float64").ravel().tolist()
    if not values or not np.all(np.isfinite(values)):
        raise ConfigError(f"Preprocessing {name} must be finite numbers; received {value!r}.")
    return values


def application_preprocess(name: str):
    """`keras.applications.<name>.preprocess_input`, or a `ConfigError` naming the choices."""
    module = getattr(keras.applications, name, None)
    function = getattr(module, "preprocess_input", None)
    if not name.isidentifier() or function is None:
        known = sorted(
            n
            for n in dir(keras.applications)
            if hasattr(getattr(keras.applications, n), "decode_predictions")
        )
        raise ConfigError(
            f"Unknown preprocessing {name!r}: expected 'none', 'scale=S,offset=O' or a "
            f"keras.applications module with preprocess_input ({', '.join(known)})."
        )
    return function


@keras.saving.register_keras_serializable(package="keras_spkd")
class Preprocessing(keras.layers.Layer):
    """Stored images -> model input: cast, optional resize, normalisation.

    Args:
        scale: Multiplies the pixels (one value, or one per channel). Defaults to `1.0`.
        mean: Subtracted after scaling. Defaults to `0.0`.
        std: Divides after that (> 0). Defaults to `1.0`.
        application: A `keras.applications` module whose `preprocess_input`
            normalises instead (e.g. `"mobilenet_v2"`). Defaults to `None`.
        image_size: `(height, width)` to resize to (bilinear). Defaults to `None`.

    Example:

    >>> layer = keras_spkd.Preprocessing(scale=1 / 255)
    >>> layer(np.full((1, 2, 2, 1), 255, "uint8"))  # 1.0 everywhere
    """

    def __init__(
        self,
        scale: float | Sequence[float] = 1.0,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
        application: str | None = None,
        image_size: Sequence[int] | None = None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("name", "preprocessing")
        super().__init__(**kwargs)
        self.scale = _vector("scale", scale)
        self.mean = _vector("mean", mean)
        self.std = _vector("std", std)
        if any(s <= 0 for s in self.std) or any(s == 0 for s in self.scale):
            raise ConfigError(
                f"Preprocessing needs a non-zero scale and a positive std; received "
                f"scale={self.scale}, std={self.std}."
            )
        self.application = application
        if application is not None:
            application_preprocess(application)
        self.image_size = None if image_size is None else tuple(int(s) for s in image_size)
        self.supports_masking = False

    @property
    def normalises(self) -> bool:
        """Whether it does more than cast (and resize)."""
        return self.application is not None or (self.scale, self.mean, self.std) != (
            [1.0],
            [0.0],
            [1.0],
        )

    def resize(self, images):
        """Cast to float32 and resize to `image_size` (rank 3 or 4)."""
        images = keras.ops.cast(images, "float32")
        if self.image_size is None:
            return images
        if tuple(images.shape[-3:-1]) == self.image_size:
            return images
        return keras.ops.image.resize(images, self.image_size, interpolation="bilinear")

    def normalize(self, images):
        """Float pixels (stored units) -> model input."""
        images = keras.ops.cast(images, "float32")
        if self.application is not None:
            return application_preprocess(self.application)(images)
        if not self.normalises:
            return images
        scale = np.asarray(self.scale, "float32")
        mean = np.asarray(self.mean, "float32")
        std = np.asarray(self.std, "float32")
        return (images * scale - mean) / std

    def call(self, images):
        return self.normalize(self.resize(images))

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        if self.image_size is not None:
            shape[-3:-1] = self.image_size
        return tuple(shape)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "scale": self.scale,
            "mean": self.mean,
            "std": self.std,
            "application": self.application,
            "image_size": None if self.image_size is None else list(self.image_size),
        }

    def describe(self) -> dict:
        """What it does, for summaries: `{"scale", "mean", "std", "application", "image_size"}`."""
        config = self.get_config()
        return {key: config[key] for key in ("scale", "mean", "std", "application", "image_size")}


def parse_preprocessing(text: str | None) -> dict | None:
    """A declared preprocessing -> `Preprocessing` arguments (`None` for "not declared").

    `"none"` casts only; `"mobilenet_v2"` (any keras.applications module) uses
    its `preprocess_input`; `"scale=0.00392,offset=-0.5"` computes `x * scale + offset`.
    """
    if text is None:
        return None
    text = str(text).strip()
    if text == "none":
        return {}
    if "=" in text:
        values = {}
        for item in text.split(","):
            key, _, value = item.partition("=")
            key = key.strip()
            if key not in ("scale", "offset") or key in values:
                raise ConfigError(
                    f"Preprocessing {text!r}: expected scale=S,offset=O (either may be left out)."
                )
            try:
                values[key] = float(eval_number(value))
            except ValueError as error:
                raise ConfigError(f"Preprocessing {text!r}: {error}") from error
        return {"scale": values.get("scale", 1.0), "mean": -values.get("offset", 0.0)}
    application_preprocess(text)
    return {"application": text}


def eval_number(text: str) -> float:
    """`"0.5"`, `"1/255"` -> a float (a fraction of two numbers at most)."""
    numerator, _, denominator = text.strip().partition("/")
    try:
        value = float(numerator) / (float(denominator) if denominator else 1.0)
    except (ValueError, ZeroDivisionError) as error:
        raise ValueError(f"{text!r} is not a number") from error
    if not np.isfinite(value):
        raise ValueError(f"{text!r} is not finite")
    return value


def find_preprocessing(model: keras.Model) -> Preprocessing | None:
    """The `Preprocessing` layer a model starts with, if it has one."""
    for layer in model.layers:
        if isinstance(layer, Preprocessing):
            return layer
    return None


def with_preprocessing(model: keras.Model, layer: Preprocessing, input_dtype="float32"):
    """A copy of `model` (same layer names and weights) with `layer` in front.

    The copy's input takes stored images (any height and width when `layer`
    resizes). Layers are re-created (`keras.models.clone_model`), so the copy
    shares no state with `model`.
    """
    if isinstance(model, keras.Sequential):  # clone_model's call_function needs a functional
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    channels = model.inputs[0].shape[-1]
    shape = (None, None, channels) if layer.image_size else tuple(model.inputs[0].shape[1:])
    images = keras.Input(shape, dtype=input_dtype, name="images")
    preprocessed = {}

    def call(inner, *args, **kwargs):
        if args and args[0] is images:
            if "x" not in preprocessed:
                preprocessed["x"] = layer(images)
            args = (preprocessed["x"], *args[1:])
        return inner(*args, **kwargs)

    try:
        copy = keras.models.clone_model(model, input_tensors=images, call_function=call)
    except ValueError:  # a model whose input is a list of one
        copy = keras.models.clone_model(model, input_tensors=[images], call_function=call)
    copy.set_weights(model.get_weights())
    return copy
