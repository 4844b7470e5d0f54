"""The same hosts on an existing Docker Swarm, when one machine is not enough.

Each host becomes a one-replica service, created through the Docker SDK (services, secrets,
overlay network); `docker stack deploy` is not needed. Ports are published in host mode (the
ingress routing mesh is not used), passwords and host keys travel as swarm secrets, and the
containers carry the same ``devbox.*`` labels as under compose, so `status`, `exec`, `logs`
and `check` work unchanged.

Swarm secrets cannot change: each one is named after a digest of its content, so a new password
gives a new secret, the service is recreated with it, and old secrets are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from devbox.docker_api import StartWatch, talks_to_engine
from devbox.engines.base import (
    MAPPED,
    DoctorLine,
    Engine,
    Observed,
    Plan,
    Reach,
    VolumeSite,
    claim_problems,
    unsupported,
)
from devbox.engines.preflight import port_problems, raise_all, resource_problems
from devbox.engines.swarm_backup import TASK_ALIVE, scaled_down, volume_site
from devbox.engines.swarm_move import Move, planned_moves
from devbox.engines.swarm_move import consent as consent_to_move
from devbox.engines.swarm_move import copy as copy_volumes
from devbox.engines.swarm_nodes import (
    GPU_RESOURCE,
    Node,
    constraints,
    eligible,
    gpus_wanted,
    image_problems,
    placement_problems,
    push,
    pushed_reference,
    read_nodes,
    registry_problems,
)
from devbox.engines.swarm_reach import DOCKER_HOST_LABEL, NodeClients, locate, remove_volumes
from devbox.errors import EngineError, UsageError
from devbox.labels import LABEL_PREFIX
from devbox.layout import secret_sources
from devbox.project import layers_after_last_render, recreating_note
from devbox.render import HEALTHCHECK, RenderedProject, connect_address, home_directory, home_volume, named_volumes
from devbox.spec import Host, Spec
from devbox.spec.options import join

if TYPE_CHECKING:

    from devbox.project import Project

# What a swarm service cannot express (Docker's service API has no such fields), by host setting.
SWARM_UNSUPPORTED = ("ulimits", "devices", "privileged", "ipc", "cpuset")
_NO_SERVICE_FIELD = "not supported by swarm services (use engine: compose)"

# Every host and image setting, as a swarm takes it: into the service definition
# (service_definition), its secrets, the image, or not at all (and why).
SWARM_CLAIMS = {
    **dict.fromkeys((
        "limits", "reservations", "gpus", "bind_address", "volumes", "environment", "restart", "root_login",
        "password_auth", "authorized_keys", "password_env", "docker_socket", "shm_size", "cap_add", "home_volume",
        "node", "node_labels", "pids_limit", "logging", "ssh_port", "hostname",
        "base", "timezone", "packages", "pip_requirements", "shell", "user", "uid", "gid", "docker_cli",
        "extra_lines", "registry", "build_secrets", "build_ssh",
    ), MAPPED),
    **dict.fromkeys(SWARM_UNSUPPORTED, unsupported(_NO_SERVICE_FIELD)),
    "gpu_capabilities": unsupported("not supported by swarm services: a task gets NVIDIA-GPU generic resources, "
                                    "with no capabilities to choose (use engine: compose)"),
    "gpu_share": unsupported("not supported by swarm services: the swarm gives each GPU to one task (use engine: "
                             "compose)"),
    "idle": unsupported("has no effect on a swarm: idle policies are watched on this machine's own engine only "
                        "(engine: compose)", refuse=False),
    "disk": unsupported("a budget only on a swarm: services have no storage option, so the container layer is "
                        "never capped, and use is measured for the manager's own hosts", refuse=False),
}  # fmt: skip
_WILDCARDS = ("0.0.0.0", "::")  # noqa: S104 - comparing, not binding
ANCHOR_LABEL = f"{LABEL_PREFIX}network-anchor"  # the project whose network a task holds on its node
RESTART_CONDITIONS = {"no": "none", "always": "any", "unless-stopped": "any", "on-failure": "on-failure"}


def service_name(spec: Spec, host: Host) -> str:
    return f"{spec.project}_{host.name}"


def network_name(spec: Spec) -> str:
    return f"{spec.project}_{spec.network.name}"


def secret_name(spec: Spec, host: Host, target: str, content: bytes) -> str:
    """Content-addressed: swarm secrets are immutable, so a new content is a new secret."""
    return f"{spec.project}_{host.name}_{target.removeprefix('devbox_')}_{hashlib.sha256(content).hexdigest()[:10]}"


def service_hash(rendered: RenderedProject, host: Host, definition: Mapping[str, Any] | None = None) -> str:
    """The service's config-hash label: the host's config hash, its passwords (a task reads them
    from a secret, which cannot change, so a new password needs a new service) and a digest of
    the service definition itself (placement, image, mounts...: what compose's hash never sees)."""
    base = f"{rendered.config_hashes[host.name]}-{rendered.password_digests[host.name]}"
    if definition is None:
        return base
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True, default=repr).encode()).hexdigest()[:12]
    return f"{base}-{digest}"


