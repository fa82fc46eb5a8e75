"""JAX: `keras.distribution.DataParallel` over two devices trains as one device does.

The step compiles as one global program, so SP's b x b matrix G is over the
global batch with no gather (what `cross_replica=True` does on TensorFlow).
Two virtual CPU devices come from `XLA_FLAGS`, set before JAX starts, so each
run is a subprocess. Skips unless JAX is installed.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
import numpy as np
import keras, jax
import keras_spkd
from tests.conftest import small_cnn
devices, out = int(sys.argv[1]), sys.argv[2]
assert len(jax.devices()) == 2, jax.devices()
if devices == 2:
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=keras.distribution.list_devices()))
keras.utils.set_random_seed(3)
teacher, student = small_cnn("t", 8), small_cnn("s", 4)
distiller = keras_spkd.SPDistiller(teacher, student, [("t_group", "s_group")], gamma=500.0,
                                   kd_weight=0.5)
distiller.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
x = rng.random((64, 8, 8, 1), dtype=np.float32)
y = rng.integers(0, 10, 64).astype("int32")
history = distiller.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
np.savez(out, *[np.asarray(w) for w in student.get_weights()])
logs = {k: [float(v) for v in vs] for k, vs in history.history.items()}
distribution = keras.distribution.distribution()
logs["mesh"] = [] if distribution is None else list(distribution.device_mesh.shape)
print(json.dumps(logs))
"""


def _run(devices: int, out: Path) -> dict:
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(devices), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed here")
def test_two_devices_with_data_parallel_equal_one_device(tmp_path):
    one = _run(1, tmp_path / "one.npz")
    two = _run(2, tmp_path / "two.npz")
    assert (one.pop("mesh"), two.pop("mesh")) == ([], [2])  # two really ran data-parallel
    assert set(one) == set(two) >= {"loss", "task_loss", "sp_loss", "kd_loss"}
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, err_msg=key)
    assert one["sp_loss"][0] > 1e-3
    a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    for key in a.files:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-5, err_msg=key)
