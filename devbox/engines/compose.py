"""Compose: the hosts as containers of one Docker Compose project on this machine.

Convergence by config hash (like compose itself): each rendered service carries a hash of its
definition and files as a label; a host whose container has another hash, or none, is
(re)created, the others are left alone. The plan is pure (``plan_up``); devbox.converge runs
the sequence, this engine's primitives carry it out with the Compose v2 CLI, which builds with
BuildKit and starts whole projects.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from devbox.docker_api import find_compose, run_compose
from devbox.engines.base import MAPPED, Engine, Observed, Plan, unsupported
from devbox.engines.preflight import (
    device_problems,
    gpu_problems,
    port_problems,
    resource_problems,
    ulimit_problems,
)
from devbox.errors import SpecError
from devbox.labels import LABEL_PREFIX, OWNER_LABEL
from devbox.passwords import renew_passwords
from devbox.project import COMPOSE_PROJECT_LABEL, origin_folder, recreating_note, same_path
from devbox.render import connect_address, named_volumes

if TYPE_CHECKING:
    from docker.models.containers import Container

    from devbox.project import Project
    from devbox.render import RenderedProject
    from devbox.spec import Host


def plan_up(
    hosts: list[str], wanted: Mapping[str, str], tag: str, image_present: bool,
    running: Mapping[str, tuple[str, str]],
) -> Plan:  # fmt: skip
    """Pure: compare what the spec wants with what runs (``running``: host -> (state, hash))."""
    start: list[str] = []
    unchanged: list[str] = []
    for host in hosts:
        state, current = running.get(host, ("missing", ""))
        (unchanged if state == "running" and current == wanted[host] else start).append(host)
    recreate = tuple(host for host in start if host in running and running[host][1] != wanted[host])
    return Plan(tag, build=not image_present, start=tuple(start), unchanged=tuple(unchanged),
                recreate=recreate)


_SWARM_ONLY = "only a swarm places hosts on nodes; compose runs every host on this machine (engine: swarm)"

# Every host and image setting, as compose takes it: rendered into docker-compose.yml (render.py)
# or the image (Dockerfile, entrypoint), except the placement and registry of a swarm.
COMPOSE_CLAIMS = {
    **dict.fromkeys((
        "limits", "reservations", "gpus", "gpu_share", "gpu_capabilities", "bind_address", "volumes", "environment",
        "restart", "root_login", "password_auth", "authorized_keys", "password_env", "docker_socket", "privileged",
        "shm_size", "ulimits", "devices", "cap_add", "ipc", "cpuset", "home_volume", "idle", "pids_limit", "logging",
        "ssh_port", "hostname", "disk",
        "base", "timezone", "packages", "pip_requirements", "shell", "user", "uid", "gid", "docker_cli",
        "extra_lines", "build_secrets", "build_ssh",
    ), MAPPED),
    "node": unsupported(f"has no effect: {_SWARM_ONLY}", refuse=False),
    "node_labels": unsupported(f"has no effect: {_SWARM_ONLY}", refuse=False),
    "registry": unsupported("has no effect: compose runs the image it builds on this machine (a swarm pushes it)",
                            refuse=False),
}  # fmt: skip


class ComposeEngine(Engine):
    """One machine: `docker compose` brings the project up and down."""

    name = "compose"
    claims = COMPOSE_CLAIMS

    def preflight(self, project: Project) -> list[str]:
        return []

    def gpu_problems(self, project: Project, facts: Mapping[str, Any]) -> list[str]:
        return gpu_problems(project, facts)

    def observe(self, project: Project) -> Observed:
        ours = project.containers()
        return Observed(ours, ours)

    def plan(self, project: Project, hosts: list[Host], rendered: RenderedProject, seen: Observed) -> Plan:
        wanted = {host.name for host in project.spec.hosts}
        running = {name: (c.status, c.labels.get(f"{LABEL_PREFIX}config-hash", "")) for name, c in seen.objects.items()
                   if name in wanted}  # fmt: skip
        present = bool(project.client.images.list(name=rendered.image_tag))
        plan = plan_up([h.name for h in hosts], rendered.config_hashes, rendered.image_tag, present, running)
        plan = _recreating_unlabelled(plan, seen.containers)
        return _recreating_moved(plan, _made_in_another_folder(project, {
            name: c for name, c in seen.containers.items() if name in plan.unchanged or name in plan.start}))

    def remove_host(self, project: Project, name: str, seen: Observed) -> None:
        """What compose's --remove-orphans does, also when nothing else changed: left running,
        a dropped host would hold its port and take logins that no devbox command shows."""
        seen.objects[name].remove(force=True)

    def renew_passwords(self, project: Project, unchanged: list[Host], seen: Observed,
                        rendered: RenderedProject) -> list[str]:  # fmt: skip
        wanted = {host.name for host in project.spec.hosts}
        ours = {name: c for name, c in seen.containers.items() if name in wanted}
        return renew_passwords(project, unchanged, ours, rendered.password_digests)

    def host_problems(self, project: Project, starting: list[Host], seen: Observed,
                      facts: Mapping[str, Any]) -> list[str]:  # fmt: skip
        return (port_problems(project, starting, seen.containers, seen.leaving) + resource_problems(project.spec, facts)
                + device_problems(starting) + ulimit_problems(project, starting))  # fmt: skip

    def apply(self, project: Project, plan: Plan, starting: list[Host], rendered: RenderedProject, image: str,
              seen: Observed, *, only: bool) -> None:  # fmt: skip
        _refuse_budgets_below_the_image(project, starting, image)
        if plan.recreate:
            project.say(recreating_note(list(plan.recreate)))
        project.say(f"starting {', '.join(plan.start)}")
        moved = _made_in_another_folder(project, {name: seen.containers[name] for name in plan.recreate
                                                  if name in seen.containers})  # fmt: skip
        if moved:  # compose would start them as they are: their bind sources are under the old folder
            project.say(f"recreating {', '.join(moved)}: made in {moved_from(seen.containers[moved[0]])}, which "
                        f"moved to {project.folder} (named volumes stay)")  # fmt: skip
            for name in moved:
                seen.containers[name].remove(force=True)
        _make_volumes_and_network(project)
        args = ["up", "--detach", "--no-build", "--quiet-pull"]
        if not only:
            args.append("--remove-orphans")
        run_compose(find_compose(), project.compose_file, project.spec.project, *args, *plan.start)

    def down(self, project: Project, volumes: bool) -> None:
        project.containers()  # refuses another spec's project before compose removes it
        # By project name, no compose file: down needs no secrets (e.g. an unset password_env).
        args = ["down", "--remove-orphans"] + (["--volumes"] if volumes else [])
        run_compose(find_compose(), None, project.spec.project, *args)

    def addresses(self, project: Project, hosts: list[Host]) -> dict[str, str]:
        return {host.name: connect_address(host) for host in hosts}

    def early_addresses(self, project: Project, hosts: list[Host]) -> dict[str, str]:
        return self.addresses(project, hosts)  # the published ports, from the spec alone

    def repair(self, project: Project) -> list[str]:
        return repair_renamed(project) + repair_network(project)

    def all_logs(self, project: Project, follow: bool, tail: str) -> None:
        """Compose interleaves every host's logs with host prefixes; the SDK does not."""
        args = ["logs", "--tail", tail] + (["--follow"] if follow else [])
        run_compose(find_compose(), None, project.spec.project, *args)


