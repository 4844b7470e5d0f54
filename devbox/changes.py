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
    "/tmp", "/run", "/var/tmp", "/var/log", "/var/lib/apt", "/var/lib/dpkg",  # noqa: S108
    # apt's caches; debconf's answers and ldconfig's cache are rewritten by every package install
    "/var/cache/apt", "/var/cache/debconf", "/var/cache/ldconfig",
    "/var/lib/sudo", "/var/lib/systemd", "/var/mail", "/dev", "/proc", "/sys", "/root/.cache",
    "/etc/ssh/ssh_host_*", "/etc/ssh/sshd_config.d", "/etc/devbox-path", "/etc/shadow*", "/etc/gshadow*",
    "/etc/passwd-", "/etc/group-", "/etc/.pwd.lock", "/etc/ld.so.cache", "/etc/mtab",
    "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/etc/profile.d/zz-devbox-idle.sh",
    "/etc/devbox-volumes-handed",
)  # fmt: skip
SHOWN = 8  # entries on a host's line: past this, files are counted per folder (fewer levels each round)
DELETED = 2  # the engine's diff Kind of a path removed from the image (0: changed, 1: added)


@dataclass(frozen=True)
class Changes:
    """A host's files that live only in its container: the leaf paths, sorted."""

    host: str
    paths: tuple[str, ...]

    @property
    def collapsed(self) -> bool:
        """Whether the line counts files per folder instead of naming each."""
        return len(collapse(self.paths)) < len(self.paths)

    def line(self, listing: str | None = None) -> str:
        """One line naming every file, by folder past SHOWN entries, e.g. ``worker: 1,241 files
        outside its volumes: /opt/conda (1,240 files), /usr/local/bin/tool``; ``listing``: the
        file that lists them all (named when the line counts some instead of naming them)."""
        count = len(self.paths)
        shown = ", ".join(collapse(self.paths))
        where = f" (every file: {listing})" if listing and self.collapsed else ""
        return f"{self.host}: {count:,} file{'s' if count != 1 else ''} outside its volumes: {shown}{where}"


def _under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path.startswith(p[:-1]) if p.endswith("*") else path == p or path.startswith(p + "/")
               for p in prefixes)  # fmt: skip


def kept_paths(diff: Iterable[Mapping[str, object]], mounts: Iterable[str]) -> tuple[str, ...]:
    """Pure: from the engine's diff (``[{"Path": ..., "Kind": 0|1|2}]``), the paths worth
    naming, sorted: changed or added (a file deleted from the image is not lost: recreating
    brings it back), not ignored, not a mount point (or under one), and not a directory that is
    only listed because something below it changed."""
    entries = list(diff)
    listed = [str(entry["Path"]) for entry in entries]
    parents = {p.rsplit("/", 1)[0] or "/" for p in listed}
    paths = [str(e["Path"]) for e in entries if e.get("Kind") != DELETED and not _under(str(e["Path"]),
                                                                                      (*IGNORED, *mounts))]  # fmt: skip
    # A directory is dropped when it only holds other changes, and also when it is a parent of a
    # skipped mount point (Docker makes /home/x for a volume, which lists /home as changed).
    mount_parents = {m.rsplit("/", 1)[0] for m in mounts}
    return tuple(sorted(p for p in paths if p not in parents and p not in mount_parents))


def collapse(paths: Iterable[str], limit: int = SHOWN) -> list[str]:
    """Every path, for people, in a sorted line of at most ``limit`` entries where it can be:
    each path as it is when they fit; else the files counted per folder, the deepest folders
    that fit (``/opt/conda (1,240 files)``; a folder holding one of them names it), down to the
    top-level folders (which are shown however many there are). Nothing is left unnamed."""
    paths = sorted(set(paths))
    if len(paths) <= limit:
        return paths
    depth = max(path.count("/") - 1 for path in paths)
    while True:
        groups: dict[str, list[str]] = {}
        for path in paths:
            parts = path.strip("/").split("/")
            key = "/" + "/".join(parts[:min(depth, len(parts) - 1)]) if len(parts) > 1 else path
            groups.setdefault(key, []).append(path)
        if len(groups) <= limit or depth <= 1:
            break
        depth -= 1
    return [members[0] if len(members) == 1 else f"{key} ({len(members):,} files)"
            for key, members in sorted(groups.items())]  # fmt: skip


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
