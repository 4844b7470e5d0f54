"""The runner: the only place that changes things on a Docker engine.

`up` is a plan followed by actions: what to build and start is computed purely from the rendered
files and what the engine reports (``plan_up``), checked (``preflight``), then carried out.
Output goes through a ``say`` callable given by the CLI; errors are raised, never printed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox import probe
from devbox.engine import (
    Compose,
    StartWatch,
    connect,
    engine_facts,
    exec_with_input,
    find_compose,
    parse_docker_time,
    run_compose,
)
from devbox.errors import EngineError, PreflightError, UsageError
from devbox.project import generated_note, recreating_note, render_to
from devbox.render import (
    COMPOSE_FILE,
    KNOWN_HOSTS,
    LABEL_PREFIX,
    RenderedProject,
    chpasswd_lines,
    connect_address,
    host_key_alias,
    passwords_path,
)
from devbox.spec import Host, Spec
from devbox.state import AppliedPasswords, Credentials, project_lock

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

Say = Callable[[str], None]
# A file's mtime comes from the kernel's coarse clock, a container's StartedAt from the engine's
# and is taken after its mounts: a file this close to a start may not be the one it read.
CLOCK_SLACK_SECONDS = 1.0
NVIDIA_TOOLKIT_HINT = (
    "install the NVIDIA Container Toolkit on the Docker host (nvidia-container-toolkit, then "
    "restart dockerd), or run CPU-only with `devbox --no-gpu up` or `gpu: off` in the spec"
)


# --------------------------------------------------------------------------- the project


@dataclass
class Project:
    """A spec, its output folder, and (once connected) the engine and compose it runs on."""

    spec: Spec
    folder: Path
    say: Say = print
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    _client: Any = None

    @property
    def compose_file(self) -> str:
        return str(self.folder / COMPOSE_FILE)

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect()
        return self._client

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """This project's lock; says so when another devbox command holds it."""
        return project_lock(self.folder, on_wait=lambda: self.say(
            f"waiting for another devbox command on {self.spec.project} to finish..."))

    def rendered_once(self) -> None:
        """Render only if nothing was rendered yet: looking at a stack needs its known_hosts, not
        fresh secrets (which may need variables that are not set now)."""
        if not (self.folder / KNOWN_HOSTS).is_file() or not Path(self.compose_file).is_file():
            self.render()

    def render(self) -> RenderedProject:
        rendered, _changed, created = render_to(self.spec, self.folder, self.environ)
        note = generated_note(self.folder, created)
        if note:
            self.say(note)
        return rendered

    def start_watch(self) -> StartWatch:
        """This project's container starts as they happen, so each host is probed from its own."""
        return StartWatch(self.client, f"{LABEL_PREFIX}project={self.spec.project}", f"{LABEL_PREFIX}host")

    def containers(self) -> dict[str, Container]:
        """This project's containers by host name (running or not; a running one wins).

        Found by devbox's own labels, which compose and swarm containers both carry; those of
        another spec under the same project name are refused here, for every command.
        """
        found = self.client.containers.list(all=True, filters={"label": [f"{LABEL_PREFIX}project={self.spec.project}"]})
        found.sort(key=lambda c: c.status == "running")
        containers = {c.labels.get(f"{LABEL_PREFIX}host", c.name): c for c in found}
        self.check_owner(containers)
        return containers

    def check_owner(self, containers: Mapping[str, Container]) -> None:
        """Refuse to act on containers another spec made under the same project name.

        Compose knows a project only by its name: a second spec with the same ``project:`` (say,
        `devbox init` in two folders of the same name) would remove the first one's hosts at
        `up` and their volumes at `down --volumes`. Compose labels each container with its file.
        """
        ours = os.path.realpath(self.compose_file)
        for container in containers.values():
            theirs = container.labels.get("com.docker.compose.project.config_files", "")
            if theirs and os.path.realpath(theirs) != ours:
                raise PreflightError(f"project {self.spec.project!r} already runs from {Path(theirs).parent}, "
                                     f"another spec's: give {self.spec.source} another `project:` name, or run "
                                     "devbox with that spec")  # fmt: skip

    def container(self, host: str) -> Container:
        self.host(host)
        container = self.containers().get(host)
        if container is None:
            raise UsageError(f"host {host!r} has no container (run `devbox up {host}`)")
        return container

    def host(self, name: str) -> Host:
        try:
            return self.spec.host(name)
        except KeyError:
            known = ", ".join(h.name for h in self.spec.hosts)
            raise UsageError(f"no host {name!r} in {self.spec.source} (hosts: {known})") from None

    def addresses(self, hosts: list[Host]) -> dict[str, str]:
        """Where a client on this machine reaches each host's SSH port, by host name (on a swarm,
        the node a host runs on: looked up once for all hosts, `up` waits on this)."""
        if self.spec.engine == "swarm":
            from devbox import swarm

            return swarm.node_addresses(self, hosts)
        return {host.name: connect_address(host) for host in hosts}

    def targets(self, hosts: list[Host]) -> list[probe.Target]:
        """Login targets for SSH probes: address, port, the user's password, the expected key."""
        credentials = Credentials.load(self.folder)
        addresses = self.addresses(hosts)
        known = dict(
            line.split(" ", 1) for line in (self.folder / KNOWN_HOSTS).read_text().splitlines() if line
        )
        return [
            probe.Target(
                host.name, addresses[host.name], host.ssh_port, self.spec.image.user,
                credentials.account(host.name, self.spec.image.user, self.environ).password,
                known[host_key_alias(self.spec, host)], key_only=not host.password_auth,
            )
            for host in hosts
        ]  # fmt: skip


