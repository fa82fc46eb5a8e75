"""Datasets: the embedded digits, Fashion-MNIST, TFDS, image folders and `.npz` files.

The default is scikit-learn's handwritten digits (1,797 real 8x8 images that
ship inside scikit-learn), so the main job needs no network. Fashion-MNIST is
read through `keras.datasets.fashion_mnist` from files already on disk (Keras's
cache, `data_dir`, or Debian's `dataset-fashion-mnist`). TFDS datasets are
read from a prepared `data_dir`. Nothing is downloaded unless asked.

A user's own data comes from `load_data_path`: an image folder
(`DIR/<class>/*` or `DIR/train/<class>/*` with optional `val/` and `test/`;
PNG or JPEG, grey or RGB, read with `tf.io`) streamed from disk, or an `.npz`
file with `x_train`, `y_train`, `x_test`, `y_test` (optional `x_val`,
`y_val`, `class_names`) read whole.

Images are kept as they are *stored* (digits 0-16, others uint8 0-255); the
bundle's `Preprocessing` layer (`keras_spkd.preprocessing`) turns them into
model input, and the same layer object goes into the export. Augmentation
works in stored units, before that layer: crops pad with the stored
background value. Training order and augmentation of epoch e are a function
of `(seed, e)` only: a run resumed at epoch e sees exactly the batches an
uninterrupted run saw (folders included: the order is a seeded permutation of
the file list, read anew each epoch).
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
from keras_spkd.preprocessing import Preprocessing

AUTOTUNE = tf.data.AUTOTUNE
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VAL_FRACTION = 0.1
TEST_FRACTION = 0.2
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
    """One dataset, its batched `tf.data` pipelines and what models need.

    Images stay as stored: in memory (`arrays`) or as files on disk
    (`files`, streamed). `layer`, a `keras_spkd.Preprocessing`, turns them
    into model input: model input = `(stored * scale - mean) / std` for the
    zoo's recipe. By default the pipelines apply it (`preprocess_in_pipeline`);
    the workflow turns that off and puts the same layer in front of its
    models, so training, evaluation and export share one object.

    Attributes:
        name: Dataset name.
        arrays: `{"train"|"val"|"test": (stored images, int32 labels)}`, or
            `None` for a folder.
        input_shape: Shape of one image as the models see it (after any resize).
        num_classes: Number of labels.
        batch_size: Mini-batch size b.
        seed: Seed of the training order and augmentation.
        preprocessing: `{"scale": s, "mean": [...], "std": [...]}` (per channel).
        augment: `None`, `"crop"` (padded random crop) or `"crop_flip"`
            (plus horizontal flips).
        probe_size: Test images in the heat-map probe.
        split_seed: Seed of the train / validation split.
        files: `{"train"|"val"|"test": (paths, int32 labels)}` for a folder.
        tfds: For a streamed TFDS dataset: `{"builder", "image", "label",
            "splits": {split: (TFDS split, positions kept, int32 labels)}}`.
        class_names: One name per label.
        image_size: `(height, width)` every image is resized to, or `None`.
        background: The stored background value per channel (crops pad with it).
        input_dtype: The stored images' dtype (`"uint8"`, `"float32"`).
        splits: How each split was made (e.g. validation carved from train).
        fingerprint: A hash of the data on disk (`None` for built-in data).
        preprocess_in_pipeline: The pipelines yield model input (`True`) or
            stored pixels as float32 (`False`: the models carry `layer`).
        layer: The `Preprocessing` layer (made from the fields above when `None`).
    """

    name: str
    arrays: dict | None
    input_shape: tuple[int, ...]
    num_classes: int
    batch_size: int
    seed: int
    preprocessing: dict
    augment: str | None = None
    probe_size: int = 64
    split_seed: int = 0
    files: dict | None = None
    tfds: dict | None = None
    class_names: tuple[str, ...] | None = None
    image_size: tuple[int, int] | None = None
    background: tuple[float, ...] = (0.0,)
    input_dtype: str | None = None
    splits: dict = field(default_factory=dict)
    fingerprint: str | None = None
    preprocess_in_pipeline: bool = True
    layer: Preprocessing | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.augment == "none":
            self.augment = None
        if self.class_names is None:
            self.class_names = tuple(str(i) for i in range(self.num_classes))
        if self.input_dtype is None:
            self.input_dtype = (
                "uint8"
                if self.files or self.tfds
                else np.asarray(self.arrays["test"][0]).dtype.name
            )
        if self.layer is None:
            p = self.preprocessing
            self.layer = Preprocessing(p["scale"], p["mean"], p["std"], image_size=self.image_size)

    def size(self, split: str) -> int:
        """Number of images in `split`."""
        return len(self.labels(split))

    def labels(self, split: str) -> np.ndarray:
        """The int32 labels of `split`, in stored order."""
        if self.tfds is not None:
            return np.asarray(self.tfds["splits"][split][2])
        source = self.files if self.files is not None else self.arrays
        return np.asarray(source[split][1])

    @property
    def steps_per_epoch(self) -> int:
        """Training batches per epoch (the short last batch is dropped: G stays b x b)."""
        return self.size("train") // self.batch_size

    def with_seed(self, seed: int) -> DataBundle:
        """The same splits with another training order / augmentation seed."""
        return dataclasses.replace(self, seed=seed, _cache={})

    def train_subset(self, count: int) -> DataBundle:
        """The same data training on a stratified `count` of its training images.

        The subset is fixed by `split_seed` (not the training seed), so every
        training seed and every teacher of a run sees the same images, in stored
        order. Validation, test, the normalisation statistics and the background
        stay those of the whole split. `count` equal to the split's size keeps it.

        Raises:
            DataError: `count` exceeds the split, or is too small to hold every class.
        """
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
            raise DataError(f"train_images must be an integer; received {count!r}.")
        labels = self.labels("train")
        total, classes = len(labels), len(np.unique(labels))
        counts = np.bincount(labels)
        # from this size on, every class's stratified share is at least one image
        keeps_all = max(classes, int(np.ceil(total / counts[counts > 0].min())))
        if count > total:
            raise DataError(
                f"train_images is {count}, but the training split of {self.name!r} holds "
                f"{total} images; give at most {total}."
            )
        if count < classes:
            raise DataError(
                f"train_images is {count}, fewer than the {classes} classes of {self.name!r}: "
                f"a stratified subset needs at least one image per class; give {keeps_all} "
                "or more (from there every class keeps an image)."
            )
        if count == total:
            return self
        from sklearn.model_selection import train_test_split

        try:
            keep, _ = train_test_split(
                np.arange(total), train_size=count, stratify=labels, random_state=self.split_seed
            )
        except ValueError:
            smallest = int(counts[counts > 0].min())
            raise DataError(
                f"train_images {count} of {total}: cannot draw a stratified subset (the images "
                f"left out must hold every class too, and the smallest class has {smallest}); "
                f"give between {classes} and {total - classes}, or all {total}."
            ) from None
        keep = np.sort(keep)
        missing = sorted(set(labels.tolist()) - set(labels[keep].tolist()))
        if missing:  # stratification rounds a small class's share down to none
            names = ", ".join(repr(self.class_names[c]) for c in missing[:5])
            raise DataError(
                f"train_images {count} of {total}: a stratified subset this small keeps no "
                f"image of class {names} ({counts[missing].min()} of the {total}); give "
                f"{keeps_all} or more (from there every class keeps an image), or more "
                "images of that class."
            )
        changes = {
            "splits": {
                **self.splits,
                "train": f"{count} of {total} training images, stratified, seed {self.split_seed}",
            },
            "_cache": {},
        }
        if self.tfds is not None:
            name, positions, _ = self.tfds["splits"]["train"]
            splits = {
                **self.tfds["splits"],
                "train": (name, np.asarray(positions)[keep], labels[keep]),
            }
            changes["tfds"] = {**self.tfds, "splits": splits}
        else:
            which = "files" if self.files is not None else "arrays"
            source = getattr(self, which)
            images = source["train"][0]
            kept = (
                [images[i] for i in keep] if isinstance(images, list) else np.asarray(images)[keep]
            )
            changes[which] = {**source, "train": (kept, labels[keep])}
        return dataclasses.replace(self, **changes)

    def stored(self) -> DataBundle:
        """The same data whose pipelines yield stored pixels (float32) for models that carry
        `layer` in front (see `keras_spkd.preprocessing.with_preprocessing`)."""
        return dataclasses.replace(self, preprocess_in_pipeline=False, _cache={})

    def preprocess(self, images) -> tf.Tensor:
        """Stored images -> model input (float32), through `layer`."""
        return self.layer(images)

    def _seed(self, epoch) -> tf.Tensor:
        return tf.stack([tf.constant(self.seed, tf.int64), tf.cast(epoch, tf.int64)])

    def _order(self, epoch) -> tf.Tensor:
        """Epoch `epoch`'s training indices: a stateless shuffle keyed on (seed, epoch)."""
        n = self.size("train")
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=self._seed(epoch)
        )
        return order[: self.steps_per_epoch * self.batch_size]

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The training indices of `epoch`, in the order they are fed."""
        return self._order(epoch).numpy()

    def order_fingerprint(self, epoch: int = 0) -> str:
        """sha256 (16 hex digits) of `epoch`'s label sequence: equal orders, equal hashes."""
        if self.tfds is not None:  # the same shuffle over the labels alone
            stream = self._tfds_stream("train", decode=False)
            labels = np.concatenate(
                [y.numpy() for _, y in self._tfds_shuffled(stream, epoch).batch(4096)]
            )
        else:
            labels = self.labels("train")[self.epoch_order(epoch)]
        return hashlib.sha256(labels.astype("int32").tobytes()).hexdigest()[:16]

    def _constants(self, split: str):
        if split not in self._cache:  # eager: captured by reference, not copied into the graph
            source = self.files if self.files is not None else self.arrays
            with tf.init_scope():
                self._cache[split] = tuple(tf.constant(a) for a in source[split])
        return self._cache[split]

    def _decode(self, path: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(
            tf.io.read_file(path), channels=self.input_shape[-1], expand_animations=False
        )
        if self.image_size is None:
            image.set_shape(self.input_shape)
        return image

    def _tfds_stream(self, split: str, decode: bool = True) -> tf.data.Dataset:
        """`(image, label)` of `split`, streamed in the files' order (no file shuffling)."""
        import tensorflow_datasets as tfds

        source = self.tfds
        name, positions, _ = source["splits"][split]
        decoders = None if decode else {source["image"]: tfds.decode.SkipDecoding()}
        ds = source["builder"].as_dataset(name, shuffle_files=False, decoders=decoders)
        total = source["builder"].info.splits[name].num_examples
        if len(positions) < total:  # a split carved out of another: keep its positions
            mask = np.zeros(total, bool)
            mask[positions] = True
            with tf.init_scope():
                kept = tf.constant(mask)
            ds = ds.enumerate().filter(lambda i, _: tf.gather(kept, i)).map(lambda _, ex: ex)
        return ds.map(
            lambda ex: (ex[source["image"]], tf.cast(ex[source["label"]], tf.int32)),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )

    def _tfds_shuffled(self, stream: tf.data.Dataset, epoch) -> tf.data.Dataset:
        """Epoch `epoch`'s order: the stream cut in windows of 4,096 examples, each
        permuted by a stateless shuffle keyed on (seed, epoch, window); then the first
        `steps_per_epoch * b` examples."""
        seed = self._seed(epoch)
        window = min(self.size("train"), 4096)

        def mix(index, batch):
            x, y = batch
            key = tf.random.experimental.stateless_fold_in(seed, index)
            order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(y)[0]), seed=key)
            return tf.gather(x, order), tf.gather(y, order)

        return (
            stream.batch(window)
            .enumerate()
            .map(mix)
            .unbatch()
            .take(self.steps_per_epoch * self.batch_size)
        )

    def _stored_image(self, split: str, index) -> tf.Tensor:
        """One stored image of `split`, as float32, resized by `layer` when asked."""
        x, _ = self._constants(split)
        image = self._decode(tf.gather(x, index)) if self.files is not None else tf.gather(x, index)
        return self.layer.resize(image)

    def _finish(self, image: tf.Tensor) -> tf.Tensor:
        return self.layer.normalize(image) if self.preprocess_in_pipeline else image

    def _epoch(self, epoch: tf.Tensor) -> tf.data.Dataset:
        seed = self._seed(epoch)
        background = np.asarray(self.background, "float32")
        if self.tfds is not None:
            stream = self._tfds_stream("train").map(
                lambda x, y: (self.layer.resize(x), y),
                num_parallel_calls=AUTOTUNE,
                deterministic=True,
            )
            ds = self._tfds_shuffled(stream, epoch).enumerate()
            ds = ds.map(lambda position, example: (*example, position))
        else:
            _, y = self._constants("train")
            order = self._order(epoch)
            ds = tf.data.Dataset.from_tensor_slices((order, tf.range(tf.size(order, tf.int64))))
            ds = ds.map(
                lambda index, position: (
                    self._stored_image("train", index),
                    tf.gather(y, index),
                    position,
                ),
                num_parallel_calls=AUTOTUNE,
                deterministic=True,
            )

        def item(image, label, position):
            if self.augment:
                image = (
                    pad_crop_flip(
                        image - background,  # pads with the background, in stored units
                        tf.random.experimental.stateless_fold_in(seed, position),
                        flip=self.augment == "crop_flip",
                    )
                    + background
                )
            return self._finish(image), label

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
        if self.tfds is not None:
            ds = self._tfds_stream(split).map(
                lambda x, y: (self._finish(self.layer.resize(x)), y),
                num_parallel_calls=AUTOTUNE,
                deterministic=True,
            )
            return ds.batch(self.batch_size).prefetch(AUTOTUNE)
        _, y = self._constants(split)
        ds = tf.data.Dataset.range(self.size(split))
        ds = ds.map(
            lambda i: (self._finish(self._stored_image(split, i)), tf.gather(y, i)),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        return ds.batch(self.batch_size).prefetch(AUTOTUNE)

    @property
    def val(self) -> tf.data.Dataset:
        """Validation batches (every image, in a fixed order)."""
        return self._split("val")

    @property
    def test(self) -> tf.data.Dataset:
        """Test batches (every image, in a fixed order)."""
        return self._split("test")

    def images(self, split: str, count: int | None = None) -> np.ndarray:
        """The first `count` (default: all) images of `split` as stored, or as float32
        after the declared resize (`image_size`); what an export is fed."""
        count = self.size(split) if count is None else min(count, self.size(split))
        if self.tfds is not None:
            ds = self._tfds_stream(split).take(count).map(lambda x, _: self.layer.resize(x))
            images = np.concatenate([b.numpy() for b in ds.batch(512)])
            return images if self.image_size else images.astype(self.input_dtype)
        if self.files is None and self.image_size is None:
            return np.asarray(self.arrays[split][0][:count])
        ds = tf.data.Dataset.range(count).map(
            lambda i: self._stored_image(split, i), num_parallel_calls=AUTOTUNE, deterministic=True
        )
        images = np.concatenate([b.numpy() for b in ds.batch(512)]) if count else None
        if self.image_size is None and self.input_dtype == "uint8":
            images = images.astype("uint8")  # decoded uint8 pixels, exactly
        return images

    @property
    def probe(self) -> tuple[np.ndarray, np.ndarray]:
        """The first `probe_size` test images, sorted by label (model input, or stored
        pixels as float32 when the models carry the preprocessing)."""
        y = self.labels("test")[: self.probe_size]
        order = np.argsort(y, kind="stable")
        images = self.images("test", self.probe_size)[order].astype("float32")
        return np.asarray(self._finish(tf.constant(images))), y[order]


def pad_crop_flip(image: tf.Tensor, seed: tf.Tensor, flip: bool = True, pad: int = 4) -> tf.Tensor:
    """Zero-pads by `pad` pixels, crops back at a random place, optionally flips.

    Stateless: the same `seed` (shape `[2]`) gives the same crop and flip.
    To pad with a background value v, pass `image - v` and add v back.
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


def _carve(x, y, seed: int, fraction: float, name: str, part: str = "validation"):
    """Stratified `(rest, part)` of `(x, y)`; one line when a class is too small."""
    try:
        return _split_train_val(x, y, seed, fraction)
    except ValueError as error:
        counts = np.bincount(np.asarray(y))
        classes, held_out = int(np.sum(counts > 0)), int(np.ceil(fraction * len(y)))
        if held_out < classes:
            reason = (
                f"{fraction:.0%} of {len(y)} training images is {held_out}, fewer than the "
                f"{classes} classes"
            )
        else:
            reason = (
                f"the smallest class has {counts[counts > 0].min()} images; each needs at "
                "least 2 per split"
            )
        own = "an .npz: x_val and y_val; a folder: val/" if part == "validation" else "test/"
        raise DataError(
            f"{name}: cannot set aside a stratified {fraction:.0%} for {part} ({reason}); "
            f"give a {part} split of your own ({own}), or more images."
        ) from error


def _split_train_val(x, y, seed: int, val_fraction: float | int):
    from sklearn.model_selection import train_test_split

    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=val_fraction, stratify=y, random_state=seed
    )
    return (x_train, y_train), (x_val, y_val)


def border_background(images: np.ndarray) -> tuple[float, ...]:
    """The stored background: per channel, the median of the images' border pixels."""
    images = np.asarray(images[:NORMALIZATION_SAMPLES])
    border = np.concatenate(
        [
            images[:, 0].reshape(-1, images.shape[-1]),
            images[:, -1].reshape(-1, images.shape[-1]),
            images[:, :, 0].reshape(-1, images.shape[-1]),
            images[:, :, -1].reshape(-1, images.shape[-1]),
        ]
    )
    return tuple(float(v) for v in np.median(border, axis=0))


def _statistics(images: np.ndarray, scale: float) -> dict:
    """Per-channel mean and std of (up to 10,000) scaled images: the zoo's normalisation."""
    sample = np.asarray(images[:NORMALIZATION_SAMPLES], "float32") * scale
    axes = tuple(range(sample.ndim - 1))
    return {
        "scale": scale,
        "mean": sample.mean(axis=axes).tolist(),
        "std": (sample.std(axis=axes) + 1e-6).tolist(),
    }


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


def check_idx_files(folder: Path) -> str | None:
    """Why the four Fashion-MNIST `.gz` files in `folder` are unusable, or `None`.

    Each is decompressed whole; its IDX header (magic number 2049 for labels,
    2051 for 28x28 images) must match its length, and each split's image and
    label counts must agree. (Debian repacks the `.gz` files, so their own
    hashes differ from the originals': the contents are what is checked.)
    """
    import struct

    counts = {}
    for name in FASHION_MNIST_FILES:
        try:
            with gzip.open(folder / name, "rb") as f:
                content = f.read()
        except (OSError, EOFError) as error:
            return f"{name} is not a complete gzip file ({error})"
        images = "images" in name
        header = 16 if images else 8
        if len(content) < header:
            return f"{name} is too short for an IDX header"
        magic, count = struct.unpack(">II", content[:8])
        if magic != (2051 if images else 2049):
            return f"{name} has IDX magic number {magic}, not {2051 if images else 2049}"
        item = 1
        if images:
            rows, cols = struct.unpack(">II", content[8:16])
            if (rows, cols) != (28, 28):
                return f"{name} holds {rows}x{cols} images, not 28x28"
            item = rows * cols
        if len(content) != header + count * item:
            data = len(content) - header
            return f"{name} holds {data} bytes of data; its header says {count * item}"
        counts[name] = count
    for split in ("train", "t10k"):
        images, labels = (
            counts[f"{split}-images-idx3-ubyte.gz"],
            counts[f"{split}-labels-idx1-ubyte.gz"],
        )
        if images != labels:
            return f"{split}: {images} images but {labels} labels"
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
        problem = check_idx_files(source)  # before anything reaches the shared cache
        if problem is not None:
            where = (
                f"--data-dir {data_dir!r}"
                if data_dir and source in (Path(data_dir), Path(data_dir) / "fashion-mnist")
                else str(source)
            )
            raise DataError(
                f"The Fashion-MNIST files in {where} are damaged: {problem}. Replace them "
                "(e.g. Debian's dataset-fashion-mnist); nothing was copied into Keras's cache."
            )
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
        class_names=FASHION_MNIST_CLASSES,
        background=border_background(train[0]),
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
    """Streams a prepared TFDS image classification dataset (never held in memory).

    Only the labels are read first (images not decoded). Each epoch reads the
    training files in their order (`shuffle_files=False`) and permutes each
    window of 4,096 examples by a stateless shuffle keyed on `(seed, epoch,
    window)` (a windowed shuffle: examples move within their window only), so
    `--resume` repeats the same batches exactly. Images are kept as stored (uint8) and
    normalised per channel with the
    mean and standard deviation of (up to 10,000) training images; with
    `augment` the training images get the paper's CIFAR augmentation (4-pixel
    pad, random crop, horizontal flip; the pad takes the images' stored
    background value). Validation uses the dataset's `validation` split where
    it has one; otherwise a tenth of `train` is set aside for it (stratified,
    fixed by `seed`, recorded in `splits`): the test split is never used to
    validate, so a search cannot select on the images that are reported.

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

    def labels_of(split: str) -> np.ndarray:  # the labels alone: images are not decoded
        ds = builder.as_dataset(
            split, shuffle_files=False, decoders={image_key: tfds.decode.SkipDecoding()}
        )
        ds = ds.map(lambda ex: ex[label_key]).batch(8192)
        return np.concatenate([b.numpy() for b in ds]).astype("int32")

    def whole(split: str):
        labels = labels_of(split)
        return (split, np.arange(len(labels)), labels)

    splits = {"train": whole("train"), "test": whole("test")}
    if "validation" in info.splits:
        splits["val"] = whole("validation")
        made = {"val": "validation"}
    else:
        _, positions, labels = splits["train"]
        (train, y_train), (val, y_val) = _carve(positions, labels, seed, VAL_FRACTION, name)
        order_train, order_val = np.argsort(train), np.argsort(val)  # files' order
        splits["train"] = ("train", train[order_train], y_train[order_train])
        splits["val"] = ("train", val[order_val], y_val[order_val])
        made = {"val": f"{VAL_FRACTION:.0%} of train, stratified, seed {seed}"}
    names = getattr(info.features[label_key], "names", None)
    bundle = DataBundle(
        name,
        None,
        tuple(info.features[image_key].shape),
        info.features[label_key].num_classes,
        batch_size,
        seed,
        {"scale": 1.0, "mean": [0.0], "std": [1.0]},
        "crop_flip" if augment else None,
        probe_size,
        seed,
        tfds={"builder": builder, "image": image_key, "label": label_key, "splits": splits},
        class_names=tuple(names) if names else None,
        splits=made,
    )
    sample = bundle.images("train", NORMALIZATION_SAMPLES)  # the first 10,000, streamed
    return dataclasses.replace(
        bundle,
        preprocessing=_statistics(sample, 1 / 255),
        background=border_background(sample),
        layer=None,
        _cache={},
    )


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_folder(root: Path, what: str) -> dict[str, list[Path]]:
    """`{class name: image paths}` of `root/<class>/*`, with one-line errors."""
    if not root.is_dir():
        raise DataError(f"{what} {str(root)!r} is not a folder.")
    entries = list(root.iterdir())
    if not entries:
        where = what if what.endswith(repr(str(root))) else f"{what} {str(root)!r}"
        raise DataError(
            f"{where} is empty; expected {root}/<class>/<images> "
            "(PNG or JPEG), one subfolder per class."
        )
    classes = sorted(p for p in entries if p.is_dir() and not p.name.startswith("."))
    if not classes:
        where = what if what.endswith(repr(str(root))) else f"{what} {str(root)!r}"
        raise DataError(
            f"{where} has no class subfolders; put each class's images in {root}/<class name>/."
        )
    found = {}
    for folder in classes:
        images = _images_in(folder)
        if not images:
            raise DataError(f"Class folder {str(folder)!r} holds no PNG or JPEG images.")
        found[folder.name] = images
    return found


def folder_fingerprint(root: str | os.PathLike) -> str:
    """sha256 over the sorted (relative path, size, mtime in ns) of every file under `root`.

    Any file added, removed, renamed, rewritten or touched changes it; the
    images' contents are not read.
    """
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(
            f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file's contents."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(path: str | os.PathLike) -> str:
    """`folder_fingerprint` of a folder, `file_fingerprint` of a file."""
    return folder_fingerprint(path) if Path(path).is_dir() else file_fingerprint(path)


def _scan(paths: list[str]) -> np.ndarray:
    """Every image's (height, width, channels), decoded with `tf.io`; a bad file is named."""

    def shape(path):
        return tf.shape(tf.io.decode_image(tf.io.read_file(path), expand_animations=False))

    ds = tf.data.Dataset.from_tensor_slices(paths).map(
        shape, num_parallel_calls=AUTOTUNE, deterministic=True
    )
    try:
        return np.concatenate([b.numpy() for b in ds.batch(1024)])
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError, tf.errors.UnknownError):
        for path in paths:  # find the file that failed, to name it
            try:
                shape(tf.constant(path))
            except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
                reason = str(error.message).splitlines()[0]
                raise DataError(
                    f"{path} is not a readable PNG or JPEG image ({reason}); remove or replace it."
                ) from None
        raise


