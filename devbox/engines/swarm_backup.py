"""Backup and restore on a swarm: the copies run on the engine of the host's node.

A host's named volumes live on the node that runs it (README "Volumes live on a node"), and only
that node's engine mounts them, so devbox.backup_ops runs its helper containers there: the node
of the service's current task, else the node the host is pinned to (``node:``), else the only
node it may run on. That engine is reached as for `exec` and `status` (the manager's own, or
the node's ``devbox.docker-host`` label, devbox.engines.swarm_reach). For a backup the task's
container is paused there, as under compose; for a restore the service is scaled to 0 (a
stopped task's container would be restarted by the swarm) and back to what it was afterwards,
however the restore ends.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from devbox.engines.base import VolumeSite
from devbox.engines.swarm_nodes import Node, eligible, find_node
from devbox.engines.swarm_reach import NodeClients, current_task, host_container, out_of_reach
from devbox.errors import EngineError, UsageError

if TYPE_CHECKING:
    from devbox.project import Project
    from devbox.spec import Host

TASK_ALIVE = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running")


def site_node(project: Project, host: Host, service: Any, nodes: list[Node], *, restoring: bool) -> Node:
    """The node holding ``host``'s volumes: its task's, else its pinned node, else the only node
    it may run on. Raises UsageError (one line, nothing touched) when none can be told."""
    by_id = {node.id: node for node in nodes}
    task = current_task(service) if service is not None else None
    node = by_id.get(str(task.get("NodeID") or "")) if task else None
    pinned = find_node(host.node, nodes) if host.node else None
    if node is not None:
        return node
    if pinned is not None:
        return pinned
    candidates = eligible(host, nodes)
    if len(candidates) == 1:
        return candidates[0]
    what = "restored" if restoring else "found"
    raise UsageError(f"{project.spec.source}: hosts.{host.name} has no task and no node: on a swarm of "
                     f"{len(candidates)} nodes its volumes cannot be {what} (pin it with node: NAME; "
                     "`devbox status` names where it ran)")  # fmt: skip


def volume_site(project: Project, host: Host, services: Mapping[str, Any], nodes: list[Node], own: str, *,
                restoring: bool) -> VolumeSite:  # fmt: skip
    """The engine of the node with ``host``'s volumes, and the host's container there. Raises
    UsageError when that node's engine is out of reach (the fix in one line)."""
    service = services.get(host.name)
    if restoring and service is not None and not host.node and len(eligible(host, nodes)) > 1:
        raise UsageError(f"{project.spec.source}: hosts.{host.name} is not pinned: started again after the "
                         "restore, the swarm may place it on another node than its restored volumes (pin it "
                         "with node: NAME)")  # fmt: skip
    node = site_node(project, host, service, nodes, restoring=restoring)
    clients = NodeClients(project.client, own)
    client = clients.get(node)
    if client is None:
        why = clients.why.get(node.id)
        raise UsageError(f"{project.spec.source}: {out_of_reach(host.name, node)}{f' ({why})' if why else ''}; "
                         "its volumes are there")  # fmt: skip
    return VolumeSite(client, host_container(client, project, host.name), f" on node {node.hostname}")


def _replicas(service: Any) -> int:
    return int(((service.attrs.get("Spec") or {}).get("Mode") or {}).get("Replicated", {}).get("Replicas", 1))


@contextlib.contextmanager
def scaled_down(project: Project, host: Host, service: Any, site: VolumeSite, seconds: float = 60) -> Iterator[None]:
    """The service scaled to 0 while its volumes are refilled (its task's container gone or
    stopped on the node), and back to its replicas afterwards, however the restore ends."""
    if service is None:
        yield
        return
    replicas = _replicas(service)
    if replicas == 0:
        yield
        return
    project.say(f"{host.name}: scaling its service to 0 for the restore{site.where}")
    service.scale(0)
    deadline = time.monotonic() + seconds
    while any(t["Status"]["State"] in TASK_ALIVE for t in service.tasks()):
        if time.monotonic() > deadline:
            raise EngineError(f"service {service.name}: its task did not stop within {seconds:.0f} s "
                              "(see `docker service ps`); nothing was restored")  # fmt: skip
        time.sleep(0.2)
    _wait_stopped(project, host, site, deadline)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            service.reload()  # scaling changed its version
        service.scale(replicas)
        project.say(f"{host.name}: its service scaled back to {replicas}")
        _wait_running(service, seconds * 2)


def _wait_running(service: Any, seconds: float) -> None:
    """Until the service's new task runs (bounded: `up`, which follows, says what went wrong),
    so `up` finds the service as it made it, running, and leaves it alone."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tasks = service.tasks(filters={"desired-state": "running"})
        if any(t["Status"]["State"] == "running" for t in tasks):
            return
        if any(t["Status"]["State"] in ("failed", "rejected") for t in tasks):
            return
        time.sleep(0.3)


def _wait_stopped(project: Project, host: Host, site: VolumeSite, deadline: float) -> None:
    """Until no container of the host runs on the node (a shut-down task's container stops a
    moment after the task says so)."""
    from devbox.labels import LABEL_PREFIX

    label = [f"{LABEL_PREFIX}project={project.spec.project}", f"{LABEL_PREFIX}host={host.name}"]
    while site.client.containers.list(filters={"label": label}) and time.monotonic() < deadline:
        time.sleep(0.2)
