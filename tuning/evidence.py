"""Issue 21's design: tune SP, KD and SP+KD alike, then compare them over seeds and teachers.

1. `experiment.run_search` once per method (`sp`: gamma; `kd`: KD weight and
   temperature; `sp+kd`: all three jointly), each with the same budget: the
   same tuner, trials, epochs and executions per trial, on the tuning seeds
   (1000 and up), on the validation split, each with its no-distillation
   reference reported beside the best trial.
2. The three best trials, as methods with their own weights, plus `alone`,
   written to `OUT/methods.json`.
3. `experiment.run_compare` of those methods over the evaluation seeds
   (0 and up), the student seeds spread over `--teachers` teachers, paired
   against `alone` and `kd`: SP - alone, SP - KD, (SP+KD) - KD, (SP+KD) - alone.

The same with the command line (one `tune` per method, then `compare`):

    keras-spkd tune --dataset digits --method sp --tuner bayesian --max-trials 8 \\
        --executions-per-trial 2 --out runs/evidence-digits/tune-sp
    keras-spkd tune --dataset digits --method kd ... --out runs/evidence-digits/tune-kd
    keras-spkd tune --dataset digits --method sp+kd ... --out runs/evidence-digits/tune-sp_kd
    # methods.json: ["alone", <each tune-*/best_method.json>]
    keras-spkd compare --dataset digits --methods runs/evidence-digits/methods.json \\
        --seeds 30 --teachers 3 --baseline alone,kd --out runs/evidence-digits/compare

Run (resumable: rerun the same command after an interruption; the per-run
rows land in OUT/compare/results.csv as they finish):

    python tuning/evidence.py --dataset digits --trials 8 --seeds 30 --teachers 3
    python tuning/evidence.py --dataset fashion_mnist --trials 8 --seeds 22 --teachers 2 \\
        --epochs 8

Two processes get more done than one on 2 cores: give the second `--descending`
and its own `--out`, and copy its finished runs into the main comparison's collected
folder (`collect_evidence.py runs/OTHER/compare --runs-into
tuning/evidence/evidence-DATASET/compare`).

Do not time anything while it runs; it takes CPU-hours on Fashion-MNIST. A run
that spans sessions which do not keep `runs/` or the teacher cache goes on from
what an earlier session collected (`collect_evidence.py --teachers`): its
finished searches are not run again, and its comparison's finished rows and
teachers are put back before the comparison resumes:

    python tuning/evidence.py --dataset fashion_mnist --trials 8 --seeds 22 --teachers 2 \\
        --collected tuning/evidence/evidence-fashion_mnist --out runs/evidence-fashion_mnist
"""

import argparse
import json
import logging
import shutil
import zipfile
from pathlib import Path

from keras_spkd import experiment
from keras_spkd.experiment.config import IGNORED_IN_DIFFERENCES, differences
from keras_spkd.experiment.methods import parse_methods
from keras_spkd.experiment.session import prepare
from keras_spkd.experiment.teacher import TeacherCache
from keras_spkd.summary import atomic_write_json

