"""The benchmark measures what it says (tiny models; no timing is asserted)."""

import importlib.util
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

import keras_spkd
from keras_spkd import bench
from keras_spkd.cli import main
from keras_spkd.models import wide_resnet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def result():
    return bench.run_step_benchmark(
        "digits-cnn-16",
        "digits-cnn-4",
        ("group2", "group2"),
        batch_size=16,
        image_size=8,
        steps=3,
        rounds=1,
        jit=False,
        teacher_dtype="bfloat16",
    )


def test_every_configuration_is_measured_and_the_ratios_follow(result):
    m = result["measurements"]
    assert set(m) == {
        "student_step",
        "teacher_forward",
        "spdistiller_step",
        "spdistiller_step_bfloat16_teacher",
        "keras_distiller_step",
        "input_pipeline",
    }
    for name, values in m.items():
        assert len(values["step_ms"]) >= 2, name  # warm-up round and first steps dropped
        assert values["median_ms"] > 0 and values["images_per_s"] > 0
    assert set(result["ratios"]) >= {"spdistiller_over_bound", "keras_distiller_over_spdistiller"}
    report = bench.format_report(result)
    assert "SPDistiller / (student step + teacher forward)" in report
    assert "bfloat16 teacher" in report


def test_the_keras_peer_weighs_its_sp_term_with_gamma():
    from tests.conftest import small_cnn

    teacher, student = small_cnn("t", 8), small_cnn("s", 4)
    peer = bench.keras_peer(teacher, student, ("t_group", "s_group"), gamma=250.0)
    assert isinstance(peer.distillation_losses, list)
    x = np.random.default_rng(0).random((16, 8, 8, 1), dtype="float32")
    y = np.zeros(16, "int32")
    peer.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    logs = peer.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    t = keras_spkd.build_feature_extractor(teacher, ["t_group"], False)(x)
    s = keras_spkd.build_feature_extractor(student, ["s_group"], False)(x)
    expected = 250.0 * float(keras_spkd.similarity_preserving_loss(t, s))
    np.testing.assert_allclose(logs["distillation_loss"], expected, rtol=1e-4)


def test_sp_loss_scaling_rows(tmp_path):
    rows = bench.sp_loss_scaling(batch_sizes=(8, 16), dims=(32, 64), repeats=1)
    assert [(r["b"], r["d"]) for r in rows] == [(8, 32), (8, 64), (16, 32), (16, 64)]
    assert all(r["ms"] > 0 for r in rows)


def test_torch_peer_output_is_parsed_and_reported(tmp_path, capsys):
    fake = tmp_path / "peer.py"
    fake.write_text(
        textwrap.dedent("""
        import sys
        mode = sys.argv[sys.argv.index("--mode") + 1]
        ms = {"student": 100.0, "teacher": 50.0, "distill": 160.0}[mode]
        print(f"torch {mode} bs=16: {ms:.1f} ms/step, {16000 / ms:.0f} img/s")
    """)
    )
    peer = bench.run_torch_peer(fake, 16, 3, "16,2", "16,1")
    assert peer["distill"] == {"ms_per_step": 160.0, "images_per_s": 100.0}
    out_json = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                "--teacher-arch",
                "digits-cnn-8",
                "--student-arch",
                "digits-cnn-4",
                "--pair",
                "group2:group2",
                "--batch-size",
                "16",
                "--image-size",
                "8",
                "--steps",
                "3",
                "--rounds",
                "1",
                "--torch",
                str(fake),
                "--json",
                str(out_json),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "PyTorch peer distill: 100 img/s" in printed
    saved = json.loads(out_json.read_text())
    assert saved["torch"]["distill"]["images_per_s"] == 100.0
    assert (
        main(
            [
                "bench",
                "--torch",
                str(tmp_path / "missing.py"),
                "--teacher-arch",
                "digits-cnn-8",
                "--student-arch",
                "digits-cnn-4",
                "--pair",
                "group2:group2",
                "--image-size",
                "8",
                "--steps",
                "2",
                "--rounds",
                "1",
            ]
        )
        == 2
    )


