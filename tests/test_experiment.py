"""keras_spkd.experiment: validation before training, run directories, teacher cache, compare.

Each test names the finding of the workflow review (issue "Workflow core") it
guards; each failed on the CLI-bound pipeline that came before.
"""

import json
import threading
import time

import filelock
import keras
import numpy as np
import pytest

from keras_spkd import experiment
from keras_spkd.errors import ConfigError, DataError, NonFiniteLossError, RunDirectoryError
from keras_spkd.experiment import ExperimentConfig, RunDirectory, TeacherCache
from keras_spkd.experiment.training import weights_fingerprint

TINY = {"epochs": 1, "teacher_epochs": 1, "batch_size": 32}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_SPKD_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def no_fit(monkeypatch):
    """Records every fit; a test using it asserts that nothing trained."""
    fitted = []
    original = keras.Model.fit

    def recording_fit(model, *args, **kwargs):
        fitted.append(model.name)
        return original(model, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    return fitted


# Finding 4, 5, 6, 7: every weight finite and in range, epochs >= 1, b >= 1 (2 with SP).
@pytest.mark.parametrize(
    "values, message",
    [
        ({"gamma": float("nan")}, "gamma must be finite; received nan"),
        ({"gamma": float("inf")}, "gamma must be finite; received inf"),
        ({"gamma": -1.0}, "gamma must be >= 0; received -1"),
        ({"gamma": [1.0, 2.0]}, "gamma lists 2 values but there are 1 layer pairs"),
        ({"kd_weight": -0.5}, "kd_weight must be >= 0"),
        ({"at_weight": float("nan")}, "at_weight must be finite"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"lr": 0}, "lr must be > 0"),
        ({"epochs": 0}, "epochs must be >= 1; received 0"),
        ({"epochs": -1}, "epochs must be >= 1; received -1"),
        ({"epochs": 2.5}, "epochs must be an integer >= 1; received 2.5"),
        ({"teacher_epochs": 0}, "teacher_epochs must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1; received 0"),
        ({"batch_size": -5}, "batch_size must be >= 1; received -5"),
        ({"batch_size": 1}, "batch_size must be >= 2 with SP on"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"schedule": "linear"}, "schedule must be one of step, cosine, constant"),
        ({"strategy": "tpu"}, "strategy must be one of default, mirrored, multi_worker"),
        ({"pairs": ["a", "b"]}, "pairs expects (teacher layer, student layer) pairs"),
        ({"pairs": "group2"}, "TEACHER_LAYER:STUDENT_LAYER"),
        ({"tflite": ["float", "fp8"]}, "tflite must be one of float, dynamic, int8"),
        ({"download": "yes"}, "download must be true or false"),
    ],
)
def test_bad_settings_are_refused_when_the_config_is_built(values, message):
    with pytest.raises(ConfigError) as error:
        ExperimentConfig(**values)
    assert message in str(error.value)


def test_b_equal_one_is_allowed_without_sp():
    assert ExperimentConfig(gamma=0.0, batch_size=1).batch_size == 1


# Finding 8: --config files.
def test_unknown_keys_are_refused_naming_each_and_the_closest_valid_one():
    with pytest.raises(ConfigError) as error:
        ExperimentConfig.from_dict({"gama": 5000, "func": "x", "epochs": 3})
    text = str(error.value)
    assert "'gama' (did you mean 'gamma'?)" in text and "'func'" in text


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2]", "must be a JSON object of settings; received a list"),
        ("{not json", "is not valid JSON"),
        ('{"pairs": ["a", "b"]}', "pairs expects"),
        ('{"epochs": 2.5}', "epochs must be an integer"),
    ],
)
def test_config_files_with_problems_give_clear_errors(content, message, tmp_path):
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ExperimentConfig.from_json(path)


def test_config_round_trips_through_json(tmp_path):
    config = ExperimentConfig(dataset="digits", gamma=[5.0], pairs="group2:group2", epochs=3)
    config.to_json(tmp_path / "c.json")
    again = ExperimentConfig.from_json(tmp_path / "c.json")
    assert again == config and again.pairs == [("group2", "group2")]
    assert config.replace(gamma=7.0).gamma == 7.0
    assert ExperimentConfig(dataset="fashion_mnist").student_arch == "fashion-cnn-4"