def _nanoseconds(text: str) -> int:
    return int(text.rstrip("s")) * 1_000_000_000


def service_definition(spec: Spec, host: Host, tag: str, config_hash: str, secrets: dict[str, str],
                       placement: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """The keyword arguments of ``client.services.create`` for one host (pure).

    ``secrets`` maps each /run/secrets name to the swarm secret's name; ids are looked up later.
    ``placement``: its constraints (devbox.engines.swarm_nodes.constraints).
    """
    from docker.types import EndpointSpec, Healthcheck, Mount, Resources, RestartPolicy, ServiceMode

    labels = {f"{LABEL_PREFIX}project": spec.project, f"{LABEL_PREFIX}host": host.name,
              f"{LABEL_PREFIX}config-hash": config_hash}  # fmt: skip
    mounts = [Mount(target="/dev/shm", source="", type="tmpfs", tmpfs_size=host.shm_size.bytes)]  # noqa: S108
    for volume in host.volumes:
        source = f"{spec.project}_{volume.source}" if volume.kind == "volume" else volume.source
        mounts.append(Mount(target=volume.target, source=source, type=volume.kind, read_only=volume.read_only))
    home = home_volume(spec, host)
    if home:
        mounts.append(Mount(target=home_directory(spec), source=f"{spec.project}_{home}", type="volume"))
    if host.docker_socket:
        mounts.append(Mount(target="/var/run/docker.sock", source="/var/run/docker.sock", type="bind"))
    policy, _, attempts = host.restart.partition(":")
    gpus = {GPU_RESOURCE: host.gpus.count} if isinstance(host.gpus.count, int) and host.gpus.count else None
    nano = lambda cpus: int(cpus * 1e9) if cpus else None  # noqa: E731
    return {
        "image": tag,
        "name": service_name(spec, host),
        "hostname": host.hostname,
        "env": [f"{key}={value}" for key, value in host.environment],
        "labels": labels,
        "container_labels": labels,
        "mounts": mounts,
        "secrets": secrets,  # replaced by SecretReferences once the secrets exist
        "networks": [network_name(spec)],
        # dnsrr: names resolve to the container itself (a virtual IP forwards TCP/UDP, not ping)
        "endpoint_spec": EndpointSpec(mode="dnsrr", ports=[{"Protocol": "tcp", "PublishedPort": host.ssh_port,
                                                            "TargetPort": 22, "PublishMode": "host"}]),  # fmt: skip
        "resources": _with_pids(Resources(
            cpu_limit=nano(host.limits.cpus), mem_limit=host.limits.memory.bytes if host.limits.memory else None,
            cpu_reservation=nano(host.reservations.cpus),
            mem_reservation=host.reservations.memory.bytes if host.reservations.memory else None,
            generic_resources=gpus,
        ), host),  # fmt: skip
        "restart_policy": RestartPolicy(condition=RESTART_CONDITIONS[policy], max_attempts=int(attempts or 0)),
        "healthcheck": Healthcheck(
            test=HEALTHCHECK["test"], interval=_nanoseconds(HEALTHCHECK["interval"]),
            timeout=_nanoseconds(HEALTHCHECK["timeout"]), retries=HEALTHCHECK["retries"],
            start_period=_nanoseconds(HEALTHCHECK["start_period"]),
        ),  # fmt: skip
        "log_driver": host.logging.driver,
        "log_driver_options": {"max-size": host.logging.max_size.text, "max-file": str(host.logging.max_files)},
        "cap_add": list(host.cap_add) or None,
        "mode": ServiceMode("replicated", replicas=1),
        "constraints": list(placement or []) or None,
    }


def _with_pids(resources: dict[str, Any], host: Host) -> dict[str, Any]:
    """The task's PIDs limit (API 1.41, Docker 20.10: ``Limits.Pids``, 0 for unlimited), which
    the SDK's Resources has no argument for."""
    resources.setdefault("Limits", {})["Pids"] = max(host.pids_limit, 0)
    return resources


def swarm_spec_problems(spec: Spec) -> tuple[list[str], list[str]]:
    """What a swarm service cannot do, as ``path: problem`` lines named where the spec asks for
    it, and notes on what works differently there."""
    problems, notes = claim_problems(SWARM_CLAIMS, spec)
    for host in spec.hosts:
        found = []
        if host.gpus.device_ids or host.gpus.count == "all":
            found.append(f"{host.origin('gpus')}.gpus: swarm hands out GPUs by count only (NVIDIA-GPU generic "
                         "resources): use a number")  # fmt: skip
        problems += [line for line in found if line not in problems]
        if named_volumes(spec, host) and not host.node:
            notes.append(f"hosts.{host.name}: on a swarm of several nodes its named volumes stay on the node "
                         "that ran it; placed elsewhere it finds them empty (pin it with node:)")  # fmt: skip
        if host.bind_address not in _WILDCARDS:
            notes.append(f"hosts.{host.name}.bind_address: swarm publishes ports on every interface "
                         f"of the node, not only {host.bind_address}")  # fmt: skip
    return problems, notes


# --------------------------------------------------------------------------- side effects


def _manager_problems(project: Project) -> list[str]:
    """The engine must be a swarm manager."""
    info = project.client.info().get("Swarm") or {}
    if info.get("LocalNodeState") != "active" or not info.get("ControlAvailable"):
        return ["engine: swarm, but this engine is not a swarm manager (run `docker swarm init`, "
                "or point DOCKER_HOST at a manager, or use engine: compose)"]  # fmt: skip
    return pids_problems(project.spec, str(project.client.version().get("ApiVersion", "")))


PIDS_API = (1, 41)  # Docker 20.10: a service's TaskTemplate.Resources.Limits.Pids


def pids_problems(spec: Spec, api_version: str) -> list[str]:
    """An older manager ignores a service's PIDs limit without a word: refused rather than
    run unbounded (only `pids_limit: unlimited` needs nothing of it)."""
    try:
        version = tuple(int(part) for part in api_version.split("."))
    except ValueError:
        return []
    if version >= PIDS_API:
        return []
    limited = [host for host in spec.hosts if host.pids_limit != -1]
    return [f"{join(host.origin('pids_limit'), 'pids_limit')}: this swarm's engine (API {api_version}) cannot "
            "limit a service's processes (Docker 20.10 can; or set pids_limit: unlimited)" for host in limited[:1]]


def _placement_problems(project: Project, nodes: list[Node] | None = None, *, gpus: bool | None = None) -> list[str]:
    """Hosts no node can take (a node that is not there, labels no node has, GPUs no node
    advertises), and a registry that does not answer: before anything is built or deployed.
    ``gpus``: only the problems for want of GPUs (True), only the others (False), or all."""
    if not any(host.gpus.wanted or host.node or host.node_labels for host in project.spec.hosts):
        found = []  # the swarm places every host: nodes need not be read
    else:
        found = placement_problems(project.spec, nodes if nodes is not None else read_nodes(project.client),
                                   gpus=gpus)  # fmt: skip
    return found + (registry_problems(project.spec) if not gpus else [])


def planned_secrets(project: Project, host: Host) -> dict[str, str]:
    """The host's secrets as rendered: /run/secrets name -> swarm secret name (named by content).

    Swarm refuses empty secrets; an empty file (no authorized keys) is left out, which the
    entrypoint treats the same way.
    """
    wanted = {}
    for path, target in secret_sources(host.name).items():
        content = (project.folder / path).read_bytes()
        if content:
            wanted[target] = secret_name(project.spec, host, target, content)
    return wanted


def _ensure_secrets(project: Project, host: Host) -> dict[str, str]:
    """Create this host's secrets (if new); returns /run/secrets name -> swarm secret name."""
    client = project.client
    ours = {"label": f"{LABEL_PREFIX}project={project.spec.project}"}
    existing = {secret.name for secret in client.secrets.list(filters=ours)}
    wanted = planned_secrets(project, host)
    for target, name in wanted.items():
        if name not in existing:
            path = next(path for path, t in secret_sources(host.name).items() if t == target)
            client.secrets.create(name=name, data=(project.folder / path).read_bytes(),
                                  labels={**project.owner_labels(), f"{LABEL_PREFIX}host": host.name})  # fmt: skip
    return wanted


def planned_service(project: Project, host: Host, rendered: RenderedProject, nodes: list[Node]) -> dict[str, Any]:
    """The host's service definition as `up` would create it, its config-hash label included
    (a digest of the definition itself: any change to it replaces the service)."""
    image = pushed_reference(project.spec, rendered.image_tag)
    definition = service_definition(project.spec, host, image, "", planned_secrets(project, host),
                                     constraints(host, nodes))  # fmt: skip
    definition["labels"][f"{LABEL_PREFIX}config-hash"] = service_hash(rendered, host, definition)
    _label_owner(project, definition)
    return definition


def _label_owner(project: Project, definition: dict[str, Any]) -> None:
    """Name the owning spec on the service, its containers and the volumes its mounts create,
    after the hash: an upgrade that adds these labels replaces no service."""
    owner = project.owner_labels()
    definition["labels"] = {**definition["labels"], **owner}
    definition["container_labels"] = {**definition["container_labels"], **owner}
    for mount in definition["mounts"]:
        if mount.get("Type") == "volume":
            mount["VolumeOptions"] = {"Labels": owner}


def _ensure_network(project: Project) -> None:
    from docker.types import IPAMConfig, IPAMPool

    name = network_name(project.spec)
    if project.client.networks.list(names=[name]):
        return
    subnet = project.spec.network.subnet
    ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=subnet)]) if subnet else None
    project.client.networks.create(name, driver="overlay", attachable=True, ipam=ipam, labels=project.owner_labels())


