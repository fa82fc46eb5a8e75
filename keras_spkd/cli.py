"""`keras-spkd` command line: teacher, distill, export, evaluate.

`keras-spkd distill` with no arguments is the main job on the embedded
digits: a teacher (trained, or reused from the cache), the student trained
alone and with SP from the same initialisation, their test accuracies, the
SP student exported and a picture of the similarity matrices.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from keras_spkd import __version__

logger = logging.getLogger("keras_spkd")

PHASES = ("alone", "sp")
DIGITS_DEFAULTS = {
    "teacher_arch": "digits-cnn-32",
    "student_arch": "digits-cnn-8",
    "pairs": "group2:group2",
    "batch_size": 64,
    "lr": 0.05,
    "epochs": 30,
    "teacher_epochs": 40,
    "gamma": 100.0,
    "weight_decay": 0.0,
}
TFDS_DEFAULTS = {
    "teacher_arch": "wrn-16-2",
    "student_arch": "wrn-16-1",
    "pairs": "group3:group3",
    "batch_size": 128,
    "lr": 0.1,
    "epochs": 200,
    "teacher_epochs": 200,
    "gamma": 3000.0,
    "weight_decay": 5e-4,
}


class UsageError(ValueError):
    """Bad command-line input: reported in one line with exit code 2."""


def _cache_dir() -> Path:
    return Path(os.environ.get("KERAS_SPKD_CACHE", Path.home() / ".cache" / "keras-spkd"))


def _verbose() -> int:
    return 1 if sys.stdout.isatty() else 2


def _parse_pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    for item in text.split(","):
        teacher, sep, student = item.strip().partition(":")
        if not sep or not teacher or not student:
            raise UsageError(
                f"--pairs expects TEACHER_LAYER:STUDENT_LAYER[,...]; received {text!r}."
            )
        pairs.append((teacher, student))
    return pairs


def _fill_defaults(args: argparse.Namespace) -> argparse.Namespace:
    defaults = DIGITS_DEFAULTS if args.dataset == "digits" else TFDS_DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def _load_data(args):
    from keras_spkd.data import load_dataset

    return load_dataset(
        args.dataset,
        batch_size=args.batch_size,
        data_dir=args.data_dir,
        download=args.download,
        seed=args.seed,
    )


def _build(arch: str, data, args, name: str):
    from keras_spkd.models import build_model

    return build_model(
        arch, data.input_shape, data.num_classes, weight_decay=args.weight_decay, name=name
    )


def _optimizer(args, steps_per_epoch: int, epochs: int):
    import keras

    total = max(1, steps_per_epoch * epochs)
    if args.schedule == "step":  # x0.2 at 30%, 60%, 80% (60/120/160 of 200 epochs)
        bounds = [int(total * f) for f in (0.3, 0.6, 0.8)]
        lr = keras.optimizers.schedules.PiecewiseConstantDecay(
            bounds, [args.lr * 0.2**i for i in range(4)]
        )
    elif args.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(args.lr, total)
    else:
        lr = args.lr
    return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)


def _compile(model, args, steps_per_epoch: int, epochs: int):
    import keras

    model.compile(
        optimizer=_optimizer(args, steps_per_epoch, epochs),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=args.jit,
    )


def _steps(dataset) -> int:
    return int(dataset.cardinality())


def _trainable(model):
    """The model itself, or under multi-worker a wrapper whose fit() works there."""
    import tensorflow as tf

    from keras_spkd.distiller import FitUnderStrategy

    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return FitUnderStrategy(model)
    return model


def _accuracy(model, dataset) -> float:
    import keras

    model = _trainable(model)
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    logs = model.evaluate(dataset, verbose=0, return_dict=True)
    return float(np.ravel(logs["accuracy"])[0])


def _train_teacher(args, data, path: Path):
    import keras

    # Reseed: the teacher (and so the cache) must not depend on which command
    # trained it or on what that command built before.
    keras.utils.set_random_seed(args.seed)
    data = _load_data(args)
    teacher = _build(args.teacher_arch, data, args, "teacher")
    trainer = _trainable(teacher)
    _compile(trainer, args, _steps(data.train), args.teacher_epochs)
    logger.info("Training the teacher %s for %d epochs", args.teacher_arch, args.teacher_epochs)
    trainer.fit(
        data.train,
        validation_data=data.val,
        epochs=args.teacher_epochs,
        shuffle=False,
        verbose=_verbose(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    teacher.save(path)
    return teacher


def _teacher(args, data):
    import keras

    if args.teacher:
        path = Path(args.teacher)
        if not path.exists():
            raise UsageError(
                f"Teacher file {str(path)!r} does not exist; train one with "
                "`keras-spkd teacher --out PATH` or omit --teacher."
            )
        return keras.saving.load_model(path), str(path)
    path = (
        _cache_dir()
        / "teachers"
        / (f"{args.dataset}-{args.teacher_arch}-e{args.teacher_epochs}-s{args.seed}.keras")
    )
    if path.exists():
        logger.info("Reusing the cached teacher %s", path)
        return keras.saving.load_model(path), str(path)
    return _train_teacher(args, data, path), str(path)


def _validate_pairs(teacher, student, pairs):
    from keras_spkd.features import build_feature_extractor

    build_feature_extractor(teacher, [t for t, _ in pairs], role="teacher")
    build_feature_extractor(student, [s for _, s in pairs], role="student")


def _trim_history(csv_path: Path, backup_dir: Path) -> None:
    """Keeps the CSV rows of the epochs the backup holds (none lost, none twice)."""
    metadata = backup_dir / "training_metadata.json"
    done = json.loads(metadata.read_text())["epoch"] if metadata.exists() else 0
    if not csv_path.exists():
        return
    with csv_path.open() as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [row for row in rows[1:] if row and int(row[0]) < done]
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows(kept if len(kept) > 1 else [])


def _usable_backup(backup_dir: Path) -> None:
    """Drops a backup whose only weights file a kill left half-written."""
    import h5py

    weights = backup_dir / "latest.weights.h5"
    if not weights.exists() or (backup_dir / "latest.weights.h5.bkp").exists():
        return  # BackupAndRestore falls back to the .bkp copy by itself
    try:
        h5py.File(weights, "r").close()
    except OSError:
        logger.warning("The backup in %s was cut off mid-write; restarting this phase", backup_dir)
        for path in backup_dir.iterdir():
            path.unlink()


def _run_phase(phase: str, args, data, teacher, run_dir: Path) -> dict:
    import keras

    from keras_spkd.distiller import SPDistiller

    phase_dir = run_dir / phase
    result_path = phase_dir / "result.json"
    if result_path.exists():
        logger.info("Phase %r already finished; reusing its result", phase)
        return json.loads(result_path.read_text())
    phase_dir.mkdir(parents=True, exist_ok=True)
    # Fresh pipelines with the same seeds: every phase sees the same data order,
    # whatever iterated the shared ones before (a teacher trained in this process).
    data = _load_data(args)
    student = _build(args.student_arch, data, args, "student")
    student.load_weights(run_dir / "student_init.weights.h5")
    if phase == "sp":
        model = SPDistiller(
            teacher,
            student,
            _parse_pairs(args.pairs),
            gamma=args.gamma,
            kd_weight=args.kd_weight,
            temperature=args.temperature,
            cross_replica=True,  # the same objective on any number of devices
        )
    else:
        model = _trainable(student)
    _compile(model, args, _steps(data.train), args.epochs)
    csv_path, backup_dir = phase_dir / "history.csv", phase_dir / "backup"
    if backup_dir.exists():
        _usable_backup(backup_dir)
    _trim_history(csv_path, backup_dir)
    callbacks = [  # CSV row first, then the backup: a kill between them repeats no row
        keras.callbacks.CSVLogger(str(csv_path), append=True),
        keras.callbacks.BackupAndRestore(str(backup_dir), double_checkpoint=True),
    ]
    if phase == "sp":
        from keras_spkd.plots import SimilarityMonitor

        callbacks.append(
            SimilarityMonitor(
                *data.probe,
                every_n_epochs=max(1, args.epochs // 10),
                out_dir=phase_dir / "similarity",
                log_dir=phase_dir / "tensorboard",
            )
        )
    logger.info(
        "Training the student %s (%s) for %d epochs",
        args.student_arch,
        "alone" if phase == "alone" else f"with SP, gamma={args.gamma}",
        args.epochs,
    )
    start = time.perf_counter()
    model.fit(
        data.train,
        validation_data=data.val,
        epochs=args.epochs,
        callbacks=callbacks,
        shuffle=False,
        verbose=_verbose(),
    )
    seconds = time.perf_counter() - start
    logs = model.evaluate(data.test, verbose=0, return_dict=True)
    student.save(phase_dir / "student.keras")
    result = {
        "test_accuracy": float(np.ravel(logs["accuracy"])[0]),
        "fit_seconds": round(seconds, 1),
        "epochs": args.epochs,
    }
    result_path.write_text(json.dumps(result, indent=2))
    return result


def _heat_map(args, data, teacher, run_dir: Path) -> str:
    import keras

    from keras_spkd.features import build_feature_extractor
    from keras_spkd.plots import plot_similarity_matrices

    t_layer, s_layer = _parse_pairs(args.pairs)[0]
    images, labels = data.probe
    panels = {f"teacher {t_layer}": build_feature_extractor(teacher, [t_layer], False)(images)}
    for phase, title in (("alone", "student alone"), ("sp", "SP student")):
        student = keras.saving.load_model(run_dir / phase / "student.keras")
        panels[f"{title} {s_layer}"] = build_feature_extractor(student, [s_layer], False)(images)
    path = run_dir / "similarity.png"
    plot_similarity_matrices(panels, labels, path, reference=f"teacher {t_layer}")
    return str(path)


def _strategy(args):
    """Creates the --strategy (first: before other TF ops) and checks the batch."""
    from keras_spkd.distribute import check_global_batch, make_strategy

    strategy = make_strategy(args.strategy)
    _fill_defaults(args)
    check_global_batch(args.batch_size, strategy)
    return strategy


def _worker_index(strategy) -> int:
    """This process's worker index under MultiWorkerMirroredStrategy, else 0."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(getattr(resolver, "task_id", 0) or 0) if resolver else 0


