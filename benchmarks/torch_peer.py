"""keras-spkd's PyTorch peer: the same WideResNet and the same SP loss, timed.

`keras-spkd bench --torch` runs this script once per mode and reads its one
line of output, `torch <mode> bs=<b>: <ms> ms/step, <n> img/s`:

- `student`: one training step of the student (cross-entropy);
- `teacher`: one inference forward of the teacher (no gradients);
- `distill`: one SP-KD step: student forward, teacher forward under
  `no_grad`, cross-entropy + gamma * L_SP on the last group's output, update.

The models mirror `keras_spkd.models.wide_resnet`: a 3x3 stem of 16
channels, pre-activation basic blocks (BN-ReLU-conv-BN-ReLU-conv) in three
groups of widths 16k, 32k, 64k with strides 1, 2, 2, a 1x1 projection from
the pre-activation when the shape changes, then BN-ReLU, global average
pooling and a dense layer; BatchNorm with Keras's epsilon (1e-3) and momentum
(0.99). The SP loss mirrors `keras_spkd.similarity_preserving_loss`: rows of
G = Q Q^T divided by their L2 norm clamped at 1e-8, then the mean over the
b x b entries of (G_T - G_S)^2. The optimiser is the benchmark's: SGD 0.1 with
Nesterov momentum 0.9.

    pip install torch   # a CPU build is enough
    python benchmarks/torch_peer.py --mode distill --batch 128 --steps 20

Reference: Tung & Mori, ICCV 2019, arXiv:1907.09682.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.nn import functional as F

BN = {"eps": 1e-3, "momentum": 0.01}  # Keras: epsilon 1e-3, momentum 0.99 (= 1 - 0.01)
EPSILON = 1e-8  # keras_spkd.losses.EPSILON: the smallest row norm divided by


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3, plus the input or its 1x1 projection."""

    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(channels_in, **BN)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out, **BN)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        reshapes = channels_in != channels_out or stride != 1
        self.projection = (
            nn.Conv2d(channels_in, channels_out, 1, stride, 0, bias=False) if reshapes else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        residual = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        shortcut = x if self.projection is None else self.projection(pre)
        return shortcut + residual


class WideResNet(nn.Module):
    """WRN-depth-width; `forward` returns (group3 output, logits)."""

    def __init__(self, depth: int, width: int, classes: int = 10, channels: int = 3):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1; received {depth}.")
        blocks_per_group = (depth - 4) // 6
        self.stem = nn.Conv2d(channels, 16, 3, 1, 1, bias=False)
        layers, channels_in = [], 16
        for filters, stride in ((16 * width, 1), (32 * width, 2), (64 * width, 2)):
            for index in range(blocks_per_group):
                layers.append(PreActBlock(channels_in, filters, stride if index == 0 else 1))
                channels_in = filters
        self.blocks = nn.Sequential(*layers)
        self.final_bn = nn.BatchNorm2d(channels_in, **BN)
        self.logits = nn.Linear(channels_in, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        group3 = self.blocks(self.stem(x))
        pooled = F.relu(self.final_bn(group3)).mean(dim=(2, 3))
        return group3, self.logits(pooled)


def similarity_matrix(features: torch.Tensor) -> torch.Tensor:
    """G: Q Q^T of the flattened activations, each row divided by its (clamped) L2 norm."""
    q = features.reshape(features.shape[0], -1).float()
    gram = q @ q.t()
    squared_norm = gram.square().sum(dim=1, keepdim=True)
    return gram * torch.rsqrt(squared_norm.clamp_min(EPSILON * EPSILON))


def sp_loss(teacher_features: torch.Tensor, student_features: torch.Tensor) -> torch.Tensor:
    """L_SP = (1 / b^2) ||G_T - G_S||_F^2 for one pair of activation maps."""
    difference = similarity_matrix(teacher_features) - similarity_matrix(student_features)
    return difference.square().mean()


def _architecture(text: str) -> tuple[int, int]:
    depth, width = (int(v) for v in text.split(","))
    return depth, width


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("student", "teacher", "distill"), default="distill")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed epoch")
    parser.add_argument("--teacher", type=_architecture, default=(16, 2), help="DEPTH,WIDTH")
    parser.add_argument("--student", type=_architecture, default=(16, 1), help="DEPTH,WIDTH")
    parser.add_argument("--gamma", type=float, default=3000.0)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    shape = (args.batch, 3, args.image_size, args.image_size)
    batches = [
        (torch.rand(shape), torch.randint(0, args.classes, (args.batch,)))
        for _ in range(args.steps)
    ]
    student = WideResNet(*args.student, classes=args.classes).train()
    teacher = WideResNet(*args.teacher, classes=args.classes).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, nesterov=True)

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        if args.mode == "teacher":
            with torch.no_grad():
                teacher(images)
            return
        student_features, logits = student(images)
        loss = F.cross_entropy(logits, labels)
        if args.mode == "distill":
            with torch.no_grad():
                teacher_features, _ = teacher(images)
            loss = loss + args.gamma * sp_loss(teacher_features, student_features)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for images, labels in batches:  # warm-up epoch
        step(images, labels)
    start = time.perf_counter()
    for _ in range(2):
        for images, labels in batches:
            step(images, labels)
    seconds_per_step = (time.perf_counter() - start) / (2 * args.steps)
    print(
        f"torch {args.mode} bs={args.batch}: {seconds_per_step * 1000:.1f} ms/step, "
        f"{args.batch / seconds_per_step:.0f} img/s"
    )


if __name__ == "__main__":
    main()
