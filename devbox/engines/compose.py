"""Compose: the hosts as containers of one Docker Compose project on this machine.

Convergence by config hash (like compose itself): each rendered service carries a hash of its
definition and files as a label; a host whose container has another hash, or none, is
(re)created, the others are left alone. The plan is pure (``plan_up``), then checked, then
carried out with the Compose v2 CLI, which builds with BuildKit and starts whole projects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from devbox.docker_api import engine_facts, find_compose, list_containers, run_compose
from devbox.engines.base import Engine, build_image, prune_images
from devbox.engines.preflight import (
    device_problems,
    gpu_problems,
    port_problems,
    raise_all,
    resource_problems,
    ulimit_problems,
)
from devbox.labels import LABEL_PREFIX, OWNER_LABEL
from devbox.passwords import renew_passwords
from devbox.project import COMPOSE_PROJECT_LABEL, origin_folder, recreating_note, same_path
from devbox.render import connect_address, named_volumes

if TYPE_CHECKING:
    from docker.models.containers import Container

    from devbox.project import Project
    from devbox.render import RenderedProject
    from devbox.spec import Host


@dataclass(frozen=True)
class Plan:
    """What `up` must do: build the image or not, which hosts to (re)create or start.

    ``recreate`` (a part of ``start``) names hosts whose container exists but was made from an
    older spec or image: compose replaces it, and whatever was written outside its volumes goes.
    """

    tag: str
    build: bool
    start: tuple[str, ...]
    unchanged: tuple[str, ...]
    recreate: tuple[str, ...] = ()

    @property
    def nothing_to_do(self) -> bool:
        return not self.build and not self.start


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


class ComposeEngine(Engine):
    """One machine: `docker compose` brings the project up and down."""

    name = "compose"

    def preflight(self, project: Project) -> list[str]:
        return []

    def gpu_problems(self, project: Project, facts: Mapping[str, Any]) -> list[str]:
        return gpu_problems(project, facts)

    def converge(self, project: Project, hosts: list[Host], rendered: RenderedProject, *, only: bool) -> None:
        for line in self.repair(project):  # what an interrupted (or killed) run left half done
            project.say(line)
        ours = project.containers()
        wanted = {host.name for host in project.spec.hosts}
        dropped = {} if only else {name: c for name, c in ours.items() if name not in wanted}
        running = {name: (c.status, c.labels.get(f"{LABEL_PREFIX}config-hash", "")) for name, c in ours.items()
                   if name in wanted}  # fmt: skip
        present = bool(project.client.images.list(name=rendered.image_tag))
        plan = plan_up([h.name for h in hosts], rendered.config_hashes, rendered.image_tag, present, running)
        plan = _recreating_unlabelled(plan, ours)
        moved = _made_in_another_folder(project, {name: c for name, c in ours.items() if name in plan.unchanged
                                                  or name in plan.start})  # fmt: skip
        plan = _recreating_moved(plan, moved)
        # before anything is removed: the files that replacing or removing containers discards
        project.consent_to_discard({**dropped, **{name: ours[name] for name in plan.recreate}}, "recreating")
        if dropped:
            ours = _remove_dropped_hosts(project, ours)
        if moved:  # compose would start them as they are: their bind sources are under the old folder
            project.say(f"recreating {', '.join(moved)}: made in {moved_from(ours[moved[0]])}, which moved to "
                        f"{project.folder} (named volumes stay)")  # fmt: skip
            for name in moved:
                ours[name].remove(force=True)
            ours = {name: container for name, container in ours.items() if name not in moved}
        unchanged = [h for h in hosts if h.name in plan.unchanged]
        renewed = renew_passwords(project, unchanged, ours, rendered.password_digests)
        if renewed:
            project.say(f"new passwords applied in the running hosts: {', '.join(renewed)}")
        if plan.nothing_to_do:
            project.say(f"nothing {'else ' if renewed else ''}changed: {len(plan.unchanged)} hosts already up to date")
        else:
            _carry_out(project, plan, hosts, ours, only)

    def down(self, project: Project, volumes: bool) -> None:
        project.containers()  # refuses another spec's project before compose removes it
        # By project name, no compose file: down needs no secrets (e.g. an unset password_env).
        args = ["down", "--remove-orphans"] + (["--volumes"] if volumes else [])
        run_compose(find_compose(), None, project.spec.project, *args)

    def addresses(self, project: Project, hosts: list[Host]) -> dict[str, str]:
        return {host.name: connect_address(host) for host in hosts}

    def repair(self, project: Project) -> list[str]:
        return repair_renamed(project)

    def all_logs(self, project: Project, follow: bool, tail: str) -> None:
        """Compose interleaves every host's logs with host prefixes; the SDK does not."""
        args = ["logs", "--tail", tail] + (["--follow"] if follow else [])
        run_compose(find_compose(), None, project.spec.project, *args)


