"""`devbox check` on a fake Docker client: each host's checks from what its container reports and
answers, with SSH logins replaced (devbox.probe.login; the e2e tests make real ones)."""

from __future__ import annotations

from typing import Any

import pytest

# devbox's API under test, named once here: when the engines split moves a name, re-point it here.
from devbox import probe
from devbox.checks import check_stack
from devbox.engines import open_project
from devbox.project import Project
from devbox.spec import Host

from .fake_docker import FakeDockerClient, serve
from .helpers import make_spec

HOSTS = {
    "master": {"ssh_port": 4432, "limits": {"cpus": 1, "memory": "1g"}, "volumes": ["data:/data:ro"],
               "environment": {"OMP_NUM_THREADS": "4"}},
    "worker": {"ssh_port": 4433, "limits": {"memory": "2g"}},
    "third": {"ssh_port": 4434},
}  # fmt: skip


@pytest.fixture
def client(monkeypatch):
    return serve(monkeypatch, FakeDockerClient())


@pytest.fixture
def logins(monkeypatch) -> list[str]:
    tried: list[str] = []

    def login(target: probe.Target, command: str | None = None, timeout: float = 5.0) -> probe.Result:
        tried.append(target.name)
        return probe.Result(target.name, True, "logged in", 0.05, output=f"{target.name}\n")

    monkeypatch.setattr(probe, "login", login)
    return tried


def make_project(tmp_path, hosts: dict[str, Any]) -> Project:
    project = open_project(make_spec(tmp_path, hosts=hosts), tmp_path / ".devbox", say=lambda _: None, environ={})
    project.render()  # check logs in with the rendered passwords and host keys
    return project


def applied(host: Host, **changes: Any) -> dict[str, Any]:
    """The HostConfig Docker reports for a container made as the spec says (``changes`` differ)."""
    config = {"NanoCpus": int((host.limits.cpus or 0) * 1e9),
              "Memory": host.limits.memory.bytes if host.limits.memory else 0, "ShmSize": host.shm_size.bytes}  # fmt: skip
    return {**config, **changes}


def add_host(client: FakeDockerClient, host: Host, **fields: Any) -> Any:
    return client.containers.add(f"lab-{host.name}-1", labels={"devbox.project": "lab", "devbox.host": host.name},
                                 **fields)  # fmt: skip


def verdicts(checks) -> list[tuple[str, str, bool | None]]:
    return [(c.subject, c.name, c.ok) for c in checks]


def test_each_host_is_checked_against_its_spec(client, logins, tmp_path):
    project = make_project(tmp_path, HOSTS)
    master, worker, _third = project.spec.hosts
    add_host(client, master, host_config=applied(master), env=["OMP_NUM_THREADS=4", "PATH=/usr/bin"],
             mounts=[{"Destination": "/data", "RW": False}], execs={
                 ("sh", "-c", 'command -v "$1"', "_", "ping"): (0, b"/usr/bin/ping\n"),
                 ("getent", "hosts", "worker"): (0, b"172.20.0.3      worker\n"),
                 ("ping", "-c", "1", "-W", "2", "worker"): (0, b"1 packets received"),
             })  # fmt: skip
    add_host(client, worker, host_config=applied(worker, Memory=1024**3), execs={
        ("getent", "hosts", "master"): (0, b"172.20.0.2      master\n"),
        ("timeout", "3", "bash", "-c", 'exec 3<>"/dev/tcp/$1/22"', "_", "master"): (0, b""),
    })  # fmt: skip
    checks = list(check_stack(project))
    assert verdicts(checks) == [
        ("master", "running", True), ("worker", "running", True), ("third", "running", False),
        ("master", "ssh login", True), ("worker", "ssh login", True),
        ("master", "reach worker", True), ("master", "limits.cpus", True), ("master", "limits.memory", True),
        ("master", "shm_size", True), ("master", "volume /data", True), ("master", "thread variables", True),
        ("worker", "reach master", True), ("worker", "limits.memory", False), ("worker", "shm_size", True),
    ]  # fmt: skip
    details = {(c.subject, c.name): c.detail for c in checks}
    assert details[("third", "running")] == "container is missing (run `devbox up`)"
    assert details[("master", "ssh login")] == "logged in, hostname master (0.05s)"
    assert details[("master", "reach worker")] == "worker -> 172.20.0.3 (ping)"
    assert details[("worker", "reach master")] == "master -> 172.20.0.2 (tcp/22)"  # no ping in that image
    assert details[("worker", "limits.memory")] == f"spec {2 * 1024**3}, applied {1024**3}"
    assert sorted(logins) == ["master", "worker"]  # a host that is not running is not logged in to


