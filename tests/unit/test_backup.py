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


# --------------------------------------------------------------------------- on a swarm: the node's engine

N2_ENGINE = "ssh://admin@10.0.0.2"
SWARM_HOSTS = {"a": {"ssh_port": 4432, "bind_address": "0.0.0.0", "volumes": ["data:/data"]},
               "b": {"ssh_port": 4433, "bind_address": "0.0.0.0", "node": "n2"}}  # fmt: skip


@pytest.fixture
def swarm_of_two(monkeypatch):
    """A manager (node n1, its own engine) and node n2's engine, reached by its devbox.docker-host label."""
    from devbox.engines import swarm_reach

    from .fake_docker import FakeDockerClient, serve

    manager, node2 = serve(monkeypatch, FakeDockerClient()), FakeDockerClient()
    manager.swarm_manager("node-1")
    manager.nodes.add("node-1", "10.0.0.1", hostname="n1")
    manager.nodes.add("node-2", "10.0.0.2", hostname="n2", labels={"devbox.docker-host": N2_ENGINE})
    manager.workers = [node2]
    monkeypatch.setattr(swarm_reach, "connect_node", lambda url: {N2_ENGINE: node2}[url])
    return manager, node2


@pytest.fixture
def helpers(monkeypatch):
    """The copy helpers replaced: each call's engine and script noted, a small tar streamed out."""
    from devbox import backup_ops

    calls: list[tuple[str, object]] = []

    def run(project, image, script, args, mounts, client=None):
        calls.append((script.split()[0] if script != backup_ops.SURVEY else "survey", client))
        if script in (backup_ops.SURVEY, backup_ops.OCCUPIED):
            return ["1000", "1000", *(["0"] * (len(args) - 1))]
        return []

    def stream_out(project, image, argv, mounts, on_stdout, client=None):
        calls.append(("tar-out", client))
        on_stdout(_tar())
        return 0, ""

    def stream_in(project, image, argv, mounts, chunks, client=None):
        calls.append(("tar-in", client))
        for _ in chunks:
            pass
        return 0, ""

    monkeypatch.setattr(backup_ops, "_run", run)
    monkeypatch.setattr(backup_ops, "stream_out", stream_out)
    monkeypatch.setattr(backup_ops, "stream_in", stream_in)
    return calls


def _swarm_project(tmp_path, said, hosts=None, **changes):
    from devbox.engines import open_project

    from .helpers import make_spec

    spec = make_spec(tmp_path, engine="swarm", hosts=hosts or SWARM_HOSTS, **changes)
    return open_project(spec, tmp_path / ".devbox", say=said.append, environ={})


def _deployed_b_on_n2(manager, node2, project):
    """Deploy, then b's task and container on node n2 (as the swarm places a pinned host)."""
    from devbox.engines.swarm import deploy

    from .fake_docker import SERVICE_NAME_LABEL

    deploy(project, list(project.spec.hosts), project.render())
    (service,) = manager.services.list(filters={"name": "lab_b"})
    service.task_list[0]["NodeID"] = "node-2"
    container = next(c for c in manager.containers.items if c.labels.get(SERVICE_NAME_LABEL) == "lab_b")
    manager.containers.items.remove(container)
    node2.images.add(container.attrs["Image"])
    node2.volumes.add("lab_b-home")
    return service, node2.containers.add(container.name, labels=container.labels, image=container.attrs["Image"])


def test_a_swarm_hosts_backup_runs_on_its_nodes_engine_with_its_task_paused_there(swarm_of_two, helpers, tmp_path,
                                                                                  said):  # fmt: skip
    from devbox.backup_ops import backup_hosts

    manager, node2 = swarm_of_two
    project = _swarm_project(tmp_path, said)
    _service, container = _deployed_b_on_n2(manager, node2, project)
    [written] = backup_hosts(project, ["b"], str(tmp_path / "backups"))
    assert [client for _, client in helpers] == [node2, node2]  # the survey and the tar, both on n2
    assert [c for c, _ in node2.calls if c.startswith("container.")][-2:] == ["container.pause", "container.unpause"]
    assert container.status == "running"
    assert any("paused for" in line and "on node n2" in line for line in said), said
    archive = backup.read_archive(written)
    backup.verify(archive)
    assert archive.host == "b" and [v.key for v in archive.volumes] == ["b-home"]


def _archive_of_b(folder):
    """A backup of host b's home (one small tar), as `devbox backup` writes it."""
    path = folder / "b.tar.zst"
    with path.open("wb") as file:
        writer = backup.Writer(file, {**_manifest("b"), "volumes": [
            backup.Volume("b-home", "lab_b-home", "/home/developer", True, 6000).as_dict()]})  # fmt: skip
        writer.write(_tar())
        writer.finish()
    return path


