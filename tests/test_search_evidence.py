"""The search as evidence: tuning seeds apart from evaluation seeds, several executions,
a no-distillation reference, and SP, KD and SP+KD searched alike (issue 21).

Each test here failed on keras-spkd 0.2's search: it trained every trial from
compare's seed-0 student and data order, once, with no gamma = 0 reference,
and searched gamma only.
"""

import json

import keras
import pytest

from keras_spkd import experiment
from keras_spkd.cli import main
from keras_spkd.errors import ConfigError
from keras_spkd.experiment import ExperimentConfig
from keras_spkd.experiment.session import load_data
from keras_spkd.experiment.training import build, weights_fingerprint

TINY = {"epochs": 1, "teacher_epochs": 1, "batch_size": 32}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _cache(cache, monkeypatch):
    monkeypatch.setenv("KERAS_SPKD_CACHE", str(cache))


def _first_labels(dataset):
    return tuple(next(iter(dataset.take(1)))[1].numpy().tolist())


def test_search_trains_on_its_own_seeds_never_on_an_evaluation_start(tmp_path, monkeypatch):
    config = ExperimentConfig(**TINY)
    data = load_data(config)
    evaluation = []  # what compare's seeds 0 and 1 start from: weights and first batch
    for seed in range(2):
        keras.utils.set_random_seed(seed)
        evaluation.append(
            (
                weights_fingerprint(build(config.student_arch, data, config, "student")),
                _first_labels(data.with_seed(seed).epochs(0)),
            )
        )
    fits = []
    original = keras.Model.fit

    def recording(model, x=None, *args, **kwargs):
        student = getattr(model, "student", model)
        if student.name == "student":  # not the teacher, trained once into the cache
            fits.append((type(model).__name__, weights_fingerprint(student), _first_labels(x)))
        return original(model, x, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording)
    result = experiment.run_search(config, tuner="random", max_trials=2, out=tmp_path / "t")
    starts = {(w, o) for _, w, o in fits}
    assert not {w for w, _ in starts} & {w for w, _ in evaluation}  # 0.2: seed 0's weights
    assert not {o for _, o in starts} & {o for _, o in evaluation}  # 0.2: seed 0's order
    assert result.seeds == [1000, 1001]  # two executions per trial by default
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["tuning_seeds"] == [1000, 1001]
    trials = [f for f in fits if f[0] == "SPDistiller"]
    references = [f for f in fits if f[0] != "SPDistiller"]
    assert len(trials) == 4 and len(references) == 2  # 2 trials x 2 executions; 2 reference fits
    assert len(starts) == 2  # execution k of every trial and of the reference: seed 1000 + k
    assert [f[1:] for f in trials[:2]] == [f[1:] for f in trials[2:]] == [f[1:] for f in references]


