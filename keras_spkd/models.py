"""Model zoo: the paper's WideResNets and a small CNN pair for the digits.

Every model names the output of each of its groups `group1`, `group2`,
`group3` (digits CNNs: `group1`, `group2`), so SP layer pairs can be named
without reading a summary.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import keras
from keras import layers


def _regularizer(weight_decay: float):
    # Coupled L2 as in SGD's weight_decay: 0.5 * wd * ||w||^2.
    return keras.regularizers.L2(weight_decay / 2) if weight_decay else None


def _block(x, filters: int, stride: int, name: str, weight_decay: float, dropout: float):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 + shortcut."""
    reg = _regularizer(weight_decay)
    pre = layers.BatchNormalization(name=f"{name}_bn1")(x)
    pre = layers.ReLU(name=f"{name}_relu1")(pre)
    h = layers.Conv2D(
        filters, 3, stride, "same", use_bias=False, kernel_regularizer=reg, name=f"{name}_conv1"
    )(pre)
    h = layers.BatchNormalization(name=f"{name}_bn2")(h)
    h = layers.ReLU(name=f"{name}_relu2")(h)
    if dropout:
        h = layers.Dropout(dropout, name=f"{name}_dropout")(h)
    h = layers.Conv2D(
        filters, 3, 1, "same", use_bias=False, kernel_regularizer=reg, name=f"{name}_conv2"
    )(h)
    if x.shape[-1] != filters or stride != 1:
        x = layers.Conv2D(
            filters, 1, stride, use_bias=False, kernel_regularizer=reg, name=f"{name}_shortcut"
        )(pre)
    return x, h


def wide_resnet(
    depth: int = 16,
    width: int = 1,
    input_shape: tuple[int, ...] = (32, 32, 3),
    num_classes: int = 10,
    weight_decay: float = 0.0,
    dropout: float = 0.0,
    name: str | None = None,
) -> keras.Model:
    """Builds WideResNet-`depth`-`width` (Zagoruyko & Komodakis, 2016).

    Pre-activation basic blocks in three groups of `(depth - 4) / 6` blocks,
    widths `16k, 32k, 64k`, strides 1, 2, 2; the last block of each group is
    named `group1`..`group3`. Returns logits.

    Args:
        depth: Total depth d, with `(d - 4) % 6 == 0`. Defaults to `16`.
        width: Widening factor k >= 1. Defaults to `1`.
        input_shape: Defaults to `(32, 32, 3)` (CIFAR).
        num_classes: Defaults to `10`.
        weight_decay: L2 weight decay of the kernels (the paper: `5e-4`).
            Defaults to `0.0`.
        dropout: Dropout between the convolutions of a block. Defaults to `0`.
        name: Defaults to `"wrn_{depth}_{width}"`.

    Returns:
        A functional `keras.Model`.

    Example:

    >>> teacher = keras_spkd.models.wide_resnet(40, 2)   # WRN-40-2, ~2.2M
    >>> teacher.get_layer("group3").output.shape
    (None, 8, 8, 128)
    """
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1; received {depth}.")
    if width < 1:
        raise ValueError(f"WideResNet width must be >= 1; received {width}.")
    blocks_per_group = (depth - 4) // 6
    reg = _regularizer(weight_decay)
    inputs = keras.Input(input_shape, name="images")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, kernel_regularizer=reg, name="stem")(
        inputs
    )
    for group, (filters, stride) in enumerate(((16 * width, 1), (32 * width, 2), (64 * width, 2))):
        for index in range(blocks_per_group):
            last = index == blocks_per_group - 1
            block_name = f"g{group + 1}b{index + 1}"
            shortcut, residual = _block(
                x, filters, stride if index == 0 else 1, block_name, weight_decay, dropout
            )
            x = layers.Add(name=f"group{group + 1}" if last else f"{block_name}_add")(
                [shortcut, residual]
            )
    x = layers.BatchNormalization(name="final_bn")(x)
    x = layers.ReLU(name="final_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, kernel_regularizer=reg, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"wrn_{depth}_{width}")


def digits_cnn(
    width: int = 32,
    input_shape: tuple[int, ...] = (8, 8, 1),
    num_classes: int = 10,
    name: str | None = None,
    weight_decay: float = 0.0,
) -> keras.Model:
    """A small CNN for 8x8 digits: two conv groups named `group1`, `group2`.

    `width=32` (~20k weights) is the default teacher, `width=8` (~1.5k) the
    default student.

    Args:
        width: Filters of the first group; the second has twice as many.
            Defaults to `32`.
        input_shape: Defaults to `(8, 8, 1)`.
        num_classes: Defaults to `10`.
        name: Defaults to `"digits_cnn_{width}"`.
        weight_decay: L2 weight decay of the kernels. Defaults to `0.0`.

    Returns:
        A functional `keras.Model` returning logits.
    """
    reg = _regularizer(weight_decay)
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    for group, filters in ((1, width), (2, 2 * width)):
        x = layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=False,
            kernel_regularizer=reg,
            name=f"g{group}_conv",
        )(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"g{group}_bn")(x)
        x = layers.ReLU(name=f"group{group}")(x)
        if group == 1:
            x = layers.MaxPooling2D(name="g1_pool")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, kernel_regularizer=reg, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"digits_cnn_{width}")


