"""Where a swarm's hosts may run, and whether the one image reaches them there.

A host runs on the node it names (``node:``, a hostname or ID), on nodes carrying its
``node_labels``, and, when it wants GPUs, only on nodes advertising that many ``NVIDIA-GPU``
generic resources; otherwise the swarm places it. These rules are pure (``constraints``,
``eligible``, ``placement_problems``) over nodes read once (``read_nodes``).

The image: with ``image.registry`` `up` pushes it there and deploys it by digest. Without one, a
node can run a host only if it has the image already. The manager's API cannot list another
node's images, so that is checked, not assumed: a one-task job from the image, pinned to each
node the hosts may run on, either completes (the node has it) or is rejected (it does not).
"""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devbox.errors import EngineError
from devbox.labels import LABEL_PREFIX
from devbox.spec import Host, Spec

if TYPE_CHECKING:
    import docker

GPU_RESOURCE = "NVIDIA-GPU"
PROBE_LABEL = f"{LABEL_PREFIX}image-probe"  # the short-lived jobs that look for the image on a node
_TASK_ENDED = ("complete", "failed", "rejected", "shutdown", "orphaned")
# NVIDIA Container Toolkit before 1.19 ignores the GPU UUIDs swarm assigns a task
# (NVIDIA/nvidia-container-toolkit#1599): every task would see every GPU of its node.
TOOLKIT_FIXED = (1, 19)


@dataclass(frozen=True)
class Node:
    """A swarm node as placement sees it."""

    id: str
    hostname: str
    address: str
    ready: bool
    active: bool
    labels: dict[str, str] = field(default_factory=dict)
    gpus: int = 0
    engine: dict[str, Any] = field(default_factory=dict)  # Description.Engine: version, plugins, labels

    @property
    def usable(self) -> bool:
        return self.ready and self.active


def gpu_count(resources: Iterable[dict[str, Any]]) -> int:
    """How many NVIDIA-GPUs a node advertises: each named one (a UUID) counts one, a discrete
    resource counts its value."""
    count = 0
    for resource in resources:
        named, discrete = resource.get("NamedResourceSpec") or {}, resource.get("DiscreteResourceSpec") or {}
        if named.get("Kind") == GPU_RESOURCE:
            count += 1
        elif discrete.get("Kind") == GPU_RESOURCE:
            count += int(discrete.get("Value") or 0)
    return count


def node_of(attrs: dict[str, Any]) -> Node:
    """One node from the engine's description of it."""
    description = attrs.get("Description") or {}
    resources = (description.get("Resources") or {}).get("GenericResources") or []
    spec, status = attrs.get("Spec") or {}, attrs.get("Status") or {}
    return Node(
        id=str(attrs["ID"]), hostname=str(description.get("Hostname", "")), address=str(status.get("Addr", "")),
        ready=status.get("State") == "ready", active=spec.get("Availability", "active") == "active",
        labels=dict(spec.get("Labels") or {}), gpus=gpu_count(resources), engine=dict(description.get("Engine") or {}),
    )  # fmt: skip


def read_nodes(client: docker.DockerClient) -> list[Node]:
    return [node_of(node.attrs) for node in client.nodes.list()]


def find_node(name: str, nodes: list[Node]) -> Node | None:
    """The node a host names: by hostname, else by its full ID or a unique start of it."""
    by_name = [node for node in nodes if node.hostname == name]
    if by_name:
        return by_name[0]
    by_id = [node for node in nodes if node.id.startswith(name)]
    return by_id[0] if len(by_id) == 1 else None


def constraints(host: Host, nodes: list[Node]) -> list[str]:
    """The host's placement constraints: its node (by hostname when that names it, else by ID)
    and its node labels. GPUs need none: a generic resource reservation places them."""
    found: list[str] = []
    if host.node:
        node = find_node(host.node, nodes)
        found.append(f"node.id=={node.id}" if node and node.hostname != host.node else f"node.hostname=={host.node}")
    found += [f"node.labels.{key}=={value}" for key, value in host.node_labels]
    return found


def gpus_wanted(host: Host) -> int:
    return host.gpus.count if isinstance(host.gpus.count, int) else 0