def test_batch_larger_than_the_training_set_is_refused_before_anything_is_written(tmp_path, no_fit):
    with pytest.raises(ConfigError, match="at most the training set's size \\(1257"):
        experiment.run_distill(ExperimentConfig(batch_size=5000), out=tmp_path / "run")
    assert no_fit == [] and not (tmp_path / "run").exists()


def test_bad_pairs_fail_before_the_teacher_trains_and_leave_no_run(tmp_path, no_fit):
    with pytest.raises(ConfigError, match="has no layer 'nope'"):
        experiment.run_distill(ExperimentConfig(pairs="group2:nope", **TINY), tmp_path / "run")
    with pytest.raises(ConfigError, match="Unknown model 'resnet-9'"):
        experiment.run_distill(ExperimentConfig(student_arch="resnet-9"), tmp_path / "run")
    assert no_fit == [] and not (tmp_path / "run").exists()


# Finding 9: --out that cannot be a run directory.
def test_out_that_is_a_file_or_under_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    for out, message in [
        (tmp_path / "file", "is a file; a run needs a directory"),
        (tmp_path / "file" / "run", "lies under"),
        ("/proc/keras-spkd-run", "Cannot create the run directory"),
    ]:
        with pytest.raises(RunDirectoryError, match=message):
            experiment.run_distill(ExperimentConfig(**TINY), out=out)


# Finding 1: one writer per run directory.
def test_a_second_writer_is_refused_at_once(tmp_path):
    config = ExperimentConfig(**TINY)
    with RunDirectory(tmp_path / "run", config):
        start = time.monotonic()
        with pytest.raises(RunDirectoryError, match="is in use by another keras-spkd run"):
            experiment.run_distill(config, out=tmp_path / "run", resume=True)
        assert time.monotonic() - start < 5
    assert RunDirectory.saved_config(tmp_path / "run") == config.to_dict()


def test_a_directory_holding_a_run_needs_resume_and_the_same_settings(tmp_path):
    config = ExperimentConfig(**TINY)
    with RunDirectory(tmp_path / "run", config):
        pass
    with pytest.raises(RunDirectoryError, match="already holds a run; pass resume"):
        RunDirectory(tmp_path / "run", config).__enter__()
    # Finding 3: resuming with other settings lists every difference.
    changed = config.replace(gamma=5000.0, epochs=3)
    with pytest.raises(RunDirectoryError) as error:
        RunDirectory(tmp_path / "run", changed, resume=True).__enter__()
    assert "gamma: saved 100.0, given 5000.0" in str(error.value)
    assert "epochs: saved 1, given 3" in str(error.value)
    with RunDirectory(tmp_path / "run", config, resume=True) as run:
        assert run.path == tmp_path / "run"


def test_summary_json_refuses_non_finite_numbers(tmp_path):
    from keras_spkd.summary import atomic_write_json, read_summary, write_summary

    with pytest.raises(ValueError, match=r"x\.y holds a non-finite number \(nan\)"):
        atomic_write_json(tmp_path / "x", {"y": float("nan")})
    assert not (tmp_path / "x").exists()
    write_summary(tmp_path, "distill", config={}, accuracy={"sp": 0.5})
    assert read_summary(tmp_path)["schema_version"] == 1
    (tmp_path / "summary.json").write_text('{"schema_version": 99}')
    with pytest.raises(RunDirectoryError, match="schema_version 99"):
        read_summary(tmp_path)


# Finding 4 (the other half): a loss that becomes NaN stops the run; nothing is exported.
def test_a_non_finite_loss_stops_training_and_names_phase_and_epoch(tmp_path):
    config = ExperimentConfig(lr=1e12, schedule="constant", **TINY)
    with pytest.raises(NonFiniteLossError, match=r"phase '(teacher|alone)', epoch 1: .*loss"):
        experiment.run_distill(config, out=tmp_path / "run")
    assert not (tmp_path / "run" / "export").exists()
    assert not (tmp_path / "run" / "summary.json").exists()