def cmd_distill(args) -> int:
    run_dir = Path(args.out)
    config_path = run_dir / "config.json"
    if config_path.exists() and not args.resume:
        raise UsageError(
            f"Run directory {str(run_dir)!r} already holds a run; pass --resume "
            "to continue it or choose another --out."
        )
    if args.resume and config_path.exists():
        saved = json.loads(config_path.read_text())
        for key, value in saved.items():
            if key not in ("resume", "command"):
                setattr(args, key, value)
    # Training runs in the strategy's scope; exporting and plotting outside it
    # (restored SavedModel functions refuse a replica context).
    strategy = _strategy(args)
    worker = _worker_index(strategy)
    if worker:  # every worker trains; each writes its own files
        run_dir = run_dir / f"worker{worker}"
    with strategy.scope():
        trained = _distill_training(args, run_dir)
    return _distill_report(args, run_dir, **trained)


def _distill_training(args, run_dir: Path) -> dict:
    import keras

    pairs = _parse_pairs(args.pairs)
    keras.utils.set_random_seed(args.seed)
    data = _load_data(args)
    student = _build(args.student_arch, data, args, "student")
    if args.teacher:
        teacher, teacher_path = _teacher(args, data)
        _validate_pairs(teacher, student, pairs)
    else:  # check the pairs on the architecture before spending time on training
        _validate_pairs(_build(args.teacher_arch, data, args, "teacher"), student, pairs)
        teacher, teacher_path = _teacher(args, data)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k not in ("func", "resume", "command")}
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    init_path = run_dir / "student_init.weights.h5"
    if not init_path.exists():
        student.save_weights(init_path)

    teacher_accuracy = _accuracy(teacher, data.test)
    results = {phase: _run_phase(phase, args, data, teacher, run_dir) for phase in PHASES}
    return {
        "data": data,
        "teacher": teacher,
        "teacher_path": teacher_path,
        "teacher_accuracy": teacher_accuracy,
        "results": results,
    }


