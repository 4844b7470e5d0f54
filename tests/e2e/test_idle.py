"""Idle hosts on the real engine: the watcher warns and stops an idle host, leaves busy ones
alone, survives kill -9, and `up HOST` brings a stopped host back with its files.

The nvidia-smi double (tests/doubles/nvidia-smi) is mounted into the watcher, with utilisation
set per GPU in its machine file; the sampling interval is shortened to a few seconds.
"""

from __future__ import annotations

import json
import os
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


def events(stack) -> list[dict]:
    path = stack.state / "idle" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_an_idle_host_is_warned_then_stopped_and_busy_hosts_are_not(make_stack, docker_client, tmp_path):
    machine = json.loads(json.dumps(TWO_GPUS))
    machine["gpus"][1]["utilization"] = 90  # the GPU the double shows busy: gpubusy's
    env = {**gpu_machine(tmp_path, machine), "DEVBOX_WATCH_INTERVAL": INTERVAL,
           "DEVBOX_WATCH_NVIDIA_SMI": str(DOUBLES / "nvidia-smi")}  # fmt: skip
    stack = make_stack(["idle", "gpubusy", "session", "cpu", "kept"], defaults={"idle": {"after": "1m"}})
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

    # kill -9 the watcher once: it comes back by itself (restart policy) and goes on
    os.kill(watcher.attrs["State"]["Pid"], 9)
    wait_for(lambda: docker_client.containers.get(watcher.id).attrs["RestartCount"] >= 1, 60, "watcher restarted")

    wait_for(lambda: any(e["event"] == "warned" and e["host"] == "idle" for e in events(stack)), 90, "idle warned")
    notice = idle.exec_run(["cat", "/etc/profile.d/zz-devbox-idle.sh"]).output.decode()
    assert "will be stopped at" in notice
    status = stack.devbox("status", env=env).stdout
    assert "IDLE" in status and "stops at" in status, status
    wait_for(lambda: stack.container(docker_client, "idle").status == "exited", 150, "idle host stopped")
    assert time.monotonic() - started < 180
    stopped = stack.container(docker_client, "idle")
    assert stopped.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"  # nothing brings it back by itself
    for busy in ("gpubusy", "session", "cpu", "kept"):
        assert stack.container(docker_client, busy).status == "running", busy
    reclaims = [e for e in events(stack) if e["event"] == "reclaimed"]
    assert [e["host"] for e in reclaims] == ["idle"]
    status = json.loads(stack.devbox("status", "--json", env=env).stdout)
    by_host = {e["host"]: e for e in status}
    assert by_host["idle"]["idle"].startswith("stopped"), by_host["idle"]
    assert by_host["kept"]["idle"].startswith("held until"), by_host["kept"]
    session.close()
    usage = {row["host"]: row for row in json.loads(stack.devbox("usage", "--json", env=env).stdout)}
    assert usage["idle"]["reclaims"] == 1 and usage["session"]["last_login"] is not None
    assert usage["idle"]["gpus"] == 1 and usage["idle"]["samples"] > 5

    # its GPU is free for another spec's host (the machine's other GPU is gpubusy's)
    idle_gpu = idle.attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"]
    other = make_stack(1, defaults={"gpus": 1})
    other.devbox("up", env=env, timeout=900)
    given = other.container(docker_client, "master")
    assert given.status == "running" and given.attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == idle_gpu
    other.devbox("down", env=env)

    # `up idle` brings it back with its files, and its restart policy
    back = stack.devbox("up", "idle", env=env, timeout=600)
    assert "bringing back the idle-stopped host" in back.stdout
    again = stack.container(docker_client, "idle")
    assert again.id == idle.id and again.status == "running"
    assert again.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert stack.ssh("idle", "cat ~/notes.txt").strip() == "mine"
    assert again.exec_run(["cat", "/opt/outside.txt"]).output.decode().strip() == "layer"

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
