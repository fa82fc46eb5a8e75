"""Datasets: the embedded digits default and TFDS image classification.

The default is scikit-learn's handwritten digits (1,797 real 8x8 images that
ship inside scikit-learn), so the main job needs no network. TFDS datasets
are read from a prepared `data_dir` and never downloaded unless asked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
NORMALIZATION_SAMPLES = 10_000


@dataclass
class DataBundle:
    """Batched `tf.data` pipelines for one dataset, with what models need.

    Attributes:
        name: Dataset name.
        train: Shuffled, augmented (where asked) batches; the short last
            batch is dropped so every SP similarity matrix is b x b.
        val: Validation batches.
        test: Test batches.
        input_shape: Shape of one image.
        num_classes: Number of labels.
        probe: A small `(images, labels)` NumPy batch from the test split,
            sorted by label, for similarity heat maps.
    """

    name: str
    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    input_shape: tuple[int, ...]
    num_classes: int
    probe: tuple[np.ndarray, np.ndarray]


def digits_arrays(seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2) -> dict:
    """Returns the digits as `{"train"|"val"|"test": (x, y)}` NumPy arrays.

    Images are `(8, 8, 1)` float32 in `[0, 1]`; the stratified split is fixed
    by `seed` (1,257 / 180 / 360 images with the defaults).

    Args:
        seed: Seed of the split. Defaults to `0`.
        val_fraction: Share of all images for validation. Defaults to `0.1`.
        test_fraction: Share of all images for testing. Defaults to `0.2`.

    Returns:
        A dict of `(images, labels)` pairs.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=val_fraction / (1 - test_fraction),
        stratify=y_rest,
        random_state=seed,
    )
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


