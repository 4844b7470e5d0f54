"""Backup and restore on the engine: the copies run where the volumes are.

The engine may be another machine (DOCKER_HOST), so nothing here reads a volume's folder: a
short-lived helper container from the project's own image (Debian's GNU tar, which keeps
numeric owners, modes, times, hard links, sparse files, xattrs and ACLs; the engine's
get_archive/put_archive keep none of the last three) mounts the volumes and runs tar, and its
standard output (or input) streams through the SDK's attach socket. Compression happens here,
with zstandard, into the archive devbox.backup describes.

Every engine alike: the engine says where a host's volumes are (``Engine.volume_site``: this
machine's engine under compose, the engine of the host's node on a swarm) and how to stop the
host for a restore (``Engine.stopped_for_restore``); the helpers run on that engine's client.
devbox.engines.swarm_move copies a moving swarm host's volumes between two nodes with them too.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from devbox import backup
from devbox.docker_api import talks_to_engine
from devbox.errors import EngineError, UsageError
from devbox.labels import HELPER_LABEL, LABEL_PREFIX, OWNER_LABEL
from devbox.render import home_directory, home_volume

if TYPE_CHECKING:
    from docker.models.containers import Container

    from devbox.engines.base import VolumeSite
    from devbox.project import Project
    from devbox.spec import Host

MOUNTS = "/devbox-volumes"  # where a helper container mounts the volumes, each under its key
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
Progress = Callable[[str], None]

# Short helper scripts (sh -c SCRIPT sh ARGS...): arguments, never text pasted into the script.
SURVEY = 'id -u "$1" && id -g "$1" && shift && for d; do du -s -B1 "$d" | cut -f1; done'
OCCUPIED = ('id -u "$1" && id -g "$1" && shift && '
            'for d; do find "$d" -mindepth 1 -maxdepth 1 | head -n 1 | wc -l; done')  # fmt: skip
STASH = ('set -e; s=$1; shift; for d; do mkdir "$d/$s"; '
         'find "$d" -mindepth 1 -maxdepth 1 ! -name "$s" -exec mv -t "$d/$s" -- {} +; done')  # fmt: skip
DROP = 'set -e; s=$1; shift; for d; do touch -r "$d" /tmp/t; rm -rf -- "$d/$s"; touch -r /tmp/t "$d"; done'
PUT_BACK = ('set -e; s=$1; shift; for d; do find "$d" -mindepth 1 -maxdepth 1 ! -name "$s" -exec rm -rf -- {} +; '
            'find "$d/$s" -mindepth 1 -maxdepth 1 -exec mv -t "$d" -- {} +; rmdir "$d/$s"; done')  # fmt: skip
CLEAR = 'set -e; for d; do find "$d" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +; done'
# chown by root clears setuid/setgid bits (the kernel does): re-owned files lose them
REOWN = ('set -e; s=$1; ou=$2; og=$3; nu=$4; ng=$5; shift 5; for d; do '
         'chown -h --from="$ou" "$nu" "$d"; chown -h --from=":$og" ":$ng" "$d"; '
         'find "$d" -mindepth 1 -maxdepth 1 ! -name "$s" -exec chown -R -h --from="$ou" "$nu" -- {} +; '
         'find "$d" -mindepth 1 -maxdepth 1 ! -name "$s" -exec chown -R -h --from=":$og" ":$ng" -- {} +; '
         'done')  # fmt: skip


def default_folder(project: Project) -> Path:
    """Where backups go unless --to says: ``backups/`` beside the spec (not in .devbox/, which
    holds secrets and is the folder people delete to start over)."""
    return Path(project.spec.source).resolve().parent / "backups"


def host_volumes(project: Project, host: Host) -> list[backup.Volume]:
    """The named volumes of a host that a backup copies (sizes unknown yet): the spec's named
    volumes and its home. Bind mounts are the user's own folders: named in the manifest only."""
    spec = project.spec
    found = [backup.Volume(v.source, f"{spec.project}_{v.source}", v.target, False, 0)
             for v in host.volumes if v.kind == "volume"]  # fmt: skip
    home = home_volume(spec, host)
    if home:
        found.append(backup.Volume(home, f"{spec.project}_{home}", home_directory(spec), True, 0))
    return found


def has_volume(client: Any, name: str) -> bool:
    """Whether the engine has the volume ``name`` (its name filter matches parts of names too)."""
    return any(v.name == name for v in client.volumes.list(filters={"name": name}))


