"""tf.distribute: cross-replica SP equals one device; the default is per replica."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("distribute")
    results = {}
    for mode in ("single", "cross", "per"):
        path = out / f"{mode}.npz"
        subprocess.run(
            [sys.executable, str(ROOT / "tests" / "distribute_worker.py"), mode, str(path)],
            check=True,
            timeout=300,
            cwd=out,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        weights = np.load(path)
        results[mode] = (
            [weights[k] for k in weights.files],
            json.loads(path.with_suffix(".json").read_text()),
        )
    return results


@pytest.mark.slow
def test_cross_replica_training_equals_one_device(runs):
    single_weights, single = runs["single"]
    cross_weights, cross = runs["cross"]
    assert (single["replicas"], cross["replicas"]) == (1, 2)
    for a, b in zip(single_weights, cross_weights):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(cross["train_sp_loss"], single["train_sp_loss"], rtol=1e-5)
    np.testing.assert_allclose(cross["train_loss"], single["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(cross["eval_sp_loss"], cross["by_hand_global"], rtol=1e-4)


@pytest.mark.slow
def test_per_replica_default_is_the_mean_of_half_batch_losses(runs):
    single_weights, _ = runs["single"]
    per_weights, per = runs["per"]
    np.testing.assert_allclose(per["eval_sp_loss"], per["by_hand_half_mean"], rtol=1e-4)
    assert abs(per["by_hand_half_mean"] - per["by_hand_global"]) > 0.1  # a different objective
    assert max(np.abs(a - b).max() for a, b in zip(single_weights, per_weights)) > 1e-3