def _services(project: Project) -> dict[str, Any]:
    """The project's host services by host name (network anchors are not hosts)."""
    found = project.client.services.list(filters={"label": f"{LABEL_PREFIX}project={project.spec.project}"})
    project.check_labels([("service", s.name, s.attrs["Spec"].get("Labels") or {}) for s in found])
    host = f"{LABEL_PREFIX}host"
    return {s.attrs["Spec"]["Labels"][host]: s for s in found if host in s.attrs["Spec"]["Labels"]}


# --------------------------------------------------------------------------- network anchors
#
# swarmkit's constraint enforcer rejects every task holding generic resources (GPUs) whenever
# the task's node object changes: it tests `HasResource(assigned, available)` and removes the
# task when that is *true* (manager/orchestrator/constraintenforcer, Docker 20.10 to this day).
# The first task of an overlay network on a node makes the allocator give that node an address
# on the network, which is such a change: a GPU host alone on its node is rejected, its
# rejection frees the address, its retry takes it again, and so on for ever. A tiny task of the
# project network kept on every node a GPU host may run on holds that address before the GPU
# task arrives, so the node does not change under it.


def anchor_name(spec: Spec, node: Node) -> str:
    """A host name is a DNS label (no underscore): this name cannot be a host's service."""
    return f"{spec.project}_anchor_{node.id[:12]}"


