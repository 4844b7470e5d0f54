"""Issue 14, "how to prove it": every spec `validate` accepts among the hostile-input property
tests' specs (tests/unit/test_hostile.py) renders to a compose file Compose v2 itself accepts.

A sample of them also goes through `up` on the real engine (tests/e2e/test_accepted_up.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devbox.engines import spec_rules
from devbox.errors import SpecError
from devbox.layout import COMPOSE_FILE
from devbox.project import render_to
from devbox.spec import build_spec

from ..unit.test_hostile import HYPOTHESIS, accepted_specs, hostile_specs
from .helpers import run

# Rendering many specs: the fewest password-hash rounds (the fixture is in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("fast_hashes")


def compose_config_of_accepted(data: Any, compose: list[str]) -> None:
    """If validate accepts ``data``, `docker compose config` accepts its rendering, without a warning."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            spec = build_spec(data, Path(folder), rules=spec_rules)
        except SpecError:
            return
        out = Path(folder) / ".devbox"
        render_to(spec, out, {})
        result = run([*compose, "-f", str(out / COMPOSE_FILE), "config", "-q"], Path(folder))
        assert result.returncode == 0, f"{result.stderr}\n{data!r}"
        assert result.stderr.strip() == "", f"compose warned: {result.stderr}\n{data!r}"


@settings(HYPOTHESIS, max_examples=60)
@given(st.one_of(hostile_specs(), accepted_specs()))
def test_every_accepted_spec_passes_docker_compose_config(compose, data):
    compose_config_of_accepted(data, compose)
