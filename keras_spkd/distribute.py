"""Choosing a `tf.distribute` strategy for distillation, and checking batches."""

from __future__ import annotations

import json
import os

import keras

from keras_spkd._tf import tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(kind: str = "default", devices: list[str] | None = None):
    """Creates the strategy to train under; call it first, before other TF ops.

    Args:
        kind: `"default"` (one device), `"mirrored"` (every local GPU, or
            `devices`) or `"multi_worker"` (several machines, described by
            the `TF_CONFIG` environment variable as usual).
        devices: Devices for `"mirrored"`. Defaults to all local GPUs (the
            CPU when there are none).

    Returns:
        A `tf.distribute.Strategy`.

    Example:

    >>> strategy = keras_spkd.make_strategy("mirrored")
    >>> with strategy.scope():
    ...     distiller = keras_spkd.SPDistiller(..., cross_replica=True)
    """
    if kind != "default" and keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"The {kind!r} strategy is tf.distribute, which needs KERAS_BACKEND=tensorflow; "
            f"this process runs Keras on {keras.backend.backend()!r}. On JAX, use "
            "keras.distribution.DataParallel (SP is then over the global batch)."
        )
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if kind == "multi_worker":
        config = os.environ.get("TF_CONFIG")
        if not config or "cluster" not in json.loads(config):
            raise ValueError(
                "The 'multi_worker' strategy reads the cluster from TF_CONFIG, which is "
                'not set; set it on every machine, e.g. TF_CONFIG=\'{"cluster": '
                '{"worker": ["host1:12345", "host2:12345"]}, "task": {"type": '
                '"worker", "index": 0}}\'.'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {kind!r}; expected one of {STRATEGIES}.")


def check_global_batch(batch_size: int, strategy) -> None:
    """Rejects a global batch that the replicas cannot share equally.

    With uneven shares each replica's G would be built over a different number
    of samples, so the per-replica SP loss would depend on the split.
    """
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"The global batch size {batch_size} does not divide by the {replicas} "
            f"replicas; use a multiple of {replicas} (e.g. "
            f"{replicas * max(1, round(batch_size / replicas))}) so that every replica "
            "gets an equal share."
        )