# --------------------------------------------------------------------------- helper containers


def _mounts(volumes: Iterable[tuple[str, str]], read_only: bool) -> list[Any]:
    """(volume name, key) -> mounted at MOUNTS/key."""
    from docker.types import Mount

    return [Mount(f"{MOUNTS}/{key}", name, type="volume", read_only=read_only) for name, key in volumes]


def _create(project: Project, image: str, argv: list[str], mounts: list[Any], *, streaming: bool,
            stdin: bool = False, client: Any = None) -> Container:  # fmt: skip
    """A helper container: root (to read and write every owner's files), no network, devbox's
    labels; a streaming one logs nothing (the engine would keep a copy of the whole tar)."""
    from docker.types import LogConfig

    engine = client or project.client  # another engine: a swarm node's (devbox.engines.swarm_move)
    api = engine.api
    log = LogConfig(type=LogConfig.types.NONE) if streaming else None
    # not detached with stdin open: the SDK then sets StdinOnce (its stdin closes when we close ours)
    made = api.create_container(
        image, argv[1:], entrypoint=argv[:1], user="0:0", detach=not stdin, stdin_open=stdin,
        labels={**project.owner_labels(), HELPER_LABEL: "backup"},
        host_config=api.create_host_config(network_mode="none", mounts=mounts, log_config=log),
    )  # fmt: skip
    return engine.containers.get(made["Id"])


def _run(project: Project, image: str, script: str, args: list[str], mounts: list[Any],
         client: Any = None) -> list[str]:  # fmt: skip
    """Run a short helper script to its end; its output lines. Raises EngineError on failure."""
    container = _create(project, image, ["/bin/sh", "-c", script, "sh", *args], mounts, streaming=False,
                        client=client)  # fmt: skip
    try:
        container.start()
        code = container.wait()["StatusCode"]
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    if code != 0:
        last = output.strip().splitlines()[-1:] or [f"exit {code}"]
        raise EngineError(f"the copy helper failed: {last[0]}")
    return output.split()


def _raw(attached: Any) -> socket.socket:
    raw: socket.socket = getattr(attached, "_sock", attached)
    raw.settimeout(None)  # the client's timeout would end a long quiet stretch (a big sparse hole)
    return raw


def _hang_up(raw: socket.socket, attached: Any) -> None:
    """Close the attach connection for good: closing only the SDK's wrapper leaves the socket
    open, and the engine, blocked writing the rest of the stream to it, cannot remove the helper."""
    with contextlib.suppress(OSError):
        raw.shutdown(socket.SHUT_RDWR)
    raw.close()
    attached.close()


def _demux(raw: socket.socket, on_stdout: Callable[[bytes], None], errors: list[bytes]) -> None:
    """Read the engine's multiplexed attach stream (8-byte frame headers) to its end."""
    stream = io.BufferedReader(socket.SocketIO(raw, "rb"), 1 << 20)  # type: ignore[arg-type]
    while True:
        header = stream.read(8)
        if len(header) < 8:
            return
        data = stream.read(int.from_bytes(header[4:8], "big"))
        if header[0] == 1:
            on_stdout(data)
        elif sum(len(e) for e in errors) < 65536:
            errors.append(data)


def stream_out(project: Project, image: str, argv: list[str], mounts: list[Any],
               on_stdout: Callable[[bytes], None], client: Any = None) -> tuple[int, str]:  # fmt: skip
    """Run ``argv`` in a helper container, handing its standard output to ``on_stdout`` as it
    comes; (exit code, standard error). Interrupted (Ctrl-C), the helper is removed."""
    container = _create(project, image, argv, mounts, streaming=True, client=client)
    errors: list[bytes] = []
    try:
        attached = (client or project.client).api.attach_socket(
            container.id, params={"stdout": 1, "stderr": 1, "stream": 1})
        raw = _raw(attached)
        try:
            container.start()
            _demux(raw, on_stdout, errors)
        finally:
            _hang_up(raw, attached)
        code = int(container.wait()["StatusCode"])
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)
    return code, b"".join(errors).decode(errors="replace")


