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
    for key in ("teacher_test_accuracy", "student_alone_test_accuracy", "sp_student_test_accuracy"):
        assert 0.0 <= summary[key] <= 1.0
        assert f"{summary[key]:.2%}" in result.stdout  # the printed table
    assert summary["export"]["saved_model_max_abs_diff"] < 1e-5
    sp_rows = _history(run / "sp" / "history.csv")
    assert [row["epoch"] for row in sp_rows] == ["0", "1"]
    assert float(sp_rows[0]["sp_loss"]) > 0 and "val_sp_loss" in sp_rows[0]
    assert "sp_loss" not in _history(run / "alone" / "history.csv")[0]
    config = json.loads((run / "config.json").read_text())
    assert (config["dataset"], config["student_arch"], config["pairs"]) == (
        "digits",
        "digits-cnn-8",
        "group2:group2",
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
    assert clash.returncode == 2 and "already holds a run; pass --resume" in clash.stderr


@pytest.mark.slow
def test_evaluate_and_export_subcommands(default_run, capsys, tmp_path):
    run, _ = default_run
    assert main(["evaluate", str(run / "sp" / "student.keras")]) == 0
    logs = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert logs["accuracy"] == pytest.approx(summary["sp_student_test_accuracy"], abs=1e-6)
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
    assert report["tflite"]["dynamic"]["argmax_agreement"] >= 0.9
    assert report["saved_model_max_abs_diff"] < 1e-5
    assert (tmp_path / "x" / "student_dynamic.tflite").is_file()


@pytest.mark.slow
def test_killed_run_resumes_without_losing_or_repeating_epochs(env, tmp_path):
    args = [
        "distill",
        "--epochs",
        "10",
        "--teacher-epochs",
        "2",
        "--batch-size",
        "16",
        "--out",
        "run",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_spkd.cli", *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    history = tmp_path / "run" / "sp" / "history.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if history.exists() and len(_history(history)) >= 3:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    before = _history(history)
    assert 3 <= len(before) < 10
    assert not (tmp_path / "run" / "summary.json").exists()

    resumed = _cli(*args, "--resume", env=env, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Phase 'alone' already finished" in resumed.stderr
    after = _history(history)
    assert [int(row["epoch"]) for row in after] == list(range(10))
    kept = min(len(before), len(after))
    assert after[: kept - 1] == before[: kept - 1]  # finished epochs untouched
    assert (
        json.loads((tmp_path / "run" / "summary.json").read_text())["phases"]["sp"]["epochs"] == 10
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["distill", "--teacher", "missing.keras"], "Teacher file 'missing.keras' does not exist"),
        (["distill", "--student-arch", "resnet-9"], "Unknown architecture 'resnet-9'"),
        (["distill", "--pairs", "group2:nope"], "student 'student' has no layer 'nope'"),
        (["distill", "--pairs", "group2"], "TEACHER_LAYER:STUDENT_LAYER"),
        (["distill", "--dataset", "no_such_dataset_xyz"], "Unknown dataset"),
        (["evaluate", "nothing.keras"], "Model file 'nothing.keras' does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_SPKD_CACHE", str(tmp_path))
    assert main([*argv, "--out", "run"] if argv[0] == "distill" else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keras-spkd: error: ")
    assert message in err[0]
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_config_file_supplies_option_defaults(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "best.json").write_text(json.dumps({"pairs": "group2:from_config"}))
    assert main(["--config", "best.json", "distill", "--out", "run"]) == 2
    assert "no layer 'from_config'" in capsys.readouterr().err


def test_readme_commands_and_ci_agree():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    commands = re.findall(r"^```(?:bash|sh)\n(.*?)\n```", readme, flags=re.M | re.S)
    assert ci in commands, "the .ci/run command must be the README's test command"
    assert any("keras-spkd distill" in c and "pip install" in c for c in commands)


def test_half_written_backup_restarts_the_phase_instead_of_crashing(tmp_path):
    from keras_spkd.cli import _usable_backup

    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)  # cut off
    (backup / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    _usable_backup(backup)
    assert list(backup.iterdir()) == []
    # With the previous copy present, Keras's own fallback is left to work.
    (backup / "latest.weights.h5").write_bytes(b"broken")
    (backup / "latest.weights.h5.bkp").write_bytes(b"previous")
    _usable_backup(backup)
    assert (backup / "latest.weights.h5").exists()


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
def test_distill_writes_a_valid_self_contained_report(default_run, capsys):
    run, result = default_run
    assert "Report: run/report.html" in result.stdout
    page = _Page()
    page.feed((run / "report.html").read_text())
    page.close()
    assert page.open == []  # every element closed
    assert page.headings == [
        "Test accuracy",
        "Final epoch",
        "Training curves",
        "Similarity matrices during training",
        "Teacher, student alone and SP student",
        "Configuration",
    ]
    summary = json.loads((run / "summary.json").read_text())
    assert f"{summary['sp_student_test_accuracy']:.2%}" in "".join(page.text)
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
    cached = keras.saving.load_model(
        tmp_path / "cache" / "teachers" / "digits-digits-cnn-32-e1-s0.keras"
    )
    for a, b in zip(alone.get_weights(), cached.get_weights()):
        np.testing.assert_array_equal(a, b)
