"""The idle rule, pure: is a host idle, since when, and is it time to warn or to stop it?

A host with an idle policy (``idle: {after: 24h, gpu_below: 5, cpu_below: 10, warn: 1h}``) is
*idle* when, continuously for ``after``, no SSH session is open into it, its GPUs' utilisation
stays below ``gpu_below`` and its CPU use (in % of one core) below ``cpu_below``, and nothing
holds it (``devbox keep``, or ``~/.devbox-keep`` in the host, touched within a day). Any one
signal alone keeps it awake, and so does not knowing: a signal that could not be read, a gap in
the samples (the watcher was down) or no recent sample at all restart the idle clock.

Everything here is data in, data out, with the clock passed in, so the rule is tested over
sample series in milliseconds (tests/unit/test_idle.py). The watcher (devbox.watcher) reads the
samples, calls ``decide`` and acts on its answer. This module imports nothing of devbox: the
watcher's container carries it alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
MIN_AFTER = MINUTE
DEFAULT_GPU_BELOW = 5.0
DEFAULT_CPU_BELOW = 10.0
DEFAULT_WARN = HOUR
KEEP_FILE = ".devbox-keep"  # in the user's home: holds the host for KEEP_FILE_HOLD after its last change
KEEP_FILE_HOLD = DAY
GAP_FACTOR = 2.5  # samples further apart than this many intervals are a gap: the clock restarts
_DURATION = re.compile(r"^(?:(\d{1,6})d)?(?:(\d{1,6})h)?(?:(\d{1,6})m)?(?:(\d{1,7})s)?$")
_UNITS = (DAY, HOUR, MINUTE, 1.0)


def parse_duration(text: str) -> float | None:
    """Seconds in a duration such as ``24h``, ``90m``, ``1h30m``, ``2d``, ``45s``; None if it is not one."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match or not any(match.groups()):
        return None
    return sum(int(part) * unit for part, unit in zip(match.groups(), _UNITS, strict=True) if part)


def duration_text(seconds: float) -> str:
    """A duration as people read it: ``23h``, ``1h30m``, ``5m``, ``40s``."""
    seconds = int(max(0, seconds))
    if seconds < MINUTE:
        return f"{seconds}s"
    parts = []
    for unit, suffix in ((DAY, "d"), (HOUR, "h"), (MINUTE, "m")):
        count, seconds = divmod(seconds, int(unit))
        if count:
            parts.append(f"{count}{suffix}")
    return "".join(parts[:2])


@dataclass(frozen=True)
class IdlePolicy:
    """When a host counts as idle and is stopped: ``after`` seconds idle; ``warn`` seconds before
    the stop its users are told; ``gpu_below`` and ``cpu_below`` in percent (CPU: of one core)."""

    after: float
    gpu_below: float = DEFAULT_GPU_BELOW
    cpu_below: float = DEFAULT_CPU_BELOW
    warn: float = DEFAULT_WARN
    text: str = field(default="", compare=False)  # the policy as written, for status

    def as_dict(self) -> dict[str, float]:
        return {"after": self.after, "gpu_below": self.gpu_below, "cpu_below": self.cpu_below, "warn": self.warn}

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> IdlePolicy:
        return cls(float(data["after"]), float(data["gpu_below"]), float(data["cpu_below"]), float(data["warn"]))


@dataclass(frozen=True)
class Sample:
    """One look at one host: when (epoch seconds), whether its container ran, and the signals.

    ``ssh_sessions``: sshd session processes in its container; ``cpu_percent``: of one core
    since the previous look; ``gpu_percent``: the highest utilisation of its GPUs and of GPUs its
    processes use (None: it has none and runs nothing on one); ``keep_until``: until when its
    ``~/.devbox-keep`` holds it (None: no such file); ``unknown``: signals that could not be read;
    ``disk_mib``: the disk it uses, its container's own layer and the named volumes it mounts
    (None: not read; a usage signal only, never part of the idle rule: files at rest are not work).
    """

    at: float
    running: bool = True
    ssh_sessions: int = 0
    cpu_percent: float = 0.0
    gpu_percent: float | None = None
    gpu_memory_mib: float | None = None
    keep_until: float | None = None
    unknown: tuple[str, ...] = ()
    disk_mib: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {"at": self.at, "running": self.running, "ssh": self.ssh_sessions, "cpu": self.cpu_percent,
                "gpu": self.gpu_percent, "gpu_mem": self.gpu_memory_mib, "keep_until": self.keep_until,
                "unknown": list(self.unknown), "disk": self.disk_mib}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> Sample:
        return cls(float(data["at"]), bool(data.get("running", True)), int(data.get("ssh") or 0),
                   float(data.get("cpu") or 0.0), _float(data.get("gpu")), _float(data.get("gpu_mem")),
                   _float(data.get("keep_until")), tuple(data.get("unknown") or ()),
                   _float(data.get("disk")))  # fmt: skip


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def busy_reasons(sample: Sample, policy: IdlePolicy) -> list[str]:
    """What in one sample keeps the host awake (empty: this sample is idle)."""
    if not sample.running:
        return ["not running"]
    reasons = [f"{what} could not be read" for what in sample.unknown]
    if sample.ssh_sessions > 0:
        reasons.append(f"{sample.ssh_sessions} SSH session{'s' if sample.ssh_sessions != 1 else ''}")
    if sample.cpu_percent >= policy.cpu_below:
        reasons.append(f"CPU {sample.cpu_percent:.0f}%")
    if sample.gpu_percent is not None and sample.gpu_percent >= policy.gpu_below:
        reasons.append(f"GPU {sample.gpu_percent:.0f}%")
    if sample.keep_until is not None and sample.keep_until > sample.at:
        reasons.append(f"~/{KEEP_FILE}")
    return reasons