METHODS = ("sp", "kd", "sp+kd")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--tuner", default="bayesian")
    parser.add_argument("--trials", type=int, default=8, help="trials per method (equal budget)")
    parser.add_argument("--executions", type=int, default=2, help="tuning seeds per trial")
    parser.add_argument("--epochs", type=int, help="student epochs (default: the preset)")
    parser.add_argument("--teacher-epochs", type=int, help="default: the preset")
    parser.add_argument(
        "--train-images", type=int, help="a stratified training subset (default: all)"
    )
    parser.add_argument("--seeds", type=int, default=30, help="evaluation seeds")
    parser.add_argument(
        "--descending",
        action="store_true",
        help="the seeds from the last down: a second process (its own --out) that meets "
        "the first in the middle (give it again on every resume of that --out)",
    )
    parser.add_argument("--teachers", type=int, default=3)
    parser.add_argument("--out", help="default: runs/evidence-DATASET")
    parser.add_argument(
        "--collected",
        help="what an earlier session of this design collected (collect_evidence.py): "
        "its finished searches are reused, its comparison's rows and teachers put back",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out or f"runs/evidence-{args.dataset}")
    values = {"dataset": args.dataset, "tflite": ()}
    if args.epochs:
        values["epochs"] = args.epochs
    if args.teacher_epochs:
        values["teacher_epochs"] = args.teacher_epochs
    if args.train_images:
        values["train_images"] = args.train_images
    config = experiment.ExperimentConfig(**values)

    collected = _collected(args.collected) if args.collected is not None else None
    if collected:  # every collected piece checked against this design before anything trains
        _check_compare(collected / "compare", config, args)
    finished = {}
    for method in METHODS:
        for folder in (out / _name(method), collected / _name(method) if collected else None):
            if folder is not None and _search_finished(folder):
                finished[method] = _finished(folder, config, method, args, out / _name(method))
                break

    methods: list = ["alone"]
    for method in METHODS:
        if method in finished:
            methods.append(finished[method])
            continue
        search = experiment.run_search(
            config,
            tuner=args.tuner,
            max_trials=args.trials,
            executions_per_trial=args.executions,
            method=method,
            out=out / _name(method),
        )
        reference = search.reference.get("objective")
        print(
            f"{method}: best {search.best} val_accuracy {search.best_objective:.4f}; "
            f"no distillation {reference:.4f} (tuning seeds {search.seeds})",
            flush=True,
        )
        methods.append(search.best_method)
    atomic_write_json(out / "methods.json", methods)
    print(json.dumps(methods, indent=2), flush=True)

    if collected:
        _put_back(collected, out, config, methods, args)
    compare = experiment.run_compare(
        config,
        methods=str(out / "methods.json"),
        seeds=_seeds(args),
        teachers=args.teachers,
        baselines=("alone", "kd"),
        out=out / "compare",
    )
    print(compare.table, flush=True)


def _seeds(args):
    return list(range(args.seeds))[::-1] if args.descending else args.seeds


def _name(method: str) -> str:
    return f"tune-{method.replace('+', '_')}"


def _collected(path: str) -> Path:
    """`--collected`, checked: a folder holding what collect_evidence.py keeps."""
    folder = Path(path)
    if not path.strip() or not folder.is_dir():
        raise SystemExit(
            f"--collected {path!r} is not a folder; expected what collect_evidence.py "
            "wrote for this design (e.g. tuning/evidence/evidence-fashion_mnist)."
        )
    kept = [*folder.glob("tune-*"), folder / "compare", folder / "teacher-cache"]
    if not any(p.is_dir() for p in kept):
        raise SystemExit(
            f"--collected {path!r} holds no searches (tune-*/), comparison (compare/) or "
            "teachers (teacher-cache/); expected what collect_evidence.py wrote."
        )
    return folder


