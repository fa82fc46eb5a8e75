"""Suggest SP layer pairs: the stage ends of two convolutional networks.

The paper taps "the output of the last convolutional group" of each network
(Tung & Mori, 2019). This module finds such layers without the user reading
two `summary()` listings: a model's *stage ends* are the outputs of the last
block before each change of spatial resolution, and of the last block
overall. A block output is a residual `Add` (or a dense `Concatenate`), or in
post-activation networks the activation right after it; in plain CNNs with no
merges, a convolution's activation. The head after the last block (final
normalisation, activation, pooling) is never a stage end. Only layers can be
tapped: a residual written `x + y` (a symbolic op) is found through the
activation layer after it, or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from keras_spkd.features import build_feature_extractor, check_model, graph_inputs

_MERGES = (keras.layers.Add, keras.layers.Concatenate)
_ACTIVATIONS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
)
_CONVS = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
)
# Layers an activation may follow a convolution through (conv-BN-ReLU).
_PASS_THROUGH = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
)
_POOLS = (
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Flatten,
)
_HOW_BY_HAND = (
    "Name the pairs by hand instead: keras_spkd.describe_layers(model) lists "
    "each layer's path and output shape, and SPDistiller takes "
    'layer_pairs=[("teacher_layer", "student_layer")] (nested layers as '
    '"backbone/layer").'
)


# Symbolic ops (`x + shortcut`, `keras.ops.relu(x)`) are graph nodes but not
# layers: they link layers but cannot be tapped by name.
_MERGE_OPS = {"Add", "Concatenate"}
_ACTIVATION_OPS = {"Relu", "Relu6", "Silu", "Gelu", "Elu", "Selu", "LeakyRelu", "HardSilu", "Celu"}


@dataclass(eq=False)
class _Entry:
    """One graph node: its path, output shape and same-graph neighbours."""

    path: str
    layer: keras.layers.Layer | keras.Operation
    shape: tuple | list | None
    inputs: list[_Entry] = field(default_factory=list)
    consumers: list[_Entry] = field(default_factory=list)

    @property
    def tappable(self) -> bool:
        return isinstance(self.layer, keras.layers.Layer)


def _has_graph(model: keras.Model) -> bool:
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def _walk(model: keras.Model, prefix: str = "") -> list[_Entry]:
    """Lists `model`'s graph nodes in order, nested models' layers by path."""
    producers: dict[int, _Entry] = {}
    entries = []
    # A functional model's `operations` include symbolic ops; Sequential has layers only.
    for layer in getattr(model, "operations", None) or model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        entry = _Entry(prefix + layer.name, layer, None)
        entries.append(entry)
        if isinstance(layer, keras.Model) and _has_graph(layer):
            # A nested model's .input/.output are its own graph's, not the
            # outer call's: its outer neighbours stay unknown.
            outputs = list(layer.outputs)
            entry.shape = tuple(outputs[0].shape) if len(outputs) == 1 else None
            entries.extend(_walk(layer, f"{prefix}{layer.name}/"))
            continue
        try:
            inputs = keras.tree.flatten(layer.input)
            outputs = keras.tree.flatten(layer.output)
        except (AttributeError, ValueError):
            continue
        shapes = [tuple(t.shape) for t in outputs]
        entry.shape = shapes[0] if len(shapes) == 1 else shapes
        entry.inputs = [producers[id(t)] for t in inputs if id(t) in producers]
        for producer in entry.inputs:
            producer.consumers.append(entry)
        for tensor in outputs:
            producers[id(tensor)] = entry
    return entries


def _spatial(shape) -> tuple | None:
    """The (height, width) of a 4-D feature map's shape, else None."""
    if not isinstance(shape, tuple) or len(shape) != 4:
        return None
    if keras.config.image_data_format() == "channels_first":
        return shape[2:4]
    return shape[1:3]


def _is_activation(layer) -> bool:
    if not isinstance(layer, keras.layers.Layer):
        return type(layer).__name__ in _ACTIVATION_OPS
    if isinstance(layer, keras.layers.Activation):
        return getattr(layer.activation, "__name__", "") not in ("linear", "softmax")
    if isinstance(layer, _ACTIVATIONS):
        return True
    activation = getattr(layer, "activation", None)
    return isinstance(layer, _CONVS) and getattr(activation, "__name__", "linear") != "linear"


def _after_global_pooling(entries: list[_Entry]) -> set[int]:
    """ids of entries whose every input comes from a global pooling (heads, SE)."""
    pooled: set[int] = set()
    for entry in entries:
        reduces = _spatial(entry.shape) is None and any(_spatial(p.shape) for p in entry.inputs)
        if (
            isinstance(entry.layer, _POOLS)
            or reduces
            or (entry.inputs and all(id(p) in pooled for p in entry.inputs))
        ):
            pooled.add(id(entry))
    return pooled


