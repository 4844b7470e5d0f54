"""Idle hosts on the real engine: the watcher warns and stops an idle host, leaves busy ones
alone, survives kill -9, and `up HOST` brings a stopped host back with its files (refused while
others hold its GPUs); a reclaimed host stays stopped when the engine restarts (a dockerd of the
test's own: run that test under flock /tmp/devbox-exclusive.lock).

The nvidia-smi double (tests/doubles/nvidia-smi) is mounted into the watcher, with utilisation
set per GPU in its machine file; the sampling interval is shortened to a few seconds.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import paramiko
import pytest

from .test_gpu_ledger import DOUBLES, TWO_GPUS, gpu_machine

pytestmark = pytest.mark.e2e
INTERVAL = "4"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def own_gpus(machine: dict) -> dict:
    """The machine with GPU UUIDs of this test's own: other projects' containers on the shared
    engine (other tests, run at the same moment or left by an earlier one) hold the usual
    doubles' UUIDs, and the machine-wide ledger rightly keeps those from this test's hosts."""
    machine = json.loads(json.dumps(machine))
    for gpu in machine["gpus"]:
        gpu["uuid"] = f"GPU-{secrets.token_hex(4)}-{secrets.token_hex(2)}-{secrets.token_hex(2)}-" \
                      f"{secrets.token_hex(2)}-{secrets.token_hex(6)}"  # fmt: skip
    return machine


def login_notice(stack, host: str) -> str:
    """What the user's login shell (zsh, the default) prints at an SSH login (the notice goes to
    the terminal: stderr)."""
    return stack.ssh(host, '"$SHELL" -l -c true 2>&1')


def sample_lines(stack) -> int:
    return sum(len(path.read_text().splitlines()) for path in (stack.state / "idle" / "samples").glob("*.jsonl"))


def events(stack) -> list[dict]:
    path = stack.state / "idle" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.usefixtures("hook_double")  # the double's GPUs (see tests/e2e/conftest.py)
def test_an_idle_host_is_warned_then_stopped_and_busy_hosts_are_not(make_stack, docker_client, tmp_path):
    machine = own_gpus(TWO_GPUS)
    machine["gpus"][1]["utilization"] = 90  # the GPU the double shows busy: gpubusy's
    env = {**gpu_machine(tmp_path, machine), "DEVBOX_WATCH_INTERVAL": INTERVAL,
           "DEVBOX_WATCH_NVIDIA_SMI": str(DOUBLES / "nvidia-smi")}  # fmt: skip
    stack = make_stack(["idle", "gpubusy", "session", "cpu", "kept", "touched"], defaults={"idle": {"after": "1m"}})
    stack.spec["hosts"]["idle"]["gpus"] = 1
    stack.spec["hosts"]["gpubusy"]["gpus"] = 1
    stack.write_spec()
    stack.devbox("up", env=env, timeout=900)
    started = time.monotonic()
    watcher = docker_client.containers.get(f"{stack.name}-devbox-watcher")
    assert watcher.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"

    # files to find again: one in the home (a volume), one in the container's own layer
    idle = stack.container(docker_client, "idle")
    stack.ssh("idle", "echo mine > ~/notes.txt")
    assert idle.exec_run(["sh", "-c", "echo layer > /opt/outside.txt"]).exit_code == 0
    # the busy ones: an open SSH session, a CPU-busy process, a busy GPU (above), a keep-alive
    session = paramiko.SSHClient()
    session.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - a test's own host
    session.connect("127.0.0.1", port=stack.port("session"), username="developer",
                    password=stack.password("session"), look_for_keys=False, allow_agent=False)  # fmt: skip
    session.exec_command("sleep 600")
    cpu = stack.container(docker_client, "cpu")
    cpu.exec_run(["sh", "-c", "while :; do :; done"], detach=True)
    stack.devbox("keep", "kept", "--for", "1h")
    touched = stack.container(docker_client, "touched")  # inside: ~/.devbox-keep holds it for a day
    assert touched.exec_run(["touch", "/home/developer/.devbox-keep"], user="developer").exit_code == 0

    # kill -9 the watcher once: it comes back by itself (restart policy) and goes on
    os.kill(watcher.attrs["State"]["Pid"], 9)
    wait_for(lambda: docker_client.containers.get(watcher.id).attrs["RestartCount"] >= 1, 60, "watcher restarted")

    wait_for(lambda: any(e["event"] == "warned" and e["host"] == "idle" for e in events(stack)), 90, "idle warned")
    notice = idle.exec_run(["cat", "/etc/profile.d/zz-devbox-idle.sh"]).output.decode()
    assert "will be stopped at" in notice
    # what its users see at their next login (their login shell, zsh, by exec: an SSH login now would be use)
    shown = idle.exec_run(["su", "-l", "developer", "-c", "true"]).output.decode()
    assert "will be stopped at" in shown, shown
    status = stack.devbox("status", env=env).stdout
    assert "IDLE" in status and "stops at" in status, status
    wait_for(lambda: stack.container(docker_client, "idle").status == "exited", 150, "idle host stopped")
    assert time.monotonic() - started < 180
    stopped = stack.container(docker_client, "idle")
    assert stopped.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"  # nothing brings it back by itself
    for busy in ("gpubusy", "session", "cpu", "kept", "touched"):
        assert stack.container(docker_client, busy).status == "running", busy
    reclaims = [e for e in events(stack) if e["event"] == "reclaimed"]
    assert [e["host"] for e in reclaims] == ["idle"]
    status = json.loads(stack.devbox("status", "--json", env=env).stdout)
    by_host = {e["host"]: e for e in status}
    assert by_host["idle"]["idle"].startswith("stopped"), by_host["idle"]
    assert by_host["kept"]["idle"].startswith("held until"), by_host["kept"]
    assert by_host["touched"]["idle"].startswith("held until") and "~/.devbox-keep" in by_host["touched"]["idle"]
    session.close()
    usage = {row["host"]: row for row in json.loads(stack.devbox("usage", "--json", env=env).stdout)}
    assert usage["idle"]["reclaims"] == 1 and usage["session"]["last_login"] is not None
    assert usage["idle"]["gpus"] == 1 and usage["idle"]["samples"] > 5
    assert usage["idle"]["disk_mib"] is not None and usage["idle"]["disk_mib"] >= 0  # its layer and volumes

    # its GPU is free for another spec's host (the machine's other GPU is gpubusy's)
    idle_gpu = idle.attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"]
    other = make_stack(1, defaults={"gpus": 1})
    other.devbox("up", env=env, timeout=900)
    given = other.container(docker_client, "master")
    assert given.status == "running" and given.attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == idle_gpu
    # while it holds it, and gpubusy the other, `up idle` is refused, naming the holder; nothing starts
    refused = stack.devbox("up", "idle", env=env, check=False, timeout=300)
    assert refused.returncode == 2 and f"GPU 0: {other.name}/master" in refused.stderr, refused.stderr
    assert stack.container(docker_client, "idle").status == "exited"
    other.devbox("down", env=env)

    # `up idle` brings it back with its files, on its own GPU again, and its restart policy
    back = stack.devbox("up", "idle", env=env, timeout=600)
    assert "bringing back the idle-stopped host" in back.stdout and "on its GPU 0 again" in back.stdout, back.stdout
    again = stack.container(docker_client, "idle")
    assert again.id == idle.id and again.status == "running"
    assert again.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert stack.ssh("idle", "cat ~/notes.txt").strip() == "mine"
    assert again.exec_run(["cat", "/opt/outside.txt"]).output.decode().strip() == "layer"
    after = login_notice(stack, "idle")  # the first login after `up` says when and why it stopped
    assert "this host was stopped at" in after and "will be stopped" not in after, after

    stack.devbox("down", "--yes", env=env)
    assert not docker_client.containers.list(all=True, filters={"label": f"devbox.watcher={stack.name}"})


def test_devbox_keep_needs_a_duration_or_clear(make_stack):
    stack = make_stack(1)
    refused = stack.devbox("keep", "master", check=False)
    assert refused.returncode == 2 and "--for 12h" in refused.stderr
    assert "held until" in stack.devbox("keep", "master", "--for", "2h").stdout
    assert "no longer held" in stack.devbox("keep", "master", "--clear").stdout
    bad = stack.devbox("keep", "master", "--for", "soon", check=False)
    assert bad.returncode == 2 and "not a duration" in bad.stderr
    assert Path(stack.state / "idle" / "keep.json").exists()


OWN_ROOT = Path("/run/devbox-e2e-idle")
OWN_DATA = Path("/var/lib/devbox-e2e-idle")
OWN_BRIDGE = ("dbx-idle0", "172.31.214.1/24")


class OwnEngine:
    """A dockerd of this test's own (exclusive: run under flock /tmp/devbox-exclusive.lock), to
    restart at will: the machine's shared engine is never restarted. Its own data and exec roots,
    its own bridge, no iptables rules (as the engine_without_gpu fixture, tests/e2e/conftest.py)."""

    def __init__(self) -> None:
        import shutil

        from .conftest import _dockerd_path, _ip

        self.host = f"unix://{OWN_ROOT / 'docker.sock'}"
        self.process = None
        self._ip = _ip
        OWN_ROOT.mkdir(parents=True, exist_ok=True)
        self._stop_left_over()
        bridge, address = OWN_BRIDGE
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", address, "dev", bridge)
        _ip("link", "set", bridge, "up")
        self.path = _dockerd_path(OWN_ROOT / "bin")
        # and ps: the engine's `top` (the watcher reads a host's processes with it) runs it
        (OWN_ROOT / "bin" / "ps").symlink_to(Path(shutil.which("ps") or "/bin/ps").resolve())

    @staticmethod
    def _stop_left_over() -> None:
        """The dockerd an interrupted earlier run of this test left (its own pid file only)."""
        import signal

        pidfile = OWN_ROOT / "docker.pid"
        try:
            pid = int(pidfile.read_text().strip())
            if str(OWN_DATA).encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return  # a stale pid file: that pid is someone else's now
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.5)

    def start(self):
        import shutil
        import subprocess

        import docker

        with open(OWN_ROOT / "dockerd.log", "ab") as log:
            self.process = subprocess.Popen(  # noqa: S603
                [shutil.which("dockerd") or "dockerd", "-H", self.host, "--data-root", str(OWN_DATA),
                 "--exec-root", str(OWN_ROOT / "exec"), "--pidfile", str(OWN_ROOT / "docker.pid"),
                 "--bridge", OWN_BRIDGE[0], "--iptables=false", "--ip-masq=false"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, env={"PATH": self.path, "LANG": "C.UTF-8"},
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                client = docker.DockerClient(base_url=self.host, timeout=120)
                client.ping()
                return client
            except docker.errors.DockerException:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise AssertionError(f"own dockerd did not start (see {OWN_ROOT / 'dockerd.log'})") from None
                time.sleep(0.5)

    def stop(self) -> None:
        import subprocess

        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # as `systemctl restart docker` does: SIGTERM, containers stopped
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        self._ip("link", "delete", OWN_BRIDGE[0])


@pytest.fixture
def own_engine():
    import atexit

    engine = OwnEngine()
    atexit.register(engine.close)  # even if pytest ends without its teardown
    client = engine.start()
    try:
        yield engine, client
    finally:
        try:
            client = engine.start() if engine.process is None or engine.process.poll() is not None else client
            for container in client.containers.list(all=True):
                container.remove(force=True)
            for volume in client.volumes.list():
                volume.remove(force=True)
            client.close()
        finally:
            engine.close()


def test_a_reclaimed_host_stays_stopped_when_its_engine_restarts(make_stack, docker_client, base_image, own_engine):
    from devbox.watch_service import _context

    from .conftest import copy_image

    engine, client = own_engine
    stack = make_stack(["idle", "steady"])
    # the host image and the watcher's, built on the main engine and copied over (no network there)
    stack.spec["hosts"]["idle"]["idle"] = {"after": "1m", "warn": "30s"}
    stack.write_spec()
    stack.devbox("up", env={"DEVBOX_WATCH_INTERVAL": "3600"}, timeout=900)
    host_image = stack.container(docker_client, "idle").image.tags[0]
    stack.devbox("down", "--yes")
    for tag in (host_image, f"devbox-watcher:{_context(base_image)[1]}"):
        copy_image(docker_client, engine.host, tag)

    env = {"DOCKER_HOST": engine.host, "DEVBOX_WATCH_INTERVAL": INTERVAL}
    stack.devbox("up", env=env, timeout=600)
    stack.ssh("idle", "echo mine > ~/notes.txt")

    def container(host: str):
        return stack.container(client, host)

    wait_for(lambda: container("idle").status == "exited", 180, "idle host stopped on the own engine")
    assert container("idle").attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert container("steady").status == "running"

    engine.stop()  # the engine restarts: every container stops with it ...
    client = engine.start()
    watcher = f"{stack.name}-devbox-watcher"
    # ... and those with a restart policy come back: the host without a policy and the watcher
    wait_for(lambda: container("steady").status == "running", 90, "steady host back after the engine restart")
    wait_for(lambda: client.containers.get(watcher).status == "running", 90, "watcher back after the engine restart")
    before = sample_lines(stack)
    wait_for(lambda: sample_lines(stack) >= before + 6, 90, "the watcher sampling again (3 rounds)")
    stopped = container("idle")
    assert stopped.status == "exited", "the reclaimed host came back by itself after the engine restart"
    assert stopped.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    status = {e["host"]: e for e in json.loads(stack.devbox("status", "--json", env=env).stdout)}
    assert status["idle"]["idle"].startswith("stopped"), status["idle"]

    stack.devbox("up", "idle", env=env, timeout=300)
    assert stack.ssh("idle", "cat ~/notes.txt").strip() == "mine"
    stack.devbox("down", "--yes", env=env)


@pytest.mark.usefixtures("hook_double")  # the double's GPUs (see tests/e2e/conftest.py)
def test_a_reclaimed_host_whose_gpu_was_taken_comes_back_on_a_free_one(make_stack, docker_client, tmp_path):
    machine = own_gpus(TWO_GPUS)
    env = {**gpu_machine(tmp_path, machine), "DEVBOX_WATCH_INTERVAL": INTERVAL,
           "DEVBOX_WATCH_NVIDIA_SMI": str(DOUBLES / "nvidia-smi")}  # fmt: skip
    stack = make_stack(["solo"], defaults={"idle": {"after": "1m"}, "gpus": 1})
    stack.devbox("up", env=env, timeout=900)
    stack.ssh("solo", "echo mine > ~/notes.txt")
    first = stack.container(docker_client, "solo")
    assert first.attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == [machine["gpus"][0]["uuid"]]
    wait_for(lambda: stack.container(docker_client, "solo").status == "exited", 180, "solo stopped")

    other = make_stack(1, defaults={"gpus": 1})  # takes the GPU solo left: the machine's first
    other.devbox("up", env=env, timeout=900)
    taken = other.container(docker_client, "master").attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"]
    assert taken == [machine["gpus"][0]["uuid"]]

    back = stack.devbox("up", "solo", env=env, timeout=600)
    assert "its GPU 0 is taken now: on GPU 1 (free)" in back.stdout, back.stdout
    again = stack.container(docker_client, "solo")
    assert again.status == "running"
    assert again.attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == [machine["gpus"][1]["uuid"]]
    assert stack.ssh("solo", "cat ~/notes.txt").strip() == "mine"  # a new container; its home stayed
    other.devbox("down", env=env)
    stack.devbox("down", "--yes", env=env)
