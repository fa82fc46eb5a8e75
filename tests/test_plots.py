"""Pictures: sizes, content, the monitor's files and TensorBoard records."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf
from matplotlib.image import imread
from numpy.testing import assert_allclose

import keras_spkd
from tests import reference
from tests.conftest import small_cnn, sparse_ce


def _not_blank(path, floor=1e-3):
    pixels = imread(path)
    assert pixels.std() > np.sqrt(floor), f"{path} looks blank"
    return pixels


def test_heat_maps_have_the_expected_size_and_the_matrices_drawn(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 4)
    teacher = np.abs(rng.standard_normal((16, 4, 4, 8))) + labels[:, None, None, None]
    student = np.abs(rng.standard_normal((16, 10)))
    drawn = keras_spkd.plot_similarity_matrices(
        {"teacher": teacher, "student": student}, labels, tmp_path / "g.png", reference="teacher"
    )
    pixels = _not_blank(tmp_path / "g.png")
    assert pixels.shape[:2] == (440, round((3.6 * 3 + 0.8) * 110))  # 3 panels at 110 dpi
    assert_allclose(drawn["teacher"], reference.similarity_matrix(teacher), atol=1e-6)
    assert_allclose(drawn["student"], reference.similarity_matrix(student), atol=1e-6)


def test_training_curves_from_a_history_dict_and_a_csv(tmp_path):
    history = {
        "loss": [2.0, 1.0, 0.5],
        "task_loss": [1.9, 0.9, 0.45],
        "sp_loss": [0.1, 0.1, 0.05],
        "accuracy": [0.3, 0.6, 0.8],
        "val_loss": [2.1, 1.2, 0.7],
        "val_accuracy": [0.25, 0.55, 0.75],
    }
    path = tmp_path / "history.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *history])
        for epoch in range(3):
            writer.writerow([epoch, *(v[epoch] for v in history.values())])
    drawn = keras_spkd.plot_training_curves({"alone": history, "sp": path}, tmp_path / "c.png")
    assert {"alone: sp_loss", "sp: val_accuracy", "sp: task_loss"} <= set(drawn)
    pixels = _not_blank(tmp_path / "c.png")
    assert pixels.shape[:2] == (440, 1210)
    assert "sp_loss" in keras_spkd.plot_training_curves(history, tmp_path / "one.png")


def _events(log_dir):
    records = {}
    for event_file in tf.io.gfile.glob(f"{log_dir}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            for value in event.summary.value:
                records.setdefault(value.tag, []).append(
                    (event.step, value.metadata.plugin_data.plugin_name)
                )
    return records


def test_similarity_monitor_writes_heat_maps_and_tensorboard_records(data, tmp_path):
    x, y = data
    keras.utils.set_random_seed(2)
    teacher, student = small_cnn("t", 8), small_cnn("s", 4)
    distiller = keras_spkd.SPDistiller(teacher, student, [("t_group", "s_group")], gamma=30.0)
    distiller.compile(optimizer="sgd", loss=sparse_ce())
    probe_x, probe_y = x[:12], np.sort(y[:12])
    monitor = keras_spkd.SimilarityMonitor(
        probe_x, probe_y, every_n_epochs=2, out_dir=tmp_path / "heat", log_dir=tmp_path / "tb"
    )
    distiller.fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[monitor])
    names = sorted(p.name for p in (tmp_path / "heat").iterdir())
    assert names == [
        "similarity_epoch001.png",
        "similarity_epoch002.png",
        "similarity_epoch004.png",
        "similarity_epoch005.png",
    ]  # first, every 2, last
    for path in monitor.written:
        _not_blank(path)
    t_feats = keras.Model(teacher.input, teacher.get_layer("t_group").output)(probe_x).numpy()
    s_feats = keras.Model(student.input, student.get_layer("s_group").output)(probe_x).numpy()
    assert_allclose(
        monitor.probe_sp_loss[5], 30.0 * reference.sp_loss([t_feats], [s_feats]), rtol=1e-4
    )
    records = _events(tmp_path / "tb")
    assert [step for step, _ in records["similarity_matrices"]] == [1, 2, 4, 5]
    assert {plugin for _, plugin in records["similarity_matrices"]} == {"images"}
    for tag in ("loss", "task_loss", "sp_loss", "probe_sp_loss"):
        assert tag in records, tag
    assert [step for step, _ in records["sp_loss"]] == [1, 2, 3, 4, 5]


def test_similarity_monitor_needs_a_distiller_and_a_positive_period(data):
    x, y = data
    model = small_cnn("m", 4)
    model.compile(optimizer="sgd", loss=sparse_ce())
    with pytest.raises(TypeError, match="watches a keras_spkd.SPDistiller"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[keras_spkd.SimilarityMonitor(x[:8], y[:8])])
    with pytest.raises(ValueError, match="every_n_epochs >= 1"):
        keras_spkd.SimilarityMonitor(x[:8], y[:8], every_n_epochs=0)
