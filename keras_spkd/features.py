"""Tap intermediate layers of a model as one functional sub-model.

The extractor returns `[*features, predictions]` from a single forward pass
that shares the model's layers (and so its weights and BatchNorm state).
Layers inside a nested sub-model are named by a path, `"backbone/conv5"`:
the nested model is rerouted through an extractor of its own, since its inner
layers are not reachable from the outer graph (keras #16123).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import keras


class NotAModelError(TypeError, ValueError):
    """A teacher or student that is not a `keras.Model`.

    Both a `TypeError` (what it is) and a `ValueError` (what
    `keras.distillation.Distiller` raises for it), so code written for either
    catches it.
    """


def check_model(model, role: str = "model") -> keras.Model:
    """Returns `model` if it is a `keras.Model`; raises `NotAModelError` otherwise."""
    if not isinstance(model, keras.Model):
        raise NotAModelError(
            f"Expected the {role} to be a keras.Model; received {type(model).__name__} "
            f"({model!r:.80})."
        )
    return model


def graph_inputs(model: keras.Model, role: str = "model") -> list:
    """Returns `model.inputs`, or raises a clear error if it has no graph."""
    check_model(model, role)
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        kind = "Sequential" if isinstance(model, keras.Sequential) else "subclassed"
        hint = (
            "start it with keras.Input(shape) or call model.build(input_shape)"
            if kind == "Sequential"
            else "rebuild it as a functional model (keras.Model(inputs, outputs)) "
            "so its intermediate layers can be tapped"
        )
        raise ValueError(
            f"The {role} {model.name!r} is a {kind} model with no symbolic "
            f"graph, so its layers cannot be tapped: {hint}."
        )
    return inputs


def layer_paths(model: keras.Model) -> list[str]:
    """Lists every tappable layer name, nested layers as `"outer/inner"`.

    Args:
        model: A `keras.Model`; nested functional or Sequential models are
            listed by their own name and, inside, by path.

    Returns:
        Layer names in the model's order, input layers left out.

    Example:

    >>> inputs = keras.Input((8, 8, 1))
    >>> outer = keras.Model(inputs, keras.layers.Dense(3, name="head")(teacher(inputs)))
    >>> keras_spkd.layer_paths(outer)
    ['t', 't/t_conv1', 't/t_group3', 't/t_pool', 't/t_logits', 'head']
    """
    paths = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        paths.append(layer.name)
        if isinstance(layer, keras.Model) and _has_graph(layer):
            paths.extend(f"{layer.name}/{inner}" for inner in layer_paths(layer))
    return paths


def checked_layer_name(model: keras.Model, name: str, role: str = "model") -> str:
    """Returns `name` if `model` has that (possibly nested) layer.

    Raises:
        ValueError: No such layer; the message suggests the closest names
            (`keras-spkd layers` lists them all).
    """
    available = layer_paths(model)
    if name in available:
        return name
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
    hint = (
        f"Did you mean {' or '.join(repr(c) for c in close)}?"
        if close
        else f"It has {len(available)} layers, from {available[0]!r} to {available[-1]!r}."
        if available
        else "It has no layers."
    )
    raise ValueError(
        f"The {role} {model.name!r} has no layer {name!r}. {hint} "
        "(`keras_spkd.layer_paths(model)` or `keras-spkd layers MODEL` lists them all.)"
    )


def _has_graph(model: keras.Model) -> bool:
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def _single(tensors: Sequence):
    return tensors[0] if len(tensors) == 1 else list(tensors)


def build_feature_extractor(
    model: keras.Model,
    layer_names: Iterable[str],
    include_predictions: bool = True,
    role: str = "model",
) -> keras.Model:
    """Builds a sub-model returning the named layers' outputs in one pass.

    The extractor shares `model`'s layers. With `include_predictions` it
    returns `[*features, *model.outputs]`; without, only the features, and
    Keras prunes every layer past the deepest tapped one.

    Args:
        model: A functional or Sequential `keras.Model` (with an input).
        layer_names: Layer names; a layer of a nested model is named by its
            path, e.g. `"backbone/conv4_block6_out"`.
        include_predictions: Whether to append the model's outputs.
            Defaults to `True`.
        role: How error messages call the model (`"teacher"`, `"student"`).

    Returns:
        A functional `keras.Model` with the same inputs as `model`.

    Example:

    >>> extractor = keras_spkd.build_feature_extractor(teacher, ["t_group3"])
    >>> group3, logits = extractor(x)   # one forward pass
    >>> tuple(group3.shape), tuple(logits.shape)
    ((32, 4, 4, 16), (32, 10))
    """
    inputs = graph_inputs(model, role)
    names = [checked_layer_name(model, name, role) for name in layer_names]
    extractor_name = f"{model.name}_features"
    top = {layer.name: layer for layer in model.layers}
    nested: dict[str, list[str]] = {}
    for name in names:
        head, _, rest = name.partition("/")
        if rest:
            nested.setdefault(head, []).append(rest)
    # A nested model's `.output` lives in its own graph, not the outer one:
    # tapping it by its own name needs the rerouted graph too (keras #16123).
    tapped_models = [name for name in names if isinstance(top.get(name), keras.Model)]
    if not nested and not tapped_models:
        predictions = list(model.outputs) if include_predictions else []
        features = [top[layer].output for layer in names]
        return keras.Model(_single(inputs), [*features, *predictions], name=extractor_name)
    return _rerouted_extractor(model, names, nested, include_predictions, role, extractor_name)


def _rerouted_extractor(model, names, nested, include_predictions, role, name):
    """Re-runs `model`'s graph, sending nested models through extractors.

    Every layer's output in the outer graph is captured by name, so a nested
    model is tapped by its own name as well as by `"name/inner"` paths.
    """
    inner = {
        head: build_feature_extractor(model.get_layer(head), paths, True, role)
        for head, paths in nested.items()
    }
    captured: dict[str, object] = {}

    def call_function(layer, *args, **kwargs):
        if layer.name not in inner:
            outputs = layer(*args, **kwargs)
            captured[layer.name] = outputs
            return outputs
        outputs = inner[layer.name](*args, **kwargs)
        paths = nested[layer.name]
        for path, tensor in zip(paths, outputs[: len(paths)]):
            captured[f"{layer.name}/{path}"] = tensor
        captured[layer.name] = _single(outputs[len(paths) :])
        return captured[layer.name]

    rebuilt = keras.models.clone_model(
        model, clone_function=lambda layer: layer, call_function=call_function
    )
    predictions = list(rebuilt.outputs) if include_predictions else []
    features = [captured[layer] for layer in names]
    return keras.Model(_single(rebuilt.inputs), [*features, *predictions], name=name)


def check_layer_pairs(layer_pairs) -> list[tuple[str, str]]:
    """Validates `[(teacher_layer, student_layer), ...]` and returns tuples."""
    single_pair = isinstance(layer_pairs, tuple) and len(layer_pairs) == 2
    if single_pair and all(isinstance(name, str) for name in layer_pairs):
        layer_pairs = [layer_pairs]
    if not isinstance(layer_pairs, (list, tuple)) or not layer_pairs:
        raise ValueError(
            "Expected `layer_pairs` to be a non-empty list of (teacher layer, "
            f"student layer) name pairs; received {layer_pairs!r}."
        )
    pairs = []
    for pair in layer_pairs:
        if (
            not isinstance(pair, (list, tuple))
            or len(pair) != 2
            or not all(isinstance(name, str) for name in pair)
        ):
            raise ValueError(
                "Each entry of `layer_pairs` must be a (teacher layer name, "
                f"student layer name) pair of strings; received {pair!r}."
            )
        pairs.append((pair[0], pair[1]))
    return pairs
