#!/usr/bin/env bash
# Issue 21's long runs, in the order they were run; each step resumes where it
# stopped when the script is started again (nohup bash tuning/evidence_runs.sh
# > runs/evidence.log 2>&1 &). Nothing here is timed.
set -euo pipefail
cd "$(dirname "$0")/.."
spkd=".venv/bin/keras-spkd"
py=".venv/bin/python"
# 1. Digits: SP, KD and SP+KD each tuned (8 trials x 2 tuning seeds), then 30 seeds over 3 teachers.
$py tuning/evidence.py --dataset digits --trials 8 --seeds 30 --teachers 3 --out runs/evidence-digits
# 2. Fashion-MNIST training length: alone, KD and SP at 8 and at 32 epochs, 3 seeds, one teacher.
for epochs in 8 32; do
  $spkd compare --dataset fashion_mnist --methods alone,kd,sp --kd-weight 1 --seeds 3 \
    --epochs "$epochs" --out "runs/length-fashion/epochs-$epochs"
done
