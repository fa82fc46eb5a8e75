"""Datasets: the embedded digits, TFDS on a locally prepared directory, offline errors."""

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
    every = np.concatenate([x.numpy() for x, _ in data.train.unbatch().batch(48)])
    # Per-channel normalisation with the training statistics.
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
    # Every augmented value is a normalised pixel or the zero padding.
    allowed = np.union1d(np.unique(x_plain), [0.0])
    assert np.isin(x_aug, allowed).all()
    assert (x_aug == 0).mean() > (x_plain == 0).mean()  # padding was cropped in


def test_unprepared_and_unknown_datasets_give_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"'cifar10' is not prepared in .*tfds build cifar10"):
        load_tfds("cifar10", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="Unknown dataset 'no_such_dataset_xyz'"):
        load_dataset("no_such_dataset_xyz", data_dir=str(tmp_path))
