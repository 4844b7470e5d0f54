"""Backups (issue 25): a host's data outlives its container and its volumes.

Real hosts on the real engine: odd names, modes, setuid, links, a sparse 1 GiB file and root's
files go through `backup`, `down --volumes` and `restore` and come back identical (a tree hash
over names, modes, owners, times and contents); a damaged archive, Ctrl-C and a full disk
leave nothing that looks like a backup and change nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import DEVBOX

pytestmark = pytest.mark.e2e

ROOTS = "/home/developer /data"
# Run as root in the host: the same odd tree in the home and in a named volume.
POPULATE = r"""
set -e
for r in /home/developer /data; do
  mkdir -p "$r/odd dir/deeper"
  printf x > "$r/odd dir/with space.txt"
  printf y > "$r/line
break"
  printf z > "$r/ünïcødé-файл-文件"
  printf s > "$r/setuid"; chown developer:developer "$r/setuid"; chmod 4755 "$r/setuid"
  ln -s "odd dir/with space.txt" "$r/link"; ln -s /nowhere "$r/dangling"
  printf h > "$r/hard1"; ln "$r/hard1" "$r/hard2"
  printf r > "$r/rootfile"; chmod 600 "$r/rootfile"
  mkdir -m 700 "$r/private"; printf p > "$r/private/p"; chown -R developer:developer "$r/private"
  touch -d "2001-02-03 04:05:06.123456789" "$r/odd dir/with space.txt"