# Compose recreates a host by creating the new container as "<old id>_<name>", removing the old
# one, then renaming the new one (older versions renamed the old one first): cut short, the host
# is left under a temporary name that compose does not find again.
_TEMPORARY_NAME = re.compile(r"^[0-9a-f]{12}_(?P<name>.+)$")
_NEVER_STARTED = "0001-01-01T00:00:00Z"


def repair_renamed(project: Project) -> list[str]:
    """Finish or undo the recreations compose left half done; returns what was done.

    A container under a temporary name is renamed to its own name when that is free (the host
    keeps it); when a container holds that name, a temporary one that never started (the new
    one: nothing written in it) is removed, and one that did (an old container, its files in
    it) is left and named, never removed.
    """
    found = project.listing()
    names = {container.name for container in found}
    done = []
    for container in found:
        match = _TEMPORARY_NAME.match(container.name)
        if not match:
            continue
        host, name = container.labels.get(f"{LABEL_PREFIX}host", match["name"]), match["name"]
        if name not in names:
            done.append(f"{host}: renamed {container.name} (left half made by compose) to {name}")
            container.rename(name)
            names.add(name)
        elif (container.attrs.get("State") or {}).get("StartedAt", _NEVER_STARTED).startswith("0001-"):
            container.remove(force=True)
            done.append(f"{host}: removed {container.name}, a container compose had not finished making")
        else:
            done.append(f"{host}: {container.name} is an older container of this host, kept with its files "
                        "(`docker rm` it when they are no longer needed)")  # fmt: skip
    if done:
        project.forget_containers()
    return done


def _recreating_unlabelled(plan: Plan, ours: Mapping[str, Container]) -> Plan:
    """A stopped host whose container an older devbox made (no owner label) is recreated by
    compose, not just started (its labels changed): count it as recreated, so `up` says so and
    asks about its files first."""
    older = tuple(name for name in plan.start if name in ours and name not in plan.recreate
                  and OWNER_LABEL not in ours[name].labels)  # fmt: skip
    return replace(plan, recreate=plan.recreate + older) if older else plan


