"""Adding a distillation term: one class, no change anywhere else.

A term is a `keras.distillation.DistillationLoss`: it names the layers it
reads and turns the teacher's and the student's activations into a scalar.
This one is the distance term of relational KD (Park et al., CVPR 2019): the
batch's pairwise distances, each divided by their mean, compared with a
Huber loss. It is defined below and used twice, unchanged:

1. in `keras_spkd.SPDistiller`, beside the SP term, with its own log key;
2. in `keras_spkd.experiment.run_compare`, as a method of its own and added
   to SP, from a config that names it by import path.

    python examples/custom_term.py            # about a minute on a laptop CPU

Runs on scikit-learn's real handwritten digits (no download).
"""

import argparse
import tempfile

import keras
from keras import ops

import keras_spkd
from keras_spkd import experiment


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
        d = ops.sqrt(ops.maximum(squared[:, None] + squared[None, :] - 2 * q @ ops.transpose(q), 1e-12))
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()

    # 1. In SPDistiller: SP and the new term side by side, each with its weight.
    config = experiment.ExperimentConfig(
        dataset="digits", epochs=args.epochs, teacher_epochs=args.epochs
    )
    with tempfile.TemporaryDirectory() as out:
        summary = experiment.run_distill(config, out=f"{out}/distill")
        print(f"teacher (trained, then frozen): {100 * summary.accuracy['teacher']:.2f}%")
    from keras_spkd.data import load_digits
    from keras_spkd.models import digits_cnn

    data = load_digits(batch_size=64)
    keras.utils.set_random_seed(0)
    teacher = digits_cnn(32, name="teacher")
    teacher.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    teacher.fit(data.train, epochs=args.epochs, verbose=0)
    distiller = keras_spkd.SPDistiller(
        teacher,
        digits_cnn(8, name="student"),
        distillation_losses=[
            keras_spkd.SimilarityPreservingDistillation("group2", "group2"),
            RelationalDistance("group2", "group2"),
        ],
        distillation_loss_weights=[100.0, 5.0],
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = distiller.fit(data.train, epochs=args.epochs, verbose=0)
    last = {key: values[-1] for key, values in history.history.items()}
    print(
        "SPDistiller with SP + RelationalDistance: "
        + ", ".join(f"{key} {value:.4f}" for key, value in sorted(last.items()))
    )


if __name__ == "__main__":
    main()