done
chown developer:developer /data/hard1
truncate -s 1G /home/developer/sparse
printf end | dd of=/home/developer/sparse bs=1 seek=536870912 conv=notrunc status=none
chown developer:developer /home/developer/sparse
"""
# names, modes, owners, link counts, sizes, mtimes and link targets; then every file's content
TREE = ("find " + ROOTS + " -mindepth 1 -printf '%p|%m|%U|%G|%n|%s|%T@|%l\\n' | LC_ALL=C sort; "
        "find " + ROOTS + " -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum")  # fmt: skip


def _root(stack, command):
    return stack.devbox("exec", "--root", "master", "--", "sh", "-c", command).stdout


def _tree(stack):
    return _root(stack, TREE)


def _archives(folder):
    return sorted(p.name for p in Path(folder).iterdir()) if Path(folder).is_dir() else []


def _one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len([line for line in lines if line.startswith("error:")]) == 1, result.stderr
    return lines[-1]


def test_backup_down_volumes_restore_gives_the_same_tree_also_in_another_folder(make_stack, tmp_path):
    stack = make_stack(["master"], defaults={"volumes": ["data:/data"]})
    stack.devbox("up")
    _root(stack, POPULATE)
    before = _tree(stack)
    folder = tmp_path / "backups"
    made = stack.devbox("backup", "--to", str(folder))
    assert "paused for" in made.stderr, made.stderr
    [name] = _archives(folder)
    assert name.startswith(f"{stack.name}-master-") and name.endswith(".tar.zst")
    listed = stack.devbox("backups", "--in", str(folder)).stdout
    assert "master" in listed and "complete" in listed and "master-home" in listed
    listing = subprocess.run(f"zstd -dc '{folder / name}' | tar -t", shell=True, capture_output=True,  # noqa: S602
                             text=True, check=True).stdout  # a plain .tar.zst: zstd and tar read it
    assert "data/odd dir/with space.txt" in listing and "master-home/sparse" in listing

    stack.devbox("down", "--volumes", "--yes")
    restored = stack.devbox("restore", str(folder / name))
    assert "login ok" in restored.stdout, restored.stdout + restored.stderr
    assert _tree(stack) == before
    # the sparse file stays sparse: 1 GiB long, a few KiB on disk
    assert int(_root(stack, "du -k /home/developer/sparse | cut -f1").strip()) < 1024
    assert stack.ssh("master", "cat ~/'odd dir/with space.txt'") == "x"

    # the same archive into a second folder's spec, whose user has another uid: re-owned
    other = make_stack(["master"], image={"uid": 2000, "gid": 2000}, defaults={"volumes": ["data:/data"]})
    result = other.devbox("restore", str(folder / name))
    assert "become 2000:2000" in result.stderr + result.stdout
    owners = _root(other, "stat -c '%n %u:%g' /home/developer/private/p /data/rootfile /data/hard1 /home/developer")
    assert owners.split("\n")[:4] == ["/home/developer/private/p 2000:2000", "/data/rootfile 0:0",
                                      "/data/hard1 2000:2000", "/home/developer 2000:2000"]  # fmt: skip
    contents = [line for line in _tree(other).splitlines() if "  /" in line]
    assert contents == [line for line in before.splitlines() if "  /" in line]


def test_a_damaged_or_cut_archive_is_refused_in_one_line_and_nothing_changes(make_stack, tmp_path):
    stack = make_stack(["master"])
    stack.devbox("up")
    stack.ssh("master", "echo v1 > ~/notes")
    streamed = tmp_path / "streamed.tar.zst"
    with streamed.open("wb") as out:  # --to -: the archive on stdout, the messages on stderr
        subprocess.run([*DEVBOX, "backup", "master", "--to", "-"], cwd=stack.directory,
                       stdout=out, stderr=subprocess.PIPE, check=True, timeout=300)  # fmt: skip
    stack.ssh("master", "echo v2 > ~/notes")
    data = streamed.read_bytes()
    cut, damaged = tmp_path / "cut.tar.zst", tmp_path / "damaged.tar.zst"
    cut.write_bytes(data[: len(data) // 2])
    middle = len(data) // 2
    damaged.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    for archive, word in ((cut, "incomplete"), (damaged, "damaged")):
        result = stack.devbox("restore", "--force", str(archive), check=False)
        assert result.returncode == 2, result.stdout + result.stderr
        assert word in _one_error_line(result)
    assert stack.ssh("master", "cat ~/notes").strip() == "v2"
    # the whole one restores (over data: --force)
    refused = stack.devbox("restore", str(streamed), check=False)
    assert refused.returncode == 2 and "--force" in _one_error_line(refused)
    assert stack.ssh("master", "cat ~/notes").strip() == "v2"
    stack.devbox("restore", "--force", str(streamed))
    assert stack.ssh("master", "cat ~/notes").strip() == "v1"
    assert stack.ssh("master", "ls -A ~ | grep -c devbox-replaced || true").strip() == "0"


def _interrupted(stack, args, when, stream="stderr"):
    """Run devbox with ``args``, SIGINT it once its ``stream`` shows ``when``; (code, all it said)."""
    process = subprocess.Popen([*DEVBOX, *args], cwd=stack.directory, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)  # fmt: skip
    seen = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = getattr(process, stream).readline()
        seen.append(line)
        if when in line or not line:
            break
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    return process.returncode, "".join(seen) + out + err


def test_ctrl_c_or_a_full_disk_leave_no_archive_and_force_keeps_old_data(make_stack, tmp_path, docker_client):
    stack = make_stack(["master"])
    stack.devbox("up")
    _root(stack, "head -c 400M /dev/urandom > /home/developer/big && echo v1 > /home/developer/notes")
    folder = tmp_path / "backups"
    code, said = _interrupted(stack, ["backup", "--to", str(folder)], "copying")
    assert code == 130, said
    assert _archives(folder) == [], said
    assert stack.container(docker_client, "master").status == "running"  # unpaused

    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        full = stack.devbox("backup", "--to", str(small), check=False)
        assert full.returncode == 1, full.stdout + full.stderr
        assert "No space left on device" in _one_error_line(full)
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)

    stack.devbox("backup", "--to", str(folder))
    [name] = _archives(folder)
    _root(stack, "echo v2 > /home/developer/notes")
    code, said = _interrupted(stack, ["restore", "--force", str(folder / name)], "restoring", "stdout")
    assert code == 130, said
    assert "hold what they held before" in said
    stack.devbox("up")
    assert stack.ssh("master", "cat ~/notes; ls -A ~ | grep -c devbox-replaced || true").split() == ["v2", "0"]
