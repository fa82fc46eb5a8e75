"""Datasets: the embedded digits, Fashion-MNIST and TFDS image classification.

The default is scikit-learn's handwritten digits (1,797 real 8x8 images that
ship inside scikit-learn), so the main job needs no network. Fashion-MNIST is
read through `keras.datasets.fashion_mnist` from files already on disk (Keras's
cache, `data_dir`, or Debian's `dataset-fashion-mnist`). TFDS datasets are
read from a prepared `data_dir`. Nothing is downloaded unless asked.

Every dataset is held in memory as the images are *stored* (digits 0-16,
others uint8 0-255) with its preprocessing recorded beside it, so an exported
student can take stored images as they are. Training order and augmentation
of epoch e are a function of `(seed, e)` only: a run resumed at epoch e sees
exactly the batches an uninterrupted run saw.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_spkd.errors import DataError

AUTOTUNE = tf.data.AUTOTUNE
NORMALIZATION_SAMPLES = 10_000
FASHION_MNIST_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass
class DataBundle:
    """One dataset in memory, its batched `tf.data` pipelines and what models need.

    Images are kept as stored (`arrays`); the pipelines apply
    `preprocessing`: model input = `(stored * scale - mean) / std`.

    Attributes:
        name: Dataset name.
        arrays: `{"train"|"val"|"test": (stored images, int32 labels)}`.
        input_shape: Shape of one image.
        num_classes: Number of labels.
        batch_size: Mini-batch size b.
        seed: Seed of the training order and augmentation.
        preprocessing: `{"scale": s, "mean": [...], "std": [...]}` (per channel).
        augment: `None`, `"crop"` (padded random crop) or `"crop_flip"`
            (plus horizontal flips).
        probe_size: Test images in the heat-map probe.
        split_seed: Seed of the train / validation split.
    """

    name: str
    arrays: dict
    input_shape: tuple[int, ...]
    num_classes: int
    batch_size: int
    seed: int
    preprocessing: dict
    augment: str | None = None
    probe_size: int = 64
    split_seed: int = 0
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def steps_per_epoch(self) -> int:
        """Training batches per epoch (the short last batch is dropped: G stays b x b)."""
        return len(self.arrays["train"][1]) // self.batch_size

    def with_seed(self, seed: int) -> DataBundle:
        """The same splits with another training order / augmentation seed."""
        return dataclasses.replace(self, seed=seed, _cache={})

    def preprocess(self, images) -> tf.Tensor:
        """Stored images -> model input (float32)."""
        p = self.preprocessing
        mean = np.asarray(p["mean"], "float32")
        std = np.asarray(p["std"], "float32")
        return (tf.cast(images, tf.float32) * p["scale"] - mean) / std

    def _seed(self, epoch) -> tf.Tensor:
        return tf.stack([tf.constant(self.seed, tf.int64), tf.cast(epoch, tf.int64)])

    def _order(self, epoch) -> tf.Tensor:
        """Epoch `epoch`'s training indices: a stateless shuffle keyed on (seed, epoch)."""
        n = len(self.arrays["train"][1])
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=self._seed(epoch)
        )
        return order[: self.steps_per_epoch * self.batch_size]

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The training indices of `epoch`, in the order they are fed."""
        return self._order(epoch).numpy()

    def order_fingerprint(self, epoch: int = 0) -> str:
        """sha256 (16 hex digits) of `epoch`'s label sequence: equal orders, equal hashes."""
        labels = self.arrays["train"][1][self.epoch_order(epoch)]
        return hashlib.sha256(labels.astype("int32").tobytes()).hexdigest()[:16]

    def _epoch(self, epoch: tf.Tensor) -> tf.data.Dataset:
        if "train" not in self._cache:  # eager: captured by reference, not copied into the graph
            with tf.init_scope():
                self._cache["train"] = tuple(tf.constant(a) for a in self.arrays["train"])
        x, y = self._cache["train"]
        seed, order = self._seed(epoch), self._order(epoch)
        ds = tf.data.Dataset.from_tensor_slices((order, tf.range(tf.size(order, tf.int64))))

        def item(index, position):
            image = self.preprocess(tf.gather(x, index))
            if self.augment:
                image = pad_crop_flip(
                    image,
                    tf.random.experimental.stateless_fold_in(seed, position),
                    flip=self.augment == "crop_flip",
                )
            return image, tf.gather(y, index)

        return ds.map(item, num_parallel_calls=AUTOTUNE, deterministic=True).batch(
            self.batch_size, drop_remainder=True
        )

    def epochs(self, start: int = 0) -> tf.data.Dataset:
        """Epochs `start, start + 1, ...` back to back; fit with `steps_per_epoch`.

        What a resumable run feeds: epoch e's order and augmentation depend
        on `(seed, e)` only, so a run restored at epoch e sees what an
        uninterrupted one saw.
        """
        return tf.data.Dataset.range(start, 2**31).flat_map(self._epoch).prefetch(AUTOTUNE)

    @property
    def train(self) -> tf.data.Dataset:
        """One epoch per iteration, each iteration a new seeded order (for plain `fit`)."""
        keys = tf.data.Dataset.random(seed=self.seed, rerandomize_each_iteration=True)
        return keys.take(1).flat_map(lambda key: self._epoch(key % 2**31)).prefetch(AUTOTUNE)

    def _split(self, split: str) -> tf.data.Dataset:
        x, y = self.arrays[split]
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(self.batch_size)
        return ds.map(lambda a, b: (self.preprocess(a), b), num_parallel_calls=AUTOTUNE).prefetch(
            AUTOTUNE
        )

    @property
    def val(self) -> tf.data.Dataset:
        """Validation batches (every image, in a fixed order)."""
        return self._split("val")

    @property
    def test(self) -> tf.data.Dataset:
        """Test batches (every image, in a fixed order)."""
        return self._split("test")

    @property
    def probe(self) -> tuple[np.ndarray, np.ndarray]:
        """The first `probe_size` test images (model input), sorted by label."""
        x, y = self.arrays["test"]
        order = np.argsort(y[: self.probe_size], kind="stable")
        return self.preprocess(x[: self.probe_size][order]).numpy(), y[: self.probe_size][order]


