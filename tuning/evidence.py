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

Do not time anything while it runs; it takes CPU-hours on Fashion-MNIST.
"""

import argparse
import json
import logging
from pathlib import Path

from keras_spkd import experiment
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
        search = experiment.run_search(
            config,
            tuner=args.tuner,
            max_trials=args.trials,
            executions_per_trial=args.executions,
            method=method,
            out=out / f"tune-{method.replace('+', '_')}",
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

    compare = experiment.run_compare(
        config,
        methods=str(out / "methods.json"),
        seeds=args.seeds,
        teachers=args.teachers,
        baselines=("alone", "kd"),
        out=out / "compare",
    )
    print(compare.table, flush=True)


if __name__ == "__main__":
    main()
