"""What the commands do, on whichever engine the spec names: up, down, status, logs, exec, and
the ones that only write files (validate, render).

Each operation works on a Project and asks the engine it holds (``project.engine``, made once).
Output goes through ``project.say``; errors are raised, never printed. The engines are imported
by the operations that use them: `status` and `exec` only look, and start faster without them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from devbox import probe, watch_service
from devbox.docker_api import StartWatch, engine_errors, talks_to_engine
from devbox.errors import DevboxError, EngineError, PreflightError, UsageError
from devbox.layout import LEDGER_FILE
from devbox.render import connect_address

if TYPE_CHECKING:
    from pathlib import Path

    from docker.models.containers import Container

    from devbox.gpus import GpuRow, Ledger, Machine
    from devbox.project import Project
    from devbox.render import RenderedFile
    from devbox.spec import Host, Spec


def login_targets(project: Project, hosts: list[Host]) -> list[probe.Target]:
    """Where and how to log in to each host: the engine knows where it runs."""
    return project.targets(hosts, project.engine.addresses(project, hosts))


def up(project: Project, only: list[str] | None = None,
       wait_seconds: float = 120.0) -> list[tuple[probe.Target, probe.Result]]:  # fmt: skip
    """Render, converge on the engine, then wait for SSH logins.

    No host is probed before its container has started (on a swarm, services start after
    `deploy` returns): see devbox.docker_api.StartWatch. Returns each host's login target (where
    it was reached) with its result, so callers need not look the addresses up again.
    """
    hosts = [project.host(name) for name in only] if only else list(project.spec.hosts)
    with project.lock():
        early = _early_logins(project, hosts)  # under the lock (no other `up` changes the hosts meanwhile)
        with engine_errors():  # the SDK's import (0.1 s) from here: the early logins run meanwhile
            return _up(project, hosts, early, only=bool(only), wait_seconds=wait_seconds)


def _up(project: Project, hosts: list[Host], early: probe.EarlyLogins | None, *, only: bool,
        wait_seconds: float) -> list[tuple[probe.Target, probe.Result]]:  # fmt: skip
    from devbox.converge import converge, survey  # the engines' modules: not imported by looking at a stack

    engine = project.engine
    with _reporting_interrupts(project), project.gpu_lock(engine.allocates_gpus) as gpu_lock:
        # GPUs are given out under the machine lock, until the containers that hold them exist
        rendered = project.render(allocate_gpus=engine.allocates_gpus, engine_gpus=True)
        with engine.start_watch(project) as started:
            with project.reusing_containers(), ThreadPoolExecutor(max_workers=1) as pool:
                disk_lines = pool.submit(_disk_warnings, project)  # the engine's disk, read meanwhile
                project.containers()  # the project's containers, volumes and networks are this spec's
                for line in disk_lines.result():
                    project.say(f"warning: {line}")
                if project.spec.engine == "compose":
                    watch_service.bring_back(project, hosts)  # the idle-stopped get their restart policy back
                surveyed = survey(project)
            converged = converge(project, hosts, rendered, only=only, surveyed=surveyed)
            gpu_lock.release()
            started.see_running()
            targets = login_targets(project, hosts)

            def wait_for(some: list[probe.Target]) -> list[probe.Result]:
                return probe.wait_for_logins(some, wait_seconds, started.wait, started.failing)

            if early is not None and converged.untouched and early.targets == targets:
                results = _settled(early.results(), targets, wait_for)
            else:
                results = wait_for(targets)
            results = _restart_rekeyed(project, targets, results, wait_seconds, started)
            results = _reapply_refused(project, targets, results, rendered.password_digests, wait_seconds, started)
        if converged.pruning is not None:
            converged.pruning.finish()
        watch_service.start(project)  # the idle watcher, when a host has an idle policy
    failed = [r for r in results if not r.ok]
    if failed:
        ours = project.containers()
        raise EngineError("; ".join(f"{r.name}: {r.detail}{_last_words(ours.get(r.name))}" for r in failed)
                          + " (see `devbox logs HOST`)")  # fmt: skip
    return list(zip(targets, results, strict=True))


def _settled(first: list[probe.Result], targets: list[probe.Target],
             wait_for: Callable[[list[probe.Target]], list[probe.Result]]) -> list[probe.Result]:  # fmt: skip
    """The early logins' results, with the hosts whose login did not settle probed again."""
    again = [target for target, result in zip(targets, first, strict=True) if not result.settled]
    redone = dict(zip([target.name for target in again], wait_for(again) if again else [], strict=True))
    return [redone.get(result.name, result) for result in first]


