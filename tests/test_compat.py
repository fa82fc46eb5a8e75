"""Private Keras API: only in keras_spkd/_compat.py, and the keras range is pinned."""

import re
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from packaging.requirements import Requirement

from keras_spkd import _compat
from tests.conftest import small_cnn, sparse_ce

PACKAGE = Path(__file__).resolve().parents[1] / "keras_spkd"
PRIVATE_KERAS = re.compile(
    r"\b(?:self|super\(\)|model|strategy)\._(?:maybe_symbolic_build|symbolic_build|"
    r"compute_loss|loss_tracker|distribute_strategy|compile_loss|initial_epoch)\b"
    r"|training_metadata\.json|latest\.weights\.h5|keras\.src\b|_keras_history|_inbound_nodes"
)


def test_private_keras_api_is_used_in_compat_only():
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_compat.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE_KERAS.search(line)
    ]
    assert not offenders, "move these into keras_spkd/_compat.py:\n" + "\n".join(offenders)
    assert PRIVATE_KERAS.search((PACKAGE / "_compat.py").read_text())  # the pattern has teeth


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is new in Python 3.11")
def test_keras_range_is_pinned_and_holds_the_installed_keras():
    import tomllib

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    (keras_req,) = [
        Requirement(d) for d in project["dependencies"] if Requirement(d).name == "keras"
    ]
    bounds = {spec.operator: spec.version for spec in keras_req.specifier}
    assert set(bounds) == {">=", "<"}, f"pin both ends of the tested range: {keras_req}"
    assert keras.__version__ in keras_req.specifier, (keras.__version__, str(keras_req))
    assert hasattr(keras, "distillation")  # the adapter's base class, new in 3.12


class _StopAfter(keras.callbacks.Callback):
    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise KeyboardInterrupt  # a kill after the backup of this epoch


def _killed_fit(backup_dir, epochs_done, double_checkpoint=False):
    """A model and data, and a fit of 5 epochs killed after `epochs_done`."""
    keras.utils.set_random_seed(0)
    model = small_cnn("m", 2)
    model.compile(optimizer="sgd", loss=sparse_ce())
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, 8)
    backup = keras.callbacks.BackupAndRestore(str(backup_dir), double_checkpoint=double_checkpoint)
    with pytest.raises(KeyboardInterrupt):  # the callback deletes a finished fit's backup
        model.fit(
            x, y, batch_size=4, epochs=5, callbacks=[backup, _StopAfter(epochs_done)], verbose=0
        )
    return model, x, y


def test_backup_epoch_reads_what_backup_and_restore_wrote(tmp_path):
    backup = tmp_path / "backup"
    assert _compat.backup_epoch(backup) == 0  # no folder yet
    backup.mkdir()
    assert _compat.backup_epoch(backup) == 0  # empty folder
    model, x, y = _killed_fit(backup, epochs_done=3)
    assert _compat.backup_epoch(backup) == 3
    assert _compat.backup_epoch(str(backup)) == 3  # str or Path
    # It is the epoch a resumed fit starts from: 2 more epochs of 5.
    resumed = model.fit(
        x,
        y,
        batch_size=4,
        epochs=5,
        callbacks=[keras.callbacks.BackupAndRestore(str(backup))],
        verbose=0,
    )
    assert len(resumed.history["loss"]) == 2


def test_settle_backup_keeps_whole_backups_and_repairs_cut_ones(tmp_path):
    backup = tmp_path / "backup"
    assert _compat.settle_backup(backup) == 0
    _killed_fit(backup, epochs_done=3, double_checkpoint=True)
    assert _compat.settle_backup(backup) == 3 == _compat.backup_epoch(backup)
    (backup / _compat.BACKUP_WEIGHTS).write_bytes(b"cut off mid-write")
    assert _compat.settle_backup(backup) == 2  # the .bkp pair, one epoch older
    assert _compat.backup_epoch(backup) == 2
    for name in (_compat.BACKUP_WEIGHTS, _compat.BACKUP_WEIGHTS + _compat.BACKUP_SUFFIX):
        (backup / name).write_bytes(b"cut off mid-write")
    assert _compat.settle_backup(backup) == 0 == _compat.backup_epoch(backup)
