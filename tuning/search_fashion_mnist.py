"""Fashion-MNIST: search gamma and the layer pair on the validation split, then compare.

The search never sees the test split. Its best config then runs the paper's
comparison over 5 seeds (alone, KD, AT, SP, SP+KD), one teacher shared by all
seeds. The same as

    keras-spkd tune --dataset fashion_mnist --tuner bayesian --max-trials 6 \\
        --pair-candidates group2:group2,group3:group3 --out runs/fashion/tune
    keras-spkd --config runs/fashion/tune/best_config.json compare \\
        --kd-weight 1 --at-weight 1000 --seeds 5 --out runs/fashion/compare

Run: python tuning/search_fashion_mnist.py   (hours on a 2-core CPU; resumable:
rerun the same command after an interruption). Results: tuning/RESULTS.md
and RESULTS.md.
"""

import logging
import sys

from keras_spkd import experiment


def main(out: str = "runs/fashion") -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = experiment.ExperimentConfig(dataset="fashion_mnist")
    search = experiment.run_search(
        config,
        tuner="bayesian",
        max_trials=6,
        out=f"{out}/tune",
        gamma_range=(10.0, 1e4),
        pair_candidates="group2:group2,group3:group3",
    )
    for row in search.trials:
        print(row, flush=True)
    print("best:", search.best, flush=True)
    compare = experiment.run_compare(
        search.best_config.replace(kd_weight=1.0, at_weight=1000.0),
        seeds=5,
        out=f"{out}/compare",
    )
    print(compare.table, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