def anchor_nodes(spec: Spec, nodes: list[Node]) -> list[Node]:
    """The nodes some GPU host of the spec may run on."""
    seen: dict[str, Node] = {}
    for host in spec.hosts:
        if gpus_wanted(host):
            for node in eligible(host, nodes):
                seen.setdefault(node.id, node)
    return list(seen.values())


def _anchors(project: Project) -> list[Any]:
    return project.client.services.list(filters={"label": f"{ANCHOR_LABEL}={project.spec.project}"})


def ensure_anchors(project: Project, nodes: list[Node], image: str, seconds: float = 120) -> None:
    """A running network anchor on each node a GPU host may run on, before any GPU task lands
    there: `sleep infinity` from the project's image, on the project network, no ports."""
    from docker.types import RestartPolicy, ServiceMode

    have = {s.name for s in _anchors(project)}
    made = []
    for node in anchor_nodes(project.spec, nodes):
        name = anchor_name(project.spec, node)
        if name not in have:
            labels = {**project.owner_labels(), ANCHOR_LABEL: project.spec.project}
            # its container is no host: the project label it inherits from the image is emptied
            # (status, check and down's questions go by that label)
            container_labels = {f"{LABEL_PREFIX}project": "", ANCHOR_LABEL: project.spec.project}
            made.append(project.client.services.create(
                image, command=["sleep", "infinity"], name=name, labels=labels, container_labels=container_labels,
                networks=[network_name(project.spec)], constraints=[f"node.id=={node.id}"],
                mode=ServiceMode("replicated", replicas=1), restart_policy=RestartPolicy(condition="any"),
                stop_grace_period=10**9,
            ))  # fmt: skip
    deadline = time.monotonic() + seconds
    for anchor in made:
        while not _running(anchor):
            if time.monotonic() > deadline:
                raise EngineError(f"network anchor {anchor.name} has no running task after {seconds:.0f}s "
                                  "(see `docker service ps`)")  # fmt: skip
            time.sleep(0.3)


