"""Disk: what each host holds on the engine's disk (its home, its named volumes, its container
layer), against its budget (``disk:``), and whether the engine's own disk is nearly full.

Hosts share the engine's disk: Docker's local volumes have no size cap (moby/moby#41328), so a
host that fills its home fills every host's disk. What devbox can do is show who holds what
and warn in time. The engine's ``df`` walks every local volume (1.2 s for 100,000 files on the
test machine, growing with the files), so it is asked only by ``status --disk``, ``doctor``, and
an ``up`` whose spec sets a budget or whose engine disk is nearly full; the engine's free space
is one ``statvfs``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devbox.docker_api import engine_is_local
from devbox.labels import LABEL_PREFIX
from devbox.render import home_volume, named_volumes

if TYPE_CHECKING:
    import docker

    from devbox.spec import Host, Spec

NEARLY_FULL = 0.90  # a budget or the engine's disk used this much: warned
ROOT_VARIABLE = "DEVBOX_DOCKER_ROOT"  # where the engine's disk is, when devbox cannot see DockerRootDir


@dataclass(frozen=True)
class HostDisk:
    """What one host holds: bytes in its home volume, its other named volumes (by the spec's
    names) and its container layer (what it wrote outside its volumes); None where the engine
    has no such thing or did not measure it."""

    host: str
    budget: int | None
    home: int | None = None
    volumes: Mapping[str, int] = field(default_factory=dict)
    layer: int | None = None

    @property
    def total(self) -> int:
        return (self.home or 0) + sum(self.volumes.values()) + (self.layer or 0)

    @property
    def used(self) -> float | None:
        """The share of its budget in use (1.0: all of it), or None without a budget."""
        return self.total / self.budget if self.budget else None

    @classmethod
    def from_dict(cls, host: str, data: Mapping[str, Any]) -> HostDisk:
        return cls(host, data["budget"], data["home"], data["volumes"], data["layer"])

    def as_dict(self) -> dict[str, Any]:
        return {"home": self.home, "volumes": dict(self.volumes), "layer": self.layer, "total": self.total,
                "budget": self.budget, "used_percent": None if self.used is None else round(100 * self.used, 1)}


@dataclass(frozen=True)
class EngineDisk:
    """The filesystem holding the engine's data (DockerRootDir), from statvfs."""

    path: str
    size: int
    free: int  # what an unprivileged writer can still use

    @property
    def used(self) -> float:
        return 1 - self.free / self.size if self.size else 0.0


def size_text(count: float | None) -> str:
    if count is None:
        return "-"
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} B"


def host_disks(spec: Spec, df: Mapping[str, Any]) -> list[HostDisk]:
    """Pure: each host's disk use from the engine's ``df`` answer (volumes' UsageData.Size,
    containers' SizeRw), by the project's volume names and the containers' devbox labels. A
    volume two hosts mount counts for each."""
    volumes = {v.get("Name"): (v.get("UsageData") or {}).get("Size", -1) for v in df.get("Volumes") or []}
    layers: dict[str, int] = {}
    for container in df.get("Containers") or []:
        labels = container.get("Labels") or {}
        if labels.get(f"{LABEL_PREFIX}project") == spec.project and f"{LABEL_PREFIX}host" in labels:
            layers[labels[f"{LABEL_PREFIX}host"]] = int(container.get("SizeRw") or 0)
    disks = []
    for host in spec.hosts:
        home = home_volume(spec, host)
        sizes = {name: volumes.get(f"{spec.project}_{name}") for name in named_volumes(spec, host)}
        measured = {name: int(size) for name, size in sizes.items() if size is not None and size >= 0}
        disks.append(HostDisk(
            host.name, host.disk.bytes if host.disk else None,
            home=measured.pop(home, None) if home else None, volumes=measured, layer=layers.get(host.name),
        ))  # fmt: skip
    return disks


def budget_warnings(spec: Spec, disks: Sequence[HostDisk]) -> list[str]:
    """Pure: a line for each host above NEARLY_FULL of its budget, with what holds it."""
    warnings = []
    for disk in disks:
        if disk.used is None or disk.used < NEARLY_FULL:
            continue
        host = spec.host(disk.host)
        where, budget = f"{host.origin('disk')}.disk", host.disk.text if host.disk else ""
        warnings.append(f"{where}: {disk.host} holds {size_text(disk.total)} of its {budget} "
                        f"budget ({100 * disk.used:.0f} %): home {size_text(disk.home)}, volumes "
                        f"{size_text(sum(disk.volumes.values()))}, container layer {size_text(disk.layer)} "
                        "(clean up in the host, or raise disk:)")  # fmt: skip
    return warnings


