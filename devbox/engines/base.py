"""What every engine does: the primitives `up` is made of (devbox.converge), and `down`,
`check`, `doctor` and `logs`.

An engine turns a rendered project into running hosts on some Docker back end: compose on one
machine (devbox.engines.compose), services of a swarm (devbox.engines.swarm). The commands pick
one engine once (``Project.engine``) and never ask which one they have.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from docker.models.containers import Container

    from devbox.docker_api import StartWatch
    from devbox.project import Project
    from devbox.render import RenderedProject
    from devbox.spec import Host, Spec


@dataclass(frozen=True)
class Reach:
    """Where each host's container is, as far as this machine can see (`status`, `exec`,
    `check` and `passwd` look inside hosts through these)."""

    containers: dict[str, Container]
    # hosts running where this machine cannot look inside them: host -> what to do (one line)
    unreachable: dict[str, str] = field(default_factory=dict)
    # what the engine knows beyond the container (a swarm: node, its address, task state), by host
    details: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class VolumeSite:
    """Where one host's volumes are, for `backup` and `restore` (devbox.backup_ops): the engine
    that holds them (this machine's; on a swarm, the engine of the host's node), the host's
    container there if it has one, and where that is, said in messages (" on node n2")."""

    client: Any
    container: Container | None
    where: str = ""


@dataclass(frozen=True)
class Observed:
    """What `up` found of the project on the engine before changing anything."""

    objects: Mapping[str, Any]  # what the engine made for each host (container, service), by host
    containers: Mapping[str, Container]  # the hosts' containers this machine can look into (consent)
    extra: Any = None  # what the engine read on the way and needs again (a swarm: its nodes)
    leaving: tuple[str, ...] = ()  # hosts the spec dropped, removed by this `up`: their ports come free


@dataclass(frozen=True)
class Plan:
    """What `up` must do: build the image or not, which hosts to (re)create or start.

    ``recreate`` (a part of ``start``) names hosts whose container exists but was made from an
    older spec or image: it is replaced, and whatever was written outside its volumes goes.
    """

    tag: str
    build: bool
    start: tuple[str, ...]
    unchanged: tuple[str, ...]
    recreate: tuple[str, ...] = ()

    @property
    def nothing_to_do(self) -> bool:
        return not self.build and not self.start


@dataclass(frozen=True)
class Claim:
    """What an engine does with one spec setting: maps it (``why`` None), or cannot (``why``
    says so, and what to do). A setting it cannot do is refused by `validate` when a spec
    gives it a value of its own, or only noted (``refuse`` off) where it simply has no effect."""

    why: str | None = None
    refuse: bool = True


MAPPED = Claim()


def unsupported(why: str, *, refuse: bool = True) -> Claim:
    return Claim(why, refuse)


def claim_problems(claims: Mapping[str, Claim], spec: Spec) -> tuple[list[str], list[str]]:
    """(problems, notes) of the settings ``claims`` cannot do that the spec sets, each
    "path.setting: why", once per place it was written (a default names `defaults`)."""
    from devbox.spec import Host, Image

    plain_host, plain_image = Host(name="-", hostname="-", ssh_port=1), Image()
    problems: list[str] = []
    notes: list[str] = []
    for key, claim in claims.items():
        if claim.why is None:
            continue
        found = problems if claim.refuse else notes
        if key in HOST_ATTRIBUTES or hasattr(plain_host, key):
            for host in spec.hosts:
                if host_value(host, key) != host_value(plain_host, key):
                    line = f"{host.origin(key)}.{key}: {claim.why}"
                    if line not in found:
                        found.append(line)
        elif getattr(spec.image, key, None) != getattr(plain_image, key, None):
            found.append(f"image.{key}: {claim.why}")
    return problems, notes


# Host settings that a Host keeps under another attribute, by spec key.
HOST_ATTRIBUTES = {"gpu_capabilities": lambda host: host.gpus.capabilities}


def host_value(host: Host, key: str) -> Any:
    """A host's value of the spec setting ``key``."""
    return HOST_ATTRIBUTES[key](host) if key in HOST_ATTRIBUTES else getattr(host, key)


