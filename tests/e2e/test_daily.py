"""The day-to-day commands on a real engine: exec, logs, passwd, ssh-config, down --volumes, the lock."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from devbox.probe import login

from .conftest import DEVBOX, devbox_env

pytestmark = pytest.mark.e2e


@pytest.fixture
def running(make_stack):
    stack = make_stack(1, defaults={"volumes": ["data:/data"]})
    stack.devbox("up")
    return stack


def test_exec_streams_output_and_returns_the_exit_code(running):
    result = running.devbox("exec", "master", "--", "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
    assert result.returncode == 7
    assert "out" in result.stdout and "err" in result.stdout
    assert running.devbox("exec", "-u", "developer", "master", "--", "id", "-un").stdout.strip() == "developer"


def test_logs_of_one_host_and_of_all(running):
    running.devbox("exec", "--root", "master", "--", "sh", "-c", "echo marker-line > /proc/1/fd/1")
    assert "marker-line" in running.devbox("logs", "master").stdout
    assert "marker-line" in running.devbox("logs").stdout
    follow = subprocess.Popen([*DEVBOX, "logs", "-f", "master"], cwd=running.directory, env=devbox_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        time.sleep(1.5)
        running.devbox("exec", "--root", "master", "--", "sh", "-c", "echo later-line > /proc/1/fd/1")
        time.sleep(1.5)
    finally:
        follow.terminate()
        out, _ = follow.communicate(timeout=10)
    assert "later-line" in out


def test_passwd_rotates_a_live_host_and_keeps_its_container(running, docker_client):
    old = running.password("master")
    container = running.container(docker_client, "master")
    container.exec_run(["touch", "/home/developer/outside-volumes"])
    result = running.devbox("passwd", "master")
    assert "credentials.yaml" in result.stdout and old not in result.stdout
    new = running.password("master")
    assert new != old
    assert login(running.target("master", password=new)).ok
    assert not login(running.target("master", password=old)).ok
    # the next up has nothing to do: same container, the user's files are still there
    up = running.devbox("up")
    assert "nothing changed" in up.stdout and "recreating" not in up.stdout
    assert running.container(docker_client, "master").id == container.id
    assert container.exec_run(["test", "-e", "/home/developer/outside-volumes"]).exit_code == 0
    # a restart reads the new passwords file (the bind mount follows the path, not the old file)
    container.restart()
    assert "nothing changed" in running.devbox("up").stdout
    assert login(running.target("master", password=new)).ok
    assert not login(running.target("master", password=old)).ok


def test_ssh_config_works_with_openssh_and_checks_host_keys(running, tmp_path):
    config = running.devbox("ssh-config").stdout
    assert f"Host {running.name}-master" in config and "StrictHostKeyChecking yes" in config
    config_file = tmp_path / "ssh_config"
    config_file.write_text(config)
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho '{running.password('master')}'\n")
    askpass.chmod(0o700)
    env = {"SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(["ssh", "-F", str(config_file), f"{running.name}-master", "hostname"], env=env,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "master"
    # a different key under the same alias is refused: checking is really on
    known = running.state / "known_hosts"
    known.write_text(known.read_text().replace("AAAA", "AAAB", 1))
    refused = subprocess.run(["ssh", "-F", str(config_file), f"{running.name}-master", "true"], env=env,
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert refused.returncode != 0


def test_ssh_config_write_puts_a_file_of_its_own(running, tmp_path):
    result = running.devbox("ssh-config", "--write", env={"HOME": str(tmp_path)})
    written = tmp_path / ".ssh" / "devbox" / f"{running.name}.conf"
    assert written.is_file() and "Include ~/.ssh/devbox/*.conf" in result.stdout


def test_down_keeps_volumes_unless_asked_and_confirmed(running, docker_client):
    volume = f"{running.name}_data"
    running.devbox("down")
    assert docker_client.volumes.get(volume)
    refused = running.devbox("down", "--volumes", check=False)  # no --yes, no terminal: refused (issue 29)
    assert refused.returncode == 2 and "--yes" in refused.stderr and docker_client.volumes.get(volume)
    running.devbox("down", "--volumes", "--yes")
    assert not docker_client.volumes.list(filters={"name": volume})


def test_a_second_up_waits_for_the_first(running):
    from devbox.state import project_lock

    holder = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with project_lock(running.state):
            holder.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    holder.wait(5)
    waiting = subprocess.Popen([*DEVBOX, "up"], cwd=running.directory, env=devbox_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(2)
    assert waiting.poll() is None, "up did not wait for the lock"
    release.set()
    thread.join()
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert "waiting for another devbox command" in out and "nothing changed" in out
