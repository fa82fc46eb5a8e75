"""`keras-spkd`: the main job end to end, resume after a kill, one-line errors."""

import base64
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from keras_spkd.cli import main
from keras_spkd.errors import RunDirectoryError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return {
        **os.environ,
        "KERAS_SPKD_CACHE": str(cache),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(ROOT),
    }


def _cli(*args, env, cwd, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "keras_spkd.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


def _history(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def default_run(env, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("run")
    result = _cli(
        "distill", "--epochs", "2", "--teacher-epochs", "2", "--out", "run", env=env, cwd=cwd
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd / "run", result


@pytest.mark.slow
def test_distill_default_writes_a_complete_run_directory(default_run):
    run, result = default_run
    for name in (
        "config.json",
        "summary.json",
        "similarity.png",
        "student_init.weights.h5",
        "alone/history.csv",
        "alone/student.keras",
        "sp/history.csv",
        "sp/student.keras",
        "export/saved_model/saved_model.pb",
        "export/student_float.tflite",
    ):
        assert (run / name).is_file(), name
    assert (run / "similarity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["schema_version"] == 1 and summary["kind"] == "distill"
    for key in ("teacher", "alone", "sp"):
        assert 0.0 <= summary["accuracy"][key] <= 1.0
        assert f"{summary['accuracy'][key]:.2%}" in result.stdout  # the printed table
    assert summary["export"]["saved_model_max_abs_diff"] < 1e-5
    assert "| tflite int8 |" in result.stdout  # each export's size and accuracy
    # No TensorFlow / TFLite C++ lines among the job's output (TFLite's bypass the levels).
    cpp = r"^([IWEF]\d{4} |INFO: Created TensorFlow Lite|fully_quantize: )"
    assert not re.search(cpp, result.stdout + result.stderr, re.M), result.stderr[-2000:]
    assert (
        summary["phases"]["alone"]["init_fingerprint"]
        == summary["phases"]["sp"]["init_fingerprint"]
    )
    assert (
        summary["phases"]["alone"]["order_fingerprint"]
        == summary["phases"]["sp"]["order_fingerprint"]
    )
    sp_rows = _history(run / "sp" / "history.csv")
    assert [row["epoch"] for row in sp_rows] == ["0", "1"]
    assert float(sp_rows[0]["sp_loss"]) > 0 and "val_sp_loss" in sp_rows[0]
    assert "sp_loss" not in _history(run / "alone" / "history.csv")[0]
    config = json.loads((run / "config.json").read_text())["config"]
    assert (config["dataset"], config["student_arch"], config["pairs"]) == (
        "digits",
        "digits-cnn-8",
        [["group2", "group2"]],
    )


@pytest.mark.slow
def test_second_run_reuses_the_cached_teacher_and_refuses_to_overwrite(default_run, env):
    run, _ = default_run
    again = _cli(
        "distill",
        "--epochs",
        "2",
        "--teacher-epochs",
        "2",
        "--out",
        "run2",
        env=env,
        cwd=run.parent,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Reusing the cached teacher" in again.stderr
    assert "Training the teacher" not in again.stderr
    # Same data order whether the teacher was trained in this process or not.
    for phase in ("alone", "sp"):
        assert _history(run.parent / "run2" / phase / "history.csv") == _history(
            run / phase / "history.csv"
        )
    clash = _cli("distill", "--epochs", "1", "--out", "run", env=env, cwd=run.parent)
    assert clash.returncode == 2 and "already holds a run; pass resume" in clash.stderr


@pytest.mark.slow
def test_evaluate_and_export_subcommands(default_run, capsys, tmp_path):
    run, _ = default_run
    assert main(["evaluate", str(run / "sp" / "student.keras")]) == 0
    logs = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert logs["accuracy"] == pytest.approx(summary["accuracy"]["sp"], abs=1e-6)
    assert (
        main(
            [
                "export",
                str(run / "sp" / "student.keras"),
                "--out",
                str(tmp_path / "x"),
                "--tflite",
                "dynamic",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{") :])
    assert report["tflite"]["dynamic"]["agreement"] >= 0.9
    assert report["saved_model_max_abs_diff"] < 1e-5
    assert (tmp_path / "x" / "student_dynamic.tflite").is_file()


RESUME_ARGS = ["distill", "--epochs", "4", "--teacher-epochs", "3", "--batch-size", "32"]


def _rows(path: Path) -> int:
    try:
        return len(_history(path))
    except (OSError, csv.Error):
        return 0


def _start(args, env, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "keras_spkd.cli", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, process, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None and not condition():
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be interrupted"


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted run, with its own fresh teacher cache."""
    cwd = tmp_path_factory.mktemp("reference")
    env = {**os.environ, "KERAS_SPKD_CACHE": str(cwd / "cache"), "PYTHONPATH": str(ROOT)}
    result = _cli(*RESUME_ARGS, "--out", "run", env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd / "run", result.stdout


def _weights(path):
    import keras

    return keras.saving.load_model(path).get_weights()


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["teacher", "alone", "sp", "export"])
def test_killed_anywhere_resume_ends_with_the_same_weights_and_table(
    phase, reference_run, tmp_path
):
    """Kill -9 in each phase; --resume gives what an uninterrupted run gave, exactly."""
    import numpy as np

    reference, table = reference_run
    env = {**os.environ, "KERAS_SPKD_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    run = tmp_path / "run"
    conditions = {
        "teacher": lambda: any(
            _rows(p / "history.csv") >= 1 for p in (tmp_path / "cache").glob("teachers/*.training")
        ),
        "alone": lambda: _rows(run / "alone" / "history.csv") >= 2,
        "sp": lambda: _rows(run / "sp" / "history.csv") >= 2,
        "export": lambda: (run / "export").exists(),
    }
    process = _start([*RESUME_ARGS, "--out", "run"], env, tmp_path)
    _wait_for(conditions[phase], process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert not (run / "summary.json").exists()

    resumed = _cli(*RESUME_ARGS, "--out", "run", "--resume", env=env, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def rows(out):
        # The SavedModel's size holds TensorFlow's function names, numbered by a
        # process-wide counter: a resumed process traced fewer functions, so the size
        # may differ by tens of bytes. Everything else must be equal.
        return [
            re.sub(r"^\| saved_model \| [\d.]+ KiB", "| saved_model | - KiB", line)
            for line in out.splitlines()
            if line.startswith("| ")
        ]

    assert rows(resumed.stdout) == rows(table) and len(rows(table)) >= 8  # accuracy + exports
    for name in ("alone/student.keras", "sp/student.keras"):
        for a, b in zip(_weights(reference / name), _weights(run / name)):
            np.testing.assert_array_equal(a, b)
    for name in ("alone/history.csv", "sp/history.csv"):
        assert _history(run / name) == _history(reference / name)


@pytest.mark.slow
def test_two_runs_in_one_directory_the_second_is_refused_at_once(env, tmp_path):
    first = _start(
        ["distill", "--epochs", "3", "--teacher-epochs", "2", "--out", "same"], env, tmp_path
    )
    _wait_for(lambda: (tmp_path / "same" / "config.json").exists(), first)
    second = _cli("distill", "--epochs", "3", "--out", "same", "--resume", env=env, cwd=tmp_path)
    assert second.returncode == 2
    assert "is in use by another keras-spkd run" in second.stderr
    assert first.wait(timeout=300) == 0
    for phase in ("alone", "sp"):  # one writer: no interleaved rows
        assert [r["epoch"] for r in _history(tmp_path / "same" / phase / "history.csv")] == [
            "0",
            "1",
            "2",
        ]
    assert main(["report", str(tmp_path / "same")]) == 0


CTRL_C_MARKERS = {  # log lines that say a phase has begun
    "teacher": "Training the teacher",
    "alone": "Training the student digits-cnn-8 (alone)",
    "export": "Exporting the SP student",  # TensorFlow swallows SIGINT in its C++ export calls
}


@pytest.mark.slow
@pytest.mark.parametrize("phase", list(CTRL_C_MARKERS))
def test_ctrl_c_prints_one_line_exits_130_and_leaves_a_resumable_run(phase, tmp_path):
    """SIGINT once the phase's log line is out: no sleeps, whatever the machine's load."""
    env = {
        **os.environ,
        "KERAS_SPKD_CACHE": str(tmp_path / "cache"),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(ROOT),
    }
    args = ["distill", "--epochs", "2", "--teacher-epochs", "2", "--tflite", "float", "--out", "r"]
    process = _start(args, env, tmp_path)
    seen = []
    for line in process.stderr:  # Python's stderr is line-buffered, even into a pipe
        seen.append(line)
        if CTRL_C_MARKERS[phase] in line:
            process.send_signal(signal.SIGINT)
            break
    _, err = process.communicate(timeout=300)
    err = "".join(seen) + err
    assert any(CTRL_C_MARKERS[phase] in line for line in seen), err[-3000:]
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "keras-spkd: interrupted; rerun with --resume to continue."
    )
    assert not (tmp_path / "r" / "summary.json").exists()
    resumed = _cli(*args, "--resume", env=env, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (tmp_path / "r" / "summary.json").is_file()


def test_resume_with_another_setting_is_refused_listing_it(tmp_path, monkeypatch, capsys):
    from keras_spkd.experiment import ExperimentConfig, RunDirectory

    monkeypatch.chdir(tmp_path)
    with RunDirectory("run", ExperimentConfig()):
        pass
    assert main(["distill", "--out", "run", "--resume", "--gamma", "5000"]) == 2
    err = capsys.readouterr().err
    assert "gamma: saved 100.0, given 5000.0" in err and len(err.strip().splitlines()) == 1


def test_a_bug_keeps_its_traceback_and_is_not_exit_code_2(monkeypatch, tmp_path):
    from keras_spkd import experiment

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(experiment, "run_distill", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["distill"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["distill", "--teacher", "missing.keras"], "Teacher file 'missing.keras' does not exist"),
        (["distill", "--student-arch", "resnet-9"], "Unknown model 'resnet-9'"),
        (["distill", "--pairs", "group2:nope"], "student 'student' has no layer 'nope'"),
        (["distill", "--pairs", "group2"], "TEACHER_LAYER:STUDENT_LAYER"),
        (["distill", "--dataset", "no_such_dataset_xyz"], "Unknown dataset"),
        (["evaluate", "nothing.keras"], "Model file 'nothing.keras' does not exist"),
        (["distill", "--gamma", "nan"], "gamma must be finite; received nan"),
        (["distill", "--gamma", "inf"], "gamma must be finite; received inf"),
        (["distill", "--gamma", "-1"], "gamma must be >= 0; received -1"),
        (["distill", "--epochs", "0"], "epochs must be >= 1; received 0"),
        (["distill", "--epochs", "-1"], "epochs must be >= 1; received -1"),
        (["distill", "--batch-size", "5000"], "at most the training set's size (1257"),
        (["distill", "--batch-size", "0"], "batch_size must be >= 1; received 0"),
        (["distill", "--batch-size", "-5"], "batch_size must be >= 1; received -5"),
        (["compare", "--seeds", "0"], "seeds must be an integer >= 1; received 0"),
        (["compare", "--methods", "alone,fitnets"], "Unknown method 'fitnets'"),
        (["tune", "--max-trials", "0"], "max_trials must be an integer >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_SPKD_CACHE", str(tmp_path))
    assert main([*argv, "--out", "run"] if argv[0] != "evaluate" else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keras-spkd: error: ")
    assert message in err[0]
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_config_file_supplies_defaults_that_flags_override(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "best.json").write_text(json.dumps({"pairs": "group2:from_config"}))
    assert main(["--config", "best.json", "distill", "--out", "run"]) == 2
    assert "no layer 'from_config'" in capsys.readouterr().err
    assert main(["--config", "best.json", "distill", "--pairs", "group2:flag", "--out", "r"]) == 2
    assert "no layer 'flag'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2]", "must be a JSON object of settings; received a list"),
        ('{"pairs": ["a", "b"]}', "pairs expects (teacher layer, student layer) pairs"),
        ('{"gama": 5000}', "'gama' (did you mean 'gamma'?)"),
        ('{"epochs": 2.5}', "epochs must be an integer >= 1; received 2.5"),
        ('{"func": "x"}', "Unknown config key(s): 'func'"),
        ('{"gamma": [1, 2]}', "gamma lists 2 values but there are 1 layer pairs"),
    ],
)
def test_config_file_problems_are_one_line_before_anything_is_written(
    content, message, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.json").write_text(content)
    assert main(["--config", "c.json", "distill", "--out", "run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "out, message",
    [
        ("afile", "is a file; a run needs a directory"),
        ("afile/run", "lies under 'afile', which is a file"),
        ("/proc/keras-spkd-run", "Cannot create the run directory"),
    ],
)
def test_out_paths_that_cannot_hold_a_run_are_one_line(out, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_SPKD_CACHE", str(tmp_path / "cache"))
    (tmp_path / "afile").write_text("x")
    argv = ["distill", "--epochs", "1", "--teacher-epochs", "1", "--out", out]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize("content", [b"not a model", b"PK\x03\x04truncated"])
def test_export_and_evaluate_name_an_invalid_keras_file(content, capsys, tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(content)
    for argv in (["evaluate", str(path)], ["export", str(path), "--out", str(tmp_path / "x")]):
        assert main(argv) == 2
        assert "exists but is not a valid .keras archive" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--train-images", "100"], ["--augment", "crop"]])
@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_evaluate_and_export_refuse_training_only_flags(command, flag, capsys):
    # they train nothing: a training subset or augmentation would be accepted and ignored
    with pytest.raises(SystemExit) as stop:
        main([command, "m.keras", *flag])
    assert stop.value.code == 2
    assert f"unrecognized arguments: {' '.join(flag)}" in capsys.readouterr().err


def test_readme_commands_and_ci_agree():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    commands = re.findall(r"^```(?:bash|sh)\n(.*?)\n```", readme, flags=re.M | re.S)
    assert ci in commands, "the .ci/run command must be the README's test command"
    assert any("keras-spkd distill" in c and "pip install" in c for c in commands)


def _backup(folder, epoch, prev=None, weights=b"", prev_weights=b""):
    """A BackupAndRestore folder as a kill may leave it (real h5 files where asked)."""
    import keras

    folder.mkdir(exist_ok=True)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    for name, content, meta, value in (
        ("latest.weights.h5", weights, "training_metadata.json", epoch),
        ("latest.weights.h5.bkp", prev_weights, "training_metadata.json.bkp", prev),
    ):
        if content == b"ok":
            model.save_weights(folder / "whole.weights.h5")
            (folder / "whole.weights.h5").rename(folder / name)
        elif content:
            (folder / name).write_bytes(content)
        if value is not None:
            (folder / meta).write_text(
                value if isinstance(value, str) else json.dumps({"epoch": value, "batch": 0})
            )


@pytest.mark.parametrize(
    "state, expected, kept",
    [
        ({"epoch": 3, "prev": 2, "weights": b"ok", "prev_weights": b"ok"}, 3, True),
        ({"epoch": 1, "weights": b"ok"}, 1, True),  # the first save, whole
        # killed while writing the weights: the previous pair is restored
        ({"epoch": 2, "prev": 2, "weights": b"\x89HDF\r\n\x1a\n", "prev_weights": b"ok"}, 2, True),
        # killed after the new weights, before the new metadata: epoch and weights disagree
        ({"epoch": 2, "prev": 2, "weights": b"ok", "prev_weights": b"ok"}, 2, True),
        # killed while writing the metadata
        ({"epoch": '{"epo', "prev": 4, "weights": b"ok", "prev_weights": b"ok"}, 4, True),
        # the first save cut off: nothing usable, the phase restarts
        ({"epoch": None, "weights": b"ok"}, 0, False),
        ({"epoch": 3, "weights": b"\x89HDF\r\n\x1a\n" + b"\0" * 40}, 0, False),
    ],
)
def test_a_backup_cut_by_a_kill_is_made_consistent(state, expected, kept, tmp_path):
    from keras_spkd import _compat

    folder = tmp_path / "backup"
    _backup(folder, **state)
    assert _compat.settle_backup(folder) == expected
    assert folder.exists() == kept
    if kept:
        assert _compat.backup_epoch(folder) == expected


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.open, self.images, self.headings, self.text = [], [], [], []
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        if tag not in ("meta", "img", "br", "link"):
            self.open.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._in_heading = tag == "h2"

    def handle_endtag(self, tag):
        assert self.open and self.open.pop() == tag, f"unbalanced </{tag}>"
        self._in_heading = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_heading:
            self.headings.append(data)


@pytest.mark.slow
def test_distill_writes_a_valid_self_contained_report(default_run, capsys, tmp_path):
    run, result = default_run
    assert "Report: run/report.html" in result.stdout
    page = _Page()
    page.feed((run / "report.html").read_text())
    page.close()
    assert page.open == []  # every element closed
    assert page.headings == [
        "Test accuracy",
        "Data",
        "Exported student (fed images as stored)",
        "Final epoch",
        "Training curves",
        "Similarity matrices during training",
        "Teacher, student alone and SP student",
        "Configuration",
    ]
    summary = json.loads((run / "summary.json").read_text())
    assert f"{summary['accuracy']['sp']:.2%}" in "".join(page.text)
    assert len(page.images) == 4  # curves, first and last epoch, final comparison
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (run / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert linked and all((run / link).is_file() for link in linked)
    assert "sp/similarity/similarity_epoch001.png" in linked
    assert main(["report", str(run)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert main(["report", str(run / "no_such_run")]) == 2
    capsys.readouterr()
    assert main(["report", str(run / "summary.json")]) == 2
    assert "is a file; report takes a run directory" in capsys.readouterr().err
    # a killed run (no summary.json yet) is reported as unfinished, not as a finished one
    killed = tmp_path / "killed"
    shutil.copytree(run, killed)
    (killed / "summary.json").unlink()
    capsys.readouterr()
    assert main(["report", str(killed)]) == 0
    assert "is unfinished (no summary.json)" in capsys.readouterr().out
    page = _Page()
    page.feed((killed / "report.html").read_text())
    assert page.headings[0] == "Unfinished run" and "Test accuracy" not in page.headings
    assert "Recorded so far: student alone and student + SP." in "".join(page.text)
    assert "## Unfinished run" in (killed / "report.md").read_text()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)"
)
def test_report_renders_in_headless_chromium(default_run, tmp_path):
    from matplotlib.image import imread

    run, _ = default_run
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--hide-scrollbars",
            "--window-size=1200,2600",
            f"--screenshot={shot}",
            (run / "report.html").as_uri(),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    pixels = imread(shot)
    assert pixels.shape[:2] == (2600, 1200)
    # The heat maps' viridis colours (dark purple to yellow) fill part of the page.
    rgb = pixels[..., :3]
    colourful = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.3
    assert colourful.mean() > 0.05


@pytest.mark.slow
def test_the_teacher_does_not_depend_on_which_command_trained_it(tmp_path):
    import keras
    import numpy as np

    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(ROOT),
        "KERAS_SPKD_CACHE": str(tmp_path / "cache"),
    }
    for argv in (
        ["teacher", "--epochs", "1", "--out", "t.keras"],
        ["distill", "--teacher-epochs", "1", "--epochs", "1", "--out", "run"],
    ):
        result = _cli(*argv, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
    alone = keras.saving.load_model(tmp_path / "t.keras")
    (cached_path,) = (tmp_path / "cache" / "teachers").glob("digits-digits-cnn-32-e1-s0-*.keras")
    cached = keras.saving.load_model(cached_path)
    for a, b in zip(alone.get_weights(), cached.get_weights()):
        np.testing.assert_array_equal(a, b)


# Found by a hostile-user pass over this round's CLI.
def test_a_refused_out_is_left_untouched(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    assert main(["distill", "--out", "mine"]) == 2
    assert "holds no keras-spkd run" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_resume_with_another_teacher_file_is_refused(tmp_path, monkeypatch, capsys):
    import keras

    from keras_spkd.experiment import ExperimentConfig, RunDirectory
    from keras_spkd.experiment.session import teacher_record
    from keras_spkd.models import digits_cnn

    monkeypatch.chdir(tmp_path)
    keras.utils.set_random_seed(0)
    digits_cnn(8).save("t.keras")
    config = ExperimentConfig(teacher="t.keras")
    with RunDirectory("run", config, extra=teacher_record(config)):
        pass
    keras.utils.set_random_seed(1)
    digits_cnn(8).save("t.keras")  # another teacher under the same name
    assert main(["distill", "--out", "run", "--resume"]) == 2
    assert "teacher_sha256: saved" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tune", "--gamma-max", "nan", "--out", "t"], "gamma_range must be a finite number"),
        (["teacher", "--out", "afile/t.keras"], "afile"),
        (["export", "m.keras", "--out", "afile"], "exists and is not empty"),
        (["bench", "--steps", "1"], "--steps must be >= 2"),
        (["bench", "--pair", "a:b:c"], "--pair expects TEACHER_LAYER:STUDENT_LAYER"),
        (["report", "cmp"], "holds a compare run; the report covers distill runs"),
        (["distill", "--data-dir", "/nonexistent"], "data_dir '/nonexistent' is not a directory"),
    ],
)
def test_more_bad_input_is_one_line(argv, message, tmp_path, monkeypatch, capsys):
    import keras

    from keras_spkd.experiment import ExperimentConfig, RunDirectory

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten()]).save("m.keras")
    with RunDirectory("cmp", ExperimentConfig(), kind="compare"):
        pass
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "t").exists()


def test_evaluate_takes_any_batch_size(tmp_path, capsys):
    from keras_spkd.models import digits_cnn

    digits_cnn(4).save(tmp_path / "s.keras")
    assert main(["evaluate", str(tmp_path / "s.keras"), "--batch-size", "1"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1


@pytest.mark.slow
def test_damaged_results_are_redone_to_the_same_table(env, tmp_path):
    args = ["distill", "--epochs", "2", "--teacher-epochs", "1", "--tflite", "float"]
    first = _cli(*args, "--out", "run", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    run = tmp_path / "run"
    (run / "alone" / "result.json").write_text('{"test_acc')
    (run / "sp" / "student.keras").write_bytes(b"PK\x03\x04cut")
    (run / "student_init.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\ncut")
    (run / "summary.json").unlink()
    again = _cli(*args, "--out", "run", "--resume", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("damaged") == 3

    def rows(out):
        return [line for line in out.splitlines() if line.startswith("| ")]

    assert rows(again.stdout) == rows(first.stdout)


# Issue "Hardening 3": settings never silently dropped or mixed.
@pytest.fixture
def refuse_training(monkeypatch):
    """A test using it fails (instead of training for minutes) if anything trains."""
    import keras

    def no_fit(*args, **kwargs):
        raise AssertionError("training started; the settings should have been refused first")

    monkeypatch.setattr(keras.Model, "fit", no_fit)


def _config(argv):
    from keras_spkd.cli import build_config, build_parser

    return build_config(build_parser().parse_args(argv))


def test_a_config_file_and_a_dataset_flag_merge_field_by_field(tmp_path):
    """Finding 1: preset < file < flags; the flag's dataset does not reset the file."""
    from keras_spkd.experiment import PRESETS

    (tmp_path / "f.json").write_text(json.dumps({"dataset": "digits", "gamma": 7.0, "seed": 3}))
    config = _config(
        ["--config", str(tmp_path / "f.json"), "distill", "--dataset", "fashion_mnist"]
    )
    assert (config.dataset, config.gamma, config.seed) == ("fashion_mnist", 7.0, 3)
    assert config.teacher_arch == PRESETS["fashion_mnist"]["teacher_arch"]
    (tmp_path / "g.json").write_text(json.dumps({"gamma": 7.0}))  # no dataset key
    config = _config(
        ["--config", str(tmp_path / "g.json"), "distill", "--dataset", "fashion_mnist"]
    )
    assert (config.dataset, config.gamma) == ("fashion_mnist", 7.0)
    config = _config(["--config", str(tmp_path / "g.json"), "distill", "--gamma", "9"])
    assert (config.dataset, config.gamma) == ("digits", 9.0)


def test_a_written_config_with_another_dataset_keeps_only_what_was_chosen(tmp_path):
    """Finding 1: a digits best_config.json holds every field; only explicit ones carry over."""
    from keras_spkd.experiment import PRESETS, ExperimentConfig

    ExperimentConfig(dataset="digits", gamma=7.0, epochs=3).to_json(tmp_path / "best.json")
    written = json.loads((tmp_path / "best.json").read_text())
    assert written["teacher_arch"] == "digits-cnn-32"  # every field, presets filled in
    assert written["explicit"] == ["epochs", "gamma"]
    config = _config(
        ["--config", str(tmp_path / "best.json"), "distill", "--dataset", "fashion_mnist"]
    )
    fashion = PRESETS["fashion_mnist"]
    assert (config.gamma, config.epochs) == (7.0, 3)
    assert (config.teacher_arch, config.student_arch, config.teacher_epochs) == (
        fashion["teacher_arch"],
        fashion["student_arch"],
        fashion["teacher_epochs"],
    )
    same = _config(["--config", str(tmp_path / "best.json"), "distill"])
    assert same == ExperimentConfig(dataset="digits", gamma=7.0, epochs=3)
    in_python = ExperimentConfig.from_json(tmp_path / "best.json").replace(dataset="fashion_mnist")
    assert in_python == config


def test_resume_with_a_config_file_compares_the_merged_settings(
    tmp_path, monkeypatch, capsys, refuse_training
):
    """Finding 3: `--config g7.json distill --resume` is compared, file and flags together."""
    from keras_spkd.experiment import ExperimentConfig, RunDirectory

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_SPKD_CACHE", str(tmp_path / "cache"))
    with RunDirectory("run", ExperimentConfig()):
        pass
    (tmp_path / "g7.json").write_text(json.dumps({"gamma": 7.0}))
    assert main(["--config", "g7.json", "distill", "--out", "run", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gamma: saved 100.0, given 7.0" in err[0]


def test_a_run_directory_edited_by_hand_is_refused_naming_the_edit(
    tmp_path, monkeypatch, capsys, refuse_training
):
    """Finding 2: config.json edited between a kill and --resume."""
    from keras_spkd.experiment import ExperimentConfig, RunDirectory

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_SPKD_CACHE", str(tmp_path / "cache"))
    with RunDirectory("run", ExperimentConfig(epochs=8)):
        pass
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    record["config"]["gamma"], record["config"]["epochs"] = 50.0, 10
    (tmp_path / "run" / "config.json").write_text(json.dumps(record))
    assert main(["distill", "--out", "run", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "changed by hand" in err[0], err
    assert "gamma: saved 100.0, now 50.0" in err[0] and "epochs: saved 8, now 10" in err[0]
    edited = RunDirectory("run", ExperimentConfig(gamma=50.0, epochs=10), resume=True)
    with pytest.raises(RunDirectoryError, match="changed by hand"):
        edited.__enter__()


def test_ctrl_c_says_how_each_command_resumes(capsys):
    import argparse

    from keras_spkd.cli import _run

    def interrupted(args):
        raise KeyboardInterrupt

    assert _run(argparse.Namespace(func=interrupted, resume=False)) == 130
    assert capsys.readouterr().err.strip().endswith("rerun with --resume to continue.")
    assert _run(argparse.Namespace(func=interrupted)) == 130  # compare, tune: no --resume
    assert "rerun the same command to continue where it stopped" in capsys.readouterr().err


def test_a_run_directory_config_json_starts_another_command():
    """A run's `config.json` is a record (kind, config, settings_sha256): its settings are used."""
    from keras_spkd.experiment import ExperimentConfig, RunDirectory

    record = ROOT / "tuning" / "evidence" / "evidence-digits" / "compare" / "config.json"
    saved = ExperimentConfig.from_dict(RunDirectory.saved_config(record.parent))
    assert saved.epochs == 30 and saved.tflite == ()  # the evidence run's own settings
    assert _config(["--config", str(record), "compare"]) == saved
    assert _config(["--config", str(record), "compare", "--epochs", "2"]) == saved.replace(epochs=2)


def test_compare_keeps_a_config_files_kd_weight_and_defaults_only_unset_ones(monkeypatch):
    """A tuned KD weight in --config was overridden by compare's flag default (1) unseen."""
    from keras_spkd import experiment
    from keras_spkd.errors import ConfigError

    seen = []

    def fake(config, **kwargs):
        seen.append(config)
        raise ConfigError("stop here")

    monkeypatch.setattr(experiment, "run_compare", fake)
    tuned = ROOT / "tuning" / "evidence" / "evidence-digits" / "tune-kd" / "best_config.json"
    file_weights = json.loads(tuned.read_text())
    assert file_weights["kd_weight"] > 5 and file_weights["at_weight"] == 0  # the search's pick
    for argv, kd, at in (
        (["compare"], 1.0, 1000.0),  # nothing given: compare's defaults
        (["--config", str(tuned), "compare"], file_weights["kd_weight"], 1000.0),
        (["--config", str(tuned), "compare", "--kd-weight", "2", "--at-weight", "5"], 2.0, 5.0),
        (["compare", "--kd-weight", "0", "--at-weight", "0"], 0.0, 0.0),  # a flag as given
    ):
        assert main(argv) == 2
        assert (seen[-1].kd_weight, seen[-1].at_weight) == (kd, at)
    assert seen[1].temperature == file_weights["temperature"]