def _is_merge(entry: _Entry) -> bool:
    if entry.tappable:
        return isinstance(entry.layer, _MERGES)
    return type(entry.layer).__name__ in _MERGE_OPS


def _tapped_block_output(merge: _Entry) -> _Entry | None:
    """The merge, or the activation right after it; None if only ops carry it."""
    entry = merge
    while len(entry.consumers) == 1 and _is_activation(entry.consumers[0].layer):
        entry = entry.consumers[0]
        if entry.tappable:
            return entry
    return merge if merge.tappable else None


def _follows_conv(entry: _Entry) -> bool:
    """Whether an activation is a convolution's own (fused, or via BN/dropout)."""
    if isinstance(entry.layer, _CONVS):
        return True
    while len(entry.inputs) == 1:
        entry = entry.inputs[0]
        if isinstance(entry.layer, _CONVS):
            # A conv with its own activation: this one belongs to a head.
            return not _is_activation(entry.layer)
        if not isinstance(entry.layer, _PASS_THROUGH):
            return False
    return False


def _block_outputs(entries: list[_Entry]) -> list[_Entry]:
    """Residual/dense merges (post-activation: their activation), else conv activations."""
    pooled = _after_global_pooling(entries)
    maps = [e for e in entries if _spatial(e.shape) is not None and id(e) not in pooled]
    merges = [e for e in maps if _is_merge(e)]
    if merges:
        # Merges that only ops carry are skipped: a residual branch inside
        # them is no block output.
        blocks = [_tapped_block_output(merge) for merge in merges]
        return [block for block in blocks if block is not None]
    return [e for e in maps if e.tappable and _is_activation(e.layer) and _follows_conv(e)]


def _known_sizes(model: keras.Model, blocks: list[_Entry], role: str) -> list[tuple]:
    """Spatial sizes of the blocks, traced through the outer model if needed."""
    sizes = [_spatial(b.shape) for b in blocks]
    if all(None not in size for size in sizes):
        return sizes
    # A nested backbone built without an input size: its shapes are known only
    # as seen from the outer graph.
    extractor = build_feature_extractor(
        model, [b.path for b in blocks], include_predictions=False, role=role
    )
    sizes = [_spatial(tuple(t.shape)) for t in extractor.outputs]
    if any(None in size for size in sizes):
        raise ValueError(
            f"The {role} {model.name!r} has feature maps of unknown spatial size "
            "(built without an input shape), so its resolution drops cannot be "
            "found. Build it with a fixed input shape, e.g. keras.Input((224, 224, 3)). "
            + _HOW_BY_HAND
        )
    return sizes


def _stage_ends(model: keras.Model, role: str) -> tuple[list[str], list[tuple]]:
    """Paths and spatial sizes of `model`'s stage ends, shallow to deep."""
    check_model(model, role)  # not a model: its own error, not "cannot suggest"
    try:
        graph_inputs(model, role)
    except ValueError as error:
        raise ValueError(f"Cannot suggest layer pairs: {error} " + _HOW_BY_HAND) from error
    entries = _walk(model)
    blocks = _block_outputs(entries)
    if not blocks:
        op_merges = [e for e in entries if _is_merge(e) and not e.tappable and _spatial(e.shape)]
        reason = (
            f"its {len(op_merges)} residual merges are symbolic ops (`x + y`), which "
            "cannot be tapped by name (write them as keras.layers.Add()([x, y]))"
            if op_merges
            else "no residual Add/Concatenate and no convolution activation with a "
            "(batch, height, width, channels) output"
        )
        raise ValueError(
            f"Found no convolutional stages in the {role} {model.name!r}: {reason}. " + _HOW_BY_HAND
        )
    sizes = _known_sizes(model, blocks, role)
    ends = [
        (block.path, size)
        for index, (block, size) in enumerate(zip(blocks, sizes))
        if index == len(blocks) - 1 or sizes[index + 1] != size
    ]
    return [path for path, _ in ends], [size for _, size in ends]


def _by_depth(teacher: list[int], student: list[int]) -> list[tuple[int, int]]:
    """Pairs two runs of stages by relative depth, the deepest with the deepest."""
    count = min(len(teacher), len(student))
    if not count:
        return []
    longer = teacher if len(teacher) >= len(student) else student
    picked = [longer[round((k + 1) * len(longer) / count) - 1] for k in range(count)]
    if longer is teacher:
        return list(zip(picked, student[:count]))
    return list(zip(teacher[:count], picked))


