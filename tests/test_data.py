"""Datasets: the embedded digits, Fashion-MNIST, TFDS on a prepared directory, offline errors."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_spkd.data import cifar_augment, digits_arrays, load_dataset, load_digits, load_tfds


def test_digits_split_sizes_ranges_and_stratification():
    arrays = digits_arrays(seed=0)
    sizes = {split: len(arrays[split][0]) for split in arrays}
    assert sizes == {"train": 1257, "val": 180, "test": 360}
    for x, y in arrays.values():
        assert x.shape[1:] == (8, 8, 1) and x.dtype == np.float32
        assert x.min() == 0.0 and x.max() == 1.0
        assert set(np.unique(y)) == set(range(10))
    assert len(np.unique(np.concatenate([y for _, y in arrays.values()]))) == 10
    assert sum(sizes.values()) == 1797  # the three splits add up to the whole dataset
    assert np.array_equal(digits_arrays(seed=0)["test"][1], arrays["test"][1])
    assert not np.array_equal(digits_arrays(seed=1)["test"][1], arrays["test"][1])


def test_digits_pipelines_batch_and_drop_the_short_training_batch():
    data = load_digits(batch_size=100, probe_size=40)
    train_batches = [x.shape[0] for x, _ in data.train]
    assert train_batches == [100] * 12  # 1257 // 100, the remainder dropped
    assert sum(x.shape[0] for x, _ in data.test) == 360  # evaluation keeps every image
    images, labels = data.probe
    assert images.shape == (40, 8, 8, 1) and np.all(np.diff(labels) >= 0)
    assert (data.input_shape, data.num_classes) == ((8, 8, 1), 10)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """Prepares a small real TFDS dataset on disk, as `tfds build` would."""
    import tensorflow_datasets as tfds

    data_dir = tmp_path_factory.mktemp("tfds")
    rng = np.random.default_rng(0)

    def split(n):
        return tf.data.Dataset.from_tensor_slices(
            {
                "image": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8),
                "label": rng.integers(0, 3, n),
            }
        )

    tfds.dataset_builders.store_as_tfds_dataset(
        name="tiny_images",
        version="1.0.0",
        data_dir=str(data_dir),
        split_datasets={"train": split(48), "test": split(20)},
        features=tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(16, 16, 3)),
                "label": tfds.features.ClassLabel(num_classes=3),
            }
        ),
    )
    return str(data_dir)


def test_tfds_loader_reads_a_prepared_directory(tfds_dir):
    data = load_tfds("tiny_images", batch_size=8, data_dir=tfds_dir, augment=False)
    assert (data.input_shape, data.num_classes) == ((16, 16, 3), 3)
    x, y = next(iter(data.train))
    assert x.shape == (8, 16, 16, 3) and x.dtype == tf.float32 and y.dtype == tf.int32
    every = data.preprocess(data.images("train")).numpy()
    # Per-channel normalisation with the training statistics (of the training split: this
    # dataset has no validation split, so a tenth of train was set aside for it).
    assert data.size("train") + data.size("val") == 48 and data.size("test") == 20
    np.testing.assert_allclose(every.reshape(-1, 3).mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(every.reshape(-1, 3).std(0), 1.0, atol=1e-3)
    assert sum(x.shape[0] for x, _ in data.test) == 20
    assert data.probe[0].shape == (20, 16, 16, 3)
    via_name = load_dataset("tiny_images", batch_size=8, data_dir=tfds_dir)
    assert via_name.num_classes == 3


def test_augmentation_pads_crops_and_flips_within_the_image():
    image = tf.reshape(tf.range(1, 32 * 32 * 3 + 1, dtype=tf.float32), (32, 32, 3))
    seen_shift = False
    values = set(image.numpy().ravel().tolist()) | {0.0}
    for seed in range(20):
        out = cifar_augment(image, seed=seed).numpy()
        assert out.shape == (32, 32, 3)
        assert set(out.ravel().tolist()) <= values  # original pixels or zero padding
        seen_shift |= not np.array_equal(out, image.numpy())
    assert seen_shift
    assert cifar_augment(tf.ones((16, 16, 3)), seed=1).shape == (16, 16, 3)


def test_tfds_augmentation_keeps_shapes_and_value_range(tfds_dir):
    plain = load_tfds("tiny_images", batch_size=8, data_dir=tfds_dir, augment=False)
    augmented = load_tfds("tiny_images", batch_size=8, data_dir=tfds_dir, augment=True)
    x_plain = np.concatenate([x for x, _ in plain.train])
    x_aug = np.concatenate([x for x, _ in augmented.train])
    assert x_aug.shape == x_plain.shape
    # Every augmented value is a normalised pixel or the padding: the stored background,
    # normalised like any pixel.
    background = np.asarray(augmented.background, "float32").reshape(1, 1, 1, 3)
    pad = augmented.preprocess(background).numpy().reshape(3)
    for channel in range(3):
        allowed = np.union1d(np.unique(x_plain[..., channel]), [pad[channel]])
        assert np.isin(x_aug[..., channel], allowed).all()
    assert (x_aug == pad).mean() > (x_plain == pad).mean()  # padding was cropped in


def test_crops_pad_with_the_stored_background_before_normalisation():
    """Issue 21: the pad is the images' background in stored units, not 0 after
    normalisation (mean grey)."""
    from keras_spkd.data import DataBundle

    x = np.full((40, 12, 12, 1), 7, "uint8")  # every pixel is background (7)
    y = np.arange(40, dtype="int32") % 4
    prep = {"scale": 1 / 255, "mean": [0.5], "std": [0.25]}
    data = DataBundle(
        "flat",
        {"train": (x, y), "val": (x, y), "test": (x, y)},
        (12, 12, 1),
        4,
        8,
        0,
        prep,
        "crop_flip",
        background=(7.0,),
    )
    expected = (7 / 255 - 0.5) / 0.25
    batches = np.concatenate([b.numpy() for b, _ in data.epochs(0).take(data.steps_per_epoch)])
    np.testing.assert_allclose(batches, expected, rtol=1e-6)  # the pad is the background too
    stored = np.concatenate([b.numpy() for b, _ in data.stored().epochs(0).take(2)])
    assert np.all(stored == 7.0)  # stored units, exactly


def test_unprepared_and_unknown_datasets_give_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"'cifar10' is not prepared in .*tfds build cifar10"):
        load_tfds("cifar10", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="Unknown dataset 'no_such_dataset_xyz'"):
        load_dataset("no_such_dataset_xyz", data_dir=str(tmp_path))


FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST is not installed (Debian: apt-get install dataset-fashion-mnist)",
)


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch):
    """An empty Keras cache, so the files must be found where Debian puts them."""
    from keras.src.backend import config  # Keras reads KERAS_HOME once, at import

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home"


@needs_fashion
def test_fashion_mnist_real_files_have_the_published_shapes_and_classes(empty_keras_home):
    from keras_spkd.data import fashion_mnist_arrays, load_fashion_mnist

    (x_train, y_train), (x_test, y_test) = fashion_mnist_arrays()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    # Placed in Keras's own cache, where keras.datasets looks without downloading.
    assert (empty_keras_home / "datasets" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").is_file()
    data = load_fashion_mnist(batch_size=128, seed=0)
    sizes = {split: len(y) for split, (_, y) in data.arrays.items()}
    assert sizes == {"train": 54000, "val": 6000, "test": 10000}
    assert np.bincount(data.arrays["val"][1]).tolist() == [600] * 10  # stratified, seeded
    assert data.steps_per_epoch == 54000 // 128
    x, y = next(iter(data.epochs(0)))
    assert x.shape == (128, 28, 28, 1) and x.dtype == tf.float32
    assert abs(float(tf.reduce_mean(data.preprocess(data.arrays["train"][0][:5000])))) < 0.05
    other = load_fashion_mnist(seed=1)
    assert not np.array_equal(other.arrays["val"][1], data.arrays["val"][1])


def test_fashion_mnist_missing_gives_one_line_naming_both_ways(tmp_path, monkeypatch):
    from keras.src.backend import config

    from keras_spkd import data as data_module
    from keras_spkd.errors import DataError

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(DataError) as error:
        data_module.load_fashion_mnist()
    text = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in text and "--download" in text
    assert "\n" not in text


def test_fashion_mnist_from_a_data_dir(tmp_path, monkeypatch, empty_keras_home):
    """Files given by --data-dir are used (here: small real-format IDX files)."""
    import gzip
    import struct

    from keras_spkd import data as data_module

    rng = np.random.default_rng(0)
    folder = tmp_path / "fm"
    folder.mkdir()
    for prefix, n in (("train", 300), ("t10k", 100)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.tobytes())
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    data = data_module.load_fashion_mnist(batch_size=32, data_dir=str(folder), val_size=50)
    assert len(data.arrays["train"][1]) == 250 and len(data.arrays["test"][1]) == 100


@needs_fashion
@pytest.mark.slow
def test_fashion_mnist_end_to_end_on_a_few_hundred_real_images(
    empty_keras_home, tmp_path, monkeypatch
):
    """distill --dataset fashion_mnist: real images, the preset models, export of stored uint8."""
    from keras_spkd import data as data_module
    from keras_spkd.cli import main

    real = data_module.fashion_mnist_arrays

    def few(*args, **kwargs):
        (x, y), (xt, yt) = real(*args, **kwargs)
        return (x[:600], y[:600]), (xt[:200], yt[:200])

    monkeypatch.setattr(data_module, "fashion_mnist_arrays", few)
    monkeypatch.setenv("KERAS_SPKD_CACHE", str(tmp_path / "cache"))
    argv = ["distill", "--dataset", "fashion_mnist", "--epochs", "1", "--teacher-epochs", "1"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["student_arch"] == "fashion-cnn-4"
    assert summary["export"]["input_dtype"] == "uint8"  # takes images as stored
    assert 0.0 <= summary["accuracy"]["sp"] <= 1.0


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda b: b[: len(b) // 2], "not a complete gzip file"),  # truncated download
        (None, "header says"),  # a valid gzip whose IDX data is cut short
    ],
)
def test_damaged_fashion_mnist_files_are_refused_before_the_cache(
    damage, reason, tmp_path, monkeypatch, empty_keras_home
):
    """Issue 20, 5: bad --data-dir files are checked (decompressed, IDX header and counts)
    before anything is copied into Keras's cache, and the error names --data-dir."""
    import gzip
    import struct

    from keras_spkd import data as data_module
    from keras_spkd.errors import DataError

    folder = tmp_path / "fm"
    folder.mkdir()
    n = 20
    for prefix in ("train", "t10k"):
        images = np.zeros((n, 28, 28), np.uint8).tobytes()
        if damage is None and prefix == "train":
            images = images[:-28]
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images)
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + bytes(n))
    if damage is not None:
        target = folder / "train-images-idx3-ubyte.gz"
        target.write_bytes(damage(target.read_bytes()))
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(DataError, match=rf"--data-dir '{folder}' are damaged: .*{reason}"):
        data_module.fashion_mnist_arrays(str(folder))
    cache = data_module._keras_datasets_dir()
    assert not cache.exists() or not any(cache.iterdir())  # nothing reached the cache


