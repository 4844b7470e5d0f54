"""Reaching each host of a swarm on the node that runs it.

A manager's API lists services, tasks and nodes of the whole swarm, and streams any task's logs
(``service.logs``), but it shows, execs into and removes volumes of its own node's containers
only. Docker exposes no other node's engine through the swarm, so devbox connects to a node's
engine when the node says where it is: the node label ``devbox.docker-host`` (an address the
Docker SDK takes: ``ssh://admin@gpu2``, ``tcp://10.0.0.2:2376`` with TLS set in the
environment, ``unix:///...``), set once by an administrator with `docker node update
--label-add devbox.docker-host=ssh://admin@gpu2 gpu2`. A node without it is out of reach: the
commands that look inside its hosts say so in one line, with that fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from devbox.engines.base import Reach
from devbox.engines.swarm_nodes import Node
from devbox.render import LABEL_PREFIX

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

    from devbox.project import Project
    from devbox.spec import Host

DOCKER_HOST_LABEL = f"{LABEL_PREFIX}docker-host"
_TASK_ORDER = ("running", "starting", "preparing", "ready", "accepted", "assigned", "pending", "new")


def connect_node(url: str) -> docker.DockerClient:
    """A client for one node's engine (tests replace this)."""
    import docker

    client = docker.DockerClient(base_url=url, timeout=60)
    client.ping()
    return client


def out_of_reach(host: str, node: Node) -> str:
    return (f"host {host} runs on swarm node {node.hostname}, whose engine this machine cannot reach: label the "
            f"node with it (docker node update --label-add {DOCKER_HOST_LABEL}=ssh://USER@{node.address} "
            f"{node.hostname}), or run devbox with DOCKER_HOST pointing at that node")  # fmt: skip


class NodeClients:
    """Clients of the nodes' engines, made once each: the manager's for its own node, else the
    one its ``devbox.docker-host`` label names; None where there is none (or it does not answer)."""

    def __init__(self, manager: docker.DockerClient, own_id: str) -> None:
        self._manager = manager
        self._own = own_id
        self._made: dict[str, docker.DockerClient | None] = {}
        self.why: dict[str, str] = {}  # node id -> why its engine did not answer

    def get(self, node: Node) -> docker.DockerClient | None:
        if node.id == self._own:
            return self._manager
        if node.id not in self._made:
            url = node.labels.get(DOCKER_HOST_LABEL, "")
            self._made[node.id] = None
            if url:
                try:
                    self._made[node.id] = connect_node(url)
                except Exception as exc:  # noqa: BLE001 - any failure to connect: out of reach, said why
                    self.why[node.id] = f"{url}: {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}"
        return self._made[node.id]


def current_task(service: Any) -> dict[str, Any] | None:
    """The task the service runs (or is starting), else its latest one."""
    tasks = service.tasks()
    if not tasks:
        return None
    wanted = [t for t in tasks if t.get("DesiredState") == "running"] or tasks
    rank = {state: len(_TASK_ORDER) - i for i, state in enumerate(_TASK_ORDER)}
    return max(wanted, key=lambda t: (rank.get(t["Status"]["State"], 0), str(t.get("UpdatedAt", ""))))


def host_container(client: docker.DockerClient, project: Project, host: str) -> Container | None:
    """The host's container on one engine (a running one wins)."""
    label = [f"{LABEL_PREFIX}project={project.spec.project}", f"{LABEL_PREFIX}host={host}"]
    found = client.containers.list(all=True, filters={"label": label})
    found.sort(key=lambda c: c.status == "running")
    return found[-1] if found else None


def locate(project: Project, hosts: list[Host], services: dict[str, Any], nodes: list[Node],
           own_id: str) -> Reach:  # fmt: skip
    """Each host's container on the node its task runs on; where that node is out of reach, the
    fix. The manager's own containers of hosts that now run elsewhere are old ones: dropped."""
    containers = project.containers()
    by_id = {node.id: node for node in nodes}
    clients = NodeClients(project.client, own_id)
    unreachable: dict[str, str] = {}
    details: dict[str, dict[str, Any]] = {}
    for host in hosts:
        service = services.get(host.name)
        task = current_task(service) if service else None
        node = by_id.get(str(task.get("NodeID") or "")) if task else None
        if task is None or node is None:
            continue
        details[host.name] = {"node": node.hostname, "node_address": node.address, "task": task["Status"]["State"],
                              "task_error": task["Status"].get("Err") or None}  # fmt: skip
        if node.id == own_id:
            continue
        containers.pop(host.name, None)
        client = clients.get(node)
        container = host_container(client, project, host.name) if client is not None else None
        if container is not None:
            containers[host.name] = container
        elif client is None:
            why = clients.why.get(node.id)
            unreachable[host.name] = out_of_reach(host.name, node) + (f" ({why})" if why else "")
    return Reach(containers, unreachable, details)


def remove_volumes(project: Project, names: set[str], nodes: list[Node], own_id: str) -> list[str]:
    """Remove the named volumes on every node this machine can reach; returns the hostnames of
    the nodes it cannot (their volumes, if any, stay)."""
    clients = NodeClients(project.client, own_id)
    missed = []
    for node in nodes:
        client = clients.get(node)
        if client is None:
            missed.append(node.hostname)
            continue
        for name in sorted(names):
            # the engine's name filter matches parts of names: another project's volume too
            for volume in client.volumes.list(filters={"name": name}):
                if volume.name == name:
                    remove_volume(volume)
    return missed


def remove_volume(volume: Any, seconds: float = 30) -> None:
    """Remove a volume, again while the engine says it is in use (409): a task's container on
    that node is let go a moment after its service is removed. Bounded: then the error stands."""
    import time

    import docker.errors

    deadline = time.monotonic() + seconds
    while True:
        try:
            volume.remove(force=True)
            return
        except docker.errors.APIError as exc:
            if "in use" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