def _probe(x: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(y[:size], kind="stable")
    return x[:size][order], y[:size][order]


def _batched(ds: tf.data.Dataset, batch_size: int, training: bool, seed: int, size: int):
    if training:
        ds = ds.shuffle(min(size, 50_000), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=training).prefetch(AUTOTUNE)


def load_digits(batch_size: int = 64, seed: int = 0, probe_size: int = 64) -> DataBundle:
    """Loads the embedded digits as batched `tf.data` pipelines.

    Args:
        batch_size: Mini-batch size b. Defaults to `64`.
        seed: Seed of the split and of the shuffling. Defaults to `0`.
        probe_size: Test images in the heat-map probe. Defaults to `64`.

    Returns:
        A `DataBundle`.

    Example:

    >>> data = keras_spkd.data.load_digits(batch_size=32)
    >>> distiller.fit(data.train, validation_data=data.val)
    """
    arrays = digits_arrays(seed)
    pipes = {
        split: _batched(
            tf.data.Dataset.from_tensor_slices(arrays[split]).cache(),
            batch_size,
            split == "train",
            seed,
            len(arrays[split][0]),
        )
        for split in arrays
    }
    return DataBundle(
        "digits",
        pipes["train"],
        pipes["val"],
        pipes["test"],
        (8, 8, 1),
        10,
        _probe(*arrays["test"], probe_size),
    )


def cifar_augment(image: tf.Tensor, seed: int | None = None) -> tf.Tensor:
    """The paper's CIFAR augmentation: 4-pixel zero pad, random crop, flip."""
    height, width, channels = image.shape
    padded = tf.image.resize_with_crop_or_pad(image, height + 8, width + 8)
    cropped = tf.image.random_crop(padded, (height, width, channels), seed=seed)
    return tf.image.random_flip_left_right(cropped, seed=seed)


def _not_prepared(name: str, data_dir: str | None) -> ValueError:
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return ValueError(
        f"TFDS dataset {name!r} is not prepared in {where}, and keras-spkd does not "
        "download data unless asked. Prepare it once on a machine with a network: "
        f'`tfds build {name} --data_dir DIR` (or `python -c "import tensorflow_datasets '
        f"as tfds; tfds.load('{name}', data_dir='DIR')\"`), copy DIR here and pass "
        "--data-dir DIR (or set TFDS_DATA_DIR); or rerun with --download where a "
        "network is available."
    )


def _builder(name: str, data_dir: str | None, download: bool):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(
            f"Unknown dataset {name!r}: neither the embedded 'digits' nor a TFDS "
            f"dataset (registered or prepared in {data_dir or 'the TFDS data dir'})."
        ) from error
    if not builder.is_prepared():
        if not download:
            raise _not_prepared(name, data_dir)
        try:
            builder.download_and_prepare()
        except Exception as error:  # network and parser failures come in many types
            raise _not_prepared(name, data_dir) from error
    return builder


def _image_label_keys(name: str, info) -> tuple[str, str]:
    keys = info.supervised_keys
    if keys is None and {"image", "label"} <= set(info.features):
        keys = ("image", "label")
    if keys is None or len(keys) != 2:
        raise ValueError(
            f"TFDS dataset {name!r} has no (image, label) pair (features: "
            f"{sorted(info.features)}); keras-spkd loads image classification datasets."
        )
    return keys


def _channel_statistics(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    images = (
        np.concatenate(
            [
                batch.numpy()
                for batch in ds.take(NORMALIZATION_SAMPLES).batch(1000).map(lambda x, _: x)
            ]
        ).astype("float32")
        / 255.0
    )
    return images.mean(axis=(0, 1, 2)), images.std(axis=(0, 1, 2)) + 1e-6


def load_tfds(
    name: str,
    batch_size: int = 128,
    data_dir: str | None = None,
    augment: bool = True,
    download: bool = False,
    seed: int = 0,
    probe_size: int = 64,
) -> DataBundle:
    """Loads a TFDS image classification dataset as batched pipelines.

    Images are scaled to `[0, 1]` and normalised per channel with the mean
    and standard deviation of (up to 10,000) training images; with `augment`
    the training images get the paper's CIFAR augmentation (4-pixel pad,
    random crop, horizontal flip) in a parallel map. Validation uses the
    dataset's `validation` split where it has one, else `test`.

    Args:
        name: TFDS name, e.g. `"cifar10"`, `"cifar100"`.
        batch_size: Mini-batch size b. Defaults to `128`.
        data_dir: Where the prepared data lives. Defaults to TFDS's own
            (`TFDS_DATA_DIR` or `~/tensorflow_datasets`).
        augment: Augment the training split. Defaults to `True`.
        download: Download and prepare when missing. Defaults to `False`
            (offline: a clear error says how to prepare the data).
        seed: Shuffling and augmentation seed. Defaults to `0`.
        probe_size: Test images in the heat-map probe. Defaults to `64`.

    Returns:
        A `DataBundle`.

    Example:

    >>> data = keras_spkd.data.load_tfds("cifar10", data_dir="/data/tfds")
    """
    import tensorflow_datasets as tfds

    builder = _builder(name, data_dir, download)
    info = builder.info
    image_key, label_key = _image_label_keys(name, info)
    input_shape = tuple(info.features[image_key].shape)
    num_classes = info.features[label_key].num_classes
    splits = info.splits
    val_split = "validation" if "validation" in splits else "test"

    def read(split: str, shuffle_files: bool = False) -> tf.data.Dataset:
        ds = builder.as_dataset(split, shuffle_files=shuffle_files, read_config=read_config)
        return ds.map(lambda example: (example[image_key], example[label_key]))

    read_config = tfds.ReadConfig(shuffle_seed=seed)
    mean, std = _channel_statistics(read("train"))

    def normalise(image, label):
        image = (tf.cast(image, tf.float32) / 255.0 - mean) / std
        return image, tf.cast(label, tf.int32)

    def pipeline(split: str, training: bool) -> tf.data.Dataset:
        ds = read(split, shuffle_files=training).map(normalise, num_parallel_calls=AUTOTUNE)
        if splits[split].num_examples * np.prod(input_shape) * 4 < 2**31:
            ds = ds.cache()
        if training:
            ds = ds.shuffle(min(splits[split].num_examples, 50_000), seed=seed)
            if augment:
                ds = ds.map(lambda x, y: (cifar_augment(x), y), num_parallel_calls=AUTOTUNE)
        return ds.batch(batch_size, drop_remainder=training).prefetch(AUTOTUNE)

    probe_images, probe_labels = next(iter(read("test").map(normalise).batch(probe_size)))
    return DataBundle(
        name,
        pipeline("train", True),
        pipeline(val_split, False),
        pipeline("test", False),
        input_shape,
        num_classes,
        _probe(probe_images.numpy(), probe_labels.numpy(), probe_size),
    )


def load_dataset(name: str = "digits", **kwargs) -> DataBundle:
    """Loads `"digits"` (embedded) or any TFDS image classification name."""
    if name == "digits":
        kwargs = {k: v for k, v in kwargs.items() if k in ("batch_size", "seed", "probe_size")}
        return load_digits(**kwargs)
    return load_tfds(name, **kwargs)
