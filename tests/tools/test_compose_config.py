"""Rendered compose files as Compose v2 itself reads them (`docker compose config`): valid, without
warnings, and with every hostile value resolved literally (nothing substituted from the caller's
environment)."""

from __future__ import annotations

import json
import os

from devbox.layout import COMPOSE_FILE
from devbox.project import render_to
from devbox.scaffold import init_project
from devbox.spec import load_spec

from ..unit.test_hostile import nasty_env_spec, unescape
from .helpers import run


def test_rendered_output_passes_docker_compose_config(tmp_path, compose):
    init_project(tmp_path, "lab", force=False)
    render_to(load_spec(tmp_path / "devbox.yaml"), tmp_path / ".devbox", {})
    result = run([*compose, "-f", str(tmp_path / ".devbox" / COMPOSE_FILE), "config", "-q"])
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"compose warned: {result.stderr}"


def test_docker_compose_config_resolves_values_literally(tmp_path, compose):
    spec, env = nasty_env_spec(tmp_path)
    out = tmp_path / ".devbox"
    render_to(spec, out, {})
    # Variables compose would substitute if the file let it: any leak shows as INJECTED.
    environ = {**os.environ, "HOME": "/INJECTED", "X": "INJECTED", "a": "INJECTED"}
    result = run([*compose, "-f", str(out / COMPOSE_FILE), "config", "--format", "json"], tmp_path, env=environ)
    assert result.returncode == 0, result.stderr
    assert "INJECTED" not in result.stdout
    resolved = json.loads(result.stdout)
    assert set(resolved["services"]) == {"master", "0x10"}
    assert set(resolved["networks"]) == {"1e3"}
    for name in ("master", "0x10"):
        # `config` prints a compose file again, so it escapes `$` again: undo it as compose would.
        assert unescape(resolved["services"][name]["environment"]) == env
