"""SimilarityMonitor: heat maps, probe loss, and TensorBoard records laid out as Keras's."""

import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from matplotlib.image import imread
from numpy.testing import assert_allclose

import keras_spkd
from tests import reference
from tests.conftest import small_cnn, sparse_ce


def _distiller(gamma=30.0):
    keras.utils.set_random_seed(2)
    teacher, student = small_cnn("t", 8), small_cnn("s", 4)
    distiller = keras_spkd.SPDistiller(teacher, student, [("t_group", "s_group")], gamma=gamma)
    distiller.compile(optimizer="sgd", loss=sparse_ce(), metrics=["accuracy"])
    return distiller


def _records(run_dir) -> dict[str, tuple[list[int], str]]:
    """`{tag: (steps, plugin)}` over the event files of one TensorBoard run directory."""
    records = {}
    for event_file in sorted(tf.io.gfile.glob(f"{run_dir}/events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            for value in event.summary.value:
                steps, _ = records.setdefault(
                    value.tag, ([], value.metadata.plugin_data.plugin_name)
                )
                steps.append(event.step)
    return records


def test_monitor_writes_heat_maps_and_the_probe_loss(data, tmp_path):
    x, y = data
    distiller = _distiller()
    probe_x, probe_y = x[:12], np.sort(y[:12])
    monitor = keras_spkd.SimilarityMonitor(probe_x, probe_y, every_n_epochs=2, out_dir=tmp_path)
    distiller.fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[monitor])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"similarity_epoch00{n}.png" for n in (1, 2, 4, 5)]  # first, every 2, last
    for path in monitor.written:
        assert imread(path).std() > 0.03, f"{path} looks blank"
    t_feats = distiller.teacher.get_layer("t_group")
    t_model = keras.Model(distiller.teacher.input, t_feats.output)
    s_model = keras.Model(distiller.student.input, distiller.student.get_layer("s_group").output)
    expected = 30.0 * reference.sp_loss([t_model(probe_x).numpy()], [s_model(probe_x).numpy()])
    assert_allclose(monitor.probe_sp_loss[5], expected, rtol=1e-4)
    assert sorted(monitor.probe_sp_loss) == [1, 2, 4, 5]


def test_tensorboard_records_follow_keras_tensorboard_layout(data, tmp_path):
    x, y = data
    distiller = _distiller()
    monitor = keras_spkd.SimilarityMonitor(
        x[:12], np.sort(y[:12]), every_n_epochs=2, log_dir=tmp_path / "ours"
    )
    keras_tb = keras.callbacks.TensorBoard(tmp_path / "keras", write_graph=False)
    distiller.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        validation_data=(x, y),
        verbose=0,
        callbacks=[keras_tb, monitor],
    )
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["train", "validation"]
    keras_train, ours_train = _records(tmp_path / "keras/train"), _records(tmp_path / "ours/train")
    # Keras also writes evaluation_*_vs_iterations (step: training iterations); not per epoch.
    keras_val = {
        tag: record
        for tag, record in _records(tmp_path / "keras/validation").items()
        if tag.startswith("epoch_")
    }
    assert {"epoch_loss", "epoch_sp_loss", "epoch_accuracy"} <= set(keras_val)
    ours_val = _records(tmp_path / "ours/validation")
    assert {"epoch_loss", "epoch_sp_loss", "epoch_task_loss", "epoch_accuracy"} <= set(keras_train)
    # Keras adds the learning rate from the optimizer; every tag of the logs is in both.
    assert set(ours_train) == set(keras_train) - {"epoch_learning_rate"}
    for tag, (steps, _) in ours_train.items():
        assert steps == keras_train[tag][0] == [0, 1, 2], tag
    assert set(ours_val) - set(keras_val) == {"epoch_probe_sp_loss", "epoch_similarity_matrices"}
    for tag, (steps, _) in keras_val.items():
        assert ours_val[tag][0] == steps == [0, 1, 2], tag
    assert ours_val["epoch_similarity_matrices"] == ([0, 1, 2], "images")  # first, every 2, last
    assert ours_val["epoch_probe_sp_loss"] == ([0, 1, 2], "scalars")


def test_monitor_beside_keras_tensorboard_writes_only_its_own_records(data, tmp_path):
    x, y = data
    monitor = keras_spkd.SimilarityMonitor(
        x[:8], y[:8], every_n_epochs=2, log_dir=tmp_path, log_metrics=False
    )
    _distiller().fit(x, y, batch_size=8, epochs=4, verbose=0, callbacks=[monitor])
    assert not (tmp_path / "train").exists()
    records = _records(tmp_path / "validation")
    assert records == {
        "epoch_similarity_matrices": ([0, 1, 3], "images"),
        "epoch_probe_sp_loss": ([0, 1, 3], "scalars"),
    }


def test_monitor_leaves_no_temporary_files(data, tmp_path, monkeypatch):
    x, y = data
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def refuse(*args, **kwargs):
        raise AssertionError("SimilarityMonitor made a temporary file or directory")

    for name in ("mkdtemp", "mkstemp", "TemporaryDirectory", "NamedTemporaryFile"):
        monkeypatch.setattr(tempfile, name, refuse)
    monitor = keras_spkd.SimilarityMonitor(x[:8], y[:8], log_dir=tmp_path / "tb")
    _distiller().fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[monitor])
    assert list(scratch.iterdir()) == []
    assert _records(tmp_path / "tb/validation")["epoch_similarity_matrices"][0] == [0, 1]
    assert not list(tmp_path.rglob("*.png"))  # no out_dir: pictures only in the event file


def test_monitor_needs_a_distiller_and_a_positive_period(data):
    x, y = data
    model = small_cnn("m", 4)
    model.compile(optimizer="sgd", loss=sparse_ce())
    with pytest.raises(TypeError, match="watches a keras_spkd.SPDistiller"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[keras_spkd.SimilarityMonitor(x[:8], y[:8])])
    with pytest.raises(ValueError, match="every_n_epochs >= 1"):
        keras_spkd.SimilarityMonitor(x[:8], y[:8], every_n_epochs=0)
    kd_only = keras_spkd.SPDistiller(
        small_cnn("t", 8), model, distillation_losses=[keras_spkd.KnowledgeDistillation()]
    )
    kd_only.compile(optimizer="sgd", loss=sparse_ce())
    with pytest.raises(ValueError, match=r"has none \(its terms: \['KnowledgeDistillation'\]\)"):
        kd_only.fit(
            x, y, epochs=1, verbose=0, callbacks=[keras_spkd.SimilarityMonitor(x[:8], y[:8])]
        )


def test_plots_holds_pictures_only():
    from keras_spkd import callbacks, plots

    assert not hasattr(plots, "SimilarityMonitor")
    assert keras_spkd.SimilarityMonitor is callbacks.SimilarityMonitor