def test_a_swarm_restore_scales_the_service_to_0_refills_on_its_node_and_scales_it_back(swarm_of_two, helpers,
                                                                                       tmp_path, said):  # fmt: skip
    from devbox.backup_ops import restore

    manager, node2 = swarm_of_two
    project = _swarm_project(tmp_path, said)
    service, container = _deployed_b_on_n2(manager, node2, project)
    path = _archive_of_b(tmp_path)
    assert restore(project, path, None, False) == "b"
    assert {client for _, client in helpers} == {node2}
    assert [step for step, _ in helpers] == ["id", "tar-in"]  # occupied?, extract (empty volumes: nothing set aside)
    assert [call["replicas"] for call in manager.called("service.scale")] == [0, 1]
    assert any("scaling its service to 0 for the restore on node n2" in line for line in said), said


def test_a_swarm_restore_scales_the_service_back_when_the_copy_fails(swarm_of_two, helpers, tmp_path, said,
                                                                     monkeypatch):  # fmt: skip
    from devbox import backup_ops
    from devbox.errors import EngineError

    manager, node2 = swarm_of_two
    project = _swarm_project(tmp_path, said)
    _deployed_b_on_n2(manager, node2, project)
    path = _archive_of_b(tmp_path)
    monkeypatch.setattr(backup_ops, "stream_in", lambda *args, **kwargs: (2, "tar: disk full"))
    with pytest.raises(EngineError, match="disk full"):
        backup_ops.restore(project, path, None, False)
    assert [call["replicas"] for call in manager.called("service.scale")] == [0, 1]
    assert any("hold what they held before" in line for line in said), said


def test_a_node_out_of_reach_or_an_unpinned_host_of_several_nodes_is_refused_in_one_line(swarm_of_two, tmp_path,
                                                                                        said):  # fmt: skip
    from devbox.backup_ops import backup_hosts, restore

    manager, node2 = swarm_of_two
    project = _swarm_project(tmp_path, said)
    _deployed_b_on_n2(manager, node2, project)
    manager.nodes.get("node-2").attrs["Spec"]["Labels"] = {}
    with pytest.raises(UsageError) as out_of_reach:
        backup_hosts(project, ["b"], str(tmp_path / "backups"))
    line = str(out_of_reach.value)
    assert "\n" not in line and "devbox.docker-host=ssh://USER@10.0.0.2 n2" in line and "its volumes are there" in line

    path = tmp_path / "a.tar.zst"
    _write(path, host="a")  # a's home
    with pytest.raises(UsageError) as unpinned:  # a runs, unpinned: scaled back, it may land on the other node
        restore(project, path, None, False)
    assert "hosts.a is not pinned" in str(unpinned.value) and "pin it with node:" in str(unpinned.value)
    project.engine.down(project, volumes=False)  # no task now either: n1 or n2?
    with pytest.raises(UsageError) as nowhere:
        backup_hosts(project, ["a"], None)
    assert "hosts.a has no task and no node: on a swarm of 2 nodes" in str(nowhere.value)


def test_a_restore_onto_a_node_without_the_image_pulls_it_there_from_the_registry(swarm_of_two, helpers, tmp_path,
                                                                                  said, monkeypatch):  # fmt: skip
    from devbox import backup_ops

    manager, node2 = swarm_of_two
    images: list[str] = []
    real_run = backup_ops._run
    monkeypatch.setattr(backup_ops, "_run", lambda project, image, *args, **kwargs: (
        images.append(image), real_run(project, image, *args, **kwargs))[1])  # fmt: skip
    project = _swarm_project(tmp_path, said, hosts={"b": {"ssh_port": 4433, "node": "n2"}},
                             image={"base": "debian:bookworm", "registry": "registry.local:5000/lab"})
    manager.images.add(project.render().image_tag)  # built on the manager; n2 has nothing (no service ran there)
    path = tmp_path / "b.tar.zst"
    _write(path, host="b")
    assert backup_ops.restore(project, path, None, False) == "b"
    [pulled] = node2.called("images.pull")
    assert pulled["repository"].startswith("registry.local:5000/lab") and "@sha256:" in pulled["repository"]
    assert set(images) == {pulled["repository"]} and {client for _, client in helpers} == {node2}
    assert [v.name for v in node2.volumes.items] == ["lab_b-home"] and manager.volumes.items == []


def test_read_ahead_yields_every_chunk_in_order_raises_its_errors_and_stops_when_left():
    """Issue 25: the restore decompresses on a thread ahead of the sends."""
    import threading

    import pytest

    from devbox.backup_ops import read_ahead

    assert list(read_ahead(iter([b"a", b"b", b"c"]), depth=1)) == [b"a", b"b", b"c"]

    def failing():
        yield b"a"
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(read_ahead(failing()))

    made = []

    def endless():
        while True:
            made.append(1)
            yield b"x"

    reader = read_ahead(endless(), depth=2)
    assert next(reader) == b"x"
    reader.close()  # the consumer left (tar stopped early): the thread ends, not blocked on a full queue
    count = len(made)
    assert not any(t.name == "devbox-read-ahead" and t.is_alive() for t in threading.enumerate())
    assert len(made) == count