def pad_crop_flip(image: tf.Tensor, seed: tf.Tensor, flip: bool = True, pad: int = 4) -> tf.Tensor:
    """Zero-pads by `pad` pixels, crops back at a random place, optionally flips.

    Stateless: the same `seed` (shape `[2]`) gives the same crop and flip.
    """
    height, width, channels = image.shape
    padded = tf.image.resize_with_crop_or_pad(image, height + 2 * pad, width + 2 * pad)
    image = tf.image.stateless_random_crop(padded, (height, width, channels), seed=seed)
    if flip:
        image = tf.image.stateless_random_flip_left_right(
            image, tf.random.experimental.stateless_fold_in(seed, 1)
        )
    return image


def cifar_augment(image: tf.Tensor, seed: int | None = None) -> tf.Tensor:
    """The paper's CIFAR augmentation: 4-pixel zero pad, random crop, flip."""
    return pad_crop_flip(image, tf.constant([0 if seed is None else seed, 0], tf.int64))


def _split_train_val(x, y, seed: int, val_fraction: float | int):
    from sklearn.model_selection import train_test_split

    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=val_fraction, stratify=y, random_state=seed
    )
    return (x_train, y_train), (x_val, y_val)


def _digits_stored(seed: int, val_fraction: float, test_fraction: float) -> dict:
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    digits = sk_digits()
    x = digits.images.astype("float32")[..., None]  # 0..16, as stored
    y = digits.target.astype("int32")
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    train, val = _split_train_val(x_rest, y_rest, seed, val_fraction / (1 - test_fraction))
    return {"train": train, "val": val, "test": (x_test, y_test)}


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
    stored = _digits_stored(seed, val_fraction, test_fraction)
    return {split: (x / 16.0, y) for split, (x, y) in stored.items()}