def _running(service: Any) -> bool:
    return any(task["Status"]["State"] == "running" for task in service.tasks(filters={"desired-state": "running"}))


def _config_hash(definition: Mapping[str, Any]) -> str:
    return str(definition["labels"][f"{LABEL_PREFIX}config-hash"])


def stale_hosts(project: Project, hosts: list[Host], rendered: RenderedProject,
                nodes: list[Node] | None = None) -> list[Host]:  # fmt: skip
    """Hosts whose service is missing, changed (its definition's hash) or not running."""
    services = _services(project)
    nodes = read_nodes(project.client) if nodes is None else nodes
    stale = []
    for host in hosts:
        service = services.get(host.name)
        current = service.attrs["Spec"]["Labels"].get(f"{LABEL_PREFIX}config-hash") if service else None
        if current != _config_hash(planned_service(project, host, rendered, nodes)) or not _running(service):
            stale.append(host)
    return stale


def deploy(project: Project, hosts: list[Host], rendered: RenderedProject, nodes: list[Node] | None = None,
           image: str | None = None, moves: list[Move] | None = None) -> None:  # fmt: skip
    """(Re)create the services of ``hosts`` and wait until each has a running task. ``image``:
    the reference tasks run (REPO@sha256:... once pushed), default the rendered tag. ``moves``:
    hosts whose volumes are copied to their new node between stopping and starting them."""
    from docker.types import NetworkAttachmentConfig, SecretReference

    _ensure_network(project)
    services = _services(project)
    nodes = read_nodes(project.client) if nodes is None else nodes
    ensure_anchors(project, nodes, image or rendered.image_tag)
    moving = {move.host: move for move in moves or []}
    clients = NodeClients(project.client, _own_node(project)) if moving else None
    for host in hosts:
        names = _ensure_secrets(project, host)
        ids = {s.name: s.id for s in project.client.secrets.list(filters={"names": list(names.values())})}
        definition = planned_service(project, host, rendered, nodes)
        definition["image"] = image or rendered.image_tag
        definition["secrets"] = [SecretReference(ids[name], name, filename=target, mode=0o400)
                                 for target, name in names.items()]  # fmt: skip
        definition["networks"] = [NetworkAttachmentConfig(network_name(project.spec),
                                                          aliases=sorted({host.name, host.hostname}))]  # fmt: skip
        if host.name in services:
            project.say(recreating_note([service_name(project.spec, host)]))
            _retire(project, host.name, services[host.name])
        if host.name in moving and clients is not None:
            copy_volumes(project, moving[host.name], clients, image or rendered.image_tag)
        project.say(f"starting service {service_name(project.spec, host)}")
        project.client.services.create(**definition)
    for host in hosts:
        _wait_running(project, host)
    _remove_unused_secrets(project)


