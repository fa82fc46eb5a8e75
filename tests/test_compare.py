"""keras-spkd compare: one row per method, rows differing only in the loss."""

import csv

import keras
import pytest

from keras_spkd.cli import main


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("privileged", [False, True])
def test_compare_writes_a_table_with_one_row_per_method(privileged, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_SPKD_CACHE", str(tmp_path / "cache"))
    argv = ["compare", "--seeds", "2", "--epochs", "1", "--teacher-epochs", "1", "--out", "cmp"]
    assert main(argv + (["--privileged"] if privileged else [])) == 0
    methods = ["alone", "kd", "sp", "sp+kd"] if privileged else ["alone", "kd", "at", "sp", "sp+kd"]
    rows = _rows(tmp_path / "cmp" / "results.csv")
    assert [(int(r["seed"]), r["method"]) for r in rows] == [
        (seed, method) for seed in range(2) for method in methods
    ]
    for row in rows:
        assert 0.0 <= float(row["test_accuracy"]) <= 1.0
        assert row["init_fingerprint"] == row["expected_init_fingerprint"]  # same start
    for key in ("init_fingerprint", "order_fingerprint"):
        assert len({r[key] for r in rows if r["seed"] == "0"}) == 1
        assert {r[key] for r in rows if r["seed"] == "0"} != {
            r[key] for r in rows if r["seed"] == "1"
        }  # seeds do differ
    weights = {
        r["method"]: (float(r["gamma"]), float(r["kd_weight"]), float(r["at_weight"])) for r in rows
    }
    assert weights["alone"] == (0.0, 0.0, 0.0) and weights["sp+kd"] == (100.0, 1.0, 0.0)
    table = (tmp_path / "cmp" / "results.md").read_text().splitlines()
    method_rows = [line for line in table if line.startswith("| ") and "mean" not in line]
    assert [line.split(" | ")[0].removeprefix("| ") for line in method_rows] == methods
    assert ("privileged" in table[0]) == privileged
    assert "| method | test accuracy (mean ± sd) |" in capsys.readouterr().out


def test_compare_rejects_bad_methods_and_mismatched_at_before_training(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_SPKD_CACHE", str(tmp_path / "cache"))
    fitted = []
    original_fit = keras.Model.fit

    def recording_fit(model, *args, **kwargs):
        fitted.append(model.name)
        return original_fit(model, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    assert main(["compare", "--methods", "alone,fitnets"]) == 2
    assert "Unknown method 'fitnets'" in capsys.readouterr().err
    assert fitted == []
    assert (
        main(
            [
                "compare",
                "--privileged",
                "--methods",
                "alone,at",
                "--seeds",
                "1",
                "--teacher-epochs",
                "1",
                "--epochs",
                "1",
                "--out",
                "cmp",
            ]
        )
        == 2
    )
    assert "one spatial size" in capsys.readouterr().err
    assert fitted == []  # checked on the architecture: not even the teacher trained
