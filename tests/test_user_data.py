"""A user's own data and models: an image folder of real Fashion-MNIST PNGs, an `.npz`,
`.keras` teacher and student files made here, and the one-line refusals of bad data."""

import gzip
import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spkd.cli import main

FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = {0: "T-shirt", 1: "Trouser", 7: "Sneaker", 8: "Bag"}  # four of the ten
PER_CLASS = 40
needs_fashion = pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST is not installed (Debian: apt-get install dataset-fashion-mnist)",
)


def fashion_subset(per_class: int = PER_CLASS):
    """The first `per_class` training images of each class in CLASSES (uint8, 28x28)."""
    with gzip.open(FASHION / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    picked = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in CLASSES])
    remap = {c: i for i, c in enumerate(sorted(CLASSES))}
    return images[picked], np.array([remap[c] for c in labels[picked]], "int32")


def write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(image.reshape(*image.shape[:2], -1)).numpy())


def small_cnn(width: int, name: str, classes: int = 4, softmax: bool = False) -> keras.Model:
    """A user's own CNN: takes stored pixels (0-255) and scales them itself."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(width, 3, padding="same", name="conv1")(x)
    x = keras.layers.ReLU(name="stage1")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", name="conv2")(x)
    x = keras.layers.ReLU(name="stage2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax" if softmax else None)(x)
    return keras.Model(inputs, outputs, name=name)


def tiny_builder(input_shape, classes):
    """A builder for `--student tests.test_user_data:tiny_builder`."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.ReLU(name="stage")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes)(x), name="tiny")


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """DIR/<class>/*.png of real Fashion-MNIST images, an .npz of them, t.keras and s.keras."""
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    root = tmp_path_factory.mktemp("user")
    images, labels = fashion_subset()
    names = [f"{c}_{CLASSES[c]}" for c in sorted(CLASSES)]  # sorted names = label order
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        write_png(root / "images" / names[label] / f"{index:04d}.png", image)
    order = np.random.default_rng(0).permutation(len(labels))
    train, test = order[:120], order[120:]
    np.savez(
        root / "fashion.npz",
        x_train=images[train],
        y_train=labels[train],
        x_test=images[test],
        y_test=labels[test],
        class_names=np.array(names),
    )
    keras.utils.set_random_seed(0)
    teacher = small_cnn(16, "my_teacher")
    teacher.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    teacher.fit(images[..., None], labels, epochs=20, batch_size=16, verbose=0)
    teacher.save(root / "t.keras")
    small_cnn(4, "my_student").save(root / "s.keras")
    return root


@pytest.fixture
def in_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_SPKD_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _table_rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("| ")]


