"""Checks before anything changes: what this machine or engine cannot give the spec.

Each function returns problems (one line each, with the spec path and the fix); `up` raises
them all at once before it builds or replaces anything, and `doctor` shows them one by one.
Both engines use them; what only one engine needs lives with that engine.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from devbox.docker_api import engine_is_local, list_containers
from devbox.errors import PreflightError
from devbox.spec import Host, Spec, Ulimit

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

    from devbox.project import Project

NVIDIA_TOOLKIT_HINT = (
    "install the NVIDIA Container Toolkit on the Docker host (nvidia-container-toolkit, then "
    "restart dockerd), or run CPU-only with `devbox --no-gpu up` or `gpu: off` in the spec"
)


def _bind_problem(address: str, port: int) -> tuple[str, str] | None:
    """Why this machine cannot listen on ``address:port`` ("" if it can): taken, or an address
    that is not this machine's (the engine would fail at start, after replacing the old host).
    Returns (the setting to change, the problem), or None."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return "ssh_port", (f"port {port} on {address} is already taken by another program "
                                    "(choose a free ssh_port, or stop it)")  # fmt: skip
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                return "bind_address", (f"{address} is not an address of this machine (use 127.0.0.1, "
                                        "0.0.0.0 or one that `ip addr` lists)")  # fmt: skip
    return None


_WILDCARDS = ("", "0.0.0.0", "::")  # noqa: S104 - comparing, not binding


def _clash(first: str, second: str) -> bool:
    """Whether ports published on two addresses collide (a wildcard collides with every address)."""
    return first == second or first in _WILDCARDS or second in _WILDCARDS


def published_ports(container: Container) -> set[tuple[str, int]]:
    """The (address, port) pairs a container publishes on the machine ("" or a wildcard: every
    address), running or not (a restarting one holds them too)."""
    attrs = container.attrs
    tables = ((attrs.get("HostConfig") or {}).get("PortBindings"), (attrs.get("NetworkSettings") or {}).get("Ports"))
    return {(str(binding.get("HostIp") or ""), int(binding["HostPort"])) for table in tables
            for bindings in (table or {}).values() for binding in bindings or []
            if str(binding.get("HostPort", "")).isdigit()}  # fmt: skip


def _published_ports(project: Project, replaced: set[str]) -> dict[tuple[str, int], str]:
    """(address, port) pairs that running containers publish, with the container's name, but for
    the containers of ``replaced`` (ids of our hosts `up` replaces: their ports come free).

    This is what the engine itself knows, so it also works when the engine is remote.
    """
    return {pair: container.name for container in list_containers(project.client)
            if container.id not in replaced for pair in published_ports(container)}  # fmt: skip


def port_problems(project: Project, hosts: list[Host], ours: Mapping[str, Container],
                  leaving: Iterable[str] = ()) -> list[str]:  # fmt: skip
    """Ports another process or container holds, for every host `up` will (re)create, before
    anything is removed: the new port of a host whose port changed too (compose would remove the
    old container first, then fail to bind, leaving the host down). A host's own container,
    running or restarting, may keep the very port it publishes; so may the container of a host
    the spec dropped (``leaving``: `up` removes it before it starts the others)."""
    problems = []
    replaced = {ours[name].id for name in [*(h.name for h in hosts), *leaving] if name in ours}
    published = _published_ports(project, replaced)
    for host in hosts:
        container = ours.get(host.name)
        if container is not None and host.ssh_port in {port for _, port in published_ports(container)}:
            continue  # its own container holds it (also while restarting); compose frees it in place
        path = f"hosts.{host.name}.ssh_port"
        holder = next((name for (address, port), name in published.items()
                       if port == host.ssh_port and _clash(address, host.bind_address)), None)  # fmt: skip
        if holder is not None:
            problems.append(f"{path}: port {host.ssh_port} is already published by container "
                            f"{holder} (choose a free ssh_port, or stop it)")  # fmt: skip
        elif engine_is_local() and (problem := _bind_problem(host.bind_address, host.ssh_port)):
            problems.append(f"hosts.{host.name}.{problem[0]}: {problem[1]}")
    return problems


def device_problems(hosts: list[Host]) -> list[str]:
    """Devices missing on this machine: the engine would refuse the container at start, after
    compose has already replaced the host's old one."""
    if not engine_is_local():
        return []
    problems = []
    for host in hosts:
        for index, device in enumerate(host.devices):
            source = device.split(":")[0]
            if not os.path.exists(source):
                problems.append(f"hosts.{host.name}.devices[{index}]: {source} does not exist on this machine "
                                "(connect it, or remove it from the spec)")  # fmt: skip
    return problems