def _stratified(paths, labels, seed, fraction, what, part="validation"):
    return _carve(np.asarray(paths), np.asarray(labels, "int32"), seed, fraction, what, part)


def load_folder(
    path: str | os.PathLike,
    batch_size: int = 64,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
    augment: str | None = None,
    probe_size: int = 64,
) -> DataBundle:
    """An image folder, streamed from disk: `DIR/<class>/*` or `DIR/train/<class>/*`.

    With one folder per class, the images are split 70 / 10 / 20 into
    train / validation / test, stratified by class and fixed by `seed`. With
    `train/` (and optional `val/`, `test/`), a missing split is set aside
    from `train/` the same way. Class names are the folder names, sorted.
    Every image is decoded once first (`tf.io.decode_image`): a corrupt file
    is named, mixed sizes need `image_size`. Grey and RGB may be mixed (grey
    is then repeated to RGB).

    Args:
        path: The folder.
        batch_size: Mini-batch size b. Defaults to `64`.
        seed: Seed of the split, training order and augmentation. Defaults to `0`.
        image_size: `(height, width)` to resize to. Defaults to `None`.
        augment: `None`, `"crop"` or `"crop_flip"`. Defaults to `None`.
        probe_size: Test images in the heat-map probe. Defaults to `64`.

    Returns:
        A `DataBundle` with `files` (paths and labels) and no `arrays`.
    """
    root = Path(path)
    what = f"--data {str(root)!r}"
    splits = {}
    if (root / "train").is_dir():
        parts = {
            split: _class_folder(root / folder, f"{what}: {folder}/")
            for split, folder in (("train", "train"), ("val", "val"), ("test", "test"))
            if (root / folder).is_dir()
        }
        names = sorted(parts["train"])
        for split, found in parts.items():
            missing = sorted(set(names) - set(found))
            extra = sorted(set(found) - set(names))
            if extra:
                raise DataError(f"{what}: classes {extra} are in {split}/ but not in train/.")
            if missing:
                raise DataError(f"{what}: classes {missing} are in train/ but not in {split}/.")
        lists = {
            split: (
                [str(p) for c in names for p in found[c]],
                [i for i, c in enumerate(names) for _ in found[c]],
            )
            for split, found in parts.items()
        }
        if "test" not in lists:
            train, test = _stratified(*lists["train"], seed, TEST_FRACTION, what, "test")
            lists["train"], lists["test"] = train, test
            splits["test"] = f"{TEST_FRACTION:.0%} of train/, stratified, seed {seed}"
        if "val" not in lists:
            train, val = _stratified(*lists["train"], seed, VAL_FRACTION, what)
            lists["train"], lists["val"] = train, val
            splits["val"] = f"{VAL_FRACTION:.0%} of train/, stratified, seed {seed}"
    else:
        found = _class_folder(root, what)
        names = sorted(found)
        paths = [str(p) for c in names for p in found[c]]
        labels = [i for i, c in enumerate(names) for _ in found[c]]
        rest, test = _stratified(paths, labels, seed, TEST_FRACTION, what, "test")
        train, val = _stratified(*rest, seed, VAL_FRACTION / (1 - TEST_FRACTION), what)
        lists = {"train": train, "val": val, "test": test}
        splits = {
            "train": "70% of the images, stratified, seed " + str(seed),
            "val": "10%, stratified",
            "test": "20%, stratified",
        }
    files = {
        split: (np.asarray(p, dtype=object).astype(str), np.asarray(y, "int32"))
        for split, (p, y) in lists.items()
    }
    every = [p for split in ("train", "val", "test") for p in files[split][0]]
    shapes = _scan(every)
    channels = 3 if np.any(shapes[:, 2] >= 3) else 1
    sizes = {tuple(s) for s in shapes[:, :2].tolist()}
    if image_size is None and len(sizes) > 1:
        first = every[0]
        other = every[int(np.argmax(np.any(shapes[:, :2] != shapes[0, :2], axis=1)))]
        raise DataError(
            f"{what} holds images of {len(sizes)} sizes (e.g. {tuple(shapes[0, :2].tolist())} "
            f"{first} and another in {other}); pass --image-size H W to resize them all."
        )
    size = tuple(image_size) if image_size is not None else tuple(shapes[0, :2].tolist())
    bundle = DataBundle(
        root.name,
        None,
        (*size, channels),
        len(names),
        batch_size,
        seed,
        {"scale": 1.0, "mean": [0.0], "std": [1.0]},
        augment,
        probe_size,
        seed,
        files=files,
        class_names=tuple(names),
        image_size=None if image_size is None else tuple(image_size),
        input_dtype="uint8",
        splits=splits,
        fingerprint=folder_fingerprint(root),
    )
    # The zoo's normalisation and the background, from a seeded sample of training images.
    sample = dataclasses.replace(bundle, files={**files, "train": _sample(files["train"], seed)})
    stored = sample.stored().images("train")
    return dataclasses.replace(
        bundle,
        preprocessing=_statistics(stored, 1 / 255),
        background=border_background(stored),
        layer=None,
        _cache={},
    )


