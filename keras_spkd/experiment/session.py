"""One prepared session per workflow: every check made before a run directory exists.

`run_distill`, `run_compare` and `run_search` start the same way: the
strategy, the data, the teacher (a file, or the cache's entry), the layer
pairs and the run directory's path, each checked. `prepare` does all of it,
writing nothing, and returns a `Session`; the run is then a short sequence on
it:

```python
session = prepare(config, out, kind="distill", resume=resume)
with session.open() as run_dir, session.strategy.scope():
    teacher, meta = session.teacher()
    config = session.resolve_pairs(teacher)
    ...
    session.checkpoint("export")      # honours a Ctrl-C that TensorFlow swallowed
```

The API (stable; `compare` and `search` use it too):

- `prepare(config, out, kind, resume=False, overwrite=False, privileged=False,
  extra=None, check_pairs=True) -> Session`;
- `Session.config`, `.strategy`, `.data`, `.out` (the worker's own folder under
  a multi-worker strategy), `.kind`, `.resume`, `.record` (what the run
  directory must match on resume besides the config: the teacher file's
  sha256 and `extra`);
- `Session.open(**extra) -> RunDirectory` (locked; entered by the caller),
  `Session.teacher() -> (model, metadata)`, `Session.resolve_pairs(teacher)
  -> ExperimentConfig`, `Session.checkpoint(phase)`.

Errors of the core (`ValueError` / `TypeError` raised by keras-spkd's
distiller, features, pairs and strategy code for settings the user gave) are
translated into `ConfigError` in one place, `keras_spkd.errors.core_errors()`
(imported here too). A model the
user brings is checked against the data by `check_model_fits_data` (defined
beside `build` in `training.py`, so the teacher cache uses it too).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import keras

from keras_spkd import distribute
from keras_spkd.data import DataBundle, data_fingerprint, load_data_path, load_dataset
from keras_spkd.errors import ConfigError, RunDirectoryError, core_errors
from keras_spkd.experiment.config import ExperimentConfig
from keras_spkd.experiment.rundir import RunDirectory, check_out_path
from keras_spkd.experiment.teacher import TeacherCache, get_teacher, sha256
from keras_spkd.experiment.training import build, check_model_fits_data  # noqa: F401  (public here)
from keras_spkd.features import build_feature_extractor
from keras_spkd.pairs import suggest_layer_pairs

logger = logging.getLogger("keras_spkd")


# Ctrl-C. TensorFlow swallows SIGINT inside some C++ calls (SavedModel and
# TFLite export): the handler that `honour_interrupts` installs remembers
# the signal, and each `checkpoint` between phases raises it again.
_interrupted = threading.Event()


def _on_sigint(signum, frame) -> None:
    _interrupted.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def honour_interrupts() -> Iterator[None]:
    """Within it, Ctrl-C stops a run, at the latest at its next `checkpoint` (the CLI uses it).

    Outside the main thread (where signals cannot be handled) it changes nothing.
    """
    _interrupted.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def checkpoint(phase: str) -> None:
    """Raises `KeyboardInterrupt` if Ctrl-C came (even one swallowed by TensorFlow).

    Args:
        phase: The phase about to start or just ended (for the log).
    """
    if _interrupted.is_set():
        logger.info("Interrupted before %s", phase)
        raise KeyboardInterrupt


def strategy_for(config: ExperimentConfig):
    """The config's `tf.distribute` strategy, with the global batch checked against it."""
    with core_errors():
        strategy = distribute.make_strategy(config.strategy)
        distribute.check_global_batch(config.batch_size, strategy)
    return strategy


def load_data(
    config: ExperimentConfig, seed: int | None = None, for_training: bool = True
) -> DataBundle:
    """The config's data (`data` path or `dataset`), as stored pixels for models that carry
    their preprocessing; for training, the batch must fit the training set."""
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
    if config.train_images is not None:
        data = data.train_subset(config.train_images)
    size = data.size("train")
    if for_training and config.batch_size > size:
        subset = f", --train-images {config.train_images}" if config.train_images else ""
        raise ConfigError(
            f"batch_size must be at most the training set's size ({size} images in "
            f"{config.dataset!r}{subset}); received {config.batch_size}."
        )
    return data


