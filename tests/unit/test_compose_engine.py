"""The compose engine on a fake Docker client: which containers are a project's, what `status`
shows, what `up` converges (and removes), what `down` runs, which ports and GPUs preflight refuses.

Compose itself is replaced by a recorder that does to the fake engine what `docker compose` would
do (from the rendered compose file's labels), so a test reads the argument lists devbox runs.
SSH logins are replaced too (devbox.probe.login); the e2e tests make real ones.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import yaml

from devbox import docker_api, probe
from devbox.docker_api import Compose
from devbox.engines import compose as compose_engine  # where find_compose and run_compose are looked up
from devbox.engines.preflight import GPU_PROBE_IMAGE, gpu_runtime_available, port_problems, ulimit_problems
from devbox.errors import EngineError, PreflightError
from devbox.operations import down, status, up
from devbox.project import Project, recreating_note
from devbox.render import render_project

from .fake_docker import FakeDockerClient, getent_shadow, serve


@contextlib.contextmanager
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another program (this test) listens on while the block runs."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


COMPOSE = Compose(("docker", "compose"), "2.30.0")


def now() -> str:
    """A container's StartedAt as the engine writes it (after any file a test wrote)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


@pytest.fixture
def client(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://fake-engine:2375")  # a remote engine: no local port is bound
    return serve(monkeypatch, FakeDockerClient())


@pytest.fixture
def compose(monkeypatch, client) -> list[list[str]]:
    """The compose commands devbox runs, as argument lists; `build`, `up` and `down` act on the
    fake engine as compose would."""
    ran: list[list[str]] = []

    def run_compose(found: Compose, compose_file: str | None, project: str, *args: str, quiet: bool = False) -> None:
        ran.append(found.args(compose_file, project, *args))
        if args[0] == "build":
            client.images.add(services(compose_file)[args[1]]["image"])
        elif args[0] == "up":
            for host in (a for a in args[1:] if not a.startswith("--")):
                start(client, compose_file, host)
        elif args[0] == "down":
            for container in client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"}):
                container.remove(force=True)

    for module in (compose_engine, docker_api):  # the image build finds them in docker_api
        monkeypatch.setattr(module, "find_compose", lambda: COMPOSE)
        monkeypatch.setattr(module, "run_compose", run_compose)
    return ran


def compose_data(compose_file: str | None) -> dict[str, Any]:
    assert compose_file, "compose needs the file for this command"
    return yaml.safe_load(Path(compose_file).read_text(encoding="utf-8"))


def services(compose_file: str | None) -> dict[str, Any]:
    return compose_data(compose_file)["services"]


def start(client: FakeDockerClient, compose_file: str | None, host: str) -> Any:
    """(Re)create a host's container from the compose file, labelled as compose labels it; its
    accounts have the passwords of the file it mounts (the entrypoint applies them at start)."""
    data = compose_data(compose_file)
    service = data["services"][host]
    labels = {**service["labels"], "com.docker.compose.project": data["name"],
              "com.docker.compose.project.config_files": compose_file}  # fmt: skip
    source = next(s["source"] for s in service["secrets"] if s["target"] == "devbox_passwords")
    passwords = Path(str(compose_file)).parent / data["secrets"][source]["file"]
    shadow = dict(line.split(":", 1) for line in passwords.read_text().splitlines())
    for old in client.containers.list(all=True, filters={"label": f"devbox.host={host}"}):
        old.remove(force=True)
    return client.containers.add(f"{data['name']}-{host}-1", labels=labels, started_at=now(),
                                 on_exec=getent_shadow(shadow))  # fmt: skip


@pytest.fixture
def logins(monkeypatch, client) -> list[str]:
    """SSH logins that succeed where the host's container runs (elsewhere nothing listens on
    its port); the hosts logged in to, in order."""
    tried: list[str] = []

    def login(target: probe.Target, command: str | None = None, timeout: float = 5.0) -> probe.Result:
        if not client.containers.list(filters={"label": [f"devbox.host={target.name}"]}):
            return probe.Result(target.name, False, f"cannot connect to {target.address}:{target.port}", 0.01)
        tried.append(target.name)
        return probe.Result(target.name, True, "logged in", 0.01)

    monkeypatch.setattr(probe, "login", login)
    return tried


# --------------------------------------------------------------------------- the project's containers


def test_a_projects_containers_are_found_by_label_and_a_running_one_wins(client, project):
    labels = {"devbox.project": "lab", "devbox.host": "master"}
    client.containers.add("old", labels=labels, status="exited")
    running = client.containers.add("new", labels=labels)
    client.containers.add("theirs", labels={"devbox.project": "other", "devbox.host": "master"})
    assert project.containers() == {"master": running}


def test_containers_made_from_another_spec_are_refused_by_every_command(client, project, compose):
    project.render()
    client.containers.add("lab-master-1", labels={
        "devbox.project": "lab", "devbox.host": "master",
        "com.docker.compose.project.config_files": "/elsewhere/.devbox/docker-compose.yml"})  # fmt: skip
    for command in (project.containers, lambda: status(project), lambda: down(project, volumes=False)):
        with pytest.raises(PreflightError, match=r"^project 'lab' already runs from /elsewhere/.devbox, another"):
            command()
    assert compose == []  # down ran nothing


def test_containers_from_this_spec_pass_the_owner_check(client, project):
    client.containers.add("lab-master-1", labels={
        "devbox.project": "lab", "devbox.host": "master",
        "com.docker.compose.project.config_files": project.compose_file})  # fmt: skip
    project.check_owner(project.containers())


def test_a_volume_of_another_owner_is_refused_with_its_folder_also_with_no_container_left(client, project, compose, logins):
    """Case 3 of issue 13: the first spec's hosts are down, its volume stays, labelled with its owner."""
    client.volumes.add("lab_master-home", labels={"com.docker.compose.project": "lab", "devbox.project": "lab",
                                                  "devbox.owner": "0ther0wner", "devbox.owner-folder": "/first/.devbox"})
    for command in (lambda: up(project, wait_seconds=5), lambda: down(project, volumes=True), lambda: status(project)):
        with pytest.raises(PreflightError) as info:
            command()
        assert str(info.value) == (
            "project 'lab' already runs from /first/.devbox, another spec's (volume lab_master-home): give "
            f"{project.spec.source} another `project:` name, or run devbox with that spec")
    assert compose == [] and [v.name for v in client.volumes.list()] == ["lab_master-home"]


def test_a_network_of_another_owner_whose_folder_is_unknown_is_refused(client, project, compose):
    client.networks.create("lab_net", labels={"com.docker.compose.project": "lab", "devbox.owner": "0ther0wner"})
    with pytest.raises(PreflightError, match=r"^project 'lab' already runs from another spec \(its folder unknown\) "
                                             r"\(network lab_net\)"):  # fmt: skip
        down(project, volumes=True)
    assert compose == []


def test_up_labels_every_object_with_its_owner(client, project, compose, logins):
    up(project, wait_seconds=5)
    owner = {"devbox.project": "lab", "devbox.owner": project.owner, "devbox.owner-folder": str(project.folder)}
    assert len(project.owner or "") == 16 and (project.folder / "owner").read_text().strip() == project.owner
    data = compose_data(project.compose_file)
    assert all(service["labels"]["devbox.owner"] == project.owner for service in data["services"].values())
    assert data["services"]["master"]["build"]["labels"] == {"devbox.project": "lab", "devbox.owner": project.owner}
    assert all(c.labels["devbox.owner"] == project.owner for c in client.containers.list(all=True))
    # volumes and network made before compose, with compose's labels (it takes them as its own)
    volumes = client.volumes.list()
    assert sorted(v.name for v in volumes) == ["lab_master-home", "lab_worker-home"]
    assert all(owner.items() <= v.labels.items() and v.labels["com.docker.compose.volume"] == v.name[4:]
               and v.labels["com.docker.compose.project"] == "lab" for v in volumes)  # fmt: skip
    (network,) = client.networks.list()
    assert network.name == "lab_net" and owner.items() <= network.attrs["Labels"].items()
    assert network.attrs["Labels"]["com.docker.compose.network"] == "net"
    # the owner label is outside the config hash: an older devbox's containers are not recreated
    assert project.render().config_hashes == render_project(project.spec, fake_material_of(project)).config_hashes


def test_objects_an_older_devbox_made_are_adopted_and_said_once(client, project, compose, logins, said):
    client.volumes.add("lab_master-home", labels={"com.docker.compose.project": "lab"})
    client.containers.add("lab-master-1", labels={"devbox.project": "lab", "devbox.host": "master"})
    project.render()
    project.containers()
    assert said[-1] == ("note: taking container lab-master-1, volume lab_master-home as this spec's: they carry no "
                        "owner label (made by an older devbox, or by compose from an older render) and nothing "
                        "names another spec")  # fmt: skip
    said.clear()
    project._checked_volumes = False
    project.containers()
    assert said == []


def test_a_stopped_host_an_older_devbox_made_counts_as_recreated(client, project, compose, logins, said):
    up(project, wait_seconds=5)
    master = client.containers.list(filters={"label": "devbox.host=master"})[0]
    del master.attrs["Config"]["Labels"]["devbox.owner"]
    master.attrs["State"]["Status"] = "exited"
    said.clear()
    up(project, wait_seconds=5)
    assert recreating_note(["master"]) in said  # compose recreates it (its labels changed), and up says so


def test_a_lost_owner_file_keeps_the_objects_that_name_this_folder(client, project, compose, logins, said):
    up(project, wait_seconds=5)
    (project.folder / "owner").unlink()
    said.clear()
    up(project, wait_seconds=5)  # the volume and network name this folder: still this spec's
    assert said[-1].startswith("nothing changed")


# --------------------------------------------------------------------------- status


def test_status_shows_each_host_with_what_docker_applied(client, project):
    client.containers.add("lab-master-1", labels={"devbox.project": "lab", "devbox.host": "master"}, host_config={
        "NanoCpus": 1_500_000_000, "Memory": 2 * 1024**3, "MemoryReservation": 1024**3, "ShmSize": 64 * 1024**2,
        "CpusetCpus": "0-1", "RestartPolicy": {"Name": "unless-stopped"},
        "DeviceRequests": [{"Driver": "nvidia", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]]}],
    })  # fmt: skip
    master, worker = status(project)
    assert master["state"] == "running" and master["container"] == "lab-master-1"
    assert master["limits"] == {"cpus": 1.5, "memory": 2 * 1024**3} and master["reservations"] == {"memory": 1024**3}
    assert master["cpuset"] == "0-1" and master["restart"] == "unless-stopped" and master["restarts"] == 0
    assert master["gpus"] == [{"driver": "nvidia", "count": -1, "device_ids": None, "capabilities": [["gpu"]]}]
    assert worker == {"host": "worker", "state": "missing", "health": None, "ssh_port": 4433,
                      "bind_address": "127.0.0.1", "ssh": "ssh -p 4433 developer@127.0.0.1", "gpu_devices": []}  # fmt: skip


