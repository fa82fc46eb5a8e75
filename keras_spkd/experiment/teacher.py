"""The teacher cache: trained teachers reused across runs, verified on every load.

Each entry is `NAME.keras` with `NAME.json` beside it: dataset, architecture,
epochs, seed, the training recipe, test accuracy, the file's sha256 and the
keras-spkd version that trained it. An entry whose file or metadata does not
match is set aside (renamed `*.rejected-N`) with one warning and retrained.
A lock per entry keeps two processes from training the same teacher; an
interrupted training resumes from its backup.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zipfile
from pathlib import Path

import filelock
import keras

from keras_spkd import __version__
from keras_spkd.data import DataBundle
from keras_spkd.experiment.config import ExperimentConfig
from keras_spkd.experiment.training import (
    accuracy,
    build,
    model_for_fit,
    prepare_model,
    run_phase,
    save_model,
)
from keras_spkd.preprocessing import Preprocessing  # noqa: F401 - registered for load_model
from keras_spkd.sources import load_model_file as load_keras_file
from keras_spkd.summary import atomic_write_json

logger = logging.getLogger("keras_spkd")


def cache_dir() -> Path:
    """`$KERAS_SPKD_CACHE`, or `~/.cache/keras-spkd` (also when the variable is empty)."""
    return Path(os.environ.get("KERAS_SPKD_CACHE") or Path.home() / ".cache" / "keras-spkd")


def metadata_hash(meta: dict) -> str:
    """sha256 of a cache entry's metadata (without its own hash): a hand edit shows."""
    text = json.dumps({k: v for k, v in meta.items() if k != "metadata_sha256"}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recipe(config: ExperimentConfig) -> dict:
    """What a cached teacher depends on; all of it must match to reuse one."""
    from keras_spkd.data import data_fingerprint

    user = {  # added in 0.3: teachers take stored pixels, preprocessing inside
        "input": "stored",
        "data": data_fingerprint(config.data) if config.data else None,
        "image_size": config.image_size,
        "optimizer": config.optimizer,
        "augment": config.augment,
        "preprocessing": config.teacher_preprocessing,
        "architecture_sha256": (  # a .keras architecture: its bytes, not only its path
            sha256(Path(config.teacher_arch))
            if config.teacher_arch.endswith(".keras") and Path(config.teacher_arch).is_file()
            else None
        ),
    }
    from keras_spkd.sources import parse_model_spec

    spec = parse_model_spec(config.teacher_arch)
    if spec.kind != "zoo" or (config.weight_decay and spec.name.startswith("digits-cnn")):
        # From 0.3.1 weight decay reaches a file's, an application's, a builder's and
        # the digits CNNs' kernels (and AdamW decouples it); teachers cached before
        # were trained without.
        user["weight_decay_on"] = "kernels (0.3.1)"
    if config.train_images is not None:  # a teacher of the subset, not the split
        user["train_images"] = config.train_images
    return {
        **user,
        "dataset": config.dataset,
        "architecture": config.teacher_arch,
        "epochs": config.teacher_epochs,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "schedule": config.schedule,
        "weight_decay": config.weight_decay,
    }


def entry_name(config: ExperimentConfig) -> str:
    import re

    key = hashlib.sha256(json.dumps(recipe(config), sort_keys=True).encode()).hexdigest()[:10]
    arch = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(config.teacher_arch).name)[:40]
    dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.dataset)[:40]
    return f"{dataset}-{arch}-e{config.teacher_epochs}-s{config.seed}-{key}"