def _distill_report(args, run_dir, data, teacher, teacher_path, teacher_accuracy, results) -> int:
    import keras

    from keras_spkd.export import export_student

    best = keras.saving.load_model(run_dir / "sp" / "student.keras")
    report = export_student(best, run_dir / "export", data.probe[0], tflite=tuple(args.tflite))
    summary = {
        "dataset": args.dataset,
        "teacher": teacher_path,
        "teacher_arch": args.teacher_arch,
        "student_arch": args.student_arch,
        "pairs": _parse_pairs(args.pairs),
        "gamma": args.gamma,
        "strategy": args.strategy,
        "teacher_test_accuracy": teacher_accuracy,
        "student_alone_test_accuracy": results["alone"]["test_accuracy"],
        "sp_student_test_accuracy": results["sp"]["test_accuracy"],
        "phases": results,
        "export": report.as_dict(),
        "similarity_png": _heat_map(args, data, teacher, run_dir),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    from keras_spkd.report import write_report

    page, _ = write_report(run_dir)
    print(_table(summary, args))
    print(f"Run directory: {run_dir}  (SavedModel: {report.saved_model})")
    print(f"Report: {page}")
    return 0


def cmd_report(args) -> int:
    from keras_spkd.report import write_report

    if not Path(args.run_dir).is_dir():
        raise UsageError(f"Run directory {args.run_dir!r} does not exist.")
    page, markdown = write_report(args.run_dir)
    print(f"Report: {page} (markdown: {markdown})")
    return 0


def _table(summary: dict, args) -> str:
    rows = [
        ("teacher", args.teacher_arch, summary["teacher_test_accuracy"]),
        ("student alone", args.student_arch, summary["student_alone_test_accuracy"]),
        (
            f"student + SP (gamma={args.gamma:g})",
            args.student_arch,
            summary["sp_student_test_accuracy"],
        ),
    ]
    lines = [
        f"Test accuracy on {args.dataset}:",
        "| model | architecture | test accuracy |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {arch} | {acc:.2%} |" for name, arch, acc in rows]
    return "\n".join(lines)


def cmd_teacher(args) -> int:
    import keras

    with _strategy(args).scope():
        keras.utils.set_random_seed(args.seed)
        data = _load_data(args)
        teacher = _train_teacher(args, data, Path(args.out))
        accuracy = _accuracy(teacher, data.test)
    print(f"Teacher {args.teacher_arch}: test accuracy {accuracy:.2%}; saved to {args.out}")
    return 0


def _load_student(path: str):
    import keras

    from keras_spkd.distiller import SPDistiller

    if not Path(path).exists():
        raise UsageError(f"Model file {path!r} does not exist.")
    model = keras.saving.load_model(path)
    return model.student if isinstance(model, SPDistiller) else model


def cmd_export(args) -> int:
    from keras_spkd.export import export_student

    student = _load_student(args.model)
    _fill_defaults(args)
    data = _load_data(args)
    report = export_student(student, args.out, data.probe[0], tflite=tuple(args.tflite))
    print(json.dumps(report.as_dict(), indent=2))
    return 0


def cmd_evaluate(args) -> int:
    import keras

    model = _load_student(args.model)
    _fill_defaults(args)
    data = _load_data(args)
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    logs = model.evaluate(data.test, verbose=0, return_dict=True)
    print(json.dumps({k: float(v) for k, v in logs.items()}))
    return 0


def cmd_tune(args) -> int:
    import keras

    from keras_spkd.export import export_student
    from keras_spkd.tuning import (
        SPHyperModel,
        check_gamma_range,
        check_trials_completed,
        make_tuner,
        objective_for,
        trial_table,
    )

    gamma_range = check_gamma_range((args.gamma_min, args.gamma_max))  # before any work
    objective_for(args.objective)
    _fill_defaults(args)
    candidates = _parse_pairs(args.pair_candidates or args.pairs)
    keras.utils.set_random_seed(args.seed)
    data = _load_data(args)
    teacher, teacher_path = _teacher(args, data)
    hypermodel = SPHyperModel(
        teacher,
        lambda: _build(args.student_arch, data, args, "student"),
        candidates,
        gamma_range,
        kd_weights=args.kd_weights,
        optimizer=lambda: _optimizer(args, _steps(data.train), args.epochs),
        train_data=lambda: _load_data(args).train,
    )
    out = Path(args.out)
    tuner = make_tuner(
        args.tuner,
        hypermodel,
        args.objective,
        args.max_trials,
        str(out),
        "search",
        overwrite=args.overwrite,
        max_epochs=args.epochs,
        seed=args.seed,
    )
    tuner.search(  # each trial gets a fresh pipeline from SPHyperModel.train_data
        validation_data=data.val, epochs=args.epochs, shuffle=False, verbose=_verbose()
    )
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "chief")
    if "chief" not in tuner_id:
        print(f"Worker {tuner_id}: search finished; the chief reports the results.")
        return 0
    check_trials_completed(tuner)
    rows = trial_table(tuner)
    print(f"| trial | gamma | pair | kd_weight | {args.objective} |\n|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['trial']} | {row['gamma']:.4g} | {row['pair']} | {row['kd_weight']} | "
            f"{row['objective']:.4f} |"
        )
    best = tuner.get_best_hyperparameters(1)[0].values
    best_config = {
        "dataset": args.dataset,
        "teacher_arch": args.teacher_arch,
        "teacher_epochs": args.teacher_epochs,
        "student_arch": args.student_arch,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "schedule": args.schedule,
        "gamma": best["gamma"],
        "pairs": best.get("pair", candidates[0][0] + ":" + candidates[0][1]),
        "kd_weight": best.get("kd_weight", 0.0),
        "seed": args.seed,
    }
    if args.teacher:
        best_config["teacher"] = teacher_path
    (out / "best_config.json").write_text(json.dumps(best_config, indent=2))
    student = tuner.get_best_models(1)[0].student
    report = export_student(student, out / "best_student", data.probe[0], tflite=())
    (out / "trials.json").write_text(json.dumps(rows, indent=2, default=float))
    print(
        f"Best: gamma={best['gamma']:.4g}, pair {best_config['pairs']}, "
        f"kd_weight {best_config['kd_weight']}; config for `keras-spkd distill --config`: "
        f"{out / 'best_config.json'}; best student: {report.saved_model}"
    )
    return 0


