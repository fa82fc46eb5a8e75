#!/usr/bin/env bash
# Issue 21's long runs, in the order they were run; each step resumes where it
# stopped when the script is started again (nohup bash tuning/evidence_runs.sh
# > runs/evidence.log 2>&1 &), and a step whose collected copy in tuning/evidence/
# is complete (its summary.json) is skipped: sessions keep neither runs/ nor the
# teacher cache, so the collected copy is what carries over. Nothing here is timed. PYTHON (default
# .venv/bin/python) and RUNS (default runs) let a frozen checkout run them:
# PYTHONPATH=$PWD PYTHON=/path/.venv/bin/python RUNS=/path/runs bash tuning/evidence_runs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
runs="${RUNS:-runs}"
spkd=("$py" -m keras_spkd.cli)
done_() { [ -f "tuning/evidence/$1/summary.json" ] && echo "skipped: tuning/evidence/$1 is complete"; }
# 1. Digits: SP, KD and SP+KD each tuned (8 trials x 2 tuning seeds), then 30 seeds over 3 teachers.
done_ evidence-digits/compare ||
  "$py" tuning/evidence.py --dataset digits --trials 8 --seeds 30 --teachers 3 --out "$runs/evidence-digits"
# 2. Fashion-MNIST training length on the whole training split: alone, KD and SP at 8
#    epochs (3 seeds) and at 32 epochs (seed 0: 3 seeds of all three did not fit the budget).
for epochs in 8 32; do
  seeds=3
  [ "$epochs" = 32 ] && seeds=1
  done_ "length-fashion/epochs-$epochs" ||
    "${spkd[@]}" compare --dataset fashion_mnist --methods alone,kd,sp --kd-weight 1 --seeds "$seeds" \
      --epochs "$epochs" --out "$runs/length-fashion/epochs-$epochs"
done
# 3. The same question on the 10,000-image subset the powered design trains on: where does
#    the student alone stop gaining? (3 seeds; its teacher is trained on the subset too.)
for epochs in 16 32 64; do
  done_ "length-fashion-10k/epochs-$epochs" ||
    "${spkd[@]}" compare --dataset fashion_mnist --train-images 10000 --methods alone --seeds 3 \
      --epochs "$epochs" --out "$runs/length-fashion-10k/epochs-$epochs"
done
# 4. Fashion-MNIST, powered: SP, KD and SP+KD tuned alike (8 trials x 2 tuning seeds), then
#    22 seeds x 4 methods over 2 teachers, at the preset's 8 epochs on the whole training
#    split (RESULTS.md says why: neither 32 epochs nor a subset that gets there fits).
#    It spans sessions: it goes on from what earlier ones collected (searches, rows,
#    teachers); collect as rows finish:
#    python tuning/collect_evidence.py --teachers runs/evidence-fashion_mnist
"$py" tuning/evidence.py --dataset fashion_mnist --trials 8 --seeds 22 --teachers 2 \
  --collected tuning/evidence/evidence-fashion_mnist --out "$runs/evidence-fashion_mnist"