# --------------------------------------------------------------------------- up


def test_a_first_up_builds_once_starts_every_host_and_logs_in(client, project, compose, logins, said):
    results = up(project, wait_seconds=5)
    tag = project.render().image_tag
    assert compose == [
        ["docker", "compose", "-f", project.compose_file, "-p", "lab", "build", "master"],
        ["docker", "compose", "-f", project.compose_file, "-p", "lab",
         "up", "--detach", "--no-build", "--quiet-pull", "--remove-orphans", "master", "worker"],
    ]  # fmt: skip
    assert client.images.list(name=tag) and sorted(logins) == ["master", "worker"]
    assert [(target.name, result.ok) for target, result in results] == [("master", True), ("worker", True)]
    assert f"building image {tag} (once for all hosts)" in said and "starting master, worker" in said


def test_a_second_up_runs_no_compose_and_asks_a_running_host_for_its_passwords_once(client, project, compose, logins, said):
    up(project, wait_seconds=5)
    compose.clear()
    client.calls.clear()
    up(project, wait_seconds=5)
    assert compose == [] and said[-1] == "nothing changed: 2 hosts already up to date"
    # started within a clock's slack of their passwords file: asked once, they agree, nothing is set
    assert [call["cmd"][:2] for call in client.called("container.exec_run")] == [["getent", "shadow"]] * 2
    client.calls.clear()
    up(project, wait_seconds=5)
    assert client.called("container.exec_run") == []  # the record vouches for them now


