"""Fashion-MNIST: search gamma and the layer pair on the validation split, then compare.

The search never sees the test split. Its best config then runs the paper's
comparison over 5 seeds (alone, KD, SP, SP+KD), one teacher shared by all
seeds. The same as

    keras-spkd tune --dataset fashion_mnist --tuner bayesian --max-trials 6 \\
        --pair-candidates group2:group2,group3:group3 --out runs/fashion/tune
    keras-spkd --config runs/fashion/tune/best_config.json compare \\
        --methods alone,kd,sp,sp+kd --kd-weight 1 --seeds 5 --out runs/fashion/compare4

Run: python tuning/search_fashion_mnist.py   (hours on a 2-core CPU; resumable:
rerun the same command after an interruption). Results: tuning/RESULTS.md
and RESULTS.md.
This tunes gamma only and reuses it for SP+KD; `tuning/evidence.py` tunes SP, KD
and SP+KD with one budget and compares them over more seeds and teachers.
"""

import logging
import sys

from keras_spkd import experiment


def main(out: str = "runs/fashion") -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # gamma is searched, so its value here is only the one the search was started
    # with (recorded in the search directory, which refuses to resume with others).
    config = experiment.ExperimentConfig(dataset="fashion_mnist", gamma=3000.0, tflite=("float",))
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
        search.best_config.replace(kd_weight=1.0),
        methods=("alone", "kd", "sp", "sp+kd"),
        seeds=5,
        out=f"{out}/compare4",
    )
    print(compare.table, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