def load_digits(batch_size: int = 64, seed: int = 0, probe_size: int = 64) -> DataBundle:
    """Loads the embedded digits (stored as 0-16 pixel values).

    Args:
        batch_size: Mini-batch size b. Defaults to `64`.
        seed: Seed of the split and of the training order. Defaults to `0`.
        probe_size: Test images in the heat-map probe. Defaults to `64`.

    Returns:
        A `DataBundle`; the model sees pixels / 16.

    Example:

    >>> data = keras_spkd.data.load_digits(batch_size=32)
    >>> distiller.fit(data.train, validation_data=data.val)
    """
    return DataBundle(
        "digits",
        _digits_stored(seed, 0.1, 0.2),
        (8, 8, 1),
        10,
        batch_size,
        seed,
        {"scale": 1 / 16, "mean": [0.0], "std": [1.0]},
        None,
        probe_size,
        seed,
    )


def _keras_datasets_dir() -> Path:
    from keras_spkd import _compat

    return Path(_compat.keras_home()) / "datasets" / "fashion-mnist"


def find_fashion_mnist(data_dir: str | None = None) -> Path | None:
    """The first folder holding the four Fashion-MNIST files: Keras's cache,
    then `data_dir`, then Debian's `dataset-fashion-mnist`; `None` if none does."""
    places = [_keras_datasets_dir()]
    if data_dir:
        places += [Path(data_dir), Path(data_dir) / "fashion-mnist"]
    places.append(DEBIAN_FASHION_MNIST)
    for place in places:
        if all((place / name).is_file() for name in FASHION_MNIST_FILES):
            return place
    return None


def fashion_mnist_arrays(data_dir: str | None = None, download: bool = False):
    """Fashion-MNIST as Keras returns it: `((x_train, y_train), (x_test, y_test))`, uint8.

    Files found by `find_fashion_mnist` are copied into Keras's cache, where
    `keras.datasets.fashion_mnist.load_data()` reads them without a download.

    Raises:
        DataError: The files are nowhere and `download` is False.
    """
    import keras

    source = find_fashion_mnist(data_dir)
    if source is None and not download:
        raise DataError(
            "Fashion-MNIST is not on this machine (looked in "
            f"{_keras_datasets_dir()}, {data_dir or '--data-dir (not given)'} and "
            f"{DEBIAN_FASHION_MNIST}). Install Debian's package "
            "(`apt-get install dataset-fashion-mnist`) or pass --download on a machine "
            "with a network."
        )
    cache = _keras_datasets_dir()
    if source is not None and source != cache:
        cache.mkdir(parents=True, exist_ok=True)
        for name in FASHION_MNIST_FILES:
            if not (cache / name).is_file():
                tmp = cache / f".{name}.{os.getpid()}.part"
                shutil.copyfile(source / name, tmp)
                os.replace(tmp, cache / name)
    try:
        return keras.datasets.fashion_mnist.load_data()
    except (OSError, EOFError, gzip.BadGzipFile, ValueError) as error:
        raise DataError(
            f"Fashion-MNIST files in {cache} could not be read ({error}); delete them "
            "and run again."
        ) from error
    except Exception as error:  # Keras raises a bare Exception("URL fetch failure")
        raise DataError(f"Fashion-MNIST could not be downloaded: {error}") from error