def test_a_warm_up_is_proven_by_the_logins_begun_before_it_read_the_engine(client, project, compose, logins,
                                                                         monkeypatch):  # fmt: skip
    """With nothing to change, the logins begun beside the engine's checks are the proof: no
    host is logged in to twice, no login waits for the engine, and the project's containers are
    read once, not once per step."""
    up(project, wait_seconds=5)
    logins.clear()
    client.calls.clear()
    waited: list[list[str]] = []
    wait_for_logins = probe.wait_for_logins
    monkeypatch.setattr(probe, "wait_for_logins", lambda targets, *a: waited.append([t.name for t in targets])
                        or wait_for_logins(targets, *a))  # fmt: skip
    results = up(project, wait_seconds=5)
    assert sorted(logins) == ["master", "worker"] and waited == []
    assert [result.ok for _, result in results] == [True, True]
    reads = [c for c in client.called("containers.list") if c["all"] and "devbox.project=lab" in str(c["filters"])]
    assert len(reads) == 1, reads  # (the start watch's list of running ones aside)


def test_an_early_login_that_did_not_settle_is_probed_again(client, project, compose, logins, monkeypatch):
    up(project, wait_seconds=5)
    login = probe.login
    early: list[str] = []

    def slow_once(target: probe.Target, command: str | None = None, timeout: float = 5.0) -> probe.Result:
        if target.name == "worker" and not early:
            early.append(target.name)
            return probe.Result(target.name, False, "SSH failed: timed out", 3.0)
        return login(target, command, timeout)

    monkeypatch.setattr(probe, "login", slow_once)
    logins.clear()
    results = up(project, wait_seconds=5)
    assert early == ["worker"] and sorted(logins) == ["master", "worker"]
    assert [result.ok for _, result in results] == [True, True]


