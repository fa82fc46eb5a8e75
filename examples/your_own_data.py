"""Your teacher, your student, your images: SP-KD on an image folder with the Python API.

With no arguments it makes everything it needs from scikit-learn's real
handwritten digits (no download): a folder of PNG files, one subfolder per
class, a small teacher trained with plain Keras and saved as `teacher.keras`,
and an untrained student saved as `student.keras`. Then it runs the same
workflow as `keras-spkd distill --data DIR --teacher teacher.keras --student
student.keras --pairs auto`: student alone vs with SP, a table, an export
that takes the PNG files' pixels as stored, and a prediction on a few files.

    python examples/your_own_data.py                      # everything made here
    python examples/your_own_data.py --data DIR --teacher t.keras --student s.keras

Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019.
"""

import argparse
from pathlib import Path

import keras
import tensorflow as tf

from keras_spkd import experiment

parser = argparse.ArgumentParser()
parser.add_argument("--data", help="an image folder (DIR/<class>/*.png) or an .npz file")
parser.add_argument("--teacher", help="your trained teacher (.keras)")
parser.add_argument("--student", help="your student (.keras: architecture + initial weights)")
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--work", default="your_own_data", help="folder for what this script makes")
args = parser.parse_args()
work = Path(args.work)
keras.utils.set_random_seed(0)


def cnn(width: int, name: str) -> keras.Model:
    """A user's own CNN. It takes the stored pixels (0-255) and scales them itself, so
    keras-spkd feeds it the images as they are (no --*-preprocessing needed)."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(width, 3, padding="same", name="conv1")(x)
    x = keras.layers.ReLU(name="stage1")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", name="conv2")(x)
    x = keras.layers.ReLU(name="stage2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name=name)


# 1. Data: a folder of PNG files, DIR/<class>/<image>.png (class names: the folder names).
if args.data is None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * 255 / 16).round().astype("uint8")[..., None]
    folder = work / "digits_png"
    for index, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
        path = folder / f"digit_{label}" / f"{index:04d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tf.io.encode_png(image).numpy())
    args.data = str(folder)

# 2. A teacher and a student of your own, as .keras files (any functional model will do).
if args.teacher is None:
    args.teacher = str(work / "teacher.keras")
    if not Path(args.teacher).exists():
        teacher = cnn(32, "my_teacher")
        teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        teacher.fit(pixels[:1400], digits.target[:1400], epochs=2 * args.epochs, verbose=0)
        teacher.save(args.teacher)
if args.student is None:
    args.student = str(work / "student.keras")
    if not Path(args.student).exists():
        cnn(4, "my_student").save(args.student)

# 3. The workflow: every setting is an ExperimentConfig field (the CLI's flags, one to one).
config = experiment.ExperimentConfig(
    data=args.data,  # split 70/10/20, stratified, seeded; streamed from disk
    teacher=args.teacher,  # trained: used as it is, frozen
    student_arch=args.student,  # trained from its initial weights
    pairs="auto",  # the last stage of each (keras_spkd.suggest_layer_pairs)
    epochs=args.epochs,
    batch_size=64,
    optimizer="adam",  # the preset for your data (lr 1e-3)
    tflite=("float",),
)
run = work / "run"
summary = experiment.run_distill(config, out=str(run), resume=(run / "config.json").exists())
print(summary.table)

# 4. The export takes the files' pixels as stored; the class names come with it.
files = sorted(Path(args.data).rglob("*.png"))[::300][:5]
for row in experiment.run_predict(Path(summary.out) / "export", files):
    print(f"{row['file']}: {row['class']} ({row['probability']:.1%})")
print(f"Run directory: {summary.out} (report.html, summary.json, export/)")