@needs_fashion
def test_distill_on_an_image_folder_with_the_users_keras_files(user_files, in_dir, capsys):
    """The issue's first "must show": trains, names t.keras and s.keras, and the SavedModel
    scores on the raw image files what the run reported."""
    from keras_spkd.data import load_folder

    args = ["distill", "--data", str(user_files / "images"), "--teacher"]
    args += [str(user_files / "t.keras"), "--student", str(user_files / "s.keras")]
    args += ["--pairs", "auto", "--epochs", "2", "--batch-size", "16", "--tflite", "float"]
    assert main([*args, "--out", "run"]) == 0
    out = capsys.readouterr().out
    rows = _table_rows(out)
    assert "| teacher | t.keras |" in rows[1] and "| student alone | s.keras |" in rows[2]
    summary = json.loads((in_dir / "run" / "summary.json").read_text())
    assert summary["data"]["class_names"] == ["0_T-shirt", "1_Trouser", "7_Sneaker", "8_Bag"]
    assert summary["data"]["sizes"] == {"train": 112, "val": 16, "test": 32}
    assert summary["config"]["data"] == str(user_files / "images")
    assert summary["teacher"]["path"].endswith("t.keras")
    # the user's files get the stored pixels as float: cast only, no normalisation
    cast_only = {"scale": [1.0], "mean": [0.0], "std": [1.0], "application": None}
    for role in ("teacher", "student"):
        assert summary["preprocessing"][role] == {**cast_only, "image_size": None}
    assert summary["accuracy"]["teacher"] > 0.7  # the user's teacher, fed stored pixels

    # The export, fed the raw PNG files of the test split one by one.
    paths, labels = load_folder(user_files / "images", seed=0).files["test"]
    served = tf.saved_model.load(str(in_dir / "run" / "export" / "saved_model"))
    predicted = [
        int(np.argmax(served.serve(tf.io.decode_png(tf.io.read_file(p))[None])["logits"]))
        for p in paths
    ]
    assert np.mean(np.array(predicted) == labels) == pytest.approx(summary["accuracy"]["sp"])
    assert [n.decode() for n in served.class_names().numpy()] == summary["data"]["class_names"]

    # `predict` names each file's class.
    assert main(["predict", str(in_dir / "run" / "export"), *paths[:3]]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = summary["data"]["class_names"]
    assert [line.split("\t")[1] for line in lines] == [names[i] for i in predicted[:3]]
    assert all(0 < float(line.split("\t")[2]) <= 1 for line in lines)


@needs_fashion
def test_distill_on_an_npz_then_evaluate_export_and_report(user_files, in_dir, capsys):
    args = ["distill", "--data", str(user_files / "fashion.npz"), "--teacher"]
    args += [str(user_files / "t.keras"), "--student", str(user_files / "s.keras")]
    args += ["--epochs", "2", "--batch-size", "16", "--tflite", "float", "--out", "run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| teacher | t.keras |" in out and "| student + SP (gamma=1000) | s.keras |" in out
    summary = json.loads((in_dir / "run" / "summary.json").read_text())
    assert summary["data"]["sizes"] == {"train": 108, "val": 12, "test": 40}  # val from train
    assert "of train, stratified" in summary["data"]["splits"]["val"]
    data = ["--data", str(user_files / "fashion.npz")]
    assert main(["evaluate", str(in_dir / "run" / "sp" / "student.keras"), *data]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == pytest.approx(summary["accuracy"]["sp"])
    assert main(["export", str(in_dir / "run" / "sp" / "student.keras"), *data, "--out", "e"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["saved_model_accuracy"] == pytest.approx(summary["accuracy"]["sp"])
    assert main(["report", str(in_dir / "run")]) == 0
    assert "s.keras" in (in_dir / "run" / "report.md").read_text()


@needs_fashion
@pytest.mark.slow
def test_compare_and_tune_on_a_folder(user_files, in_dir, capsys):
    base = ["--data", str(user_files / "images"), "--teacher", str(user_files / "t.keras")]
    base += ["--student", str(user_files / "s.keras"), "--epochs", "1", "--batch-size", "16"]
    assert main(["compare", *base, "--methods", "alone,sp", "--seeds", "2", "--out", "c"]) == 0
    rows = (in_dir / "c" / "results.csv").read_text().splitlines()[1:]
    assert len(rows) == 4
    results = [json.loads(p.read_text()) for p in sorted((in_dir / "c").glob("runs/*/result.json"))]
    # seed 0 starts from the file's weights; seed 1 re-initialises the student (seeded)
    fingerprints = {r["seed"]: r["init_fingerprint"] for r in results}
    assert fingerprints[0] != fingerprints[1]
    assert main(["tune", *base, "--max-trials", "1", "--tuner", "random", "--out", "t"]) == 0
    assert (in_dir / "t" / "best_config.json").is_file()


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    """One folder or file per bad-data case (sklearn's digits as PNGs: no Fashion needed)."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("bad")
    digits = load_digits()
    pixels = (digits.images * 15).astype("uint8")

    def folder(name, classes=(0, 1), count=10, size=None):
        for c in classes:
            for i in range(count):
                image = pixels[digits.target == c][i]
                if size is not None and i == 0:
                    image = np.pad(image, ((0, size - 8), (0, size - 8)))
                write_png(root / name / str(c) / f"{i}.png", image)
        return root / name

    (root / "empty").mkdir()
    loose = root / "loose"
    write_png(loose / "a.png", pixels[0])
    folder("corrupt")
    (root / "corrupt" / "1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    folder("mixed", size=12)
    for split, classes in (("train", (0, 1, 2)), ("test", (0, 1))):
        for c in classes:
            for i in range(5):
                write_png(root / "split" / split / str(c) / f"{i}.png", pixels[i])
    (root / "notes.txt").write_text("not data")
    (root / "notes.npz").write_text("text saved under an .npz name")
    np.save(root / "one_array.npy", pixels[:10])
    (root / "one_array.npy").rename(root / "one_array.npz")
    np.savez(
        root / "no_train.npz",
        x_train=np.zeros((0, 8, 8), "uint8"),
        y_train=np.zeros(0, "int64"),
        x_test=pixels[:10],
        y_test=digits.target[:10],
    )
    (root / "hidden" / ".cache").mkdir(parents=True)
    (root / "hidden" / ".DS_Store").write_text("")
    np.savez(
        root / "labels.npz",
        x_train=pixels[:50],
        y_train=digits.target[:50],
        x_test=pixels[50:80],
        y_test=np.where(np.arange(30) == 3, 12, digits.target[50:80]),
        class_names=np.array([str(i) for i in range(10)]),
    )
    nan = (pixels[:80] / 15).astype("float32")
    nan[7, 2, 3] = np.nan  # one pixel of one image
    np.savez(
        root / "one_nan.npz",
        x_train=nan[:50],
        y_train=digits.target[:50],
        x_test=nan[50:80],
        y_test=digits.target[50:80],
    )
    np.savez(
        root / "all_nan.npz",
        x_train=np.full((50, 8, 8), np.nan, "float32"),
        y_train=digits.target[:50],
        x_test=nan[50:80],
        y_test=digits.target[50:80],
    )
    folder("good", classes=(0, 1, 2), count=12)
    t = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(5)])
    t.save(root / "five_classes.keras")
    t16 = keras.Sequential(
        [keras.Input((16, 16, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    t16.save(root / "sixteen.keras")

    class Subclassed(keras.Model):  # not registered: cannot be loaded, nor tapped
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(keras.ops.reshape(x, (-1, 64)))

    sub = Subclassed()
    sub(np.zeros((1, 8, 8, 1), "float32"))
    sub.save(root / "subclassed.keras")
    return root


@pytest.mark.parametrize(
    "case, extra, message",
    [
        ("missing", [], r"--data '.*missing' does not exist"),
        ("notes.txt", [], r"neither a folder of images .* nor an \.npz file"),
        ("empty", [], r"--data '[^']*empty' is empty; expected .*<class>"),  # named once
        ("notes.npz", [], r"is not an \.npz of arrays: .*numpy\.savez"),
        ("one_array.npz", [], r"is one array \(a \.npy file\), not an \.npz"),
        ("no_train.npz", [], r"x_train holds no images"),
        ("hidden", [], r"--data '[^']*hidden' has no class subfolders"),  # named once
        ("loose", [], r"has no class subfolders"),
        ("corrupt", [], r"broken\.png is not a readable PNG or JPEG image"),
        ("mixed", [], r"images of 2 sizes \(e\.g\. \((8, 8|12, 12)\) .*--image-size"),
        ("split", [], r"classes \['2'\] are in train/ but not in test/"),
        ("labels.npz", [], r"y_test holds label 12, outside \[0, 10\)"),
        ("one_nan.npz", [], r"x_train holds NaN or infinite pixels in 1 of 50 images .*index 7"),
        ("all_nan.npz", [], r"x_train holds NaN or infinite pixels in 50 of 50 images"),
        ("good", ["--teacher", "five_classes.keras"], r"has 5 outputs, but 'good' has 3 classes"),
        (
            "good",
            ["--teacher", "sixteen.keras"],
            r"inputs of shape \(16, 16, 1\), but .* \(8, 8, 1\)",
        ),
        (
            "good",
            ["--teacher", "subclassed.keras"],
            r"Could not locate class .Subclassed.\. A subclassed or custom model",
        ),
        ("good", ["--dataset", "cifar10"], r"Give data \(--data\) or dataset"),
        ("good", ["--dataset", "digits"], r"Give data \(--data\) or dataset"),
        ("good", ["--student", "MobileNetV2(alpah=0.35)"], r"unexpected keyword argument 'alpah'"),
        (
            "good",
            ["--student", "json:loads"],
            r"Model 'json:loads': loads\(\(8, 8, 1\), 3\) raised TypeError",
        ),
        ("good", ["--student", "no_such_mod:f"], r"cannot import 'no_such_mod'.*PYTHONPATH=\."),
        ("good", ["--teacher-arch", "NoSuchNet(alpha=1)"], r"Unknown model 'NoSuchNet"),
    ],
)
def test_bad_data_is_one_line_exit_2_and_nothing_written(
    case, extra, message, bad_data, in_dir, capsys
):
    extra = [str(bad_data / e) if e.endswith(".keras") else e for e in extra]
    argv = ["distill", "--data", str(bad_data / case), *extra, "--out", "run", "--batch-size", "8"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("keras-spkd: error: ")
    import re

    assert re.search(message, err), err
    assert not (in_dir / "run").exists()
    # A student spec is built after the cache folder is made: no teacher is in it.
    assert not [p for p in (in_dir / "cache").rglob("*") if p.is_file()]


def test_a_folder_split_is_stratified_seeded_and_fingerprinted(bad_data, tmp_path):
    import shutil

    from keras_spkd.data import folder_fingerprint, load_folder

    data = load_folder(bad_data / "good", batch_size=4, seed=0)
    sizes = {split: data.size(split) for split in ("train", "val", "test")}
    assert sizes == {"train": 24, "val": 4, "test": 8} and data.class_names == ("0", "1", "2")
    for split in ("train", "val", "test"):
        assert set(data.labels(split)) == {0, 1, 2}
    assert not set(data.files["train"][0]) & set(data.files["test"][0])
    again = load_folder(bad_data / "good", batch_size=4, seed=0)
    assert list(again.files["test"][0]) == list(data.files["test"][0])
    assert list(load_folder(bad_data / "good", seed=1).files["test"][0]) != list(
        data.files["test"][0]
    )
    # streamed: the epoch's batches come from the files, in a (seed, epoch) order
    x, y = next(iter(data.epochs(0)))
    assert x.shape == (4, 8, 8, 1) and data.input_dtype == "uint8"
    x2, y2 = next(iter(data.epochs(0)))
    np.testing.assert_array_equal(x, x2)
    part = data.train_subset(9)  # a folder's subset: paths, stratified, seed-fixed
    assert part.size("train") == 9 and np.bincount(part.labels("train")).tolist() == [3, 3, 3]
    assert set(part.files["train"][0]) <= set(data.files["train"][0])
    assert list(data.with_seed(3).train_subset(9).files["train"][0]) == list(part.files["train"][0])
    x, _ = next(iter(part.epochs(0)))
    assert x.shape == (4, 8, 8, 1)
    copy = tmp_path / "good"
    shutil.copytree(bad_data / "good", copy)
    before = folder_fingerprint(copy)
    os.utime(copy / "0" / "0.png", ns=(1, 1))
    assert folder_fingerprint(copy) != before


def test_mixed_sizes_train_with_image_size_and_the_export_resizes(bad_data, in_dir, capsys):
    from keras_spkd.data import load_folder

    data = load_folder(bad_data / "mixed", batch_size=4, image_size=(10, 10))
    assert data.input_shape == (10, 10, 1)
    assert next(iter(data.stored().epochs(0)))[0].shape == (4, 10, 10, 1)
    argv = ["distill", "--data", str(bad_data / "mixed"), "--image-size", "10", "--epochs", "1"]
    argv += ["--teacher-epochs", "1", "--batch-size", "4", "--tflite", "float", "--out", "run"]
    assert main(argv) == 0
    served = tf.saved_model.load(str(in_dir / "run" / "export" / "saved_model"))
    raw = tf.io.decode_png(tf.io.read_file(str(bad_data / "mixed" / "0" / "0.png")))  # 12x12
    assert raw.shape[:2] == (12, 12)
    # the export resizes as training did: pixel values as float32, any size
    assert served.serve(tf.cast(raw[None], tf.float32))["logits"].shape == (1, 2)


def test_softmax_students_refused_for_kd_and_the_task_loss_follows_the_output(
    bad_data, in_dir, capsys
):
    from keras_spkd.experiment import ExperimentConfig
    from keras_spkd.experiment.session import load_data
    from keras_spkd.experiment.training import build, from_logits

    small_cnn_8 = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    small_cnn_8.save(in_dir / "soft.keras")
    config = ExperimentConfig(
        data=str(bad_data / "good"), student_arch=str(in_dir / "soft.keras"), batch_size=8
    )
    data = load_data(config)
    student = build(config.student_arch, data, config, "student")
    assert not from_logits(student)  # SparseCategoricalCrossentropy(from_logits=False)
    argv = ["distill", "--data", str(bad_data / "good"), "--student", "soft.keras"]
    argv += ["--batch-size", "8"]
    assert main([*argv, "--kd-weight", "1", "--out", "run"]) == 2
    assert "ends in a softmax but KD needs logits" in capsys.readouterr().err


def test_model_specs_parse_build_and_label():
    from keras_spkd.errors import ConfigError
    from keras_spkd.sources import build_from_spec, parse_model_spec

    assert parse_model_spec("wrn-16-2").kind == "zoo"
    assert parse_model_spec("dir/s.keras").label == "s.keras"
    app = parse_model_spec("MobileNetV2(alpha=0.35)")
    assert (app.kind, app.name, app.kwargs) == ("application", "MobileNetV2", {"alpha": 0.35})
    assert parse_model_spec("tests.test_user_data:tiny_builder").kind == "builder"
    with pytest.raises(ConfigError, match="Unknown model"):
        parse_model_spec("resnet-nine")
    model = build_from_spec(app, (32, 32, 3), 7)
    assert model.outputs[0].shape[-1] == 7 and model.layers[-1].activation.__name__ == "linear"
    tiny = build_from_spec("tests.test_user_data:tiny_builder", (8, 8, 1), 3)
    assert tiny.name == "tiny" and tiny.outputs[0].shape[-1] == 3


def test_imagenet_weights_offline_are_one_line(monkeypatch):
    from keras.src.utils import file_utils

    from keras_spkd.errors import DataError
    from keras_spkd.sources import build_from_spec

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(DataError, match="weights 'imagenet' cannot be downloaded"):
        build_from_spec("MobileNetV2(alpha=0.35, weights='imagenet')", (96, 96, 3), 4)


@needs_fashion
@pytest.mark.slow
def test_a_killed_folder_run_resumes_to_the_same_weights(user_files, tmp_path):
    """Kill -9 during SP on an image folder; --resume ends with the uninterrupted run's
    weights, bit for bit (each epoch's file order and crops are a function of (seed, epoch))."""
    import signal

    from keras_spkd.preprocessing import Preprocessing  # noqa: F401 - to load student.keras
    from tests.test_cli import ROOT, _cli, _rows, _start, _wait_for

    args = ["distill", "--data", str(user_files / "images"), "--teacher"]
    args += [str(user_files / "t.keras"), "--student", str(user_files / "s.keras")]
    args += ["--epochs", "4", "--batch-size", "16", "--augment", "crop", "--tflite", "float"]
    env = {**os.environ, "KERAS_SPKD_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    reference = _cli(*args, "--out", "reference", env=env, cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    process = _start([*args, "--out", "run"], env, tmp_path)
    _wait_for(lambda: _rows(tmp_path / "run" / "sp" / "history.csv") >= 2, process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert not (tmp_path / "run" / "summary.json").exists()
    resumed = _cli(*args, "--out", "run", "--resume", env=env, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ("alone/student.keras", "sp/student.keras"):
        a = keras.saving.load_model(tmp_path / "reference" / name).get_weights()
        b = keras.saving.load_model(tmp_path / "run" / name).get_weights()
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    # A resume after the folder changed is refused, naming the fingerprint.
    extra = user_files / "images" / "0_T-shirt" / "extra.png"
    write_png(extra, np.zeros((28, 28), "uint8"))
    try:
        changed = _cli(*args, "--out", "run", "--resume", env=env, cwd=tmp_path)
    finally:
        extra.unlink()
    assert changed.returncode == 2 and "the data changed since the run started" in changed.stderr


@pytest.mark.slow
def test_the_your_own_data_example_runs(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(root)}
    env["KERAS_SPKD_CACHE"] = str(tmp_path / "cache")
    result = subprocess.run(
        [sys.executable, str(root / "examples" / "your_own_data.py"), "--epochs", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| teacher | teacher.keras |" in result.stdout
    assert "| student alone | student.keras |" in result.stdout
    assert result.stdout.count(": digit_") == 5  # five predictions with class names


def test_weight_decay_reaches_every_kind_of_model_and_adamw_decouples_it(tmp_path, caplog):
    """--weight-decay was dropped for a user's .keras file and ignored by AdamW."""
    from keras_spkd.data import load_dataset
    from keras_spkd.experiment import ExperimentConfig, training

    data = load_dataset("digits")
    x = data.images("test", 1)[:4]
    inputs = keras.Input(data.input_shape)
    h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(data.num_classes, name="head")(h)
    path = tmp_path / "student.keras"
    keras.Model(inputs, outputs, name="users").save(path)

    config = ExperimentConfig(dataset="digits", weight_decay=1e-3)
    model = training.build(str(path), data, config, "student")
    kernels = [v for v in model.trainable_variables if v.path.endswith("kernel")]
    assert len(kernels) == 2
    assert all(np.isclose(float(v.regularizer.l2), 5e-4) for v in kernels)  # as the zoo's
    model(x)
    expected = sum(5e-4 * float(np.sum(np.square(v.numpy()))) for v in kernels)
    assert np.isclose(float(sum(model.losses)), expected, rtol=1e-5)
    no_decay = training.build(str(path), data, ExperimentConfig(dataset="digits"), "student")
    no_decay(x)
    assert not no_decay.losses
    zoo = training.build("digits-cnn-8", data, config, "student")  # the zoo's digits CNN too
    zoo_kernels = [v for v in zoo.trainable_variables if v.path.endswith("kernel")]
    assert len(zoo_kernels) == 3 and all(v.regularizer is not None for v in zoo_kernels)

    adamw = ExperimentConfig(dataset="digits", weight_decay=1e-3, optimizer="adamw")
    for arch in ("digits-cnn-8", str(path)):
        model = training.build(arch, data, adamw, "student")
        model(x)
        assert not model.losses, arch  # decoupled: no L2 on the kernels as well
    regularised = keras.Sequential(
        [keras.Input(data.input_shape), keras.layers.Flatten()]
        + [keras.layers.Dense(data.num_classes, kernel_regularizer=keras.regularizers.L2(0.1))]
    )
    regularised.save(tmp_path / "own.keras")
    with caplog.at_level("WARNING", logger="keras_spkd"):
        kept = training.build(str(tmp_path / "own.keras"), data, adamw, "student")
    assert float(kept.trainable_variables[0].regularizer.l2) == pytest.approx(0.1)
    assert "1 kernel(s) carry a regularizer of their own" in caplog.text
    assert "adds to the optimizer's decoupled decay" in caplog.text
    optimizer = training.optimizer(adamw, steps_per_epoch=10, epochs=1)
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert np.isclose(optimizer.weight_decay, 1e-3)


def test_evaluate_on_a_small_npz_checks_the_model_not_the_training_batch(tmp_path):
    """evaluate trains nothing: a training split smaller than the batch is not its concern."""
    from keras_spkd import experiment
    from keras_spkd.errors import ConfigError
    from keras_spkd.experiment.session import load_data

    rng = np.random.default_rng(0)
    path = tmp_path / "small.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 255, (30, 8, 8), dtype=np.uint8),
        y_train=np.arange(30) % 3,
        x_test=rng.integers(0, 255, (9, 8, 8), dtype=np.uint8),
        y_test=np.arange(9) % 3,
    )
    config = experiment.ExperimentConfig(data=str(path), batch_size=64)
    fits = tmp_path / "fits.keras"
    tiny_builder((8, 8, 1), 3).save(fits)
    logs = experiment.run_evaluate(fits, config)
    assert 0.0 <= logs["accuracy"] <= 1.0 and np.isfinite(logs["loss"])
    wrong = tmp_path / "wrong.keras"
    tiny_builder((16, 16, 1), 3).save(wrong)
    with pytest.raises(ConfigError, match=r"\(16, 16, 1\).*\(8, 8, 1\)"):
        experiment.run_evaluate(wrong, config)
    with pytest.raises(ConfigError, match="at most the training set's size"):
        load_data(config)  # training still refuses it


def test_a_training_split_too_small_to_carve_says_why_in_its_own_words(tmp_path):
    from keras_spkd.data import load_npz
    from keras_spkd.errors import DataError

    path = tmp_path / "tiny.npz"
    images = np.zeros((10, 8, 8), "uint8")
    np.savez(
        path, x_train=images, y_train=np.arange(10) % 3, x_test=images, y_test=np.arange(10) % 3
    )
    with pytest.raises(
        DataError, match=r"10% of 10 training images is 1, fewer than the 3 classes"
    ) as caught:
        load_npz(path)
    assert "x_val and y_val" in str(caught.value) and "test_size" not in str(caught.value)
