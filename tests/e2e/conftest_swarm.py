"""The multi-node rig: a real three-node swarm and a real registry on this machine (scripts/swarm.sh).

A plugin module, not a conftest: a module that wants the fixture imports it
(``from .conftest_swarm import multinode_swarm  # noqa: F401``), or tests/e2e/conftest.py does
that once for every e2e module. docs/multinode.md describes the rig.

The fixture makes the rig once per session and removes it at the end -- unless it was already
up when the session started: then it is left up, as it was found.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "swarm.sh"
UP_TIMEOUT_S = 300  # the script bounds each of its waits; this bounds the whole


@dataclass(frozen=True)
class Node:
    """One swarm node: its hostname (the swarm node name), address on the rig's network, engine."""

    name: str
    address: str
    docker_host: str
    role: str  # "manager" or "worker"


@dataclass(frozen=True)
class Rig:
    """What scripts/swarm.sh made: the nodes (n1 is the manager), the registry, the GPU node."""

    nodes: dict[str, Node]
    registry: str  # HOST:PORT, plain HTTP; every node engine treats it as insecure
    gpu_node: str  # the one node advertising NVIDIA-GPU generic resources
    gpu_count: int

    @property
    def manager(self) -> Node:
        return next(node for node in self.nodes.values() if node.role == "manager")

    def client(self, node: str) -> Any:
        """A docker SDK client for one node's engine (the caller closes it)."""
        import docker

        return docker.DockerClient(base_url=self.nodes[node].docker_host, timeout=120)

    def load(self, image: str, *nodes: str) -> None:
        """Copy an image of the main engine to some nodes (all if none named), if missing there."""
        run_script("load", image, *nodes, timeout=900)


def run_script(*args: str, timeout: float = UP_TIMEOUT_S, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                            check=False, stdin=subprocess.DEVNULL)  # fmt: skip
    if check and result.returncode != 0:
        pytest.fail(f"scripts/swarm.sh {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}",
                    pytrace=False)  # fmt: skip
    return result


def parse_status(text: str) -> Rig:
    """Read `swarm.sh status` lines: `node NAME ADDRESS DOCKER_HOST ROLE STATE`,
    `registry ADDRESS STATE`, `gpu NODE KIND COUNT`."""
    nodes: dict[str, Node] = {}
    registry, gpu_node, gpu_count = "", "", 0
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["node"] and len(words) == 6:
            nodes[words[1]] = Node(words[1], words[2], words[3], words[4])
        elif words[:1] == ["registry"] and len(words) == 3:
            registry = words[1]
        elif words[:1] == ["gpu"] and len(words) == 4:
            gpu_node, gpu_count = words[1], int(words[3])
    return Rig(nodes, registry, gpu_node, gpu_count)


@pytest.fixture(scope="session")
def multinode_swarm() -> Iterator[Rig]:
    """The rig, up for the whole session; removed at its end if this session made it."""
    found_up = run_script("status", check=False).returncode == 0
    result = run_script("up")
    rig = parse_status(result.stdout)
    assert len(rig.nodes) == 3 and rig.registry, result.stdout
    try:
        yield rig
    finally:
        if not found_up:
            run_script("down", check=False)