TERMS = ("sp", "kd", "at")


def _parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    for method in methods:
        if method != "alone" and not set(method.split("+")) <= set(TERMS):
            raise UsageError(
                f"Unknown method {method!r} in --methods; use 'alone' or '+'-joined terms "
                f"of {TERMS}, e.g. alone,kd,at,sp,sp+kd."
            )
    if not methods:
        raise UsageError("--methods lists no method.")
    return methods


def _degrade(images):
    """The privileged setting's student view: the top half of every image."""
    return images[:, : images.shape[1] // 2]


def _checksum(weights) -> float:
    """A fingerprint of initial weights, recorded so equal starts can be verified."""
    return float(sum(np.abs(w).sum() for w in weights))


def _compare_model(method, teacher, student, args):
    from keras_spkd.distiller import SPDistiller

    if method == "alone":
        return _trainable(student)
    terms = set(method.split("+"))
    return SPDistiller(
        teacher,
        student,
        _parse_pairs(args.pairs),
        gamma=args.gamma if "sp" in terms else 0.0,
        kd_weight=args.kd_weight if "kd" in terms else 0.0,
        temperature=args.temperature,
        at_weight=args.at_weight if "at" in terms else 0.0,
        at_pairs=_parse_pairs(args.at_pairs) if args.at_pairs else None,
    )


def cmd_compare(args) -> int:
    import copy
    import statistics

    import keras

    if args.methods is None:  # AT needs equal resolutions; the privileged student has half
        args.methods = "alone,kd,sp,sp+kd" if args.privileged else "alone,kd,at,sp,sp+kd"
    methods = _parse_methods(args.methods)
    _fill_defaults(args)
    out = Path(args.out)
    rows = []
    for seed in range(args.seeds):
        run = copy.copy(args)
        run.seed = seed
        keras.utils.set_random_seed(seed)
        data = _load_data(run)
        teacher, _ = _teacher(run, data)
        shape = data.input_shape
        student_shape = (shape[0] // 2, *shape[1:]) if args.privileged else shape
        student_data = copy.copy(data)
        student_data.input_shape = student_shape
        initial = _build(args.student_arch, student_data, run, "student").get_weights()
        checksum = _checksum(initial)
        for method in methods:  # every model is built (and checked) before any trains
            _compare_model(method, teacher, _build(args.student_arch, student_data, run, "s"), run)
        test = data.test.map(lambda x, y: (_degrade(x), y)) if args.privileged else data.test
        teacher_accuracy = _accuracy(teacher, data.test)
        for method in methods:
            fresh = _load_data(run)  # same seeds: the same data order for every method
            train, val = fresh.train, fresh.val
            if args.privileged:
                view = (
                    (lambda x, y: ({"teacher": x, "student": _degrade(x)}, y))
                    if method != "alone"
                    else (lambda x, y: (_degrade(x), y))
                )
                train, val = train.map(view), val.map(view)
            student = _build(args.student_arch, student_data, run, "student")
            student.set_weights(initial)
            start_checksum = _checksum(student.get_weights())
            model = _compare_model(method, teacher, student, run)
            _compile(model, run, _steps(fresh.train), args.epochs)
            logger.info("seed %d/%d, %s", seed + 1, args.seeds, method)
            start = time.perf_counter()
            model.fit(train, validation_data=val, epochs=args.epochs, shuffle=False, verbose=0)
            rows.append(
                {
                    "seed": seed,
                    "method": method,
                    "test_accuracy": _accuracy(student, test),
                    "teacher_test_accuracy": teacher_accuracy,
                    "fit_seconds": round(time.perf_counter() - start, 2),
                    "init_checksum": start_checksum,
                    "expected_checksum": checksum,
                    "gamma": args.gamma if "sp" in method else 0.0,
                    "kd_weight": args.kd_weight if "kd" in method else 0.0,
                    "at_weight": args.at_weight if "at" in method else 0.0,
                }
            )
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def spread(values):
        mean = statistics.mean(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return mean, sd

    teacher_mean, teacher_sd = spread([r["teacher_test_accuracy"] for r in rows[:: len(methods)]])
    setting = (
        "privileged (student sees the top half of each image)" if args.privileged else ("standard")
    )
    lines = [
        f"Test accuracy on {args.dataset}, {setting}; {args.seeds} seeds, {args.epochs} epochs; "
        f"teacher {args.teacher_arch} {100 * teacher_mean:.2f} ± {100 * teacher_sd:.2f}%, "
        f"student {args.student_arch}; pairs {args.pairs}, gamma {args.gamma:g}, "
        f"KD weight {args.kd_weight:g} (T = {args.temperature:g}), AT weight {args.at_weight:g}.",
        "",
        "| method | test accuracy (mean ± sd) | min | max | fit s / run |",
        "|---|---|---|---|---|",
    ]
    for method in methods:
        accs = [r["test_accuracy"] for r in rows if r["method"] == method]
        mean, sd = spread(accs)
        secs = statistics.mean(r["fit_seconds"] for r in rows if r["method"] == method)
        lines.append(
            f"| {method} | {100 * mean:.2f} ± {100 * sd:.2f}% | {100 * min(accs):.2f}% "
            f"| {100 * max(accs):.2f}% | {secs:.1f} |"
        )
    table = "\n".join(lines)
    (out / "results.md").write_text(table + "\n")
    print(table)
    print(f"Per-run results: {out / 'results.csv'}")
    return 0


def cmd_bench(args) -> int:
    from keras_spkd import bench

    if args.torch and not Path(args.torch).exists():  # before minutes of timing
        raise UsageError(f"--torch: no PyTorch peer script at {args.torch!r}.")
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
        result = bench.run_step_benchmark(
            args.teacher_arch,
            args.student_arch,
            tuple(args.pair.split(":")),
            args.batch_size,
            args.image_size,
            args.steps,
            args.rounds,
            args.jit,
            teacher_dtype=args.teacher_dtype,
        )
        torch = None
        if args.torch:
            torch = bench.run_torch_peer(
                args.torch,
                args.batch_size,
                args.steps * args.rounds,
                args.teacher_arch.removeprefix("wrn-").replace("-", ","),
                args.student_arch.removeprefix("wrn-").replace("-", ","),
            )
            result["torch"] = torch
        print(bench.format_report(result, torch))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        default="digits",
        help="'digits' (embedded, default) or a TFDS name such as cifar10",
    )
    parser.add_argument("--data-dir", help="prepared TFDS data directory")
    parser.add_argument(
        "--download",
        action="store_true",
        help="let TFDS download and prepare missing data (needs a network)",
    )
    parser.add_argument("--batch-size", type=int, help="mini-batch size b")
    parser.add_argument("--seed", type=int, default=0)


def _training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lr", type=float, help="initial SGD learning rate")
    parser.add_argument(
        "--schedule",
        choices=("step", "cosine", "constant"),
        default="step",
        help="learning-rate schedule (step: x0.2 at 30/60/80%% of training)",
    )
    parser.add_argument("--weight-decay", type=float, help="L2 weight decay of the kernels")
    parser.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="XLA-compile the training step",
    )
    parser.add_argument(
        "--strategy",
        choices=("default", "mirrored", "multi_worker"),
        default="default",
        help="tf.distribute strategy (multi_worker reads TF_CONFIG); with several "
        "replicas the SP term is computed over the global batch",
    )


TFLITE_HELP = "TFLite exports to write: float, dynamic, int8 (none: omit the flag's values)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-spkd",
        description="Similarity-Preserving Knowledge Distillation (Tung & Mori, ICCV 2019) "
        "for Keras. Run `keras-spkd distill` for the embedded digits demo.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "--config",
        help="JSON file of option defaults (keys as option names "
        "with underscores), e.g. the best trial of `keras-spkd tune`",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    distill = commands.add_parser(
        "distill", help="train a student alone and with SP; compare; export the SP student"
    )
    _data_arguments(distill)
    _training_arguments(distill)
    distill.add_argument(
        "--teacher", help="trained teacher (.keras); default: train one, or reuse it from the cache"
    )
    distill.add_argument("--teacher-arch", help="built-in teacher: wrn-D-K or digits-cnn-W")
    distill.add_argument("--teacher-epochs", type=int)
    distill.add_argument("--student-arch", help="student: wrn-D-K or digits-cnn-W")
    distill.add_argument("--pairs", help="layer pairs TEACHER:STUDENT[,...], e.g. group3:group3")
    distill.add_argument("--gamma", type=float, help="SP weight gamma")
    distill.add_argument("--kd-weight", type=float, default=0.0, help="Hinton KD weight")
    distill.add_argument("--temperature", type=float, default=4.0, help="KD temperature")
    distill.add_argument("--epochs", type=int, help="student epochs")
    distill.add_argument("--out", default="runs/distill", help="run directory")
    distill.add_argument(
        "--resume", action="store_true", help="continue an interrupted run in --out"
    )
    distill.add_argument("--tflite", nargs="*", default=["float"], help=TFLITE_HELP)
    distill.set_defaults(func=cmd_distill)

    teacher = commands.add_parser("teacher", help="train and save a teacher")
    _data_arguments(teacher)
    _training_arguments(teacher)
    teacher.add_argument("--teacher-arch", help="wrn-D-K or digits-cnn-W")
    teacher.add_argument("--teacher-epochs", "--epochs", type=int, dest="teacher_epochs")
    teacher.add_argument("--out", default="teacher.keras", help="where to save it (.keras)")
    teacher.set_defaults(func=cmd_teacher)

    export = commands.add_parser(
        "export",
        help="export a student (or distiller) .keras file "
        "as SavedModel and TFLite, checked against the model",
    )
    export.add_argument("model")
    _data_arguments(export)
    export.add_argument("--out", default="export")
    export.add_argument("--tflite", nargs="*", default=["float", "dynamic"], help=TFLITE_HELP)
    export.set_defaults(func=cmd_export)

    evaluate = commands.add_parser("evaluate", help="test accuracy of a saved model")
    evaluate.add_argument("model")
    _data_arguments(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)
    compare = commands.add_parser(
        "compare",
        help="student alone vs KD, AT, SP and their "
        "combinations, over several seeds; markdown + CSV",
    )
    _data_arguments(compare)
    _training_arguments(compare)
    compare.add_argument(
        "--methods",
        default=None,
        help="comma-separated: alone, or '+'-joined terms of sp, kd, at",
    )
    compare.add_argument("--seeds", type=int, default=5)
    compare.add_argument("--teacher", help="trained teacher (.keras); default: built-in, cached")
    compare.add_argument("--teacher-arch")
    compare.add_argument("--teacher-epochs", type=int)
    compare.add_argument("--student-arch")
    compare.add_argument("--pairs", help="SP (and KD-free) layer pairs, T:S[,...]")
    compare.add_argument("--at-pairs", help="AT layer pairs (equal spatial sizes); default --pairs")
    compare.add_argument("--gamma", type=float)
    compare.add_argument("--kd-weight", type=float, default=1.0)
    compare.add_argument("--temperature", type=float, default=4.0)
    compare.add_argument("--at-weight", type=float, default=1000.0)
    compare.add_argument("--epochs", type=int)
    compare.add_argument(
        "--privileged",
        action="store_true",
        help="the teacher sees whole images, the student only their top half",
    )
    compare.add_argument("--out", default="runs/compare")
    compare.set_defaults(func=cmd_compare)

    tune = commands.add_parser(
        "tune", help="search gamma (and pair, KD weight) with Keras Tuner; export the best student"
    )
    _data_arguments(tune)
    _training_arguments(tune)
    tune.add_argument("--teacher", help="trained teacher (.keras); default: built-in, cached")
    tune.add_argument("--teacher-arch")
    tune.add_argument("--teacher-epochs", type=int)
    tune.add_argument("--student-arch")
    tune.add_argument("--pairs", help="the layer pair when not searched, TEACHER:STUDENT")
    tune.add_argument("--pair-candidates", help="pairs to choose from, T:S,T:S,...")
    tune.add_argument("--gamma-min", type=float, default=10.0)
    tune.add_argument("--gamma-max", type=float, default=1e4)
    tune.add_argument("--kd-weights", type=float, nargs="*", help="KD weights to choose from")
    tune.add_argument(
        "--objective",
        default="val_accuracy",
        help="logged metric to optimise (losses are minimised)",
    )
    tune.add_argument("--tuner", choices=("random", "bayesian", "hyperband"), default="bayesian")
    tune.add_argument("--max-trials", type=int, default=10)
    tune.add_argument("--epochs", type=int, help="epochs per trial (Hyperband: the largest)")
    tune.add_argument("--out", default="runs/tune", help="search directory")
    tune.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh instead of resuming the search in --out",
    )
    tune.set_defaults(func=cmd_tune)

    report = commands.add_parser(
        "report", help="write a run directory's HTML report (and its markdown twin)"
    )
    report.add_argument("run_dir")
    report.set_defaults(func=cmd_report)

    bench = commands.add_parser(
        "bench",
        help="time a distillation step against the student "
        "step + teacher forward, keras.distillation and PyTorch",
    )
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
        const="../shared/bench/torch_peer.py",
        help="also run the PyTorch peer script (default path: %(const)s)",
    )
    bench.add_argument(
        "--sp-scaling",
        action="store_true",
        help="time the SP loss alone over b = 64..1024, d = 1k..64k",
    )
    bench.add_argument("--json", help="write the figures to this JSON file")
    bench.set_defaults(func=cmd_bench)
    parser.commands = commands.choices
    return parser


def main(argv: list[str] | None = None) -> int:
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("keras-spkd: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args, _ = parser.parse_known_args(argv)
    if args.config:
        try:
            config = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as error:
            parser.exit(2, f"keras-spkd: error: cannot read --config {args.config}: {error}\n")
        for command in parser.commands.values():
            command.set_defaults(**config)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"keras-spkd: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
