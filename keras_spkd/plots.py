"""Pictures of what SP preserves: similarity heat maps, training curves, a monitor."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure  # drawn without pyplot: no backend, no global state

from keras_spkd.losses import similarity_matrix, similarity_preserving_loss


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


class SimilarityMonitor(keras.callbacks.Callback):
    """Records what SP preserves on a fixed probe batch while a distiller trains.

    Every `every_n_epochs` epochs (and at the first and last), computes the
    probe batch's SP loss (gamma included, as logged by the distiller) and draws
    G of the teacher and the student for the first layer pair, with
    `|G_T - G_S|`, to `out_dir/similarity_epoch{NNN}.png`. With `log_dir`,
    TensorBoard gets the heat maps as images and every epoch's loss
    components and metrics as scalars.

    Args:
        probe_images: A batch of inputs (or privileged `{"teacher", "student"}`
            inputs), best sorted by label.
        probe_labels: Their labels.
        every_n_epochs: Drawing period. Defaults to `1`.
        out_dir: Directory for the PNG files. Defaults to `None` (no files).
        log_dir: TensorBoard log directory. Defaults to `None`.

    Example:

    >>> monitor = keras_spkd.SimilarityMonitor(x_probe, y_probe, 5, "run/heat", "run/tb")
    >>> distiller.fit(train_ds, epochs=50, callbacks=[monitor])
    """

    def __init__(
        self,
        probe_images,
        probe_labels,
        every_n_epochs: int = 1,
        out_dir: str | os.PathLike | None = None,
        log_dir: str | os.PathLike | None = None,
    ):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"Expected every_n_epochs >= 1; received {every_n_epochs}.")
        self.probe_images = probe_images
        self.probe_labels = np.asarray(probe_labels)
        self.every_n_epochs = every_n_epochs
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.log_dir = str(log_dir) if log_dir is not None else None
        self.probe_sp_loss: dict[int, float] = {}
        self.written: list[Path] = []
        self._writer = None

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "tapped_features"):
            raise TypeError(
                "SimilarityMonitor watches a keras_spkd.SPDistiller; it was given "
                f"{type(self.model).__name__}."
            )
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.log_dir is not None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def _due(self, epoch: int) -> bool:
        last = self.params.get("epochs", 0) - 1
        return epoch == 0 or epoch == last or (epoch + 1) % self.every_n_epochs == 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._writer is not None:
            with self._writer.as_default(step=epoch + 1):
                for key, value in logs.items():
                    tf.summary.scalar(key, float(np.ravel(value)[0]))
        if not self._due(epoch):
            return
        teacher_feats, student_feats = self.model.tapped_features(self.probe_images)
        self.probe_sp_loss[epoch + 1] = float(
            similarity_preserving_loss(teacher_feats, student_feats, self.model.gammas)
        )
        (t_name, s_name) = self.model.layer_pairs[0]
        path = (self.out_dir or Path(tempfile.mkdtemp())) / f"similarity_epoch{epoch + 1:03d}.png"
        plot_similarity_matrices(
            {f"teacher {t_name}": teacher_feats[0], f"student {s_name}": student_feats[0]},
            self.probe_labels,
            path,
            reference=f"teacher {t_name}",
            title=f"epoch {epoch + 1}: probe SP loss {self.probe_sp_loss[epoch + 1]:.4g}",
        )
        if self.out_dir is not None:
            self.written.append(path)
        if self._writer is not None:
            with self._writer.as_default(step=epoch + 1):
                image = tf.image.decode_png(tf.io.read_file(str(path)), channels=3)
                tf.summary.image("similarity_matrices", image[None])
                tf.summary.scalar("probe_sp_loss", self.probe_sp_loss[epoch + 1])
        if self.out_dir is None:
            path.unlink()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()
