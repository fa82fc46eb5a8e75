"""The workflow on bad input and hostile conditions (issue "Hardening 3").

Each test names its finding and failed on the code before the fix: one
line and exit code 2 where there was a traceback, nothing written before
a check fails, settings never mixed.
"""

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import filelock
import keras
import pytest

from keras_spkd.cli import main
from keras_spkd.experiment import ExperimentConfig, RunDirectory, TeacherCache
from keras_spkd.experiment.rundir import LOCK_NAME

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_SPKD_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def refuse_training(monkeypatch):
    def no_fit(*args, **kwargs):
        raise AssertionError("training started; the input should have been refused first")

    monkeypatch.setattr(keras.Model, "fit", no_fit)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keras-spkd: error: "), err
    return err[0]


def _cnn(input_shape=(8, 8, 1), classes=10):
    inputs = keras.Input(input_shape)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="group2")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(classes)(h))


# Finding 6: a teacher that does not fit the data: one line, exit 2, nothing written.
@pytest.mark.parametrize(
    "shape, classes, message",
    [
        ((8, 8, 1), 5, "has 5 outputs, but 'digits' has 10 classes"),
        ((16, 16, 1), 10, "takes inputs of shape (16, 16, 1), but 'digits' has images of shape"),
        ((8, 8, 3), 10, "takes inputs of shape (8, 8, 3)"),
    ],
)
def test_a_teacher_that_does_not_fit_the_data_is_refused_before_anything(
    shape, classes, message, tmp_path, capsys, refuse_training
):
    _cnn(shape, classes).save("t.keras")
    assert main(["distill", "--teacher", "t.keras", "--out", "run"]) == 2
    line = _one_line(capsys)
    assert message in line and "'t.keras'" in line
    assert not (tmp_path / "run").exists()
    assert main(["evaluate", "t.keras"]) == 2
    assert message in _one_line(capsys)


SUBCLASSED = """
import keras

class Mine(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(10)

    def call(self, x):
        return self.dense(keras.ops.reshape(x, (-1, 64)))

model = Mine()
model(keras.ops.zeros((1, 8, 8, 1)))
model.save("sub.keras")
"""


def test_an_unregistered_subclassed_model_is_one_line_everywhere(tmp_path, capsys, refuse_training):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", SUBCLASSED], env=env, check=True, timeout=300)
    for argv in (
        ["distill", "--teacher", "sub.keras", "--out", "run"],
        ["evaluate", "sub.keras"],
        ["layers", "sub.keras"],
    ):
        assert main(argv) == 2, argv
        line = _one_line(capsys)
        assert "'sub.keras' could not be loaded" in line and "subclassed" in line, line
    assert not (tmp_path / "run").exists()


# Finding 9: clear messages.
def test_layers_and_evaluate_say_what_a_folder_or_a_saved_model_is(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    (tmp_path / "export" / "saved_model").mkdir(parents=True)
    (tmp_path / "export" / "saved_model" / "saved_model.pb").write_bytes(b"x")
    for command in ("layers", "evaluate"):
        assert main([command, "folder"]) == 2
        assert "'folder' is a directory; expected a .keras file" in _one_line(capsys)
        assert main([command, "export/saved_model"]) == 2
        line = _one_line(capsys)
        assert "is a SavedModel folder" in line and "takes a .keras file" in line


def test_teacher_out_under_a_file_names_the_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["teacher", "--out", "afile/t.keras"]) == 2
    assert "lies under 'afile', which is a file" in _one_line(capsys)


def _distill_summary(run: Path, **accuracy) -> None:
    from keras_spkd.summary import write_summary

    with RunDirectory(run, ExperimentConfig()):
        pass
    write_summary(
        run,
        "distill",
        config=ExperimentConfig().to_dict(),
        gamma_label="100",
        accuracy={"teacher": 0.9, "alone": 0.8, "sp": 0.85, **accuracy},
    )


@pytest.mark.parametrize("accuracy", [{"teacher": "98%"}, {"teacher": None}, {"sp": 7}])
def test_report_on_an_edited_summary_is_one_clear_line(accuracy, tmp_path, capsys):
    _distill_summary(tmp_path / "run", **accuracy)
    assert main(["report", "run"]) == 2
    line = _one_line(capsys)
    assert "changed by hand or damaged" in line and "accuracy." in line, line