def test_every_search_reports_the_no_distillation_reference_beside_the_best(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    argv = ["tune", "--tuner", "random", "--max-trials", "1", "--out", "t"]
    argv += ["--epochs", "1", "--teacher-epochs", "1", "--batch-size", "32"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    reference = json.loads((tmp_path / "t" / "reference.json").read_text())
    assert reference["seeds"] == [1000, 1001] and len(reference["executions"]) == 2
    assert reference["objective"] == pytest.approx(sum(reference["executions"]) / 2)
    assert 0.0 <= reference["objective"] <= 1.0
    assert "No distillation (gamma = 0) on the tuning seeds [1000, 1001]: val_accuracy " in out
    assert f"{reference['objective']:.4f}; best trial " in out
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["reference"] == reference and summary["best_objective"] is not None


@pytest.mark.parametrize(
    "method, searched",
    [("kd", {"kd_weight", "temperature"}), ("sp+kd", {"gamma", "kd_weight", "temperature"})],
)
def test_kd_and_sp_kd_are_searched_like_gamma_with_the_same_budget(method, searched, tmp_path):
    result = experiment.run_search(
        ExperimentConfig(**TINY),
        tuner="random",
        max_trials=2,
        out=tmp_path / "t",
        executions_per_trial=1,
        method=method,
        kd_weight_range=(0.5, 2.0),
        temperature_range=(2.0, 8.0),
    )
    assert len(result.trials) == 2 and result.method == method
    assert set(result.best) == searched
    for row in result.trials:
        assert 0.5 <= row["kd_weight"] <= 2.0 and 2.0 <= row["temperature"] <= 8.0
        assert (row["gamma"] is None) == (method == "kd")
        assert (row["pair"] is None) == (method == "kd")
    kinds = [term["class"] for term in result.best_method["terms"]]
    assert kinds == (["kd"] if method == "kd" else ["sp", "kd"])
    kd = result.best_method["terms"][-1]
    assert kd["weight"] == result.best["kd_weight"] == result.best_config.kd_weight
    assert kd["config"]["temperature"] == result.best_config.temperature
    # The best method goes straight into compare, weights and all.
    from keras_spkd.experiment.methods import parse_methods

    (parsed,) = parse_methods([json.loads((tmp_path / "t" / "best_method.json").read_text())])
    assert parsed.name == method


def test_search_settings_are_checked_before_anything(tmp_path):
    config = ExperimentConfig(**TINY)
    with pytest.raises(ConfigError, match="method must be one of sp, kd, sp\\+kd"):
        experiment.run_search(config, method="at", out=tmp_path / "t")
    with pytest.raises(ConfigError, match="kd_weight_range low < high"):
        experiment.run_search(config, method="kd", kd_weight_range=(2, 1), out=tmp_path / "t")
    with pytest.raises(ConfigError, match="kd_weights is a choice list for method 'sp'"):
        experiment.run_search(config, method="kd", kd_weights=[1.0], out=tmp_path / "t")
    with pytest.raises(ConfigError, match="below 1000, where the search's tuning seeds start"):
        experiment.run_compare(config, seeds=[3, 1000], out=tmp_path / "c")
    assert not (tmp_path / "t").exists() and not (tmp_path / "c").exists()


def _script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tuning" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.slow
def test_the_evidence_script_tunes_each_method_alike_then_compares_them(
    tmp_path, capsys, monkeypatch
):
    import csv

    script = _script("evidence")
    monkeypatch.setenv("KERAS_SPKD_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "ev"
    design = ["--executions", "1", "--epochs", "1", "--teacher-epochs", "1"]
    design += ["--teachers", "2", "--tuner", "random", "--trials", "1"]
    script.main(design + ["--seeds", "2", "--out", str(out)])
    methods = json.loads((out / "methods.json").read_text())
    assert [m if isinstance(m, str) else m["name"] for m in methods] == [
        "alone",
        "sp",
        "kd",
        "sp+kd",
    ]
    for method in ("sp", "kd", "sp_kd"):
        trials = json.loads((out / f"tune-{method}" / "trials.json").read_text())
        assert len(trials) == 1  # one budget for every method
        assert (out / f"tune-{method}" / "reference.json").is_file()
    with open(out / "compare" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["seed"], r["method"], r["teacher_seed"]) for r in rows] == [
        (str(s), m, str(s % 2)) for s in range(2) for m in ("alone", "sp", "kd", "sp+kd")
    ]
    assert "vs kd (paired mean [95% CI])" in capsys.readouterr().out

    # A later session keeps neither runs/ nor the cache: it goes on from what was
    # collected, training nothing again (one more seed is the only new work).
    _script("collect_evidence").main([str(out), "--to", str(tmp_path / "kept"), "--teachers"])
    kept = tmp_path / "kept" / "ev"
    assert (kept / "compare" / "teachers" / "seed1" / "teacher.keras").is_file()
    assert len(list((kept / "teacher-cache").glob("*.keras"))) == 1  # teacher seed 0
    monkeypatch.setenv("KERAS_SPKD_CACHE", str(tmp_path / "fresh-cache"))

    def no_search(*args, **kwargs):
        raise AssertionError("a collected search ran again")

    fits = []
    original_fit = keras.Model.fit

    def counting_fit(model, *args, **kwargs):
        fits.append(model.name)
        return original_fit(model, *args, **kwargs)

    monkeypatch.setattr(experiment, "run_search", no_search)
    monkeypatch.setattr(keras.Model, "fit", counting_fit)
    again = tmp_path / "again"
    # ... as a second process would, from the last seed down (--descending)
    run = design + ["--seeds", "3", "--out", str(again), "--collected", str(kept)]
    script.main(run + ["--descending"])
    assert len(fits) == 4  # seed 2's four methods; no teacher, no search, no earlier row
    assert json.loads((again / "methods.json").read_text()) == methods
    with open(again / "compare" / "results.csv", newline="") as f:
        resumed = list(csv.DictReader(f))
    assert [r["seed"] for r in resumed] == ["2"] * 4 + ["1"] * 4 + ["0"] * 4
    assert [r["final_fingerprint"] for r in resumed[4:]] == [
        r["final_fingerprint"] for r in sorted(rows, key=lambda r: -int(r["seed"]))
    ]
    # its finished runs go into the main comparison's collected folder, once
    into = ["--runs-into", str(kept / "compare")]
    _script("collect_evidence").main([str(again / "compare"), *into])
    assert len(list((kept / "compare" / "runs").glob("seed2-*/result.json"))) == 4
    assert len(list((kept / "compare" / "runs").glob("*/result.json"))) == 12
    assert "the search in" in capsys.readouterr().out

    with pytest.raises(SystemExit, match="searched another design.*max_trials"):
        script.main(
            design + ["--trials", "2", "--out", str(tmp_path / "x"), "--collected", str(kept)]
        )


def test_the_evidence_script_checks_what_was_collected_before_anything_trains(
    tmp_path, monkeypatch, capsys
):
    script, collect = _script("evidence"), _script("collect_evidence")

    def no_fit(*args, **kwargs):
        raise AssertionError("trained before the collected files were checked")

    monkeypatch.setattr(keras.Model, "fit", no_fit)
    design = ["--epochs", "1", "--trials", "1", "--executions", "1", "--teachers", "2"]
    run = design + ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match="is not a folder"):
        script.main(run + ["--collected", str(tmp_path / "typo")])
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(SystemExit, match="holds no searches"):
        script.main(run + ["--collected", str(kept)])

    config = json.loads(
        json.dumps(ExperimentConfig(dataset="digits", epochs=1, tflite=()).to_dict())
    )
    search = {"config": config, "method": "sp", "tuner": "bayesian", "max_trials": 1}
    search["executions_per_trial"] = 1
    (kept / "tune-sp").mkdir()
    (kept / "tune-sp" / "config.json").write_text(json.dumps({**search, "max_trials": 8}))
    (kept / "tune-sp" / "summary.json").write_text("{")
    with pytest.raises(SystemExit, match=r"searched another design.*max_trials: saved 8, given 1"):
        script.main(run + ["--collected", str(kept)])
    with pytest.raises(SystemExit, match=r"config.epochs: saved 1, given 2"):
        script.main(run + ["--epochs", "2", "--trials", "8", "--collected", str(kept)])
    (kept / "tune-sp" / "config.json").write_text(json.dumps(search))
    with pytest.raises(SystemExit, match=r"summary.json cannot be read"):
        script.main(run + ["--collected", str(kept)])

    (kept / "compare").mkdir()
    (kept / "compare" / "config.json").write_text(
        json.dumps({"config": config, "teachers": 3, "privileged": False})
    )
    with pytest.raises(SystemExit, match=r"compared another design.*teachers: saved 3, given 2"):
        script.main(run + ["--collected", str(kept)])
    assert not (tmp_path / "out").exists()  # nothing written before the refusal
    older = {k: v for k, v in config.items() if k != "train_images"}  # before it existed
    assert config["train_images"] is None
    (kept / "compare" / "config.json").write_text(
        json.dumps({"config": older, "teachers": 2, "privileged": False})
    )
    (kept / "tune-sp" / "config.json").write_text(  # where a value came from is no design
        json.dumps({**search, "config": {**older, "explicit": ["epochs", "dataset"]}})
    )
    with pytest.raises(SystemExit, match=r"summary.json cannot be read"):  # past both checks
        script.main(run + ["--collected", str(kept)])
    (kept / "tune-sp" / "config.json").write_text(json.dumps(search))
    with pytest.raises(SystemExit, match="is not a folder"):  # `--collected "$UNSET"`
        script.main(run + ["--collected", ""])
    lost = tmp_path / "lost"  # runs collected without their record: nothing to check them by
    (lost / "compare" / "runs" / "seed0-alone").mkdir(parents=True)
    with pytest.raises(SystemExit, match="holds files but no readable record"):
        script.main(run + ["--collected", str(lost)])
    assert not (tmp_path / "out").exists()

    with pytest.raises(SystemExit):  # argparse's error: a missing run, a target inside it
        collect.main([str(tmp_path / "no-run"), "--to", str(tmp_path / "k")])
    with pytest.raises(SystemExit):
        collect.main([str(kept), "--to", str(kept / "inside")])
    assert not (kept / "inside").exists()

    (kept / "tune-sp" / "config.json").write_text("{oops")  # kept as it is, teacher skipped
    collect.main([str(kept), "--to", str(tmp_path / "k2"), "--teachers"])
    assert (tmp_path / "k2" / "kept" / "tune-sp" / "config.json").read_text() == "{oops"
    other = tmp_path / "other"
    (other / "runs" / "seed0-alone").mkdir(parents=True)
    (other / "runs" / "seed0-alone" / "result.json").write_text("{}")
    (other / "config.json").write_text(json.dumps({"config": config, "teachers": 2}))
    with pytest.raises(SystemExit):  # no runs/ there; another design's runs
        collect.main([str(kept), "--runs-into", str(tmp_path / "k3")])
    with pytest.raises(SystemExit):
        collect.main([str(other), "--runs-into", str(kept / "compare")])
    assert not (kept / "compare" / "runs").exists()
    capsys.readouterr()
    (other / "config.json").write_text(  # here train_images is unset; kept predates it
        json.dumps({"config": {**config, "epochs": 2}, "teachers": 2, "privileged": False})
    )
    with pytest.raises(SystemExit):
        collect.main([str(other), "--runs-into", str(kept / "compare")])
    assert "config.epochs: saved 1, given 2" in capsys.readouterr().err
    (other / "config.json").write_text(
        json.dumps({"config": config, "teachers": 2, "privileged": False})
    )
    collect.main([str(other), "--runs-into", str(kept / "compare")])
    copy = kept / "compare" / "runs" / "seed0-alone" / "result.json"
    assert copy.read_text() == "{}"
    copy.write_text('{"test_acc')  # cut short: copied again, whole
    collect.main([str(other), "--runs-into", str(kept / "compare")])
    assert copy.read_text() == "{}"
    for record in ("[]", "{oops", None):  # the source's record: a list, damaged, missing
        if record is None:
            (other / "config.json").unlink()
        else:
            (other / "config.json").write_text(record)
        with pytest.raises(SystemExit):
            collect.main([str(other), "--runs-into", str(kept / "compare")])
        assert "is missing or not a comparison's record" in capsys.readouterr().err
    bare = tmp_path / "bare"  # a target without its record (a typo makes one)
    bare.mkdir()
    (other / "config.json").write_text(json.dumps({"config": config, "teachers": 2}))
    for target in (bare, tmp_path / "typo", ""):
        with pytest.raises(SystemExit):
            collect.main([str(other), "--runs-into", str(target)])
    assert list(bare.iterdir()) == [] and not (tmp_path / "typo").exists()
