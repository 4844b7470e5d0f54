"""What a host's container holds that recreating or removing it would throw away.

A container's own layer (the engine's diff against its image, through the SDK) holds what was
written outside its volumes: a tool installed with sudo, a conda under /opt, a config edited in
/etc. `up` and `down` name it per host and ask before discarding it. Left out is what nobody
keeps (temporary files, logs, apt's lists and caches, dpkg's bookkeeping of listed packages)
and what devbox itself writes at every start (host key, sshd settings, password files).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from docker.models.containers import Container

# What nobody keeps, or the entrypoint writes again at every start: a path and what is below it
# (a trailing * : every path that starts so).
IGNORED = (
    "/tmp", "/run", "/var/tmp", "/var/log", "/var/cache", "/var/lib/apt", "/var/lib/dpkg",  # noqa: S108
    "/var/lib/sudo", "/var/lib/systemd", "/var/mail", "/dev", "/proc", "/sys", "/root/.cache",
    "/etc/ssh/ssh_host_*", "/etc/ssh/sshd_config.d", "/etc/devbox-path", "/etc/shadow*", "/etc/gshadow*",
    "/etc/passwd-", "/etc/group-", "/etc/.pwd.lock", "/etc/ld.so.cache", "/etc/mtab",
    "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/etc/profile.d/zz-devbox-idle.sh",
)  # fmt: skip
SHOWN = 5  # paths named per host; the rest are counted
COLLAPSE = 3  # more changed files than this below one directory are shown as that directory


@dataclass(frozen=True)
class Changes:
    """A host's files that live only in its container: the leaf paths, in the engine's order."""

    host: str
    paths: tuple[str, ...]

    def line(self) -> str:
        """One line: ``worker: 3 files outside volumes: /usr/local/bin/tool, /opt/conda (1,240 files)``."""
        groups = collapse(self.paths)
        shown = ", ".join(groups[:SHOWN]) + (f", and {len(groups) - SHOWN} more" if len(groups) > SHOWN else "")
        count = len(self.paths)
        return f"{self.host}: {count:,} file{'s' if count != 1 else ''} outside its volumes: {shown}"


def _under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path.startswith(p[:-1]) if p.endswith("*") else path == p or path.startswith(p + "/")
               for p in prefixes)  # fmt: skip


def kept_paths(diff: Iterable[Mapping[str, object]], mounts: Iterable[str]) -> tuple[str, ...]:
    """Pure: from the engine's diff (``[{"Path": ..., "Kind": 0|1|2}]``), the paths worth
    naming: not ignored, not a mount point (or under one), and not a directory that is only
    listed because something below it changed."""
    listed = [str(entry["Path"]) for entry in diff]
    parents = {p.rsplit("/", 1)[0] or "/" for p in listed}
    paths = [p for p in listed if not _under(p, (*IGNORED, *mounts))]
    # A directory is dropped when it only holds other changes, and also when it is a parent of a
    # skipped mount point (Docker makes /home/x for a volume, which lists /home as changed).
    mount_parents = {m.rsplit("/", 1)[0] for m in mounts}
    return tuple(p for p in paths if p not in parents and p not in mount_parents)


def collapse(paths: Iterable[str]) -> list[str]:
    """Paths for people: many files below one directory (two levels deep, e.g. /opt/conda)
    become ``/opt/conda (1,240 files)``; a few stay as they are. Order of first appearance."""
    groups: dict[str, list[str]] = {}
    for path in paths:
        parts = path.strip("/").split("/")
        key = "/" + "/".join(parts[:2]) if len(parts) > 2 else path
        groups.setdefault(key, []).append(path)
    shown = []
    for key, members in groups.items():
        if len(members) > COLLAPSE:
            shown.append(f"{key} ({len(members):,} files)")
        else:
            shown.extend(members)
    return shown


def container_changes(host: str, container: Container) -> Changes | None:
    """What ``container`` holds outside its volumes (None: nothing worth keeping)."""
    mounts = [str(m.get("Destination", "")) for m in container.attrs.get("Mounts") or []]
    paths = kept_paths(container.diff() or [], [m for m in mounts if m])
    return Changes(host, paths) if paths else None


def changes_of(containers: Mapping[str, Container]) -> list[Changes]:
    """Each host's container changes, for the hosts that have any. The engine walks each
    container's layer for its diff (0.2 s and more each): the hosts are asked side by side."""
    from concurrent.futures import ThreadPoolExecutor

    hosts = sorted(containers.items())
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:
        found = list(pool.map(lambda item: container_changes(*item), hosts))
    return [changes for changes in found if changes is not None]
