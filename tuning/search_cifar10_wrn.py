"""Search gamma for the paper's CIFAR-10 recipe (WRN-16-2 -> WRN-16-1); GPU.

CIFAR-10 must be prepared for TFDS (`tfds build cifar10 --data_dir DIR`). Each trial
is a full training run, so budget the epochs: the paper trains 200 epochs; a
search on 30-epoch trials ranks gamma in about a day on one GPU.

    python tuning/search_cifar10_wrn.py --data-dir DIR [--epochs 30] [--trials 12]

Resumable (rerun the same command); distributable with Keras Tuner's
KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT.
"""

import argparse

from keras_spkd import experiment

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", required=True)
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--trials", type=int, default=12)
parser.add_argument("--out", default="runs/tuning_cifar10_wrn")
args = parser.parse_args()

config = experiment.ExperimentConfig(
    dataset="cifar10",
    data_dir=args.data_dir,
    teacher_arch="wrn-16-2",
    student_arch="wrn-16-1",
    teacher_epochs=200,
    epochs=args.epochs,
)
result = experiment.run_search(
    config,
    tuner="bayesian",
    max_trials=args.trials,
    out=args.out,
    gamma_range=(100.0, 1e4),
    pair_candidates="group3:group3,group2:group2",
)
print(f"Best: {result.best}; config: {args.out}/best_config.json")
