"""The package as a user installs it: a wheel (or an sdist) built from the project's own files,
not the editable checkout, which reads the source tree and hides every file the build leaves out."""

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What a build reads: pyproject.toml names the packages, configs/ is installed as fashionbench.configs.
BUILD_INPUTS = ("pyproject.toml", "README.md", "fashionbench", "configs")


def source_files(folder: str, suffix: str) -> set[str]:
    """The checkout's files under ``folder`` with this suffix, as paths relative to the folder."""
    base = ROOT / folder
    return {path.relative_to(base).as_posix() for path in base.rglob(f"*{suffix}") if "__pycache__" not in path.parts}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """The wheel and the sdist, built by setuptools' PEP 517 hooks from a copy of the build's
    inputs (a build in the checkout would leave build/ and *.egg-info behind)."""
    tree = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, tree / name)
    dist = tree / "dist"
    dist.mkdir()
    built = []
    for hook in ("build_wheel", "build_sdist"):  # one process each: in one, setuptools' state sends the sdist astray
        # The hooks print setuptools' progress to stdout: the built file's name goes to a file.
        code = f"from setuptools import build_meta; import sys, pathlib; pathlib.Path(sys.argv[2]).write_text(" \
               f"build_meta.{hook}(sys.argv[1]))"
        result = subprocess.run([sys.executable, "-c", code, str(dist), str(tree / "built.txt")], cwd=tree,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        built.append((tree / "built.txt").read_text())
    wheel_name, sdist_name = built
    return dist / wheel_name, dist / sdist_name


def test_the_wheel_carries_every_config_file_and_module(built):
    wheel, _ = built
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {name.removeprefix("fashionbench/configs/") for name in names if name.startswith("fashionbench/configs/")}
    modules = {name.removeprefix("fashionbench/") for name in names if name.endswith(".py")}
    assert source_files("configs", ".yaml") - configs == set()
    assert source_files("fashionbench", ".py") - modules == set()
    # The deepest groups, the ones a one-level glob missed.
    assert {"hydra/job_logging/fashionbench.yaml", "hydra/launcher/slurm.yaml"} <= configs


def test_the_sdist_carries_every_config_file(built):
    _, sdist = built
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    configs = {name.removeprefix("configs/") for name in names if name.startswith("configs/")}
    assert source_files("configs", ".yaml") - configs == set()


def test_the_installed_wheel_composes_its_config_from_another_directory(built, tmp_path):
    wheel, _ = built
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                              "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Only the installed copy on the path: the checkout (and its editable install) are not importable here.
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"}
    probe = subprocess.run([sys.executable, "-c", "import fashionbench, sys; print(fashionbench.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip().startswith(str(site)), probe.stdout + probe.stderr
    result = subprocess.run([sys.executable, "-m", "fashionbench.run", "--cfg", "job", "hydra/launcher=slurm",
                             "hydra/job_logging=fashionbench"], cwd=elsewhere, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "freeze: 4" in result.stdout and "name: synthetic" in result.stdout
    assert list(elsewhere.iterdir()) == []  # --cfg job writes nothing