def _early_logins(project: Project, hosts: list[Host]) -> probe.EarlyLogins | None:
    """Logins to the hosts as they run now, when the engine needs no asking where they are: a
    warm `up` (nothing to change) is then as long as its engine checks, not those plus the logins."""
    addresses = project.engine.early_addresses(project, hosts)
    if addresses is None:
        return None
    try:
        return probe.EarlyLogins(project.targets(hosts, addresses))
    except DevboxError:  # no credentials or host keys yet: the usual probe says what is wrong
        return None


def _disk_warnings(project: Project) -> list[str]:
    """Hosts near their disk budget, the engine's disk nearly full: said before anything starts
    (a full disk fails every host's writes, then the engine's)."""
    from devbox import disk

    return disk.warnings(project.client, project.spec)


def _restart_rekeyed(project: Project, targets: list[probe.Target], results: list[probe.Result],
                     wait_seconds: float, started: StartWatch) -> list[probe.Result]:  # fmt: skip
    """Restart the hosts that present another host key than devbox keeps (their key was made
    anew: a lost hostkeys/ or .devbox/), so they read the current one; their files stay."""
    stale = [t for t, r in zip(targets, results, strict=True) if "host key mismatch" in r.detail]
    if not stale:
        return results
    ours = project.containers()
    stale = [t for t in stale if t.name in ours]
    if not stale:
        return results
    project.say(f"restarting {', '.join(t.name for t in stale)}: its host key changed in "
                f"{project.layout.folder / 'hostkeys'} (its files stay)")  # fmt: skip
    for target in stale:
        ours[target.name].restart(timeout=5)
    again = dict(zip([t.name for t in stale], probe.wait_for_logins(stale, wait_seconds, started.wait,
                                                                      started.failing), strict=True))  # fmt: skip
    return [again.get(r.name, r) for r in results]


def _reapply_refused(project: Project, targets: list[probe.Target], results: list[probe.Result],
                     digests: dict[str, str], wait_seconds: float,
                     started: StartWatch) -> list[probe.Result]:  # fmt: skip
    """Hosts that refused devbox's password hold another one: a `.devbox/` restored with its
    times kept (cp -a, rsync -a, tar) from before a `devbox passwd`, or `passwd` run in the host.
    Nothing on this side can tell (the restored record and file times vouch for the old one); the
    login does. Devbox's passwords are set in them again, as their next start would, and they are
    asked once more; one still refused fails at once, with the fix."""
    from devbox.passwords import reapply_passwords

    refused = [t for t, r in zip(targets, results, strict=True) if r.refused]
    if not refused:
        return results
    hosts = [project.host(t.name) for t in refused]
    changed = reapply_passwords(project, hosts, digests)
    if changed:
        project.say(f"{', '.join(changed)}: refused the password in {project.layout.folder / 'credentials.yaml'} "
                    "(a restored .devbox/, or `passwd` run in the host): set it again, as its next start would")
    again = [t for t in refused if any(name.startswith(f"{t.name}/") for name in changed)]
    retried = dict(zip([t.name for t in again], probe.wait_for_logins(again, wait_seconds, started.wait,
                                                                      started.failing), strict=True))  # fmt: skip
    final = []
    for target, result in zip(targets, results, strict=True):
        result = retried.get(target.name, result)
        if result.refused:
            result = replace(result, detail=f"login as {target.user} refused with the password devbox keeps for "
                             f"it (run `devbox passwd {target.name}` to set a new one)")  # fmt: skip
        final.append(result)
    return final


