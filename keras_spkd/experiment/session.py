"""What every workflow does first: the strategy, the data, the layer pairs, checked."""

from __future__ import annotations

import logging

from keras_spkd.data import DataBundle, load_dataset
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
    """The config's dataset; the batch must fit the training set."""
    data = load_dataset(
        config.dataset,
        batch_size=config.batch_size,
        data_dir=config.data_dir,
        download=config.download,
        seed=config.seed if seed is None else seed,
    )
    size = len(data.arrays["train"][1])
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
    """What a run records of a teacher file, so a resume with another file is refused."""
    if not config.teacher:
        return {}
    from pathlib import Path

    from keras_spkd.experiment.teacher import sha256

    return {"teacher_sha256": sha256(Path(config.teacher))}


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