def resolve_pairs(
    config: ExperimentConfig, teacher, data: DataBundle, privileged: bool = False
) -> ExperimentConfig:
    """Concrete, checked layer pairs: `"auto"` resolved, every name looked up.

    Raises:
        ConfigError: A layer name is unknown (the message lists the available ones).
    """
    shape = (data.input_shape[0] // 2, *data.input_shape[1:]) if privileged else None
    student = build(config.student_arch, data, config, "student", shape)
    if config.pairs == "auto":
        with core_errors("pairs 'auto': "):
            pairs = suggest_layer_pairs(teacher, student, stages="last")
        logger.info("Layer pairs found: %s", ", ".join(f"{t}:{s}" for t, s in pairs))
        gamma = config.gamma
        if isinstance(gamma, list) and len(gamma) != len(pairs):
            raise ConfigError(
                f"gamma lists {len(gamma)} values but 'auto' found {len(pairs)} pairs {pairs}."
            )
        config = config.replace(pairs=[list(p) for p in pairs])
    with core_errors():
        build_feature_extractor(teacher, [t for t, _ in config.pairs], role="teacher")
        build_feature_extractor(student, [s for _, s in config.pairs], role="student")
        if config.at_pairs not in (None, "auto"):
            build_feature_extractor(teacher, [t for t, _ in config.at_pairs], role="teacher")
            build_feature_extractor(student, [s for _, s in config.at_pairs], role="student")
    return config


def teacher_record(config: ExperimentConfig) -> dict:
    """What a run records of its data and model files (sha256 of each `.keras` file; a
    folder's `data_fingerprint`), so a resume after any of them changed is refused."""
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


def prepare_cache(config: ExperimentConfig | None = None) -> None:
    """The teacher cache, checked before a run directory is touched.

    A cache that already holds a valid teacher for `config` is used as it is,
    read-only if need be. Otherwise the cache folder must be creatable and
    writable (a teacher will be trained and stored there).

    Raises:
        RunDirectoryError: The cache cannot hold the teacher to be trained.
    """
    cache = TeacherCache()
    if config is not None and cache.has_valid(config):
        return
    root = cache.root
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirectoryError(
            f"Cannot create the teacher cache {str(root)!r} ($KERAS_SPKD_CACHE): {error.strerror}."
        ) from error
    if not writable(root):
        raise RunDirectoryError(
            f"The teacher cache {str(root)!r} ($KERAS_SPKD_CACHE) is not writable and holds no "
            "teacher for these settings; point KERAS_SPKD_CACHE at a writable folder, or pass "
            "a trained --teacher."
        )


def writable(folder: Path) -> bool:
    """Whether files can be created in `folder` (for root too: a read-only mount refuses)."""
    return os.access(folder, os.W_OK | os.X_OK)


def _worker_index(strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(getattr(resolver, "task_id", 0) or 0) if resolver else 0


@dataclass
class Session:
    """A checked workflow, ready to open its run directory (see the module's docstring).

    Attributes:
        config: The settings, as recorded by the run directory.
        strategy: The `tf.distribute` strategy (train inside its scope).
        data: The dataset.
        out: The run directory (the worker's own folder under multi-worker).
        kind: What the run directory holds (`"distill"`, `"compare"`, `"search"`).
        resume: Continue the run `out` holds.
        overwrite: Start afresh in `out`.
        privileged: The student sees the top half of each image.
        record: Further settings the run directory must match on resume.
    """

    config: ExperimentConfig
    strategy: object
    data: DataBundle
    out: Path
    kind: str = "distill"
    resume: bool = False
    overwrite: bool = False
    privileged: bool = False
    record: dict = field(default_factory=dict)
    _teacher: tuple | None = field(default=None, repr=False)

    def open(self, **extra) -> RunDirectory:
        """The run directory, created and locked when entered (`with session.open() as d:`)."""
        if self.resume and not (self.out / "config.json").exists():
            logger.warning("Nothing to resume in %s; starting a new run there", self.out)
        return RunDirectory(
            self.out,
            self.config,
            resume=self.resume,
            kind=self.kind,
            extra={**self.record, **extra},
            overwrite=self.overwrite,
        )

    def teacher(self) -> tuple[keras.Model, dict]:
        """The teacher and its metadata: the file, or the cache's (trained when missing)."""
        if self._teacher is None:
            with self.strategy.scope():
                self._teacher = get_teacher(self.config, self.data)
        return self._teacher

    def resolve_pairs(self, teacher) -> ExperimentConfig:
        """The config with concrete, checked layer pairs for `teacher`."""
        return resolve_pairs(self.config, teacher, self.data, self.privileged)

    @staticmethod
    def checkpoint(phase: str) -> None:
        """Stops here (`KeyboardInterrupt`) if Ctrl-C came; see `checkpoint`."""
        checkpoint(phase)


def prepare(
    config: ExperimentConfig,
    out: str | os.PathLike,
    kind: str = "distill",
    resume: bool = False,
    overwrite: bool = False,
    privileged: bool = False,
    extra: dict | None = None,
    check_pairs: bool = True,
) -> Session:
    """Checks everything a run needs, writing nothing, and returns its `Session`.

    In order: the config's type, the strategy and global batch, the data,
    the run directory's path, the teacher (a file: loaded and checked against
    the data; the cache: usable), and the layer pairs on the teacher (or its
    architecture, before any time is spent training it).

    Args:
        config: The settings.
        out: The run directory.
        kind: What it will hold (`"distill"`, `"compare"`, `"search"`).
        resume: Continue the run `out` holds. Defaults to `False`.
        overwrite: Start afresh in `out`. Defaults to `False`.
        privileged: The student sees the top half of each image. Defaults to `False`.
        extra: Further settings the run directory records and matches on resume.
        check_pairs: Check the config's layer pairs (off for a search, which
            checks its candidates itself). Defaults to `True`.

    Returns:
        The `Session`.

    Raises:
        ConfigError, DataError, RunDirectoryError: Something the user can fix.
    """
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"config must be an ExperimentConfig; received {type(config).__name__}.")
    strategy = strategy_for(config)
    worker = _worker_index(strategy)
    out = Path(out) / f"worker{worker}" if worker else Path(out)
    with strategy.scope():
        data = load_data(config)
        check_out_path(out)
        session = Session(
            config,
            strategy,
            data,
            out,
            kind,
            resume,
            overwrite,
            privileged,
        )
        if config.teacher:
            probe = session.teacher()[0]  # loaded and checked before it is hashed
        else:  # the pairs on the architecture, before spending time on a teacher
            prepare_cache(config)
            keras.utils.set_random_seed(config.seed)
            probe = build(config.teacher_arch, data, config, "teacher")
        if check_pairs:
            session.resolve_pairs(probe)
    session.record.update({**teacher_record(config), **(extra or {})})
    return session


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