def _retire(project: Project, host: str, service: Any, seconds: float = 60) -> None:
    """Stop a service's task, then remove the service: its host port and volume are free when
    this returns, on whichever node it ran (the manager sees tasks of every node, not their
    containers: each node's engine is asked where it can be reached)."""
    ran_on = {str(task.get("NodeID") or "") for task in service.tasks()}
    _stop_and_remove(service, seconds)
    _wait_gone(project, host, ran_on)


def _stop_and_remove(service: Any, seconds: float = 60) -> None:
    """Scale a service to nothing, wait until its tasks have stopped, then remove it."""
    with contextlib.suppress(Exception):  # a service that cannot scale (gone already) is removed anyway
        service.scale(0)
        deadline = time.monotonic() + seconds
        while any(t["Status"]["State"] in TASK_ALIVE for t in service.tasks()) and time.monotonic() < deadline:
            time.sleep(0.2)
    service.remove()


def _wait_gone(project: Project, host: str, ran_on: set[str] | None = None, seconds: float = 60) -> None:
    """Wait until the host's containers are gone on this node and on the nodes its tasks ran
    on (``ran_on``: node ids) that this machine can reach (devbox.engines.swarm_reach)."""
    deadline = time.monotonic() + seconds
    label = [f"{LABEL_PREFIX}project={project.spec.project}", f"{LABEL_PREFIX}host={host}"]
    clients = [project.client]
    if ran_on:
        own = _own_node(project)
        reachable = NodeClients(project.client, own)
        nodes = [node for node in read_nodes(project.client) if node.id in ran_on and node.id != own]
        clients += [client for client in map(reachable.get, nodes) if client is not None]
    for client in clients:
        # sparse: no inspect of each container, which fails with "no such container" as they go
        while client.containers.list(all=True, sparse=True, filters={"label": label}) \
                and time.monotonic() < deadline:
            time.sleep(0.2)


