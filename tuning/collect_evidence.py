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
    """What the two comparisons' records set differently (settings, methods, teachers);
    '' when they agree or either has no record yet."""
    records = []
    for folder in (source, target):
        try:
            records.append(json.loads((folder / "config.json").read_text()))
        except (OSError, ValueError):
            return ""
    configs = [record.get("config") for record in records]
    if all(isinstance(config, dict) for config in configs):
        # a setting missing from an older record is unset there, as the library reads it
        differs = [
            f"config.{key} differs"
            for key in sorted(set(configs[0]) | set(configs[1]))
            if configs[0].get(key) != configs[1].get(key)
        ]
    else:
        differs = ["config differs"] if configs[0] != configs[1] else []
    keys = ("methods", "teachers", "privileged")
    differs += [f"{k} differs" for k in keys if records[0].get(k) != records[1].get(k)]
    return "; ".join(differs)


def _finished_runs(source: Path, target: Path) -> list[Path]:
    """Each finished run folder of `source` that `target` lacks (a run is the same run
    whichever process trained it: its settings, seed, method and teacher make it)."""
    copied = []
    for run in sorted(p for p in source.glob("*") if (p / "result.json").is_file()):
        if not (target / run.name / "result.json").exists():
            (target / run.name).mkdir(parents=True, exist_ok=True)
            for name in ("history.csv", "result.json"):  # the result last: it marks done
                if (run / name).is_file():
                    shutil.copy2(run / name, target / run.name / name)
            copied.append(target / run.name)
    return copied


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
    if args.runs_into:
        into = Path(args.runs_into)
        if into.exists() and not into.is_dir():
            parser.error(f"--runs-into {args.runs_into!r} is a file; expected a comparison folder.")
        for run in args.runs:
            if not (Path(run) / "runs").is_dir():
                parser.error(
                    f"{run!r} holds no runs/ folder; expected a comparison (its compare/)."
                )
            differs = _other_design(Path(run), into)
            if differs:
                parser.error(f"{run!r} compared another design than {args.runs_into!r}: {differs}")
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
