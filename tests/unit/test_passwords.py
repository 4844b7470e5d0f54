"""New passwords reach running hosts in place: which hosts `up` asks, what it sends, what it records.

The container is a stand-in with the two things devbox uses: ``exec_run`` (``getent shadow``) and
the hashes fed to ``chpasswd -e`` on standard input (devbox.docker_api.exec_with_input, replaced here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest

from devbox import passwords
from devbox.errors import EngineError
from devbox.layout import passwords_path
from devbox.passwords import renew_passwords, rotate_password
from devbox.project import Project
from devbox.state import AppliedPasswords, Credentials

from .helpers import make_spec


@dataclass
class FakeContainer:
    """A running host: its shadow entries, when it started, and every command run in it."""

    id: str
    started: float
    shadow: dict[str, str]
    status: str = "running"
    labels: dict[str, str] = field(default_factory=dict)
    commands: list[list[str]] = field(default_factory=list)

    @property
    def attrs(self) -> dict:
        moment = datetime.fromtimestamp(self.started, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
        return {"State": {"StartedAt": moment + "123Z"}}

    def exec_run(self, command: list[str]) -> tuple[int, bytes]:
        self.commands.append(command)
        assert command[:2] == ["getent", "shadow"]
        lines = [f"{user}:{self.shadow[user]}:19000:0:99999:7:::\n" for user in command[2:] if user in self.shadow]
        return (0 if lines else 2), "".join(lines).encode()


RUNNING: dict[str, FakeContainer] = {}  # by container id, as exec_with_input finds them


@pytest.fixture
def project(tmp_path):
    spec = make_spec(tmp_path, hosts={"master": {"ssh_port": 4432}})
    project = Project(spec, tmp_path / ".devbox", say=lambda _: None, environ={})
    project.render()
    return project


@pytest.fixture
def chpasswd(monkeypatch):
    """Replaces the exec with input: applies "user:hash" lines to the fake container."""
    calls: list[tuple[list[str], bytes]] = []

    def fake(client, container_id, command, data):
        calls.append((command, data))
        container = RUNNING[container_id]
        for line in data.decode().splitlines():
            user, hashed = line.split(":", 1)
            container.shadow[user] = hashed
        return 0, ""

    monkeypatch.setattr(passwords, "exec_with_input", fake)
    RUNNING.clear()
    return calls


def host_container(project, started: float, shadow: dict[str, str] | None = None) -> FakeContainer:
    hashes = dict(Credentials.load(project.folder).hashes(project.spec, project.spec.hosts[0]))
    container = FakeContainer("c1", started, dict(shadow if shadow is not None else hashes))
    RUNNING[container.id] = container
    return container


def renew(project, container) -> list[str]:
    digests = project.render().password_digests
    return renew_passwords(project, list(project.spec.hosts), {"master": container}, digests)


def file_written(project) -> float:
    return os.stat(project.folder / passwords_path(project.spec.hosts[0].name)).st_mtime


def test_a_host_started_after_its_passwords_were_written_is_not_asked(project, chpasswd):
    container = host_container(project, started=file_written(project) + 60)
    assert renew(project, container) == [] and container.commands == [] and chpasswd == []
    assert AppliedPasswords(project.folder).seen["master"].startswith("c1 ")


def test_new_passwords_go_to_chpasswd_on_stdin_once(project, chpasswd):
    path = project.folder / passwords_path(project.spec.hosts[0].name)
    os.utime(path, (file_written(project) - 120,) * 2)  # written long ago, started a minute ago
    container = host_container(project, started=file_written(project) + 60)
    old = dict(container.shadow)
    credentials = Credentials.load(project.folder)
    credentials.rotate("master", "developer")
    credentials.save()
    new = credentials.data["master"]["developer"]["hash"]
    assert renew(project, container) == ["master/developer"]
    assert chpasswd == [(["chpasswd", "-e"], f"developer:{new}\n".encode())]  # the hash never in argv
    assert container.shadow["developer"] == new != old["developer"]
    # the record vouches for it now: the next up asks nothing
    container.commands.clear()
    assert renew(project, container) == [] and container.commands == [] and len(chpasswd) == 1


def test_a_start_within_the_clock_slack_is_asked_and_left_alone_when_it_agrees(project, chpasswd):
    container = host_container(project, started=file_written(project) + 0.2)
    assert renew(project, container) == []
    assert container.commands and chpasswd == []


def test_a_new_container_is_asked_again_even_with_the_same_passwords(project, chpasswd):
    container = host_container(project, started=file_written(project) + 60)
    renew(project, container)
    recreated = host_container(project, started=file_written(project) - 60, shadow={"developer": "$6$stale"})
    recreated.id = "c2"
    RUNNING["c2"] = recreated
    assert renew(project, recreated) == ["master/developer"]


def test_a_failed_chpasswd_says_which_accounts_and_never_the_hash(project, monkeypatch):
    monkeypatch.setattr(passwords, "exec_with_input", lambda *args: (1, "chpasswd: cannot lock /etc/shadow"))
    container = host_container(project, started=file_written(project) - 60, shadow={"developer": "$6$stale"})
    with pytest.raises(EngineError) as info:
        renew(project, container)
    assert str(info.value) == "could not set the passwords of developer in master: chpasswd: cannot lock /etc/shadow"
    assert "master" not in AppliedPasswords(project.folder).seen


def test_passwd_applies_to_the_running_host_and_records_it(project, chpasswd, monkeypatch):
    container = host_container(project, started=file_written(project) + 60)
    monkeypatch.setattr(Project, "containers", lambda self: {"master": container})
    assert rotate_password(project, "master", "developer") is True
    assert len(chpasswd) == 1 and chpasswd[0][0] == ["chpasswd", "-e"]
    container.commands.clear()
    assert renew(project, container) == [] and container.commands == []
