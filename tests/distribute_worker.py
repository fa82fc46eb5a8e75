"""Runs SPDistiller for one epoch under one strategy; writes weights and logs.

Usage: python tests/distribute_worker.py single|cross|per|worker|single_bf16|cross_bf16 OUT.npz
       python tests/distribute_worker.py long_worker OUT.npz EPOCHS BACKUP_DIR
A process creates one strategy only (collective keys are per process): two
logical CPU devices configured before TensorFlow initialises for `cross` and
`per`; MultiWorkerMirroredStrategy from TF_CONFIG for `worker`.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

MODE = sys.argv[1]
if MODE in ("worker", "long_worker"):
    STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()  # first, before other TF ops
else:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import keras_spkd  # noqa: E402
from tests.conftest import small_cnn  # noqa: E402

GAMMA, GLOBAL_BATCH = 500.0, 16


def main(mode: str, out: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    if mode.endswith("_bf16"):  # the README's accelerator recipe: bfloat16 everywhere
        keras.config.set_dtype_policy("mixed_bfloat16")
    if mode == "worker":
        strategy = STRATEGY
    elif mode.startswith("single"):
        strategy = tf.distribute.get_strategy()
    else:
        strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    with strategy.scope():
        keras.utils.set_random_seed(7)
        teacher, student = small_cnn("t", 8), small_cnn("s", 4)
        distiller = keras_spkd.SPDistiller(
            teacher, student, [("t_group", "s_group")], gamma=GAMMA, cross_replica=mode != "per"
        )
        distiller.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    history = distiller.fit(dataset.with_options(options), epochs=1, shuffle=False, verbose=0)
    if mode == "worker":  # evaluation under multi-worker is not what is tested here
        np.savez(out, *student.get_weights())
        report = {
            "replicas": strategy.num_replicas_in_sync,
            "train_sp_loss": float(np.ravel(history.history["sp_loss"])[0]),
            "train_loss": float(np.ravel(history.history["loss"])[0]),
        }
        Path(out).with_suffix(".json").write_text(json.dumps(report))
        return
    probe = tf.data.Dataset.from_tensor_slices((x[:GLOBAL_BATCH], y[:GLOBAL_BATCH]))
    logs = distiller.evaluate(probe.batch(GLOBAL_BATCH), verbose=0, return_dict=True)
    t_feats = keras.Model(teacher.input, teacher.get_layer("t_group").output)(x[:GLOBAL_BATCH])
    s_feats = keras.Model(student.input, student.get_layer("s_group").output)(x[:GLOBAL_BATCH])
    t_feats, s_feats = tf.cast(t_feats, "float32"), tf.cast(s_feats, "float32")
    half = GLOBAL_BATCH // 2
    report = {
        "replicas": strategy.num_replicas_in_sync,
        "train_sp_loss": history.history["sp_loss"][0],
        "train_loss": history.history["loss"][0],
        "eval_sp_loss": logs["sp_loss"],
        "by_hand_global": GAMMA * float(keras_spkd.similarity_preserving_loss(t_feats, s_feats)),
        "by_hand_half_mean": GAMMA
        * float(
            np.mean(
                [
                    keras_spkd.similarity_preserving_loss(t_feats[:half], s_feats[:half]),
                    keras_spkd.similarity_preserving_loss(t_feats[half:], s_feats[half:]),
                ]
            )
        ),
    }
    np.savez(out, *student.get_weights())
    Path(out).with_suffix(".json").write_text(json.dumps(report))


def resumable(mode: str, out: str, epochs: int, backup_dir: str) -> None:
    """`long_worker`: 2,048 samples, checkpointed every epoch."""
    from keras_spkd.export import export_student

    rng = np.random.default_rng(1)
    x = rng.random((2048, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 2048)
    with STRATEGY.scope():
        keras.utils.set_random_seed(7)
        teacher, student = small_cnn("t", 8), small_cnn("s", 4)
        distiller = keras_spkd.SPDistiller(
            teacher, student, [("t_group", "s_group")], gamma=GAMMA, cross_replica=True
        )
        distiller.compile(
            optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    epochs_run = []
    callbacks = [
        keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True),
        keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epochs_run.append(epoch)),
    ]
    distiller.fit(
        dataset.with_options(options), epochs=epochs, callbacks=callbacks, shuffle=False, verbose=0
    )
    report = export_student(student, Path(out).parent / f"export_{Path(out).stem}", x[:32], ())
    np.savez(out, *student.get_weights())
    Path(out).with_suffix(".json").write_text(
        json.dumps(
            {"epochs_run": epochs_run, "export_max_abs_diff": report.saved_model_max_abs_diff}
        )
    )


if __name__ == "__main__":
    if MODE == "long_worker":
        resumable(MODE, sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main(MODE, sys.argv[2])
