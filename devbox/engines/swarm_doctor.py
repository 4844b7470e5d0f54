"""`doctor` on a swarm: what `up` needs of the nodes, read from the manager before anything runs.

Nodes ready and active; hosts placeable (their node, labels, GPUs); the GPU nodes' NVIDIA
Container Toolkit new enough to honour the GPUs swarm assigns, where a node shows its version;
the registry answering, or without one the image on every node a host may run on; each pinned
host's SSH port free on its node; and named volumes of hosts that may move between nodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from devbox.engines.base import DoctorLine
from devbox.engines.swarm_nodes import (
    GPU_RESOURCE,
    TOOLKIT_FIXED,
    Node,
    eligible,
    find_node,
    image_missing,
    nodes_for,
    placement_problems,
    registry_problems,
    toolkit_version,
)
from devbox.engines.swarm_reach import NodeClients
from devbox.render import named_volumes

if TYPE_CHECKING:
    import docker

    from devbox.project import Project
    from devbox.spec import Spec


def node_lines(spec: Spec, nodes: list[Node]) -> list[DoctorLine]:
    """Every node ready and active, and every host placeable on them."""
    down = [f"{n.hostname} ({'ready' if n.ready else 'not ready'}, {'active' if n.active else 'not active'})"
            for n in nodes if not n.usable]  # fmt: skip
    lines: list[DoctorLine] = [("swarm", "nodes", not down, f"not ready and active: {', '.join(down)} (see "
                                "`docker node ls`)" if down else f"{len(nodes)} ready and active: "
                                + ", ".join(sorted(n.hostname for n in nodes)))]  # fmt: skip
    problems = placement_problems(spec, nodes)
    lines.append(("swarm", "placement", not problems, "; ".join(problems) or "every host has a node to run on"))
    return lines


def gpu_lines(spec: Spec, nodes: list[Node]) -> list[DoctorLine]:
    """The nodes advertising NVIDIA-GPUs, and each one's toolkit: before 1.19 it ignores the
    UUIDs swarm assigns a task (NVIDIA/nvidia-container-toolkit#1599), so every task sees every
    GPU of its node. A node shows the version only as an engine label or plugin name; where it
    does not, that is said, not guessed."""
    if not any(host.gpus.wanted for host in spec.hosts):
        return []
    gpu_nodes = [node for node in nodes if node.gpus and node.usable]
    lines: list[DoctorLine] = [("swarm", "gpu nodes", bool(gpu_nodes), ", ".join(
        f"{n.hostname}: {n.gpus} {GPU_RESOURCE}" for n in gpu_nodes) or f"no ready, active node advertises "
        f"{GPU_RESOURCE} (node-generic-resources in each GPU node's daemon.json)")]  # fmt: skip
    fixed = ".".join(map(str, TOOLKIT_FIXED))
    for node in gpu_nodes:
        version = toolkit_version(node)
        if version is None:
            lines.append((node.hostname, "nvidia toolkit", None, f"version not shown by the node's engine: before "
                          f"{fixed} it ignores the GPUs swarm assigns (NVIDIA/nvidia-container-toolkit#1599); "
                          "check `nvidia-ctk --version` there"))  # fmt: skip
        else:
            shown = ".".join(map(str, version))
            ok = version >= TOOLKIT_FIXED
            lines.append((node.hostname, "nvidia toolkit", ok, f"{shown}" if ok else f"{shown}: before {fixed} "
                          "it ignores the GPUs swarm assigns, every task sees all GPUs of the node "
                          "(NVIDIA/nvidia-container-toolkit#1599): upgrade it"))  # fmt: skip
    return lines


def image_lines(client: docker.DockerClient, spec: Spec, tag: str | None, nodes: list[Node],
                own: str) -> list[DoctorLine]:  # fmt: skip
    """The registry answers; without one, every node a host may run on has the image."""
    if spec.image.registry:
        problems = registry_problems(spec)
        return [("swarm", "registry", not problems, "; ".join(problems) or f"{spec.image.registry} answers; `up` "
                 "pushes the image there and every node pulls it by digest")]  # fmt: skip
    others = [node for node in nodes_for(spec, nodes) if node.id != own]
    if not others:
        return [("swarm", "image", True, "every host runs on this node: no registry needed")]
    if tag is None or not client.images.list(name=tag):
        return [("swarm", "image", False, f"not built yet, and hosts may run on other nodes "
                 f"({', '.join(n.hostname for n in others)}): set image.registry, or build it (`devbox up`) and "
                 "copy it to each of them")]  # fmt: skip
    missing = image_missing(client, spec, tag, others)
    where = "; ".join(f"{name}: {why}" for name, why in sorted(missing.items()))
    return [("swarm", "image", not missing, f"missing on nodes a host may run on ({where}): set image.registry"
             if missing else f"{tag} on every node a host may run on")]  # fmt: skip


def _publishes(service: Any, port: int) -> str | None:
    """How a service publishes ``port`` ("ingress", "host"), if it does."""
    endpoint = service.attrs.get("Endpoint") or {}
    for published in (endpoint.get("Ports") or (endpoint.get("Spec") or {}).get("Ports") or []):
        if published.get("PublishedPort") == port:
            return str(published.get("PublishMode") or "ingress")
    return None


def _runs_on(service: Any, node_id: str) -> bool:
    return any(t.get("NodeID") == node_id and t["Status"]["State"] in ("running", "starting", "preparing")
               for t in service.tasks(filters={"desired-state": "running"}))  # fmt: skip


def _container_ports(client: docker.DockerClient) -> dict[int, str]:
    """Host ports the engine's running containers publish: port -> container name."""
    taken = {}
    for container in client.containers.list():
        for bindings in ((container.attrs.get("HostConfig") or {}).get("PortBindings") or {}).values():
            for binding in bindings or []:
                if str(binding.get("HostPort") or "").isdigit():
                    taken[int(binding["HostPort"])] = container.name
    return taken


def port_lines(project: Project, nodes: list[Node], own: str) -> list[DoctorLine]:
    """Each pinned host's SSH port on its node: no other service publishes it there (in ingress
    mode every node's port is taken), and no container of that node's engine does, where this
    machine can reach that engine."""
    spec = project.spec
    mine = {f"{spec.project}_{host.name}" for host in spec.hosts}
    services = [s for s in project.client.services.list() if s.name not in mine]
    clients = NodeClients(project.client, own)
    lines: list[DoctorLine] = []
    for host in spec.hosts:
        node = find_node(host.node, nodes) if host.node else None
        if node is None:
            continue
        busy = [f"service {s.name} ({mode})" for s in services
                if (mode := _publishes(s, host.ssh_port)) and (mode == "ingress" or _runs_on(s, node.id))]  # fmt: skip
        client = clients.get(node)
        if client is not None:
            ours = f"{spec.project}_{host.name}"
            busy += [f"container {name}" for port, name in _container_ports(client).items()
                     if port == host.ssh_port and not name.startswith(ours + ".")]  # fmt: skip
        reach = "" if client is not None else " (its own containers not checked: node out of reach)"
        lines.append((host.name, "port", not busy, f"{host.ssh_port} on {node.hostname} taken by "
                      f"{', '.join(busy)}: pick another ssh_port" if busy else
                      f"{host.ssh_port} free on {node.hostname}{reach}"))  # fmt: skip
    return lines


def volume_warnings(spec: Spec, nodes: list[Node]) -> list[str]:
    """Hosts with named volumes that may run on more than one node: moved, they find an empty
    volume on the new node (the old one keeps the data)."""
    if len([node for node in nodes if node.usable]) < 2:
        return []
    warnings = []
    for host in spec.hosts:
        volumes = named_volumes(spec, host)
        where = eligible(host, nodes)
        if volumes and len(where) > 1:
            warnings.append(f"hosts.{host.name}: its volumes ({', '.join(volumes)}) live on the node that runs "
                            f"it, and it may run on {len(where)} nodes: moved, it finds them empty; pin it "
                            "with node:")  # fmt: skip
    return warnings


def doctor_lines(project: Project, nodes: list[Node], own: str, tag: str | None) -> list[DoctorLine]:
    """Every swarm check of `doctor`, in a readable order."""
    spec = project.spec
    lines = node_lines(spec, nodes) + gpu_lines(spec, nodes)
    lines += image_lines(project.client, spec, tag, nodes, own)
    lines += port_lines(project, nodes, own)
    lines += [("volumes", "pinned", None, f"warning: {line}") for line in volume_warnings(spec, nodes)]
    return lines