def stream_in(project: Project, image: str, argv: list[str], mounts: list[Any],
              chunks: Iterable[bytes], client: Any = None) -> tuple[int, str]:  # fmt: skip
    """Run ``argv`` in a helper container with ``chunks`` on its standard input; (exit code,
    standard error). Its output is read on a thread meanwhile (a tar with much to say on
    stderr would otherwise stop reading its input)."""
    container = _create(project, image, argv, mounts, streaming=True, stdin=True, client=client)
    errors: list[bytes] = []
    try:
        attached = (client or project.client).api.attach_socket(
            container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        raw = _raw(attached)
        reader = threading.Thread(target=_demux, args=(raw, errors.append, errors), daemon=True)
        try:
            container.start()
            reader.start()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # tar stopped early: its code says why
                for chunk in chunks:
                    raw.sendall(chunk)
                raw.shutdown(socket.SHUT_WR)
            reader.join()
        finally:
            _hang_up(raw, attached)
        code = int(container.wait()["StatusCode"])
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)
    return code, b"".join(errors).decode(errors="replace")


def read_ahead(chunks: Iterable[bytes], depth: int = 8) -> Iterator[bytes]:
    """``chunks``, made on a thread of their own up to ``depth`` ahead of the caller: a restore
    reads, decompresses and hashes the archive there while the caller sends, as the hand-run
    `zstd -dc | docker run -i ... tar -x` does in two processes (zstandard, hashlib and socket
    sends all release the GIL). Its errors are raised here; leaving early stops the thread."""
    import queue

    ahead: queue.Queue[tuple[bytes | None, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[bytes | None, BaseException | None]) -> bool:
        """Queue ``item`` unless the consumer left meanwhile; whether it was queued."""
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                ahead.put(item, timeout=0.1)
                return True
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put((chunk, None)):
                    return
            put((None, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put((None, exc))

    producer = threading.Thread(target=produce, name="devbox-read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            chunk, error = ahead.get()
            if error is not None:
                raise error
            if chunk is None:
                return
            yield chunk
    finally:
        stop.set()
        producer.join(timeout=5)


def _tar_problem(errors: str, code: int) -> str:
    lines = [line for line in errors.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"tar exited {code}"


# --------------------------------------------------------------------------- backup


@dataclass
class Meter:
    """Progress of a copy on a terminal: bytes, rate, ETA, at most twice a second."""

    total: int
    show: Progress | None
    done: int = 0
    started: float = 0.0
    shown: float = 0.0

    def __post_init__(self) -> None:
        self.started = self.shown = time.monotonic()

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.show is not None and now - self.shown >= 0.5:
            self.shown = now
            self.show(backup.progress_line(self.done, self.total, now - self.started))

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


def _project_image(project: Project, site: VolumeSite) -> str:
    """The image a helper runs on the site's engine: the host's own, else the project's newest
    there (it has GNU tar)."""
    if site.container is not None:
        return str(site.container.attrs.get("Image") or site.container.image.id)
    images = site.client.images.list(filters={"label": f"{LABEL_PREFIX}project={project.spec.project}"})
    mine = [i for i in images if (i.labels or {}).get(OWNER_LABEL, project.owner) == project.owner]
    if not mine:
        raise UsageError(f"{project.spec.project} has no image to copy with{site.where}: run `devbox up` first")
    return str(max(mine, key=lambda i: str(i.attrs.get("Created", ""))).id)


@contextlib.contextmanager
def _held_still(project: Project, host: str, site: VolumeSite, live: bool) -> Iterator[str]:
    """Pause a running host for the copy (a point-in-time copy; its processes keep their
    state and resume) and resume it however the copy ends; yields how it was copied. On a
    swarm the task's container is paused on its node (the engine stops health checks while a
    container is paused, so the swarm does not replace it)."""
    container = site.container
    if container is None or container.status not in ("running", "paused"):
        yield "stopped"
        return
    if live or container.status == "paused":
        yield "live" if live else "paused"
        return
    container.pause()
    started = time.monotonic()
    try:
        yield "paused"
    finally:
        container.unpause()
        project.say(f"{host}: paused for {time.monotonic() - started:.1f} s during the copy{site.where}, "
                    "running again")


@talks_to_engine
def backup_hosts(project: Project, names: list[str], to: str | None, *, live: bool = False,
                 keep: int | None = None, progress: Progress | None = None,
                 stdout: BinaryIO | None = None) -> list[Path]:  # fmt: skip
    """Back up each host into an archive of its own (``to``: a folder, or "-": ``stdout``);
    returns the archives written. With ``keep``, older backups beyond the newest ``keep`` of
    each host are removed, once the new one is verified."""
    hosts = [project.host(name) for name in names] if names else list(project.spec.hosts)
    if to == "-" and len(hosts) != 1:
        raise UsageError("--to - streams one archive: name one host (devbox backup HOST --to -)")
    written: list[Path] = []
    with project.lock():
        for host in hosts:
            site = project.engine.volume_site(project, host)
            if to == "-":
                _backup_host(project, host, site, stdout or _no_stdout(), live, progress)
                continue
            folder = Path(to) if to else default_folder(project)
            written.append(_backup_to_folder(project, host, site, folder, live, progress))
            if keep is not None:
                _prune(project, folder, host.name, keep)
    return written


def _no_stdout() -> BinaryIO:
    raise UsageError("--to - needs a standard output to write to")


def _backup_to_folder(project: Project, host: Host, site: VolumeSite, folder: Path, live: bool,
                      progress: Progress | None) -> Path:  # fmt: skip
    """Write under a hidden partial name, verify, then rename: a crash, Ctrl-C or a full disk
    never leaves a file that looks like a backup."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--to {folder}: cannot make the folder ({exc.strerror})") from None
    name = backup.archive_name(project.spec.project, host.name, datetime.now(timezone.utc))
    final, partial = folder / name, folder / backup.partial_name(name)
    try:
        with partial.open("xb") as file:
            trailer = _backup_host(project, host, site, file, live, progress)
            file.flush()
            os.fsync(file.fileno())
        backup.verify(backup.read_archive(partial))
        os.replace(partial, final)
        _sync_folder(folder)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise EngineError(f"--to {folder}: {exc.strerror or exc} while writing {name}; no backup was kept "
                          "(free some space there, or choose another --to)") from None  # fmt: skip
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    project.say(f"{host.name}: {final} ({backup.human_size(final.stat().st_size)} from "
                f"{backup.human_size(trailer['tar_bytes'])} of tar, {trailer['seconds']:.1f} s)")  # fmt: skip
    return final


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _backup_host(project: Project, host: Host, site: VolumeSite, sink: BinaryIO, live: bool,
                 progress: Progress | None) -> dict[str, Any]:  # fmt: skip
    """Copy one host's volumes into ``sink`` as an archive, on the engine that holds them;
    returns its trailer."""
    volumes = host_volumes(project, host)
    if not volumes:
        raise UsageError(f"hosts.{host.name}: it has no named volumes and no home volume: nothing to back up")
    missing = [v.name for v in volumes if not has_volume(site.client, v.name)]
    if missing:
        raise UsageError(f"{host.name}: no volume {', '.join(missing)} on the engine{site.where} (run "
                         f"`devbox up {host.name}` first)")  # fmt: skip
    image = _project_image(project, site)
    pairs = [(v.name, v.key) for v in volumes]
    started = time.monotonic()
    with _held_still(project, host.name, site, live) as consistency:
        survey = _run(project, image, SURVEY, [project.spec.image.user, *(f"{MOUNTS}/{v.key}" for v in volumes)],
                      _mounts(pairs, read_only=True), client=site.client)  # fmt: skip
        uid, gid, sizes = int(survey[0]), int(survey[1]), [int(s) for s in survey[2:]]
        sized = [backup.Volume(v.key, v.name, v.target, v.home, size) for v, size in zip(volumes, sizes, strict=True)]
        project.say(f"{host.name}: copying {', '.join(v.key for v in sized)} ({backup.human_size(sum(sizes))})"
                    f"{site.where}{'; live: crash-consistent at best' if consistency == 'live' else ''}")  # fmt: skip
        writer = backup.Writer(sink, _manifest(project, host, site, image, uid, gid, sized, consistency))
        meter = Meter(sum(sizes), progress)

        def take(data: bytes) -> None:
            writer.write(data)
            meter.add(len(data))

        code, errors = stream_out(project, image, [*backup.TAR_CREATE, "-C", MOUNTS, *(v.key for v in sized)],
                                  _mounts(pairs, read_only=True), take, client=site.client)  # fmt: skip
    if code != 0 and not (live and code == 1):  # 1: a file changed as it was read (live copies)
        raise EngineError(f"{host.name}: the copy failed: {_tar_problem(errors, code)}")
    return writer.finish({"seconds": round(time.monotonic() - started, 3), "tar_exit": code})


def _manifest(project: Project, host: Host, site: VolumeSite, image: str, uid: int, gid: int,
              volumes: list[backup.Volume], consistency: str) -> dict[str, Any]:  # fmt: skip
    from importlib.metadata import version

    spec_path = Path(project.spec.source)
    try:
        spec_text = spec_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        spec_text = ""
    found = site.client.images.get(image)
    return backup.manifest(
        version=version("devbox"), project=project.spec.project, host=host.name, spec_file=spec_path.name,
        spec_text=spec_text, image=(found.tags or [image])[0], image_id=str(found.id),
        image_digests=list(found.attrs.get("RepoDigests") or []), user=project.spec.image.user, uid=uid, gid=gid,
        volumes=volumes, binds=[{"source": v.source, "target": v.target} for v in host.volumes if v.kind == "bind"],
        consistency=consistency, created=datetime.now(timezone.utc),
    )  # fmt: skip


def _prune(project: Project, folder: Path, host: str, keep: int) -> None:
    for old in backup.to_prune(backup.find_archives(folder), project.spec.project, host, keep):
        old.path.unlink(missing_ok=True)
        project.say(f"{host}: removed {old.path.name} (--keep {keep})")


# --------------------------------------------------------------------------- restore


def _targets(project: Project, host: Host, archive: backup.Archive) -> list[tuple[backup.Volume, str]]:
    """Each volume of the archive with the target host's volume it goes into: the home into the
    home, a named volume into the volume of the same name. Raises UsageError for one the host
    does not have (before anything changes)."""
    mine = {v.key: v for v in host_volumes(project, host)}
    home = next((v for v in mine.values() if v.home), None)
    pairs = []
    for volume in archive.volumes:
        target = home if volume.home else mine.get(volume.key)
        if target is None or (target.home != volume.home):
            what = "a home volume" if volume.home else f"the volume {volume.key!r} ({volume.key}:{volume.target})"
            raise UsageError(f"{archive.path}: holds {what}, which hosts.{host.name} does not have in "
                             f"{project.spec.source}; add it, or restore into another host (--host)")  # fmt: skip
        pairs.append((volume, target.name))
    return pairs


def _ensure_volumes(project: Project, client: Any, names: list[tuple[str, str]]) -> None:
    """Create the volumes a restore fills on the engine that will mount them, labelled as `up`
    makes them (compose takes them as its own, and they carry this spec's owner)."""
    for name, key in names:
        if not has_volume(client, name):
            client.volumes.create(name, driver="local", labels={
                COMPOSE_PROJECT_LABEL: project.spec.project, **project.owner_labels(),
                "com.docker.compose.volume": key})  # fmt: skip


def _restore_image(project: Project, site: VolumeSite) -> str:
    """The project's image for the helper on the site's engine, built first when this engine
    lacks it (a restore on a new machine). Another swarm node lacking it: the project's newest
    image there, else the one `up` pushes to image.registry, pulled there."""
    from devbox.engines.base import build_image

    rendered = project.render()
    tag = rendered.image_tag
    if site.client.images.list(name=tag):
        return tag
    if site.client is not project.client:
        with contextlib.suppress(UsageError):
            return _project_image(project, site)
        if not project.spec.image.registry:
            raise UsageError(f"{project.spec.source}: the engine{site.where} has no image of {project.spec.project} "
                             "for the copy helper: set image.registry (then restore pulls it there), or load "
                             f"the image {tag} there (`docker save {tag} | docker load`)")  # fmt: skip
    if not project.client.images.list(name=tag):
        build_image(project, tag)
    if site.client is project.client:
        return tag
    reference = project.engine.publish(project, rendered)
    site.client.images.pull(reference)
    return reference


@talks_to_engine
def restore(project: Project, path: Path, host_name: str | None, force: bool,
            progress: Progress | None = None) -> str:  # fmt: skip
    """Restore an archive into a host's volumes; returns the host's name (the caller starts it).

    The archive is verified before anything changes; volumes holding files are refused without
    ``force``; what they held is set aside in each volume (``.devbox-replaced-*``) and put back
    if the restore fails or is interrupted, removed only once the restore is verified.
    """
    started = time.monotonic()
    archive = backup.read_archive(path)
    backup.verify(archive)
    host = project.host(host_name or archive.host)
    pairs = _targets(project, host, archive)
    with project.lock():
        site = project.engine.volume_site(project, host, restoring=True)
        client = site.client
        image = _restore_image(project, site)
        _ensure_volumes(project, client, [(name, volume.key) for volume, name in pairs])
        mounts = _mounts([(name, volume.key) for volume, name in pairs], read_only=False)
        folders = [f"{MOUNTS}/{volume.key}" for volume, _ in pairs]
        survey = _run(project, image, OCCUPIED, [project.spec.image.user, *folders], mounts, client=client)
        uid, gid = int(survey[0]), int(survey[1])
        occupied = [name for (_volume, name), used in zip(pairs, survey[2:], strict=True) if used != "0"]
        if occupied and not force:
            raise UsageError(f"{', '.join(occupied)} already hold files: restoring would replace them; pass --force "
                             "(what they hold is kept until the restore is verified)")  # fmt: skip
        with project.engine.stopped_for_restore(project, host, site):
            _refill(project, host, archive, client, image, mounts, folders, (uid, gid), progress, bool(occupied))

    replaced = f"; replaced what {', '.join(occupied)} held" if occupied else ""
    project.say(f"{host.name}: restored {', '.join(v.key for v, _ in pairs)} from {path.name} (made "
                f"{archive.created}, {archive.manifest.get('consistency')}){replaced} in "
                f"{time.monotonic() - started:.1f} s")  # fmt: skip
    return host.name


def _refill(project: Project, host: Host, archive: backup.Archive, client: Any, image: str, mounts: list[Any],
            folders: list[str], owner: tuple[int, int], progress: Progress | None,
            occupied: bool) -> None:  # fmt: skip
    """Set the volumes' contents aside (when they hold any: ``occupied``), extract the archive,
    re-own; the old contents put back if that fails or is interrupted (empty volumes emptied
    again), dropped once it is done. Into empty volumes (after `down --volumes`, on a new
    machine) nothing is set aside: two helper containers fewer."""
    uid, gid = owner
    stash = f".devbox-replaced-{secrets.token_hex(4)}"
    if occupied:
        _run(project, image, STASH, [stash, *folders], mounts, client=client)
    project.say(f"{host.name}: restoring {', '.join(v.key for v in archive.volumes)} "
                f"({backup.human_size(sum(v.size for v in archive.volumes))}) from {archive.path.name}")
    try:
        _extract(project, archive, client, image, mounts, progress)
        if (uid, gid) != (archive.manifest["uid"], archive.manifest["gid"]):
            project.say(f"{host.name}: files of uid {archive.manifest['uid']}:{archive.manifest['gid']} "
                        f"become {uid}:{gid}, this spec's user")  # fmt: skip
            _run(project, image, REOWN, [stash, str(archive.manifest["uid"]), str(archive.manifest["gid"]),
                                         str(uid), str(gid), *folders], mounts, client=client)  # fmt: skip
    except BaseException:
        with contextlib.suppress(Exception):
            if occupied:
                _run(project, image, PUT_BACK, [stash, *folders], mounts, client=client)
            else:
                _run(project, image, CLEAR, folders, mounts, client=client)
            project.say(f"{host.name}: the restore did not complete; its volumes hold what they held before")
        raise
    if occupied:
        _run(project, image, DROP, [stash, *folders], mounts, client=client)


def _extract(project: Project, archive: backup.Archive, client: Any, image: str, mounts: list[Any],
             progress: Progress | None) -> None:  # fmt: skip
    """Stream the archive's tar into tar -x in a helper; checks the stream against the trailer."""
    import hashlib

    if archive.trailer is None:  # verify() refused it already
        raise UsageError(f"{archive.path}: incomplete (no trailer)")
    digest = hashlib.sha256()
    meter = Meter(int(archive.trailer["tar_bytes"]), progress)

    def chunks() -> Iterator[bytes]:
        for chunk in backup.tar_stream(archive):
            digest.update(chunk)
            meter.add(len(chunk))
            yield chunk

    code, errors = stream_in(project, image, [*backup.TAR_EXTRACT, "-C", MOUNTS], mounts, read_ahead(chunks()),
                             client=client)  # fmt: skip
    if code != 0:
        raise EngineError(f"{archive.path}: the restore failed: {_tar_problem(errors, code)}")
    if digest.hexdigest() != archive.trailer["tar_sha256"]:
        raise EngineError(f"{archive.path}: damaged (its tar stream does not match its checksum); use another backup")