@dataclass(frozen=True)
class Decision:
    """What the watcher does with a host now.

    ``action``: ``busy`` (nothing to do), ``held`` (kept alive until ``held_until``), ``idle``
    (idle since ``idle_since``, not yet warned), ``warn`` (tell its users: it stops at
    ``stops_at``), ``stop`` (reclaim it now) or ``stopped`` (its container is not running).
    ``reason``: why, in words for status and the log.
    """

    action: str
    reason: str
    idle_since: float | None = None
    stops_at: float | None = None
    held_until: float | None = None


def idle_since(samples: Sequence[Sample], policy: IdlePolicy, now: float, interval: float) -> tuple[float | None, str]:
    """Since when the host has been idle without a break, and (when it is not) why not.

    The run of idle samples is read backwards from the newest; it ends at a busy sample or at a
    gap (two samples further apart than ``GAP_FACTOR`` intervals). With no sample within that of
    ``now`` the host is taken as busy: nobody was looking.
    """
    gap = GAP_FACTOR * interval
    ordered = sorted(samples, key=lambda s: s.at)
    if not ordered or now - ordered[-1].at > gap:
        return None, "no recent sample"
    newest = busy_reasons(ordered[-1], policy)
    if newest:
        return None, ", ".join(newest)
    since = ordered[-1].at
    for earlier in reversed(ordered[:-1]):
        if since - earlier.at > gap or busy_reasons(earlier, policy):
            break
        since = earlier.at
    return since, ""


def decide(samples: Sequence[Sample], policy: IdlePolicy, now: float, interval: float,
           kept_until: float | None = None) -> Decision:  # fmt: skip
    """The idle decision for one host from its recent samples, at ``now``.

    ``kept_until``: the end of a ``devbox keep`` hold (None: none). A hold keeps the host awake
    while it lasts, and the idle clock starts again at its end. The host is stopped once idle for
    ``policy.after``, warned from ``policy.warn`` before that.
    """
    latest = max(samples, key=lambda s: s.at) if samples else None
    if latest is not None and not latest.running and now - latest.at <= GAP_FACTOR * interval:
        return Decision("stopped", "not running")
    if kept_until is not None and kept_until > now:
        return Decision("held", "held by devbox keep", held_until=kept_until)
    since, why = idle_since(samples, policy, now, interval)
    if since is None:
        held = latest.keep_until if latest is not None and latest.keep_until and latest.keep_until > now else None
        if held is not None and why == f"~/{KEEP_FILE}":
            return Decision("held", f"held by ~/{KEEP_FILE}", held_until=held)
        return Decision("busy", why)
    if kept_until is not None:
        since = max(since, kept_until)
    stops_at = since + policy.after
    idle_for = now - since
    if now >= stops_at:
        return Decision("stop", f"idle {duration_text(idle_for)} (no SSH session, CPU below "
                        f"{policy.cpu_below:g}%, GPU below {policy.gpu_below:g}%)", since, stops_at)  # fmt: skip
    if now >= stops_at - policy.warn:
        return Decision("warn", f"idle {duration_text(idle_for)}", since, stops_at)
    return Decision("idle", f"idle {duration_text(idle_for)}", since, stops_at)


def reclaimed(attrs: Mapping[str, Any]) -> bool:
    """Whether a container (its engine attributes) is a host the watcher stopped: a devbox host,
    not running, with restart policy ``no`` (the watcher sets it before the stop, so it never
    comes back by itself). Such a host holds no GPU: `devbox up` allocates again before it starts.
    A host whose spec says ``restart: no`` and that is stopped counts the same: nothing brings it
    back by itself either."""
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    running = bool((attrs.get("State") or {}).get("Running"))
    restart = ((attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name")
    return "devbox.host" in labels and not running and restart in ("no", "")  # "": an older engine's no