def _read(path: Path) -> dict:
    """A JSON object from a collected file, or an exit naming the file."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(
            f"{path} cannot be read ({type(error).__name__}: {error}); collect it again, "
            "or remove its folder to run that part again."
        ) from error
    if not isinstance(value, dict):
        raise SystemExit(f"{path} holds {type(value).__name__}, not a JSON object.")
    return value


def _differences(record: dict, wanted: dict) -> list[str]:
    """What `record` (a run's config.json) holds differently from `wanted`, key by key,
    by the library's own rule for resuming: a setting missing from a record is unset
    there (a record written before the setting existed matches while it is unset),
    and where a value came from (`explicit`) is not part of the design."""
    saved = record.get("config")
    if not isinstance(saved, dict):
        return [f"config: {type(saved).__name__} there, not a settings object"]
    keys = [key for key in wanted if key != "config"]
    return differences(
        {**{key: record.get(key) for key in keys}, **_settings(saved)},
        {**{key: wanted[key] for key in keys}, **_settings(wanted["config"])},
    )


def _settings(config: dict) -> dict:
    return {f"config.{k}": v for k, v in config.items() if k not in IGNORED_IN_DIFFERENCES}


def _config(config) -> dict:
    return json.loads(json.dumps(config.to_dict()))  # as config.json stores it (lists)


def _search_finished(folder: Path) -> bool:
    """A search finished where its `summary.json` (written last) is there."""
    if (folder / "summary.json").is_file():
        return True
    if (folder / "best_method.json").is_file():
        print(f"{folder} holds a search that did not finish; it runs (again)", flush=True)
    return False


def _finished(folder: Path, config, method: str, args, home: Path) -> dict:
    """A finished search's best method, after checking that it searched this design;
    a collected one is copied to `home` too, so that `--out` holds every search."""
    wanted = {
        "config": _config(config),
        "method": method,
        "tuner": args.tuner,
        "max_trials": args.trials,
        "executions_per_trial": args.executions,
    }
    differs = _differences(_read(folder / "config.json"), wanted)
    if differs:
        raise SystemExit(
            f"{folder} searched another design, so it cannot stand in for this one: "
            + "; ".join(differs)
        )
    summary, best = _read(folder / "summary.json"), _read(folder / "best_method.json")
    try:
        parse_methods([best])
        line = (
            f"best {summary['best']} val_accuracy {summary['best_objective']:.4f}; "
            f"no distillation {summary['reference']['objective']:.4f} "
            f"(tuning seeds {summary['tuning_seeds']})"
        )
    except (ValueError, TypeError, KeyError) as error:
        raise SystemExit(
            f"{folder}'s summary.json or best_method.json is not a finished search's "
            f"({type(error).__name__}: {error})."
        ) from error
    if folder.resolve() != home.resolve() and not home.exists():
        shutil.copytree(folder, home)
    print(f"{method}: the search in {folder} finished: {line}", flush=True)
    return best


def _compare_design(config, args, methods=None) -> dict:
    wanted = {"config": _config(config), "teachers": args.teachers, "privileged": False}
    if methods is not None:
        wanted["methods"] = [m.to_dict() for m in parse_methods(methods)]
    return wanted


def _check_compare(folder: Path, config, args, methods=None) -> None:
    """Refuses a comparison record (collected, or already in --out) of another design,
    and a comparison folder holding anything without its record."""
    record = folder / "config.json"
    if folder.is_dir() and any(folder.iterdir()) and not record.is_file():
        raise SystemExit(
            f"{folder} holds files but no readable record (config.json), so they cannot be "
            "checked against this design; collect it again with its record, or remove it."
        )
    if record.is_file():
        differs = _differences(
            _read(folder / "config.json"), _compare_design(config, args, methods)
        )
        if differs:
            raise SystemExit(
                f"{folder} compared another design, so its runs cannot be put back: "
                + "; ".join(differs)
            )


def _put_back(collected: Path, out: Path, config, methods: list, args) -> None:
    """The collected comparison's finished runs and teachers into `out/compare` (its
    record first, as `run_compare` writes it), and the collected cached teacher into the
    cache. Nothing there is replaced but a damaged cache entry."""
    source, target = collected / "compare", out / "compare"
    _put_back_cache(collected / "teacher-cache", config)
    if not source.is_dir():
        return
    _check_compare(source, config, args, methods)
    _check_compare(target, config, args, methods)
    if not (target / "config.json").exists():
        extra = {**_compare_design(config, args, methods), "seeds": _seeds(args)}
        del extra["config"]
        with prepare(config, target, "compare", False, extra=extra).open():
            pass
    put = []
    for kind, model in (("runs", None), ("teachers", "teacher.keras")):
        for folder in sorted(p for p in (source / kind).glob("*") if p.is_dir()):
            there = target / kind / folder.name
            if there.exists():  # finished there, or unfinished (it resumes): left as it is
                continue
            if not (folder / "result.json").is_file():
                continue
            if model and not zipfile.is_zipfile(folder / model):
                print(f"{folder} was kept without its {model}: it trains again", flush=True)
                continue
            partial = there.with_name(f".{folder.name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(folder, partial)
            partial.rename(there)
            put.append(f"{kind}/{folder.name}")
    print(f"The comparison goes on from {source}: {len(put)} finished runs and teachers put back")


def _put_back_cache(folder: Path, config) -> None:
    """The collected cache entry of `config`'s teacher into the cache, unless the cache
    holds an intact one (the cache's own check decides, on both sides)."""
    cache, kept = TeacherCache(), TeacherCache(folder)
    if not kept.paths(config)[1].is_file() or cache.has_valid(config):
        return
    if not kept.has_valid(config):
        print(f"{kept.paths(config)[0]} differs from its metadata: not put back", flush=True)
        return
    cache.root.mkdir(parents=True, exist_ok=True)
    for source, there in zip(kept.paths(config), cache.paths(config)):  # metadata last
        shutil.copy2(source, there)


if __name__ == "__main__":
    main()
