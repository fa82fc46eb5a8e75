"""Run directories: one writer at a time, atomic files, resume only with the same settings."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import filelock

from keras_spkd.errors import RunDirectoryError
from keras_spkd.experiment.config import ExperimentConfig, differences
from keras_spkd.summary import atomic_write_json

LOCK_NAME = ".keras-spkd.lock"
ORIGINAL_NAME = ".keras-spkd.settings.json"  # config.json as the run began (names hand edits)
HASH_KEY = "settings_sha256"
logger = logging.getLogger("keras_spkd")


def _foreign(path: Path) -> bool:
    """Whether `path` holds anything but a lock file and per-worker folders."""
    return path.is_dir() and any(
        p.name not in (LOCK_NAME, ORIGINAL_NAME) and not p.name.startswith("worker")
        for p in path.iterdir()
    )


def settings_hash(record: dict) -> str:
    """sha256 of a run record's settings (the record without its own hash)."""
    settings = {key: value for key, value in record.items() if key != HASH_KEY}
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _flat(record: dict) -> dict:
    return {
        **{k: v for k, v in record.items() if k not in ("config", HASH_KEY)},
        **record.get("config", {}),
    }


def _seed_set(seeds) -> set | None:
    if isinstance(seeds, bool):
        return None
    if isinstance(seeds, int):
        return set(range(seeds))
    if isinstance(seeds, list) and all(isinstance(s, int) for s in seeds):
        return set(seeds)
    return None


def _seeds_change(saved, given) -> bool:
    """Whether only a comparison's seed list changes: each seed's runs are kept in its
    own folders whatever the list, so a resume with more seeds runs only the new ones,
    and one with fewer tabulates those (the others' runs stay on disk for later)."""
    before, after = _seed_set(saved), _seed_set(given)
    return before is not None and after is not None and before != after


def _check_untouched(path: Path, saved: dict) -> None:
    """Refuses a `config.json` changed by hand since the run began, naming what changed."""
    if HASH_KEY not in saved or saved[HASH_KEY] == settings_hash(saved):
        return
    changed = ""
    try:
        original = json.loads((path / ORIGINAL_NAME).read_text())
        edits = differences(_flat(original), _flat(saved))
        changed = " (" + "; ".join(e.replace(", given ", ", now ") for e in edits) + ")"
    except (OSError, ValueError, AttributeError, TypeError):
        pass  # the copy is gone too: say that it changed, without the details
    raise RunDirectoryError(
        f"{path / 'config.json'} was changed by hand since the run began{changed}; the run "
        "trained with the recorded settings. Restore them, or start a new run in another --out."
    )