def test_an_up_that_changes_a_host_probes_it_once_it_runs_again(client, make_project, compose, logins):
    up(make_project(), wait_seconds=5)
    logins.clear()
    changed = make_project(hosts={"master": {"ssh_port": 4432, "hostname": "boss"}, "worker": {"ssh_port": 4433}})
    up(changed, wait_seconds=5)
    # each host once early (the old master among them), then both again after compose's up
    assert sorted(logins) == ["master", "master", "worker", "worker"]


def test_a_changed_host_is_named_as_recreated_and_only_it_starts(client, make_project, compose, logins, said):
    up(make_project(), wait_seconds=5)
    compose.clear()
    changed = make_project(hosts={"master": {"ssh_port": 4432, "hostname": "boss"}, "worker": {"ssh_port": 4433}})
    up(changed, wait_seconds=5)
    assert compose == [["docker", "compose", "-f", changed.compose_file, "-p", "lab",
                        "up", "--detach", "--no-build", "--quiet-pull", "--remove-orphans", "master"]]  # fmt: skip
    assert recreating_note(["master"]) in said


def test_up_removes_the_container_of_a_host_the_spec_dropped(client, make_project, compose, logins, said):
    up(make_project(hosts={"master": {"ssh_port": 4432}, "solo": {"ssh_port": 4434}}), wait_seconds=5)
    compose.clear()
    up(make_project(hosts={"master": {"ssh_port": 4432}}), wait_seconds=5)
    assert "removing solo: no longer in devbox.yaml (named volumes stay)" in said
    assert [c.labels["devbox.host"] for c in client.containers.list(all=True)] == ["master"]
    assert {"name": "lab-solo-1", "force": True} in client.called("container.remove") and compose == []


def test_up_of_named_hosts_leaves_the_others_and_orphans_alone(client, make_project, compose, logins):
    up(make_project(hosts={"master": {"ssh_port": 4432}, "solo": {"ssh_port": 4434}}), wait_seconds=5)
    compose.clear()
    project = make_project(hosts={"master": {"ssh_port": 4432, "hostname": "boss"}})
    up(project, only=["master"], wait_seconds=5)
    assert compose[0][-2:] == ["--quiet-pull", "master"]  # no --remove-orphans
    assert len(client.containers.list(all=True, filters={"label": "devbox.host=solo"})) == 1