# Finding 11: a .keras file that is not a valid archive.
def test_invalid_keras_files_are_named_as_such(tmp_path):
    text = tmp_path / "text.keras"
    text.write_text("not a model")
    with pytest.raises(DataError, match="exists but is not a valid .keras archive"):
        experiment.load_keras_file(text)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save(tmp_path / "ok.keras")
    cut = tmp_path / "cut.keras"
    cut.write_bytes((tmp_path / "ok.keras").read_bytes()[:300])
    with pytest.raises(DataError, match="not a valid .keras archive"):
        experiment.run_evaluate(cut, ExperimentConfig())
    with pytest.raises(DataError, match="does not exist"):
        experiment.load_keras_file(tmp_path / "missing.keras")


# Finding 12: the teacher cache.
@pytest.fixture
def cached(tmp_path):
    config = ExperimentConfig(**TINY)
    data = experiment.session.load_data(config)
    cache = TeacherCache(tmp_path / "teachers")
    teacher, meta = cache.get(config, data)
    return cache, config, data, teacher, meta


def test_cache_entries_carry_metadata_and_are_reused(cached, no_fit):
    cache, config, data, teacher, meta = cached
    assert meta["recipe"]["architecture"] == "digits-cnn-32" and meta["recipe"]["epochs"] == 1
    assert len(meta["sha256"]) == 64 and 0 <= meta["test_accuracy"] <= 1
    assert meta["keras_spkd_version"]
    again, _ = cache.get(config, data)
    assert no_fit == []  # reused, not retrained
    assert weights_fingerprint(again) == weights_fingerprint(teacher)


@pytest.mark.parametrize("damage", ["truncate", "replace"])
def test_a_bad_cache_entry_is_set_aside_and_retrained(cached, damage, caplog):
    cache, config, data, teacher, _ = cached
    path, _ = cache.paths(config)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    else:  # another valid model under the teacher's name
        other = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten()])
        other.add(keras.layers.Dense(10))
        other.save(path)
    with caplog.at_level("WARNING", logger="keras_spkd"):
        retrained, meta = cache.get(config, data)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "set aside" in warnings[0].getMessage()
    assert list(path.parent.glob(path.name + ".rejected-*"))
    assert retrained.name == "teacher" and meta["sha256"] != ""
    assert weights_fingerprint(retrained) == weights_fingerprint(teacher)  # same recipe


def test_two_processes_never_train_one_entry_at_once(cached):
    cache, config, data, _, _ = cached
    other = config.replace(teacher_epochs=2)
    path, _ = cache.paths(other)
    lock = filelock.FileLock(str(path) + ".lock")
    lock.acquire()
    done = []
    worker = threading.Thread(target=lambda: done.append(cache.get(other, data)))
    worker.start()
    worker.join(timeout=1.0)
    assert worker.is_alive() and not path.exists()  # waiting for the holder, not training
    lock.release()
    worker.join(timeout=120)
    assert done and path.exists()


# Finding 13: compare --seeds 0.
@pytest.mark.parametrize("seeds", [0, -1, 1.5])
def test_compare_refuses_bad_seed_counts_before_anything(seeds, tmp_path, no_fit):
    with pytest.raises(ConfigError, match="seeds must be an integer >= 1"):
        experiment.run_compare(ExperimentConfig(**TINY), seeds=seeds, out=tmp_path / "c")
    assert no_fit == [] and not (tmp_path / "c").exists()


def test_compare_fingerprints_equal_starts_and_orders(tmp_path):
    config = ExperimentConfig(kd_weight=1.0, **TINY)
    result = experiment.run_compare(config, methods="alone,sp,kd", seeds=2, out=tmp_path / "c")
    rows = result.rows
    assert [(r["seed"], r["method"]) for r in rows] == [
        (s, m) for s in range(2) for m in ("alone", "sp", "kd")
    ]
    for seed in range(2):
        mine = [r for r in rows if r["seed"] == seed]
        assert len({r["init_fingerprint"] for r in mine}) == 1
        assert len({r["order_fingerprint"] for r in mine}) == 1
        assert all(r["init_fingerprint"] == r["expected_init_fingerprint"] for r in mine)
    assert rows[0]["init_fingerprint"] != rows[3]["init_fingerprint"]
    assert rows[0]["order_fingerprint"] != rows[3]["order_fingerprint"]
    assert set(result.methods) == {"alone", "sp", "kd"}
    assert "diff_low" in result.methods["sp"] and "diff_mean" not in result.methods["alone"]
    assert (tmp_path / "c" / "results.md").read_text().startswith("Test accuracy on digits")
    # A rerun reuses every finished run.
    again = experiment.run_compare(config, methods="alone,sp,kd", seeds=2, out=tmp_path / "c")
    assert again.rows == rows


