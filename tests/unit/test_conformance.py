"""The same `up`, `down` and `status` scenarios against both engines on the fake client: add,
change and drop a host, the consent question, preflight refusals, image pruning, down (with its
volumes), status. They must behave alike; where an engine differs by design the difference is
declared here (DIFFERENCES), nowhere else.

Compose is replaced by the recorder test_compose_engine uses (it does to the fake engine what
`docker compose` would); a swarm runs on the fake's services. SSH logins always succeed.
"""

from __future__ import annotations

from typing import Any

import pytest

from devbox import docker_api, probe
from devbox.engines import compose as compose_engine
from devbox.engines import open_project
from devbox.errors import PreflightError
from devbox.operations import down, status, up
from devbox.project import Project

from .fake_docker import SERVICE_NAME_LABEL, FakeDockerClient, serve
from .helpers import make_spec
from .test_compose_engine import COMPOSE, services, start

HOSTS = {"master": {"ssh_port": 4432, "bind_address": "0.0.0.0", "volumes": ["data:/data"]},
         "worker": {"ssh_port": 4433, "bind_address": "0.0.0.0"}}  # fmt: skip

# What an engine does differently by design, by what it is about.
DIFFERENCES = {
    # a swarm names the services it replaces; compose the hosts
    "recreating": {"compose": "recreating worker from", "swarm": "recreating lab_worker from"},
}


@pytest.fixture(params=["compose", "swarm"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, kind: str) -> FakeDockerClient:
    monkeypatch.setenv("DOCKER_HOST", "tcp://fake-engine:2375")  # no local port is bound
    client = serve(monkeypatch, FakeDockerClient())
    if kind == "swarm":
        client.swarm_manager("node-1")
        client.nodes.add("node-1", "10.0.0.1")
    return client


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch, client: FakeDockerClient) -> list[tuple[str, ...]]:
    """The compose commands run; `build` leaves the image (labelled as devbox's builds are)."""
    commands: list[tuple[str, ...]] = []

    def run_compose(found: Any, compose_file: str | None, project: str, *args: str, quiet: bool = False) -> None:
        commands.append(args)
        if args[0] == "build":
            service = services(compose_file)[args[1]]
            client.images.add(service["image"], labels=dict(service["build"]["labels"]))
        elif args[0] == "up":
            for host in (a for a in args[1:] if not a.startswith("--")):
                start(client, compose_file, host)
        elif args[0] == "down":
            for container in client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"}):
                container.remove(force=True)
            if "--volumes" in args:
                for volume in client.volumes.list(filters={"name": f"{project}_"}):
                    volume.remove(force=True)

    for module in (compose_engine, docker_api):
        monkeypatch.setattr(module, "find_compose", lambda: COMPOSE)
        monkeypatch.setattr(module, "run_compose", run_compose)
    monkeypatch.setattr(probe, "login", lambda target, command=None, timeout=5.0:
                        probe.Result(target.name, True, "logged in", 0.01))  # fmt: skip
    return commands


@pytest.fixture
def make(tmp_path: Any, said: list[str], kind: str, client: FakeDockerClient, ran: Any) -> Any:
    """make(hosts, yes=..., **spec changes) -> a Project of ``kind`` on the fake engine."""

    def make_project(hosts: dict[str, Any] | None = None, yes: bool | None = True, **changes: Any) -> Project:
        spec = make_spec(tmp_path, engine=kind, hosts=hosts or HOSTS, **changes)
        confirm = None if yes is None else (lambda question: yes)
        return open_project(spec, tmp_path / ".devbox", say=said.append, environ={}, confirm=confirm)

    return make_project


def host_containers(client: FakeDockerClient) -> dict[str, Any]:
    return {c.labels["devbox.host"]: c for c in client.containers.list(all=True) if "devbox.host" in c.labels}


def with_changes(container: Any) -> None:
    """Files written outside the volumes (what `up` asks about before replacing a host)."""
    container.attrs["Diff"] = [{"Path": "/opt/notes.txt", "Kind": 1}]


# --------------------------------------------------------------------------- add, change, drop


def test_up_starts_every_host_and_a_second_up_changes_nothing(make, client, said):
    project = make()
    up(project, wait_seconds=5)
    assert sorted(host_containers(client)) == ["master", "worker"]
    said.clear()
    up(project, wait_seconds=5)
    assert "nothing changed: 2 hosts already up to date" in said


def test_a_new_host_is_added_and_the_others_are_left_alone(make, client):
    up(make(hosts={"master": HOSTS["master"]}), wait_seconds=5)
    before = host_containers(client)["master"].id
    up(make(), wait_seconds=5)
    found = host_containers(client)
    assert sorted(found) == ["master", "worker"] and found["master"].id == before


def test_a_changed_host_alone_is_replaced(make, client, said, kind):
    up(make(), wait_seconds=5)
    before = {name: c.id for name, c in host_containers(client).items()}
    said.clear()
    up(make(hosts={**HOSTS, "worker": {**HOSTS["worker"], "hostname": "w1"}}), wait_seconds=5)
    after = {name: c.id for name, c in host_containers(client).items()}
    assert after["master"] == before["master"] and after["worker"] != before["worker"]
    assert any(line.startswith(DIFFERENCES["recreating"][kind]) for line in said)


