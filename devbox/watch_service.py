"""The watcher's container, seen from devbox: built, started by `up`, removed by `down`.

`up` starts ``<project>-devbox-watcher`` whenever a host has an idle policy (and removes it when
none has): a container from a small image of devbox's own (``devbox-watcher:<digest>``, the
spec's base image with python3 and Debian's Docker SDK, and devbox.idle, devbox.idle_files and
devbox.watcher copied in), restart policy unless-stopped, so it keeps running when no devbox
command does, comes back after a crash and after the engine or the machine restarts.

What it can access, and why (README "Idle hosts"): the engine's socket, read-write, which is
root on the machine (it must list, inspect, stop and update the project's containers, read their
processes and CPU time and write the login notice into them); the project's state folder (it
writes samples, events and its decisions in ``.devbox/idle/`` and reads the policy and holds).
It runs as the owner of that folder with the socket's group, with no network, a read-only root
file system, no capabilities and no-new-privileges.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox.errors import PreflightError
from devbox.idle import duration_text
from devbox.idle_files import POLICY_FILE, IdleFolder
from devbox.labels import LABEL_PREFIX, OWNER_FOLDER_LABEL, OWNER_LABEL
from devbox.watcher import INTERVAL_ENV, RECLAIMED_RESTART

if TYPE_CHECKING:
    from devbox.project import Project

WATCHER_LABEL = f"{LABEL_PREFIX}watcher"  # its project; never devbox.project (it is not a host)
IMAGE_REPOSITORY = "devbox-watcher"
NVIDIA_SMI_ENV = "DEVBOX_WATCH_NVIDIA_SMI"  # an nvidia-smi of this machine to mount into it (tests: the double)
MACHINE_DOUBLE_ENV = "DEVBOX_TEST_NVIDIA_SMI"  # the double's machine description, mounted beside it
MODULES = ("idle.py", "idle_files.py", "watcher.py")
DOCKERFILE = """\
FROM {base}
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
        python3 python3-docker >/dev/null && rm -rf /var/lib/apt/lists/*
COPY devbox /opt/devbox-watcher/devbox
ENV PYTHONPATH=/opt/devbox-watcher PYTHONDONTWRITEBYTECODE=1
ENTRYPOINT ["python3", "-m", "devbox.watcher", "/state"]
"""


def watcher_name(project: str) -> str:
    return f"{project}-devbox-watcher"


def _context(base: str) -> tuple[bytes, str]:
    """The build context (a tar) and its digest: the Dockerfile and the modules it copies."""
    package = Path(__file__).parent
    files = {"Dockerfile": DOCKERFILE.format(base=base).encode(), "devbox/__init__.py": b""}
    files.update({f"devbox/{name}": (package / name).read_bytes() for name in MODULES})
    digest = hashlib.sha256(b"".join(k.encode() + b"\0" + v for k, v in sorted(files.items()))).hexdigest()[:12]
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    return archive.getvalue(), digest


def ensure_image(client: Any, base: str, say: Any) -> str:
    """The watcher's image for this base, built once (about half a minute: python3 from apt)."""
    import docker.errors

    context, digest = _context(base)
    tag = f"{IMAGE_REPOSITORY}:{digest}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    say(f"building the idle watcher's image {tag} (once)")
    try:
        client.images.build(fileobj=io.BytesIO(context), custom_context=True, tag=tag, rm=True,
                            labels={WATCHER_LABEL: "image"})  # fmt: skip
    except docker.errors.BuildError as exc:
        raise PreflightError(f"the idle watcher's image did not build from {base}: {exc.msg} "
                             "(it needs apt's python3 and python3-docker in that base)") from None  # fmt: skip
    return tag


def _socket(environ: Mapping[str, str]) -> str | None:
    """The engine's socket on this machine; None for a remote engine (nothing to mount)."""
    host = environ.get("DOCKER_HOST", "")
    if not host:
        return "/var/run/docker.sock"
    return host.removeprefix("unix://") if host.startswith("unix://") else None


def write_policy(project: Project) -> dict[str, Any]:
    """The hosts the watcher watches, with their policy and GPUs (from the ledger), in
    ``.devbox/idle/policy.json``: the watcher reads it every round, so a changed policy needs
    no new watcher."""
    from devbox.gpus import load_ledger

    ledger = load_ledger(project.folder)
    hosts = {}
    for host in project.spec.hosts:
        if host.idle is None:
            continue
        assignment = ledger.of(host.name) if host.gpus.wanted else None
        units = list(assignment.device_ids) if assignment is not None else []
        if assignment is not None and assignment.all and ledger.machine is not None:
            units = list(ledger.machine.units)
        hosts[host.name] = {"policy": host.idle.as_dict(), "gpus": units, "restart": host.restart}
    user = project.spec.image.user
    policy = {"version": 1, "project": project.spec.project, "user": user, "home": f"/home/{user}", "hosts": hosts}
    IdleFolder(project.folder).write(POLICY_FILE, policy)
    return policy


def _watchers(client: Any, project: str) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"{WATCHER_LABEL}={project}"})


def start(project: Project) -> None:
    """Start (or keep) the watcher when a host has an idle policy; remove it when none has."""
    never = not (IdleFolder(project.folder).path / POLICY_FILE).exists()
    if never and not any(host.idle for host in project.spec.hosts):
        stop(project)  # never had a policy: no idle folder made for it
        return
    policy = write_policy(project)
    if not policy["hosts"]:
        stop(project)
        return
    environ = project.environ
    socket = _socket(environ)
    if socket is None or project.spec.engine != "compose":
        project.say("warning: idle policies are watched only on this machine's own engine (compose); "
                    "no watcher started")  # fmt: skip
        return
    client = project.client
    image = ensure_image(client, project.spec.image.base, project.say)
    config = _run_config(project, image, socket, environ)
    for old in _watchers(client, project.spec.project):
        if old.labels.get(f"{LABEL_PREFIX}watcher-config") == config["labels"][f"{LABEL_PREFIX}watcher-config"]:
            if old.status != "running":
                old.start()
            return
        old.remove(force=True)
    client.containers.run(**config)
    project.say(f"idle watcher: {config['name']} (hosts {', '.join(policy['hosts'])})")


def _run_config(project: Project, image: str, socket: str, environ: Mapping[str, str]) -> dict[str, Any]:
    folder = Path(project.folder).resolve()
    owner = folder.stat()
    volumes = {socket: {"bind": "/var/run/docker.sock", "mode": "rw"}, str(folder): {"bind": "/state", "mode": "rw"}}
    env = {key: environ[key] for key in (INTERVAL_ENV,) if environ.get(key)}
    device_requests = None
    if environ.get(NVIDIA_SMI_ENV):
        smi = Path(environ[NVIDIA_SMI_ENV]).resolve()
        volumes[str(smi)] = {"bind": "/usr/local/bin/nvidia-smi", "mode": "ro"}
        env["DEVBOX_WATCH_NVIDIA_SMI"] = "/usr/local/bin/nvidia-smi"
        if environ.get(MACHINE_DOUBLE_ENV):
            described = Path(environ[MACHINE_DOUBLE_ENV]).resolve()
            volumes[str(described.parent)] = {"bind": str(described.parent), "mode": "ro"}
            env[MACHINE_DOUBLE_ENV] = str(described)
    elif project.spec.gpu_enabled and any(h.gpus.wanted for h in project.spec.hosts if h.idle):
        import docker.types

        # nvidia-smi and its library, from the NVIDIA runtime: the utility capability only
        device_requests = [docker.types.DeviceRequest(count=-1, capabilities=[["utility"]])]
    key = hashlib.sha256(repr((image, sorted(volumes.items()), sorted(env.items()), bool(device_requests)))
                         .encode()).hexdigest()[:12]  # fmt: skip
    labels = {WATCHER_LABEL: project.spec.project, f"{LABEL_PREFIX}watcher-config": key,
              OWNER_LABEL: project.owner_labels()[OWNER_LABEL], OWNER_FOLDER_LABEL: str(project.folder)}  # fmt: skip
    socket_group = os.stat(socket).st_gid
    return {
        "image": image, "name": watcher_name(project.spec.project), "detach": True, "labels": labels,
        "restart_policy": {"Name": "unless-stopped"}, "volumes": volumes, "environment": env,
        "user": f"{owner.st_uid}:{owner.st_gid}", "group_add": [str(socket_group)],
        "network_mode": "none", "read_only": True, "cap_drop": ["ALL"], "security_opt": ["no-new-privileges"],
        "mem_limit": "256m", "pids_limit": 64, "nano_cpus": 500_000_000, "device_requests": device_requests,
        "log_config": {"type": "json-file", "config": {"max-size": "1m", "max-file": "2"}},
    }  # fmt: skip


def stop(project: Project) -> None:
    """Remove the project's watcher (`down`, or no host has an idle policy any more)."""
    for old in _watchers(project.client, project.spec.project):
        old.remove(force=True)


def _restart_policy(text: str) -> dict[str, Any]:
    name, _, retries = text.partition(":")
    return {"Name": name, "MaximumRetryCount": int(retries)} if retries else {"Name": name}


def bring_back(project: Project, hosts: list[Any]) -> None:
    """Before `up` starts hosts (after render gave out GPUs again): give each reclaimed one its
    restart policy again (the watcher set ``no``), and say when and why it was stopped, and on
    which GPUs it comes back. (When none is free, render has refused already, naming holders.)"""
    from devbox.idle import reclaimed

    ours = project.containers()
    back = [(host, ours[host.name]) for host in hosts if host.name in ours and reclaimed(ours[host.name].attrs)
            and host.restart != RECLAIMED_RESTART["Name"]]  # fmt: skip
    if not back:
        return
    from devbox.gpus import load_ledger

    states = IdleFolder(project.folder).states()
    ledger = load_ledger(project.folder)
    for host, container in back:
        container.update(restart_policy=_restart_policy(host.restart))
        project.forget_containers()
        state = states.get(host.name, {})
        when = state.get("reclaimed_at")
        said = f" (stopped {time.strftime('%Y-%m-%d %H:%M', time.localtime(when))}: {state.get('reclaimed_why')})" \
            if when else ""  # fmt: skip
        assignment = ledger.of(host.name)
        now_on = list(assignment.device_ids) if assignment is not None and not assignment.all else []
        project.say(f"{host.name}: bringing back the idle-stopped host{said}"
                    f"{gpus_text(device_ids(container.attrs), now_on, ledger.machine)}")  # fmt: skip


def device_ids(attrs: Mapping[str, Any]) -> list[str]:
    """The GPU ids a container was made with (its NVIDIA device requests)."""
    requests = (attrs.get("HostConfig") or {}).get("DeviceRequests") or []
    return [str(i) for request in requests for i in request.get("DeviceIDs") or []]


def gpus_text(before: list[str], after: list[str], machine: Any) -> str:
    """Where a reclaimed host's GPUs are as it comes back: ``; on its GPU 0 again`` or ``; its
    GPU 0 is taken now: on GPU 2 (free)``; empty for a host without GPUs."""
    if not before and not after:
        return ""

    def names(units: list[str]) -> str:
        shown = []
        for unit in units:
            gpu = machine.gpu_of(unit) if machine is not None else None
            shown.append(f"{gpu.index}" if gpu is not None else unit)
        return f"GPU{'s' if len(units) != 1 else ''} {', '.join(shown) or '-'}"

    if sorted(before) == sorted(after):
        return f"; on its {names(after)} again"
    return f"; its {names(before)} {'is' if len(before) == 1 else 'are'} taken now: on {names(after)} (free)"


def idle_text(entry: Mapping[str, Any], host: Any, state: Mapping[str, Any], hold: float | None, now: float) -> str:
    """A host's idle line in `status`: ``idle 23m; stops at 14:00``, ``held until ...``,
    ``stopped 13:58 (idle 1m ...)``, ``busy``; ``-`` without a policy."""
    if host.idle is None:
        return "-"
    clock = "%m-%d %H:%M"
    if entry.get("state") != "running" and state.get("reclaimed_at"):
        return f"stopped {time.strftime(clock, time.localtime(state['reclaimed_at']))} ({state.get('reclaimed_why')})"
    if hold is not None and hold > now:
        return f"held until {time.strftime(clock, time.localtime(hold))} (devbox keep)"
    action = state.get("action")
    if action in ("idle", "warn") and state.get("stops_at"):
        idle_for = duration_text(now - float(state["idle_since"]))
        return f"idle {idle_for}; stops at {time.strftime(clock, time.localtime(state['stops_at']))}"
    if action == "held" and state.get("held_until"):
        return f"held until {time.strftime(clock, time.localtime(state['held_until']))} (~/.devbox-keep)"
    return f"busy ({state.get('reason')})" if action == "busy" else (action or "watching")


def add_idle(project: Project, entries: list[dict[str, Any]]) -> bool:
    """Put each host's idle line (``idle``) and the watcher's view (``idle_state``) in `status`
    entries; returns whether any host has a policy."""
    folder = IdleFolder(project.folder)
    states, holds, now = folder.states(), folder.holds(), time.time()
    any_policy = False
    for entry in entries:
        if entry.get("in_spec") is False:  # a host the spec no longer has: no policy of its own
            entry["idle"], entry["idle_state"] = "-", None
            continue
        host = project.spec.host(entry["host"])
        any_policy = any_policy or host.idle is not None
        state = states.get(host.name, {})
        entry["idle"] = idle_text(entry, host, state, holds.get(host.name), now)
        entry["idle_state"] = state or None
    return any_policy
