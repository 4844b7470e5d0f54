"""`devbox check` (is the running stack what the spec says?) and `devbox doctor` (can it run here?).

Each check yields a Check: passed (True), failed (False) or skipped (None) with the reason, so
the CLI prints one line per check and exits non-zero when anything failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devbox import probe
from devbox.docker_api import talks_to_engine
from devbox.errors import DevboxError
from devbox.gpus import Assignment, Ledger, load_ledger
from devbox.operations import login_targets
from devbox.spec import THREAD_VARIABLES, Host

if TYPE_CHECKING:
    from docker.models.containers import Container

    from devbox.project import Project


@dataclass(frozen=True)
class Check:
    subject: str
    name: str
    ok: bool | None  # None: skipped
    detail: str
    warning: bool = False  # passed, with something to act on soon (WARN; never fails the run)

    @property
    def word(self) -> str:
        return "WARN" if self.warning else {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]


# --------------------------------------------------------------------------- check


def _exec(container: Container, argv: list[str]) -> tuple[int, str]:
    """Run an argument list in a container (no shell); returns exit code and output."""
    code, output = container.exec_run(argv, demux=False)
    return int(code or 0), (output or b"").decode("utf-8", "replace").strip()


def start_environment(container: Container) -> dict[str, str]:
    """The environment the host started with, saved by its entrypoint. The engine puts NVIDIA_*
    there, not in the container's config, and sshd's process title hides /proc/1/environ."""
    _, raw = _exec(container, ["cat", "/run/devbox-environment"])
    return dict(line.split("=", 1) for line in raw.splitlines() if "=" in line)


def _has(container: Container, command: str) -> bool:
    return _exec(container, ["sh", "-c", 'command -v "$1"', "_", command])[0] == 0


@talks_to_engine
def check_stack(project: Project, deep: bool = False) -> Iterator[Check]:
    """Every check of a running stack, in a readable order."""
    spec = project.spec
    engine = project.engine
    reach = engine.reach(project)
    containers = reach.containers
    running: dict[str, Container] = {}
    for host in spec.hosts:
        container = containers.get(host.name)
        if host.name in reach.unreachable:
            details = reach.details.get(host.name, {})
            yield Check(host.name, "running", details.get("task") == "running",
                        f"task {details.get('task', '?')} on node {details.get('node', '?')}")  # fmt: skip
            yield Check(host.name, "inside checks", None, reach.unreachable[host.name])
        elif container is None or container.status != "running":
            state = container.status if container else "missing"
            yield Check(host.name, "running", False, f"container is {state} (run `devbox up`)")
        else:
            running[host.name] = container
            yield Check(host.name, "running", True, container.name)
    up_hosts = [h for h in spec.hosts if h.name in running]
    reached = [h for h in spec.hosts if h.name in reach.unreachable and reach.details[h.name].get("task") == "running"]
    reserved = engine.memory_reservations(project) or {}
    ledger = load_ledger(project.folder) if engine.allocates_gpus else Ledger()
    yield from _logins(project, [h for h in spec.hosts if h in up_hosts or h in reached], running)
    for host in up_hosts:
        container = running[host.name]
        container.reload()
        yield from _network(host, container, [h for h in up_hosts if h is not host])
        yield from _limits(host, container.attrs, reserved.get(host.name))
        yield from _volumes(host, container.attrs)
        yield from _threads(host, container)
        yield from _gpus(host, container, deep, ledger.of(host.name), engine_assigns=not engine.allocates_gpus)


def _logins(project: Project, hosts: list[Host], running: dict[str, Container]) -> Iterator[Check]:
    """A real login on each host, and the hostname it answers with. A key-only host takes no
    login devbox can make (it has no private key): its hostname comes from the container."""
    from concurrent.futures import ThreadPoolExecutor

    targets = login_targets(project, hosts)
    if not targets:
        return
    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        results = list(pool.map(lambda t: probe.login(t, command="hostname"), targets))
    for result in results:
        detail = result.detail
        if result.ok:
            inside = running.get(result.name)
            hostname = result.output.strip() or (_exec(inside, ["hostname"])[1] if inside else "") or "?"
            detail += f", hostname {hostname} ({result.seconds:.2f}s)"
        elif result.refused:  # the host holds another password than devbox's (see operations.up)
            detail += "; `devbox up` sets devbox's password in it again"
        yield Check(result.name, "ssh login", result.ok, detail)


def _network(host: Host, container: Container, others: list[Host]) -> Iterator[Check]:
    """Each other host resolves by name and answers on its SSH port over the project network."""
    ping = _has(container, "ping")
    for other in others:
        code, out = _exec(container, ["getent", "hosts", other.hostname])
        if code != 0:
            yield Check(host.name, f"reach {other.name}", False, f"{other.hostname} does not resolve")
            continue
        address = out.split()[0] if out else "?"
        if ping:
            code, _ = _exec(container, ["ping", "-c", "1", "-W", "2", other.hostname])
            how = "ping"
        else:
            code, _ = _exec(container, ["timeout", "3", "bash", "-c", 'exec 3<>"/dev/tcp/$1/22"', "_", other.hostname])
            how = "tcp/22"
        yield Check(host.name, f"reach {other.name}", code == 0, f"{other.hostname} -> {address} ({how})")


def _limits(host: Host, attrs: dict[str, Any], engine_reserved: int | None = None) -> Iterator[Check]:
    """Limits and reservations Docker reports, compared with the spec (``engine_reserved``: the
    memory reservation where the engine, not the container, holds it)."""
    config = attrs.get("HostConfig", {})
    reserved = (config.get("MemoryReservation") or 0) if engine_reserved is None else engine_reserved
    shm = config.get("ShmSize") or 0
    for mount in config.get("Mounts") or []:  # a swarm service mounts /dev/shm as a sized tmpfs
        if mount.get("Target") == "/dev/shm":  # noqa: S108 - a path inside the container, not a temp file
            shm = (mount.get("TmpfsOptions") or {}).get("SizeBytes", shm)
    pairs = [
        ("limits.cpus", int(round((host.limits.cpus or 0) * 1e9)), config.get("NanoCpus") or 0),
        ("limits.memory", host.limits.memory.bytes if host.limits.memory else 0, config.get("Memory") or 0),
        ("reservations.memory", host.reservations.memory.bytes if host.reservations.memory else 0, reserved),
        ("shm_size", host.shm_size.bytes, shm),
        ("cpuset", host.cpuset or "", config.get("CpusetCpus") or ""),
    ]  # fmt: skip
    for name, wanted, applied in pairs:
        if wanted or applied:
            yield Check(host.name, name, wanted == applied, f"spec {wanted}, applied {applied}")
    if host.reservations.cpus:
        yield Check(host.name, "reservations.cpus", None, f"{host.reservations.cpus:g} CPUs: a single engine does "
                    "not enforce CPU reservations (limits are enforced; cpuset pins cores)")  # fmt: skip


def _volumes(host: Host, attrs: dict[str, Any]) -> Iterator[Check]:
    mounted = {m.get("Destination"): m for m in attrs.get("Mounts", [])}
    for volume in host.volumes:
        mount = mounted.get(volume.target)
        ok = mount is not None and mount.get("RW", True) is not volume.read_only
        detail = f"{volume.source} on {volume.target}" + (" (read-only)" if volume.read_only else "")
        yield Check(host.name, f"volume {volume.target}", ok, detail if ok else f"{detail} is not mounted as asked")


def _threads(host: Host, container: Container) -> Iterator[Check]:
    env = dict(item.split("=", 1) for item in container.attrs.get("Config", {}).get("Env", []) if "=" in item)
    shown = {name: env[name] for name in THREAD_VARIABLES if name in env}
    wanted = dict(host.environment)
    ok = all(wanted.get(name) == value for name, value in shown.items())
    if shown:
        yield Check(host.name, "thread variables", ok, " ".join(f"{k}={v}" for k, v in sorted(shown.items())))


def _wanted_request(host: Host, assignment: Assignment | None) -> tuple[list[str] | None, int]:
    """The (DeviceIDs, Count) the container should have: its allocation's devices where devbox
    allocated them (devbox.gpus), else the spec's request as written."""
    if assignment is not None:
        return (None, -1) if assignment.all else (list(assignment.device_ids), 0)
    wanted_ids = list(host.gpus.device_ids) or None
    return wanted_ids, -1 if host.gpus.count == "all" else (int(host.gpus.count) if not wanted_ids else 0)