def test_a_host_that_never_logs_in_is_named_with_the_last_line_it_logged(client, project, compose, monkeypatch):
    def login(target: probe.Target, command: str | None = None, timeout: float = 5.0) -> probe.Result:
        return probe.Result(target.name, target.name == "worker", "cannot connect (Connection refused)", 0.0)

    monkeypatch.setattr(probe, "login", login)
    original = client.containers.add

    def add(name: str, **fields: Any) -> Any:
        return original(name, **fields, log=b"starting\nsshd: no hostkeys available -- exiting.\n")

    monkeypatch.setattr(client.containers, "add", add)
    with pytest.raises(EngineError) as info:
        up(project, wait_seconds=0.3)
    assert str(info.value) == ("master: cannot connect (Connection refused); it last logged: sshd: no hostkeys "
                               "available -- exiting. (see `devbox logs HOST`)")  # fmt: skip


def test_ctrl_c_in_the_login_wait_says_each_hosts_state_and_goes_on_to_the_cli(client, project, compose, monkeypatch,
                                                                             said):  # fmt: skip
    """Case 7 of issue 13: the interrupt is not swallowed; each host's state is said, one line each."""
    import _thread
    import signal
    import threading
    import time

    def login(target: probe.Target, command: str | None = None, timeout: float = 5.0) -> probe.Result:
        time.sleep(0.2)  # sshd never answers
        return probe.Result(target.name, False, "cannot connect (Connection refused)", 0.0)

    monkeypatch.setattr(probe, "login", login)
    threading.Timer(0.5, lambda: _thread.interrupt_main(signal.SIGINT)).start()
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        up(project, ["master"], wait_seconds=60)
    assert time.monotonic() - began < 1.5
    assert said[-2:] == ["master: running", "worker: missing"]


def test_a_host_compose_left_under_a_temporary_name_is_put_right(client, project, compose, logins, said):
    """Compose recreates a host as "<old id>_<name>", removes the old one, renames the new one:
    cut short, the new one is renamed (its own name is free) or removed (never started, its
    name taken); an old container that ran is never removed."""
    labels = {"devbox.project": "lab", "devbox.host": "master"}
    never = "0001-01-01T00:00:00Z"
    client.containers.add("0123456789ab_lab-master-1", labels=labels, status="created", started_at=never)
    client.containers.add("lab-worker-1", labels={**labels, "devbox.host": "worker"}, status="exited")
    client.containers.add("ba9876543210_lab-worker-1", labels={**labels, "devbox.host": "worker"},
                          status="created", started_at=never)  # fmt: skip
    client.containers.add("cafecafecafe_lab-third-1", labels={**labels, "devbox.host": "third"}, status="exited")
    client.containers.add("lab-third-1", labels={**labels, "devbox.host": "third"})
    assert compose_engine.repair_renamed(project) == [
        "master: renamed 0123456789ab_lab-master-1 (left half made by compose) to lab-master-1",
        "worker: removed ba9876543210_lab-worker-1, a container compose had not finished making",
        "third: cafecafecafe_lab-third-1 is an older container of this host, kept with its files (`docker rm` it "
        "when they are no longer needed)",
    ]
    assert sorted(c.name for c in client.containers.list(all=True)) == [
        "cafecafecafe_lab-third-1", "lab-master-1", "lab-third-1", "lab-worker-1"]  # fmt: skip


def test_an_interrupted_compose_is_handed_one_sigint_and_waited_for(tmp_path):
    """subprocess.run killed compose a quarter second after Ctrl-C, mid-recreate: devbox hands it
    SIGINT and waits for it to stop cleanly, then the interrupt goes on."""
    import _thread
    import signal
    import sys
    import threading
    import time

    script = tmp_path / "compose.py"
    marker = tmp_path / "stopped-cleanly"
    script.write_text(
        "import signal, sys, time\n"
        f"def stop(*_):\n    time.sleep(0.5)\n    open({str(marker)!r}, 'w').close()\n    sys.exit(130)\n"
        "signal.signal(signal.SIGINT, stop)\nprint('ready', flush=True)\ntime.sleep(30)\n"
    )  # fmt: skip
    fake = Compose((sys.executable, str(script)), "2.40.0")
    threading.Timer(1.0, lambda: _thread.interrupt_main(signal.SIGINT)).start()
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        docker_api.run_compose(fake, None, "lab", "up")
    assert marker.exists() and time.monotonic() - began < 5


def test_up_stops_before_compose_when_the_engine_cannot_give_the_resources(client, make_project, compose, logins):
    client.info_data["NCPU"] = 2
    project = make_project(hosts={"master": {"ssh_port": 4432, "limits": {"cpus": 4}}})
    with pytest.raises(PreflightError, match=r"hosts.master.limits.cpus: 4 is more than the 2 CPUs"):
        up(project, wait_seconds=5)
    assert compose == []


