"""The watcher: samples every host with an idle policy each minute, warns, and reclaims.

It runs in a small container of the project (``<project>-devbox-watcher``, made by
devbox.watch_service: restart policy unless-stopped, so it survives a crash, an engine restart and
a reboot), as ``python3 -m devbox.watcher /state`` with the engine's socket and the project's
state folder mounted. It needs the Docker SDK and the standard library only, with devbox.idle
and devbox.idle_files beside it.

Each round, per host: its processes (the engine's ``top``: PIDs as the machine sees them, so no
tool is needed inside the host) give the SSH sessions (sshd's per-session processes
``sshd: USER@pts/0`` / ``USER@notty``: terminals, VS Code Remote-SSH, scp/sftp, tunnels) and the
host's GPU processes; its cgroup's CPU time (the engine's stats) gives CPU in % of one core;
``nvidia-smi`` gives the utilisation of the GPUs the ledger gave it and of GPUs its processes
use; ``~/.devbox-keep``'s modification time (read through the engine's archive API) a hold;
the engine's disk usage (every ten minutes) the disk each host takes, for `devbox usage`.
Then devbox.idle.decide says what to do. Reclaim = restart policy ``no`` (so neither the engine
nor the machine restarting brings it back) and a stop: files, home, volumes and the container's
own layer all stay. ``devbox up HOST`` restores the restart policy and starts it again.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devbox.idle import KEEP_FILE, KEEP_FILE_HOLD, Decision, IdlePolicy, Sample, decide, duration_text
from devbox.idle_files import IdleFolder

DEFAULT_INTERVAL = 60.0
INTERVAL_ENV = "DEVBOX_WATCH_INTERVAL"  # seconds between samples; tests shorten it
HOST_LABEL = "devbox.host"
PROJECT_LABEL = "devbox.project"
NOTICE_PATH = "/etc/profile.d/zz-devbox-idle.sh"  # shown at each login (devbox.changes ignores it)
RECLAIMED_RESTART = {"Name": "no"}  # the mark of a reclaimed host (see devbox.watch_service.is_reclaimed)
_SESSION = re.compile(r"^sshd(?:-session)?: \S+@\S+")
NVIDIA_TIMEOUT = 20.0
USAGE_QUERY = "--query-gpu=index,uuid,utilization.gpu,memory.used"
APPS_QUERY = "--query-compute-apps=pid,gpu_uuid,used_memory"
CSV = "--format=csv,noheader,nounits"
DISK_EVERY = 600.0  # seconds between disk readings (the engine walks every layer and volume for them)
DISK_EVERY_ROUNDS = 10  # ... or this many rounds, when the interval is shortened (tests)
MIB = 1024 * 1024


def ssh_sessions(commands: Sequence[str]) -> int:
    """sshd's session processes among a container's command lines: one per open session (the
    listener, connections still logging in and the healthcheck's banner reads do not count)."""
    return sum(1 for command in commands if _SESSION.match(command.strip()))


def cpu_percent(total_ns: float, system_ns: float, online_cpus: int, before: tuple[float, float] | None) -> float:
    """CPU use in % of one core between two readings of a cgroup's CPU time (``before``:
    (total, system) at the previous reading): the machine's time went by system/online_cpus."""
    if before is None:
        return 0.0
    used, elapsed = total_ns - before[0], (system_ns - before[1]) / max(1, online_cpus)
    return max(0.0, 100.0 * used / elapsed) if elapsed > 0 else 0.0


def parse_gpu_usage(text: str) -> dict[str, tuple[float | None, float | None]]:
    """`nvidia-smi --query-gpu=index,uuid,utilization.gpu,memory.used --format=csv,noheader,nounits`:
    per GPU (by index and by UUID) its utilisation and memory used (None: [N/A], MIG)."""
    usage: dict[str, tuple[float | None, float | None]] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != 4:
            continue
        index, uuid, busy, memory = cells
        value = (_number(busy), _number(memory))
        usage[index] = usage[uuid] = value
    return usage


def parse_gpu_apps(text: str) -> list[tuple[int, str, float | None]]:
    """`nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader,nounits`."""
    apps = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) == 3 and cells[0].isdigit():
            apps.append((int(cells[0]), cells[1], _number(cells[2])))
    return apps


