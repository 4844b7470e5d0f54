"""The multi-node rig itself works: three ready nodes, a service pinned to each runs an image
pushed to the registry and pulled by digest, tasks reach each other by name across nodes, a
host-mode port answers on its node's address, and GPU reservations land on the GPU node."""

from __future__ import annotations

import contextlib
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devbox.docker_api import list_containers

from .conftest_swarm import Rig, multinode_swarm  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e

# perl is in Debian's minbase (perl-base): a TCP server answering with the container's hostname
SERVE = ("use IO::Socket::INET; my $s = IO::Socket::INET->new(LocalPort => 8080, Listen => 5, ReuseAddr => 1)"
         " or die $!; while (my $c = $s->accept) { print $c `hostname`; close $c }")  # fmt: skip
ASK = 'use IO::Socket::INET; my $c = IO::Socket::INET->new(PeerAddr => $ARGV[0], Timeout => 5) or die "$@\\n"; print <$c>'
QUICK_STOP = {"stop_grace_period": 10**9}  # 1 s: perl and sleep as PID 1 ignore SIGTERM
HOST_PORT = 18080  # published in host mode: on the address of the node that runs the task


def wait_until(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)
    return value


def running_node(manager: Any, service_name: str) -> str | None:
    """The hostname of the node running the service's task, once it runs."""
    service = manager.services.get(service_name)
    for task in service.tasks(filters={"desired-state": "running"}):
        if task["Status"]["State"] == "running":
            return str(manager.nodes.get(task["NodeID"]).attrs["Description"]["Hostname"])
    return None


@pytest.fixture
def rig_clients(multinode_swarm: Rig) -> Iterator[dict[str, Any]]:  # noqa: F811
    clients = {name: multinode_swarm.client(name) for name in multinode_swarm.nodes}
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture
def pushed_image(multinode_swarm: Rig, rig_clients: dict[str, Any], base_image: str) -> str:  # noqa: F811
    """The base image pushed from the manager to the registry under a fresh name: REPO@DIGEST."""
    manager = multinode_swarm.manager.name
    multinode_swarm.load(base_image, manager)
    repo = f"{multinode_swarm.registry}/rig-smoke-{secrets.token_hex(3)}"
    rig_clients[manager].images.get(base_image).tag(repo, "1")
    digest = None
    for event in rig_clients[manager].images.push(repo, tag="1", stream=True, decode=True):
        assert "error" not in event, event
        digest = event.get("aux", {}).get("Digest", digest)
    assert digest, f"no digest from pushing {repo}"
    rig_clients[manager].images.remove(f"{repo}:1")
    return f"{repo}@{digest}"


def tasks_left(clients: dict[str, Any], prefix: str) -> list[str]:
    """Containers of services named PREFIX-... still on any node."""
    label = "com.docker.swarm.service.name"
    # devbox's listing: a task container going away between listing and inspecting is left out
    return [c.name for client in clients.values() for c in list_containers(client, all=True, filters={"label": label})
            if c.labels[label].startswith(f"{prefix}-")]  # fmt: skip


def ask(client: Any, service_name: str, peer: str, timeout: float = 30) -> str:
    """From inside the service's task container on this node: connect to peer, return its answer.
    Retried for a while: a new task's name reaches the other nodes by gossip, not at once."""
    container = client.containers.list(filters={"label": f"com.docker.swarm.service.name={service_name}"})[0]
    deadline = time.monotonic() + timeout
    while True:
        code, output = container.exec_run(["perl", "-e", ASK, peer])
        if code == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert code == 0, f"{service_name} -> {peer}: {output.decode().strip()}"
    return str(output.decode().strip())


def test_three_nodes_registry_overlay_and_host_ports(multinode_swarm, rig_clients, pushed_image):  # noqa: F811
    from docker.types import EndpointSpec, Resources

    rig = multinode_swarm
    manager = rig_clients[rig.manager.name]
    described = {n.attrs["Description"]["Hostname"]: n.attrs for n in manager.nodes.list()}
    assert set(described) == {"n1", "n2", "n3"}
    assert all(n["Status"]["State"] == "ready" and n["Spec"]["Availability"] == "active" for n in described.values())
    gpus = [r for r in described[rig.gpu_node]["Description"]["Resources"].get("GenericResources") or []
            if r["NamedResourceSpec"]["Kind"] == "NVIDIA-GPU"]  # fmt: skip
    assert len(gpus) == rig.gpu_count >= 1

    prefix = f"rig-{secrets.token_hex(3)}"
    network = manager.networks.create(f"{prefix}-net", driver="overlay", attachable=True)
    services = []
    try:
        for node in rig.nodes:  # one service pinned to each node, the image by digest from the registry
            services.append(manager.services.create(
                pushed_image, ["perl", "-e", SERVE], name=f"{prefix}-{node}", hostname=f"task-on-{node}",
                constraints=[f"node.hostname=={node}"], networks=[network.id],
                endpoint_spec=EndpointSpec(mode="dnsrr", ports={HOST_PORT: (8080, "tcp", "host")}), **QUICK_STOP,
            ))  # fmt: skip
        services.append(manager.services.create(  # unpinned, wants a GPU: only the GPU node can run it
            pushed_image, ["sleep", "600"], name=f"{prefix}-gpu", resources=Resources(generic_resources={"NVIDIA-GPU": 1}),
            **QUICK_STOP,
        ))  # fmt: skip
        for node in rig.nodes:
            assert wait_until(lambda n=node: running_node(manager, f"{prefix}-{n}"), f"{prefix}-{node}") == node
        assert wait_until(lambda: running_node(manager, f"{prefix}-gpu"), "the GPU service") == rig.gpu_node

        # every node pulled the pushed image from the registry, by digest
        for node, client in rig_clients.items():
            assert any(pushed_image in d for i in client.images.list() for d in i.attrs.get("RepoDigests") or []), node
        # a task on n2 finds the one on n3 by its service name, over the overlay network, and back
        assert ask(rig_clients["n2"], f"{prefix}-n2", f"{prefix}-n3:8080") == "task-on-n3"
        assert ask(rig_clients["n3"], f"{prefix}-n3", f"{prefix}-n2:8080") == "task-on-n2"
        # a host-mode port answers on the address of the node that runs the task, from the machine
        for node in ("n2", "n3"):
            with socket.create_connection((rig.nodes[node].address, HOST_PORT), timeout=5) as conn:
                assert conn.makefile().read().strip() == f"task-on-{node}"
    finally:
        for service in services:
            with contextlib.suppress(Exception):
                service.remove()
        wait_until(lambda: not tasks_left(rig_clients, prefix), "the tasks to go", 60)
        network.remove()
