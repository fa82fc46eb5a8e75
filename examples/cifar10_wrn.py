"""The paper's CIFAR-10 recipe: WideResNet teacher -> WideResNet student with SP.

Tung & Mori (ICCV 2019), Table 1: SGD 0.1 with Nesterov momentum 0.9, weight
decay 5e-4, batch 128, 200 epochs with the rate x0.2 at epochs 60, 120 and
160, gamma = 3000 on the output of the last group (`group3`). CIFAR-10 must be
prepared for TFDS (`tfds build cifar10 --data_dir DIR`); meant for a GPU:

    python examples/cifar10_wrn.py --data-dir DIR --teacher wrn-40-2 --student wrn-16-1

Each phase checkpoints to OUT/<phase>/backup and resumes when rerun.
"""

import argparse
import json
from pathlib import Path

import keras

import keras_spkd
from keras_spkd.data import load_tfds
from keras_spkd.export import export_student
from keras_spkd.models import build_model

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", required=True)
parser.add_argument("--teacher", default="wrn-16-2")
parser.add_argument("--student", default="wrn-16-1")
parser.add_argument("--epochs", type=int, default=200)
parser.add_argument("--gamma", type=float, default=3000.0)
parser.add_argument("--out", default="runs/cifar10_wrn")
parser.add_argument("--mixed-precision", action="store_true")
args = parser.parse_args()
if args.mixed_precision:
    keras.config.set_dtype_policy("mixed_float16")  # before any model is built
keras.utils.set_random_seed(0)
out = Path(args.out)

data = load_tfds("cifar10", batch_size=128, data_dir=args.data_dir)
steps = data.steps_per_epoch


def compiled(model):
    boundaries = [steps * e * args.epochs // 200 for e in (60, 120, 160)]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries, [0.1, 0.02, 0.004, 0.0008]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    return model


def train(name, model):
    compiled(model).fit(
        data.epochs(),  # epoch after epoch, each in its own seeded order
        steps_per_epoch=steps,
        shuffle=False,
        validation_data=data.val,
        epochs=args.epochs,
        callbacks=[
            keras.callbacks.BackupAndRestore(str(out / name / "backup"), double_checkpoint=True),
            keras.callbacks.CSVLogger(str(out / name / "history.csv"), append=True),
        ],
    )
    return model.evaluate(data.test, verbose=0, return_dict=True)["accuracy"]


def zoo(arch, name):
    return build_model(arch, data.input_shape, data.num_classes, weight_decay=5e-4, name=name)


teacher = zoo(args.teacher, "teacher")
results = {"teacher": train("teacher", teacher)}
alone, with_sp = zoo(args.student, "student_alone"), zoo(args.student, "student_sp")
with_sp.set_weights(alone.get_weights())
results["student_alone"] = train("alone", alone)
results["student_sp"] = train(
    "sp", keras_spkd.SPDistiller(teacher, with_sp, [("group3", "group3")], gamma=args.gamma)
)
x_test, y_test = data.arrays["test"]  # as stored: uint8 images
report = export_student(
    with_sp,
    out / "export",
    x_test,
    ("float", "int8"),
    test_labels=y_test,
    preprocessing=data.preprocessing,  # normalisation goes inside the export
    calibration_images=data.arrays["train"][0],
)
results["export"] = report.table()
(out / "results.json").write_text(json.dumps(results, indent=2))
print(json.dumps(results, indent=2))