def _swarm_gpus(host: Host, container: Container) -> Check:
    """A swarm hands GPUs out as generic resources: the task's container is told which in
    DOCKER_RESOURCE_NVIDIA-GPU (UUIDs, or a count for a discrete resource), which the NVIDIA
    runtime reads; there is no device request to compare."""
    env = dict(item.split("=", 1) for item in container.attrs.get("Config", {}).get("Env", []) if "=" in item)
    given = env.get("DOCKER_RESOURCE_NVIDIA-GPU", "")
    count = int(given) if given.isdigit() else len([unit for unit in given.split(",") if unit])
    return Check(host.name, "gpu assignment", count == host.gpus.count,
                 f"swarm assigned {given or 'none'} (NVIDIA-GPU), spec {host.gpus.count}")  # fmt: skip


def _gpus(host: Host, container: Container, deep: bool, assignment: Assignment | None = None,
          engine_assigns: bool = False) -> Iterator[Check]:  # fmt: skip
    requests = container.attrs.get("HostConfig", {}).get("DeviceRequests") or []
    if not host.gpus.wanted:
        if requests:
            yield Check(host.name, "gpus", False, "the container has GPU requests the spec does not ask for")
        return
    if engine_assigns:
        yield _swarm_gpus(host, container)
    else:
        request = requests[0] if requests else {}
        wanted_ids, wanted_count = _wanted_request(host, assignment)
        ok = bool(request) and request.get("DeviceIDs") == wanted_ids and (request.get("Count") or 0) == wanted_count
        visible = start_environment(container).get("NVIDIA_VISIBLE_DEVICES", "(unset)")
        yield Check(host.name, "gpu request", ok, f"ids {request.get('DeviceIDs')}, count {request.get('Count')}, "
                    f"capabilities {request.get('Capabilities')}; NVIDIA_VISIBLE_DEVICES={visible}")  # fmt: skip
    if not _has(container, "nvidia-smi"):
        yield Check(host.name, "nvidia-smi", None, "no nvidia-smi in the container: the engine has no NVIDIA "
                    "runtime with a driver (nothing to run on)")  # fmt: skip
        return
    code, out = _exec(container, ["nvidia-smi", "-L"])
    yield Check(host.name, "nvidia-smi", code == 0, out.replace("\n", "; ") or f"exit {code}")
    if deep:
        code, out = _exec(container, ["python3", "-c", "import torch; print(torch.cuda.device_count())"])
        if code != 0:
            yield Check(host.name, "torch.cuda", None, "torch is not installed in the image")
        else:
            yield Check(host.name, "torch.cuda", out.strip() not in ("", "0"), f"{out.strip()} devices")


