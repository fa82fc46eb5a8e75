"""SimilarityMonitor: what SP preserves, logged the way `keras.callbacks.TensorBoard` logs."""

from __future__ import annotations

import io
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_spkd.losses import similarity_preserving_loss
from keras_spkd.plots import plot_similarity_matrices


class SimilarityMonitor(keras.callbacks.Callback):
    """Records what SP preserves on a fixed probe batch while a distiller trains.

    Every `every_n_epochs` epochs (and at the first and last), computes the
    probe batch's SP loss (gamma included, as the distiller logs it) and draws
    G of the teacher and the student for the first layer pair, with
    `|G_T - G_S|`: to `out_dir/similarity_epochNNN.png` (NNN counts from 1,
    as Keras's progress bar and `ModelCheckpoint` do) and, with `log_dir`, to
    TensorBoard.

    TensorBoard records follow `keras.callbacks.TensorBoard`'s layout, so a
    `TensorBoard(log_dir)` callback and this monitor fill the same runs:
    training logs go to `log_dir/train`, `val_*` logs (prefix dropped) and
    the probe's records to `log_dir/validation`, every tag is `epoch_<name>`
    and the step is the 0-based epoch. The probe adds the scalar
    `epoch_probe_sp_loss` and the image `epoch_similarity_matrices`.
    Pictures are drawn in memory: no temporary files.

    Args:
        probe_images: A batch of model inputs (or privileged
            `{"teacher", "student"}` inputs), best sorted by label.
        probe_labels: Their labels.
        every_n_epochs: Drawing period. Defaults to `1`.
        out_dir: Directory for the PNG files. Defaults to `None` (no files).
        log_dir: TensorBoard log directory. Defaults to `None`.
        log_metrics: Also write the epoch logs (`loss`, `sp_loss`, ...) as
            scalars. Set it to `False` when a `keras.callbacks.TensorBoard`
            writes to the same `log_dir` (it writes them already). Defaults
            to `True`.

    Example:

    >>> log_dir = "run/tensorboard"
    >>> monitor = keras_spkd.SimilarityMonitor(x_probe, y_probe, 5, "run/heat", log_dir,
    ...                                        log_metrics=False)
    >>> distiller.fit(train_ds, epochs=50,
    ...               callbacks=[keras.callbacks.TensorBoard(log_dir), monitor])

    Reference: Tung & Mori, ICCV 2019, arXiv:1907.09682 (Fig. 1, G per layer).
    """

    def __init__(
        self,
        probe_images,
        probe_labels,
        every_n_epochs: int = 1,
        out_dir: str | os.PathLike | None = None,
        log_dir: str | os.PathLike | None = None,
        log_metrics: bool = True,
    ):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"Expected every_n_epochs >= 1; received {every_n_epochs}.")
        self.probe_images = probe_images
        self.probe_labels = np.asarray(probe_labels)
        self.every_n_epochs = every_n_epochs
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.log_metrics = log_metrics
        self.probe_sp_loss: dict[int, float] = {}  # keyed by epoch + 1, like the PNG files
        self.written: list[Path] = []
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    def _writer(self, run: str) -> tf.summary.SummaryWriter:
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(str(self.log_dir / run))
        return self._writers[run]

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "tapped_features"):
            raise TypeError(
                "SimilarityMonitor watches a keras_spkd.SPDistiller; it was given "
                f"{type(self.model).__name__}."
            )
        if not self.model.layer_pairs:
            raise ValueError(
                "SimilarityMonitor draws the similarity matrices of an SP term, and this "
                "distiller has none (its terms: "
                f"{[type(t).__name__ for t in self.model.distillation_losses]})."
            )
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    def _due(self, epoch: int) -> bool:
        last = self.params.get("epochs", 0) - 1
        return epoch == 0 or epoch == last or (epoch + 1) % self.every_n_epochs == 0

    def _scalars(self, epoch: int, logs: dict) -> None:
        runs = {"train": {}, "validation": {}}
        for key, value in logs.items():
            run = "validation" if key.startswith("val_") else "train"
            runs[run][key.removeprefix("val_")] = float(np.ravel(value)[0])
        for run, values in runs.items():
            if values:
                with self._writer(run).as_default(step=epoch):
                    for name, value in values.items():
                        tf.summary.scalar(f"epoch_{name}", value)

    def on_epoch_end(self, epoch, logs=None):
        if self.log_dir is not None and self.log_metrics:
            self._scalars(epoch, logs or {})
        if not self._due(epoch):
            return
        teacher_feats, student_feats = self.model.tapped_features(self.probe_images)
        loss = float(similarity_preserving_loss(teacher_feats, student_feats, self.model.gammas))
        self.probe_sp_loss[epoch + 1] = loss
        (t_name, s_name) = self.model.layer_pairs[0]
        png = io.BytesIO()
        plot_similarity_matrices(
            {f"teacher {t_name}": teacher_feats[0], f"student {s_name}": student_feats[0]},
            self.probe_labels,
            png,
            reference=f"teacher {t_name}",
            title=f"epoch {epoch + 1}: probe SP loss {loss:.4g}",
        )
        if self.out_dir is not None:
            path = self.out_dir / f"similarity_epoch{epoch + 1:03d}.png"
            path.write_bytes(png.getvalue())
            self.written.append(path)
        if self.log_dir is not None:
            with self._writer("validation").as_default(step=epoch):
                image = tf.image.decode_png(png.getvalue(), channels=3)
                tf.summary.image("epoch_similarity_matrices", image[None])
                tf.summary.scalar("epoch_probe_sp_loss", loss)

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
