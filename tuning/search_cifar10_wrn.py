"""Search gamma for the paper's CIFAR-10 recipe (WRN-16-2 -> WRN-16-1); GPU.

CIFAR-10 must be prepared for TFDS (`tfds build cifar10 --data_dir DIR`). Each trial
is a full training run, so budget the epochs: the paper trains 200 epochs; a
search on 30-epoch trials (Hyperband up to 60) ranks gamma in about a day on one GPU.

    python tuning/search_cifar10_wrn.py --data-dir DIR [--epochs 30] [--trials 12]

Resumable (rerun the same command); distributable with Keras Tuner's
KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT.
"""

import argparse
import sys

from keras_spkd.cli import main

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", required=True)
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--trials", type=int, default=12)
parser.add_argument("--out", default="runs/tuning_cifar10_wrn")
args = parser.parse_args()
sys.exit(
    main(
        [
            "tune",
            "--dataset",
            "cifar10",
            "--data-dir",
            args.data_dir,
            "--teacher-arch",
            "wrn-16-2",
            "--student-arch",
            "wrn-16-1",
            "--teacher-epochs",
            "200",
            "--tuner",
            "bayesian",
            "--max-trials",
            str(args.trials),
            "--epochs",
            str(args.epochs),
            "--gamma-min",
            "100",
            "--gamma-max",
            "1e4",
            "--pair-candidates",
            "group3:group3,group2:group2",
            "--out",
            args.out,
        ]
    )
)