class TeacherCache:
    """Trained teachers keyed by their recipe, in `root` (default `cache_dir()/teachers`)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else cache_dir() / "teachers"

    def paths(self, config: ExperimentConfig) -> tuple[Path, Path]:
        name = entry_name(config)
        return self.root / f"{name}.keras", self.root / f"{name}.json"

    def _problem(self, config: ExperimentConfig) -> str | None:
        model_path, meta_path = self.paths(config)
        if not meta_path.is_file():
            return "it has no metadata file"
        try:
            meta = json.loads(meta_path.read_text())
        except (ValueError, OSError) as error:
            return f"its metadata is not valid JSON ({error})"
        if not isinstance(meta, dict) or meta.get("recipe") != recipe(config):
            return "its metadata records another recipe"
        if "metadata_sha256" in meta and meta["metadata_sha256"] != metadata_hash(meta):
            return "its metadata was changed by hand"
        if meta.get("sha256") != sha256(model_path):
            return "the file's sha256 differs from the one recorded (replaced or corrupted)"
        if not zipfile.is_zipfile(model_path):
            return "it is not a valid .keras archive"
        return None

    def _set_aside(self, config: ExperimentConfig, why: str) -> None:
        for path in self.paths(config):
            if path.exists():
                index = 0
                while path.with_name(f"{path.name}.rejected-{index}").exists():
                    index += 1
                path.rename(path.with_name(f"{path.name}.rejected-{index}"))
        logger.warning("The cached teacher %s was set aside (%s); retraining it", path.stem, why)

    def metadata(self, config: ExperimentConfig) -> dict:
        return json.loads(self.paths(config)[1].read_text())

    def store(self, config: ExperimentConfig, teacher: keras.Model, test_accuracy: float, **facts):
        """Saves `teacher` with its metadata (atomically; the metadata last)."""
        model_path, meta_path = self.paths(config)
        self.root.mkdir(parents=True, exist_ok=True)
        save_model(teacher, model_path)
        meta = {
            "recipe": recipe(config),
            "test_accuracy": test_accuracy,
            "sha256": sha256(model_path),
            "keras_spkd_version": __version__,
            **facts,
        }
        atomic_write_json(meta_path, {**meta, "metadata_sha256": metadata_hash(meta)})

    def has_valid(self, config: ExperimentConfig) -> bool:
        """Whether the entry for `config` is there and intact (read only; no lock needed)."""
        try:
            return self.paths(config)[0].is_file() and self._problem(config) is None
        except OSError:
            return False

    def _load(self, config: ExperimentConfig) -> tuple[keras.Model | None, str | None]:
        model_path = self.paths(config)[0]
        try:
            teacher = keras.saving.load_model(model_path, compile=False)
        except (ValueError, TypeError, OSError, KeyError) as error:
            return None, f"it could not be loaded ({error})"
        logger.info("Reusing the cached teacher %s", model_path)
        return teacher, None

    def get(self, config: ExperimentConfig, data: DataBundle) -> tuple[keras.Model, dict]:
        """The cached teacher for `config`, trained (resumably) when missing or bad."""
        model_path, _ = self.paths(config)
        if self.has_valid(config):  # files are written atomically: reading needs no lock
            teacher, _ = self._load(config)
            if teacher is not None:
                return teacher, self.metadata(config)
        self.root.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(model_path) + ".lock"):  # one trainer per entry
            if model_path.exists():
                problem = self._problem(config)
                if problem is None:
                    teacher, problem = self._load(config)
                    if teacher is not None:
                        return teacher, self.metadata(config)
                self._set_aside(config, problem)
            work_dir = model_path.with_suffix(".training")
            teacher, facts = train_teacher(config, data, work_dir)
            test_accuracy = accuracy(teacher, data.test)
            self.store(config, teacher, test_accuracy, **facts)
            shutil.rmtree(work_dir, ignore_errors=True)
            return teacher, self.metadata(config)


def train_teacher(config: ExperimentConfig, data: DataBundle, work_dir: Path):
    """Trains the config's teacher; `work_dir` holds its backup (the caller removes it)."""
    # Reseed: the teacher must not depend on what the process built before.
    keras.utils.set_random_seed(config.seed)
    teacher = build(config.teacher_arch, data, config, "teacher")
    logger.info("Training the teacher %s for %d epochs", config.teacher_arch, config.teacher_epochs)
    facts = run_phase(
        work_dir, model_for_fit(teacher), data, config, config.teacher_epochs, "teacher"
    )
    return teacher, facts


def get_teacher(config: ExperimentConfig, data: DataBundle) -> tuple[keras.Model, dict]:
    """The config's teacher: its `teacher` file, or the cached (or newly trained) one.

    A teacher file gets the stored pixels as float (or its declared
    `teacher_preprocessing`), checked against the data before anything trains.
    """
    if config.teacher:
        from keras_spkd.sources import ModelSpec

        spec = ModelSpec("file", config.teacher, config.teacher)
        teacher = load_keras_file(config.teacher, "Teacher file")
        teacher = prepare_model(teacher, spec, data, config, "teacher")
        return teacher, {"path": config.teacher, "label": spec.label}
    cache = TeacherCache()
    teacher, meta = cache.get(config, data)
    return teacher, {**meta, "path": str(cache.paths(config)[0])}
