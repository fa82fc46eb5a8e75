"""Search gamma (and the layer pair) on the embedded digits, then check it over seeds.

1. `experiment.run_search`: Bayesian search over gamma in [1, 1e4] (log scale) and
   the pair group1:group1 or group2:group2, objective val_accuracy (validation split).
2. `experiment.run_compare` with the best config: the student alone and with SP over
   5 seeds, each pair of runs from one initialisation and one data order, scored on
   the held-out test split (paired differences with 95% intervals).

    python tuning/search_digits.py                 # a few minutes on 2 CPU cores

Resumable: rerun the same command. Prints the markdown recorded in tuning/RESULTS.md.
This tunes gamma only and reuses it for SP+KD; `tuning/evidence.py` tunes SP, KD
and SP+KD with one budget and compares them over more seeds and teachers.
"""

import argparse

from keras_spkd import experiment

parser = argparse.ArgumentParser()
parser.add_argument("--trials", type=int, default=10)
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--seeds", type=int, default=5)
parser.add_argument("--out", default="runs/tuning_digits")
args = parser.parse_args()

config = experiment.ExperimentConfig(dataset="digits", epochs=args.epochs)
search = experiment.run_search(
    config,
    tuner="bayesian",
    max_trials=args.trials,
    out=f"{args.out}/search",
    gamma_range=(1.0, 1e4),
    pair_candidates="group1:group1,group2:group2",
)
compare = experiment.run_compare(
    search.best_config, methods=("alone", "sp"), seeds=args.seeds, out=f"{args.out}/check"
)

print(f"\n## Search (validation accuracy after {args.epochs} epochs)\n")
print("| trial | gamma | pair | val_accuracy |\n|---|---|---|---|")
for t in sorted(search.trials, key=lambda t: -(t["objective"] or 0)):
    print(f"| {t['trial']} | {t['gamma']:.4g} | {t['pair']} | {t['objective']:.4f} |")
print(f"\nBest: gamma = {search.best['gamma']:.4g}, pairs {search.best_config.pairs}\n")
print("## Best gamma vs the student alone (test accuracy)\n")
print(compare.table)
