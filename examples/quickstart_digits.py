"""Quick start: distil a digits CNN into a 13x smaller one with SP-KD.

Runs in well under a minute on a laptop CPU, on scikit-learn's real
handwritten digits (no download):

    python examples/quickstart_digits.py

Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019.
"""

import argparse

import keras

import keras_spkd
from keras_spkd.data import load_digits
from keras_spkd.models import digits_cnn
from keras_spkd.plots import plot_similarity_matrices

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--gamma", type=float, default=100.0)
args = parser.parse_args()
keras.utils.set_random_seed(0)


def compile_for_digits(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


# 1. Data: 1,257 / 180 / 360 images of 8x8 digits as tf.data pipelines.
#    `data.epochs()` streams epoch after epoch, each in its own seeded order:
#    fit is told how many batches an epoch has, and that the order is set.
data = load_digits(batch_size=64)
FIT = {"steps_per_epoch": data.steps_per_epoch, "shuffle": False, "verbose": 0}

# 2. A teacher (~20k weights). Each group's output is a named layer: group1, group2.
teacher = compile_for_digits(digits_cnn(32, name="teacher"))
teacher.fit(data.epochs(), validation_data=data.val, epochs=args.epochs, **FIT)

# 3. Two copies of the same small student (~1.5k weights), same initial weights.
student_alone = digits_cnn(8, name="student_alone")
student_sp = digits_cnn(8, name="student_sp")
student_sp.set_weights(student_alone.get_weights())

# 4. The student alone: plain Keras.
compile_for_digits(student_alone).fit(data.epochs(), epochs=args.epochs, **FIT)

# 5. The student with SP: match the teacher's batch similarities at group2.
distiller = keras_spkd.SPDistiller(
    teacher, student_sp, layer_pairs=[("group2", "group2")], gamma=args.gamma
)
compile_for_digits(distiller).fit(
    data.epochs(), validation_data=data.val, epochs=args.epochs, **FIT
)

# 6. Compare on the test split (the distilled student is a plain Keras model:
#    compile it for its own evaluation).
compile_for_digits(student_sp)
for name, model in (
    ("teacher", teacher),
    ("student alone", student_alone),
    ("student + SP", student_sp),
):
    accuracy = model.evaluate(data.test, verbose=0, return_dict=True)["accuracy"]
    print(f"{name:>14}: {accuracy:.2%}")

# 7. Look at what was preserved: G for a probe batch sorted by label.
images, labels = data.probe
extract = keras_spkd.build_feature_extractor
plot_similarity_matrices(
    {
        "teacher": extract(teacher, ["group2"], include_predictions=False)(images),
        "student alone": extract(student_alone, ["group2"], include_predictions=False)(images),
        "student + SP": extract(student_sp, ["group2"], include_predictions=False)(images),
    },
    labels,
    "quickstart_similarity.png",
    reference="teacher",
)
print("Similarity matrices: quickstart_similarity.png")