def test_the_default_peer_is_the_projects_own_script(tmp_path):
    assert bench.TORCH_PEER == ROOT / "benchmarks" / "torch_peer.py"
    assert bench.find_torch_peer() == bench.TORCH_PEER and bench.TORCH_PEER.is_file()
    with pytest.raises(FileNotFoundError, match="ships with the source checkout"):
        bench.find_torch_peer(tmp_path / "missing.py")
    with pytest.raises(FileNotFoundError):
        bench.run_torch_peer(tmp_path / "missing.py", 4, 1, "16,2", "16,1")


@pytest.fixture(scope="module")
def torch_peer():
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("torch_peer", bench.TORCH_PEER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("shapes", [((6, 4, 4, 8), (6, 2, 2, 16)), ((5, 7), (5, 3, 3, 2))])
def test_torch_peer_sp_loss_is_keras_spkds(torch_peer, shapes):
    import torch

    rng = np.random.default_rng(0)
    t, s = (rng.standard_normal(shape).astype("float32") for shape in shapes)
    ours = float(keras_spkd.similarity_preserving_loss(t, s))
    theirs = float(torch_peer.sp_loss(torch.from_numpy(t), torch.from_numpy(s)))
    np.testing.assert_allclose(theirs, ours, rtol=1e-5)
    zeros = torch.zeros(shapes[1])  # a dead layer: finite, as in keras_spkd
    assert float(torch_peer.sp_loss(torch.from_numpy(t), zeros)) == pytest.approx(
        float(keras_spkd.similarity_preserving_loss(t, np.zeros(shapes[1], "float32"))),
        rel=1e-5,
    )


@pytest.mark.parametrize("depth, width", [(16, 1), (16, 2), (22, 1)])
def test_torch_peer_builds_keras_spkds_wide_resnet(torch_peer, depth, width):
    import torch

    keras_model = wide_resnet(depth, width, input_shape=(16, 16, 3))
    torch_model = torch_peer.WideResNet(depth, width)
    keras_trainable = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
    torch_trainable = sum(p.numel() for p in torch_model.parameters())
    assert torch_trainable == keras_trainable
    keras_buffers = sum(int(np.prod(w.shape)) for w in keras_model.non_trainable_weights)
    torch_buffers = sum(b.numel() for name, b in torch_model.named_buffers() if "running" in name)
    assert torch_buffers == keras_buffers  # BN moving mean and variance
    group3, logits = torch_model(torch.zeros(2, 3, 16, 16))
    keras_group3 = keras_model.get_layer("group3").output.shape  # (None, h, w, c)
    assert tuple(group3.shape) == (2, keras_group3[3], keras_group3[1], keras_group3[2])
    assert tuple(logits.shape) == (2, 10)


def test_torch_peer_prints_the_line_bench_reads(torch_peer):
    peer = bench.run_torch_peer(None, 4, 2, "10,1", "10,1", image_size=8)
    assert set(peer) == {"student", "teacher", "distill"}
    for figures in peer.values():
        assert figures["ms_per_step"] > 0
        assert figures["images_per_s"] == pytest.approx(4000 / figures["ms_per_step"], rel=0.1)


@pytest.mark.slow
def test_bench_command_writes_its_figures(tmp_path, capsys):
    from keras_spkd.cli import main

    argv = ["bench", "--teacher-arch", "digits-cnn-16", "--student-arch", "digits-cnn-4"]
    argv += ["--pair", "group2:group2", "--batch-size", "16", "--image-size", "8"]
    assert main([*argv, "--steps", "2", "--rounds", "1", "--json", str(tmp_path / "b.json")]) == 0
    figures = json.loads((tmp_path / "b.json").read_text())
    assert figures["measurements"]["spdistiller_step"]["median_ms"] > 0
    assert "SPDistiller / (student step + teacher forward)" in capsys.readouterr().out