def resource_problems(spec: Spec, facts: Mapping[str, Any]) -> list[str]:
    """Limits and reservations the machine cannot give."""
    problems = []
    cpus, memory = facts["cpus"], facts["memory"]
    for host in spec.hosts:
        if host.limits.cpus and cpus and host.limits.cpus > cpus:
            problems.append(f"hosts.{host.name}.limits.cpus: {host.limits.cpus:g} is more than the "
                            f"{cpus} CPUs of the engine (lower it)")  # fmt: skip
        if host.cpuset and cpus:
            highest = max(int(n) for n in host.cpuset.replace("-", ",").split(","))
            if highest >= cpus:
                problems.append(f"hosts.{host.name}.cpuset: CPU {highest} does not exist on the "
                                f"engine (it has CPUs 0-{cpus - 1})")  # fmt: skip
    reserved_cpus = sum(h.reservations.cpus or 0 for h in spec.hosts)
    reserved_memory = sum(h.reservations.memory.bytes for h in spec.hosts if h.reservations.memory)
    if cpus and reserved_cpus > cpus:
        problems.append(f"reservations.cpus: the hosts reserve {reserved_cpus:g} CPUs but the engine "
                        f"has {cpus} (lower the reservations)")  # fmt: skip
    if memory and reserved_memory > memory:
        problems.append(f"reservations.memory: the hosts reserve {reserved_memory / 1024**3:.1f} GiB "
                        f"but the engine has {memory / 1024**3:.1f} GiB (lower the reservations)")  # fmt: skip
    return problems


GPU_PROBE_IMAGE = "devbox-gpu-probe:1"


def probe_image(client: docker.DockerClient) -> str:
    """An empty image (no registry needed) to start probe containers from (GPUs, ulimits)."""
    import io
    import tarfile

    if not client.images.list(name=GPU_PROBE_IMAGE):
        empty = io.BytesIO()
        tarfile.open(fileobj=empty, mode="w").close()
        repository, tag = GPU_PROBE_IMAGE.split(":")
        client.api.import_image_from_data(empty.getvalue(), repository=repository, tag=tag)
    return GPU_PROBE_IMAGE


def gpu_runtime_available(client: docker.DockerClient, facts: Mapping[str, Any]) -> bool:
    """Whether the engine can hand out NVIDIA GPUs.

    An ``nvidia`` runtime says so; otherwise start a container with a GPU request from an empty
    image: an engine without the NVIDIA hook refuses it with "could not select device driver",
    one with it gets as far as running the (missing) program. Nothing runs either way.
    """
    import docker.errors
    from docker.types import DeviceRequest

    if "nvidia" in facts["runtimes"]:
        return True
    container = client.containers.create(
        probe_image(client), entrypoint=["/devbox-gpu-probe"], network_mode="none",
        device_requests=[DeviceRequest(count=1, capabilities=[["gpu"]])],
    )  # fmt: skip
    try:
        container.start()
    except docker.errors.APIError as exc:
        return "could not select device driver" not in str(exc)
    finally:
        container.remove(force=True)
    return True


def _refused_ulimit(client: docker.DockerClient, ulimit: Ulimit) -> str | None:
    """Why the engine cannot give a container this process limit, or None when it can.

    No engine reports its own limits, and a container may not exceed them (runc's setrlimit
    fails: "operation not permitted"), so ask it: start a container with the limit from the
    empty probe image. One the engine grants gets as far as running the (missing) program.
    """
    import docker.errors
    from docker.types import Ulimit as DockerUlimit

    container = client.containers.create(
        probe_image(client), entrypoint=["/devbox-ulimit-probe"], network_mode="none",
        ulimits=[DockerUlimit(name=ulimit.name, soft=ulimit.soft, hard=ulimit.hard)],
    )  # fmt: skip
    try:
        container.start()
    except docker.errors.APIError as exc:
        text = str(exc.explanation or exc)
        return None if "devbox-ulimit-probe" in text else text.rsplit(": ", 2)[-2] if ": " in text else text
    finally:
        container.remove(force=True)
    return None


def ulimit_problems(project: Project, hosts: list[Host]) -> list[str]:
    """Process limits beyond the engine's own (its hard limits bound every container's): the
    container would be refused at start, after compose removed the host's old one."""
    problems = []
    refused: dict[Ulimit, str | None] = {}
    for host in hosts:
        for ulimit in host.ulimits:
            if ulimit not in refused:
                refused[ulimit] = _refused_ulimit(project.client, ulimit)
            if refused[ulimit]:
                problems.append(f"{host.origin('ulimits')}.ulimits.{ulimit.name}: the engine cannot give "
                                f"{ulimit.soft}/{ulimit.hard} ({refused[ulimit]}): lower it, or raise the "
                                "engine's own limit (e.g. LimitNOFILE= in docker.service)")  # fmt: skip
    return problems


def gpu_problems(project: Project, facts: Mapping[str, Any]) -> list[str]:
    wanting = [h.name for h in project.spec.hosts if h.gpus.wanted]
    if not wanting or gpu_runtime_available(project.client, facts):
        return []
    return [f"hosts {', '.join(wanting)} want GPUs but the engine has no NVIDIA runtime: "
            f"{NVIDIA_TOOLKIT_HINT}"]  # fmt: skip


def raise_all(problems: list[str]) -> None:
    """Every problem at once, one line each, before anything changes."""
    if problems:
        raise PreflightError("\n".join(problems))