def test_tfds_is_streamed_and_validates_on_a_carved_part_of_train(tfds_dir, tmp_path, capsys):
    """Issue 19: TFDS streamed (no arrays in memory), each epoch a function of (seed, epoch);
    issue 21: a dataset without a validation split validates on a stratified, seeded part of
    train (recorded), never on test."""
    data = load_tfds("tiny_images", batch_size=8, data_dir=tfds_dir, augment=True, seed=3)
    assert data.arrays is None and data.tfds is not None
    _, val_positions, val_labels = data.tfds["splits"]["val"]
    split, train_positions, _ = data.tfds["splits"]["train"]
    assert split == data.tfds["splits"]["val"][0] == "train"  # val comes from train...
    assert not set(val_positions) & set(train_positions)  # ...and leaves it
    assert len(val_positions) + len(train_positions) == 48 and data.size("test") == 20
    assert "of train, stratified, seed 3" in data.splits["val"]
    again = load_tfds("tiny_images", batch_size=8, data_dir=tfds_dir, augment=True, seed=3)
    assert list(again.tfds["splits"]["val"][1]) == list(val_positions)
    steps = data.steps_per_epoch
    run = [x.numpy() for x, _ in data.epochs(0).take(2 * steps)]
    resumed = [x.numpy() for x, _ in again.epochs(1).take(steps)]  # a run restored at epoch 1
    for a, b in zip(run[steps:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(run[0], run[steps])  # epochs differ
    assert data.order_fingerprint(0) == again.order_fingerprint(0) != data.order_fingerprint(1)

    from keras_spkd.cli import main

    argv = ["distill", "--dataset", "tiny_images", "--data-dir", tfds_dir, "--epochs", "1"]
    argv += ["--teacher-arch", "digits-cnn-4", "--student-arch", "digits-cnn-2", "--pairs"]
    argv += ["group2:group2", "--teacher-epochs", "1", "--batch-size", "8", "--tflite", "float"]
    import os

    os.environ["KERAS_SPKD_CACHE"] = str(tmp_path / "cache")
    try:
        assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    finally:
        del os.environ["KERAS_SPKD_CACHE"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data"]["sizes"]["test"] == 20
    assert summary["data"]["splits"] == {"val": "10% of train, stratified, seed 0"}


def test_a_training_subset_is_stratified_fixed_by_the_split_and_leaves_the_rest(tfds_dir):
    from keras_spkd.errors import DataError

    data = load_digits(batch_size=16)
    subset = data.train_subset(500)
    x, y = subset.arrays["train"]
    assert len(y) == len(x) == subset.size("train") == 500
    assert subset.steps_per_epoch == 500 // 16
    # stratified: each class keeps its share of the split, to within one image
    share = np.bincount(data.labels("train"), minlength=10) * 500 / data.size("train")
    assert np.all(np.abs(np.bincount(y, minlength=10) - share) <= 1)
    # the images are the split's own, in stored order, label beside image
    full_x, full_y = data.arrays["train"]
    where = [int(np.flatnonzero((full_x == image).all(axis=(1, 2, 3)))[0]) for image in x]
    assert where == sorted(where) and np.array_equal(full_y[where], y)
    # fixed by the split seed: another training seed trains on the same images
    again = data.with_seed(7).train_subset(500)
    np.testing.assert_array_equal(again.arrays["train"][0], x)
    other_split = load_digits(batch_size=16, seed=1).train_subset(500)
    assert not np.array_equal(other_split.arrays["train"][1], y)
    for split in ("val", "test"):  # untouched
        assert subset.arrays[split] is data.arrays[split]
    assert subset.preprocessing == data.preprocessing
    assert subset.splits["train"] == "500 of 1257 training images, stratified, seed 0"
    assert [b[0].shape[0] for b in subset.train] == [16] * 31  # one epoch of the subset
    assert data.train_subset(data.size("train")) is data

    with pytest.raises(DataError, match="holds 1257 images; give at most 1257"):
        data.train_subset(2000)
    with pytest.raises(DataError, match="fewer than the 10 classes"):
        data.train_subset(5)
    with pytest.raises(DataError, match="cannot draw a stratified subset.*between 10 and 1247"):
        data.train_subset(1256)
    for wrong in ("10", 10.0, True):
        with pytest.raises(DataError, match="train_images must be an integer"):
            data.train_subset(wrong)
    # a class too small for the subset's share would silently vanish: refused, named
    x, y = data.arrays["train"]
    rare = np.concatenate(
        [
            np.flatnonzero(y == 0)[:20],
            np.flatnonzero(y == 1)[:20],
            [np.flatnonzero(y == 2)[0]],
            np.flatnonzero(y == 2)[1:2],
        ]
    )
    small = dataclasses.replace(
        data, arrays={**data.arrays, "train": (x[rare], y[rare])}, _cache={}
    )
    with pytest.raises(
        DataError, match="keeps no image of class '2' \\(2 of the 42\\); give 21 or more"
    ):
        small.train_subset(10)
    assert sorted(set(small.train_subset(21).labels("train"))) == [0, 1, 2]

    streamed = load_tfds("tiny_images", batch_size=4, data_dir=tfds_dir, augment=False)
    part = streamed.train_subset(12)
    assert part.size("train") == 12 and part.size("val") == streamed.size("val")
    kept = part.tfds["splits"]["train"][1]
    assert set(kept) <= set(streamed.tfds["splits"]["train"][1]) and list(kept) == sorted(kept)
    labels = np.concatenate([y.numpy() for _, y in part.train])
    assert len(labels) == 12 and sorted(labels) == sorted(part.labels("train"))
