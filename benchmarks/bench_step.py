"""Distillation step-time benchmark through the Python API (a script, not a test).

    python benchmarks/bench_step.py                      # WRN-16-2 -> WRN-16-1, b=128
    python benchmarks/bench_step.py --jit --teacher-dtype bfloat16 --torch

The same figures as `keras-spkd bench`; recorded in benchmarks/RESULTS.md.
"""

import argparse

from keras_spkd import bench

parser = argparse.ArgumentParser()
parser.add_argument("--teacher-arch", default="wrn-16-2")
parser.add_argument("--student-arch", default="wrn-16-1")
parser.add_argument("--pair", default="group3:group3")
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--image-size", type=int, default=32)
parser.add_argument("--steps", type=int, default=6)
parser.add_argument("--rounds", type=int, default=5)
parser.add_argument("--jit", action="store_true")
parser.add_argument("--teacher-dtype", choices=("bfloat16", "float16"))
parser.add_argument("--torch", action="store_true", help="also run benchmarks/torch_peer.py")
args = parser.parse_args()

options = {k: v for k, v in vars(args).items() if k != "torch"}
result, torch = bench.benchmark(**options, torch=None if args.torch else False)
print(bench.format_report(result, torch))