# --------------------------------------------------------------------------- planning


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


# --------------------------------------------------------------------------- preflight


def _port_taken(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def _engine_is_local() -> bool:
    host = os.environ.get("DOCKER_HOST", "")
    return not host or host.startswith("unix://")


def _published_ports(project: Project) -> dict[int, str]:
    """Host ports that running containers of other projects publish, with the container's name.

    This is what the engine itself knows, so it also works when the engine is remote.
    """
    taken = {}
    for container in project.client.containers.list():
        if container.labels.get(f"{LABEL_PREFIX}project") == project.spec.project:
            continue
        for bindings in (container.attrs.get("HostConfig", {}).get("PortBindings") or {}).values():
            for binding in bindings or []:
                if str(binding.get("HostPort", "")).isdigit():
                    taken[int(binding["HostPort"])] = container.name
    return taken


def port_problems(project: Project, hosts: list[Host], ours: Mapping[str, Container]) -> list[str]:
    """Ports another process or container already holds (our own running host may keep its own)."""
    problems = []
    published = _published_ports(project)
    for host in hosts:
        container = ours.get(host.name)
        if container is not None and container.status == "running":
            continue  # it holds its own port; compose recreates it in place
        path = f"hosts.{host.name}.ssh_port"
        if host.ssh_port in published:
            problems.append(f"{path}: port {host.ssh_port} is already published by container "
                            f"{published[host.ssh_port]} (choose a free ssh_port, or stop it)")  # fmt: skip
        elif _engine_is_local() and _port_taken(host.bind_address, host.ssh_port):
            problems.append(f"{path}: port {host.ssh_port} on {host.bind_address} is already taken "
                            "by another program (choose a free ssh_port, or stop it)")  # fmt: skip
    return problems


def device_problems(hosts: list[Host]) -> list[str]:
    """Devices missing on this machine: the engine would refuse the container at start, after
    compose has already replaced the host's old one."""
    if not _engine_is_local():
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


def _gpu_probe_image(client: docker.DockerClient) -> str:
    """An empty image (no registry needed) to start GPU probe containers from."""
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
        _gpu_probe_image(client), entrypoint=["/devbox-gpu-probe"], network_mode="none",
        device_requests=[DeviceRequest(count=1, capabilities=[["gpu"]])],
    )  # fmt: skip
    try:
        container.start()
    except docker.errors.APIError as exc:
        return "could not select device driver" not in str(exc)
    finally:
        container.remove(force=True)
    return True