def check_out_path(out: str | os.PathLike, create: bool = False) -> Path:
    """`out` as a directory that can be created and written, or a clear error.

    Creates it only with `create` (checks made before training write nothing).
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunDirectoryError(f"--out {str(path)!r} is a file; a run needs a directory.")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunDirectoryError(
                    f"--out {str(path)!r} lies under {str(parent)!r}, which is a file."
                )
            if not os.access(parent, os.W_OK | os.X_OK) and not path.exists():
                raise RunDirectoryError(
                    f"Cannot create the run directory {str(path)!r}: {str(parent)!r} is not "
                    "writable."
                )
            break
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirectoryError(
            f"Cannot create the run directory {str(path)!r}: {error.strerror}."
        ) from error
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunDirectoryError(f"The run directory {str(path)!r} is not writable.")
    return path


@contextlib.contextmanager
def hold(path: str | os.PathLike) -> Iterator[Path]:
    """The lock of an existing run directory, for a writer other than the run (the report).

    Raises:
        RunDirectoryError: Another process holds it (a run is writing there).
    """
    path = Path(path)
    lock = filelock.FileLock(str(path / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout as error:
        raise RunDirectoryError(
            f"Run directory {str(path)!r} is in use by another keras-spkd run; wait for it "
            "to finish."
        ) from error
    try:
        yield path
    finally:
        lock.release()


class RunDirectory:
    """A locked run directory: the only writer for as long as it is open.

    Use as a context manager. A second process opening the same directory
    fails at once with `RunDirectoryError`. `config.json` records the run's
    settings; reopening a directory that holds a run needs `resume=True` and
    the same settings (the differences are listed otherwise).

    Args:
        out: The directory (created).
        config: The run's settings.
        resume: Continue the run the directory holds. Defaults to `False`.
        kind: What the directory holds (`"distill"`, `"compare"`, `"search"`).
        extra: Further settings that must also match on resume (methods, seeds...).
        overwrite: Delete what the directory holds (once it is locked) and start
            afresh. Defaults to `False`.
        advice: What a refused resume tells the user to do instead.
    """

    def __init__(
        self,
        out: str | os.PathLike,
        config: ExperimentConfig,
        resume: bool = False,
        kind: str = "distill",
        extra: dict | None = None,
        overwrite: bool = False,
        advice: str = "Resume with the saved settings, or choose another --out.",
    ):
        if not isinstance(config, ExperimentConfig):
            raise TypeError(
                f"config must be an ExperimentConfig; received {type(config).__name__}."
            )
        path = check_out_path(out)
        if not overwrite and not (path / "config.json").exists() and _foreign(path):
            raise RunDirectoryError(  # refused before the lock file is created there
                f"{str(path)!r} is not empty and holds no keras-spkd run; choose an empty "
                "or new --out."
            )
        self.path = check_out_path(out, create=True)
        self.config = config
        self.resume = resume
        self.kind = kind
        self.extra = extra or {}
        self.overwrite = overwrite
        self.advice = advice
        self._lock = filelock.FileLock(str(self.path / LOCK_NAME))

    def __enter__(self) -> RunDirectory:
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout as error:
            raise RunDirectoryError(
                f"Run directory {str(self.path)!r} is in use by another keras-spkd run; "
                "wait for it to finish or choose another --out."
            ) from error
        try:
            if self.overwrite:
                for path in self.path.iterdir():
                    if path.name != LOCK_NAME:
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
            self._check_settings()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def _recorded(self) -> dict:
        return {"kind": self.kind, **self.extra, "config": self.config.to_dict()}

    def _check_settings(self) -> None:
        record = self.path / "config.json"
        if record.exists():
            if not self.resume:
                raise RunDirectoryError(
                    f"Run directory {str(self.path)!r} already holds a run; pass resume "
                    "(--resume) to continue it, or choose another --out."
                )
            try:
                saved = json.loads(record.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise RunDirectoryError(f"{record} is not valid JSON ({error}).") from error
            if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
                raise RunDirectoryError(
                    f"{record} is not a keras-spkd run record (no settings object in it); "
                    "it was changed by hand. Start a new run in another --out."
                )
            _check_untouched(self.path, saved)
            before, given = _flat(saved), _flat(self._recorded())
            reseeded = self.kind == "compare" and _seeds_change(
                before.get("seeds"), given.get("seeds")
            )
            if reseeded:
                before["seeds"] = given["seeds"]
            changed = differences(before, given)
            if changed:
                raise RunDirectoryError(
                    f"Cannot resume {str(self.path)!r} with other settings: "
                    + "; ".join(changed)
                    + ". "
                    + self.advice
                )
            if reseeded:  # other seeds, the same everything else: recorded from now on
                recorded = self._recorded()
                recorded[HASH_KEY] = settings_hash(recorded)
                atomic_write_json(record, recorded)
                atomic_write_json(self.path / ORIGINAL_NAME, recorded)
        elif _foreign(self.path):
            raise RunDirectoryError(
                f"{str(self.path)!r} is not empty and holds no keras-spkd run; choose an empty "
                "or new --out."
            )
        else:
            recorded = self._recorded()
            recorded[HASH_KEY] = settings_hash(recorded)
            atomic_write_json(record, recorded)
            atomic_write_json(self.path / ORIGINAL_NAME, recorded)

    @staticmethod
    def saved_config(out: str | os.PathLike) -> dict | None:
        """The config a directory's run was started with, or `None`."""
        record = Path(out) / "config.json"
        if not record.is_file():
            return None
        try:
            saved = json.loads(record.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RunDirectoryError(f"{record} is not valid JSON ({error}).") from error
        if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
            raise RunDirectoryError(f"{record} is not a keras-spkd run record.")
        return saved["config"]
