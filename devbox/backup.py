"""The backup archive: one file per host, a zstd-compressed tar of its volumes with a manifest.

Pure: no engine here (devbox.backup_ops runs the copies). An archive is a plain ``.tar.zst``
(``zstd -dc ARCHIVE | tar -t`` lists it) with two zstd *skippable frames* that every zstd
decoder passes over: a header at the start (the manifest: devbox version, spec text, host,
image, uid/gid, volumes and their sizes) and a trailer at the end (checksums of the tar stream
and of the compressed bytes, written only once the copy is complete). So a cut-short file has
no trailer and a damaged one fails its checksum, both known before anything is restored.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from devbox.errors import UsageError

FORMAT = 1
SUFFIX = ".tar.zst"
HEADER_MAGIC = 0x184D2A5A  # zstd skippable frames: 0x184D2A50..0x184D2A5F, ignored by decoders
TRAILER_MAGIC = 0x184D2A5B
HEADER_TAG = b"devbox-backup 1\n"
TRAILER_END = b"DBXEND01"  # the file's last bytes: the trailer is found from the end
COMPRESSION_LEVEL = 3  # zstd's own default, what a hand-run `tar | zstd` uses
READ_CHUNK = 1 << 20

# GNU tar in the helper container (the project's image is Debian's): pax format, which keeps
# xattrs, ACLs, sub-second times and sparse maps; numeric owners, so uid 1000 stays 1000 whatever
# the names are where it is restored. Records of 64 blocks (32 KiB, the engine's frame size).
TAR_CREATE = ["tar", "--create", "--file=-", "--format=posix", "--numeric-owner", "--xattrs", "--xattrs-include=*",
              "--acls", "--sparse", "--blocking-factor=64"]  # fmt: skip
TAR_EXTRACT = ["tar", "--extract", "--file=-", "--numeric-owner", "--same-owner", "--preserve-permissions",
               "--xattrs", "--xattrs-include=*", "--acls", "--blocking-factor=64", "--read-full-records"]  # fmt: skip


@dataclass(frozen=True)
class Volume:
    """One volume in an archive: its key in the spec (``data``, ``master-home``), the engine's
    name for it, where the host mounts it, whether it is the host's home, and its size on disk."""

    key: str
    name: str
    target: str
    home: bool
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "target": self.target, "home": self.home, "size": self.size}


@dataclass(frozen=True)
class Archive:
    """What a backup file says of itself: its manifest (header) and, when complete, its trailer."""

    path: Path
    manifest: dict[str, Any]
    trailer: dict[str, Any] | None
    header_end: int  # where the compressed tar stream starts
    payload_end: int  # where it ends (the trailer's frame starts)
    size: int

    @property
    def host(self) -> str:
        return str(self.manifest.get("host", "?"))

    @property
    def project(self) -> str:
        return str(self.manifest.get("project", "?"))

    @property
    def created(self) -> str:
        return str(self.manifest.get("created", ""))

    @property
    def volumes(self) -> list[Volume]:
        return [Volume(v["key"], v["name"], v["target"], bool(v["home"]), int(v["size"]))
                for v in self.manifest.get("volumes", [])]  # fmt: skip


def archive_name(project: str, host: str, when: datetime) -> str:
    """``<project>-<host>-<UTC time>.tar.zst``: sorted by name is sorted by time, per host."""
    return f"{project}-{host}-{when.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}{SUFFIX}"


def partial_name(name: str) -> str:
    """The name an archive is written under until it is complete and verified: hidden, and not
    ending in .tar.zst, so nothing takes it for a backup."""
    return f".{name}.partial"


def skippable(magic: int, content: bytes) -> bytes:
    return struct.pack("<II", magic, len(content)) + content


def header_frame(manifest: dict[str, Any]) -> bytes:
    return skippable(HEADER_MAGIC, HEADER_TAG + json.dumps(manifest, sort_keys=True).encode())


def trailer_frame(trailer: dict[str, Any]) -> bytes:
    text = json.dumps(trailer, sort_keys=True).encode()
    return skippable(TRAILER_MAGIC, text + struct.pack("<I", len(text)) + TRAILER_END)


