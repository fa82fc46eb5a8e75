"""Copies the small files behind RESULTS.md's evidence tables into the repository.

From each run directory (`runs/evidence-DATASET`, `runs/length-fashion/...`) it
takes the run records and tables (`config.json`, `summary.json`,
`results.csv`, `results.md`, `methods.json`, each search's `trials.json`,
`reference.json`, `best_method.json`, `best_config.json`) and each run's
`history.csv` and `result.json`, never models, checkpoints or TensorBoard
logs, into `tuning/evidence/`, keeping the layout:

    python tuning/collect_evidence.py runs/evidence-digits runs/length-fashion
"""

import argparse
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


def collect(source: Path, target: Path) -> list[Path]:
    copied = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        unfinished = path.name == "history.csv" and not (path.parent / "result.json").is_file()
        if (
            path.is_file()
            and path.name in KEEP
            and not unfinished  # a run stopped part-way: not behind any table
            and not SKIP_DIRS & set(relative.parts[:-1])
        ):
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
            copied.append(destination)
    return copied


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories under runs/")
    parser.add_argument("--to", default="tuning/evidence")
    args = parser.parse_args(argv)
    for run in args.runs:
        source = Path(run)
        copied = collect(source, Path(args.to) / source.name)
        print(f"{source}: {len(copied)} files -> {Path(args.to) / source.name}")


if __name__ == "__main__":
    main()