def load_fashion_mnist(
    batch_size: int = 128,
    data_dir: str | None = None,
    download: bool = False,
    seed: int = 0,
    probe_size: int = 64,
    augment: bool = True,
    val_size: int = 6000,
) -> DataBundle:
    """Loads Fashion-MNIST (60,000 + 10,000 28x28 grey images, 10 classes), offline.

    The validation split (`val_size` images, stratified) comes out of the
    training set and is fixed by `seed`; the test set is left for the end.
    Training images get a 4-pixel padded random crop and horizontal flips.

    Args:
        batch_size: Mini-batch size b. Defaults to `128`.
        data_dir: A folder holding the four IDX `.gz` files. Defaults to
            looking in Keras's cache and Debian's package only.
        download: Let Keras download the files. Defaults to `False`.
        seed: Seed of the split, training order and augmentation. Defaults to `0`.
        probe_size: Test images in the heat-map probe. Defaults to `64`.
        augment: Augment the training split. Defaults to `True`.
        val_size: Validation images. Defaults to `6000`.

    Returns:
        A `DataBundle`; the model sees `(pixels / 255 - mean) / std` (training statistics).
    """
    (x_train, y_train), (x_test, y_test) = fashion_mnist_arrays(data_dir, download)
    x_train, x_test = x_train[..., None], x_test[..., None]
    if val_size >= len(y_train):  # a subset of the files (tests): a tenth for validation
        val_size = max(10, len(y_train) // 10)
    train, val = _split_train_val(x_train, y_train.astype("int32"), seed, val_size)
    scaled = train[0].astype("float32") / 255.0
    return DataBundle(
        "fashion_mnist",
        {"train": train, "val": val, "test": (x_test, y_test.astype("int32"))},
        (28, 28, 1),
        10,
        batch_size,
        seed,
        {"scale": 1 / 255, "mean": [float(scaled.mean())], "std": [float(scaled.std())]},
        "crop_flip" if augment else None,
        probe_size,
        seed,
    )


def _not_prepared(name: str, data_dir: str | None) -> DataError:
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return DataError(
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
        raise DataError(
            f"Unknown dataset {name!r}: neither 'digits', 'fashion_mnist' nor a TFDS "
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
        raise DataError(
            f"TFDS dataset {name!r} has no (image, label) pair (features: "
            f"{sorted(info.features)}); keras-spkd loads image classification datasets."
        )
    return keys


def load_tfds(
    name: str,
    batch_size: int = 128,
    data_dir: str | None = None,
    augment: bool = True,
    download: bool = False,
    seed: int = 0,
    probe_size: int = 64,
) -> DataBundle:
    """Loads a prepared TFDS image classification dataset into memory.

    Images are kept as stored (uint8) and normalised per channel with the
    mean and standard deviation of (up to 10,000) training images; with
    `augment` the training images get the paper's CIFAR augmentation (4-pixel
    pad, random crop, horizontal flip). Validation uses the dataset's
    `validation` split where it has one, else `test`.

    Args:
        name: TFDS name, e.g. `"cifar10"`, `"cifar100"`.
        batch_size: Mini-batch size b. Defaults to `128`.
        data_dir: Where the prepared data lives. Defaults to TFDS's own
            (`TFDS_DATA_DIR` or `~/tensorflow_datasets`).
        augment: Augment the training split. Defaults to `True`.
        download: Download and prepare when missing. Defaults to `False`
            (offline: a clear error says how to prepare the data).
        seed: Training order and augmentation seed. Defaults to `0`.
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
    val_split = "validation" if "validation" in info.splits else "test"

    def read(split: str):
        ds = builder.as_dataset(split, batch_size=-1)
        arrays = tfds.as_numpy(ds)
        return arrays[image_key], arrays[label_key].astype("int32")

    arrays = {"train": read("train"), "val": read(val_split), "test": read("test")}
    sample = arrays["train"][0][:NORMALIZATION_SAMPLES].astype("float32") / 255.0
    axes = tuple(range(sample.ndim - 1))
    return DataBundle(
        name,
        arrays,
        tuple(info.features[image_key].shape),
        info.features[label_key].num_classes,
        batch_size,
        seed,
        {
            "scale": 1 / 255,
            "mean": sample.mean(axis=axes).tolist(),
            "std": (sample.std(axis=axes) + 1e-6).tolist(),
        },
        "crop_flip" if augment else None,
        probe_size,
        seed,
    )


DATASETS = ("digits", "fashion_mnist", "any prepared TFDS image classification name")


def load_dataset(name: str = "digits", **kwargs) -> DataBundle:
    """Loads `"digits"` (embedded), `"fashion_mnist"` or a TFDS image classification name."""
    if name == "digits":
        kwargs = {k: v for k, v in kwargs.items() if k in ("batch_size", "seed", "probe_size")}
        return load_digits(**kwargs)
    if name == "fashion_mnist":
        return load_fashion_mnist(**kwargs)
    return load_tfds(name, **kwargs)