# Finding 17: the report does not write into a run another process is writing.
def test_report_refuses_a_run_directory_in_use(tmp_path, capsys):
    _distill_summary(tmp_path / "run")
    with filelock.FileLock(str(tmp_path / "run" / LOCK_NAME)):  # as a running run holds it
        assert main(["report", "run"]) == 2
        assert "in use by another keras-spkd run" in _one_line(capsys)
    assert not (tmp_path / "run" / "report.html").exists()
    assert main(["report", "run"]) == 0, capsys.readouterr().err


def test_the_table_names_kd_when_it_is_on_too():
    from keras_spkd.experiment.distill import accuracy_table

    summary = {
        "config": ExperimentConfig(kd_weight=1.0).to_dict(),
        "accuracy": {"teacher": 0.9, "alone": 0.8, "sp": 0.85},
        "gamma_label": "100",
    }
    assert "| student + SP + KD (gamma=100, kd_weight=1) |" in accuracy_table(summary)
    summary["config"]["kd_weight"] = 0.0
    assert "| student + SP (gamma=100) |" in accuracy_table(summary)


def test_an_empty_cache_variable_is_unset_not_the_current_directory(monkeypatch):
    from keras_spkd.experiment.teacher import cache_dir

    monkeypatch.setenv("KERAS_SPKD_CACHE", "")
    assert cache_dir() == Path.home() / ".cache" / "keras-spkd"


def test_run_files_get_the_mode_the_umask_gives_every_file(tmp_path):
    old = os.umask(0o022)
    try:
        with RunDirectory("run", ExperimentConfig()):
            pass
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    expected = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert expected == 0o644
    assert (tmp_path / "run" / "config.json").stat().st_mode & 0o777 == expected


# Finding 8 and 17: the cache is read without a lock; an edited metadata file is not trusted.
@pytest.fixture
def cached(tmp_path):
    from keras_spkd.data import load_digits

    config = ExperimentConfig(teacher_epochs=1)
    keras.utils.set_random_seed(0)
    TeacherCache().store(config, _cnn(), 0.5, fit_seconds=1.0)
    return config, load_digits(batch_size=64)


def test_a_valid_cached_teacher_is_read_without_a_lock_file(cached, refuse_training):
    config, data = cached
    cache = TeacherCache()
    teacher, meta = cache.get(config, data)
    assert meta["test_accuracy"] == 0.5 and teacher.outputs[0].shape[-1] == 10
    assert not list(cache.root.glob("*.lock"))  # a read-only cache would have refused one


def test_an_edited_cached_accuracy_is_not_trusted(cached, caplog):
    config, _ = cached
    cache = TeacherCache()
    assert cache.has_valid(config)
    meta_path = cache.paths(config)[1]
    meta = json.loads(meta_path.read_text())
    meta["test_accuracy"] = 0.999
    meta_path.write_text(json.dumps(meta))
    assert not cache.has_valid(config)
    assert cache._problem(config) == "its metadata was changed by hand"


# Finding 7: a full disk is one line naming the path; nothing half-written.
def test_a_full_disk_is_one_line_naming_the_path(tmp_path, monkeypatch, capsys, refuse_training):
    from keras_spkd import summary

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(summary, "atomic_write_text", full)
    assert main(["distill", "--out", "run"]) == 2
    line = _one_line(capsys)
    assert "no space left on the device while writing" in line and "config.json" in line
    assert not (tmp_path / "run" / "config.json").exists()  # a rerun starts cleanly


# Finding 4: an interrupted `teacher --out` resumes only with its own settings.
def _interrupted_teacher(config):
    with RunDirectory(".t.training", config, resume=True, kind="teacher"):
        pass


@pytest.mark.parametrize(
    "flags, difference",
    [
        (["--lr", "0.001", "--seed", "7"], "lr: saved 0.05, given 0.001"),
        (["--teacher-arch", "digits-cnn-8"], "teacher_arch: saved 'digits-cnn-32', given"),
    ],
)
def test_an_interrupted_teacher_with_other_settings_is_refused(
    flags, difference, tmp_path, capsys, refuse_training
):
    _interrupted_teacher(ExperimentConfig(teacher_epochs=1))
    assert main(["teacher", "--epochs", "1", "--out", "t.keras", *flags]) == 2
    line = _one_line(capsys)
    assert difference in line and "--overwrite" in line, line
    assert not (tmp_path / "t.keras").exists()


def test_an_interrupted_teacher_without_settings_needs_overwrite(tmp_path, capsys, refuse_training):
    (tmp_path / ".t.training" / "backup").mkdir(parents=True)  # as 0.2 left it
    assert main(["teacher", "--epochs", "1", "--out", "t.keras"]) == 2
    assert "pass --overwrite to train afresh" in _one_line(capsys)


