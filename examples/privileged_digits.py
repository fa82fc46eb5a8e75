"""Privileged information: the teacher saw full images, the student gets half.

The teacher is trained on whole 8x8 digits; the student only ever sees the
top half (rows 0-3). During distillation each batch carries both views,
`({"teacher": full, "student": top_half}, y)`, and SP makes the student's
similarities on the halves resemble the teacher's on the whole images.

    python examples/privileged_digits.py
"""

import argparse

import keras
import tensorflow as tf

import keras_spkd
from keras_spkd.data import digits_arrays
from keras_spkd.models import digits_cnn

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--gamma", type=float, default=100.0)
args = parser.parse_args()
keras.utils.set_random_seed(0)


def top_half(images):
    return images[:, :4]


def pipeline(x, y, privileged: bool, training: bool):
    inputs = {"teacher": x, "student": top_half(x)} if privileged else top_half(x)
    ds = tf.data.Dataset.from_tensor_slices((inputs, y))
    if training:
        ds = ds.shuffle(len(y), seed=0)
    return ds.batch(64, drop_remainder=training).prefetch(tf.data.AUTOTUNE)


def compiled(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


arrays = digits_arrays()
(x_train, y_train), (x_val, y_val), (x_test, y_test) = (arrays[s] for s in ("train", "val", "test"))
teacher = compiled(digits_cnn(32, name="teacher"))
teacher.fit(x_train, y_train, batch_size=64, epochs=args.epochs, verbose=0)
# The pipelines below shuffle (seeded) and batch themselves: fit must not shuffle.

alone = digits_cnn(8, input_shape=(4, 8, 1), name="student_alone")
with_sp = digits_cnn(8, input_shape=(4, 8, 1), name="student_sp")
with_sp.set_weights(alone.get_weights())
compiled(alone).fit(
    pipeline(x_train, y_train, False, True), epochs=args.epochs, shuffle=False, verbose=0
)
distiller = compiled(
    keras_spkd.SPDistiller(teacher, with_sp, [("group2", "group2")], gamma=args.gamma)
)
distiller.fit(
    pipeline(x_train, y_train, True, True),
    validation_data=pipeline(x_val, y_val, True, False),
    epochs=args.epochs,
    shuffle=False,
    verbose=0,
)

test_half = pipeline(x_test, y_test, False, False)
compiled(with_sp)  # the distilled student alone, on its own (half) inputs
print(f"teacher (full images): {teacher.evaluate(x_test, y_test, verbose=0)[1]:.2%}")
print(f"student alone (top half): {alone.evaluate(test_half, verbose=0)[1]:.2%}")
print(
    f"student + SP from the privileged teacher (top half): "
    f"{with_sp.evaluate(test_half, verbose=0)[1]:.2%}"
)
