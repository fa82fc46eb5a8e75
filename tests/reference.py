"""Plain NumPy reference of the paper's formula (Tung & Mori 2019, eq. 1-3)."""

import numpy as np


def similarity_matrix(a: np.ndarray) -> np.ndarray:
    """G~ = Q Q^T with Q the (b, h*w*c) reshaping; each row divided by its norm.

    An all-zero sample gives an all-zero row, which stays zero (0 / 0 has no
    value in the paper; zero is the only choice that leaves the rest alone).
    """
    q = np.asarray(a, dtype=np.float64).reshape(a.shape[0], -1)
    g = q @ q.T
    norm = np.linalg.norm(g, axis=1, keepdims=True)
    return g / np.where(norm == 0, 1.0, norm)


def sp_loss(teachers, students, weights=None) -> float:
    """sum over pairs of w * (1 / b^2) * ||G_T - G_S||_F^2."""
    weights = weights or [1.0] * len(teachers)
    total = 0.0
    for w, t, s in zip(weights, teachers, students):
        b = t.shape[0]
        total += w * np.sum((similarity_matrix(t) - similarity_matrix(s)) ** 2) / b**2
    return total


def kd_loss(teacher_logits, student_logits, temperature) -> float:
    """T^2 * mean over the batch of KL(softmax(z_T/T) || softmax(z_S/T))."""

    def log_softmax(z):
        z = np.asarray(z, np.float64) / temperature
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    lt, ls = log_softmax(teacher_logits), log_softmax(student_logits)
    return temperature**2 * np.mean(np.sum(np.exp(lt) * (lt - ls), axis=-1))


def attention_map(a: np.ndarray) -> np.ndarray:
    """Zagoruyko & Komodakis 2017: mean over channels of A^2, flattened, L2-normalised."""
    q = (np.asarray(a, np.float64) ** 2).mean(axis=-1).reshape(a.shape[0], -1)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def at_loss(teachers, students, weights=None) -> float:
    """sum over pairs of w * mean over batch and positions of (Q_T - Q_S)^2."""
    weights = weights or [1.0] * len(teachers)
    return sum(
        w * np.mean((attention_map(t) - attention_map(s)) ** 2)
        for w, t, s in zip(weights, teachers, students)
    )