def eligible(host: Host, nodes: list[Node]) -> list[Node]:
    """The nodes the host may run on: ready and active, its node, its labels, enough GPUs."""
    named = find_node(host.node, nodes) if host.node else None
    return [
        node for node in nodes
        if node.usable and (not host.node or node is named)
        and all(node.labels.get(key) == value for key, value in host.node_labels)
        and node.gpus >= gpus_wanted(host)
    ]  # fmt: skip


def placement_problems(spec: Spec, nodes: list[Node], *, gpus: bool | None = None) -> list[str]:
    """Hosts the swarm could never place, each named with the setting to change; ``gpus``: only
    those for want of GPUs (True), only the others (False), or all (None)."""
    return [line for key, line in _placement(spec, nodes) if gpus is None or (key == "gpus") == gpus]


def _placement(spec: Spec, nodes: list[Node]) -> list[tuple[str, str]]:
    """Each placement problem with the host setting that causes it."""
    problems: list[tuple[str, str]] = []
    known = ", ".join(sorted(node.hostname for node in nodes))
    for host in spec.hosts:
        named = find_node(host.node, nodes) if host.node else None
        if host.node and named is None:
            problems.append(("node", f"{host.origin('node')}.node: no swarm node {host.node!r} (nodes: {known}; "
                            "name one by hostname or ID)"))  # fmt: skip
        elif named is not None and not named.usable:
            problems.append(("node", f"{host.origin('node')}.node: node {host.node!r} is not ready and active (see "
                            "`docker node ls`; bring it back, or name another node)"))  # fmt: skip
        elif gpus_wanted(host) and not any(n.gpus >= gpus_wanted(host) for n in nodes if n.usable):
            problems.append(("gpus", f"{host.origin('gpus')}.gpus: {gpus_wanted(host)} GPUs, but no swarm node "
                            f"advertises that many {GPU_RESOURCE} (set node-generic-resources in each GPU node's "
                            "daemon.json, or use --no-gpu)"))  # fmt: skip
        elif not eligible(host, nodes):
            wants = [f"node {host.node}"] if host.node else []
            wants += [f"label {key}={value}" for key, value in host.node_labels]
            wants += [f"{gpus_wanted(host)} {GPU_RESOURCE}"] if gpus_wanted(host) else []
            key = "node_labels" if host.node_labels else "node" if host.node else "gpus"
            problems.append((key, f"{host.origin(key)}.{key}: no ready, active swarm node has "
                            f"{' and '.join(wants) or 'room'} (label a node with `docker node update "
                            "--label-add`, or change the placement)"))  # fmt: skip
    return problems


# --------------------------------------------------------------------------- the registry


def registry_address(registry: str) -> tuple[str, str]:
    """(HOST:PORT, path) of ``image.registry``; the port defaults to 443."""
    server, _, path = registry.partition("/")
    return (server if ":" in server else f"{server}:443"), path


def pushed_reference(spec: Spec, tag: str) -> str:
    """The name `up` pushes the image under: REGISTRY/devbox-PROJECT:CONTENT."""
    return f"{spec.image.registry}/{tag}" if spec.image.registry else tag


def registry_problems(spec: Spec, timeout: float = 5.0) -> list[str]:
    """Whether the registry answers its API (/v2/): over HTTPS, else plain HTTP (a registry the
    engines are told is insecure)."""
    if not spec.image.registry:
        return []
    server, _ = registry_address(spec.image.registry)
    reason = ""
    for scheme in ("https", "http"):
        try:
            with urllib.request.urlopen(f"{scheme}://{server}/v2/", timeout=timeout):  # noqa: S310 - fixed schemes
                return []
        except urllib.error.HTTPError as exc:
            if exc.code in (200, 401):  # 401: it answers and wants a login (`docker login` on the nodes)
                return []
            reason = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            reason = str(getattr(exc, "reason", exc))
    return [f"image.registry: {spec.image.registry} does not answer ({reason}; start it, fix the address, or "
            "remove image.registry on a one-node swarm)"]  # fmt: skip


