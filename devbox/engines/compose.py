"""Compose: the hosts as containers of one Docker Compose project on this machine.

Convergence by config hash (like compose itself): each rendered service carries a hash of its
definition and files as a label; a host whose container has another hash, or none, is
(re)created, the others are left alone. The plan is pure (``plan_up``), then checked, then
carried out with the Compose v2 CLI, which builds with BuildKit and starts whole projects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devbox.docker_api import engine_facts, find_compose, run_compose
from devbox.engines.base import Engine, build_image, prune_images
from devbox.engines.preflight import (
    device_problems,
    gpu_problems,
    port_problems,
    raise_all,
    resource_problems,
    ulimit_problems,
)
from devbox.passwords import renew_passwords
from devbox.project import recreating_note
from devbox.render import LABEL_PREFIX, connect_address

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
        ours = project.containers()
        wanted = {host.name for host in project.spec.hosts}
        dropped = {} if only else {name: c for name, c in ours.items() if name not in wanted}
        running = {name: (c.status, c.labels.get(f"{LABEL_PREFIX}config-hash", "")) for name, c in ours.items()
                   if name in wanted}  # fmt: skip
        present = bool(project.client.images.list(name=rendered.image_tag))
        plan = plan_up([h.name for h in hosts], rendered.config_hashes, rendered.image_tag, present, running)
        # before anything is removed: the files that replacing or removing containers discards
        project.consent_to_discard({**dropped, **{name: ours[name] for name in plan.recreate}}, "recreating")
        if dropped:
            ours = _remove_dropped_hosts(project, ours)
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
    args = ["up", "--detach", "--no-build", "--quiet-pull"]
    if not only:
        args.append("--remove-orphans")
    run_compose(find_compose(), project.compose_file, project.spec.project, *args, *plan.start)
    if plan.build:
        removed = prune_images(project, plan.tag)
        if removed:
            project.say(f"removed older images: {', '.join(removed)} (kept {plan.tag} and the one before it)")


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
