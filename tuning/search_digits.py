"""Search gamma (and the layer pair) on the embedded digits, then check it.

1. `keras-spkd tune`: Bayesian search over gamma in [1, 1e4] (log scale) and the
   pair group1:group1 or group2:group2, objective val_accuracy.
2. For each seed, `keras-spkd distill --config best_config.json --seed S`: a teacher,
   the student alone and the student with the best gamma, from one initialisation
   and one data order, scored on the held-out test split.

    python tuning/search_digits.py                 # about 3 minutes on 2 CPU cores

Prints the markdown recorded in tuning/RESULTS.md.
"""

import argparse
import json
import statistics
from pathlib import Path

from keras_spkd.cli import main

parser = argparse.ArgumentParser()
parser.add_argument("--trials", type=int, default=10)
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--seeds", type=int, default=5)
parser.add_argument("--out", default="runs/tuning_digits")
args = parser.parse_args()
out = Path(args.out)

status = main(
    [
        "tune",
        "--dataset",
        "digits",
        "--tuner",
        "bayesian",
        "--max-trials",
        str(args.trials),
        "--epochs",
        str(args.epochs),
        "--gamma-min",
        "1",
        "--gamma-max",
        "1e4",
        "--pair-candidates",
        "group1:group1,group2:group2",
        "--out",
        str(out / "search"),
    ]
)
if status:
    raise SystemExit(status)
best = json.loads((out / "search" / "best_config.json").read_text())
trials = json.loads((out / "search" / "trials.json").read_text())

rows = []
for seed in range(args.seeds):
    run = out / f"seed{seed}"
    status = main(
        [
            "--config",
            str(out / "search" / "best_config.json"),
            "distill",
            "--seed",
            str(seed),
            "--out",
            str(run),
            "--tflite",
        ]
        + (["--resume"] if (run / "config.json").exists() else [])
    )
    if status:
        raise SystemExit(status)
    summary = json.loads((run / "summary.json").read_text())
    rows.append(
        (
            seed,
            summary["teacher_test_accuracy"],
            summary["student_alone_test_accuracy"],
            summary["sp_student_test_accuracy"],
        )
    )

print("\n## Search (validation accuracy after", args.epochs, "epochs)\n")
print("| trial | gamma | pair | val_accuracy |\n|---|---|---|---|")
for t in sorted(trials, key=lambda t: -t["objective"]):
    print(f"| {t['trial']} | {t['gamma']:.4g} | {t['pair']} | {t['objective']:.4f} |")
print(f"\nBest: gamma = {best['gamma']:.4g}, pair {best['pairs']}\n")
print("## Best gamma vs the student alone (test accuracy)\n")
print("| seed | teacher | student alone | student + SP | SP - alone |\n|---|---|---|---|---|")
for seed, teacher, alone, sp in rows:
    print(f"| {seed} | {teacher:.2%} | {alone:.2%} | {sp:.2%} | {100 * (sp - alone):+.2f} pt |")
alone = [r[2] for r in rows]
sp = [r[3] for r in rows]
diff = [b - a for a, b in zip(alone, sp)]
print(
    f"| mean ± sd | | {statistics.mean(alone):.2%} ± {statistics.stdev(alone):.2%} | "
    f"{statistics.mean(sp):.2%} ± {statistics.stdev(sp):.2%} | "
    f"{100 * statistics.mean(diff):+.2f} ± {100 * statistics.stdev(diff):.2f} pt |"
)
