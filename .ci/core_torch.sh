#!/usr/bin/env bash
# CI lane for the core on PyTorch, with no TensorFlow installed: a virtualenv
# with keras (the newest in pyproject.toml's range), PyTorch's CPU build and
# pytest, this package installed with --no-deps, then the backend-independent
# core tests under KERAS_BACKEND=torch: golden values and gradients, taps,
# terms, a fit, Keras's own distiller tests against SPDistiller.
# torch==2.13.0 is the CPU build this machine kind keeps on disk (pip takes
# it); PyPI's own Linux wheels pull several GB of CUDA libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
keras_range=$(sed -n 's/^ *"\(keras>=[0-9.]*,<[0-9.]*\)".*/\1/p' pyproject.toml)
if [ -z "$keras_range" ]; then
  echo "core_torch.sh: no \"keras>=X,<Y\" line in pyproject.toml" >&2
  exit 1
fi
venv="${CORE_TORCH_VENV:-${TMPDIR:-/tmp}/keras-spkd-core-torch}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q "torch==2.13.0" "$keras_range" "pytest>=8" "numpy>=1.26"
"$venv/bin/pip" install -q --no-deps .
if "$venv/bin/python" -c "import tensorflow" >/dev/null 2>&1; then
  echo "core_torch.sh: TensorFlow is installed in $venv; this lane must run without it" >&2
  exit 1
fi
KERAS_BACKEND=torch "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_backends.py tests/test_features.py tests/test_terms.py \
  tests/test_keras_distiller_suite.py
