"""Fixtures the unit tests share: a Project on a spec of the test's own, and what it said."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devbox.engines import open_project
from devbox.project import Project

from ..conftest import own_path
from .helpers import make_spec

# What the unit tests (and the devbox they drive in process) run: the Docker CLIs (found, never
# reached), ssh, zstd, sh and python3 (the doubles). No nvidia-smi: a test that wants one puts its double in front.
UNIT_PROGRAMS = ("docker", "docker-compose", "ssh", "zstd", "sh", "python3")


@pytest.fixture(autouse=True)
def _own_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every unit test runs on a PATH of the tests' own, so a GPU server's nvidia-smi (or a
    developer's) never decides what init writes or validate says (issue 30)."""
    monkeypatch.setenv("PATH", own_path(UNIT_PROGRAMS))


@pytest.fixture
def said() -> list[str]:
    """What the test's Project said: its ``say`` appends here."""
    return []


@pytest.fixture
def make_project(tmp_path: Path, said: list[str]) -> Callable[..., Project]:
    """make_project(**spec changes) -> a Project in tmp_path (a test module may narrow it, e.g. to
    swarm specs with its own hosts)."""

    def make(**changes: Any) -> Project:
        return open_project(make_spec(tmp_path, **changes), tmp_path / ".devbox", say=said.append, environ={})

    return make


@pytest.fixture
def project(make_project: Callable[..., Project]) -> Project:
    return make_project()