def _last_words(container: Container | None) -> str:
    """The last line a failed host logged (often the reason: "sshd: not found"), for its error."""
    if container is None:
        return ""
    lines = container.logs(tail=5).decode(errors="replace").strip().splitlines()
    return f"; it last logged: {lines[-1].strip()[:200]}" if lines else ""


@talks_to_engine
def down(project: Project, volumes: bool, ask: bool = False) -> None:
    """Remove the hosts and what the engine made for them; named volumes only when asked.
    ``ask``: ask the user (``project.confirm``) before deleting volumes, under the interrupt
    report (Ctrl-C at the question says each host's state); no answer, no removal."""
    with project.lock(), _reporting_interrupts(project):
        project.containers()  # refuses another spec's project before anything is asked or removed
        # every host's container, on whichever node runs it (a swarm's workers too)
        project.consent_to_discard(project.engine.reach(project).containers, "down")
        question = f"delete the named volumes of {project.spec.project} (all data in them)?"
        if volumes and ask and (project.confirm is None or not project.confirm(question)):
            raise PreflightError(f"{project.spec.project}: nothing removed (its volumes and hosts stay); "
                                 "pass --yes to delete the volumes")  # fmt: skip
        watch_service.stop(project)
        project.engine.down(project, volumes)


@contextlib.contextmanager
def _reporting_interrupts(project: Project) -> Iterator[None]:
    """On Ctrl-C (the engine's commands were handed it and have stopped): put right what they
    left half done, say each host's state, one line each, and let the interrupt go on to the
    CLI (which exits 130)."""
    try:
        yield
    except KeyboardInterrupt:
        with contextlib.suppress(DevboxError), engine_errors():  # no engine to ask: the interrupt alone
            for line in project.engine.repair(project):
                project.say(line)
            ours = project.containers()
            for host in project.spec.hosts:
                container = ours.get(host.name)
                project.say(f"{host.name}: {container.status if container is not None else 'missing'}")
        raise


# --------------------------------------------------------------------------- looking


def gpu_devices(ledger: Ledger, host: str, machine: Machine | None = None) -> list[dict[str, Any]]:
    """The GPUs the project's ledger gave a host: index, UUID and model where the machine was
    read (an index alone where it was not: allocated by index, off the GPU machine). ``machine``:
    the GPUs this machine has now (nvidia-smi); a device it lacks (a GPU that left, failed or
    was moved) is ``missing``, as it was last seen. Pure."""
    assignment = ledger.of(host)
    if assignment is None:
        return []
    if assignment.all:
        return [{"index": "all", "uuid": None, "name": None}]
    devices: list[dict[str, Any]] = []
    for unit in assignment.device_ids:
        gpu = ledger.machine.gpu_of(unit) if ledger.machine else None
        if gpu is None:
            device: dict[str, Any] = {"index": unit, "uuid": None, "name": None}
        else:
            device = {"index": gpu.index, "uuid": unit, "name": gpu.name}
        if machine is not None and machine.resolve(unit) is None:
            device["missing"] = True
        devices.append(device)
    return devices


def orphan_status(name: str, container: Container) -> dict[str, Any]:
    """A container of the project whose host the spec no longer has (`up` refused to remove it:
    it holds files outside its volumes): it still runs, holds its port and its GPUs. Pure."""
    bindings = (container.attrs.get("HostConfig") or {}).get("PortBindings") or {}
    published = [b for b in bindings.get("22/tcp") or [] if b.get("HostPort")]
    return {
        "host": name, "in_spec": False, "note": "not in the spec; `up --yes` removes it",
        "ssh_port": int(published[0]["HostPort"]) if published else None,
        "bind_address": published[0].get("HostIp") or None if published else None, "gpu_devices": [],
        **container_status(container),
    }  # fmt: skip


