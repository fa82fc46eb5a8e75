"""Step-time benchmark: SPDistiller against its bound and its peers.

In one process, after warm-up, the median milliseconds per step of
(a) the student's plain `fit` step, (b) the teacher's inference step,
(c) `SPDistiller.fit` and (d) `keras.distillation.Distiller` with the same SP
loss; the ratios c / (a + b) (distillation overhead, 1.0 is the bound) and
d / c; the input pipeline's time per batch; the peak resident memory of each.
Configurations run round-robin so that machine noise hits them alike.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np

from keras_spkd._tf import tf
from keras_spkd.distiller import SPDistiller
from keras_spkd.losses import similarity_preserving_loss
from keras_spkd.models import build_model
from keras_spkd.terms import SimilarityPreservingDistillation


def _reset_peak_rss() -> None:
    with contextlib.suppress(OSError):  # Linux: "5" resets VmHWM, the peak RSS
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mib() -> float:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return float("nan")
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match[1]) / 1024 if match else float("nan")


@dataclass
class Measurement:
    """Per-step times of one configuration (milliseconds), and its peak RSS."""

    name: str
    batch_size: int
    step_ms: list[float] = field(default_factory=list)
    peak_rss_mib: float = 0.0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.step_ms)

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.median_ms * 1000

    def as_dict(self) -> dict:
        return {**asdict(self), "median_ms": self.median_ms, "images_per_s": self.images_per_s}


class _StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append((time.perf_counter() - self._start) * 1000)


def _dataset(batch: int, size: int, steps: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((batch * steps, size, size, 3), dtype=np.float32)
    labels = rng.integers(0, classes, batch * steps).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).cache()
    ds = ds.shuffle(batch * steps, seed=seed).batch(batch, drop_remainder=True)
    return ds.repeat().prefetch(tf.data.AUTOTUNE)


def _compile(model, jit: bool):
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    return model


def _time_fit(model, dataset, steps: int, into: Measurement, record: bool) -> None:
    timer = _StepTimer()
    _reset_peak_rss()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    into.peak_rss_mib = max(into.peak_rss_mib, _peak_rss_mib())
    if record:
        into.step_ms.extend(timer.times[1:])  # the first step creates the iterator


def _time_forward(forward, iterator, steps: int, into: Measurement, record: bool) -> None:
    _reset_peak_rss()
    for _ in range(steps):
        images, _ = next(iterator)
        start = time.perf_counter()
        keras.ops.convert_to_numpy(forward(images))
        if record:
            into.step_ms.append((time.perf_counter() - start) * 1000)
    into.peak_rss_mib = max(into.peak_rss_mib, _peak_rss_mib())


def _time_input(iterator, steps: int, into: Measurement, record: bool) -> None:
    for _ in range(steps):
        start = time.perf_counter()
        next(iterator)
        if record:
            into.step_ms.append((time.perf_counter() - start) * 1000)


def keras_peer(teacher, student, pair, gamma: float) -> keras.distillation.Distiller:
    """Keras's own distiller on the same SP term, built as our docs say.

    The term goes in a list (one object alone gets weight 1.0 whatever the
    weights say), with weight `gamma * w / (1 - w)` = gamma at Keras's
    default `w = 0.5`: the paper's objective, halved.
    """
    return keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=[SimilarityPreservingDistillation(*pair)],
        distillation_loss_weights=[gamma],
        student_loss_weight=0.5,
    )


def run_step_benchmark(
    teacher_arch: str = "wrn-16-2",
    student_arch: str = "wrn-16-1",
    pair: tuple[str, str] = ("group3", "group3"),
    batch_size: int = 128,
    image_size: int = 32,
    steps: int = 6,
    rounds: int = 4,
    jit: bool = True,
    gamma: float = 3000.0,
    classes: int = 10,
    teacher_dtype: str | None = None,
) -> dict:
    """Measures the four step times round-robin; the first round is warm-up.

    Args:
        teacher_arch: Zoo name of the teacher. Defaults to `"wrn-16-2"`.
        student_arch: Zoo name of the student. Defaults to `"wrn-16-1"`.
        pair: The tapped (teacher, student) layers. Defaults to group3.
        batch_size: b. Defaults to `128`.
        image_size: Square input side. Defaults to `32`.
        steps: Steps per round and configuration. Defaults to `6`.
        rounds: Rounds after the warm-up round. Defaults to `4`.
        jit: XLA-compile every step. Defaults to `True`.
        gamma: SP weight. Defaults to `3000.0`.
        classes: Number of logits. Defaults to `10`.
        teacher_dtype: Also time an SPDistiller whose teacher computes in
            this dtype (`"bfloat16"`, `"float16"`). Defaults to `None`.

    Returns:
        A dict: the measurements, their ratios and the settings.
    """
    shape = (image_size, image_size, 3)
    keras.utils.set_random_seed(0)
    teacher = build_model(teacher_arch, shape, classes, name="teacher")
    dataset = _dataset(batch_size, image_size, steps, classes)

    student = _compile(build_model(student_arch, shape, classes, name="student"), jit)
    distiller = _compile(
        SPDistiller(
            teacher,
            build_model(student_arch, shape, classes, name="student_sp"),
            [pair],
            gamma=gamma,
        ),
        jit,
    )
    keras_distiller = _compile(
        keras_peer(
            teacher, build_model(student_arch, shape, classes, name="student_keras"), pair, gamma
        ),
        jit,
    )
    fast = None
    if teacher_dtype:
        fast = _compile(
            SPDistiller(
                teacher,
                build_model(student_arch, shape, classes, name="student_fast"),
                [pair],
                gamma=gamma,
                teacher_dtype=teacher_dtype,
            ),
            jit,
        )
    teacher_forward = tf.function(lambda x: teacher(x, training=False), jit_compile=jit)
    iterator = iter(dataset)
    names = [
        "student_step",
        "teacher_forward",
        "spdistiller_step",
        "keras_distiller_step",
        "input_pipeline",
    ]
    if fast is not None:
        names.insert(3, f"spdistiller_step_{teacher_dtype}_teacher")
    m = {name: Measurement(name, batch_size) for name in names}
    for round_index in range(rounds + 1):
        record = round_index > 0
        _time_fit(student, dataset, steps, m["student_step"], record)
        _time_forward(teacher_forward, iterator, steps, m["teacher_forward"], record)
        _time_fit(distiller, dataset, steps, m["spdistiller_step"], record)
        if fast is not None:
            _time_fit(fast, dataset, steps, m[names[3]], record)
        _time_fit(keras_distiller, dataset, steps, m["keras_distiller_step"], record)
        _time_input(iterator, steps, m["input_pipeline"], record)
    a, b = m["student_step"].median_ms, m["teacher_forward"].median_ms
    c, d = m["spdistiller_step"].median_ms, m["keras_distiller_step"].median_ms
    ratios = {
        "spdistiller_over_bound": c / (a + b),
        "keras_distiller_over_spdistiller": d / c,
        "input_over_spdistiller": m["input_pipeline"].median_ms / c,
    }
    if fast is not None:
        f = m[names[3]].median_ms
        ratios["fast_teacher_over_bound"] = f / (a + b)
        ratios["keras_distiller_over_fast_teacher"] = d / f
    return {
        "settings": {
            "teacher": teacher_arch,
            "student": student_arch,
            "pair": list(pair),
            "batch_size": batch_size,
            "image_size": image_size,
            "steps": steps,
            "rounds": rounds,
            "jit": jit,
            "teacher_dtype": teacher_dtype,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "measurements": {name: value.as_dict() for name, value in m.items()},
        "ratios": ratios,
    }


# The project's own PyTorch peer (the same WideResNet and SP loss), in the source tree.
TORCH_PEER = Path(__file__).resolve().parents[1] / "benchmarks" / "torch_peer.py"


def find_torch_peer(script: str | Path | None = None) -> Path:
    """The peer script to run: `script`, or `benchmarks/torch_peer.py` of this checkout.

    Raises:
        FileNotFoundError: The script is not there (`benchmarks/` ships with the
            source, not with the wheel: pass the path of a checkout's copy).
    """
    path = Path(script) if script is not None else TORCH_PEER
    if not path.is_file():
        raise FileNotFoundError(
            2,
            "no PyTorch peer script (benchmarks/torch_peer.py ships with the source "
            "checkout, not the installed package; pass its path)",
            str(path),
        )
    return path


def run_torch_peer(
    script: str | Path | None,
    batch_size: int,
    steps: int,
    teacher: str,
    student: str,
    image_size: int = 32,
) -> dict:
    """Runs the PyTorch peer in each mode; returns ms/step and img/s per mode.

    Args:
        script: The peer script. `None`: `benchmarks/torch_peer.py` (`TORCH_PEER`).
        batch_size: b.
        steps: Steps per timed epoch.
        teacher: `"DEPTH,WIDTH"` of the teacher WideResNet, e.g. `"16,2"`.
        student: `"DEPTH,WIDTH"` of the student.
        image_size: Square input side. Defaults to `32`.
    """
    script = find_torch_peer(script)
    results = {}
    for mode in ("student", "teacher", "distill"):
        out = subprocess.run(
            [
                sys.executable,
                str(script),
                "--mode",
                mode,
                "--batch",
                str(batch_size),
                "--steps",
                str(steps),
                "--teacher",
                teacher,
                "--student",
                student,
                *(["--image-size", str(image_size)] if image_size != 32 else []),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=3600,
        ).stdout
        match = re.search(r"([\d.]+) ms/step, (\d+) img/s", out)
        if not match:
            raise ValueError(f"Unexpected output from {script}: {out!r}")
        results[mode] = {"ms_per_step": float(match[1]), "images_per_s": float(match[2])}
    return results


def sp_loss_scaling(
    batch_sizes=(64, 128, 256, 512, 1024),
    dims=(1024, 4096, 16384, 65536),
    repeats: int = 3,
) -> list[dict]:
    """Times the SP loss alone (forward + backward) and its peak memory.

    Returns one row per (b, d): median milliseconds, the time per b^2 d
    (constant if the cost is O(b^2 d)), and the peak RSS growth over the
    inputs, against (b^2 + b d) float32 words.
    """
    rows = []

    @tf.function
    def loss_and_gradient(teacher, student):
        with tf.GradientTape() as tape:
            tape.watch(student)
            loss = similarity_preserving_loss(teacher, student)
        return loss, tape.gradient(loss, student)

    for b in batch_sizes:
        for d in dims:
            rng = np.random.default_rng(0)
            teacher = tf.constant(rng.random((b, d), dtype=np.float32))
            student = tf.constant(rng.random((b, d), dtype=np.float32))
            keras.ops.convert_to_numpy(loss_and_gradient(teacher, student)[0])  # trace
            _reset_peak_rss()
            baseline = _peak_rss_mib()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                loss, grad = loss_and_gradient(teacher, student)
                grad.numpy()
                times.append((time.perf_counter() - start) * 1000)
            ms = statistics.median(times)
            rows.append(
                {
                    "b": b,
                    "d": d,
                    "ms": ms,
                    "ns_per_b2d": ms * 1e6 / (b * b * d),
                    "peak_extra_mib": _peak_rss_mib() - baseline,
                    "b2_plus_bd_mib": (b * b + b * d) * 4 / 2**20,
                }
            )
    return rows


def format_report(result: dict, torch: dict | None = None) -> str:
    """A plain-text table of a `run_step_benchmark` result."""
    s = result["settings"]
    lines = [
        f"{s['teacher']} -> {s['student']}, batch {s['batch_size']}, "
        f"{s['image_size']}x{s['image_size']}x3, XLA {'on' if s['jit'] else 'off'}, "
        f"median of {s['rounds']} rounds x {s['steps'] - 1}-{s['steps']} steps",
        f"{'':36}{'ms/step':>10}{'img/s':>10}{'peak RSS MiB':>14}",
    ]
    for name, m in result["measurements"].items():
        lines.append(
            f"{name:36}{m['median_ms']:10.1f}{m['images_per_s']:10.0f}{m['peak_rss_mib']:14.0f}"
        )
    r = result["ratios"]
    lines += [
        f"SPDistiller / (student step + teacher forward) = {r['spdistiller_over_bound']:.3f}",
        f"keras.distillation.Distiller / SPDistiller     = "
        f"{r['keras_distiller_over_spdistiller']:.3f}",
        f"input pipeline / SPDistiller step              = {r['input_over_spdistiller']:.4f}",
    ]
    if "fast_teacher_over_bound" in r:
        lines += [
            f"SPDistiller ({s['teacher_dtype']} teacher) / bound       = "
            f"{r['fast_teacher_over_bound']:.3f}",
            f"keras.distillation.Distiller / SPDistiller ({s['teacher_dtype']} teacher) = "
            f"{r['keras_distiller_over_fast_teacher']:.3f}",
        ]
    if torch:
        ours = result["measurements"]["spdistiller_step"]["images_per_s"]
        lines.append(
            f"PyTorch peer distill: {torch['distill']['images_per_s']:.0f} img/s; "
            f"SPDistiller / PyTorch = {ours / torch['distill']['images_per_s']:.3f}"
        )
    return "\n".join(lines)


def benchmark(
    teacher_arch: str = "wrn-16-2",
    student_arch: str = "wrn-16-1",
    pair: str = "group3:group3",
    batch_size: int = 128,
    image_size: int = 32,
    steps: int = 6,
    rounds: int = 5,
    jit: bool = False,
    teacher_dtype: str | None = None,
    torch: str | Path | None | bool = False,
) -> tuple[dict, dict | None]:
    """The step benchmark and, unless `torch` is False, the PyTorch peer.

    `torch=None` (or `""`) runs this checkout's `benchmarks/torch_peer.py`;
    a path runs that script. Returns `(result, torch figures or None)`.
    """
    result = run_step_benchmark(
        teacher_arch,
        student_arch,
        tuple(pair.split(":")),
        batch_size,
        image_size,
        steps,
        rounds,
        jit,
        teacher_dtype=teacher_dtype,
    )
    peer = None
    if torch is not False:
        peer = run_torch_peer(
            torch or None,
            batch_size,
            steps * rounds,
            teacher_arch.removeprefix("wrn-").replace("-", ","),
            student_arch.removeprefix("wrn-").replace("-", ","),
        )
        result["torch"] = peer
    return result, peer
