"""New passwords reach running hosts in place: which hosts `up` asks, what it sends, what it records.

The engine is the fake Docker client: a host's container answers ``getent shadow`` from its own
shadow entries. The hashes fed to ``chpasswd -e`` on standard input go through
devbox.docker_api.exec_with_input, replaced here by one that writes them into those entries.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest

from devbox import passwords  # where exec_with_input is looked up
from devbox.engines import open_project
from devbox.errors import EngineError
from devbox.layout import passwords_path
from devbox.passwords import renew_passwords, rotate_password
from devbox.state import AppliedPasswords, Credentials

from .fake_docker import FakeDockerClient, getent_shadow, serve
from .helpers import make_spec


@pytest.fixture
def client(monkeypatch):
    return serve(monkeypatch, FakeDockerClient())


@pytest.fixture
def project(tmp_path, client):
    spec = make_spec(tmp_path, hosts={"master": {"ssh_port": 4432}})
    project = open_project(spec, tmp_path / ".devbox", say=lambda _: None, environ={})
    project.render()
    return project


SHADOWS: dict[str, dict[str, str]] = {}  # each container's shadow entries, by container id


@pytest.fixture
def chpasswd(monkeypatch, client):
    """Replaces the exec with input: applies "user:hash" lines to the container's shadow entries."""
    calls: list[tuple[list[str], bytes]] = []

    def fake(docker_client, container_id, command, data):
        assert docker_client is client
        calls.append((command, data))
        for line in data.decode().splitlines():
            user, hashed = line.split(":", 1)
            SHADOWS[container_id][user] = hashed
        return 0, ""

    monkeypatch.setattr(passwords, "exec_with_input", fake)
    SHADOWS.clear()
    return calls


def host_container(client, project, started: float, shadow: dict[str, str] | None = None):
    """The host's running container, started at ``started`` (epoch seconds) with ``shadow``
    (default: the accounts' current hashes)."""
    hashes = dict(Credentials.load(project.folder).hashes(project.spec, project.spec.hosts[0]))
    entries = dict(shadow if shadow is not None else hashes)
    moment = datetime.fromtimestamp(started, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
    for old in client.containers.list(all=True):
        old.remove(force=True)
    container = client.containers.add("lab-master-1", labels={"devbox.project": "lab", "devbox.host": "master"},
                                      started_at=moment, on_exec=getent_shadow(entries))  # fmt: skip
    SHADOWS[container.id] = entries
    return container


def asked(client) -> list[list[str]]:
    return [call["cmd"] for call in client.called("container.exec_run")]


def renew(project, container) -> list[str]:
    digests = project.render().password_digests
    return renew_passwords(project, list(project.spec.hosts), {"master": container}, digests)


def file_written(project) -> float:
    return os.stat(project.folder / passwords_path(project.spec.hosts[0].name)).st_mtime


def test_a_host_started_after_its_passwords_were_written_is_not_asked(client, project, chpasswd):
    container = host_container(client, project, started=file_written(project) + 60)
    assert renew(project, container) == [] and asked(client) == [] and chpasswd == []
    assert AppliedPasswords(project.folder).seen["master"].startswith(f"{container.id} ")


def test_new_passwords_go_to_chpasswd_on_stdin_once(client, project, chpasswd):
    path = project.folder / passwords_path(project.spec.hosts[0].name)
    os.utime(path, (file_written(project) - 120,) * 2)  # written long ago, started a minute ago
    container = host_container(client, project, started=file_written(project) + 60)
    old = dict(SHADOWS[container.id])
    credentials = Credentials.load(project.folder)
    credentials.rotate("master", "developer")
    credentials.save()
    new = credentials.data["master"]["developer"]["hash"]
    assert renew(project, container) == ["master/developer"]
    assert chpasswd == [(["chpasswd", "-e"], f"developer:{new}\n".encode())]  # the hash never in argv
    assert SHADOWS[container.id]["developer"] == new != old["developer"]
    # the record vouches for it now: the next up asks nothing
    client.calls.clear()
    assert renew(project, container) == [] and asked(client) == [] and len(chpasswd) == 1


def test_a_start_within_the_clock_slack_is_asked_and_left_alone_when_it_agrees(client, project, chpasswd):
    container = host_container(client, project, started=file_written(project) + 0.2)
    assert renew(project, container) == []
    assert asked(client) == [["getent", "shadow", "developer"]] and chpasswd == []


def test_a_new_container_is_asked_again_even_with_the_same_passwords(client, project, chpasswd):
    container = host_container(client, project, started=file_written(project) + 60)
    renew(project, container)
    recreated = host_container(client, project, started=file_written(project) - 60, shadow={"developer": "$6$stale"})
    assert recreated.id != container.id
    assert renew(project, recreated) == ["master/developer"]


def test_a_failed_chpasswd_says_which_accounts_and_never_the_hash(client, project, monkeypatch):
    monkeypatch.setattr(passwords, "exec_with_input", lambda *args: (1, "chpasswd: cannot lock /etc/shadow"))
    container = host_container(client, project, started=file_written(project) - 60, shadow={"developer": "$6$stale"})
    with pytest.raises(EngineError) as info:
        renew(project, container)
    assert str(info.value) == "could not set the passwords of developer in master: chpasswd: cannot lock /etc/shadow"
    assert "master" not in AppliedPasswords(project.folder).seen


def test_passwd_applies_to_the_running_host_and_records_it(client, project, chpasswd):
    container = host_container(client, project, started=file_written(project) + 60)
    assert rotate_password(project, "master", "developer") is True
    assert len(chpasswd) == 1 and chpasswd[0][0] == ["chpasswd", "-e"]
    client.calls.clear()
    assert renew(project, container) == [] and asked(client) == []


def test_passwd_on_a_stopped_host_changes_the_file_only(client, project, chpasswd):
    container = host_container(client, project, started=file_written(project) + 60)
    container.attrs["State"]["Status"] = "exited"
    before = Credentials.load(project.folder).data["master"]["developer"]["hash"]
    assert rotate_password(project, "master", "developer") is False
    assert chpasswd == [] and Credentials.load(project.folder).data["master"]["developer"]["hash"] != before
