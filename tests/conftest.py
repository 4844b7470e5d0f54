"""Shared pytest fixtures.

The section below is the real-Docker-engine test infrastructure used by the
e2e tests (marker ``e2e``). ``scripts/engine.sh`` provides the engine, the
local base image and Compose v2; ``.ci/run`` calls it before pytest.

In CI (``CI=true``) or with ``DEVBOX_E2E_REQUIRED=1`` a missing engine is a
test *failure*, never a skip, so a broken engine cannot hide behind green CI.
Elsewhere the fixtures try ``scripts/engine.sh`` once and skip if that fails.
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

# --------------------------------------------------------------------------
# Docker engine fixtures (e2e)
# --------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent
ENGINE_SCRIPT = REPO_ROOT / "scripts" / "engine.sh"
BASE_IMAGE = "devbox-test/bookworm:base"
# debootstrap on a fresh machine takes well under a minute here; allow slack.
ENGINE_SCRIPT_TIMEOUT_S = 1200

_engine_script_result: str | None = None  # run scripts/engine.sh at most once


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e: end-to-end test against a real Docker engine (see scripts/engine.sh)",
    )


def _e2e_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("DEVBOX_E2E_REQUIRED") == "1"


def _engine_unavailable(reason: str) -> NoReturn:
    """Fail in CI / when required, skip otherwise. Never returns."""
    if _e2e_required():
        pytest.fail(
            f"Docker engine required (CI=true or DEVBOX_E2E_REQUIRED=1) but {reason}. "
            f"Run `bash scripts/engine.sh` first.",
            pytrace=False,
        )
    pytest.skip(f"no Docker engine: {reason}")


def _connect() -> tuple[Any | None, str]:
    """Return (client, "") if the engine answers a ping, else (None, reason)."""
    try:
        import docker  # imported lazily: unit tests must not need it
    except ImportError:
        return None, "the Python package 'docker' is not installed"
    client = None
    error = ""
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # any failure means "no engine"
        error = f"docker.from_env().ping() failed: {type(exc).__name__}: {exc}"
    if not error:
        return client, ""
    if client is not None:
        client.close()
    # docker-py leaves the failed connection's socket unclosed; collect it now with
    # its ResourceWarning silenced, or filterwarnings=error fails a later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    return None, error


def _run_engine_script() -> str:
    """Run scripts/engine.sh once per session; return "" on success, else why not."""
    global _engine_script_result
    if _engine_script_result is not None:
        return _engine_script_result
    bash = shutil.which("bash")
    if bash is None or not ENGINE_SCRIPT.is_file():
        _engine_script_result = f"cannot run {ENGINE_SCRIPT} (bash or script missing)"
        return _engine_script_result
    try:
        proc = subprocess.run(
            [bash, str(ENGINE_SCRIPT)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=ENGINE_SCRIPT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _engine_script_result = f"{ENGINE_SCRIPT.name} did not complete: {exc}"
        return _engine_script_result
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
        _engine_script_result = f"{ENGINE_SCRIPT.name} exited {proc.returncode}:\n{tail}"
    else:
        _engine_script_result = ""
    return _engine_script_result


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A ``docker.DockerClient`` connected to a live engine (see module doc)."""
    client, reason = _connect()
    if client is None and not _e2e_required():
        # Outside CI, try to bring the engine up ourselves (needs root).
        script_error = _run_engine_script()
        client, reason = _connect()
        if client is None and script_error:
            reason = f"{reason}; {script_error}"
    if client is None:
        _engine_unavailable(reason)
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client: Any) -> str:
    """Tag of the local Debian bookworm base image, built by scripts/engine.sh."""
    import docker.errors

    try:
        docker_client.images.get(BASE_IMAGE)
        return BASE_IMAGE
    except docker.errors.ImageNotFound:
        pass
    script_error = _run_engine_script()
    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        _engine_unavailable(f"image {BASE_IMAGE} is missing; {script_error or 'engine.sh did not build it'}")
    return BASE_IMAGE


# --------------------------------------------------------------------------
# Networking helpers
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """Factory: ``free_port()`` returns a currently free TCP port on 127.0.0.1,
    never the same one twice in a test session (so two hosts in one test
    cannot be handed the same port)."""
    handed_out: set[int] = set()

    def _free_port() -> int:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port not in handed_out:
                handed_out.add(port)
                return port
        raise RuntimeError("could not find an unused TCP port on 127.0.0.1")

    return _free_port