def engine_disk_warning(engine: EngineDisk, disks: Sequence[HostDisk]) -> str | None:
    """Pure: the line saying the engine's disk is nearly full, naming the largest hosts."""
    if engine.used < NEARLY_FULL:
        return None
    largest = sorted((d for d in disks if d.total), key=lambda d: d.total, reverse=True)[:3]
    named = ", ".join(f"{d.host} {size_text(d.total)}" for d in largest) or "none of this spec's hosts holds much"
    return (f"the engine's disk ({engine.path}) is {100 * engine.used:.0f} % full ({size_text(engine.free)} free of "
            f"{size_text(engine.size)}): every host's writes fail when it is full; the largest hosts: {named}")


def engine_disk(client: docker.DockerClient) -> EngineDisk | None:
    """The engine's disk, or None where this machine cannot see it (a remote engine, a VM's
    disk): DEVBOX_DOCKER_ROOT names the path to measure instead (a mount of that disk)."""
    path = os.environ.get(ROOT_VARIABLE)
    if not path:
        if not engine_is_local():
            return None
        path = str(client.info().get("DockerRootDir") or "")
    if not path or not os.path.isdir(path):
        return None
    stat = os.statvfs(path)
    return EngineDisk(path, stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize)


def quota_filesystem(info: Mapping[str, Any], mountinfo: str) -> bool:
    """Pure: the engine's storage can cap a container layer's size (``storage_opt: size``):
    overlay2 backed by xfs, the engine's root mounted with project quotas (pquota/prjquota, which
    `docker info` does not show: ``mountinfo`` is /proc/self/mountinfo, the longest mount point
    holding DockerRootDir decides)."""
    status = {str(pair[0]): str(pair[1]) for pair in info.get("DriverStatus") or [] if len(pair) == 2}
    if info.get("Driver") != "overlay2" or status.get("Backing Filesystem") != "xfs":
        return False
    root = str(info.get("DockerRootDir") or "/var/lib/docker")
    best, options = "", ""
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 10 or "-" not in fields:
            continue
        point, extra = fields[4], fields[fields.index("-") + 3] if len(fields) > fields.index("-") + 3 else ""
        inside = root == point or root.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, options = point, f"{fields[5]},{extra}"
    return bool({"pquota", "prjquota"} & set(options.split(",")))


XFS_CAP = "overlay2 on xfs with project quotas"
BTRFS_CAP = "btrfs: its qgroup counts the image's files too"


def layer_cap(info: Mapping[str, Any], mountinfo: str) -> str | None:
    """Pure: how the engine's storage caps a container layer's size (``storage_opt: size``), or
    None where it refuses it. btrfs limits the container's subvolume, which shares the image's
    extents: the cap then holds the image and what the host writes (see ``image_budget_problems``)."""
    if info.get("Driver") == "btrfs":
        return BTRFS_CAP
    return XFS_CAP if quota_filesystem(info, mountinfo) else None


def layer_quota(info: Mapping[str, Any]) -> str | None:
    """How this (local) engine caps container layers, or None: a remote engine's mounts cannot be
    read from here, so it is taken as unable (warn only)."""
    if not engine_is_local():
        return None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
            return layer_cap(info, mounts.read())
    except OSError:
        return None


def image_budget_problems(hosts: Sequence[Host], image_bytes: int) -> list[str]:
    """Pure: the budgets an engine on btrfs cannot start a host under: its cap holds the image's
    files as well, so a budget at or below the image's size makes container creation fail with
    the engine's bare "disk quota exceeded"."""
    return [f"hosts.{host.name}.disk: {host.disk.text} is not more than the image ({size_text(image_bytes)}), "
            f"which this engine (btrfs) counts in the host's cap; set it above {size_text(image_bytes)} plus what "
            f"the host writes outside its volumes"
            for host in hosts if host.disk is not None and host.disk.bytes <= image_bytes]  # fmt: skip


def measure(client: docker.DockerClient, spec: Spec) -> list[HostDisk]:
    """Each host's disk use, from the engine's ``df`` (the slow part: see the module's doc)."""
    return host_disks(spec, client.df())


def warnings(client: docker.DockerClient, spec: Spec, disks: Sequence[HostDisk] | None = None) -> list[str]:
    """What `up`, `doctor` and `status --disk` say about disk: hosts near their budget, the
    engine's disk nearly full. Without ``disks`` (measured already), the engine's ``df`` is asked
    only when a budget is set or the disk is nearly full."""
    engine = engine_disk(client)
    full = engine is not None and engine.used >= NEARLY_FULL
    if disks is None:
        if not full and not any(host.disk for host in spec.hosts):
            return []
        disks = measure(client, spec)
    found = budget_warnings(spec, disks)
    line = engine_disk_warning(engine, disks) if engine is not None else None
    return [*found, line] if line else found
