"""Writes tests/golden/golden.npz: SP, KD and AT by the published PyTorch formulation.

Needs torch (CPU is enough); the test that reads the fixture does not:

    python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy
    /tmp/torchvenv/bin/python tests/golden/make_golden.py

The formulas are written here from the papers' own PyTorch formulation, in
float64, on NCHW tensors as the research code has them (inputs are stored
NHWC, as keras-spkd takes them, and permuted here):

- SP (Tung & Mori, ICCV 2019, arXiv:1907.09682): per pair, `Q = A.view(b, -1)`,
  `G = F.normalize(Q @ Q.t())` (rows, L2), loss `(G_s - G_t).pow(2).mean()`
  (= ||G_t - G_s||_F^2 / b^2), pairs summed with their weights.
- KD (Hinton et al., arXiv:1503.02531): `F.kl_div(F.log_softmax(z_s / T),
  F.softmax(z_t / T), reduction="batchmean") * T * T`.
- AT (Zagoruyko & Komodakis, ICLR 2017, arXiv:1612.03928):
  `at(A) = F.normalize(A.pow(2).mean(1).view(b, -1))`, loss
  `(at(A_s) - at(A_t)).pow(2).mean()`, pairs summed with their weights.

Each case stores its inputs (float32), the loss and its gradients with
respect to every input (float64). Inputs come from a fixed NumPy seed, so a
rerun writes the same file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

OUT = Path(__file__).with_name("golden.npz")

# (b, teacher shapes (h, w, c) or (d,), student shapes, weights): several
# shapes, a batch of one, several pairs.
SP_CASES = [
    (8, [(4, 4, 16)], [(8, 8, 4)], [1.0]),
    (5, [(12,)], [(3, 3, 2)], [1.0]),
    (1, [(4, 4, 8)], [(2, 2, 3)], [1.0]),
    (6, [(4, 4, 8), (2, 2, 16)], [(4, 4, 2), (6,)], [3000.0, 0.5]),
    (16, [(2, 2, 32)], [(4, 4, 4)], [100.0]),
]
KD_CASES = [(8, 10, 4.0), (5, 3, 1.0), (1, 10, 2.0), (12, 100, 8.0)]
# (b, h, w, teacher channels, student channels per pair, weights)
AT_CASES = [
    (4, [(4, 4, 16, 8)], [1.0]),
    (1, [(3, 3, 4, 2)], [1.0]),
    (6, [(8, 8, 8, 3), (2, 2, 32, 16)], [1000.0, 250.0]),
]


def leaf(array: np.ndarray) -> torch.Tensor:
    """A float64 leaf tensor to take gradients with respect to."""
    return torch.tensor(array, dtype=torch.float64, requires_grad=True)


def to_research_layout(tensor: torch.Tensor) -> torch.Tensor:
    """NHWC (as stored) -> NCHW (as the research code takes it)."""
    return tensor.permute(0, 3, 1, 2) if tensor.dim() == 4 else tensor


def sp_term(fm_t: torch.Tensor, fm_s: torch.Tensor) -> torch.Tensor:
    b = fm_t.size(0)
    g_t = F.normalize(fm_t.reshape(b, -1) @ fm_t.reshape(b, -1).t(), p=2, dim=1)
    g_s = F.normalize(fm_s.reshape(b, -1) @ fm_s.reshape(b, -1).t(), p=2, dim=1)
    return (g_s - g_t).pow(2).mean()


def kd_term(z_t: torch.Tensor, z_s: torch.Tensor, temperature: float) -> torch.Tensor:
    return (
        F.kl_div(
            F.log_softmax(z_s / temperature, dim=1),
            F.softmax(z_t / temperature, dim=1),
            reduction="batchmean",
        )
        * temperature
        * temperature
    )


def at_map(fm: torch.Tensor) -> torch.Tensor:
    return F.normalize(fm.pow(2).mean(1).reshape(fm.size(0), -1), p=2, dim=1)


def at_term(fm_t: torch.Tensor, fm_s: torch.Tensor) -> torch.Tensor:
    return (at_map(fm_s) - at_map(fm_t)).pow(2).mean()


def gradients(loss: torch.Tensor, inputs: list[torch.Tensor]) -> list[np.ndarray]:
    return [g.detach().numpy() for g in torch.autograd.grad(loss, inputs)]


def main() -> None:
    rng = np.random.default_rng(20191027)  # ICCV 2019's first day
    out: dict[str, np.ndarray] = {}

    def draw(shape, relu=True):
        a = rng.standard_normal(shape).astype(np.float32)
        return np.maximum(a, 0) if relu else a  # feature maps come after a ReLU

    for k, (b, t_shapes, s_shapes, weights) in enumerate(SP_CASES):
        ts = [draw((b, *shape)) for shape in t_shapes]
        ss = [draw((b, *shape), relu=k % 2 == 0) for shape in s_shapes]
        t_in, s_in = [leaf(t) for t in ts], [leaf(s) for s in ss]
        loss = sum(
            w * sp_term(to_research_layout(t), to_research_layout(s))
            for w, t, s in zip(weights, t_in, s_in)
        )
        grads = gradients(loss, [*t_in, *s_in])
        out[f"sp{k}_weights"] = np.array(weights)
        out[f"sp{k}_loss"] = np.array(loss.item())
        for i, (t, s) in enumerate(zip(ts, ss)):
            out[f"sp{k}_teacher{i}"], out[f"sp{k}_student{i}"] = t, s
            out[f"sp{k}_grad_teacher{i}"] = grads[i]
            out[f"sp{k}_grad_student{i}"] = grads[len(ts) + i]

    for k, (b, classes, temperature) in enumerate(KD_CASES):
        z_t, z_s = 3.0 * draw((b, classes), False), 3.0 * draw((b, classes), False)
        t_in, s_in = leaf(z_t), leaf(z_s)
        loss = kd_term(t_in, s_in, temperature)
        grad_t, grad_s = gradients(loss, [t_in, s_in])
        out[f"kd{k}_teacher"], out[f"kd{k}_student"] = z_t, z_s
        out[f"kd{k}_temperature"] = np.array(temperature)
        out[f"kd{k}_loss"] = np.array(loss.item())
        out[f"kd{k}_grad_teacher"], out[f"kd{k}_grad_student"] = grad_t, grad_s

    for k, (b, pairs, weights) in enumerate(AT_CASES):
        ts = [draw((b, h, w, c_t)) for h, w, c_t, _ in pairs]
        ss = [draw((b, h, w, c_s), relu=False) for h, w, _, c_s in pairs]
        t_in, s_in = [leaf(t) for t in ts], [leaf(s) for s in ss]
        loss = sum(
            wt * at_term(to_research_layout(t), to_research_layout(s))
            for wt, t, s in zip(weights, t_in, s_in)
        )
        grads = gradients(loss, [*t_in, *s_in])
        out[f"at{k}_weights"] = np.array(weights)
        out[f"at{k}_loss"] = np.array(loss.item())
        for i, (t, s) in enumerate(zip(ts, ss)):
            out[f"at{k}_teacher{i}"], out[f"at{k}_student{i}"] = t, s
            out[f"at{k}_grad_teacher{i}"] = grads[i]
            out[f"at{k}_grad_student{i}"] = grads[len(ts) + i]

    out["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, torch {torch.__version__})")


if __name__ == "__main__":
    main()