def moved_from(container: Container) -> str:
    """The output folder a container was made from (compose's config-file label), "" if unsaid."""
    return origin_folder(container.labels) or ""


def _made_in_another_folder(project: Project, containers: Mapping[str, Container]) -> list[str]:
    """Hosts whose container was made from another folder than this one: the project folder was
    moved (a copy is refused before this, devbox.project.Project.check_labels). Their secrets and
    host keys are bind-mounted from the old path, so their next restart fails."""
    return sorted(name for name, container in containers.items()
                  if moved_from(container) and not same_path(moved_from(container), project.folder))  # fmt: skip


def _recreating_moved(plan: Plan, moved: list[str]) -> Plan:
    """Hosts made in a folder that moved are recreated (and so asked about first)."""
    if not moved:
        return plan
    start = plan.start + tuple(name for name in moved if name not in plan.start)
    return replace(plan, start=start, unchanged=tuple(name for name in plan.unchanged if name not in moved),
                   recreate=plan.recreate + tuple(name for name in moved if name not in plan.recreate))  # fmt: skip


def _refuse_budgets_below_the_image(project: Project, starting: list[Host], image: str) -> None:
    """On btrfs a host's cap holds its image too (devbox.disk.image_budget_problems): a budget
    too small for it is refused with its spec path before compose, not with the engine's bare
    "disk quota exceeded" when it creates the container."""
    from devbox.disk import BTRFS_CAP, image_budget_problems, layer_quota

    budgeted = [host for host in starting if host.disk is not None]
    if not budgeted or layer_quota(project.client.info()) != BTRFS_CAP:
        return
    problems = image_budget_problems(budgeted, int(project.client.images.get(image).attrs.get("Size") or 0))
    if problems:
        raise SpecError(project.spec.source, problems)


def repair_network(project: Project) -> list[str]:
    """Put back the project network when it was removed behind devbox's back (`docker network
    disconnect -f`, then `docker network rm`): its hosts run on without it, publish no port and
    take no login, while their config hash says nothing changed. The network is made again (as
    `up` makes it) and each host's container is connected to it again, running or not, under the
    names compose gives it: its files stay, and the engine publishes its port again. Returns what
    was done, one line each."""
    import docker.errors

    ours = project.containers()
    if not ours:
        return []
    network, made = _ensure_network(project)
    done = [f"network {network.name} was missing (removed outside devbox): made it again"] if made else []
    for host in project.spec.hosts:
        container = ours.get(host.name)
        if container is None:
            continue  # compose makes it, on the network
        attached = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        endpoint = attached.get(network.name)
        if endpoint is not None and endpoint.get("NetworkID") == network.id:
            continue
        if endpoint is not None:  # a stopped container still names the removed network
            with contextlib.suppress(docker.errors.APIError):
                project.client.api.disconnect_container_from_network(container.id, endpoint["NetworkID"], force=True)
        aliases = list(dict.fromkeys([host.name, host.hostname]))
        network.connect(container, aliases=aliases)
        done.append(f"{host.name}: connected to network {network.name} again (it was not on it: its port was "
                    "not published); its files stay")  # fmt: skip
    if done:
        project.forget_containers()
    return done


def _ensure_network(project: Project) -> tuple[Any, bool]:
    """The project's network, made first when missing (see _make_volumes_and_network); returns
    it and whether it was made."""
    from docker.types import IPAMConfig, IPAMPool

    spec, client = project.spec, project.client
    name = f"{spec.project}_{spec.network.name}"
    found = [network for network in client.networks.list(names=[name]) if network.name == name]
    if found:
        return found[0], False
    labels = {COMPOSE_PROJECT_LABEL: spec.project, **project.owner_labels(),
              "com.docker.compose.network": spec.network.name}  # fmt: skip
    ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=spec.network.subnet)]) if spec.network.subnet else None
    return client.networks.create(name, driver=spec.network.driver, ipam=ipam, labels=labels), True


def _make_volumes_and_network(project: Project) -> None:
    """Create the project's named volumes and network before compose, as compose would (its
    labels, so it takes them as its own) plus the owner's: a compose file cannot label them
    without changing their config hash, which on an existing stack makes compose remove the
    network (stopping its hosts) and offer to recreate the volumes. Existing ones are kept."""
    spec, client = project.spec, project.client
    labels = {COMPOSE_PROJECT_LABEL: spec.project, **project.owner_labels()}
    existing = {volume.name for volume in client.volumes.list(filters={"name": f"{spec.project}_"})}
    for key in sorted({name for host in spec.hosts for name in named_volumes(spec, host)}):
        if f"{spec.project}_{key}" not in existing:
            client.volumes.create(f"{spec.project}_{key}", driver="local",
                                  labels={**labels, "com.docker.compose.volume": key})  # fmt: skip
    _ensure_network(project)
