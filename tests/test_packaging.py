"""Packaging: one version, the licence, the typing marker, a complete wheel."""

import importlib.metadata
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import keras_spkd

ROOT = Path(__file__).resolve().parents[1]


def test_installed_metadata_version_is_the_package_version():
    assert importlib.metadata.version("keras-spkd") == keras_spkd.__version__


def test_pyproject_reads_the_version_from_the_package():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    setuptools = pyproject["tool"]["setuptools"]
    assert setuptools["dynamic"]["version"] == {"attr": "keras_spkd.__version__"}
    assert "py.typed" in setuptools["package-data"]["keras_spkd"]
    assert pyproject["project"]["license"] == {"text": "Apache-2.0"}


def test_license_typing_marker_and_changelog_are_there():
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text  # the full text, not a pointer
    assert (ROOT / "keras_spkd" / "py.typed").is_file()
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{keras_spkd.__version__}]" in changelog


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = tmp_path.glob("keras_spkd-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_carries_the_version_the_marker_and_the_licence(wheel):
    assert wheel.name.startswith(f"keras_spkd-{keras_spkd.__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "keras_spkd/py.typed" in names
    assert any(n.endswith(".dist-info/LICENSE") or "/licenses/LICENSE" in n for n in names)


@pytest.mark.slow
def test_the_wheel_installs_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    source = {str(p.relative_to(ROOT)) for p in (ROOT / "keras_spkd").rglob("*.py")}
    assert sorted(source - names) == []  # every module of the source tree is installed
