"""Copies the small files behind RESULTS.md's evidence tables into the repository.

From each run directory (`runs/evidence-DATASET`, `runs/length-fashion/...`) it
takes the run records and tables (`config.json`, `summary.json`,
`results.csv`, `results.md`, `methods.json`, each search's `trials.json`,
`reference.json`, `best_method.json`, `best_config.json`) and each run's
`history.csv` and `result.json`, never models, checkpoints or TensorBoard
logs, into `tuning/evidence/`, keeping the layout:

    python tuning/collect_evidence.py runs/evidence-digits runs/length-fashion

With `--teachers`, the teachers too (`teacher.keras` of a comparison's extra
teachers, and the cached teacher each run used, into `teacher-cache/`), so that
a run spanning sessions that keep neither `runs/` nor the cache goes on without
training them again (`evidence.py --collected`); the zoo's Fashion-MNIST
teacher is under 1 MB.
"""

import argparse
import json
import shutil
from pathlib import Path

KEEP = {
    "config.json",
    "summary.json",
    "results.csv",
    "results.md",
    "methods.json",
    "trials.json",
    "reference.json",
    "best_method.json",
    "best_config.json",
    "history.csv",  # each run's per-epoch log (runs/<seed>-<method>/)
    "result.json",  # each run's and each extra teacher's result
}
SKIP_DIRS = {"search", "tensorboard", "best_student", "backup"}


def collect(source: Path, target: Path, teachers: bool = False) -> list[Path]:
    keep = KEEP | {"teacher.keras"} if teachers else KEEP
    copied = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        unfinished = path.name == "history.csv" and not (path.parent / "result.json").is_file()
        if (
            path.is_file()
            and path.name in keep
            and not unfinished  # a run stopped part-way: not behind any table
            and not SKIP_DIRS & set(relative.parts[:-1])
        ):
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
            copied.append(destination)
    if teachers:
        copied += _cached_teachers(source, target / "teacher-cache")
    return copied


def _cached_teachers(source: Path, target: Path) -> list[Path]:
    """The cache entries (model and metadata) of the teachers the runs in `source` used."""
    from keras_spkd.errors import SPKDError
    from keras_spkd.experiment import ExperimentConfig, RunDirectory
    from keras_spkd.experiment.teacher import TeacherCache

    copied, missing = [], set()
    for record in sorted(source.rglob("config.json")):
        if SKIP_DIRS & set(record.relative_to(source).parts[:-1]):
            continue
        try:
            saved = RunDirectory.saved_config(record.parent)
            config = ExperimentConfig.from_dict(saved) if saved else None
        except (ValueError, TypeError, SPKDError) as error:  # ConfigError, RunDirectoryError
            print(
                f"{record}: not a run record this version reads ({error}); its teacher is skipped"
            )
            continue
        if config is None or config.teacher:  # a teacher file is the user's, not the cache's
            continue
        for path in TeacherCache().paths(config):
            if not path.is_file():
                missing.add(str(path))
            elif not (target / path.name).exists():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
                copied.append(target / path.name)
    for path in sorted(missing):
        print(f"{path} is not in the cache (KERAS_SPKD_CACHE): that teacher is not kept")
    return copied


def _other_design(source: Path, target: Path) -> str:
    """What the two comparisons' records set differently (settings, methods, teachers),
    by the library's rule for resuming (a setting missing from an older record is
    unset there; `explicit` says where a value came from, not what it is); '' when
    they agree. A missing or unreadable record is a difference: nothing is copied
    that cannot be checked."""
    from keras_spkd.experiment.config import IGNORED_IN_DIFFERENCES, differences

    flat = []
    for folder in (target, source):
        record = _record(folder / "config.json")
        if record is None:
            return f"{folder / 'config.json'} is missing or not a comparison's record"
        settings = record["config"].items()
        flat.append(
            {
                **{key: record.get(key) for key in ("methods", "teachers", "privileged")},
                **{f"config.{k}": v for k, v in settings if k not in IGNORED_IN_DIFFERENCES},
            }
        )
    return "; ".join(differences(*flat))  # "saved": the target's, "given": the source's


def _record(path: Path) -> dict | None:
    """A run record (a JSON object with a settings object), or None."""
    record = _json(path)
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        return None
    return record


def _finished_runs(source: Path, target: Path) -> list[Path]:
    """Each finished run folder of `source` whose finished copy `target` lacks (a run is
    the same run whichever process trained it: its settings, seed, method and teacher
    make it). Each file is copied under a temporary name and renamed, the result last:
    a copy cut short leaves no result, and a damaged one is copied again."""
    copied = []
    for run in sorted(p for p in source.glob("*") if (p / "result.json").is_file()):
        if _json(target / run.name / "result.json") is not None:
            continue
        if _json(run / "result.json") is None:
            print(f"{run / 'result.json'} cannot be read: that run is not copied")
            continue
        (target / run.name).mkdir(parents=True, exist_ok=True)
        for name in ("history.csv", "result.json"):  # the result last: it marks done
            if (run / name).is_file():
                partial = target / run.name / f".{name}.partial"
                shutil.copy2(run / name, partial)
                partial.replace(target / run.name / name)
        copied.append(target / run.name)
    return copied


def _json(path: Path):
    """A JSON file's value, or None where it is missing or cannot be read."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories under runs/")
    parser.add_argument("--to", default="tuning/evidence")
    parser.add_argument("--teachers", action="store_true", help="the teachers' models too")
    parser.add_argument(
        "--runs-into",
        metavar="COMPARE",
        help="only a comparison's finished runs (result.json, history.csv), into "
        "COMPARE/runs/: a second process's (evidence.py --descending) into the main "
        "comparison's collected folder",
    )
    args = parser.parse_args(argv)
    if args.runs_into is not None:
        into = Path(args.runs_into)
        if not args.runs_into.strip() or not into.is_dir():
            parser.error(
                f"--runs-into {args.runs_into!r} is not a folder; expected the comparison "
                "the runs go into (its compare/ folder, with its config.json)."
            )
        for run in args.runs:
            if not (Path(run) / "runs").is_dir():
                parser.error(
                    f"{run!r} holds no runs/ folder; expected a comparison (its compare/)."
                )
            differs = _other_design(Path(run), into)
            if differs:
                parser.error(f"{run!r} compared another design than {args.runs_into!r}: {differs}")
        for run in args.runs:  # every source checked before anything is copied
            copied = _finished_runs(Path(run) / "runs", into / "runs")
            print(f"{run}: {len(copied)} finished runs -> {into / 'runs'}")
        return
    for run in args.runs:
        source = Path(run).resolve()
        target = Path(args.to).resolve() / source.name
        if not source.is_dir():
            parser.error(f"{run!r} is not a run directory (a folder under runs/).")
        if target.is_relative_to(source):
            parser.error(f"--to {args.to!r} lies inside {run!r}: it would copy into itself.")
        copied = collect(source, target, args.teachers)
        if not copied:
            parser.error(f"{run!r} holds no run records ({', '.join(sorted(KEEP))}).")
        print(f"{run}: {len(copied)} files -> {target}")


if __name__ == "__main__":
    main()