# One line of `doctor`: (subject, name, passed / failed / skipped (None), detail).
DoctorLine = tuple[str, str, "bool | None", str]


class Engine(ABC):
    """One Docker back end. Methods raise devbox errors (PreflightError, EngineError), never print:
    what the user should hear goes through ``project.say``."""

    name: ClassVar[str]
    # Whether devbox gives each GPU host devices of its own (devbox.gpus) before rendering; an
    # engine that places GPU hosts itself (a swarm's generic resources) says no.
    allocates_gpus: ClassVar[bool] = True

    # What the engine does with every host and image setting of a spec (devbox.spec.fields):
    # mapped, or not supported and why. A setting claimed by neither fails the unit tests.
    claims: ClassVar[Mapping[str, Claim]] = {}

    def spec_problems(self, spec: Spec) -> tuple[list[str], list[str]]:
        """What this engine cannot do of a valid spec: (problems, notes), each "path: text";
        by default the settings its ``claims`` say it cannot do."""
        return claim_problems(self.claims, spec)

    @abstractmethod
    def preflight(self, project: Project) -> list[str]:
        """Problems of the engine itself (not a swarm manager, ...), before anything changes."""

    @abstractmethod
    def gpu_problems(self, project: Project, facts: Mapping[str, Any]) -> list[str]:
        """Why the hosts that want GPUs cannot get them here (no runtime, no GPU nodes)."""

    # ---- the primitives `up` is made of (devbox.converge writes the sequence once)

    @abstractmethod
    def observe(self, project: Project) -> Observed:
        """What the project has on the engine now: its objects by host (hosts the spec dropped
        too) and the containers of them this machine can look into."""

    @abstractmethod
    def plan(self, project: Project, hosts: list[Host], rendered: RenderedProject, seen: Observed) -> Plan:
        """Which of ``hosts`` to (re)create, which are up to date, whether to build the image."""

    @abstractmethod
    def remove_host(self, project: Project, name: str, seen: Observed) -> None:
        """Remove a host the spec no longer has (its named volumes stay); returns once its port
        and volumes are free."""

    @abstractmethod
    def host_problems(self, project: Project, starting: list[Host], seen: Observed,
                      facts: Mapping[str, Any]) -> list[str]:  # fmt: skip
        """Why ``starting`` cannot start here (ports taken, resources, devices, placement),
        GPUs aside (``gpu_problems``): before anything is built or changed."""

    def renew_passwords(self, project: Project, unchanged: list[Host], seen: Observed,
                        rendered: RenderedProject) -> list[str]:  # fmt: skip
        """Apply new passwords in hosts that are otherwise up to date; returns the hosts changed
        (an engine whose hosts read passwords only at start replaces them instead: none)."""
        return []

    def publish(self, project: Project, rendered: RenderedProject) -> str:
        """Make the built image reachable where hosts run; returns the reference they run."""
        return rendered.image_tag

    @abstractmethod
    def apply(self, project: Project, plan: Plan, starting: list[Host], rendered: RenderedProject, image: str,
              seen: Observed, *, only: bool) -> None:  # fmt: skip
        """(Re)create and start ``starting`` as rendered, from ``image``."""

    @abstractmethod
    def down(self, project: Project, volumes: bool) -> None:
        """Remove the hosts and what the engine made for them; named volumes only when asked."""

    @abstractmethod
    def addresses(self, project: Project, hosts: list[Host]) -> dict[str, str]:
        """Where a client on this machine reaches each host's SSH port, by host name."""

    @abstractmethod
    def all_logs(self, project: Project, follow: bool, tail: str) -> None:
        """Every host's logs, each line prefixed with its host."""

    def early_addresses(self, project: Project, hosts: list[Host]) -> dict[str, str] | None:
        """``addresses`` when they are known without asking the engine (then `up` logs in to the
        running hosts while it checks them: devbox.probe.EarlyLogins); None: not before converge."""
        return None

    def start_watch(self, project: Project) -> StartWatch:
        """Host starts as they happen (see devbox.docker_api.StartWatch), so `up` probes each
        host once it runs."""
        return project.start_watch()

    def repair(self, project: Project) -> list[str]:
        """Put right what an interrupted `up` or `down` left half done (a container compose made
        under a temporary name); returns what was done, one line each."""
        return []

    def reach(self, project: Project) -> Reach:
        """Each host's container, on whichever machine runs it."""
        return Reach(project.containers())

    def stream_logs(self, project: Project, host: str, follow: bool, tail: str) -> Iterator[bytes]:
        """One host's logs as the engine streams them."""
        lines: int | str = int(tail) if tail.isdigit() else "all"
        yield from project.container(host).logs(stream=True, follow=follow, tail=lines)

    def doctor(self, project: Project) -> list[DoctorLine]:
        """The engine's own checks for `doctor`, beyond the engine, ports, resources and GPUs
        of this machine (a swarm: its nodes, registry, image and ports where hosts are pinned)."""
        return []

    def memory_reservations(self, project: Project) -> dict[str, int] | None:
        """Memory reservations as the engine applied them, by host, where the container does not
        say (a swarm service holds them); None: read them from each container."""
        return None

    # ---- backup and restore (devbox.backup_ops runs the copies, the same on every engine)

    def volume_site(self, project: Project, host: Host, *, restoring: bool = False) -> VolumeSite:
        """Where ``host``'s volumes are (``restoring``: where they must be for it to find them).
        Raises UsageError or EngineError, one line, when that engine cannot be reached."""
        return VolumeSite(project.client, project.containers().get(host.name))

    @contextlib.contextmanager
    def stopped_for_restore(self, project: Project, host: Host, site: VolumeSite) -> Iterator[None]:
        """Keep the host stopped while its volumes are refilled; the caller starts it after
        (`up`). Compose: its container is stopped, and started by `up`."""
        container = site.container
        if container is not None and container.status in ("running", "paused", "restarting"):
            project.say(f"{host.name}: stopping it for the restore")
            if container.status == "paused":
                container.unpause()
            container.stop(timeout=10)
        yield