class Writer:
    """Writes an archive to ``sink`` as the tar stream arrives: header, compressed stream, trailer.

    Keeps the checksums on the way (sha256 of the tar stream and of the compressed bytes), so a
    finished file is verified by reading it back once (``verify_file``), not by decompressing it.
    ``threads``: zstd's workers; one (as the `zstd` program uses by default) compresses beside
    the thread that reads the stream and hashes it, instead of in turn with it.
    """

    def __init__(self, sink: BinaryIO, manifest: dict[str, Any], threads: int = 1) -> None:
        import zstandard

        self.sink = sink
        self.header = header_frame(manifest)
        self.tar_hash = hashlib.sha256()
        self.payload_hash = hashlib.sha256()
        self.tar_bytes = 0
        self.payload_bytes = 0
        self._compressor = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL, threads=threads).compressobj()
        sink.write(self.header)

    def write(self, data: bytes | memoryview) -> None:
        self.tar_hash.update(data)
        self.tar_bytes += len(data)
        self._emit(self._compressor.compress(data))

    def _emit(self, compressed: bytes) -> None:
        if compressed:
            self.payload_hash.update(compressed)
            self.payload_bytes += len(compressed)
            self.sink.write(compressed)

    def finish(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """End the compressed stream and write the trailer; returns the trailer."""
        self._emit(self._compressor.flush())
        trailer = {"tar_sha256": self.tar_hash.hexdigest(), "tar_bytes": self.tar_bytes,
                   "payload_sha256": self.payload_hash.hexdigest(), "payload_bytes": self.payload_bytes,
                   "header_sha256": hashlib.sha256(self.header).hexdigest(), **(extra or {})}  # fmt: skip
        self.sink.write(trailer_frame(trailer))
        return trailer


def read_archive(path: Path) -> Archive:
    """The manifest and trailer of an archive, without reading its payload.

    Raises UsageError (one line naming the file) when it is not a devbox backup or its header
    is damaged; a missing trailer is not raised here (``Archive.trailer`` is None: incomplete).
    """
    try:
        with path.open("rb") as file:
            size = file.seek(0, 2)
            file.seek(0)
            head = file.read(8)
            if len(head) < 8 or struct.unpack("<II", head)[0] != HEADER_MAGIC:
                raise UsageError(f"{path}: not a devbox backup (no devbox header; make one with `devbox backup`)")
            length = struct.unpack("<II", head)[1]
            content = file.read(length)
            trailer, payload_end = _trailer(file, size)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(content) != length or not content.startswith(HEADER_TAG):
        raise UsageError(f"{path}: its header is damaged; it cannot be restored (use another backup)")
    try:
        manifest = json.loads(content[len(HEADER_TAG):])
    except ValueError:
        raise UsageError(f"{path}: its header is damaged; it cannot be restored (use another backup)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UsageError(f"{path}: a backup format this devbox does not know ({manifest.get('format')!r}); "
                         "restore it with the devbox that made it")  # fmt: skip
    return Archive(path, manifest, trailer, 8 + length, payload_end, size)


def _trailer(file: BinaryIO, size: int) -> tuple[dict[str, Any] | None, int]:
    """(trailer, where its frame starts), or (None, end of file) when there is none."""
    tail = len(TRAILER_END) + 4
    if size < tail + 8:
        return None, size
    file.seek(size - tail)
    end = file.read(tail)
    if not end.endswith(TRAILER_END):
        return None, size
    length = struct.unpack("<I", end[:4])[0]
    start = size - tail - length - 8
    if start < 0:
        return None, size
    file.seek(start)
    frame = file.read(8 + length)
    magic, content_length = struct.unpack("<II", frame[:8])
    if magic != TRAILER_MAGIC or content_length != length + tail:
        return None, size
    try:
        trailer = json.loads(frame[8:])
    except ValueError:
        return None, size
    return (trailer, start) if isinstance(trailer, dict) else (None, size)


def verify(archive: Archive) -> None:
    """Check the whole file against its trailer before anything is touched: complete (the
    trailer is there), header and compressed stream unchanged (sha256 of the bytes as written).

    Raises UsageError, one line naming the file and what is wrong with it.
    """
    path, trailer = archive.path, archive.trailer
    if trailer is None:
        raise UsageError(f"{path}: incomplete (no trailer: the copy was cut short); it cannot be restored "
                         "(use another backup)")  # fmt: skip
    try:
        with path.open("rb") as file:
            header = file.read(archive.header_end)
            digest, count = _digest(file, archive.payload_end - archive.header_end)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if hashlib.sha256(header).hexdigest() != trailer.get("header_sha256"):
        raise UsageError(f"{path}: damaged (its header does not match its checksum); use another backup")
    if count != trailer.get("payload_bytes") or digest != trailer.get("payload_sha256"):
        raise UsageError(f"{path}: damaged (its data does not match its checksum); it cannot be restored "
                         "(use another backup)")  # fmt: skip


def _digest(file: BinaryIO, length: int) -> tuple[str, int]:
    digest, count = hashlib.sha256(), 0
    while count < length:
        chunk = file.read(min(READ_CHUNK, length - count))
        if not chunk:
            break
        digest.update(chunk)
        count += len(chunk)
    return digest.hexdigest(), count


def tar_stream(archive: Archive) -> Iterator[bytes]:
    """The archive's tar stream, decompressed as it is read (the skippable frames yield nothing)."""
    import zstandard

    with archive.path.open("rb") as file:
        file.seek(archive.header_end)
        reader = zstandard.ZstdDecompressor().stream_reader(file, read_across_frames=True, closefd=False)
        while chunk := reader.read(READ_CHUNK):
            yield chunk


def find_archives(folder: Path) -> list[Archive]:
    """The backups in a folder (files ending .tar.zst with a devbox header), oldest first; files
    that are not backups are left out; partial ones are hidden files and never listed."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        if path.name.startswith("."):
            continue
        try:
            found.append(read_archive(path))
        except UsageError:
            continue
    return sorted(found, key=lambda a: (a.created, a.path.name))


def to_prune(archives: Iterable[Archive], project: str, host: str, keep: int) -> list[Archive]:
    """The complete backups of ``host`` beyond the ``keep`` newest (incomplete ones are never
    counted as kept, and never removed: they are not backups, just files to look at)."""
    mine = [a for a in archives if a.project == project and a.host == host and a.trailer is not None]
    mine.sort(key=lambda a: (a.created, a.path.name))
    return mine[: max(len(mine) - keep, 0)]


def human_size(count: float) -> str:
    """1536 -> 1.5 KiB: sizes as people read them."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def progress_line(done: int, total: int, seconds: float) -> str:
    """`1.2 GiB of 2.0 GiB, 85.3 MiB/s, ETA 9 s`: what the copy shows on a terminal (``total``
    is the volumes' size on disk, so the stream may pass it a little: tar headers)."""
    rate = done / seconds if seconds > 0 else 0.0
    line = f"{human_size(done)} of {human_size(total)}, {human_size(rate)}/s"
    if rate > 0 and total > done:
        line += f", ETA {(total - done) / rate:.0f} s"
    return line


def manifest(*, version: str, project: str, host: str, spec_file: str, spec_text: str, image: str,
             image_id: str, image_digests: list[str], user: str, uid: int, gid: int, volumes: list[Volume],
             binds: list[dict[str, str]], consistency: str, created: datetime) -> dict[str, Any]:  # fmt: skip
    """The header of an archive: what it holds and where it came from."""
    return {
        "format": FORMAT, "devbox_version": version, "created": created.astimezone(timezone.utc).isoformat(),
        "project": project, "host": host, "spec_file": spec_file, "spec_text": spec_text, "image": image,
        "image_id": image_id, "image_digests": image_digests, "user": user, "uid": uid, "gid": gid,
        "volumes": [v.as_dict() for v in volumes], "binds_not_copied": binds, "consistency": consistency,
        "tar": TAR_CREATE,
    }  # fmt: skip