def disk_usage(df: dict[str, Any]) -> dict[str, float]:
    """Per container id, from the engine's disk usage (``GET /system/df``): its own layer and the
    named volumes it mounts, in MiB (a volume two hosts mount counts for each)."""
    volumes = {}
    for volume in df.get("Volumes") or []:
        size = (volume.get("UsageData") or {}).get("Size")
        if isinstance(size, int) and size >= 0:
            volumes[volume.get("Name")] = size
    usage = {}
    for container in df.get("Containers") or []:
        mounted = [m.get("Name") for m in container.get("Mounts") or [] if m.get("Type") == "volume"]
        total = int(container.get("SizeRw") or 0) + sum(volumes.get(name, 0) for name in mounted)
        usage[str(container.get("Id"))] = round(total / MIB, 1)
    return usage


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def gpu_signal(units: Sequence[str], pids: set[int], usage: dict[str, tuple[float | None, float | None]],
               apps: Sequence[tuple[int, str, float | None]]) -> tuple[float | None, float | None]:  # fmt: skip
    """A host's GPU utilisation (the busiest of its own GPUs and of GPUs its processes use) and
    the GPU memory its processes hold; (None, None) for a host with no GPU and no GPU process."""
    used = [uuid for pid, uuid, _memory in apps if pid in pids]
    watched = [*units, *used]
    if not watched:
        return None, None
    busy = [value for unit in watched if (value := usage.get(unit, (None, None))[0]) is not None]
    memory = [m for pid, _uuid, m in apps if pid in pids and m is not None]
    return (max(busy) if busy else 0.0), (sum(memory) if memory else None)


