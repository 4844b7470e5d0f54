"""Fixtures the unit tests share: a Project on a spec of the test's own, and what it said."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devbox.engines import open_project
from devbox.project import Project

from .helpers import make_spec


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
