"""The benchmark measures what it says (tiny models; no timing is asserted)."""

import json
import textwrap

import pytest

from keras_spkd import bench
from keras_spkd.cli import main


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
    assert m["spdistiller_step"]["peak_rss_mib"] > 50
    r = result["ratios"]
    bound = m["student_step"]["median_ms"] + m["teacher_forward"]["median_ms"]
    assert r["spdistiller_over_bound"] == pytest.approx(m["spdistiller_step"]["median_ms"] / bound)
    assert r["keras_distiller_over_spdistiller"] == pytest.approx(
        m["keras_distiller_step"]["median_ms"] / m["spdistiller_step"]["median_ms"]
    )
    report = bench.format_report(result)
    assert "SPDistiller / (student step + teacher forward)" in report
    assert "bfloat16 teacher" in report


def test_sp_loss_scaling_rows(tmp_path):
    rows = bench.sp_loss_scaling(batch_sizes=(8, 16), dims=(32, 64), repeats=1)
    assert [(r["b"], r["d"]) for r in rows] == [(8, 32), (8, 64), (16, 32), (16, 64)]
    for r in rows:
        assert r["ms"] > 0 and r["ns_per_b2d"] == pytest.approx(
            r["ms"] * 1e6 / (r["b"] ** 2 * r["d"])
        )
        assert r["b2_plus_bd_mib"] == pytest.approx((r["b"] ** 2 + r["b"] * r["d"]) * 4 / 2**20)


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
