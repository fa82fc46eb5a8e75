"""Gamma search with Keras Tuner: trials complete, resume, distribute, fail loudly."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_spkd
from keras_spkd.cli import main
from keras_spkd.experiment.training import weights_fingerprint
from keras_spkd.export import export_student
from keras_spkd.tuning import (
    SPHyperModel,
    best_trial,
    check_trials_completed,
    make_tuner,
    trial_table,
    trial_tensorboard,
)
from tests.conftest import small_cnn

ROOT = Path(__file__).resolve().parents[1]


def _hypermodel(**kwargs):
    keras.utils.set_random_seed(0)
    teacher = small_cnn("t", 8)
    return SPHyperModel(
        teacher,
        lambda: small_cnn("s", 4),
        [("t_group", "s_group"), ("t_conv1", "s_group")],
        gamma_range=(1.0, 1000.0),
        **kwargs,
    )


def test_search_completes_every_trial_and_the_best_student_exports(data, tmp_path):
    x, y = data
    hypermodel = _hypermodel()
    tuner = make_tuner(
        "random",
        hypermodel,
        "val_accuracy",
        max_trials=3,
        directory=str(tmp_path),
        project_name="p",
    )
    tuner.search(x, y, validation_data=(x, y), epochs=1, batch_size=8, verbose=0)
    check_trials_completed(tuner)
    rows = trial_table(tuner)
    assert [row["status"] for row in rows] == ["COMPLETED"] * 3
    assert all(1.0 <= row["gamma"] <= 1000.0 for row in rows)
    assert {row["pair"] for row in rows} <= {"t_group:s_group", "t_conv1:s_group"}
    best_hp = tuner.get_best_hyperparameters(1)[0].values
    best = tuner.get_best_models(1)[0]
    assert isinstance(best, keras_spkd.SPDistiller) and best.gamma == best_hp["gamma"]
    assert max(row["objective"] for row in rows) == pytest.approx(
        tuner.oracle.get_best_trials(1)[0].score
    )
    report = export_student(best.student, tmp_path / "best", x[:8], tflite=())
    loaded = tf.saved_model.load(report.saved_model)
    np.testing.assert_allclose(
        loaded.serve(tf.constant(x[:8]))["logits"].numpy(),
        best.student.predict(x[:8], verbose=0),
        atol=1e-5,
    )


def test_every_trial_starts_from_the_same_student_with_fresh_data(data, tmp_path):
    x, y = data
    import hashlib

    starts, orders = [], []

    class Recording(SPHyperModel):
        def build(self, hp):
            distiller = super().build(hp)
            starts.append(weights_fingerprint(distiller.student))
            return distiller

        def fit(self, hp, model, *args, **kwargs):
            fed = self.train_data()  # what this trial is fed: its first epoch's labels
            labels = np.concatenate([labels.numpy() for _, labels in fed]).astype("int32")
            orders.append(hashlib.sha256(labels.tobytes()).hexdigest())
            return super().fit(hp, model, *args, **kwargs)

    dataset = lambda: tf.data.Dataset.from_tensor_slices((x, y)).shuffle(32, seed=1).batch(8)  # noqa: E731
    keras.utils.set_random_seed(0)
    hypermodel = Recording(
        small_cnn("t", 8),
        lambda: small_cnn("s", 4),
        [("t_group", "s_group")],
        (1.0, 10.0),
        train_data=dataset,
    )
    tuner = make_tuner("random", hypermodel, "loss", max_trials=2, directory=str(tmp_path))
    tuner.search(epochs=1, verbose=0)
    check_trials_completed(tuner)
    assert len(starts) >= 3  # Keras Tuner's space discovery, then one build per trial
    assert len(set(starts)) == 1  # byte-identical initial weights (a hash sees permutations)
    assert len(orders) == 2 and len(set(orders)) == 1  # one data order for every trial


def test_a_failed_trial_is_reported_not_swallowed(data, tmp_path):
    x, y = data

    class Flaky(SPHyperModel):
        calls = 0

        def fit(self, hp, model, *args, **kwargs):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("simulated failure (as a missing tensorboard would)")
            return super().fit(hp, model, *args, **kwargs)

    keras.utils.set_random_seed(0)
    hypermodel = Flaky(
        small_cnn("t", 8), lambda: small_cnn("s", 4), [("t_group", "s_group")], (1.0, 10.0)
    )
    tuner = make_tuner("random", hypermodel, "val_loss", max_trials=2, directory=str(tmp_path))
    tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)  # returns normally...
    with pytest.raises(RuntimeError, match="1 trial\\(s\\) did not complete"):
        check_trials_completed(tuner)  # ...so the statuses are checked


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--gamma-min", "100", "--gamma-max", "10"],
            r"low < high; received \(100, 10\) \(inverted\)",
        ),
        (["--gamma-min", "10", "--gamma-max", "10"], r"\(empty\)"),
        (["--gamma-min", "0", "--gamma-max", "10"], "gamma_range must be > 0; received 0"),
        (["--objective", "val_f1"], "Unknown objective 'val_f1'.*val_accuracy"),
    ],
)
def test_bad_search_settings_fail_before_any_trial(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "--out", "search", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0])
    assert not (tmp_path / "search").exists()


def test_unknown_tuner_kind_is_rejected():
    with pytest.raises(ValueError, match="Unknown tuner 'grid'"):
        make_tuner("grid", _hypermodel())
    with pytest.raises(SystemExit):  # argparse: one line, exit code 2
        main(["tune", "--tuner", "grid"])


def test_the_best_of_tied_trials_is_the_earliest_in_any_table_order():
    import keras_tuner as kt
    from keras_tuner.src.engine.trial import Trial

    scores = {"0": 0.96, "1": 0.98, "2": 0.97, "3": 0.98, "10": 0.98, "11": None}
    trials = []
    for trial_id, score in scores.items():
        trial = Trial(kt.HyperParameters(), trial_id=trial_id, status="COMPLETED")
        trial.score = score
        trials.append(trial)
    trials[-1].status = "FAILED"
    for direction, expected in (("max", "1"), ("min", "0")):
        for order in (trials, trials[::-1], trials[3:] + trials[:3]):
            oracle = kt.oracles.RandomSearchOracle(
                objective=kt.Objective("val_accuracy", direction), max_trials=6
            )
            oracle.trials = {t.trial_id: t for t in order}
            assert best_trial(SimpleNamespace(oracle=oracle)).trial_id == expected
    # Keras Tuner's own pick follows the table's order, which a resume takes from the disk
    oracle.objective = kt.Objective("val_accuracy", "max")
    assert oracle.get_best_trials(1)[0].trial_id == "3"


def _one_trial_tuner(directory: Path, **kwargs):
    return make_tuner(
        "random",
        _hypermodel(),
        "val_accuracy",
        max_trials=1,
        directory=str(directory),
        project_name="p",
        **kwargs,
    )


def _one_trial_search(data, directory: Path):
    x, y = data
    tuner = _one_trial_tuner(directory)
    tuner.search(x, y, validation_data=(x, y), epochs=1, batch_size=8, verbose=0)
    return tuner


def test_a_kill_during_a_keras_tuner_save_leaves_the_previous_state(data, tmp_path, monkeypatch):
    tuner = _one_trial_search(data, tmp_path)
    oracle_file = tmp_path / "p" / "oracle.json"
    before = oracle_file.read_text()
    assert json.loads(before)["end_order"] == ["0"]

    def killed(*args):  # the process dies after writing, before the file is in place
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    tuner.oracle.end_order.append("a trial the kill interrupted")
    with pytest.raises(KeyboardInterrupt):
        tuner.oracle.save()
    monkeypatch.undo()
    assert oracle_file.read_text() == before  # Keras Tuner alone leaves the new or half a file
    assert sorted(p.name for p in oracle_file.parent.iterdir() if p.name.endswith(".tmp")) == []
    assert [row["status"] for row in trial_table(_one_trial_tuner(tmp_path))] == ["COMPLETED"]


def test_a_kill_between_the_oracle_and_the_tuner_file_still_resumes(data, tmp_path):
    _one_trial_search(data, tmp_path)
    (tmp_path / "p" / "tuner0.json").unlink()  # killed after the oracle's save, before this
    resumed = _one_trial_tuner(tmp_path)
    assert [row["status"] for row in trial_table(resumed)] == ["COMPLETED"]  # not started afresh


@pytest.mark.parametrize(
    "damaged, text, why",
    [
        ("oracle.json", '{"ongoing_tr', "is not a readable JSON file"),  # cut off by a kill
        ("trial_0/trial.json", "", "is not a readable JSON file"),
        ("oracle.json", "{}", "is JSON but not Keras Tuner's state"),
        ("trial_0/trial.json", "[]", "is JSON but not Keras Tuner's state"),
        (
            "oracle.json",
            '{"ongoing_trials": 5, "tried_so_far": "x"}',
            "not Keras Tuner's state (ongoing_trials: dict, tried_so_far: list)",
        ),
        (  # well-formed, but naming a trial that is not there: Keras Tuner's reload fails
            "oracle.json",
            '{"ongoing_trials": {"tuner0": "9"}, "tried_so_far": []}',
            "Keras Tuner could not reload it",
        ),
    ],
)
def test_a_search_with_a_damaged_state_file_is_refused_naming_it(
    data, tmp_path, damaged, text, why
):
    _one_trial_search(data, tmp_path)
    (tmp_path / "p" / "notes.json").write_text("my notes")  # not Keras Tuner's: not read
    (tmp_path / "p" / damaged).write_text(text)
    with pytest.raises(keras_spkd.errors.RunDirectoryError) as err:
        _one_trial_tuner(tmp_path)
    message = str(err.value)
    assert why in message and "--overwrite" in message
    finished = 0 if damaged.startswith("trial_0") else 1  # a damaged trial is not counted
    assert f"its {finished} finished trial(s) are lost" in message
    if why != "Keras Tuner could not reload it":
        assert damaged in message
    _one_trial_tuner(tmp_path, overwrite=True)  # starts afresh without reading the damaged file


def test_a_users_own_json_file_beside_the_search_does_not_stop_its_resume(data, tmp_path):
    _one_trial_search(data, tmp_path)
    (tmp_path / "p" / "notes.json").write_text("my notes")
    assert [row["status"] for row in trial_table(_one_trial_tuner(tmp_path))] == ["COMPLETED"]
    with pytest.raises(ValueError, match="executions_per_trials"):  # not blamed on the state
        _one_trial_tuner(tmp_path, executions_per_trials=2)


def _env(tmp_path, **extra):
    return {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(ROOT),
        "KERAS_SPKD_CACHE": str(tmp_path / "cache"),
        **extra,
    }


TUNE = [
    "tune",
    "--tuner",
    "random",
    "--max-trials",
    "3",
    "--epochs",
    "3",
    "--teacher-epochs",
    "2",
    "--batch-size",
    "16",
    "--out",
    "search",
]


def _trial_status(search: Path, index: int) -> str | None:
    try:
        return json.loads((search / "search" / f"trial_{index}" / "trial.json").read_text())[
            "status"
        ]
    except (OSError, ValueError):
        return None


@pytest.mark.slow
def test_killed_search_resumes_without_redoing_finished_trials(tmp_path):
    env = _env(tmp_path)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_spkd.cli",
            "teacher",
            "--epochs",
            "2",
            "--out",
            "unused.keras",
        ],
        env=env,
        cwd=tmp_path,
        check=True,
        timeout=300,
        capture_output=True,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_spkd.cli", *TUNE],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    search = tmp_path / "search"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if _trial_status(search, 0) == "COMPLETED":
            break
        time.sleep(0.05)
    assert process.poll() is None, "the search ended before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    first = (search / "search" / "trial_0" / "trial.json").read_text()
    assert _trial_status(search, 2) is None

    resumed = subprocess.run(
        [sys.executable, "-m", "keras_spkd.cli", *TUNE],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Reloading Tuner" in resumed.stdout + resumed.stderr
    assert (search / "search" / "trial_0" / "trial.json").read_text() == first  # not redone
    assert [_trial_status(search, i) for i in range(3)] == ["COMPLETED"] * 3
    best = json.loads((search / "best_config.json").read_text())
    assert (search / "best_student" / "saved_model" / "saved_model.pb").is_file()

    # The best configuration feeds `keras-spkd distill --config`.
    distill = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_spkd.cli",
            "--config",
            str(search / "best_config.json"),
            "distill",
            "--epochs",
            "1",
            "--out",
            "run",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert distill.returncode == 0, distill.stderr[-3000:]
    used = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert used["gamma"] == best["gamma"] and used["pairs"] == best["pairs"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_chief_and_worker_complete_a_search_together(tmp_path):
    port = str(_free_port())
    processes = {}
    for tuner_id in ("chief", "tuner0"):
        env = _env(
            tmp_path,
            KERASTUNER_TUNER_ID=tuner_id,
            KERASTUNER_ORACLE_IP="127.0.0.1",
            KERASTUNER_ORACLE_PORT=port,
        )
        argv = [sys.executable, "-m", "keras_spkd.cli", *TUNE[:4], "2", *TUNE[5:]]
        processes[tuner_id] = subprocess.Popen(
            argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        if tuner_id == "chief":  # it trains (or loads) the teacher, then serves the oracle
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and processes["chief"].poll() is None:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", int(port))) == 0:
                        break
                time.sleep(0.05)
    try:
        outputs = {k: p.communicate(timeout=600) for k, p in processes.items()}
    finally:
        for p in processes.values():
            p.kill()
    codes = {k: p.returncode for k, p in processes.items()}
    assert codes == {"chief": 0, "tuner0": 0}, {k: o[1][-2000:] for k, o in outputs.items()}
    assert "search finished; the chief reports" in outputs["tuner0"][0]
    assert "| trial | gamma |" in outputs["chief"][0]
    statuses = [
        json.loads(p.read_text())["status"]
        for p in (tmp_path / "search" / "search").glob("trial_*/trial.json")
    ]
    assert statuses == ["COMPLETED"] * 2


def _plugins(directory: Path) -> set[str]:
    plugins = set()
    for event_file in directory.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            plugins |= {v.metadata.plugin_data.plugin_name for v in event.summary.value}
    return plugins


def test_make_tuner_passes_keywords_on_and_every_trial_is_logged_for_hparams(data, tmp_path):
    x, y = data
    tuner = make_tuner(
        "random",
        _hypermodel(),
        "val_loss",
        max_trials=2,
        directory=str(tmp_path / "search"),
        executions_per_trial=2,
    )
    assert tuner.executions_per_trial == 2
    log_dir = tmp_path / "tb"
    tuner.search(
        x,
        y,
        validation_data=(x, y),
        epochs=2,
        batch_size=8,
        verbose=0,
        callbacks=[trial_tensorboard(log_dir)],
    )
    check_trials_completed(tuner)
    trial_ids = sorted(tuner.oracle.trials)
    assert sorted(p.name for p in log_dir.iterdir()) == trial_ids
    for trial_id in trial_ids:
        runs = log_dir / trial_id
        assert sorted(p.name for p in runs.iterdir()) == ["execution0", "execution1"]
        for run in runs.iterdir():
            assert "hparams" in _plugins(run), run  # the HParams dashboard's records
            assert {"train", "validation"} <= {p.name for p in run.iterdir()}
    with pytest.raises(ValueError, match="Unrecognized arguments .*executions_per_trials"):
        make_tuner("random", _hypermodel(), directory=str(tmp_path / "x"), executions_per_trials=2)