def gpu_problems(project: Project, facts: Mapping[str, Any]) -> list[str]:
    wanting = [h.name for h in project.spec.hosts if h.gpus.wanted]
    if not wanting or gpu_runtime_available(project.client, facts):
        return []
    return [f"hosts {', '.join(wanting)} want GPUs but the engine has no NVIDIA runtime: "
            f"{NVIDIA_TOOLKIT_HINT}"]  # fmt: skip


def _raise_all(problems: list[str]) -> None:
    if problems:
        raise PreflightError("\n".join(problems))


# --------------------------------------------------------------------------- actions


def build_image(project: Project, tag: str) -> None:
    """Build the one shared image with BuildKit, its output live: `docker compose build` of the
    first host, the service that carries the build (the others reuse the image).

    Compose, not the SDK: docker-py drives only the legacy builder, which Docker deprecated and
    which is slower here (7.7 s against BuildKit's 7.0 s for the same Dockerfile, caches empty).
    """
    project.say(f"building image {tag} (once for all hosts)")
    builder = project.spec.hosts[0].name
    run_compose(find_compose(), project.compose_file, project.spec.project, "build", builder)


def up(project: Project, only: list[str] | None = None,
       wait_seconds: float = 120.0) -> list[tuple[probe.Target, probe.Result]]:  # fmt: skip
    """Render, plan, preflight, build once, start with compose, then wait for SSH logins.

    No host is probed before its container has started (on a swarm, services start after
    `deploy` returns): see devbox.engine.StartWatch. Returns each host's login target (where it
    was reached) with its result, so callers need not look the addresses up again.
    """
    spec = project.spec
    hosts = [project.host(name) for name in only] if only else list(spec.hosts)
    with project.lock():
        rendered = project.render()
        with project.start_watch() as started:
            if spec.engine == "swarm":
                _up_swarm(project, hosts, rendered)
            else:
                _up_compose(project, hosts, rendered, only)
            started.see_running()
            targets = project.targets(hosts)
            results = probe.wait_for_logins(targets, wait_seconds, started.wait, started.failing)
    failed = [r for r in results if not r.ok]
    if failed:
        ours = project.containers()
        raise EngineError("; ".join(f"{r.name}: {r.detail}{_last_words(ours.get(r.name))}" for r in failed)
                          + " (see `devbox logs HOST`)")  # fmt: skip
    return list(zip(targets, results, strict=True))


def _last_words(container: Container | None) -> str:
    """The last line a failed host logged (often the reason: "sshd: not found"), for its error."""
    if container is None:
        return ""
    lines = container.logs(tail=5).decode(errors="replace").strip().splitlines()
    return f"; it last logged: {lines[-1].strip()[:200]}" if lines else ""


def _up_compose(project: Project, hosts: list[Host], rendered: RenderedProject, only: list[str] | None) -> None:
    ours = project.containers()
    if not only:
        ours = _remove_dropped_hosts(project, ours)
    running = {name: (c.status, c.labels.get(f"{LABEL_PREFIX}config-hash", "")) for name, c in ours.items()}
    present = bool(project.client.images.list(name=rendered.image_tag))
    plan = plan_up([h.name for h in hosts], rendered.config_hashes, rendered.image_tag, present, running)
    unchanged = [h for h in hosts if h.name in plan.unchanged]
    renewed = _renew_passwords(project, unchanged, ours, rendered.password_digests)
    if renewed:
        project.say(f"new passwords applied in the running hosts: {', '.join(renewed)}")
    if plan.nothing_to_do:
        project.say(f"nothing {'else ' if renewed else ''}changed: {len(plan.unchanged)} hosts already up to date")
    else:
        _carry_out(project, plan, hosts, ours, find_compose(), only)


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


