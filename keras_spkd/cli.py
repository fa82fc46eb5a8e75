"""`keras-spkd`: flags -> `ExperimentConfig` -> `keras_spkd.experiment` -> printing.

Every training decision lives in `keras_spkd.experiment`; this file only maps
flags onto config fields (one to one) and prints results. The project's own
input errors (`keras_spkd.errors.SPKDError`) and plain OS errors of a bad
path print one line and exit 2; Ctrl-C prints one line and exits 130 (the run
directory stays resumable); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import re
import sys
from pathlib import Path

# `import keras_spkd` (first, by Python, for any module of the package) has
# quieted TensorFlow already when this process is the `keras-spkd` program
# (see `keras_spkd._quiet`).
from keras_spkd import (
    __version__,
    experiment,  # called through the module: tests replace its functions
)
from keras_spkd._quiet import quiet
from keras_spkd.errors import ConfigError, NonFiniteLossError, RunDirectoryError, SPKDError
from keras_spkd.experiment.config import merge, read_settings
from keras_spkd.experiment.rundir import hold
from keras_spkd.experiment.session import honour_interrupts
from keras_spkd.report import write_report

logger = logging.getLogger("keras_spkd")
PATH_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)
TFLITE_HELP = "TFLite exports: float, dynamic, int8 (none: give the flag no values)"


def build_config(args: argparse.Namespace, distilling: bool = True) -> experiment.ExperimentConfig:
    """The settings of a command: preset < `--config` file < flags, field by field.

    With `--resume` and no `--config`, the run directory's saved settings are
    the file, so a plain `--resume` continues the run as it was started; the
    merged settings are then compared with the saved ones by the run
    directory (and refused where they differ).
    """
    base = None
    if getattr(args, "config", None):
        base = read_settings(args.config)
    elif getattr(args, "resume", False):
        base = experiment.RunDirectory.saved_config(args.out)
    flags = {  # a config flag not given is None: the file's value, or the preset's
        k: v
        for k, v in vars(args).items()
        if k in experiment.ExperimentConfig.field_names() and v is not None
    }
    if not distilling:  # evaluate / export: no SP term, so any b >= 1 will do
        flags.setdefault("gamma", 0.0)
    return merge(base, flags)


def cmd_distill(args) -> int:
    summary = experiment.run_distill(build_config(args), out=args.out, resume=args.resume)
    print(summary.table)
    export = summary.summary.get("export", {})
    print(f"Run directory: {summary.out}  (SavedModel: {export.get('saved_model', '-')})")
    print(f"Report: {Path(summary.out) / 'report.html'}")
    return 0


COMPARE_WEIGHTS = {"kd_weight": 1.0, "at_weight": 1000.0}  # where neither file nor flag sets one


def cmd_compare(args) -> int:
    config = build_config(args)
    unset = {  # a flag is kept as given, 0 included (a `kd` method then says it needs > 0)
        field: value
        for field, value in COMPARE_WEIGHTS.items()
        if getattr(args, field) is None and not getattr(config, field)
    }
    result = experiment.run_compare(
        config.replace(**unset) if unset else config,
        methods=args.methods,
        seeds=args.seeds,
        out=args.out,
        privileged=args.privileged,
        baselines=args.baseline,
        teachers=args.teachers,
    )
    print(result.table)
    print(f"Per-run results: {Path(result.out) / 'results.csv'}")
    return 0


def cmd_tune(args) -> int:
    result = experiment.run_search(
        build_config(args),
        tuner=args.tuner,
        max_trials=args.max_trials,
        out=args.out,
        gamma_range=(args.gamma_min, args.gamma_max),
        pair_candidates=args.pair_candidates,
        kd_weights=args.kd_weights,
        objective=args.objective,
        executions_per_trial=args.executions_per_trial,
        overwrite=args.overwrite,
        method=args.method,
        kd_weight_range=tuple(args.kd_weight_range),
        temperature_range=tuple(args.temperature_range),
    )
    if not result.best:
        print("Worker: search finished; the chief reports the results.")
        return 0

    def number(value, spec=".4g"):
        return "-" if value is None else format(value, spec)

    print(f"| trial | gamma | pair | kd_weight | T | {args.objective} |\n|---|---|---|---|---|---|")
    for row in result.trials:
        print(
            f"| {row['trial']} | {number(row['gamma'])} | {row['pair'] or '-'} "
            f"| {number(row['kd_weight'])} | {number(row['temperature'])} "
            f"| {number(row['objective'], '.4f')} |"
        )
    print(
        f"No distillation (gamma = 0) on the tuning seeds {result.seeds}: "
        f"{args.objective} {number(result.reference.get('objective'), '.4f')}; "
        f"best trial {number(result.best_objective, '.4f')}."
    )
    print(
        f"Best ({result.method}): {', '.join(f'{k}={v}' for k, v in result.best.items())}; "
        f"config for `keras-spkd --config {Path(result.out) / 'best_config.json'} distill`, "
        f"method for compare in {Path(result.out) / 'best_method.json'}"
    )
    return 0


def cmd_teacher(args) -> int:
    config = build_config(args)
    accuracy = experiment.run_teacher(config, args.out, overwrite=args.overwrite)
    print(f"Teacher {config.teacher_arch}: test accuracy {accuracy:.2%}; saved to {args.out}")
    return 0


def cmd_export(args) -> int:
    print(
        json.dumps(experiment.run_export(args.model, build_config(args, False), args.out), indent=2)
    )
    return 0


def cmd_evaluate(args) -> int:
    print(json.dumps(experiment.run_evaluate(args.model, build_config(args, False))))
    return 0


def cmd_predict(args) -> int:
    for row in experiment.run_predict(args.model, args.files):
        print(f"{row['file']}\t{row['class']}\t{row['probability']:.4f}")
    return 0


def cmd_layers(args) -> int:
    print(experiment.run_layers(args.model))
    return 0


def cmd_report(args) -> int:
    if Path(args.run_dir).exists() and not Path(args.run_dir).is_dir():
        raise RunDirectoryError(
            f"{args.run_dir!r} is a file; report takes a run directory (distill's --out)."
        )
    if not Path(args.run_dir).is_dir():
        raise RunDirectoryError(f"Run directory {args.run_dir!r} does not exist.")
    try:
        with hold(args.run_dir):
            page, markdown = write_report(args.run_dir)
    except (ValueError, KeyError, TypeError) as error:  # files changed by hand, or another kind
        raise RunDirectoryError(f"Cannot report on {args.run_dir!r}: {error}") from error
    print(f"Report: {page} (markdown: {markdown})")
    if not (Path(args.run_dir) / "summary.json").is_file():
        print(
            f"Note: {args.run_dir} is unfinished (no summary.json); the report shows what it "
            "recorded so far. Rerun its distill command with --resume to continue it."
        )
    return 0


def cmd_bench(args) -> int:
    from keras_spkd import bench  # the timing harness: only this command loads it

    for name, low in (("steps", 2), ("rounds", 1), ("batch_size", 2), ("image_size", 8)):
        if getattr(args, name) < low:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be >= {low}; received {getattr(args, name)}.")
    if len(args.pair.split(":")) != 2 or not all(args.pair.split(":")):
        raise ConfigError(f"--pair expects TEACHER_LAYER:STUDENT_LAYER; received {args.pair!r}.")
    if args.json:
        Path(args.json).touch()  # a bad path fails now, not after minutes of timing

    if args.torch is not None:  # before minutes of timing
        args.torch = bench.find_torch_peer(args.torch or None)
    if args.sp_scaling:
        rows = bench.sp_loss_scaling(repeats=args.rounds)
        print(
            f"{'b':>6}{'d':>8}{'ms':>10}{'ns/(b^2 d)':>12}{'peak +MiB':>11}{'(b^2+bd)*4 MiB':>16}"
        )
        for r in rows:
            print(
                f"{r['b']:6}{r['d']:8}{r['ms']:10.1f}{r['ns_per_b2d']:12.4f}"
                f"{r['peak_extra_mib']:11.1f}{r['b2_plus_bd_mib']:16.1f}"
            )
        result = {"sp_loss_scaling": rows}
    else:
        result, torch = bench.benchmark(
            args.teacher_arch,
            args.student_arch,
            args.pair,
            args.batch_size,
            args.image_size,
            args.steps,
            args.rounds,
            args.jit,
            teacher_dtype=args.teacher_dtype,
            torch=False if args.torch is None else args.torch,
        )
        print(bench.format_report(result, torch))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def _seeds(text: str) -> int | list[int]:
    """`--seeds`: a count (`5`: seeds 0-4), a range (`3-7`) or a list (`0,4,9`)."""
    text = text.strip()
    if re.fullmatch(r"[0-9]+", text):
        return int(text)
    if re.fullmatch(r"[0-9]+(,[0-9]+)+", text):
        return [int(part) for part in text.split(",")]
    span = re.fullmatch(r"([0-9]+)-([0-9]+)", text)
    if span and int(span[1]) <= int(span[2]):
        return list(range(int(span[1]), int(span[2]) + 1))
    why = "a range runs from low to high" if span else "expected"
    raise argparse.ArgumentTypeError(
        f"{why}: a count (5), a range (3-7) or a list (0,4,9); received {text!r}"
    )


def _data_flags(parser, training: bool = True) -> None:
    """Where the data comes from; `training=False` (evaluate, export) leaves out the flags
    that only change training (augmentation, a training subset)."""
    parser.add_argument("--dataset", help="digits (default), fashion_mnist, or a TFDS name")
    parser.add_argument("--data-dir", help="prepared data folder (TFDS, Fashion-MNIST)")
    parser.add_argument(
        "--download", action="store_const", const=True, help="allow downloads (needs a network)"
    )
    parser.add_argument("--data", help="your data: an image folder (DIR/<class>/*) or an .npz file")
    parser.add_argument(
        "--image-size", type=int, nargs="+", metavar="N", help="resize to H W (or N N)"
    )
    if training:
        parser.add_argument(
            "--augment", choices=("none", "crop", "crop_flip"), help="training augmentation"
        )
        parser.add_argument(
            "--train-images",
            type=int,
            metavar="N",
            help="train on a stratified subset of N training images (fixed by the split seed)",
        )
    parser.add_argument("--batch-size", type=int, help="mini-batch size b")
    parser.add_argument("--seed", type=int)


def _training_flags(parser, teacher_only: bool = False) -> None:
    parser.add_argument("--optimizer", choices=("sgd", "adam", "adamw"))
    parser.add_argument("--lr", type=float, help="initial learning rate")
    parser.add_argument(
        "--schedule",
        choices=("step", "cosine", "constant"),
        help="learning-rate schedule (step: x0.2 at 30/60/80%%)",
    )
    parser.add_argument("--weight-decay", type=float, help="L2 weight decay")
    parser.add_argument("--jit", action=argparse.BooleanOptionalAction, help="XLA-compile the step")
    parser.add_argument(
        "--strategy",
        choices=("default", "mirrored", "multi_worker"),
        help="tf.distribute strategy (multi_worker reads TF_CONFIG)",
    )
    parser.add_argument("--teacher", help="trained teacher (.keras); default: cached")
    parser.add_argument(
        "--teacher-arch",
        help="teacher to train: zoo name, .keras file, 'MobileNetV2()' or module:function",
    )
    parser.add_argument(
        "--teacher-preprocessing",
        help="none, a keras.applications module (mobilenet_v2) or scale=S,offset=O",
    )
    if teacher_only:
        parser.add_argument("--teacher-epochs", "--epochs", type=int)
        return
    parser.add_argument("--teacher-epochs", type=int)
    parser.add_argument(
        "--student-arch",
        "--student",
        dest="student_arch",
        help="zoo name, .keras file, 'MobileNetV2(alpha=0.35)' or module:function",
    )
    parser.add_argument("--student-preprocessing", help="as --teacher-preprocessing")
    parser.add_argument(
        "--keep-student-weights",
        action="store_const",
        const=True,
        help="a student file's weights start every seed (default: seeds > 0 re-initialise)",
    )
    parser.add_argument("--epochs", type=int, help="student epochs")


def _distill_flags(parser, comparing: bool = False) -> None:
    parser.add_argument("--pairs", help="TEACHER:STUDENT[,...] or auto")
    parser.add_argument("--gamma", type=float, help="SP weight gamma")
    fallback = " (default: --config's, else {})" if comparing else ""
    parser.add_argument("--kd-weight", type=float, help="KD weight" + fallback.format(1))
    parser.add_argument("--temperature", type=float, help="KD temperature")
    if comparing:
        parser.add_argument("--at-weight", type=float, help="AT beta" + fallback.format(1000))
        parser.add_argument("--at-pairs", help="AT pairs (equal spatial sizes)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-spkd",
        description="Similarity-Preserving Knowledge Distillation (Tung & Mori, ICCV 2019) "
        "for Keras. Run `keras-spkd distill` for the embedded digits demo.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "--config",
        help="JSON file of ExperimentConfig fields, or a run's config.json (flags override)",
    )
    parser.add_argument("--verbose", action="store_true", help="keep TensorFlow's own logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, func, text):
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(func=func)
        return sub

    distill = command("distill", cmd_distill, "student alone vs with SP; table, export, report")
    _data_flags(distill), _training_flags(distill), _distill_flags(distill)
    distill.add_argument("--out", default="runs/distill", help="run directory")
    distill.add_argument("--resume", action="store_true", help="continue the run in --out")
    distill.add_argument("--tflite", nargs="*", help=TFLITE_HELP)

    teacher = command("teacher", cmd_teacher, "train and save a teacher")
    _data_flags(teacher), _training_flags(teacher, teacher_only=True)
    teacher.add_argument("--out", default="teacher.keras", help="where to save it (.keras)")
    teacher.add_argument(
        "--overwrite", action="store_true", help="replace --out and any interrupted training"
    )

    export = command("export", cmd_export, "SavedModel + TFLite of a student, checked")
    export.add_argument("model")
    _data_flags(export, training=False)
    export.add_argument("--out", default="export")
    export.add_argument("--tflite", nargs="*", default=["float", "dynamic"], help=TFLITE_HELP)

    evaluate = command("evaluate", cmd_evaluate, "test accuracy of a saved model")
    evaluate.add_argument("model")
    _data_flags(evaluate, training=False)

    compare = command("compare", cmd_compare, "alone vs KD, AT, SP and sums, over seeds")
    _data_flags(compare), _training_flags(compare), _distill_flags(compare, comparing=True)
    compare.add_argument(
        "--methods",
        help="alone, '+'-joined terms of sp, kd, at, pkg.module:Class[@weight]; or a .json list",
    )
    compare.add_argument(
        "--seeds",
        type=_seeds,
        default=5,
        metavar="N|A-B|A,B,...",
        help="seeds 0..N-1 (default 5), a range A-B (7-7: seed 7 alone) or a list A,B",
    )
    compare.add_argument(
        "--baseline", action="append", help="pair methods against it (repeatable, or a,b)"
    )
    compare.add_argument("--teachers", type=int, default=1, help="teachers (seeds) to spread over")
    compare.add_argument("--privileged", action="store_true", help="student sees the top half")
    compare.add_argument("--out", default="runs/compare")

    tune = command("tune", cmd_tune, "Keras Tuner search of gamma (pair, KD weight)")
    _data_flags(tune), _training_flags(tune), _distill_flags(tune)
    tune.add_argument("--pair-candidates", help="pairs to choose from, T:S,T:S,... or auto")
    tune.add_argument("--gamma-min", type=float, default=10.0)
    tune.add_argument("--gamma-max", type=float, default=1e4)
    tune.add_argument("--kd-weights", type=float, nargs="*", help="KD weights to choose from")
    tune.add_argument("--objective", default="val_accuracy", help="logged metric to optimise")
    tune.add_argument("--tuner", choices=("random", "bayesian", "hyperband"), default="bayesian")
    tune.add_argument("--max-trials", type=int, default=10)
    tune.add_argument(
        "--executions-per-trial", type=int, default=2, help="fits per trial (tuning seeds 1000+)"
    )
    tune.add_argument(
        "--method", choices=("sp", "kd", "sp+kd"), default="sp", help="terms searched"
    )
    tune.add_argument(
        "--kd-weight-range", type=float, nargs=2, default=(0.1, 10.0), metavar=("LOW", "HIGH")
    )
    tune.add_argument(
        "--temperature-range", type=float, nargs=2, default=(1.0, 16.0), metavar=("LOW", "HIGH")
    )
    tune.add_argument("--out", default="runs/tune", help="search directory")
    tune.add_argument("--overwrite", action="store_true", help="start afresh, do not resume")

    predict = command("predict", cmd_predict, "class and probability of image files (export)")
    predict.add_argument("model", help="an exported SavedModel folder (export/saved_model)")
    predict.add_argument("files", nargs="+", help="PNG or JPEG images")

    layers = command("layers", cmd_layers, "a saved model's tappable layers, stage ends marked")
    layers.add_argument("model")

    report = command("report", cmd_report, "a run directory's HTML report (and markdown)")
    report.add_argument("run_dir")

    bench = command("bench", cmd_bench, "time a distiller step against its bound and peers")
    bench.add_argument("--teacher-arch", default="wrn-16-2")
    bench.add_argument("--student-arch", default="wrn-16-1")
    bench.add_argument("--pair", default="group3:group3", help="TEACHER_LAYER:STUDENT_LAYER")
    bench.add_argument("--batch-size", type=int, default=128)
    bench.add_argument("--image-size", type=int, default=32)
    bench.add_argument("--steps", type=int, default=6, help="steps per round and config")
    bench.add_argument("--rounds", type=int, default=5, help="timed rounds after a warm-up")
    bench.add_argument(
        "--jit", action=argparse.BooleanOptionalAction, default=False, help="XLA-compile every step"
    )
    bench.add_argument(
        "--teacher-dtype",
        choices=("bfloat16", "float16"),
        help="also time a distiller whose teacher computes in this dtype",
    )
    bench.add_argument(
        "--torch",
        nargs="?",
        const="",
        help="also run the PyTorch peer (default: this checkout's benchmarks/torch_peer.py)",
    )
    bench.add_argument(
        "--sp-scaling",
        action="store_true",
        help="time the SP loss alone over b = 64..1024, d = 1k..64k",
    )
    bench.add_argument("--json", help="write the figures to this JSON file")
    return parser


def _setup_logging() -> None:
    mine = [h for h in logger.handlers if h.get_name() == "keras-spkd-cli"]
    if not mine:
        handler = logging.StreamHandler()
        handler.set_name("keras-spkd-cli")
        handler.setFormatter(logging.Formatter("keras-spkd: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        mine = [handler]
    mine[0].stream = sys.stderr  # this call's (main may run many times in one process)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    quiet(args.verbose)
    _setup_logging()
    with honour_interrupts():
        return _run(args)


def _run(args) -> int:
    """Runs the command; errors the user can fix become one line and exit code 2."""
    try:
        return args.func(args)
    except KeyboardInterrupt:
        how = (
            "rerun with --resume to continue"
            if hasattr(args, "resume")
            else "rerun the same command to continue where it stopped"
        )
        print(f"keras-spkd: interrupted; {how}.", file=sys.stderr)
        return 130
    except NonFiniteLossError as error:
        print(f"keras-spkd: error: {error}", file=sys.stderr)
        return 1
    except (SPKDError, *PATH_ERRORS) as error:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        if isinstance(error, OSError) and error.filename and error.strerror:
            text = f"{error.strerror}: {error.filename}"
        print(f"keras-spkd: error: {text}", file=sys.stderr)
        return 2
    except Exception as error:
        if not _disk_full(error):
            raise
        where = getattr(error, "filename", None) or "the output folder"
        print(
            f"keras-spkd: error: no space left on the device while writing {where}; free "
            "some space and rerun (with --resume for a run directory: it stays resumable).",
            file=sys.stderr,
        )
        return 2


def _disk_full(error: BaseException) -> bool:
    """ENOSPC, as Python raises it, or as TensorFlow and h5py word it in their own errors."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


if __name__ == "__main__":
    sys.exit(main())