def _mtime(text: str) -> float | None:
    """The engine's RFC 3339 time (nanoseconds, a zone) as epoch seconds."""
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text or "")
    if not match:
        return None
    import calendar

    seconds = calendar.timegm(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S"))
    zone = match.group(3)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds + float(match.group(2) or 0)


def notice_script(lines: Sequence[str]) -> bytes:
    """The login notice: a profile script that prints ``lines`` to the terminal (none: empty)."""
    quoted = ("'" + line.replace("'", "'\\''") + "'" for line in lines)
    body = "".join(f"printf '%s\\n' {line} >&2\n" for line in quoted)
    return ("# written by devbox's idle watcher\n" + body).encode()


def reclaimed_lines(stopped: float, why: str) -> list[str]:
    """The login notice of a host the watcher stopped, for the logins after `up` brought it back."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stopped))
    return [f"devbox: this host was stopped at {when} ({why}) and brought back by `devbox up`; "
            "its files stayed."]  # fmt: skip


@dataclass
class Watcher:
    """One project's watcher: its engine client, its idle folder and what it remembers between
    rounds (CPU readings, the notice each container shows)."""

    client: Any
    folder: IdleFolder
    interval: float
    nvidia_smi: str | None
    cpu_before: dict[str, tuple[float, float]] = field(default_factory=dict)
    notices: dict[str, bytes] = field(default_factory=dict)
    say: Any = print
    disk: dict[str, float] = field(default_factory=dict)  # container id -> MiB, at disk_at
    disk_at: float | None = None
    disk_thread: threading.Thread | None = None

    def containers(self, project: str) -> dict[str, Any]:
        found = self.client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})
        return {c.labels.get(HOST_LABEL, c.name): c for c in found}

    def round(self, now: float) -> dict[str, Decision]:
        """Sample every watched host, record, decide and act; returns the decisions."""
        config = self.folder.policy()
        hosts = config.get("hosts") or {}
        if not hosts:
            return {}
        containers = self.containers(config["project"])
        gpu = self._gpu_readings() if any(h.get("gpus") for h in hosts.values()) or self.nvidia_smi else None
        self._disk_readings(now)
        with ThreadPoolExecutor(max_workers=min(8, len(hosts))) as pool:
            samples = dict(zip(hosts, pool.map(lambda name: self.sample(name, hosts[name], containers.get(name),
                                                                         config, gpu, now), hosts), strict=True))
        self.folder.add_samples(samples)
        window = max(IdlePolicy.from_dict(h["policy"]).after for h in hosts.values()) + 3 * self.interval
        history = self.folder.samples(now - window)
        holds = self.folder.holds()
        decisions, states = {}, {}
        for name, host in hosts.items():
            policy = IdlePolicy.from_dict(host["policy"])
            decision = decide(history.get(name, []), policy, now, self.interval, holds.get(name))
            decisions[name] = decision
            self.act(name, decision, containers.get(name), config, now)
            states[name] = {"at": now, "action": decision.action, "reason": decision.reason,
                            "idle_since": decision.idle_since, "stops_at": decision.stops_at,
                            "held_until": decision.held_until}  # fmt: skip
        previous = self.folder.states()
        for name, state in states.items():  # the last stop stays known to status
            for key in ("reclaimed_at", "reclaimed_why"):
                if key in previous.get(name, {}):
                    state[key] = previous[name][key]
        self.folder.write("state.json", {**previous, **states})
        self.folder.prune(now)
        return decisions

    # -- looking

    def _gpu_readings(self) -> tuple[dict[str, tuple[float | None, float | None]], list] | None:
        """nvidia-smi's utilisation per GPU and its GPU processes; None when it cannot be asked."""
        if self.nvidia_smi is None:
            return None
        try:
            usage = self._nvidia([USAGE_QUERY, CSV])
            apps = self._nvidia([APPS_QUERY, CSV])
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            self.say(f"nvidia-smi failed: {exc}")
            return None
        return parse_gpu_usage(usage), parse_gpu_apps(apps)

    def _disk_readings(self, now: float) -> None:
        """The disk each container uses, read again every DISK_EVERY in a thread of its own: the
        engine's df walks every layer and volume (seconds on a full machine), and a round that
        waited for it could leave a gap in the samples, which restarts every idle clock."""
        every = min(DISK_EVERY, DISK_EVERY_ROUNDS * self.interval)
        reading = self.disk_thread is not None and self.disk_thread.is_alive()
        if reading or (self.disk_at is not None and now - self.disk_at < every):
            return
        self.disk_at = now

        def read() -> None:
            try:
                self.disk = disk_usage(self.client.df())
            except Exception as exc:  # noqa: BLE001 - disk is a usage signal only: no reading, no number
                self.say(f"disk usage not read: {exc}")
                self.disk = {}

        self.disk_thread = threading.Thread(target=read, name="disk", daemon=True)
        self.disk_thread.start()

    def _nvidia(self, args: list[str]) -> str:
        result = subprocess.run([self.nvidia_smi or "nvidia-smi", *args], capture_output=True, text=True,  # noqa: S603
                                timeout=NVIDIA_TIMEOUT, check=False)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"exit {result.returncode}: {(result.stderr or result.stdout).strip()[:200]}")
        return result.stdout

    def sample(self, name: str, host: dict[str, Any], container: Any, config: dict[str, Any],
               gpu: tuple[dict, list] | None, now: float) -> Sample:  # fmt: skip
        """One look at one host (a stopped or missing container: not running)."""
        if container is None or container.status != "running":
            return Sample(at=now, running=False)
        unknown: list[str] = []
        pids: set[int] = set()
        sessions = 0
        try:
            top = container.top()
            titles = top.get("Titles") or []
            pid_at, cmd_at = titles.index("PID"), len(titles) - 1
            rows = top.get("Processes") or []
            pids = {int(row[pid_at]) for row in rows if str(row[pid_at]).isdigit()}
            sessions = ssh_sessions([row[cmd_at] for row in rows])
        except Exception as exc:  # noqa: BLE001 - any failure to look is "could not be read", never a crash
            self.say(f"{name}: processes not read: {exc}")
            unknown.append("SSH sessions")
        cpu = 0.0
        try:
            stats = container.stats(stream=False)
            cpu_stats = stats.get("cpu_stats") or {}
            total = float((cpu_stats.get("cpu_usage") or {}).get("total_usage") or 0)
            system = float(cpu_stats.get("system_cpu_usage") or 0)
            cpus = int(cpu_stats.get("online_cpus") or 1)
            before = self.cpu_before.get(container.id)
            if before is None:  # the engine's own previous reading, about a second ago
                pre = stats.get("precpu_stats") or {}
                pre_total = float((pre.get("cpu_usage") or {}).get("total_usage") or 0)
                before = (pre_total, float(pre.get("system_cpu_usage") or 0)) if pre.get("system_cpu_usage") else None
            cpu = cpu_percent(total, system, cpus, before)
            self.cpu_before[container.id] = (total, system)
            if before is None:
                unknown.append("CPU")
        except Exception as exc:  # noqa: BLE001
            self.say(f"{name}: CPU not read: {exc}")
            unknown.append("CPU")
        gpu_percent = gpu_memory = None
        units = host.get("gpus") or []
        if gpu is not None:
            gpu_percent, gpu_memory = gpu_signal(units, pids, *gpu)
        elif units:
            unknown.append("GPU")
        return Sample(at=now, running=True, ssh_sessions=sessions, cpu_percent=round(cpu, 2),
                      gpu_percent=gpu_percent, gpu_memory_mib=gpu_memory,
                      keep_until=self._keep_file(container, config.get("home", "")),
                      unknown=tuple(unknown), disk_mib=self.disk.get(container.id))  # fmt: skip

    def _keep_file(self, container: Any, home: str) -> float | None:
        """Until when ``~/.devbox-keep`` holds the host: a day after its last change."""
        if not home:
            return None
        try:
            stream, stat = container.get_archive(f"{home}/{KEEP_FILE}")
            for _chunk in stream:
                pass
        except Exception:  # noqa: BLE001 - no such file (or no home): no hold
            return None
        changed = _mtime(str(stat.get("mtime", "")))
        return None if changed is None else changed + KEEP_FILE_HOLD

    # -- acting

    def act(self, name: str, decision: Decision, container: Any, config: dict[str, Any], now: float) -> None:
        if container is None or decision.action == "stopped":
            return
        if decision.action == "stop":
            self.reclaim(name, decision, container, now)
            return
        if decision.action == "warn":
            stops = time.strftime("%H:%M UTC", time.gmtime(decision.stops_at or now))
            lines = [f"devbox: this host has been idle for {duration_text(now - (decision.idle_since or now))} "
                     f"and will be stopped at {stops} (its files stay; `devbox up {name}` brings it back).",
                     f"devbox: any work keeps it: run something, stay logged in, or `touch ~/{KEEP_FILE}` "
                     "to hold it for 24 h."]  # fmt: skip
            self._warn_once(name, decision, now)
        else:
            lines = self._after_reclaim_lines(name, now)
        self._notice(container, lines)

    def _warn_once(self, name: str, decision: Decision, now: float) -> None:
        """An event the first time a stretch of idleness reaches its warning."""
        states = self.folder.states()
        if states.get(name, {}).get("warned_for") == decision.idle_since:
            return
        self.folder.add_event(now, name, "warned", decision.reason, stops_at=decision.stops_at)
        states.setdefault(name, {})["warned_for"] = decision.idle_since
        self.folder.write("state.json", states)
        self.say(f"{name}: warned ({decision.reason}; stops at {decision.stops_at})")

    def _after_reclaim_lines(self, name: str, now: float) -> list[str]:
        """After `up` brought a reclaimed host back: the stop is said at logins for a day."""
        state = self.folder.states().get(name, {})
        stopped = state.get("reclaimed_at")
        if stopped is None or now - float(stopped) > 86400:
            return []
        return reclaimed_lines(float(stopped), str(state.get("reclaimed_why", "idle")))

    def reclaim(self, name: str, decision: Decision, container: Any, now: float) -> None:
        """Stop the host for good: restart policy no first (an engine restart must not bring it
        back), then stop. Its GPUs count as free from here (devbox.watch_service.is_reclaimed)."""
        container.update(restart_policy=RECLAIMED_RESTART)
        # the notice of the stop goes in first: the first login after `up` shows it at once,
        # not the warning left from before (the watcher's next round would only then replace it)
        self._notice(container, reclaimed_lines(now, decision.reason))
        container.stop(timeout=30)
        self.folder.add_event(now, name, "reclaimed", decision.reason, idle_since=decision.idle_since)
        states = self.folder.states()
        states.setdefault(name, {}).update(reclaimed_at=now, reclaimed_why=decision.reason)
        self.folder.write("state.json", states)
        self.notices.pop(container.id, None)
        self.say(f"{name}: stopped ({decision.reason})")

    def _notice(self, container: Any, lines: list[str]) -> None:
        """Write the login notice into the host, when it changed (a tar through the engine)."""
        script = notice_script(lines)
        if self.notices.get(container.id) == script:
            return
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            info = tarfile.TarInfo(NOTICE_PATH.rsplit("/", 1)[1])
            info.size, info.mode, info.mtime = len(script), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(script))
        try:
            container.put_archive(NOTICE_PATH.rsplit("/", 1)[0], archive.getvalue())
            self.notices[container.id] = script
        except Exception as exc:  # noqa: BLE001 - a host without /etc/profile.d gets no notice
            self.say(f"{container.name}: notice not written: {exc}")


def main(argv: Sequence[str]) -> int:
    """``python3 -m devbox.watcher STATE_FOLDER``: watch until stopped."""
    import docker

    folder = IdleFolder(Path(argv[0]))
    interval = float(os.environ.get(INTERVAL_ENV) or DEFAULT_INTERVAL)
    binary = os.environ.get("DEVBOX_WATCH_NVIDIA_SMI") or shutil.which("nvidia-smi")
    watcher = Watcher(docker.from_env(timeout=120), folder, interval, binary,
                      say=lambda line: print(line, flush=True))  # fmt: skip
    watcher.say(f"watching {folder.path} every {interval:g}s (nvidia-smi: {binary or 'none'})")
    while True:
        started = time.time()
        try:
            watcher.round(started)
        except Exception as exc:  # noqa: BLE001 - one failed round (engine busy) must not end the watch
            watcher.say(f"round failed: {type(exc).__name__}: {exc}")
        time.sleep(max(1.0, interval - (time.time() - started)))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main(sys.argv[1:]))
