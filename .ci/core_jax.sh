#!/usr/bin/env bash
# CI lane for the core on JAX, with no TensorFlow installed: a virtualenv with
# keras (the newest in pyproject.toml's range), JAX's CPU wheels and pytest,
# this package installed with --no-deps (TensorFlow stays a default dependency
# of the full install), then the backend-independent core tests under
# KERAS_BACKEND=jax: golden values and gradients, taps, terms, a fit, Keras's
# own distiller tests against SPDistiller, and DataParallel on two virtual
# devices (tests/test_jax_distribution.py). Run by hand, to keep CI short:
# tests/test_terms.py (passes on JAX) and tests/test_gpu_step.py (the GPU
# benchmark at tiny sizes, about 3 minutes of JAX compilation on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
keras_range=$(sed -n 's/^ *"\(keras>=[0-9.]*,<[0-9.]*\)".*/\1/p' pyproject.toml)
if [ -z "$keras_range" ]; then
  echo "core_jax.sh: no \"keras>=X,<Y\" line in pyproject.toml" >&2
  exit 1
fi
venv="${CORE_JAX_VENV:-${TMPDIR:-/tmp}/keras-spkd-core-jax}"
python3 -m venv "$venv"
# jax 0.10.2: the release this lane was measured with (Keras 3.12-3.15 run on it).
"$venv/bin/pip" install -q "jax[cpu]==0.10.2" "$keras_range" "pytest>=8" "numpy>=1.26"
"$venv/bin/pip" install -q --no-deps .
if "$venv/bin/python" -c "import tensorflow" >/dev/null 2>&1; then
  echo "core_jax.sh: TensorFlow is installed in $venv; this lane must run without it" >&2
  exit 1
fi
KERAS_BACKEND=jax "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_backends.py tests/test_features.py \
  tests/test_keras_distiller_suite.py tests/test_jax_distribution.py
