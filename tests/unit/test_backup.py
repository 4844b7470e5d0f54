"""The backup archive format (devbox.backup): header, compressed tar, trailer; verification and pruning."""

from __future__ import annotations

import io
import subprocess
import tarfile
from datetime import datetime, timezone

import pytest

from devbox import backup
from devbox.errors import UsageError

WHEN = datetime(2026, 12, 2, 8, 0, 0, tzinfo=timezone.utc)


def _tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = b"hello " * 1000
        info = tarfile.TarInfo("master-home/notes.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _manifest(host: str = "master", created: datetime = WHEN) -> dict:
    return backup.manifest(
        version="0.1.0", project="lab", host=host, spec_file="devbox.yaml", spec_text="project: lab\n",
        image="devbox-lab:1", image_id="sha256:1", image_digests=[], user="developer", uid=1000, gid=1000,
        volumes=[backup.Volume(f"{host}-home", f"lab_{host}-home", "/home/developer", True, 6000)], binds=[],
        consistency="paused", created=created,
    )  # fmt: skip


def _write(path, host: str = "master", created: datetime = WHEN, complete: bool = True) -> bytes:
    with path.open("wb") as file:
        writer = backup.Writer(file, _manifest(host, created))
        tar = _tar()
        for start in range(0, len(tar), 1000):
            writer.write(tar[start:start + 1000])
        if complete:
            writer.finish({"seconds": 1.0})
    return tar


def test_an_archive_reads_back_verifies_and_yields_its_tar(tmp_path):
    path = tmp_path / backup.archive_name("lab", "master", WHEN)
    tar = _write(path)
    assert path.name == "lab-master-20261202T080000Z.tar.zst"
    archive = backup.read_archive(path)
    assert archive.host == "master" and archive.project == "lab" and archive.trailer is not None
    assert [v.key for v in archive.volumes] == ["master-home"]
    backup.verify(archive)
    assert b"".join(backup.tar_stream(archive)) == tar


def test_the_zstd_program_reads_it_as_a_plain_tar_zst(tmp_path):
    path = tmp_path / "a.tar.zst"
    tar = _write(path)
    # the format's promise (devbox itself uses zstandard); scripts/engine.sh installs the zstd program
    result = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True)  # noqa: S607
    assert result.stdout == tar


def test_cut_short_damaged_and_foreign_files_are_refused_with_one_line(tmp_path):
    path = tmp_path / "a.tar.zst"
    _write(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(data[:-20])
    with pytest.raises(UsageError, match="incomplete"):
        backup.verify(backup.read_archive(cut))
    damaged = tmp_path / "damaged.tar.zst"
    middle = len(data) // 2
    damaged.write_bytes(data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1:])
    with pytest.raises(UsageError, match="damaged"):
        backup.verify(backup.read_archive(damaged))
    foreign = tmp_path / "other.tar.zst"
    foreign.write_bytes(b"\x28\xb5\x2f\xfd not ours")
    with pytest.raises(UsageError, match="not a devbox backup"):
        backup.read_archive(foreign)
    unfinished = tmp_path / "unfinished.tar.zst"
    _write(unfinished, complete=False)
    assert backup.read_archive(unfinished).trailer is None


def test_keep_prunes_the_oldest_complete_backups_of_that_host_only(tmp_path):
    for day in (1, 2, 3):
        _write(tmp_path / backup.archive_name("lab", "master", WHEN.replace(day=day)), created=WHEN.replace(day=day))
    _write(tmp_path / backup.archive_name("lab", "worker", WHEN), "worker")
    _write(tmp_path / backup.partial_name("x.tar.zst"))  # hidden: never listed
    found = backup.find_archives(tmp_path)
    assert len(found) == 4
    pruned = backup.to_prune(found, "lab", "master", keep=2)
    assert [a.path.name for a in pruned] == ["lab-master-20261201T080000Z.tar.zst"]
    assert backup.to_prune(found, "lab", "worker", keep=2) == []


def test_progress_says_bytes_rate_and_eta():
    assert backup.progress_line(512 * 1024**2, 1024**3, 2.0) == "512.0 MiB of 1.0 GiB, 256.0 MiB/s, ETA 2 s"


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_backup_and_restore_on_a_swarm_refuse_in_one_line_naming_what_to_do(tmp_path, command):
    from devbox.backup_ops import backup_hosts, restore
    from devbox.engines import open_project

    from .helpers import make_spec

    project = open_project(make_spec(engine="swarm"), tmp_path)  # no engine is asked: nothing to connect to
    with pytest.raises(UsageError) as refused:
        if command == "backup":
            backup_hosts(project, [], None)
        else:
            restore(project, tmp_path / "a.tar.zst", None, False)
    line = str(refused.value)
    assert "\n" not in line and "work on compose hosts for now (engine: swarm)" in line
    assert "docker run --rm -v" in line and "devbox status` names the node" in line