# --------------------------------------------------------------------------- doctor


def _port_holding(container: Container) -> tuple[str, bool]:
    """A host's container as the ports check sees it: (its state, whether the engine publishes
    a port for it now). One taken off its network (`docker network rm`) publishes none; a swarm
    task publishes nothing itself (its service does, on the ingress network)."""
    if "com.docker.swarm.service.id" in container.labels:
        return container.status, True
    published = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    return container.status, any(bindings for bindings in published.values())


def ports_check(hosts: Iterable[Host], holding: Mapping[str, tuple[str, bool]]) -> Check:
    """Pure: the ports line of `doctor`, once no other program or container holds a host's port.
    A port is "free" only where no container of the host exists; one the host's container holds is
    named as its, and one it should hold but does not publish (a running container off its
    network) fails, with the fix."""
    free, held, broken = [], [], []
    for host in hosts:
        where = f"{host.bind_address}:{host.ssh_port}"
        if host.name not in holding:
            free.append(where)
            continue
        state, publishing = holding[host.name]
        if state == "running" and not publishing:
            broken.append(f"{where}: {host.name}'s container runs but publishes no port (taken off its network, "
                          "e.g. by `docker network rm`): `devbox up` connects it again")  # fmt: skip
        else:
            held.append(f"{where} held by {host.name} ({state})")
    if broken:
        return Check("ports", "held by the hosts", False, "; ".join(broken))
    parts = held + ([f"free: {', '.join(free)}"] if free else [])
    return Check("ports", "free" if not held else "held by the hosts" if not free else "held or free", True,
                 "; ".join(parts))  # fmt: skip