def _renew_passwords(project: Project, hosts: list[Host], ours: Mapping[str, Container],
                     digests: Mapping[str, str]) -> list[str]:  # fmt: skip
    """Give running hosts the passwords devbox has now (a changed password_env, rendered by
    `render` or this `up`; a `devbox passwd` cut short); returns "host/user" of each one changed.

    A container reads its passwords file at every start: one that started after the file's
    last write (by more than a clock's slack) has it. Only the others are asked, once: the
    answer goes into the project's AppliedPasswords record.
    """
    record = AppliedPasswords(project.folder)
    credentials: Credentials | None = None
    renewed = []
    for host in hosts:
        container, digest = ours[host.name], digests[host.name]
        if record.holds(host.name, container.id, digest):
            continue
        written = (project.folder / passwords_path(host)).stat().st_mtime
        if written > parse_docker_time(container.attrs["State"]["StartedAt"]) - CLOCK_SLACK_SECONDS:
            credentials = credentials or Credentials.load(project.folder)
            hashes = credentials.hashes(project.spec, host)
            renewed += [f"{host.name}/{user}" for user in apply_passwords(project, host, container, hashes)]
        record.note(host.name, container.id, digest)
    record.save()
    return renewed


def _up_swarm(project: Project, hosts: list[Host], rendered: RenderedProject) -> None:
    """The same plan on a swarm: services instead of compose containers."""
    from devbox import swarm

    swarm.preflight(project)
    stale = swarm.plan(project, hosts, rendered)
    if not stale:
        project.say(f"nothing changed: {len(hosts)} services already up to date")
        return
    facts = engine_facts(project.client)
    _raise_all(port_problems(project, stale, project.containers()) + resource_problems(project.spec, facts))
    if not project.client.images.list(name=rendered.image_tag):
        build_image(project, rendered.image_tag)
    swarm.deploy(project, stale, rendered)


def _carry_out(project: Project, plan: Plan, hosts: list[Host], ours: Mapping[str, Container],
               compose: Compose, only: list[str] | None) -> None:  # fmt: skip
    facts = engine_facts(project.client)
    starting = [h for h in hosts if h.name in plan.start]
    _raise_all(port_problems(project, starting, ours) + resource_problems(project.spec, facts)
               + device_problems(starting))  # fmt: skip
    _raise_all(gpu_problems(project, facts))
    if plan.build:
        build_image(project, plan.tag)
    if plan.recreate:
        project.say(recreating_note(list(plan.recreate)))
    project.say(f"starting {', '.join(plan.start)}")
    args = ["up", "--detach", "--no-build", "--quiet-pull"]
    if not only:
        args.append("--remove-orphans")
    run_compose(compose, project.compose_file, project.spec.project, *args, *plan.start)


def down(project: Project, volumes: bool) -> None:
    """Remove the containers and the network; named volumes only when asked."""
    with project.lock():
        if project.spec.engine == "swarm":
            from devbox import swarm

            swarm.down(project, volumes)
            return
        project.containers()  # refuses another spec's project before compose removes it
        # By project name, no compose file: down needs no secrets (e.g. an unset password_env).
        args = ["down", "--remove-orphans"] + (["--volumes"] if volumes else [])
        run_compose(find_compose(), None, project.spec.project, *args)


# --------------------------------------------------------------------------- looking


def host_status(spec: Spec, host: Host, container: Container | None) -> dict[str, Any]:
    """One host as `status` reports it: state, health, port, and the limits Docker applied."""
    entry: dict[str, Any] = {
        "host": host.name, "state": "missing", "health": None, "ssh_port": host.ssh_port,
        "bind_address": host.bind_address, "ssh": f"ssh -p {host.ssh_port} "
        f"{spec.image.user}@{connect_address(host)}",
    }  # fmt: skip
    if container is None:
        return entry
    attrs = container.attrs
    config = attrs.get("HostConfig", {})
    state = attrs.get("State", {})
    entry.update(
        state=state.get("Status", container.status),
        health=(state.get("Health") or {}).get("Status"),
        container=container.name,
        limits={"cpus": (config.get("NanoCpus") or 0) / 1e9 or None, "memory": config.get("Memory") or None},
        reservations={"memory": config.get("MemoryReservation") or None},
        cpuset=config.get("CpusetCpus") or None,
        shm_size=config.get("ShmSize"),
        gpus=[
            {"driver": r.get("Driver"), "count": r.get("Count"), "device_ids": r.get("DeviceIDs"),
             "capabilities": r.get("Capabilities")}
            for r in config.get("DeviceRequests") or []
        ],
        restart=(config.get("RestartPolicy") or {}).get("Name"),
        restarts=attrs.get("RestartCount", 0),
    )  # fmt: skip
    return entry