def build_image(project: Project, tag: str) -> None:
    """Build the one shared image with BuildKit, its output live: `docker compose build` of the
    first host, the service that carries the build (the others reuse the image). Both engines
    build this way (a swarm builds on its manager).

    Compose, not the SDK: docker-py drives only the legacy builder, which Docker deprecated and
    which is slower here (7.7 s against BuildKit's 7.0 s for the same Dockerfile, caches empty),
    and has no build secrets or SSH agent: compose reads those (image.build_secrets) from the
    variables and files docker-compose.yml names, in its own environment, and hands them to
    BuildKit over its session, never as an argument. Raises SpecError when one is missing.
    """
    from devbox.docker_api import find_compose, run_compose
    from devbox.errors import SpecError
    from devbox.spec.rules import build_secret_problems

    missing = build_secret_problems(project.spec.image, os.environ)
    if missing:  # before compose, whose own message would name the secret but not the spec's line
        raise SpecError(project.spec.source, missing)
    project.say(f"building image {tag} (once for all hosts)")
    builder = project.spec.hosts[0].name
    run_compose(find_compose(), project.compose_file, project.spec.project, "build", builder)


def prune_images(project: Project, current: str) -> list[str]:
    """Remove the project's older images: keep ``current`` (the tag in use) and the newest one
    before it (to go back to), never an image a container still uses, never one devbox did not
    build (found by the label its builds carry), never one another spec of the same project name
    built (its owner label). Returns the tags removed.

    Every image edit builds a new tag (named by content); without this they pile up.
    """
    from devbox.labels import LABEL_PREFIX, OWNER_LABEL

    client = project.client
    built = client.images.list(filters={"label": f"{LABEL_PREFIX}project={project.spec.project}"})
    built = [image for image in built if (image.labels or {}).get(OWNER_LABEL, project.owner) == project.owner]
    built.sort(key=lambda image: str(image.attrs.get("Created", "")), reverse=True)
    # sparse: no inspect of each container, which fails when another program removes one meanwhile
    used = {c.attrs.get("ImageID") or c.attrs.get("Image") for c in client.containers.list(all=True, sparse=True)}
    older = [image for image in built if current not in image.tags]
    removed = []
    for image in older[1:]:
        if image.id in used:
            continue
        for tag in image.tags or [image.id]:
            client.images.remove(tag)
            removed.append(tag)
    return removed
