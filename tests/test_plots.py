"""Pictures: sizes and content."""

import csv

import numpy as np
from matplotlib.image import imread
from numpy.testing import assert_allclose

import keras_spkd
from tests import reference


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
