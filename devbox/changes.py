"""What a host's container holds that recreating or removing it would throw away.

A container's own layer (the engine's diff against its image, through the SDK) holds what was
written outside its volumes: a tool installed with sudo, a conda under /opt, a config edited in
/etc. `up` and `down` name it per host and ask before discarding it. Left out is what nobody
keeps (temporary files, logs, apt's lists and caches, dpkg's bookkeeping of listed packages)
and what devbox itself writes at every start (host key, sshd settings, password files).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
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


def container_changes(host: str, container: Container, diff: Iterable[Mapping[str, object]] | None = None,
                      ) -> Changes | None:  # fmt: skip
    """What ``container`` holds outside its volumes (None: nothing worth keeping); ``diff``: its
    layer's entries when already read (else the engine's diff is asked)."""
    mounts = [str(m.get("Destination", "")) for m in container.attrs.get("Mounts") or []]
    paths = kept_paths(container.diff() or [] if diff is None else diff, [m for m in mounts if m])
    return Changes(host, paths) if paths else None


@contextlib.contextmanager
def read_meanwhile(containers: Mapping[str, Container]) -> Iterator[Callable[[], list[Changes]]]:
    """Start reading ``containers``' changes on a thread of its own; the caller goes on and calls
    the function this yields for them (each host that has any, by host), waiting if needed.

    `up` builds meanwhile and asks once both are done, before anything is replaced. Leaving the
    block early (a failed build, Ctrl-C) does not wait for the reading: it changes nothing."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="devbox-changes")
    future = pool.submit(changes_of, dict(containers))
    try:
        yield future.result
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def changes_of(containers: Mapping[str, Container]) -> list[Changes]:
    """Each host's container changes, for the hosts that have any: from the containers' own
    layers when the engine can show them (read_layers), else from the engine's diffs, side by side."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    hosts = sorted(containers.items())
    if not hosts:
        return []
    layers = read_layers(containers)
    if layers is not None:
        found = [container_changes(host, container, layers[host]) for host, container in hosts]
    else:
        # One diff a core: on 2 cores, 8 at once held a build beside them back for as long as
        # they ran (2.7 s for 8 hosts); 2 at once took 3.9 s, the build going on meanwhile.
        workers = max(1, min(len(hosts), os.cpu_count() or 1, 8))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="devbox-diff") as pool:
            found = list(pool.map(lambda item: container_changes(*item), hosts))
    return [changes for changes in found if changes is not None]


# --------------------------------------------------------------------------- reading the layers

LAYERS = "/devbox-layers"  # where the helper sees each container's layer: LAYERS/<n>
# The helper's script (its arguments: the layers' numbers). GNU find (findutils is in every base
# devbox builds on), fields NUL-separated so any file name (newlines too) comes through whole.
# Standard output: each entry of each layer (layer, type, path, attributes); standard error: the
# same attributes of those paths in the helper's own root, which is the image's.
FIND_LAYERS = r"""
cd /devbox-layers || exit 1
find "$@" -mindepth 1 -printf '%H\0%y\0%P\0%m %U %G %s %T@\0'
find "$@" -mindepth 1 ! -type c -printf '/%P\0' | sort -zu \
    | xargs -0 -r sh -c 'find "$@" -maxdepth 0 -printf "%p\0%y %m %U %G %s %T@\0" 2>/dev/null; true' sh >&2