def _match(teacher_sizes: list, student_sizes: list) -> list[tuple[int, int]]:
    """Indices of matched stages: equal resolutions, the gaps by relative depth."""
    anchors, start = [], 0
    for i, size in enumerate(teacher_sizes):
        for j in range(start, len(student_sizes)):
            if student_sizes[j] == size:
                anchors.append((i, j))
                start = j + 1
                break
    bounds = [(-1, -1), *anchors, (len(teacher_sizes), len(student_sizes))]
    pairs = []
    for (i0, j0), (i1, j1) in zip(bounds, bounds[1:]):
        pairs.extend(_by_depth(list(range(i0 + 1, i1)), list(range(j0 + 1, j1))))
        if i1 < len(teacher_sizes):
            pairs.append((i1, j1))
    return pairs


def suggest_layer_pairs(
    teacher: keras.Model, student: keras.Model, stages: str | int = "last"
) -> list[tuple[str, str]]:
    """Suggests `(teacher layer, student layer)` pairs for `SPDistiller`.

    Finds each model's stage ends: the output of the last block before each
    drop in spatial resolution, and of the last block overall. A block output
    is a residual `Add` (or a DenseNet-style `Concatenate`), or in
    post-activation networks the activation right after it; a plain CNN
    without merges uses the last convolution activation before each drop and
    before global pooling. The final normalisation / activation / pooling head
    is not a stage end. Stages of equal spatial size are paired where both
    models have them; the others by relative depth, deepest with deepest.

    Args:
        teacher: Functional or Sequential `keras.Model` (nested functional
            backbones are searched too).
        student: Functional or Sequential `keras.Model`.
        stages: `"last"`: one pair, the deepest (the paper's choice, the
            last convolutional group). `"all"`: one pair per matched stage.
            An int n: the deepest n pairs. Defaults to `"last"`.

    Returns:
        A list of `(teacher path, student path)`, shallow to deep; nested
        layers are named `"backbone/layer"`, as `SPDistiller` accepts them.

    Raises:
        ValueError: A model has no symbolic graph or no convolutional stage,
            or `stages` is not one of the above.

    Example:

    >>> pairs = keras_spkd.suggest_layer_pairs(teacher, student)
    >>> distiller = keras_spkd.SPDistiller(teacher, student, layer_pairs=pairs)

    Reference: Tung & Mori, ICCV 2019, arXiv:1907.09682.
    """
    valid_int = isinstance(stages, int) and not isinstance(stages, bool) and stages >= 1
    if stages not in ("last", "all") and not valid_int:
        raise ValueError(
            f'Expected stages to be "last", "all" or an int >= 1; received {stages!r}.'
        )
    teacher_paths, teacher_sizes = _stage_ends(teacher, "teacher")
    student_paths, student_sizes = _stage_ends(student, "student")
    pairs = [(teacher_paths[i], student_paths[j]) for i, j in _match(teacher_sizes, student_sizes)]
    if stages == "all":
        return pairs
    count = 1 if stages == "last" else stages
    if count > len(pairs):
        raise ValueError(
            f"Asked for the deepest {count} layer pairs but found {len(pairs)}: "
            f"{pairs}. Use stages='all' or a smaller number."
        )
    return pairs[-count:]


def describe_layers(model: keras.Model) -> list[dict]:
    """Lists a model's tappable layers, with its stage ends marked.

    What a user reads before naming layer pairs by hand: every layer path
    `SPDistiller` accepts (nested as `"backbone/layer"`), in graph order.

    Args:
        model: Functional or Sequential `keras.Model`.

    Returns:
        One dict per layer: `path`, `kind` (the layer's class),
        `output_shape` (a tuple, or a list of them) and `stage_end` (a
        bool, as `suggest_layer_pairs` finds them).

    Example:

    >>> rows = keras_spkd.describe_layers(model)
    >>> print(keras_spkd.pairs.format_layer_table(rows))
    """
    graph_inputs(model)
    try:
        ends = set(_stage_ends(model, "model")[0])
    except ValueError:
        ends = set()
    return [
        {
            "path": entry.path,
            "kind": type(entry.layer).__name__,
            "output_shape": entry.shape,
            "stage_end": entry.path in ends,
        }
        for entry in _walk(model)
        if entry.tappable
    ]


def format_layer_table(rows: list[dict]) -> str:
    """Renders `describe_layers` rows as a markdown table (readable as text).

    Args:
        rows: The dicts `describe_layers` returns.

    Returns:
        The table, one line per layer, stage ends marked `stage end`.
    """
    header = ("layer", "kind", "output shape", "")
    lines = [
        (
            row["path"],
            row["kind"],
            str(row["output_shape"]),
            "stage end" if row["stage_end"] else "",
        )
        for row in rows
    ]
    widths = [max(len(cells[k]) for cells in [header, *lines]) for k in range(len(header))]

    def render(cells) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([render(header), rule, *map(render, lines)])