def _wait_running(project: Project, host: Host, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        service = _services(project).get(host.name)
        tasks = service.tasks() if service else []
        if any(task["Status"]["State"] == "running" for task in tasks):
            return
        failed = [t["Status"].get("Err") for t in tasks if t["Status"]["State"] in ("failed", "rejected")]
        if failed and failed[0]:
            raise EngineError(f"service {service_name(project.spec, host)} failed to start: {failed[0]}")
        time.sleep(0.3)
    raise EngineError(f"service {service_name(project.spec, host)} has no running task after {seconds:.0f}s "
                      "(see `docker service ps`)")  # fmt: skip


def _remove_unused_secrets(project: Project) -> None:
    used = {ref["SecretName"] for service in _services(project).values()
            for ref in service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("Secrets") or []}  # fmt: skip
    import docker.errors

    for secret in project.client.secrets.list(filters={"label": f"{LABEL_PREFIX}project={project.spec.project}"}):
        if secret.name not in used:
            # still held by a task that is shutting down: the next up or down removes it
            with contextlib.suppress(docker.errors.APIError):
                secret.remove()


def remove_all(project: Project, volumes: bool) -> None:
    """Remove the services, then the secrets and the network; named volumes only when asked."""
    services = _services(project)
    for host in project.spec.hosts:
        if host.name in services:
            _retire(project, host.name, services[host.name])
    _remove_unused_secrets(project)
    for anchor in _anchors(project):  # after the GPU hosts: see "network anchors"
        _stop_and_remove(anchor)
    for network in project.client.networks.list(names=[network_name(project.spec)]):
        network.remove()
    if volumes:
        _remove_volumes(project)


def _remove_volumes(project: Project) -> None:
    """The project's named volumes on every node: a volume lives on the node that made it, and
    only that node's engine can remove it (devbox.engines.swarm_reach); the nodes out of reach
    are named with the command to run there."""
    names = {f"{project.spec.project}_{v}" for h in project.spec.hosts for v in named_volumes(project.spec, h)}
    if not names:
        return
    missed = remove_volumes(project, names, read_nodes(project.client), _own_node(project))
    if missed:
        project.say(f"note: nodes {', '.join(missed)} are out of reach (no {DOCKER_HOST_LABEL} label): volumes "
                    f"of {project.spec.project} there stay; remove them on each with `docker volume rm "
                    f"{' '.join(sorted(names))}`")  # fmt: skip


def _own_node(project: Project) -> str:
    return str((project.client.info().get("Swarm") or {}).get("NodeID", ""))


def reach(project: Project) -> Reach:
    """Each host's container on its node (devbox.engines.swarm_reach.locate). On an engine that is
    no manager (DOCKER_HOST pointing at a worker, the fallback for nodes out of reach) its own
    containers."""
    if _manager_problems(project):
        return Reach(project.containers())
    found = locate(project, list(project.spec.hosts), _services(project), read_nodes(project.client),
                   _own_node(project))  # fmt: skip
    for host in project.spec.hosts:
        detail = found.details.get(host.name)
        if detail and detail["node_address"] not in ("", *_WILDCARDS):
            detail["ssh"] = f"ssh -p {host.ssh_port} {project.spec.image.user}@{detail['node_address']}"
    return found


def _tail(tail: str) -> int | str:
    return int(tail) if tail.isdigit() else "all"


def service_logs(project: Project, host: str, follow: bool, tail: str) -> Iterator[bytes]:
    """A host's logs through the manager, from whichever node runs it (the service logs API)."""
    project.host(host)
    service = _services(project).get(host)
    if service is None:
        raise UsageError(f"host {host!r} has no service (run `devbox up {host}`)")
    yield from service.logs(stdout=True, stderr=True, follow=follow, tail=_tail(tail))


@talks_to_engine
def node_addresses(project: Project, hosts: list[Host]) -> dict[str, str]:
    """Where to reach each host's SSH port: the address of the node its task runs on (host-mode
    ports listen on every address of that node), else its own address."""
    services = _services(project)
    found = {}
    for host in hosts:
        found[host.name] = connect_address(host)
        service = services.get(host.name)
        for task in service.tasks(filters={"desired-state": "running"}) if service else []:
            address = str(project.client.nodes.get(task["NodeID"]).attrs["Status"].get("Addr", "")) \
                if task.get("NodeID") else ""
            if address and address not in _WILDCARDS:
                found[host.name] = address
                break
    return found


class TaskWatch(StartWatch):
    """Host starts on every node: the engine's events show only its own node's containers, so a
    host whose service has a running task (on any node) counts as started too."""

    def __init__(self, project: Project) -> None:
        super().__init__(project.client, f"{LABEL_PREFIX}project={project.spec.project}", f"{LABEL_PREFIX}host")
        self._project = project

    def see_running(self) -> None:
        super().see_running()
        for host, service in _services(self._project).items():
            if _running(service):
                self._gate(host).set()



def memory_reservations(project: Project) -> dict[str, int]:
    """On a swarm, reservations belong to the service (the scheduler honours them), not the container."""
    reserved = {}
    for service in _services(project).values():
        resources = service.attrs["Spec"]["TaskTemplate"].get("Resources") or {}
        host = service.attrs["Spec"]["Labels"].get(f"{LABEL_PREFIX}host", "")
        reserved[host] = int((resources.get("Reservations") or {}).get("MemoryBytes") or 0)
    return reserved


class SwarmEngine(Engine):
    """An existing swarm: each host a one-replica service made through the SDK."""

    name = "swarm"
    claims = SWARM_CLAIMS
    allocates_gpus = False  # GPUs by count as NVIDIA-GPU generic resources: the swarm assigns them

    def spec_problems(self, spec: Spec) -> tuple[list[str], list[str]]:
        return swarm_spec_problems(spec)

    def preflight(self, project: Project) -> list[str]:
        return _manager_problems(project)

    def gpu_problems(self, project: Project, facts: Mapping[str, Any]) -> list[str]:
        return _placement_problems(project, gpus=True)

    def start_watch(self, project: Project) -> StartWatch:
        return TaskWatch(project)

    # The primitives of `up` (devbox.converge): services instead of containers; placement and
    # the registry are checked before any service changes, the image pushed (or found on every
    # node) before it is deployed.

    def observe(self, project: Project) -> Observed:
        from devbox.engines.swarm_doctor import volume_warnings

        nodes = read_nodes(project.client)
        for line in volume_warnings(project.spec, nodes):
            project.say(f"warning: {line}")
        return Observed(_services(project), self.reach(project).containers, nodes)

    def plan(self, project: Project, hosts: list[Host], rendered: RenderedProject, seen: Observed) -> Plan:
        stale = [host.name for host in stale_hosts(project, hosts, rendered, seen.extra)]
        present = bool(project.client.images.list(name=rendered.image_tag))
        return Plan(rendered.image_tag, build=bool(stale) and not present, start=tuple(stale),
                    unchanged=tuple(host.name for host in hosts if host.name not in stale),
                    recreate=tuple(name for name in stale if name in seen.objects))  # fmt: skip

    def remove_host(self, project: Project, name: str, seen: Observed) -> None:
        _retire(project, name, seen.objects[name])
        _remove_unused_secrets(project)

    def host_problems(self, project: Project, starting: list[Host], seen: Observed,
                      facts: Mapping[str, Any]) -> list[str]:  # fmt: skip
        return (_placement_problems(project, seen.extra, gpus=False)
                + port_problems(project, starting, seen.containers, seen.leaving)
                + resource_problems(project.spec, facts))  # fmt: skip

    def publish(self, project: Project, rendered: RenderedProject) -> str:
        if project.spec.image.registry:
            reference = pushed_reference(project.spec, rendered.image_tag)
            project.say(f"pushing {reference}")
            return push(project.client, rendered.image_tag, reference)
        raise_all(image_problems(project.client, project.spec, rendered.image_tag, read_nodes(project.client),
                                 _own_node(project)))  # fmt: skip
        return rendered.image_tag

    def apply(self, project: Project, plan: Plan, starting: list[Host], rendered: RenderedProject, image: str,
              seen: Observed, *, only: bool) -> None:  # fmt: skip
        clients = NodeClients(project.client, _own_node(project))
        moves = planned_moves(project, starting, seen.objects, seen.extra, clients)
        consent_to_move(project, moves)  # before any service changes
        deploy(project, starting, rendered, seen.extra, image, moves)

    def down(self, project: Project, volumes: bool) -> None:
        remove_all(project, volumes)

    def addresses(self, project: Project, hosts: list[Host]) -> dict[str, str]:
        return node_addresses(project, hosts)

    def all_logs(self, project: Project, follow: bool, tail: str) -> None:
        """Each host's service logs in turn; following several streams at once is refused."""
        if follow:
            raise UsageError("on a swarm, follow one host at a time: devbox logs -f HOST")
        services = _services(project)
        for host in project.spec.hosts:
            if host.name not in services:
                project.say(f"{host.name} | (no service: run `devbox up {host.name}`)")
                continue
            text = b"".join(service_logs(project, host.name, False, tail)).decode(errors="replace")
            for line in text.splitlines():
                project.say(f"{host.name} | {line}")

    def stream_logs(self, project: Project, host: str, follow: bool, tail: str) -> Iterator[bytes]:
        return service_logs(project, host, follow, tail)

    def reach(self, project: Project) -> Reach:
        return reach(project)

    def volume_site(self, project: Project, host: Host, *, restoring: bool = False) -> VolumeSite:
        """The engine of the host's node (devbox.engines.swarm_backup); on an engine that is no
        manager (DOCKER_HOST pointing at the node itself), that engine."""
        if _manager_problems(project):
            return super().volume_site(project, host, restoring=restoring)
        return volume_site(project, host, _services(project), read_nodes(project.client), _own_node(project),
                           restoring=restoring)  # fmt: skip

    @contextlib.contextmanager
    def stopped_for_restore(self, project: Project, host: Host, site: VolumeSite) -> Iterator[None]:
        """The service scaled to 0 for the restore and back after (a stopped task's container
        would be restarted by the swarm)."""
        if _manager_problems(project):
            with super().stopped_for_restore(project, host, site):
                yield
            return
        with scaled_down(project, host, _services(project).get(host.name), site):
            yield

    def memory_reservations(self, project: Project) -> dict[str, int] | None:
        return memory_reservations(project)

    def doctor(self, project: Project) -> list[DoctorLine]:
        """The swarm's own checks (devbox.engines.swarm_doctor), once the engine is a manager."""
        from devbox.engines.swarm_doctor import doctor_lines
        from devbox.render import image_files, image_tag

        if _manager_problems(project):
            return []  # said by the engine line
        layers = layers_after_last_render(project.spec, project.folder)
        tag = image_tag(project.spec, image_files(project.spec, layers))
        return doctor_lines(project, read_nodes(project.client), _own_node(project), tag)