def test_teacher_overwrite_starts_afresh(tmp_path, capsys):
    _interrupted_teacher(ExperimentConfig(teacher_epochs=1))
    (tmp_path / ".t.training" / "history.csv").write_text("epoch,loss\n0,9.9\n")
    argv = ["teacher", "--epochs", "1", "--out", "t.keras", "--teacher-arch", "digits-cnn-8"]
    assert main([*argv, "--overwrite"]) == 0
    assert (tmp_path / "t.keras").is_file() and not (tmp_path / ".t.training").exists()
    capsys.readouterr()
    assert main(argv) == 2  # t.keras exists now
    assert "pass --overwrite to replace it" in _one_line(capsys)


# Finding 10: a Ctrl-C that TensorFlow swallows (in its C++ export calls) still stops the run.
def _swallowed_ctrl_c():
    """SIGINT arriving inside a call that catches it, as TensorFlow's export does."""
    handler = signal.getsignal(signal.SIGINT)  # what the process runs on Ctrl-C
    with contextlib.suppress(KeyboardInterrupt):
        handler(signal.SIGINT, None)


def test_a_swallowed_ctrl_c_is_honoured_at_the_next_checkpoint():
    from keras_spkd.experiment.session import checkpoint, honour_interrupts

    with honour_interrupts():
        checkpoint("before")  # nothing pending: carries on
        _swallowed_ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            checkpoint("after the export")
    with honour_interrupts():
        checkpoint("a new call starts clean")


@pytest.mark.slow
def test_a_ctrl_c_swallowed_during_export_exits_130_and_resumes(tmp_path, monkeypatch, capsys):
    from keras_spkd.experiment import distill

    export_for = distill.export_for

    def export_hit_by_ctrl_c(*args, **kwargs):
        result = export_for(*args, **kwargs)
        _swallowed_ctrl_c()
        return result

    monkeypatch.setattr(distill, "export_for", export_hit_by_ctrl_c)
    argv = ["distill", "--epochs", "1", "--teacher-epochs", "1", "--tflite", "float", "--out", "r"]
    assert main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "keras-spkd: interrupted; rerun with --resume to continue."
    )
    assert not (tmp_path / "r" / "summary.json").exists()
    monkeypatch.setattr(distill, "export_for", export_for)
    assert main([*argv, "--resume"]) == 0
    assert (tmp_path / "r" / "summary.json").is_file()


def test_a_cache_that_cannot_store_the_teacher_is_refused_before_the_run(
    tmp_path, monkeypatch, capsys, refuse_training
):
    """Finding 8: a read-only cache without the teacher fails before anything is created."""
    from keras_spkd.experiment import session

    (tmp_path / "cache" / "teachers").mkdir(parents=True)
    monkeypatch.setattr(session, "writable", lambda folder: False)  # root ignores chmod
    assert main(["distill", "--out", "run"]) == 2
    line = _one_line(capsys)
    assert "is not writable and holds no teacher for these settings" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("{{function_node __wrapped__SaveV2}} ... : No space left on device"),
        OSError("Unable to synchronously create file (file write failed: No space left on device)"),
    ],
)
def test_a_full_disk_worded_by_tensorflow_or_h5py_is_one_line(
    error, tmp_path, monkeypatch, capsys, refuse_training
):
    from keras_spkd import summary

    def full(path, text):
        raise error

    monkeypatch.setattr(summary, "atomic_write_text", full)
    assert main(["distill", "--out", "run"]) == 2
    assert "no space left on the device" in _one_line(capsys)


def test_a_changed_data_fingerprint_is_said_in_words():
    from keras_spkd.experiment.config import differences

    changed = differences(
        {"data_fingerprint": "a1", "epochs": 3}, {"data_fingerprint": "b2", "epochs": 3}
    )
    assert changed == [
        "the data changed since the run started (files added, removed or edited: "
        "fingerprint saved 'a1', now 'b2')"
    ]
    assert differences({"epochs": 3}, {"epochs": 4}) == ["epochs: saved 3, given 4"]


def test_teachers_cached_before_weight_decay_reached_them_are_not_reused():
    from keras_spkd.experiment.teacher import recipe

    plain = recipe(ExperimentConfig(dataset="digits"))
    decayed = recipe(ExperimentConfig(dataset="digits", weight_decay=1e-3))
    assert "weight_decay_on" not in plain  # default caches keep their names
    assert decayed["weight_decay_on"] == "kernels (0.3.1)"