def test_weight_fingerprint_sees_a_permutation_that_a_checksum_cannot():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    before = weights_fingerprint(model)
    kernel, bias = model.get_weights()
    model.set_weights([kernel[::-1], bias])
    assert np.isclose(np.abs(kernel).sum(), np.abs(kernel[::-1]).sum())
    assert weights_fingerprint(model) != before


def test_paired_interval_matches_a_t_interval():
    from keras_spkd.experiment.compare import paired_interval

    mean, low, high = paired_interval([0.01, 0.02, 0.03])
    assert mean == pytest.approx(0.02)
    assert high - mean == pytest.approx(4.302652729 * 0.01 / 3**0.5, rel=1e-6)
    assert paired_interval([0.5]) == (0.5, 0.5, 0.5)


# Finding 14: compare and tune honour the strategy.
@pytest.mark.slow
def test_compare_and_search_run_under_the_configured_strategy(tmp_path, monkeypatch):
    import tensorflow as tf

    from keras_spkd import distribute

    asked = []

    def recording(kind="default", devices=None):
        asked.append(kind)
        return tf.distribute.get_strategy()

    monkeypatch.setattr(distribute, "make_strategy", recording)
    config = ExperimentConfig(strategy="mirrored", **TINY)
    experiment.run_compare(config, methods="alone", seeds=1, out=tmp_path / "c")
    experiment.run_search(config, tuner="random", max_trials=1, out=tmp_path / "t")
    assert asked == ["mirrored", "mirrored"]


def test_data_order_is_a_function_of_seed_and_epoch():
    data = experiment.session.load_data(ExperimentConfig(batch_size=64))
    first = [y.numpy() for _, y in data.epochs(0).take(2 * data.steps_per_epoch)]
    resumed = [y.numpy() for _, y in data.epochs(1).take(data.steps_per_epoch)]
    for a, b in zip(first[data.steps_per_epoch :], resumed):
        np.testing.assert_array_equal(a, b)  # epoch 1 is the same whatever came before
    assert data.order_fingerprint(0) != data.order_fingerprint(1)
    assert data.with_seed(1).order_fingerprint(0) != data.order_fingerprint(0)
    json.dumps(data.preprocessing)  # recorded in summaries as it is


# Issue "Layer pairs found for the user": --pairs auto, resolved once and recorded.
@pytest.mark.slow
def test_pairs_auto_is_resolved_before_training_and_recorded(tmp_path):
    config = ExperimentConfig(pairs="auto", **TINY)
    assert config.pairs == "auto"
    summary = experiment.run_distill(config, out=tmp_path / "run")
    assert summary.summary["config"]["pairs"] == [["group2", "group2"]]  # the paper's choice
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved["pairs"] == "auto"  # as given: resuming with "auto" is the same run
    result = experiment.run_compare(config, methods="alone,sp", seeds=1, out=tmp_path / "c")
    assert "pairs group2:group2" in result.table


def test_layers_command_marks_stage_ends(tmp_path, capsys):
    from keras_spkd.cli import main
    from keras_spkd.models import fashion_cnn

    fashion_cnn(4).save(tmp_path / "s.keras")
    assert main(["layers", str(tmp_path / "s.keras")]) == 0
    out = capsys.readouterr().out
    stage_rows = [line for line in out.splitlines() if "stage end" in line and "|" in line]
    assert [row.split("|")[1].strip() for row in stage_rows] == ["group1", "group2", "group3"]


@pytest.mark.slow
def test_search_pair_candidates_auto_are_every_suggested_stage(tmp_path):
    result = experiment.run_search(
        ExperimentConfig(**TINY),
        tuner="random",
        max_trials=2,
        out=tmp_path / "t",
        pair_candidates="auto",
    )
    assert {row["pair"] for row in result.trials} <= {"group1:group1", "group2:group2"}
    assert result.best_config.pairs[0] in [("group1", "group1"), ("group2", "group2")]
    assert (tmp_path / "t" / "best_config.json").is_file()
