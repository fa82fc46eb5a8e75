"""Pictures of what SP preserves: batch similarity matrices side by side."""

from __future__ import annotations

import os
from collections.abc import Mapping

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from keras_spkd.losses import similarity_matrix  # noqa: E402


def plot_similarity_matrices(
    features: Mapping[str, object],
    labels: np.ndarray,
    path: str | os.PathLike,
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
        path: PNG file to write.
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
    figure, axes = plt.subplots(
        1, len(panels), figsize=(3.6 * len(panels) + 0.8, 4.0), squeeze=False, layout="constrained"
    )
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
    plt.close(figure)
    return matrices
