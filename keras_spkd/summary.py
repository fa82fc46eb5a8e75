"""The run summary's schema: written by `keras_spkd.experiment`, read by the report.

`summary.json` carries `schema_version`; readers refuse versions they do not
know instead of guessing at fields.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from keras_spkd.errors import RunDirectoryError

SCHEMA_VERSION = 1
REQUIRED = ("schema_version", "kind", "config", "accuracy")


def _check_finite(value: Any, where: str = "summary") -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} holds a non-finite number ({value}); JSON cannot carry it.")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_finite(item, f"{where}[{index}]")


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


def sp_phase_title(config: dict, gamma_label: str | None = None) -> str:
    """The distilled student's row title: `student + SP (gamma=...)`, with `+ KD` when on."""
    gamma = gamma_label if gamma_label is not None else str(config.get("gamma"))
    kd = config.get("kd_weight") or 0
    if isinstance(kd, (int, float)) and kd > 0:
        return f"student + SP + KD (gamma={gamma}, kd_weight={kd:g})"
    return f"student + SP (gamma={gamma})"


def check_distill_summary(summary: dict, path: str | os.PathLike) -> None:
    """Refuses, in one line, a distill summary changed by hand or damaged.

    Raises:
        RunDirectoryError: A field the report reads is missing or of the wrong type.
    """
    problems = []
    if not isinstance(summary.get("config"), dict):
        problems.append("config is not an object")
    accuracy = summary.get("accuracy")
    if not isinstance(accuracy, dict):
        problems.append("accuracy is not an object")
    else:
        for key in ("teacher", "alone", "sp"):
            value = accuracy.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"accuracy.{key} is {value!r}, not a number")
            elif not 0 <= value <= 1:
                problems.append(f"accuracy.{key} is {value!r}, outside [0, 1]")
    export = summary.get("export", {})
    rows = export.get("table", []) if isinstance(export, dict) else None
    if not isinstance(rows, list) or not all(
        isinstance(row, dict)
        and isinstance(row.get("model"), str)
        and isinstance(row.get("bytes"), (int, float))
        and all(isinstance(row.get(k), (int, float, type(None))) for k in ("accuracy", "agreement"))
        for row in rows
    ):
        problems.append("export.table is not a list of export rows")
    if problems:
        raise RunDirectoryError(
            f"{path} was changed by hand or damaged ({'; '.join(problems)}); rerun the run "
            "(--resume redoes only what is missing once summary.json is deleted)."
        )


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` through a temporary file and `os.replace`.

    A reader sees the old file or the new one, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes owner-only files; give this one the mode any other gets
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Atomic, strict JSON (no NaN or infinity: those fail here, not in a reader)."""
    _check_finite(data, Path(path).name)
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_summary(run_dir: str | os.PathLike, kind: str, **fields: Any) -> dict:
    """Writes `run_dir/summary.json` (schema `SCHEMA_VERSION`) and returns it."""
    summary = {"schema_version": SCHEMA_VERSION, "kind": kind, **fields}
    atomic_write_json(Path(run_dir) / "summary.json", summary)
    return summary


def read_summary(run_dir: str | os.PathLike) -> dict:
    """Reads and checks `run_dir/summary.json`.

    Raises:
        RunDirectoryError: Missing, not JSON, or of an unknown schema version.
    """
    path = Path(run_dir) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise RunDirectoryError(
            f"{str(run_dir)!r} holds no summary.json: the run has not finished "
            "(resume it) or this is not a keras-spkd run directory."
        ) from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunDirectoryError(f"{path} is not valid JSON ({error}).") from error
    if not isinstance(summary, dict) or summary.get("schema_version") != SCHEMA_VERSION:
        version = summary.get("schema_version") if isinstance(summary, dict) else None
        raise RunDirectoryError(
            f"{path} has schema_version {version!r}; this keras-spkd reads version "
            f"{SCHEMA_VERSION}. Rerun the run with this version."
        )
    missing = [key for key in REQUIRED if key not in summary]
    if missing:
        raise RunDirectoryError(f"{path} lacks {missing}.")
    return summary
