"""Issue 21's design: tune SP, KD and SP+KD alike, then compare them over seeds and teachers.

1. `experiment.run_search` once per method (`sp`: gamma; `kd`: KD weight and
   temperature; `sp+kd`: all three jointly), each with the same budget: the
   same tuner, trials, epochs and executions per trial, on the tuning seeds
   (1000 and up), on the validation split, each with its no-distillation
   reference reported beside the best trial.
2. The three best trials, as methods with their own weights, plus `alone`,
   written to `OUT/methods.json`.
3. `experiment.run_compare` of those methods over the evaluation seeds
   (0 and up), the student seeds spread over `--teachers` teachers, paired
   against `alone` and `kd`: SP - alone, SP - KD, (SP+KD) - KD, (SP+KD) - alone.

The same with the command line (one `tune` per method, then `compare`):

    keras-spkd tune --dataset digits --method sp --tuner bayesian --max-trials 8 \\
        --executions-per-trial 2 --out runs/evidence-digits/tune-sp
    keras-spkd tune --dataset digits --method kd ... --out runs/evidence-digits/tune-kd
    keras-spkd tune --dataset digits --method sp+kd ... --out runs/evidence-digits/tune-sp_kd
    # methods.json: ["alone", <each tune-*/best_method.json>]
    keras-spkd compare --dataset digits --methods runs/evidence-digits/methods.json \\
        --seeds 30 --teachers 3 --baseline alone,kd --out runs/evidence-digits/compare

Run (resumable: rerun the same command after an interruption; the per-run
rows land in OUT/compare/results.csv as they finish):

    python tuning/evidence.py --dataset digits --trials 8 --seeds 30 --teachers 3
    python tuning/evidence.py --dataset fashion_mnist --trials 8 --seeds 22 --teachers 2 \\
        --epochs 8

Do not time anything while it runs; it takes CPU-hours on Fashion-MNIST. A run
that spans sessions which do not keep `runs/` or the teacher cache goes on from
what an earlier session collected (`collect_evidence.py --teachers`): its
finished searches are not run again, and its comparison's finished rows and
teachers are put back before the comparison resumes:

    python tuning/evidence.py --dataset fashion_mnist --trials 8 --seeds 22 --teachers 2 \\
        --collected tuning/evidence/evidence-fashion_mnist --out runs/evidence-fashion_mnist
"""

import argparse
import json
import logging
import shutil
from pathlib import Path

from keras_spkd import experiment
from keras_spkd.experiment.teacher import TeacherCache
from keras_spkd.summary import atomic_write_json

METHODS = ("sp", "kd", "sp+kd")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--tuner", default="bayesian")
    parser.add_argument("--trials", type=int, default=8, help="trials per method (equal budget)")
    parser.add_argument("--executions", type=int, default=2, help="tuning seeds per trial")
    parser.add_argument("--epochs", type=int, help="student epochs (default: the preset)")
    parser.add_argument("--teacher-epochs", type=int, help="default: the preset")
    parser.add_argument(
        "--train-images", type=int, help="a stratified training subset (default: all)"
    )
    parser.add_argument("--seeds", type=int, default=30, help="evaluation seeds")
    parser.add_argument("--teachers", type=int, default=3)
    parser.add_argument("--out", help="default: runs/evidence-DATASET")
    parser.add_argument(
        "--collected",
        help="what an earlier session of this design collected (collect_evidence.py): "
        "its finished searches are reused, its comparison's rows and teachers put back",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out or f"runs/evidence-{args.dataset}")
    values = {"dataset": args.dataset, "tflite": ()}
    if args.epochs:
        values["epochs"] = args.epochs
    if args.teacher_epochs:
        values["teacher_epochs"] = args.teacher_epochs
    if args.train_images:
        values["train_images"] = args.train_images
    config = experiment.ExperimentConfig(**values)

    methods: list = ["alone"]
    for method in METHODS:
        name = f"tune-{method.replace('+', '_')}"
        if args.collected and (Path(args.collected) / name / "best_method.json").is_file():
            methods.append(_finished(Path(args.collected) / name, config, method, args))
            continue
        search = experiment.run_search(
            config,
            tuner=args.tuner,
            max_trials=args.trials,
            executions_per_trial=args.executions,
            method=method,
            out=out / name,
        )
        reference = search.reference.get("objective")
        print(
            f"{method}: best {search.best} val_accuracy {search.best_objective:.4f}; "
            f"no distillation {reference:.4f} (tuning seeds {search.seeds})",
            flush=True,
        )
        methods.append(search.best_method)
    atomic_write_json(out / "methods.json", methods)
    print(json.dumps(methods, indent=2), flush=True)

    if args.collected:
        _put_back(Path(args.collected), out)
    compare = experiment.run_compare(
        config,
        methods=str(out / "methods.json"),
        seeds=args.seeds,
        teachers=args.teachers,
        baselines=("alone", "kd"),
        out=out / "compare",
    )
    print(compare.table, flush=True)


def _put_back(collected: Path, out: Path) -> None:
    """The collected comparison (its record, finished rows and extra teachers) into
    `out/compare` when that holds none, and the collected cached teacher into the cache."""
    source, target = collected / "compare", out / "compare"
    if (source / "config.json").is_file() and not (target / "config.json").exists():
        shutil.copytree(source, target, dirs_exist_ok=True)
        print(f"The comparison goes on from {source}", flush=True)
    cache = TeacherCache().root
    for path in sorted((collected / "teacher-cache").glob("*")):
        if not (cache / path.name).exists():
            cache.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, cache / path.name)


def _finished(folder: Path, config, method: str, args) -> dict:
    """A finished search's best method, after checking that it searched this design."""
    record = json.loads((folder / "config.json").read_text())
    wanted = {
        "config": json.loads(json.dumps(config.to_dict())),
        "method": method,
        "tuner": args.tuner,
        "max_trials": args.trials,
        "executions_per_trial": args.executions,
    }
    differs = [
        f"{k}: searched {record.get(k)!r}, asked {v!r}"
        for k, v in wanted.items()
        if record.get(k) != v
    ]
    if differs:
        raise SystemExit(
            f"{folder} searched another design, so it cannot stand in for this one: "
            + "; ".join(differs)[:600]
        )
    summary = json.loads((folder / "summary.json").read_text())
    print(
        f"{method}: the search in {folder} finished: best {summary['best']} val_accuracy "
        f"{summary['best_objective']:.4f}; no distillation {summary['reference']['objective']:.4f} "
        f"(tuning seeds {summary['tuning_seeds']})",
        flush=True,
    )
    return json.loads((folder / "best_method.json").read_text())


if __name__ == "__main__":
    main()