# --------------------------------------------------------------------------- down


def test_down_runs_compose_by_project_name_without_the_file(client, project, compose):
    down(project, volumes=False)
    down(project, volumes=True)
    assert compose == [["docker", "compose", "-p", "lab", "down", "--remove-orphans"],
                       ["docker", "compose", "-p", "lab", "down", "--remove-orphans", "--volumes"]]  # fmt: skip


def test_down_removes_a_running_stack(client, project, compose, logins):
    up(project, wait_seconds=5)
    down(project, volumes=False)
    assert client.containers.list(all=True) == []


# --------------------------------------------------------------------------- preflight


def test_a_port_another_container_publishes_is_named_with_that_container(client, project):
    client.containers.add("web", labels={"devbox.project": "other"},
                          host_config={"PortBindings": {"22/tcp": [{"HostIp": "", "HostPort": "4433"}]}})  # fmt: skip
    assert port_problems(project, list(project.spec.hosts), {}) == [
        "hosts.worker.ssh_port: port 4433 is already published by container web (choose a free ssh_port, or stop it)"]


def test_a_running_host_keeps_its_own_port(client, project):
    ours = client.containers.add("lab-worker-1", labels={"devbox.project": "lab", "devbox.host": "worker"},
                                 host_config={"PortBindings": {"22/tcp": [{"HostPort": "4433"}]}})  # fmt: skip
    assert port_problems(project, list(project.spec.hosts), {"worker": ours}) == []


def test_a_port_a_dropped_host_holds_is_free_for_the_host_that_takes_it(client, project):
    """A host renamed in the spec with its port: the old one is removed before the new one starts,
    and the refusals now come before that removal (its files are asked about while the image builds)."""
    old = client.containers.add("lab-old-1", labels={"devbox.project": "lab", "devbox.host": "old"},
                                host_config={"PortBindings": {"22/tcp": [{"HostPort": "4433"}]}})  # fmt: skip
    assert port_problems(project, list(project.spec.hosts), {"old": old}) != []
    assert port_problems(project, list(project.spec.hosts), {"old": old}, leaving=["old"]) == []


def test_a_port_a_local_program_holds_is_named_when_the_engine_is_local(client, make_project, monkeypatch):
    monkeypatch.delenv("DOCKER_HOST")
    with held_port() as port:
        project = make_project(hosts={"master": {"ssh_port": port}})
        assert port_problems(project, list(project.spec.hosts), {}) == [
            f"hosts.master.ssh_port: port {port} on 127.0.0.1 is already taken by another program "
            "(choose a free ssh_port, or stop it)"]  # fmt: skip


def test_ports_clash_across_projects_only_when_address_and_port_clash(client, make_project):
    client.containers.add("other-a", labels={"devbox.project": "other"},
                          host_config={"PortBindings": {"22/tcp": [{"HostIp": "127.0.0.2", "HostPort": "4432"}]}})
    client.containers.add("other-b", labels={"devbox.project": "other"},
                          host_config={"PortBindings": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "4433"}]}})
    project = make_project(hosts={"master": {"ssh_port": 4432, "bind_address": "127.0.0.1"},
                                  "worker": {"ssh_port": 4433, "bind_address": "127.0.0.3"}})  # fmt: skip
    assert port_problems(project, list(project.spec.hosts), {}) == [
        "hosts.worker.ssh_port: port 4433 is already published by container other-b (choose a free ssh_port, "
        "or stop it)"]  # fmt: skip


def test_an_address_this_machine_does_not_have_is_named_when_the_engine_is_local(client, make_project, monkeypatch):
    monkeypatch.delenv("DOCKER_HOST")
    project = make_project(hosts={"master": {"ssh_port": 4432, "bind_address": "10.254.254.254"}})
    assert port_problems(project, list(project.spec.hosts), {}) == [
        "hosts.master.bind_address: 10.254.254.254 is not an address of this machine (use 127.0.0.1, 0.0.0.0 "
        "or one that `ip addr` lists)"]  # fmt: skip


def test_an_nvidia_runtime_is_enough_for_gpus(client):
    assert gpu_runtime_available(client, {"runtimes": ["nvidia", "runc"]}) is True
    assert client.calls == []