def host_status(spec: Spec, host: Host, container: Container | None,
                devices: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """One host as `status` reports it: state, health, port, the limits Docker applied, and the
    GPUs the ledger gave it (``devices``)."""
    entry: dict[str, Any] = {
        "host": host.name, "state": "missing", "health": None, "ssh_port": host.ssh_port,
        "bind_address": host.bind_address, "ssh": f"ssh -p {host.ssh_port} "
        f"{spec.image.user}@{connect_address(host)}", "gpu_devices": devices or [],
    }  # fmt: skip
    if container is not None:
        entry.update(container_status(container))
    return entry


def container_status(container: Container) -> dict[str, Any]:
    """What `status` reads of a host's container: state, health, and what Docker applied (limits,
    reservations, pinned CPUs, shared memory, GPU requests, restart policy). Pure."""
    attrs = container.attrs
    config = attrs.get("HostConfig") or {}
    state = attrs.get("State") or {}
    return {
        "state": state.get("Status", container.status),
        "health": (state.get("Health") or {}).get("Status"),
        "container": container.name,
        "limits": {"cpus": (config.get("NanoCpus") or 0) / 1e9 or None, "memory": config.get("Memory") or None},
        "reservations": {"memory": config.get("MemoryReservation") or None},
        "cpuset": config.get("CpusetCpus") or None,
        "shm_size": config.get("ShmSize"),
        "gpus": [
            {"driver": r.get("Driver"), "count": r.get("Count"), "device_ids": r.get("DeviceIDs"),
             "capabilities": r.get("Capabilities")}
            for r in config.get("DeviceRequests") or []
        ],
        "restart": (config.get("RestartPolicy") or {}).get("Name"),
        "restarts": attrs.get("RestartCount", 0),
    }  # fmt: skip


@talks_to_engine
def status(project: Project, disk: bool = False, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Each host as `status` shows it; where the engine knows more (a swarm: the node, its
    address, the task's state where the container is out of reach) that is added. ``disk``: what
    each host holds on the engine's disk too (the engine's ``df``: slow with many files). After
    the spec's hosts, the project's containers of hosts no longer in the spec (``in_spec``
    false). ``warn`` hears of a damaged GPU ledger (read as empty: `status` still shows the hosts)."""
    engine = project.engine
    reach = engine.reach(project)
    ledger, also, machine = None, {}, None
    if project.wants_gpus() or (project.folder / LEDGER_FILE).exists():  # else no GPU code is imported
        from devbox.gpus import read_ledger

        ledger = read_ledger(project.folder, warn or (lambda line: project.say(f"warning: {line}")))
        also = _gpus_also_held(project, ledger) if engine.allocates_gpus else {}
        machine = _machine_now(ledger, [h.name for h in project.spec.hosts]) if engine.allocates_gpus else None
    entries = []
    for host in project.spec.hosts:
        devices = gpu_devices(ledger, host.name, machine) if ledger is not None else []
        entry = host_status(project.spec, host, reach.containers.get(host.name), devices)
        if host.name in also:
            entry["gpus_also_held_by"] = also[host.name]
        details = reach.details.get(host.name, {})
        if details and host.name not in reach.containers:
            entry["state"] = details["task"]
        entries.append({**entry, **details})
    if disk:
        _add_disk(project, entries)
    spec_hosts = {host.name for host in project.spec.hosts}
    entries += [orphan_status(name, container) for name, container in sorted(reach.containers.items())
                if name not in spec_hosts]  # fmt: skip
    return entries


def _machine_now(ledger: Ledger, hosts: list[str]) -> Machine | None:
    """This machine's GPUs now, when the ledger gave a host devices to check against them (None:
    nothing to check, or no nvidia-smi here to ask; a failing one is not `status`'s to report)."""
    from devbox.gpus import discover

    if not any((a := ledger.of(host)) is not None and a.device_ids for host in hosts):
        return None
    try:
        return discover()
    except DevboxError:
        return None


def _add_disk(project: Project, entries: list[dict[str, Any]]) -> None:
    """Each host's disk use and budget; on a swarm only the hosts on this engine's node are
    measured (the others' volumes are on their nodes)."""
    from devbox import disk

    for entry, use in zip(entries, disk.measure(project.client, project.spec), strict=True):
        entry["disk"] = use.as_dict()


def _gpus_also_held(project: Project, ledger: Ledger) -> dict[str, list[str]]:
    """Hosts of this spec whose GPU a container of another spec or tool also holds."""
    from devbox.gpus import also_held, owned_by

    holdings = project.engine_gpu_holdings()
    return also_held(holdings, ledger.machine, owned_by(project.spec.project, project.owner, project.folder))


@talks_to_engine
def stream_logs(project: Project, host: str, follow: bool, tail: str) -> Iterator[bytes]:
    yield from project.engine.stream_logs(project, host, follow, tail)


def host_container(project: Project, host: str) -> Container:
    """The host's container wherever it runs; a one-line UsageError when it has none or runs
    where this machine cannot look inside it."""
    project.host(host)
    reach = project.engine.reach(project)
    if host in reach.unreachable:
        raise UsageError(reach.unreachable[host])
    if host not in reach.containers:
        raise UsageError(f"host {host!r} has no container (run `devbox up {host}`)")
    return reach.containers[host]


@talks_to_engine
def all_logs(project: Project, follow: bool, tail: str) -> None:
    """Every host's logs, prefixed with its name."""
    project.engine.all_logs(project, follow, tail)


@talks_to_engine
def exec_in(project: Project, host: str, command: list[str], user: str | None,
            write: Callable[[bytes], None]) -> int:  # fmt: skip
    """Run a command in a host, streaming its output; returns its exit code. ``user`` None: the
    login user (image.user), with HOME and the working folder its home, as over SSH: `pip install
    --user` there lands in the home volume, not in /root (lost when the host is recreated)."""
    container = host_container(project, host)
    if container.status != "running":
        raise UsageError(f"host {host!r} is {container.status} (run `devbox up {host}`)")
    api = container.client.api  # the engine of the node that runs it
    login = project.spec.image.user
    where: dict[str, Any] = {}
    if user is None or user == login:
        user, home = login, f"/home/{login}"
        where = {"environment": {"HOME": home, "USER": login, "LOGNAME": login}, "workdir": home}
    exec_id = api.exec_create(container.id, command, user=user, stdout=True, stderr=True, **where)
    for chunk in api.exec_start(exec_id, stream=True):
        write(chunk)
    return int(api.exec_inspect(exec_id)["ExitCode"] or 0)


@talks_to_engine
def gpu_usage(project: Project | None, warn: Callable[[str], None] | None = None) -> list[GpuRow]:
    """Per GPU of this machine: every container on the engine that holds it (any spec, any tool)
    and, with a spec, what its ledger gave its hosts; how busy it is; whose processes run on it."""
    from devbox.docker_api import connect, list_containers
    from devbox.gpus import gpu_report

    if project is None:
        return gpu_report(list_containers(connect(), all=True))
    return gpu_report(list_containers(project.client, all=True), project.folder, project=project.spec.project,
                      warn=warn or (lambda line: project.say(f"warning: {line}")))  # fmt: skip


# --------------------------------------------------------------------------- files, no engine


def validate(project: Project) -> list[str]:
    """The notes `validate` prints for a spec that loaded: its own and the GPU plan's (without
    saving it). Raises SpecError for what loading alone cannot see: a build secret's source
    missing from this environment. Needs no engine to answer (the project connects lazily)."""
    from devbox.errors import SpecError
    from devbox.project import allocate_gpus_of
    from devbox.spec.rules import build_secret_problems

    spec = project.spec
    missing = build_secret_problems(spec.image, project.environ)
    if missing:
        raise SpecError(spec.source, missing)
    allocation = (allocate_gpus_of(spec, project.folder, project.environ, save=False)
                  if project.engine.allocates_gpus else None)  # fmt: skip
    return [*spec.notes, *(allocation.notes if allocation else ())]


def render(project: Project) -> tuple[list[RenderedFile], list[str]]:
    """Write the spec's files into the project's folder under its lock, as `up` does (two
    renders of a new project would each generate passwords, and credentials.yaml and
    secrets/*/passwords could end up disagreeing); returns every file and those written. Needs
    no engine to answer."""
    from devbox.project import check_output_folder, generated_note, render_to
    from devbox.state import project_lock

    spec, folder, say = project.spec, project.folder, project.say
    check_output_folder(folder)  # before the lock file is made in it
    with project_lock(folder, on_wait=lambda: say(f"waiting for another devbox command on {spec.project} "
                                                  "to finish...")):  # fmt: skip
        rendered, changed, created = render_to(spec, folder, project.environ,
                                               allocate_gpus=project.engine.allocates_gpus, say=say)  # fmt: skip
    for line in rendered.notes:
        say(f"note: {line}")
    note = generated_note(folder, created)
    if note:
        say(note)
    return rendered.files, changed


def ssh_argv(project: Project, host: str, command: tuple[str, ...]) -> list[str]:
    """The system ssh client's argument list for a login to ``host`` at the address its engine
    gives it, the host key checked against the project's known_hosts (rendered first)."""
    from devbox.render import ssh_argv as argv_for

    target = project.host(host)
    project.rendered_once()
    address = project.engine.addresses(project, [target])[target.name]
    return argv_for(project.spec, target, str(project.layout.known_hosts), command, address)


def ssh_config(project: Project, address: str | None) -> str:
    """Host entries for OpenSSH for every host: at ``address``, or where each host's engine says
    it is reached; host keys from the project's known_hosts (rendered first)."""
    from devbox.render import render_ssh_config

    project.rendered_once()
    where = None if address else project.engine.addresses(project, list(project.spec.hosts))
    return render_ssh_config(project.spec, str(project.layout.known_hosts), address, where)


# --------------------------------------------------------------------------- idle hosts


def hold(project: Project, host: str, duration: str | None) -> float | None:
    """Hold ``host`` for ``duration`` (e.g. 12h): the idle watcher does not stop it until then;
    None ends a hold. Returns when the hold ends (None: released). Recorded as an event, so
    `devbox usage` shows who held what."""
    import time

    from devbox.idle import parse_duration
    from devbox.idle_files import IdleFolder

    project.host(host)
    folder = IdleFolder(project.folder)
    if duration is None:
        folder.set_hold(host, None)
        folder.add_event(time.time(), host, "released", "devbox keep --clear")
        return None
    seconds = parse_duration(duration)
    if not seconds:
        raise UsageError(f"--for {duration!r} is not a duration (use e.g. 12h, 90m, 2d)")
    until = time.time() + seconds
    folder.set_hold(host, until)
    folder.add_event(time.time(), host, "kept", f"devbox keep --for {duration}", until=until)
    return until


def usage(spec: Spec, folder: Path, since: str) -> dict[str, Any]:
    """Per host, from the idle watcher's samples over the last ``since`` (e.g. 7d): the rows of
    `devbox usage` and what its HTML page draws (samples, policies, the window, the interval)."""
    import os
    import time

    from devbox.idle import parse_duration
    from devbox.idle_files import IdleFolder
    from devbox.usage import summarise
    from devbox.watcher import DEFAULT_INTERVAL, INTERVAL_ENV

    seconds = parse_duration(since)
    if not seconds:
        raise UsageError(f"--since {since!r} is not a duration (use e.g. 24h, 7d)")
    idle, now = IdleFolder(folder), time.time()
    start = now - seconds
    interval = float(os.environ.get(INTERVAL_ENV) or DEFAULT_INTERVAL)
    samples, hosts = idle.samples(start), idle.policy().get("hosts") or {}
    events = [e for e in idle.events() if float(e.get("at") or 0) >= start]
    return {"rows": summarise(samples, events, hosts, interval), "samples": samples, "hosts": hosts,
            "start": start, "now": now, "interval": interval}  # fmt: skip
