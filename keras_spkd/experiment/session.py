"""What every workflow does first: the strategy, the data, the layer pairs, checked."""

from __future__ import annotations

import logging

from keras_spkd.data import DataBundle, data_fingerprint, load_data_path, load_dataset
from keras_spkd.errors import ConfigError
from keras_spkd.experiment.config import ExperimentConfig

logger = logging.getLogger("keras_spkd")


def strategy_for(config: ExperimentConfig):
    """The config's `tf.distribute` strategy, with the global batch checked against it."""
    from keras_spkd.distribute import check_global_batch, make_strategy

    try:
        strategy = make_strategy(config.strategy)
        check_global_batch(config.batch_size, strategy)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return strategy


def load_data(config: ExperimentConfig, seed: int | None = None) -> DataBundle:
    """The config's data (`data` path or `dataset`), as stored pixels for models that carry
    their preprocessing; the batch must fit the training set."""
    import dataclasses

    seed = config.seed if seed is None else seed
    image_size = tuple(config.image_size) if config.image_size else None
    augment = None if config.augment == "none" else config.augment
    if config.data is not None:
        data = load_data_path(
            config.data,
            batch_size=config.batch_size,
            seed=seed,
            image_size=image_size,
            augment=augment,
        )
    else:
        data = load_dataset(
            config.dataset,
            batch_size=config.batch_size,
            data_dir=config.data_dir,
            download=config.download,
            seed=seed,
        )
        data = dataclasses.replace(data, augment=augment, image_size=image_size, layer=None)
        if image_size:
            data = dataclasses.replace(data, input_shape=(*image_size, data.input_shape[-1]))
    data = data.stored()
    size = data.size("train")
    if config.batch_size > size:
        raise ConfigError(
            f"batch_size must be at most the training set's size ({size} images in "
            f"{config.dataset!r}); received {config.batch_size}."
        )
    return data


def resolve_pairs(
    config: ExperimentConfig, teacher, data: DataBundle, privileged: bool = False
) -> ExperimentConfig:
    """Concrete, checked layer pairs: `"auto"` resolved, every name looked up.

    Raises:
        ConfigError: A layer name is unknown (the message lists the available ones).
    """
    from keras_spkd.experiment.training import build
    from keras_spkd.features import build_feature_extractor

    shape = (data.input_shape[0] // 2, *data.input_shape[1:]) if privileged else None
    student = build(config.student_arch, data, config, "student", shape)
    if config.pairs == "auto":
        from keras_spkd.pairs import suggest_layer_pairs

        try:
            pairs = suggest_layer_pairs(teacher, student, stages="last")
        except ValueError as error:
            raise ConfigError(f"pairs 'auto': {error}") from error
        logger.info("Layer pairs found: %s", ", ".join(f"{t}:{s}" for t, s in pairs))
        gamma = config.gamma
        if isinstance(gamma, list) and len(gamma) != len(pairs):
            raise ConfigError(
                f"gamma lists {len(gamma)} values but 'auto' found {len(pairs)} pairs {pairs}."
            )
        config = config.replace(pairs=[list(p) for p in pairs])
    try:
        build_feature_extractor(teacher, [t for t, _ in config.pairs], role="teacher")
        build_feature_extractor(student, [s for _, s in config.pairs], role="student")
        if config.at_pairs not in (None, "auto"):
            build_feature_extractor(teacher, [t for t, _ in config.at_pairs], role="teacher")
            build_feature_extractor(student, [s for _, s in config.at_pairs], role="student")
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return config


def teacher_record(config: ExperimentConfig) -> dict:
    """What a run records of its data and model files (sha256 of each `.keras` file; a
    folder's `data_fingerprint`), so a resume after any of them changed is refused."""
    from pathlib import Path

    from keras_spkd.experiment.teacher import sha256
    from keras_spkd.sources import parse_model_spec

    record = {}
    if config.teacher:
        record["teacher_sha256"] = sha256(Path(config.teacher))
    for name in ("teacher_arch", "student_arch"):
        spec = parse_model_spec(getattr(config, name))
        if spec.kind == "file" and Path(spec.name).is_file():
            record[f"{name}_sha256"] = sha256(Path(spec.name))
    if config.data is not None and Path(config.data).exists():
        record["data_fingerprint"] = data_fingerprint(config.data)
    return record


def prepare_cache() -> None:
    """The teacher cache folder, created (or refused) before a run directory is touched."""
    from keras_spkd.errors import RunDirectoryError
    from keras_spkd.experiment.teacher import cache_dir

    root = cache_dir() / "teachers"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirectoryError(
            f"Cannot create the teacher cache {str(root)!r} ($KERAS_SPKD_CACHE): {error.strerror}."
        ) from error


def data_record(data: DataBundle) -> dict:
    """What a summary records of the data: sizes, classes, how the splits were made."""
    return {
        "name": data.name,
        "input_shape": list(data.input_shape),
        "class_names": list(data.class_names),
        "sizes": {split: data.size(split) for split in ("train", "val", "test")},
        "splits": dict(data.splits),
        "augment": data.augment or "none",
        "fingerprint": data.fingerprint,
    }
