"""Issue 14 on the real engine: what the spec says reaches the host as written, from a project
folder with a space, listening on IPv6 (::), logged in to with a key by the system ssh."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Stack, new_project_name

pytestmark = pytest.mark.e2e

# Written as a user would, unquoted: YAML 1.1 made these 3.1, 18, 90, 31, true and a variable True.
ENVIRONMENT = "{VER: 3.10, UMASK: 0022, T: 1:30, H: 0x1F, X: yes, YES: on, E: 1e3}"
EXPECTED = {"VER": "3.10", "UMASK": "0022", "T": "1:30", "H": "0x1F", "X": "yes", "YES": "on", "E": "1e3"}


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """An ssh-agent holding a key made for this test: (its SSH_AUTH_SOCK, the public key)."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    sock = tmp_path / "agent.sock"
    process = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if sock.exists():
                break
            subprocess.run(["sleep", "0.1"], check=True)
        subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(sock)}, check=True,
                       timeout=30, capture_output=True)  # fmt: skip
        yield str(sock), (tmp_path / "id_ed25519.pub").read_text().strip()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def test_values_reach_the_host_as_written_from_a_folder_with_a_space_over_ipv6(
    tmp_path, base_image, free_port, docker_client, agent
):
    sock, public_key = agent
    name = new_project_name()
    directory = tmp_path / "my project"
    directory.mkdir()
    port = free_port()
    stack = Stack(directory, name, {"hosts": {"master": {"ssh_port": port}}})
    (directory / "devbox.yaml").write_text(f"""
project: {name}
image: {{base: "{base_image}", packages: [iputils-ping]}}
defaults: &limits
  limits: {{cpus: 0.5, memory: 256m}}
hosts:
  master:
    <<: *limits
    ssh_port: {port}
    bind_address: "::"
    password_auth: false
    authorized_keys: ["{public_key}"]
    environment: {ENVIRONMENT}
""")
    try:
        stack.devbox("up")
        env = {"SSH_AUTH_SOCK": sock, "SSH_ASKPASS_REQUIRE": "never"}
        over_ssh = stack.devbox("ssh", "master", "--", "env", env=env, timeout=60).stdout
        over_exec = stack.devbox("exec", "master", "--", "env").stdout
        for output in (over_ssh, over_exec):
            found = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
            assert {key: found.get(key) for key in EXPECTED} == EXPECTED
            assert "True" not in found
        check = stack.devbox("check", check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "hostname master" in check.stdout
    finally:
        stack.devbox("down", "--volumes", "--yes", check=False, timeout=300)