"""
WHITEOUT = "c"  # overlayfs marks a file deleted from the image with a 0:0 character device


def read_layers(containers: Mapping[str, Container]) -> dict[str, list[dict[str, object]]] | None:
    """Each container's layer as the engine's diff gives it (``[{"Path", "Kind"}]``), read by one
    helper container on their image that sees each layer's own folder (overlay2's ``UpperDir``)
    read-only (one helper per engine and image); None when that cannot be done (another storage
    driver, a helper an engine refuses): the caller asks the engine's diffs instead.

    Why not the engine's diff: on overlay2 it compares the container's whole tree with its
    image's (Docker 20.10 to 28: 0.3-0.9 s a container for a 140 MiB image, far more for a CUDA
    one, nearly one at a time), while the layer's folder holds only what the container wrote:
    8 hosts are read in one helper's start. The entries are judged as the engine's diff judges
    them (devbox.changes.layer_diff)."""
    groups: dict[tuple[int, str], list[str]] = {}
    for host in sorted(containers):  # one helper per engine and image: a swarm's nodes each hold their own
        container = containers[host]
        # by client: every engine on a unix socket has the same base_url
        key = (id(container.client), str(container.attrs.get("Image") or ""))
        groups.setdefault(key, []).append(host)
    found: dict[str, list[dict[str, object]]] = {}
    for hosts in groups.values():
        layers = _read_on_one_engine({host: containers[host] for host in hosts})
        if layers is None:
            return None
        found.update(layers)
    return found


def _read_on_one_engine(containers: Mapping[str, Container]) -> dict[str, list[dict[str, object]]] | None:
    """read_layers for containers of one engine and one image: the helper there, on that image
    (a file's attributes are compared with the image's on the same engine: a pulled image keeps
    whole-second times where a built one has nanoseconds)."""
    import docker.errors

    hosts = sorted(containers)
    drivers = [containers[host].attrs.get("GraphDriver") or {} for host in hosts]
    uppers = [str((driver.get("Data") or {}).get("UpperDir") or "") for driver in drivers]
    if {driver.get("Name") for driver in drivers} != {"overlay2"} or not all(uppers):
        return None
    try:
        layers, image = _run_finder(containers[hosts[0]], uppers)
    except (docker.errors.DockerException, OSError):
        return None
    return layer_diff(layers, image, hosts)


def _run_finder(example: Container, uppers: list[str]) -> tuple[bytes, bytes]:
    """Run FIND_LAYERS over ``uppers`` (bound read-only at LAYERS/<n>) in a helper on the image of
    ``example``, as root, no network; its standard output and error. Raises DockerException."""
    import docker.errors
    from docker.types import Mount

    from devbox.labels import HELPER_LABEL, OWNER_LABEL

    client = example.client
    mounts = [Mount(f"{LAYERS}/{n}", upper, type="bind", read_only=True) for n, upper in enumerate(uppers)]
    labels = {HELPER_LABEL: "changes", OWNER_LABEL: example.labels.get(OWNER_LABEL, "")}
    helper = client.containers.create(
        str(example.attrs["Image"]), ["-c", FIND_LAYERS, "sh", *map(str, range(len(uppers)))],
        entrypoint=["/bin/sh"], user="0:0", network_mode="none", mounts=mounts, labels=labels)  # fmt: skip
    try:
        helper.start()
        code = helper.wait()["StatusCode"]
        found: tuple[bytes, bytes] = (helper.logs(stdout=True, stderr=False), helper.logs(stdout=False, stderr=True))
    finally:
        helper.remove(force=True)
    if code != 0:
        raise docker.errors.DockerException(f"the layer reader exited {code}")
    return found


def _fields(output: bytes, width: int) -> list[list[str]] | None:
    fields = [field.decode("utf-8", "surrogateescape") for field in output.split(b"\0")]
    if fields[-1:] == [""]:
        fields.pop()
    if len(fields) % width:
        return None
    return [fields[start:start + width] for start in range(0, len(fields), width)]


def layer_diff(layers: bytes, image: bytes, hosts: list[str]) -> dict[str, list[dict[str, object]]] | None:
    """Pure: FIND_LAYERS's output as the engine's diff, per host (in the mounts' order); None if
    garbled. As the engine's own comparison (moby's ``archive.ChangesDirs``): an entry the image
    lacks is added; one it has is changed when its type, mode or owner differ, or, not being a
    folder, its size or modification time; a whiteout is a deleted file. A folder listed only
    for what is below it is left out by kept_paths. (A file the container rewrote unchanged, as
    overlayfs copies it up, is no change: /etc/passwd under every `chpasswd`.)"""
    entries, originals = _fields(layers, 4), _fields(image, 2)
    if entries is None or originals is None:
        return None
    in_image = {path: attributes for path, attributes in originals}
    found: dict[str, list[dict[str, object]]] = {host: [] for host in hosts}
    for layer, kind, path, attributes in entries:
        if not layer.isdigit() or int(layer) >= len(hosts):
            return None
        original = in_image.get("/" + path)
        if original is not None and _same(kind, attributes, original):
            continue
        change = DELETED if kind == WHITEOUT else 0 if original is not None else 1
        found[hosts[int(layer)]].append({"Path": "/" + path, "Kind": change})
    return found


def _same(kind: str, attributes: str, original: str) -> bool:
    """Whether a layer's entry is its image's unchanged ("TYPE MODE UID GID SIZE MTIME")."""
    mine, theirs = f"{kind} {attributes}".split(), original.split()
    if kind == WHITEOUT or len(mine) != 6 or len(theirs) != 6:
        return False
    compared = 4 if kind == "d" else 6  # a folder's size and time are not compared (its entries are)
    return mine[:compared] == theirs[:compared]
