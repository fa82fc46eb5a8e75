"""Adding a distillation term: one class, no change anywhere else.

A term is a `keras.distillation.DistillationLoss`: it names the layers it
reads and turns the teacher's and the student's activations into a scalar.
This one is the distance term of relational KD (Park et al., CVPR 2019): the
batch's pairwise distances, each divided by their mean, compared with a
Huber loss. It is defined below and used twice, unchanged:

1. in `keras_spkd.SPDistiller`, beside the SP term, with its own log key;
2. in `keras_spkd.experiment.run_compare`, as a method of its own and added
   to SP, named by its import path (`custom_term:RelationalDistance`: this
   file, on the path when it runs as a script).

    python examples/custom_term.py            # a few minutes on a laptop CPU

Runs on scikit-learn's real handwritten digits (no download). Part 1 runs on
any Keras backend; part 2, the workflow, on TensorFlow.
"""

import argparse
import tempfile

import keras
from keras import ops

import keras_spkd
from keras_spkd import experiment
from keras_spkd.models import digits_cnn


@keras.saving.register_keras_serializable(package="examples")
class RelationalDistance(keras.distillation.DistillationLoss):
    """Matches the batch's normalised pairwise distances (RKD-D)."""

    batch_statistic = True  # compares samples with each other: gathered across replicas

    def __init__(self, teacher_layer_name, student_layer_name, delta=1.0):
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.delta = delta

    @staticmethod
    def _distances(features):
        q = ops.reshape(ops.cast(features, "float32"), (ops.shape(features)[0], -1))
        squared = ops.sum(ops.square(q), axis=1)
        d = ops.sqrt(
            ops.maximum(squared[:, None] + squared[None, :] - 2 * q @ ops.transpose(q), 1e-12)
        )
        off_diagonal = 1.0 - ops.eye(ops.shape(d)[0])
        mean = ops.sum(d * off_diagonal) / ops.maximum(ops.sum(off_diagonal), 1.0)
        return d / ops.maximum(mean, 1e-12), off_diagonal

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        d_t, mask = self._distances(ops.stop_gradient(teacher_outputs))
        d_s, _ = self._distances(student_outputs)
        gap = ops.abs(d_s - d_t)
        huber = ops.where(gap < self.delta, 0.5 * gap**2, self.delta * (gap - 0.5 * self.delta))
        return ops.sum(huber * mask) / ops.maximum(ops.sum(mask), 1.0)

    def get_config(self):
        return {
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
            "delta": self.delta,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def digits():
    """scikit-learn's real 8x8 digits as NumPy arrays (any backend): train and test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    x = (images.reshape(-1, 8, 8, 1) / 16.0).astype("float32")
    return train_test_split(
        x, labels.astype("int32"), test_size=0.2, random_state=0, stratify=labels
    )


def compiled(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()

    # 1. In SPDistiller: SP and the new term side by side, each with its weight.
    x_train, x_test, y_train, y_test = digits()
    keras.utils.set_random_seed(0)
    teacher = compiled(digits_cnn(32, name="teacher"))
    teacher.fit(x_train, y_train, batch_size=64, epochs=args.epochs, verbose=0)
    distiller = compiled(
        keras_spkd.SPDistiller(
            teacher,
            digits_cnn(8, name="student"),
            distillation_losses=[
                keras_spkd.SimilarityPreservingDistillation("group2", "group2"),
                RelationalDistance("group2", "group2"),
            ],
            distillation_loss_weights=[100.0, 5.0],
        )
    )
    history = distiller.fit(x_train, y_train, batch_size=64, epochs=args.epochs, verbose=0)
    logs = {key: values[-1] for key, values in history.history.items()}
    print("SPDistiller, SP + RelationalDistance, last epoch's logs:")
    for key in ("loss", "task_loss", "sp_loss", "relational_distance_loss"):
        print(f"  {key}: {logs[key]:.4f}")
    student_accuracy = distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    print(f"  student test accuracy: {100 * student_accuracy:.2f}%")

    # 2. In run_compare: the term by its import path, alone and added to SP.
    rkd = {
        "class": "custom_term:RelationalDistance",
        "config": {"teacher_layer_name": "group2", "student_layer_name": "group2"},
        "weight": 5.0,
    }
    config = experiment.ExperimentConfig(
        dataset="digits", epochs=args.epochs, teacher_epochs=args.epochs
    )
    with tempfile.TemporaryDirectory() as out:
        result = experiment.run_compare(
            config,
            methods=[
                "alone",
                "sp",
                {"name": "rkd", "terms": [rkd]},
                {"name": "sp+rkd", "terms": ["sp", rkd]},
            ],
            seeds=args.seeds,
            out=f"{out}/compare",
        )
    print(result.table)


if __name__ == "__main__":
    main()
