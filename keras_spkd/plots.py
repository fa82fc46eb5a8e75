"""Pictures of what SP preserves: similarity heat maps and training curves."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from typing import BinaryIO

import keras
import numpy as np
from matplotlib.figure import Figure  # drawn without pyplot: no backend, no global state

from keras_spkd.losses import similarity_matrix


def plot_similarity_matrices(
    features: Mapping[str, object],
    labels: np.ndarray,
    path: str | os.PathLike | BinaryIO,
    reference: str | None = None,
    title: str = "Batch similarity G (rows L2-normalised), probe sorted by label",
) -> dict[str, np.ndarray]:
    """Draws G for each named activation map, with a shared colour scale.

    The probe batch should be sorted by label so class blocks show on the
    diagonal. With `reference` (e.g. `"teacher"`), a last panel shows
    `|G_reference - G|` for the last other entry.

    Args:
        features: `{panel title: activations of the probe batch}`.
        labels: The probe's labels, in batch order.
        path: PNG file to write (a path, or a binary file object).
        reference: Key of the map the differences are taken against.
            Defaults to `None` (no difference panel).
        title: Figure title.

    Returns:
        `{panel title: G as a NumPy array}`, the values drawn.
    """
    matrices = {
        name: keras.ops.convert_to_numpy(similarity_matrix(value))
        for name, value in features.items()
    }
    panels = dict(matrices)
    if reference is not None:
        last = [name for name in matrices if name != reference][-1]
        panels[f"|G {reference} - G {last}|"] = np.abs(matrices[reference] - matrices[last])
    low = min(0.0, *(m.min() for m in panels.values()))
    high = max(m.max() for m in panels.values())
    figure = Figure(figsize=(3.6 * len(panels) + 0.8, 4.0), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)
    boundaries = np.flatnonzero(np.diff(labels)) + 0.5
    for axis, (name, matrix) in zip(axes[0], panels.items()):
        image = axis.imshow(matrix, vmin=low, vmax=high, cmap="viridis", interpolation="nearest")
        for b in boundaries:
            axis.axhline(b, color="white", linewidth=0.4)
            axis.axvline(b, color="white", linewidth=0.4)
        axis.set_title(name, fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.colorbar(image, ax=axes[0].tolist(), shrink=0.85)
    figure.suptitle(title, fontsize=11)
    figure.savefig(path, dpi=110)
    return matrices


LOSS_KEYS = ("loss", "task_loss", "sp_loss", "kd_loss", "at_loss")


def _read_history(history) -> dict[str, list[float]]:
    if isinstance(history, keras.callbacks.History):
        return history.history
    if isinstance(history, Mapping):
        return dict(history)
    with open(history, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        key: [float(row[key]) for row in rows]
        for key in (rows[0] if rows else {})
        if key != "epoch"
    }


def plot_training_curves(histories, path: str | os.PathLike) -> list[str]:
    """Draws loss components and accuracy per epoch, training and validation.

    Args:
        histories: One history (a `History`, its `.history` dict or a
            CSVLogger file) or `{run name: history}` to overlay several runs.
        path: PNG file to write.

    Returns:
        The plotted series names, as `"run: key"`.
    """
    if not isinstance(histories, Mapping) or any(
        isinstance(v, (list, tuple)) for v in histories.values()
    ):
        histories = {"": histories}
    runs = {name: _read_history(h) for name, h in histories.items()}
    figure = Figure(figsize=(11, 4), layout="constrained")
    losses, accuracy = figure.subplots(1, 2)
    drawn = []
    for run_index, (run, history) in enumerate(runs.items()):
        for key, values in history.items():
            base = key.removeprefix("val_")
            axis = losses if base in LOSS_KEYS else accuracy if "acc" in base else None
            if axis is None or not values:
                continue
            epochs = np.arange(1, len(values) + 1)
            style = "--" if key.startswith("val_") else "-"
            label = f"{run}: {key}" if run else key
            color = f"C{(LOSS_KEYS.index(base) if base in LOSS_KEYS else 0) + 5 * run_index}"
            axis.plot(epochs, values, style, color=color, label=label, linewidth=1.4)
            drawn.append(label)
    losses.set_title("losses (dashed: validation)")
    losses.set_yscale("log")
    accuracy.set_title("accuracy (dashed: validation)")
    for axis in (losses, accuracy):
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=7)
    figure.savefig(path, dpi=110)
    return drawn