def test_without_the_nvidia_hook_the_probe_container_is_refused_and_removed(client):
    client.errors["container.start"] = docker.errors.APIError(
        'could not select device driver "" with capabilities: [[gpu]]')
    assert gpu_runtime_available(client, {"runtimes": ["runc"]}) is False
    (created,) = client.called("containers.create")
    assert created["image"] == GPU_PROBE_IMAGE and created["network_mode"] == "none"
    assert created["device_requests"][0]["Capabilities"] == [["gpu"]]
    (imported,) = client.called("api.import_image_from_data")  # no registry needed: an empty image
    assert f"{imported['repository']}:{imported['tag']}" == GPU_PROBE_IMAGE
    assert client.containers.list(all=True) == []  # the probe container is gone


def test_with_the_nvidia_hook_the_probe_starts_and_the_empty_image_is_made_once(client):
    assert gpu_runtime_available(client, {"runtimes": ["runc"]}) is True
    assert gpu_runtime_available(client, {"runtimes": ["runc"]}) is True
    assert len(client.called("api.import_image_from_data")) == 1 and len(client.called("container.start")) == 2
    assert client.containers.list(all=True) == []


def test_another_engine_error_at_the_probe_does_not_claim_there_is_no_gpu(client):
    client.errors["container.start"] = docker.errors.APIError("OCI runtime create failed: /devbox-gpu-probe: no such file")
    assert gpu_runtime_available(client, {"runtimes": ["runc"]}) is True


def test_a_restarting_host_is_not_blamed_on_another_program(client, make_project, monkeypatch):
    """Listed as restarting, its container runs again (docker-proxy holds the port) by the time
    the port is tried: the port is the host's own, not another program's (issue 13, case 10)."""
    monkeypatch.delenv("DOCKER_HOST")
    with held_port() as port:
        project = make_project(hosts={"master": {"ssh_port": port}})
        ours = client.containers.add("lab-master-1", labels={"devbox.project": "lab", "devbox.host": "master"},
                                     status="restarting",
                                     host_config={"PortBindings": {"22/tcp": [{"HostPort": str(port)}]}})  # fmt: skip
        assert port_problems(project, list(project.spec.hosts), {"master": ours}) == []


def test_a_running_host_moving_to_a_taken_port_is_refused(client, make_project, monkeypatch):
    monkeypatch.delenv("DOCKER_HOST")
    with held_port() as port:
        project = make_project(hosts={"master": {"ssh_port": port}})
        ours = client.containers.add("lab-master-1", labels={"devbox.project": "lab", "devbox.host": "master"},
                                     host_config={"PortBindings": {"22/tcp": [{"HostPort": "4432"}]}})  # fmt: skip
        assert "already taken" in port_problems(project, list(project.spec.hosts), {"master": ours})[0]


def test_a_ulimit_beyond_the_engines_own_is_named_before_anything_starts(client, make_project):
    project = make_project(defaults={"ulimits": {"nice": 40}},
                           hosts={"master": {"ssh_port": 4432}, "worker": {"ssh_port": 4433}})  # fmt: skip
    client.errors["container.start"] = docker.errors.APIError(
        "500 Server Error", explanation="failed to create shim task: OCI runtime create failed: runc create failed: "
        "unable to start container process: error during container init: error setting rlimits for ready process: "
        "error setting rlimit type 13: operation not permitted: unknown")  # fmt: skip
    assert ulimit_problems(project, list(project.spec.hosts)) == [
        "defaults.ulimits.nice: the engine cannot give 40/40 (operation not permitted): lower it, or raise the "
        "engine's own limit (e.g. LimitNOFILE= in docker.service)"] * 2  # fmt: skip
    assert len(client.called("container.start")) == 1  # one probe per distinct limit
    assert client.containers.list(all=True) == []


def test_a_ulimit_the_engine_grants_gets_as_far_as_the_missing_program(client, make_project):
    project = make_project(hosts={"master": {"ssh_port": 4432, "ulimits": {"nofile": 1024}}})
    client.errors["container.start"] = docker.errors.APIError(
        "400 Client Error", explanation='OCI runtime create failed: exec: "/devbox-ulimit-probe": stat '
        "/devbox-ulimit-probe: no such file or directory: unknown")  # fmt: skip
    assert ulimit_problems(project, list(project.spec.hosts)) == []
    (created,) = client.called("containers.create")
    assert created["ulimits"][0]["Name"] == "nofile" and created["ulimits"][0]["Hard"] == 1024


