"""Distillation step-time benchmark (a script, not a test).

    python benchmarks/bench_step.py                      # WRN-16-2 -> WRN-16-1, b=128
    python benchmarks/bench_step.py --jit --teacher-dtype bfloat16 --torch
    python benchmarks/bench_step.py --sp-scaling         # the SP loss alone, b x d grid

Same as `keras-spkd bench`; figures are recorded in benchmarks/RESULTS.md.
"""

import sys

from keras_spkd.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
