"""Security on a real engine: hashed passwords only, awkward passwords, keys, root login, inert values."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from devbox.probe import login

pytestmark = pytest.mark.e2e

AWKWARD = "p:a$s 'w\"o\\rd ünï €$HOME `id`"
NASTY_VALUE = "a'b\"c $HOME ${PATH} `id` $(id) ; | & \\ ü # {x} [y] *"


def test_awkward_password_from_the_environment_logs_in_and_never_leaks(make_stack, docker_client, tmp_path):
    stack = make_stack(1, defaults={"password_env": {"developer": "DEVBOX_E2E_PW"}})
    stack.devbox("up", env={"DEVBOX_E2E_PW": AWKWARD})
    assert login(stack.target("master", password=AWKWARD), command="true").ok
    assert not login(stack.target("master", password=AWKWARD + "x")).ok

    # the real system ssh client through `devbox ssh`, password typed by SSH_ASKPASS
    askpass = tmp_path / "askpass"
    askpass.write_text("#!/bin/sh\nprintf '%s\\n' \"$DEVBOX_E2E_PW\"\n")
    askpass.chmod(0o700)
    env = {"DEVBOX_E2E_PW": AWKWARD, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
    result = stack.devbox("ssh", "master", "--", "echo", "via-openssh", env=env, timeout=60)
    assert result.stdout.strip() == "via-openssh", result.stderr

    # nowhere in plaintext: not in the image, its history, the container's config, the compose file
    container = stack.container(docker_client, "master")
    image = docker_client.images.get(container.image.id)
    history = json.dumps(image.history())
    places = [history, json.dumps(image.attrs), json.dumps(container.attrs),
              (stack.state / "docker-compose.yml").read_text(), (stack.state / "credentials.yaml").read_text()]  # fmt: skip
    assert not any(AWKWARD in place for place in places)
    assert (stack.state / "secrets" / "master" / "passwords").read_text().startswith("developer:$6$")
    assert stat.S_IMODE(os.stat(stack.state / "secrets" / "master" / "passwords").st_mode) == 0o600
    # a new value of the variable reaches the running host at the next up, even when `render`
    # wrote the new hash first; the container stays
    stack.devbox("render", env={"DEVBOX_E2E_PW": "second-password"})
    since = int(time.time()) - 1
    up = stack.devbox("up", env={"DEVBOX_E2E_PW": "second-password"})
    assert "new passwords applied in the running hosts: master/developer" in up.stdout, up.stdout
    # the new hash reached the host on chpasswd's input, not in an argument list the engine records
    new_hash = (stack.state / "secrets" / "master" / "passwords").read_text().split(":", 1)[1].strip()
    events = docker_client.events(since=since, until=int(time.time()) + 1, decode=True)
    assert not any(new_hash in json.dumps(event) for event in events)
    assert "recreating" not in up.stdout and stack.container(docker_client, "master").id == container.id
    assert login(stack.target("master", password="second-password")).ok
    assert not login(stack.target("master", password=AWKWARD)).ok
    # looking at and removing the stack needs no password variable
    assert "PASS  master     running" in stack.devbox("check", check=False).stdout
    stack.devbox("down")
    assert not stack.container_or_none(docker_client, "master")


def test_generated_password_is_strong_and_root_login_is_off(make_stack, docker_client):
    stack = make_stack(1)
    stack.devbox("up")
    password = stack.password("master")
    assert len(password) >= 20
    container = stack.container(docker_client, "master")
    effective = container.exec_run(["/usr/sbin/sshd", "-T"]).output.decode()
    assert "permitrootlogin no" in effective and "passwordauthentication yes" in effective, effective
    refused = login(stack.target("master", user="root", password=password))
    assert not refused.ok and "refused" in refused.detail, refused
    # sudo works for the user with the same password
    became = stack.ssh("master", f"echo '{password}' | sudo -S -p '' id -u 2>&1")
    assert became.strip().splitlines()[-1] == "0", became


def test_root_login_is_an_opt_in(make_stack):
    stack = make_stack(1, defaults={"root_login": True})
    stack.devbox("up")
    assert stack.ssh("master", "id -u", user="root").strip() == "0"


def test_public_key_login_and_password_auth_off(make_stack, tmp_path):
    import paramiko
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = tmp_path / "id_ed25519"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))  # fmt: skip
    private.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    (tmp_path / "id_ed25519.pub").write_bytes(public + b" e2e@test\n")
    stack = make_stack(1, defaults={"password_auth": False, "authorized_keys": [str(tmp_path / "id_ed25519.pub")]})
    up = stack.devbox("up")
    assert "ok" in up.stdout

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.get_host_keys().add(f"[127.0.0.1]:{stack.port('master')}", "ssh-ed25519",
                               paramiko.Ed25519Key(data=__import__("base64").b64decode(stack.host_key("master").split()[1])))  # fmt: skip
    client.connect("127.0.0.1", stack.port("master"), "developer", key_filename=str(private),
                   allow_agent=False, look_for_keys=False, timeout=10)  # fmt: skip
    _, out, _ = client.exec_command("stat -c '%U %a' ~/.ssh ~/.ssh/authorized_keys")
    assert out.read().decode().split("\n")[:2] == ["developer 700", "developer 600"]
    client.close()
    refused = login(stack.target("master"))
    assert not refused.ok


def test_hostile_values_arrive_unchanged(make_stack, docker_client):
    stack = make_stack(1, defaults={"environment": {"NASTY": NASTY_VALUE, "EMPTY": ""}})
    stack.devbox("up")
    container = stack.container(docker_client, "master")
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert env["NASTY"] == NASTY_VALUE and env["EMPTY"] == ""
    assert container.exec_run(["printenv", "NASTY"]).output.decode().rstrip("\n") == NASTY_VALUE
    # and SSH sessions get it too
    assert stack.ssh("master", "printenv NASTY").rstrip("\n") == NASTY_VALUE


def test_docker_socket_is_opt_in_with_a_warning(make_stack, docker_client):
    stack = make_stack(1)
    stack.spec["hosts"]["master"]["docker_socket"] = True
    stack.write_spec()
    up = stack.devbox("up")
    assert "docker_socket: the host's users get the Docker socket, which is root" in up.stderr
    mounts = [m["Destination"] for m in stack.container(docker_client, "master").attrs["Mounts"]]
    assert "/var/run/docker.sock" in mounts