def fake_material_of(project: Project) -> Any:
    """The project's real hashes and keys (from its folder), as a render without an owner sees them."""
    from devbox.state import prepare

    return prepare(project.spec, project.folder, {})[0]


def test_a_network_removed_behind_devboxs_back_is_made_again_and_the_hosts_connected(client, project, compose,
                                                                                     logins, said):  # fmt: skip
    """Issue 29, case 6: `docker network rm` (after `disconnect -f`) leaves the hosts running
    with no port; `up` makes the network again and connects them, recreating nothing."""
    up(project, wait_seconds=5)
    before = {c.name: c.id for c in client.containers.list(all=True)}
    for network in client.networks.list(names=["lab_net"]):
        for container in client.containers.list(all=True):
            client.api.disconnect_container_from_network(container.id, network.id, force=True)
        network.remove()
    compose.clear()
    said.clear()
    up(project, wait_seconds=5)
    assert said[:3] == ["network lab_net was missing (removed outside devbox): made it again",
                        "master: connected to network lab_net again (it was not on it: its port was not published); "
                        "its files stay",
                        "worker: connected to network lab_net again (it was not on it: its port was not published); "
                        "its files stay"]  # fmt: skip
    assert "nothing else changed: 2 hosts already up to date" in said and compose == []
    [network] = client.networks.list(names=["lab_net"])
    assert network.attrs["Labels"]["devbox.owner"] == project.owner
    assert {c.name: c.id for c in client.containers.list(all=True)} == before
    for container in client.containers.list(all=True):
        assert container.attrs["NetworkSettings"]["Networks"]["lab_net"]["NetworkID"] == network.id
    said.clear()
    up(project, wait_seconds=5)
    assert said[0] == "nothing changed: 2 hosts already up to date"


def test_a_password_the_host_refuses_is_set_again_and_one_still_refused_fails_at_once(client, project, compose,
                                                                                      monkeypatch, said):  # fmt: skip
    """Issue 29, case 4: the record and the file times vouch for a password the host no longer
    has (a restored .devbox/, `passwd` in the host); the login proves otherwise. `up` sets
    devbox's again and logs in; a host that refuses it still fails at once, naming the fix."""
    accepted: dict[str, bool] = {"master": True, "worker": True}
    tried: list[str] = []

    def login(target: probe.Target, command: str | None = None, timeout: float = 5.0) -> probe.Result:
        tried.append(target.name)
        if accepted[target.name]:
            return probe.Result(target.name, True, "logged in", 0.01)
        return probe.Result(target.name, False, "login as developer refused (wrong password?)", 0.01, refused=True)

    monkeypatch.setattr(probe, "login", login)
    up(project, wait_seconds=5)
    up(project, wait_seconds=5)  # passwords-applied.json vouches for both hosts now
    worker = project.containers()["worker"]
    shadow = {"developer": "$6$inside$changed"}
    worker.on_exec = getent_shadow(shadow)  # `passwd` run inside the host
    accepted["worker"] = False
    chpasswd: list[str] = []

    def exec_with_input(client: Any, container_id: str, argv: list[str], data: bytes) -> tuple[int, str]:
        chpasswd.append(data.decode())
        shadow.update(line.split(":", 1) for line in data.decode().splitlines())
        accepted["worker"] = True
        return 0, ""

    monkeypatch.setattr("devbox.passwords.exec_with_input", exec_with_input)
    said.clear()
    tried.clear()
    up(project, wait_seconds=60)
    assert any(line.startswith("worker/developer: refused the password in") for line in said), said
    assert tried.count("worker") == 2 and [line.split(":")[0] for line in chpasswd] == ["developer"]

    accepted["worker"] = False  # refused although it has devbox's password (an expired account)
    began = time.monotonic()
    with pytest.raises(EngineError) as refused:
        up(project, wait_seconds=60)
    assert time.monotonic() - began < 5
    assert str(refused.value).startswith("worker: login as developer refused with the password devbox keeps for it "
                                         "(run `devbox passwd worker` to set a new one)")  # fmt: skip
