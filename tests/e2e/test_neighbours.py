"""No host takes down another, on a real engine: a process storm stays in its host, a log flood
stays under its bound, and what the CIS Docker Benchmark's runtime checks can see in `docker
inspect` is what the README's Security section says."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

STORM_LIMIT = 64  # small enough to reach with `sleep &`, above the floor validate allows (32)
STORM_SECONDS = 15

# Many `sleep &` under `timeout`: the shell stops at its first failed fork (dash does), and every
# sleep it started ends by itself, so the storm is bounded even where the limit did not hold.
STORM = ["timeout", "-s", "KILL", str(STORM_SECONDS), "sh", "-c",
         f"for i in $(seq 1 400); do sleep {STORM_SECONDS} & done 2>/tmp/storm.err; wait"]  # fmt: skip


def test_a_process_storm_stays_in_its_host_and_it_recovers(make_stack, docker_client):
    stack = make_stack(2)
    stack.spec["hosts"]["master"]["pids_limit"] = STORM_LIMIT
    stack.write_spec()
    stack.devbox("up")
    master = stack.container(docker_client, "master")
    worker = stack.container(docker_client, "worker")
    assert master.attrs["HostConfig"]["PidsLimit"] == STORM_LIMIT
    assert worker.attrs["HostConfig"]["PidsLimit"] == 4096  # the default, untouched

    started = time.monotonic()
    storm = master.exec_run(STORM, user="root")
    assert storm.exit_code != 0  # the storm fails in its host
    assert len(master.top()["Processes"]) >= STORM_LIMIT - 2, "the storm never reached the limit"
    # at its ceiling (a slot or two free at most), ten more forks fail in the host
    assert master.exec_run(["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 1 & done; wait"]).exit_code != 0
    # the neighbour, while the storm holds: a login over SSH, and forty forks in it
    assert stack.ssh("worker", "for i in $(seq 1 40); do sleep 1 & done; wait; echo forked").strip() == "forked"
    assert len(master.top()["Processes"]) <= STORM_LIMIT
    assert time.monotonic() - started < STORM_SECONDS, "too slow to see the storm hold"
    # the storm is over: the host starts commands, takes a login again and forks
    while len(master.top()["Processes"]) > 10 and time.monotonic() - started < STORM_SECONDS + 20:
        time.sleep(0.5)
    errors = master.exec_run(["cat", "/tmp/storm.err"], user="root").output.decode().lower()
    assert "fork" in errors or "resource temporarily unavailable" in errors, errors
    assert stack.ssh("master", "sleep 0.1 & wait; echo back").strip() == "back"


def _log_bytes(container) -> int:
    """What the engine keeps of a host's log on its disk (the `local` driver's folder)."""
    folder = Path(container.attrs["LogPath"]).parent if container.attrs.get("LogPath") else None
    if folder is None or not folder.exists():
        root = Path(container.client.info()["DockerRootDir"])
        folder = root / "containers" / container.id
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and "log" in p.name)


def test_a_log_flood_stays_under_its_bound_and_logs_still_read(make_stack, docker_client, lacking):
    bound = {"max_size": "100k", "max_files": 2}
    stack = make_stack(1, defaults={"logging": bound})
    stack.devbox("up")
    master = stack.container(docker_client, "master")
    config = master.attrs["HostConfig"]["LogConfig"]
    assert config == {"Type": "local", "Config": {"max-size": "100k", "max-file": "2"}}
    if not Path(docker_client.info()["DockerRootDir"]).exists():
        lacking("the engine's disk is not this machine's: its log files cannot be measured")
    # a chatty PID 1: 20 MB on its standard output, 200 times the bound
    flood = "yes 'flood: a chatty line of PID 1, as sshd logs a scanner' | head -c 20000000 > /proc/1/fd/1"
    assert master.exec_run(["sh", "-c", flood], user="root").exit_code == 0
    time.sleep(1)
    kept = _log_bytes(master)
    assert 0 < kept <= 2 * 100 * 1024 + 64 * 1024, kept  # two files of 100k (the local driver compresses)
    tail = stack.devbox("logs", "--tail", "3", "master").stdout
    assert "flood: a chatty line" in tail


def test_running_hosts_pass_the_runtime_checks_docker_inspect_shows(make_stack, docker_client):
    """CIS Docker Benchmark section 5, as far as `docker inspect` tells (the README's table)."""
    stack = make_stack(1)
    stack.devbox("up")
    attrs = stack.container(docker_client, "master").attrs
    host, config = attrs["HostConfig"], attrs["Config"]
    assert host["PidsLimit"] == 4096  # 5.29
    assert host["LogConfig"]["Type"] == "local" and host["LogConfig"]["Config"]["max-size"] == "10m"
    assert host["Privileged"] is False  # 5.5
    assert host["NetworkMode"] != "host"  # 5.10
    assert host["PidMode"] in ("", "private")  # 5.16
    assert host["IpcMode"] in ("private", "shareable", "")  # 5.17
    assert host["UTSMode"] == ""  # 5.21
    assert host.get("UsernsMode", "") == ""  # 5.31 (the engine's userns-remap, if any, still applies)
    assert not host.get("Devices")  # 5.18: no device unless the spec asks
    assert host["Memory"] > 0 and host["NanoCpus"] > 0  # 5.11, 5.12
    assert host["RestartPolicy"]["Name"] == "unless-stopped"  # 5.15: not `always` unless asked
    assert not (host.get("CapAdd") or [])  # 5.4: no capability beyond the engine's default set
    assert config.get("Healthcheck", {}).get("Test"), "no health check"  # 5.27
    mounts = [m.get("Source", "") for m in attrs["Mounts"]]
    assert not any(m.endswith("docker.sock") for m in mounts), mounts  # 5.32
    assert not any(m in ("/", "/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr") for m in mounts)  # 5.6
    for port in (attrs["NetworkSettings"]["Ports"] or {}).values():  # 5.14: only the SSH port, on 127.0.0.1
        for binding in port or []:
            assert binding["HostIp"] == "127.0.0.1", binding
    assert attrs["State"]["Health"]["Status"] in ("healthy", "starting")


@pytest.fixture
def small_disk(tmp_path, lacking):
    """A 16 MiB filesystem of the test's own (tmpfs), 95 % full: the engine's disk as doctor and
    up see it through DEVBOX_DOCKER_ROOT, never the machine's disk."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        lacking(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        (mount / "filler").write_bytes(b"\0" * (16 * 1024**2 * 95 // 100))
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_disk_use_against_a_budget_and_a_nearly_full_engine_disk(make_stack, docker_client, small_disk):
    stack = make_stack(2)
    stack.spec["hosts"]["master"]["disk"] = "20m"
    stack.write_spec()
    stack.devbox("up")
    # master writes past its budget in its home, worker a little in its container layer
    stack.ssh("master", "head -c 25000000 /dev/zero > ~/big && sync && echo ok")
    stack.ssh("worker", "head -c 3000000 /dev/zero > /tmp/layer && sync && echo ok")
    result = stack.devbox("status", "--disk", "--json")
    disks = {entry["host"]: entry["disk"] for entry in __import__("json").loads(result.stdout)}
    assert disks["master"]["home"] >= 25_000_000 and disks["master"]["budget"] == 20 * 1024**2
    assert disks["master"]["used_percent"] > 100
    assert disks["worker"]["layer"] >= 3_000_000 and disks["worker"]["budget"] is None
    assert "warning: hosts.master.disk: master holds 2" in result.stderr, result.stderr
    table = stack.devbox("status", "--disk").stdout
    assert "of 20.0 MiB (1" in table, table  # use against the budget, over 100 %
    # the engine's disk nearly full (a tmpfs of this test's own): doctor and up say so, largest first
    env = {"DEVBOX_DOCKER_ROOT": str(small_disk)}
    doctor = stack.devbox("doctor", env=env, check=False)
    line = next(line for line in doctor.stdout.splitlines() if "engine's disk:" in line)
    assert line.startswith("WARN  disk") and f"({small_disk}) is 95 % full" in line, line
    assert "the largest hosts: master 2" in line and line.index("master") < line.index("worker"), line
    assert "WARN  disk       budgets: hosts.master.disk: master holds" in doctor.stdout, doctor.stdout
    up = stack.devbox("up", env=env)
    assert f"warning: the engine's disk ({small_disk}) is 95 % full" in up.stdout + up.stderr


BTRFS_ROOT = Path("/run/devbox-e2e-btrfs")
BTRFS_DISK = Path("/var/tmp/devbox-e2e-btrfs.img")
BTRFS_BRIDGE = ("dbx-btrfs0", "172.31.215.1/24")


@pytest.fixture(scope="module")
def btrfs_engine(docker_client, lacking):
    """A dockerd of the test's own on a 2 GiB btrfs loop filesystem (storage driver btrfs): an
    engine that enforces ``storage_opt size``. This machine's kernel has no XFS or ext4 quotas
    (CONFIG_XFS_QUOTA, CONFIG_QFMT_V2 unset), so overlay2's own cap cannot be shown here; btrfs's
    qgroups need neither."""
    import shutil
    import subprocess

    from .conftest import side_engine

    if shutil.which("mkfs.btrfs") is None:
        lacking("mkfs.btrfs is not on PATH (scripts/engine.sh installs btrfs-progs)")
    mount = BTRFS_ROOT / "data"
    subprocess.run(["umount", str(mount)], capture_output=True, check=False)  # an interrupted run's
    mount.mkdir(parents=True, exist_ok=True)
    BTRFS_DISK.unlink(missing_ok=True)
    with open(BTRFS_DISK, "wb") as disk:
        disk.truncate(2 * 1024**3)
    for argv in (["mkfs.btrfs", "-q", str(BTRFS_DISK)], ["mount", "-o", "loop", str(BTRFS_DISK), str(mount)]):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lacking(f"{' '.join(argv)}: {done.stderr.strip()}")
    try:
        with side_engine(BTRFS_ROOT, mount / "docker", BTRFS_BRIDGE, "--storage-driver", "btrfs") as host:
            yield host
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True, check=False)
        BTRFS_DISK.unlink(missing_ok=True)


def test_an_engine_that_can_caps_the_container_layer_at_the_disk_budget(make_stack, docker_client, btrfs_engine):
    import yaml

    from .conftest import copy_image

    stack = make_stack(1)
    stack.devbox("up")  # the image, built on the main engine and copied over (no registry here)
    tag = yaml.safe_load((stack.state / "docker-compose.yml").read_text())["services"]["master"]["image"]
    stack.devbox("down")
    copy_image(docker_client, btrfs_engine, tag)
    image_mib = docker_client.images.get(tag).attrs["Size"] // 1024**2
    env = {"DOCKER_HOST": btrfs_engine}

    # a budget the image alone fills: refused before compose, naming the spec path
    stack.spec["hosts"]["master"]["disk"] = f"{image_mib // 2}m"
    stack.write_spec()
    refused = stack.devbox("up", env=env, check=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "devbox.yaml: hosts.master.disk:" in refused.stderr and "counts in the host's cap" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr

    stack.spec["hosts"]["master"]["disk"] = f"{image_mib + 64}m"
    stack.write_spec()
    up = stack.devbox("up", env=env)
    assert "the engine caps each host's container layer at its disk budget (btrfs" in up.stdout + up.stderr
    import docker

    capped = docker.DockerClient(base_url=btrfs_engine)
    try:
        master = stack.container(capped, "master")
        assert master.attrs["HostConfig"]["StorageOpt"] == {"size": f"{image_mib + 64}m"}
    finally:
        capped.close()
    # outside its volumes the host stops at its budget; its home (a volume) is not capped
    layer = stack.ssh("master", "head -c 120000000 /dev/zero 2>&1 >/tmp/big; echo rc=$?")
    assert "rc=1" in layer and "quota exceeded" in layer.lower(), layer
    stack.ssh("master", "rm -f /tmp/big")
    assert stack.ssh("master", "head -c 120000000 /dev/zero > ~/big && echo home-ok").strip() == "home-ok"
    assert stack.ssh("master", "echo still-here").strip() == "still-here"
    stack.devbox("down", "--volumes", "--yes", env=env)
