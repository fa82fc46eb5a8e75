#!/usr/bin/env bash
# CI at the low end of the supported keras range: a second virtualenv with the
# oldest keras that pyproject.toml allows (the rest of the dependencies as
# pip resolves them), the package installed there, then the core tests:
# the maths, the taps, the distiller and tf.distribute (the fast lane of each;
# the slow multi-process runs are left to the main run). The main run (.ci/run)
# covers the high end.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
lowest=$(sed -n 's/^ *"keras>=\([0-9][0-9.]*\),.*/\1/p' pyproject.toml)
if [ -z "$lowest" ]; then
  echo "core_lowest_keras.sh: no \"keras>=X,<Y\" line in pyproject.toml" >&2
  exit 1
fi
venv="${LOWEST_KERAS_VENV:-${TMPDIR:-/tmp}/keras-spkd-lowest-keras}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q ".[test]" "keras==$lowest"
"$venv/bin/python" - "$lowest" <<'PY'
import sys

import keras

assert keras.__version__ == sys.argv[1], (keras.__version__, sys.argv[1])
print(f"lowest supported keras: {keras.__version__}")
PY
"$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow" \
  tests/test_losses.py tests/test_features.py tests/test_distiller.py tests/test_distribute.py