def fashion_cnn(
    width: int = 32,
    input_shape: tuple[int, ...] = (28, 28, 1),
    num_classes: int = 10,
    weight_decay: float = 0.0,
    name: str | None = None,
) -> keras.Model:
    """A VGG-style CNN for 28x28 images: three groups named `group1`..`group3`.

    Group g holds two conv3x3-BN-ReLU layers with `width * 2**(g-1)` filters;
    `group1` is 28x28, `group2` 14x14, `group3` 7x7 (2x2 max pooling between
    groups); then global average pooling and a dense layer of logits. Each
    group's name is its last ReLU, the stage end SP taps.

    Args:
        width: Filters of the first group. Defaults to `32`.
        input_shape: Defaults to `(28, 28, 1)` (Fashion-MNIST).
        num_classes: Defaults to `10`.
        weight_decay: L2 weight decay of the kernels. Defaults to `0.0`.
        name: Defaults to `"fashion_cnn_{width}"`.

    Returns:
        A functional `keras.Model` returning logits.
    """
    reg = _regularizer(weight_decay)
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    for group in (1, 2, 3):
        if group > 1:
            x = layers.MaxPooling2D(name=f"g{group}_pool")(x)
        for conv in (1, 2):
            x = layers.Conv2D(
                width * 2 ** (group - 1),
                3,
                padding="same",
                use_bias=False,
                kernel_regularizer=reg,
                name=f"g{group}_conv{conv}",
            )(x)
            x = layers.BatchNormalization(name=f"g{group}_bn{conv}")(x)
            x = layers.ReLU(name=f"group{group}" if conv == 2 else f"g{group}_relu{conv}")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, kernel_regularizer=reg, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"fashion_cnn_{width}")


_WRN = re.compile(r"^wrn-(\d+)-(\d+)$")
_DIGITS = re.compile(r"^digits-cnn-(\d+)$")
_FASHION = re.compile(r"^fashion-cnn-(\d+)$")
ARCHITECTURES = (
    "wrn-D-K (e.g. wrn-16-1, wrn-40-2)",
    "digits-cnn-W (e.g. digits-cnn-32)",
    "fashion-cnn-W (e.g. fashion-cnn-32)",
)


def is_zoo_name(architecture: str) -> bool:
    """Whether `architecture` is a zoo name (`wrn-D-K`, `digits-cnn-W`, `fashion-cnn-W`)."""
    return any(p.match(architecture.lower()) for p in (_WRN, _DIGITS, _FASHION))


def build_model(
    architecture: str, input_shape: tuple[int, ...], num_classes: int, **kwargs
) -> keras.Model:
    """Builds a zoo model from its name: `"wrn-16-2"`, `"digits-cnn-8"`.

    Args:
        architecture: `wrn-D-K` or `digits-cnn-W`.
        input_shape: The images' shape.
        num_classes: Number of logits.
        **kwargs: Passed to the builder (`weight_decay`, `name`, ...).

    Returns:
        A functional `keras.Model`.
    """
    builders: list[tuple[re.Pattern, Callable]] = [
        (_WRN, lambda m: wide_resnet(int(m[1]), int(m[2]), input_shape, num_classes, **kwargs)),
        (
            _DIGITS,
            lambda m: digits_cnn(int(m[1]), input_shape, num_classes, **kwargs),
        ),
        (_FASHION, lambda m: fashion_cnn(int(m[1]), input_shape, num_classes, **kwargs)),
    ]
    for pattern, build in builders:
        match = pattern.match(architecture.lower())
        if match:
            return build(match)
    raise ValueError(
        f"Unknown architecture {architecture!r}; expected one of: {', '.join(ARCHITECTURES)}."
    )