def status(project: Project) -> list[dict[str, Any]]:
    ours = project.containers()
    return [host_status(project.spec, host, ours.get(host.name)) for host in project.spec.hosts]


def stream_logs(project: Project, host: str, follow: bool, tail: str) -> Iterator[bytes]:
    container = project.container(host)
    lines: int | str = int(tail) if tail.isdigit() else "all"
    return iter(container.logs(stream=True, follow=follow, tail=lines))


def all_logs(project: Project, follow: bool, tail: str) -> None:
    """Every host's logs interleaved with host prefixes: compose does this, the SDK does not."""
    if project.spec.engine == "swarm":
        if follow:
            raise UsageError("on a swarm, follow one host at a time: devbox logs -f HOST")
        for host in project.spec.hosts:
            for line in b"".join(stream_logs(project, host.name, False, tail)).decode(errors="replace").splitlines():
                project.say(f"{host.name} | {line}")
        return
    args = ["logs", "--tail", tail] + (["--follow"] if follow else [])
    run_compose(find_compose(), None, project.spec.project, *args)


def exec_in(project: Project, host: str, command: list[str], user: str | None,
            write: Callable[[bytes], None]) -> int:  # fmt: skip
    """Run a command in a host, streaming its output; returns its exit code."""
    container = project.container(host)
    if container.status != "running":
        raise UsageError(f"host {host!r} is {container.status} (run `devbox up {host}`)")
    api = project.client.api
    exec_id = api.exec_create(container.id, command, user=user or "", stdout=True, stderr=True)
    for chunk in api.exec_start(exec_id, stream=True):
        write(chunk)
    return int(api.exec_inspect(exec_id)["ExitCode"] or 0)


def rotate_password(project: Project, host: str, user: str) -> bool:
    """A new generated password for one account, applied to the running host at once.

    Returns whether a running container was updated (else it applies at the next `up`).
    """
    target = project.host(host)
    if user not in project.spec.accounts(target):
        accounts = ", ".join(project.spec.accounts(target))
        raise UsageError(f"{host} has no account {user!r} with a password (accounts: {accounts})")
    if user in dict(target.password_env):
        raise UsageError(f"the password of {host}/{user} comes from ${dict(target.password_env)[user]}: change "
                         "the variable and run `devbox up`")  # fmt: skip
    with project.lock():
        containers = project.containers()  # the engine answers (and they are ours) before anything changes
        credentials = Credentials.load(project.folder)
        credentials.rotate(host, user)
        credentials.save()
        rendered = project.render()
        container = containers.get(host)
        if container is None or container.status != "running":
            return False
        apply_passwords(project, target, container, credentials.hashes(project.spec, target))
        record = AppliedPasswords(project.folder)
        record.note(host, container.id, rendered.password_digests[host])
        record.save()
        return True


def apply_passwords(project: Project, host: Host, container: Container,
                    hashes: tuple[tuple[str, str], ...]) -> list[str]:  # fmt: skip
    """Set the host's passwords (``hashes``: devbox's, by account) in its running container
    where they differ; returns the accounts changed.

    The container keeps its passwords file as it was at start (a new one is a new file). The
    hashes go to ``chpasswd -e`` on its input: in an argument list, anyone on the machine could
    read them (ps, `docker events`), and a person's chosen password can be guessed from its hash.
    """
    wanted = dict(hashes)
    _, output = container.exec_run(["getent", "shadow", *wanted])
    current = dict(line.split(":")[:2] for line in output.decode(errors="replace").splitlines() if ":" in line)
    changed = [user for user, hashed in wanted.items() if current.get(user) != hashed]
    if changed:
        lines = chpasswd_lines((user, wanted[user]) for user in changed).encode()
        code, detail = exec_with_input(project.client, container.id, ["chpasswd", "-e"], lines)
        if code != 0:
            raise EngineError(f"could not set the passwords of {', '.join(changed)} in {host.name}: "
                              f"{detail.strip() or f'chpasswd exited with {code}'}")  # fmt: skip
    return changed