def _carry_out(project: Project, plan: Plan, hosts: list[Host], ours: Mapping[str, Container], only: bool) -> None:
    facts = engine_facts(project.client)
    starting = [h for h in hosts if h.name in plan.start]
    raise_all(port_problems(project, starting, ours) + resource_problems(project.spec, facts)
              + device_problems(starting) + ulimit_problems(project, starting))  # fmt: skip
    raise_all(gpu_problems(project, facts))
    if plan.build:
        build_image(project, plan.tag)
    if plan.recreate:
        project.say(recreating_note(list(plan.recreate)))
    project.say(f"starting {', '.join(plan.start)}")
    _make_volumes_and_network(project)
    args = ["up", "--detach", "--no-build", "--quiet-pull"]
    if not only:
        args.append("--remove-orphans")
    run_compose(find_compose(), project.compose_file, project.spec.project, *args, *plan.start)
    if plan.build:
        removed = prune_images(project, plan.tag)
        if removed:
            project.say(f"removed older images: {', '.join(removed)} (kept {plan.tag} and the one before it)")


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
    label = f"{LABEL_PREFIX}project={project.spec.project}"
    found = list_containers(project.client, all=True, filters={"label": label})
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


def _make_volumes_and_network(project: Project) -> None:
    """Create the project's named volumes and network before compose, as compose would (its
    labels, so it takes them as its own) plus the owner's: a compose file cannot label them
    without changing their config hash, which on an existing stack makes compose remove the
    network (stopping its hosts) and offer to recreate the volumes. Existing ones are kept."""
    from docker.types import IPAMConfig, IPAMPool

    spec, client = project.spec, project.client
    labels = {COMPOSE_PROJECT_LABEL: spec.project, **project.owner_labels()}
    existing = {volume.name for volume in client.volumes.list(filters={"name": f"{spec.project}_"})}
    for key in sorted({name for host in spec.hosts for name in named_volumes(spec, host)}):
        if f"{spec.project}_{key}" not in existing:
            client.volumes.create(f"{spec.project}_{key}", driver="local",
                                  labels={**labels, "com.docker.compose.volume": key})  # fmt: skip
    network = f"{spec.project}_{spec.network.name}"
    if not any(found.name == network for found in client.networks.list(names=[network])):
        ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=spec.network.subnet)]) if spec.network.subnet else None
        client.networks.create(network, driver=spec.network.driver, ipam=ipam,
                               labels={**labels, "com.docker.compose.network": spec.network.name})  # fmt: skip


def _remove_dropped_hosts(project: Project, ours: Mapping[str, Container]) -> dict[str, Container]:
    """Remove the containers of hosts the spec no longer has (what compose's --remove-orphans
    does, also when nothing else changed): left running, they would hold their ports and take
    logins that no devbox command shows. Returns the containers that stay."""
    wanted = {host.name for host in project.spec.hosts}
    dropped = sorted(name for name in ours if name not in wanted)
    if dropped:
        project.say(f"removing {', '.join(dropped)}: no longer in {project.spec.source} (named volumes stay)")
        for name in dropped:
            ours[name].remove(force=True)
    return {name: container for name, container in ours.items() if name in wanted}