@talks_to_engine
def doctor(project: Project) -> Iterator[Check]:
    """The preflight of `up`, each check on its own line with its fix."""
    from devbox.docker_api import engine_facts, find_compose
    from devbox.engines.preflight import device_problems, port_problems, resource_problems, ulimit_problems

    spec = project.spec
    try:
        client = project.client
        facts = engine_facts(client)
        yield Check("engine", "reachable", True, f"Docker {facts['server_version']}, {facts['cpus']} CPUs, "
                    f"{facts['memory'] / 1024**3:.1f} GiB")  # fmt: skip
    except DevboxError as exc:
        yield Check("engine", "reachable", False, str(exc))
        facts = None
    try:
        compose = find_compose()
        yield Check("compose", "v2", True, f"{' '.join(compose.command)} {compose.version}")
    except DevboxError as exc:
        yield Check("compose", "v2", False, str(exc))
    if facts is None:
        yield Check("engine", "ports, resources, GPUs", None, "need the engine")
        return
    engine = project.engine
    problems = engine.preflight(project)
    yield Check("engine", engine.name, not problems, "; ".join(problems) or f"can run {engine.name} projects")
    ours = project.containers()
    problems = port_problems(project, list(spec.hosts), ours)
    if problems:
        yield Check("ports", "free", False, "; ".join(problems))
    else:
        yield ports_check(spec.hosts, {name: _port_holding(c) for name, c in ours.items()})
    problems = resource_problems(spec, facts)
    yield Check("resources", "fit the engine", not problems, "; ".join(problems) or "limits and reservations fit")
    for line in engine.doctor(project):
        yield Check(*line)
    yield from _disk(project)
    if any(h.devices for h in spec.hosts):
        problems = device_problems(list(spec.hosts))
        yield Check("devices", "present", not problems, "; ".join(problems) or "every device exists")
    if any(h.ulimits for h in spec.hosts):
        problems = ulimit_problems(project, list(spec.hosts))
        yield Check("ulimits", "within the engine's", not problems, "; ".join(problems) or "the engine grants them")
    if not any(h.gpus.wanted for h in spec.hosts):
        yield Check("gpus", "runtime", None, "no host asks for GPUs")
        return
    problems = engine.gpu_problems(project, facts)
    yield Check("gpus", "runtime", not problems, "; ".join(problems) or "the engine accepts NVIDIA GPU requests")


def _disk(project: Project) -> Iterator[Check]:
    """The engine's disk has room, and no host is near its budget (warnings: nothing fails)."""
    from devbox import disk

    client = project.client
    engine = disk.engine_disk(client)
    measured = disk.measure(client, project.spec)
    if engine is None:
        yield Check("disk", "engine's disk", None, "not on this machine (set DEVBOX_DOCKER_ROOT to a mount of it)")
    else:
        line = disk.engine_disk_warning(engine, measured)
        yield Check("disk", "engine's disk", True, line or f"{engine.path}: {disk.size_text(engine.free)} free of "
                    f"{disk.size_text(engine.size)}", warning=bool(line))  # fmt: skip
    if any(host.disk for host in project.spec.hosts):
        lines = disk.budget_warnings(project.spec, measured)
        yield Check("disk", "budgets", True, "; ".join(lines) or ", ".join(
            f"{d.host} {disk.size_text(d.total)} of {disk.size_text(d.budget)}" for d in measured if d.budget),
            warning=bool(lines))  # fmt: skip