def _sample(split: tuple, seed: int, count: int = 1000) -> tuple:
    paths, labels = split
    order = np.sort(np.random.default_rng(seed).permutation(len(labels))[:count])
    return paths[order], labels[order]


def load_npz(
    path: str | os.PathLike,
    batch_size: int = 64,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
    augment: str | None = None,
    probe_size: int = 64,
) -> DataBundle:
    """An `.npz` with `x_train`, `y_train`, `x_test`, `y_test` (the `keras.datasets` layout).

    Optional `x_val`, `y_val` (otherwise a tenth of train is set aside,
    stratified, fixed by `seed`) and `class_names`. Images are `(n, h, w)` or
    `(n, h, w, c)` with 1 or 3 channels; labels integers in `[0, classes)`,
    where classes is `len(class_names)`, else the largest training label + 1.

    Returns:
        A `DataBundle` (read whole into memory).
    """
    what = f"--data {str(path)!r}"
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded as npz:
                content = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError) as error:
        if "pickled" in str(error):  # NumPy's reading of anything that is not an array file
            raise DataError(
                f"{what} is not an .npz of arrays: it is another kind of file, or holds "
                "pickled Python objects, which keras-spkd does not load (they can run code); "
                "save plain arrays with numpy.savez(path, x_train=..., y_train=..., "
                "x_test=..., y_test=...)."
            ) from error
        raise DataError(f"{what} is not a readable .npz file ({error}).") from error
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy array under an .npz name
        raise DataError(
            f"{what} is one array (a .npy file), not an .npz of named arrays; save "
            "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)."
        )
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in content]
    if missing:
        raise DataError(
            f"{what} lacks {missing}; expected x_train, y_train, x_test, y_test (optional "
            f"x_val, y_val, class_names); it holds {sorted(content)}."
        )
    if ("x_val" in content) != ("y_val" in content):
        raise DataError(f"{what} holds only one of x_val and y_val; give both or neither.")
    arrays = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" not in content:
            continue
        x, y = content[f"x_{split}"], content[f"y_{split}"]
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3) or x.dtype.kind not in "uif":
            raise DataError(
                f"{what}: x_{split} has shape {x.shape} ({x.dtype}); expected numeric images "
                "(n, height, width) or (n, height, width, 1 or 3)."
            )
        if len(x) == 0:
            raise DataError(f"{what}: x_{split} holds no images; expected at least one.")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
            raise DataError(
                f"{what}: x_{split} holds NaN or infinite pixels in {int(bad.sum())} of "
                f"{len(x)} images (the first: index {int(np.argmax(bad))}); expected finite "
                "pixel values. Drop or repair those images."
            )
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu":
            raise DataError(
                f"{what}: y_{split} must be {len(x)} integer labels (one per image); received "
                f"shape {y.shape} ({y.dtype})."
            )
        arrays[split] = (x, y.astype("int32"))
    shapes = {a[0].shape[1:] for a in arrays.values()}
    if len(shapes) > 1 and image_size is None:
        raise DataError(f"{what}: the splits' images have different shapes {sorted(shapes)}.")
    names = [str(n) for n in content["class_names"]] if "class_names" in content else None
    classes = len(names) if names else int(arrays["train"][1].max()) + 1
    for split, (_, y) in arrays.items():
        bad = y[(y < 0) | (y >= classes)]
        if len(bad):
            raise DataError(
                f"{what}: y_{split} holds label {int(bad[0])}, outside [0, {classes})"
                + (" (class_names)" if names else " (classes seen in y_train)")
                + "."
            )
    present = {split: set(np.unique(y).tolist()) for split, (_, y) in arrays.items()}
    for split in present:
        if split != "train" and present["train"] - present[split]:
            raise DataError(
                f"{what}: classes {sorted(present['train'] - present[split])} are in y_train "
                f"but not in y_{split}."
            )
    splits = {}
    if "val" not in arrays:
        arrays["train"], arrays["val"] = _carve(*arrays["train"], seed, VAL_FRACTION, what)
        splits["val"] = f"{VAL_FRACTION:.0%} of train, stratified, seed {seed}"
    x_train = arrays["train"][0]
    scale = 1 / 255 if x_train.dtype == np.uint8 else 1.0
    channels = x_train.shape[-1]
    size = tuple(image_size) if image_size is not None else tuple(x_train.shape[1:3])
    return DataBundle(
        Path(path).stem,
        arrays,
        (*size, channels),
        classes,
        batch_size,
        seed,
        _statistics(x_train, scale),
        augment,
        probe_size,
        seed,
        class_names=tuple(names) if names else None,
        image_size=None if image_size is None else tuple(image_size),
        background=border_background(x_train),
        splits=splits,
        fingerprint=file_fingerprint(path),
    )


def load_data_path(path: str | os.PathLike, **kwargs) -> DataBundle:
    """`--data PATH`: an image folder (`load_folder`) or an `.npz` file (`load_npz`)."""
    target = Path(path)
    if not target.exists():
        raise DataError(f"--data {str(path)!r} does not exist.")
    if target.is_dir():
        return load_folder(target, **kwargs)
    if target.suffix.lower() == ".npz":
        return load_npz(target, **kwargs)
    raise DataError(
        f"--data {str(path)!r} is neither a folder of images (DIR/<class>/*) nor an .npz file."
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
