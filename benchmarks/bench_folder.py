"""Folder vs in-memory input: steps per second and peak RSS (a benchmark, not a test).

The same SP distiller (fashion-cnn-16 -> fashion-cnn-4, group3, batch 128) is fed
the same Fashion-MNIST training images two ways: from memory (`DataBundle` over
arrays) and streamed from a folder of PNG files (`keras_spkd.data.load_folder`).
Each (source, image count) runs in its own process, so its peak RSS
(`ru_maxrss`) is its own; steps per second are measured on the epochs after the
first (the first pays for tracing).

    python benchmarks/bench_folder.py                         # 6,000 and 60,000 images
    python benchmarks/bench_folder.py --images 6000 --epochs 3 --folder /tmp/fm_png

Needs Fashion-MNIST on disk (Debian: `apt-get install dataset-fashion-mnist`).
Writing 60,000 PNGs takes a few minutes once; they are reused. Run it on an idle
machine: the figures go to benchmarks/RESULTS.md.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--images", type=int, nargs="+", default=[6000, 60000])
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--folder", default="/tmp/keras_spkd_fashion_png")
parser.add_argument("--one", nargs=2, metavar=("SOURCE", "COUNT"), help=argparse.SUPPRESS)
args = parser.parse_args()


def write_folder(root: Path, count: int) -> Path:
    """The first `count` training images as root/<count>/<class>/<index>.png (kept)."""
    import numpy as np
    import tensorflow as tf

    from keras_spkd.data import fashion_mnist_arrays

    target = root / str(count)
    done = target / ".complete"
    if done.exists():
        return target
    (x, y), _ = fashion_mnist_arrays()
    for index in range(count):
        path = target / f"class_{y[index]}" / f"{index:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tf.io.encode_png(x[index][..., None]).numpy())
    done.write_text(str(np.int64(count)))
    return target


def run_one(source: str, count: int) -> dict:
    """Trains for `args.epochs` epochs from one source; returns its figures."""
    import dataclasses

    import keras
    import numpy as np

    import keras_spkd
    from keras_spkd.data import load_folder
    from keras_spkd.models import build_model
    from keras_spkd.preprocessing import with_preprocessing

    folder = Path(args.folder) / str(count)
    data = load_folder(folder, batch_size=args.batch_size, augment="crop").stored()
    if source == "memory":  # the same images and splits, decoded once into arrays
        arrays = {split: (data.images(split), data.labels(split)) for split in data.files}
        data = dataclasses.replace(data, arrays=arrays, files=None, _cache={})
    keras.utils.set_random_seed(0)
    teacher, student = (
        with_preprocessing(build_model(arch, data.input_shape, 10, name=name), data.layer)
        for arch, name in (("fashion-cnn-16", "teacher"), ("fashion-cnn-4", "student"))
    )
    distiller = keras_spkd.SPDistiller(teacher, student, [("group3", "group3")], gamma=740.0)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    ends = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ends.append(time.perf_counter())

    began = time.perf_counter()
    distiller.fit(
        data.epochs(0),
        steps_per_epoch=data.steps_per_epoch,
        epochs=args.epochs,
        callbacks=[Clock()],
        verbose=0,
    )
    later = np.diff([began, *ends])[1:]
    return {
        "source": source,
        "images": count,
        "train_images": data.size("train"),
        "steps_per_epoch": data.steps_per_epoch,
        "steps_per_second_after_first_epoch": float(data.steps_per_epoch / np.mean(later)),
        "first_epoch_seconds": float(ends[0] - began),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


if args.one:
    print(json.dumps(run_one(args.one[0], int(args.one[1]))))
    sys.exit(0)

rows = []
for count in args.images:
    write_folder(Path(args.folder), count)
    for source in ("memory", "folder"):
        command = [sys.executable, __file__, *sys.argv[1:], "--one", source, str(count)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)

print("| source | images | steps/s after epoch 1 | peak RSS MiB |")
print("|---|---|---|---|")
for row in rows:
    print(
        f"| {row['source']} | {row['images']:,} | "
        f"{row['steps_per_second_after_first_epoch']:.2f} | {row['peak_rss_mib']:.0f} |"
    )
for count in args.images:
    memory, folder = (
        next(r for r in rows if r["source"] == s and r["images"] == count)
        for s in ("memory", "folder")
    )
    key = "steps_per_second_after_first_epoch"
    ratio = folder[key] / memory[key]
    print(f"{count:,} images: folder / memory steps per second = {ratio:.2f} (target >= 0.9)")
folders = [r["peak_rss_mib"] for r in rows if r["source"] == "folder"]
if len(folders) > 1:
    print(f"folder peak RSS, largest / smallest image count: {max(folders) / min(folders):.2f}")
