"""Every use of private Keras API in keras-spkd, one place, one comment each.

Keras does not promise these names. Each use says why it is needed and which
upstream issue would remove it; the tested range is pinned in
`pyproject.toml` and CI runs the core tests at both of its ends.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
from keras import ops

logger = logging.getLogger(__name__)

# keras.callbacks.BackupAndRestore writes these files into its `backup_dir`
# (keras/src/callbacks/backup_and_restore.py) and documents none of them.
# Resuming a run exactly needs to know how many epochs a backup holds (to trim
# the CSV log to them) and whether its weights file was cut off by a kill.
# Upstream: keras #18612 asks for more of the callback's state to be public.
BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_METADATA = "training_metadata.json"
BACKUP_SUFFIX = ".bkp"  # the previous copy, kept with double_checkpoint=True


def _epoch(path: Path) -> int | None:
    try:
        epoch = json.loads(path.read_text()).get("epoch")
    except (OSError, ValueError, AttributeError):
        return None
    return epoch if isinstance(epoch, int) and epoch >= 0 else None


def _readable_h5(path: Path) -> bool:
    import h5py

    try:
        h5py.File(path, "r").close()
    except OSError:
        return False
    return True


def backup_epoch(backup_dir: str | Path) -> int:
    """Completed epochs held by a `BackupAndRestore(backup_dir)` folder (0 if none)."""
    return _epoch(Path(backup_dir) / BACKUP_METADATA) or 0


def settle_backup(backup_dir: str | Path) -> int:
    """Makes a backup consistent after a kill; returns the epoch `fit` will restart at.

    BackupAndRestore (double_checkpoint) saves by copying weights and metadata
    to `.bkp`, then writing the weights, then the metadata. A kill between
    those steps leaves weights of one epoch beside metadata of another (or a
    half-written file), and Keras would resume from mismatched state. Here:
    current files that are whole and newer than the `.bkp` copy are kept; else
    the whole `.bkp` pair is restored; else the backup is dropped (epoch 0).
    """
    import os
    import shutil

    folder = Path(backup_dir)
    if not folder.is_dir():
        return 0
    weights, metadata = folder / BACKUP_WEIGHTS, folder / BACKUP_METADATA
    old_weights = folder / (BACKUP_WEIGHTS + ".bkp")
    old_metadata = folder / (BACKUP_METADATA + ".bkp")
    epoch, old_epoch = _epoch(metadata), _epoch(old_metadata)
    if epoch is not None and epoch != old_epoch and _readable_h5(weights):
        return epoch
    if old_epoch is not None and _readable_h5(old_weights):
        logger.warning(
            "Resuming %s from its previous checkpoint (the last was interrupted)", folder
        )
        for source, target in ((old_weights, weights), (old_metadata, metadata)):
            tmp = target.with_name(target.name + ".restoring")
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        return old_epoch
    if any(folder.iterdir()):
        logger.warning("The backup in %s was cut off mid-write; restarting this phase", folder)
        shutil.rmtree(folder)
    return 0


def engine_loss_tracker(model: keras.Model):
    """The `Mean` tracker named "loss" that `compile()` gives every model.

    A custom `train_step` that logs its own total loss must leave this one
    out of `model.metrics`, or `History` gets two "loss" metrics, one never
    updated (0.0). `Trainer._loss_tracker` is the only handle on it; logs
    come from `self.metrics`, not from what `train_step` returns
    (keras-core #485).
    """
    return getattr(model, "_loss_tracker", None)


class MultiWorkerFitMixin:
    """Makes Keras 3 `fit()` work under `MultiWorkerMirroredStrategy`.

    Two upstream bugs: Keras's symbolic build reduces a PerReplica batch
    (keras #20585), and scalar logs fail `reduce(MEAN, axis=0)` (tensorflow
    #72388). Under that strategy only, the model (built already) gets its
    optimizer and metrics built inside the scope instead, and its logs are
    returned rank-1.
    """

    # Private: `TensorFlowTrainer._maybe_symbolic_build` is the step that
    # reduces the PerReplica batch (keras #20585); overriding it is the only
    # way round it until that is fixed. Other strategies keep Keras's own.
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        import tensorflow as tf  # this method exists on the TensorFlow trainer only

        strategy = self.distribute_strategy
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        with strategy.scope():
            if not self.optimizer.built:
                self.optimizer.build(self.trainable_variables)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        logs = super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        if keras.backend.backend() != "tensorflow":
            return logs
        import tensorflow as tf

        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            logs = {name: ops.reshape(value, (1,)) for name, value in logs.items()}
        return logs


# Keras's cache folder: `$KERAS_HOME` as read once when Keras was imported, else
# ~/.keras (or /tmp/.keras where that is not writable). `keras.datasets.*.load_data()`
# look for their files there; Keras has no public accessor for it
# (keras/src/backend/config.py `keras_home`).
def keras_home() -> str:
    """The folder `keras.utils.get_file` caches into (Keras's own choice)."""
    from keras.src.backend import config

    return config.keras_home()


# Keras Tuner 1.4.8 writes its oracle.json, tuner0.json and every trial.json in
# place (`keras_tuner.src.utils.save_json`, used by `Stateful.save`). A kill
# during a write leaves an empty or cut-off file, and the next resume fails
# inside `json.loads` (reproduced by CI killing a search). Its local writes go
# through a temporary file and `os.replace` instead, so a reader sees the old
# state or the new one. Upstream: keras-tuner has no atomic save and no issue
# asking for one; a remote path (`gs://...`) keeps Keras Tuner's own write.
def keras_tuner_atomic_json() -> None:
    """Makes Keras Tuner's JSON state files whole-or-old on local disks (idempotent)."""
    from keras_tuner.src import utils as kt_utils

    from keras_spkd.summary import atomic_write_text

    if getattr(kt_utils.save_json, "_spkd_atomic", False):
        return
    original = kt_utils.save_json

    def save_json(path, obj):
        if "://" in str(path):
            return original(path, obj)
        text = json.dumps(obj)
        atomic_write_text(path, text)
        return text

    save_json._spkd_atomic = True
    kt_utils.save_json = save_json