def test_a_host_dropped_from_the_spec_is_removed(make, client, said):
    up(make(), wait_seconds=5)
    said.clear()
    project = make(hosts={"master": HOSTS["master"]})
    up(project, wait_seconds=5)
    assert sorted(host_containers(client)) == ["master"]
    assert f"removing worker: no longer in {project.spec.source} (named volumes stay)" in said
    if client.services.items:
        assert [s.name for s in client.services.list()] == ["lab_master"]


def test_up_of_named_hosts_leaves_the_dropped_ones(make, client):
    up(make(), wait_seconds=5)
    up(make(hosts={"master": HOSTS["master"]}), only=["master"], wait_seconds=5)
    assert sorted(host_containers(client)) == ["master", "worker"]


# --------------------------------------------------------------------------- consent


def test_replacing_a_host_with_files_outside_its_volumes_asks_first(make, client, said):
    up(make(), wait_seconds=5)
    with_changes(host_containers(client)["worker"])
    changed = {**HOSTS, "worker": {**HOSTS["worker"], "hostname": "w1"}}
    before = host_containers(client)["worker"].id
    for answer in (False, None):  # no, and nobody to ask
        with pytest.raises(PreflightError, match=r"^worker: files outside the volumes would be lost by recreating"):
            up(make(hosts=changed, yes=answer), wait_seconds=5)
        assert host_containers(client)["worker"].id == before
    assert any("/opt/notes.txt" in line for line in said)
    up(make(hosts=changed, yes=True), wait_seconds=5)
    assert host_containers(client)["worker"].id != before


def test_dropping_a_host_with_files_outside_its_volumes_asks_first(make, client):
    up(make(), wait_seconds=5)
    with_changes(host_containers(client)["worker"])
    with pytest.raises(PreflightError, match=r"^worker: files outside the volumes would be lost"):
        up(make(hosts={"master": HOSTS["master"]}, yes=False), wait_seconds=5)
    assert sorted(host_containers(client)) == ["master", "worker"]


# --------------------------------------------------------------------------- preflight refusals


def test_what_the_engine_cannot_give_is_refused_before_anything_is_made(make, client, ran):
    project = make(hosts={**HOSTS, "worker": {**HOSTS["worker"], "limits": {"cpus": 64}}})
    with pytest.raises(PreflightError, match=r"hosts.worker.limits.cpus: 64 is more than the 8 CPUs"):
        up(project, wait_seconds=5)
    assert host_containers(client) == {} and ran == [] and client.called("services.create") == []


def test_a_port_another_container_holds_is_refused(make, client, ran):
    client.containers.add("web", labels={"devbox.project": "other"},
                          host_config={"PortBindings": {"22/tcp": [{"HostIp": "", "HostPort": "4433"}]}})  # fmt: skip
    with pytest.raises(PreflightError, match=r"hosts.worker.ssh_port: port 4433 is already published by container web"):
        up(make(), wait_seconds=5)
    assert ran == [] and client.called("services.create") == []


# --------------------------------------------------------------------------- images


def test_older_images_are_pruned_keeping_the_current_and_the_one_before(make, client, said):
    tags = []
    for n in range(3):
        project = make(image={"base": "debian:bookworm", "extra_lines": [f"RUN echo {n}"]})
        up(project, wait_seconds=5)
        tags.append(project.render().image_tag)
    remaining = {tag for image in client.images.list() for tag in image.tags}
    assert tags[0] not in remaining and {tags[1], tags[2]} <= remaining
    assert any(line.startswith(f"removed older images: {tags[0]}") for line in said)


# --------------------------------------------------------------------------- down, status


def test_down_removes_the_hosts_and_keeps_volumes_unless_asked(make, client):
    project = make()
    up(project, wait_seconds=5)
    client.volumes.add("lab_data")
    down(project, volumes=False)
    assert host_containers(client) == {} and "lab_data" in {v.name for v in client.volumes.list()}
    up(project, wait_seconds=5)
    down(project, volumes=True)
    assert not {v.name for v in client.volumes.list()} & {"lab_data", "lab_master-home", "lab_worker-home"}


def test_down_asks_before_discarding_files_outside_the_volumes(make, client):
    up(make(), wait_seconds=5)
    with_changes(host_containers(client)["master"])
    with pytest.raises(PreflightError, match=r"^master: files outside the volumes would be lost by down"):
        down(make(yes=False), volumes=False)
    assert sorted(host_containers(client)) == ["master", "worker"]


def test_status_shows_each_host_its_state_and_ssh_line(make, client, kind):
    project = make()
    assert [(e["host"], e["state"]) for e in status(project)] == [("master", "missing"), ("worker", "missing")]
    up(project, wait_seconds=5)
    entries = {e["host"]: e for e in status(project)}
    assert {name: e["state"] for name, e in entries.items()} == {"master": "running", "worker": "running"}
    address = {"compose": "127.0.0.1", "swarm": "10.0.0.1"}[kind]  # a swarm: the node's address
    assert entries["worker"]["ssh"] == f"ssh -p 4433 developer@{address}"
    if kind == "swarm":
        assert (entries["worker"]["node"], entries["worker"]["task"]) == ("node-1", "running")
    assert all(SERVICE_NAME_LABEL not in e for e in entries.values())