def push(client: docker.DockerClient, tag: str, reference: str) -> str:
    """Tag the built image as ``reference`` and push it; returns REPOSITORY@sha256:... (what
    every node pulls, so all run the same bytes). Raises EngineError with the registry's reason."""
    import docker.errors

    repository, _, name = reference.rpartition(":")
    digest = ""
    try:
        client.images.get(tag).tag(repository, name)
        for event in client.images.push(repository, tag=name, stream=True, decode=True):
            if "error" in event:
                raise EngineError(f"pushing {reference} failed: {event['error']} (check image.registry and "
                                  "that the engine may push there: `docker login`, insecure-registries)")  # fmt: skip
            digest = (event.get("aux") or {}).get("Digest", digest)
    except docker.errors.APIError as exc:
        raise EngineError(f"pushing {reference} failed: {exc.explanation or exc}") from None
    if not digest:
        raise EngineError(f"pushing {reference} gave no digest (is {repository.split('/')[0]} a registry?)")
    return f"{repository}@{digest}"


# --------------------------------------------------------------------------- the image on the nodes


def nodes_for(spec: Spec, nodes: list[Node]) -> list[Node]:
    """Every node some host may run on."""
    seen: dict[str, Node] = {}
    for host in spec.hosts:
        for node in eligible(host, nodes):
            seen.setdefault(node.id, node)
    return list(seen.values())


def image_missing(client: docker.DockerClient, spec: Spec, tag: str, nodes: list[Node],
                  seconds: float = 60) -> dict[str, str]:  # fmt: skip
    """The nodes (hostname -> why) that cannot run ``tag`` without a registry: one job per node
    runs `true` in the image; a node without the image rejects it."""
    from docker.types import RestartPolicy, ServiceMode

    jobs = {}
    try:
        for node in nodes:
            jobs[node.hostname] = client.services.create(
                tag, command=["true"], name=f"{spec.project}_image-probe_{node.id[:12]}",
                labels={PROBE_LABEL: spec.project}, constraints=[f"node.id=={node.id}"],
                mode=ServiceMode("replicated-job", replicas=1, concurrency=1),
                restart_policy=RestartPolicy(condition="none"),
            )  # fmt: skip
        return {name: why for name, job in jobs.items() if (why := _job_outcome(job, seconds))}
    finally:
        for job in jobs.values():
            with contextlib.suppress(Exception):
                job.remove()


def _job_outcome(job: Any, seconds: float) -> str:
    """'' when the job's task completed, else why not (the engine's error)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tasks = job.tasks()
        ended = [t for t in tasks if t["Status"]["State"] in _TASK_ENDED]
        if any(t["Status"]["State"] == "complete" for t in ended):
            return ""
        if ended:
            return str(ended[0]["Status"].get("Err") or ended[0]["Status"]["State"])
        time.sleep(0.3)
    return f"no answer in {seconds:.0f}s"


def image_problems(client: docker.DockerClient, spec: Spec, tag: str, nodes: list[Node], own: str) -> list[str]:
    """Without a registry, every node a host may run on must have the image (the manager built
    it, so it has it); otherwise `up` refuses with the fix."""
    if spec.image.registry:
        return []
    others = [node for node in nodes_for(spec, nodes) if node.id != own]
    if not others:
        return []
    missing = image_missing(client, spec, tag, others)
    if not missing:
        return []
    where = "; ".join(f"{name}: {why}" for name, why in sorted(missing.items()))
    return [f"image.registry: not set, and swarm nodes the hosts may run on lack the image {tag} ({where}): "
            "set image.registry to a registry every node can pull from, or pin the hosts (node:) to nodes "
            "that have it"]  # fmt: skip


def toolkit_version(node: Node) -> tuple[int, ...] | None:
    """The NVIDIA Container Toolkit version a node's engine shows, when it shows one: an engine
    label ``nvidia-container-toolkit=1.17.8`` (or ``nvidia.toolkit``) or a runtime plugin named
    with its version."""
    labels = node.engine.get("Labels") or {}
    for key in ("nvidia-container-toolkit", "nvidia.toolkit", "nvidia-container-toolkit.version"):
        if key in labels:
            return _version(labels[key])
    for plugin in node.engine.get("Plugins") or []:
        name = str(plugin.get("Name", ""))
        if "nvidia" in name and any(char.isdigit() for char in name):
            return _version(name.rsplit(":", 1)[-1].rsplit("-", 1)[-1])
    return None


def _version(text: str) -> tuple[int, ...] | None:
    parts = []
    for part in text.strip().lstrip("v").split("."):
        digits = "".join(char for char in part if char.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or None