def test_a_stopped_host_fails_its_running_check_and_nothing_else_is_asked_of_it(client, logins, tmp_path):
    project = make_project(tmp_path, {"solo": {"ssh_port": 4432}})
    add_host(client, project.spec.hosts[0], status="exited")
    assert verdicts(check_stack(project)) == [("solo", "running", False)]
    assert client.called("container.exec_run") == [] and logins == []


def test_a_gpu_host_shows_its_request_and_skips_nvidia_smi_without_a_driver(client, logins, tmp_path):
    project = make_project(tmp_path, {"gpu": {"ssh_port": 4432, "gpus": "all"}})
    (host,) = project.spec.hosts
    request = {"Driver": "nvidia", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]]}
    add_host(client, host, host_config=applied(host, DeviceRequests=[request]), execs={
        ("cat", "/run/devbox-environment"): (0, b"NVIDIA_VISIBLE_DEVICES=all\nHOME=/root\n")})  # fmt: skip
    checks = {c.name: c for c in check_stack(project) if c.subject == "gpu"}
    assert checks["gpu request"].ok is True
    assert checks["gpu request"].detail.endswith("NVIDIA_VISIBLE_DEVICES=all")
    assert checks["nvidia-smi"].ok is None and checks["nvidia-smi"].word == "SKIP"


def test_a_container_with_gpus_the_spec_does_not_ask_for_fails(client, logins, tmp_path):
    project = make_project(tmp_path, {"solo": {"ssh_port": 4432}})
    (host,) = project.spec.hosts
    add_host(client, host, host_config=applied(host, DeviceRequests=[{"Count": 1, "Capabilities": [["gpu"]]}]))
    (failed,) = [c for c in check_stack(project) if c.name == "gpus"]
    assert failed.ok is False and failed.detail == "the container has GPU requests the spec does not ask for"


def test_a_key_only_host_shows_its_hostname_from_the_container(client, monkeypatch, tmp_path):
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGood me@x"
    project = make_project(tmp_path, {"solo": {"ssh_port": 4432, "hostname": "box", "password_auth": False,
                                               "authorized_keys": [key]}})  # fmt: skip
    (host,) = project.spec.hosts

    def login(target: probe.Target, command: str | None = None, timeout: float = 5.0) -> probe.Result:
        assert target.key_only  # devbox has no private key: sshd only shows it asks for one
        return probe.Result(target.name, True, "host key verified; sshd accepts public keys only", 0.05)

    monkeypatch.setattr(probe, "login", login)
    add_host(client, host, host_config=applied(host), execs={("hostname",): (0, b"box\n")})
    (checked,) = [c for c in check_stack(project) if c.name == "ssh login"]
    assert checked.detail == "host key verified; sshd accepts public keys only, hostname box (0.05s)"


def test_doctor_names_the_ports_the_hosts_hold_and_fails_one_a_running_host_does_not_publish():
    """Issue 29, case 6: "free" only where no container of the host exists; a host's running
    container off its network publishes no port: that fails, with the fix."""
    from devbox.checks import ports_check

    hosts = [Host(name="master", hostname="master", ssh_port=4432), Host(name="worker", hostname="worker", ssh_port=4433)]
    held = ports_check(hosts, {"master": ("running", True)})
    assert (held.ok, held.name) == (True, "held or free")
    assert held.detail == "127.0.0.1:4432 held by master (running); free: 127.0.0.1:4433"
    assert ports_check(hosts, {}).detail == "free: 127.0.0.1:4432, 127.0.0.1:4433"
    assert ports_check(hosts, {"master": ("exited", False), "worker": ("running", True)}).name == "held by the hosts"
    broken = ports_check(hosts, {"master": ("running", False), "worker": ("running", True)})
    assert broken.ok is False
    assert broken.detail == ("127.0.0.1:4432: master's container runs but publishes no port (taken off its network, "
                             "e.g. by `docker network rm`): `devbox up` connects it again")  # fmt: skip


def test_a_swarm_task_is_not_taken_for_a_host_off_its_network(client):
    """A swarm task publishes no port itself (its service does, on the ingress network)."""
    from devbox.checks import _port_holding

    task = client.containers.add("lab_master.1.x", labels={"com.docker.swarm.service.id": "abc"})
    compose = client.containers.add("lab-master-1", labels={"devbox.project": "lab"})
    assert _port_holding(task) == ("running", True)
    assert _port_holding(compose) == ("running", False)  # no network, no port
    compose.attrs["NetworkSettings"]["Ports"] = {"22/tcp": [{"HostIp": "127.0.0.1", "HostPort": "4432"}]}
    assert _port_holding(compose) == ("running", True)
