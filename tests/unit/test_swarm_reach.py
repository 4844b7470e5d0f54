"""A swarm of several nodes on fake clients: hosts reached on the node that runs them (status,
exec, logs, check, passwd, ssh-config), down --volumes on every node, network anchors for GPU
hosts, and doctor's swarm checks."""

from __future__ import annotations

from typing import Any

import pytest

from devbox import operations
from devbox.checks import check_stack, doctor
from devbox.engines import open_project, swarm_reach
from devbox.engines.swarm import SwarmEngine, anchor_name, deploy, swarm_spec_problems
from devbox.engines.swarm_doctor import gpu_lines, port_lines, volume_warnings
from devbox.engines.swarm_nodes import read_nodes
from devbox.errors import UsageError
from devbox.project import Project
from devbox.render import render_ssh_config

from .fake_docker import SERVICE_NAME_LABEL, FakeDockerClient, serve
from .helpers import make_spec

ENGINE = SwarmEngine()
N2_ENGINE = "ssh://admin@10.0.0.2"
HOSTS = {"a": {"ssh_port": 4432, "bind_address": "0.0.0.0", "volumes": ["data:/data"]},
         "b": {"ssh_port": 4433, "bind_address": "0.0.0.0", "node": "n2"}}  # fmt: skip


@pytest.fixture
def node2() -> FakeDockerClient:
    """The engine of node n2, reached through its devbox.docker-host label."""
    return FakeDockerClient()


@pytest.fixture
def client(monkeypatch, node2):
    client = serve(monkeypatch, FakeDockerClient())
    client.swarm_manager("node-1")
    client.nodes.add("node-1", "10.0.0.1", hostname="n1")
    client.nodes.add("node-2", "10.0.0.2", hostname="n2", labels={"devbox.docker-host": N2_ENGINE})
    engines = {N2_ENGINE: node2}
    client.workers = [node2]
    monkeypatch.setattr(swarm_reach, "connect_node", lambda url: engines[url])
    return client


@pytest.fixture
def make_project(tmp_path, said):
    """Swarm specs, with this module's hosts unless given others."""

    def make(hosts: dict[str, Any] | None = None, **changes: Any) -> Project:
        spec = make_spec(tmp_path, engine="swarm", hosts=hosts or HOSTS, **changes)
        return open_project(spec, tmp_path / ".devbox", say=said.append, environ={})

    return make


def deployed_on_two_nodes(client: FakeDockerClient, node2: FakeDockerClient, project: Project) -> Any:
    """Deploy, then move b's task and container to node-2, as the swarm would place it."""
    deploy(project, list(project.spec.hosts), project.render())
    (service,) = client.services.list(filters={"name": "lab_b"})
    service.task_list[0]["NodeID"] = "node-2"
    container = next(c for c in client.containers.items if c.labels.get(SERVICE_NAME_LABEL) == "lab_b")
    client.containers.items.remove(container)
    moved = node2.containers.add(container.name, labels=container.labels, execs={("hostname",): (0, b"b\n")})
    return moved


# --------------------------------------------------------------------------- reaching hosts


def test_a_host_on_another_node_is_found_on_that_nodes_engine(client, node2, project):
    moved = deployed_on_two_nodes(client, node2, project)
    reach = ENGINE.reach(project)
    assert reach.containers["b"] is moved and reach.unreachable == {}
    assert reach.details["b"] == {"node": "n2", "node_address": "10.0.0.2", "task": "running", "task_error": None,
                                  "ssh": "ssh -p 4433 developer@10.0.0.2"}  # fmt: skip
    status = {e["host"]: e for e in operations.status(project)}
    assert (status["b"]["state"], status["b"]["node"], status["a"]["node"]) == ("running", "n2", "n1")


def test_the_status_table_shows_each_hosts_node_task_state_and_ssh_line(client, node2, tmp_path, monkeypatch):
    """README: on a swarm `status` shows each host's node, the task's state and `ssh` line at the
    node's address (the table, not only --json)."""
    import yaml
    from click.testing import CliRunner

    from devbox.cli import cli

    from .helpers import spec_data

    (tmp_path / "devbox.yaml").write_text(yaml.safe_dump(spec_data(engine="swarm", hosts=HOSTS)))
    project = open_project(make_spec(tmp_path, engine="swarm", hosts=HOSTS), tmp_path / ".devbox", environ={})
    deployed_on_two_nodes(client, node2, project)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["status"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split()[:4] == ["HOST", "NODE", "TASK", "STATE"] and header.split()[-1] == "SSH"
    assert rows[0].split()[:4] == ["a", "n1", "running", "running"]
    assert rows[0].endswith("ssh -p 4432 developer@10.0.0.1")
    assert rows[1].split()[:4] == ["b", "n2", "running", "running"]
    assert rows[1].endswith("ssh -p 4433 developer@10.0.0.2")


def test_a_node_without_its_engine_address_is_out_of_reach_with_the_fix(client, node2, project):
    deployed_on_two_nodes(client, node2, project)
    client.nodes.get("node-2").attrs["Spec"]["Labels"] = {}
    with pytest.raises(UsageError) as info:
        operations.exec_in(project, "b", ["hostname"], None, lambda _chunk: None)
    assert str(info.value) == (
        "host b runs on swarm node n2, whose engine this machine cannot reach: label the node with it "
        "(docker node update --label-add devbox.docker-host=ssh://USER@10.0.0.2 n2), or run devbox with "
        "DOCKER_HOST pointing at that node")  # fmt: skip
    status = {e["host"]: e for e in operations.status(project)}
    assert (status["b"]["state"], status["b"]["node"]) == ("running", "n2")  # from the task


def test_check_skips_inside_checks_of_a_host_out_of_reach_and_still_logs_in(client, node2, project, monkeypatch):
    deployed_on_two_nodes(client, node2, project)
    client.nodes.get("node-2").attrs["Spec"]["Labels"] = {}
    logged_in = []
    monkeypatch.setattr("devbox.checks.probe.login", lambda target, command: logged_in.append(target.name) or
                        type("R", (), {"name": target.name, "ok": True, "detail": "ok", "output": f"{target.name}\n",
                                       "seconds": 0.1})())  # fmt: skip
    checks = {(c.subject, c.name): c for c in check_stack(project)}
    assert checks[("b", "running")].ok is True and checks[("b", "running")].detail == "task running on node n2"
    assert checks[("b", "inside checks")].ok is None
    assert sorted(logged_in) == ["a", "b"] and checks[("b", "ssh login")].ok


def test_logs_come_through_the_manager_from_any_node(client, node2, project, said):
    deployed_on_two_nodes(client, node2, project)
    (service,) = client.services.list(filters={"name": "lab_b"})
    service.log = b"one\ntwo\n"
    assert b"".join(operations.stream_logs(project, "b", False, "1")) == b"two\n"
    said.clear()
    operations.all_logs(project, False, "all")
    assert said == ["b | one", "b | two"]


def test_passwd_applies_in_the_container_on_its_node(client, node2, project, monkeypatch):
    moved = deployed_on_two_nodes(client, node2, project)
    applied = []
    monkeypatch.setattr("devbox.passwords.exec_with_input",
                        lambda engine, cid, argv, data: applied.append((engine, cid)) or (0, ""))  # fmt: skip
    moved.on_exec = lambda argv: (0, b"") if argv[:2] == ["getent", "shadow"] else None
    from devbox.passwords import rotate_password

    assert rotate_password(project, "b", "developer") is True
    assert applied == [(node2, moved.id)]


def test_ssh_config_names_each_hosts_node_address(client, node2, project):
    deployed_on_two_nodes(client, node2, project)
    text = render_ssh_config(project.spec, "/k", None, ENGINE.addresses(project, list(project.spec.hosts)))
    assert "Host lab-a\n    HostName 10.0.0.1\n" in text and "Host lab-b\n    HostName 10.0.0.2\n" in text
    assert "HostName 192.0.2.9" in render_ssh_config(project.spec, "/k", "192.0.2.9", {"a": "10.0.0.1"})


# --------------------------------------------------------------------------- volumes on every node


def test_down_volumes_removes_them_on_every_node_it_reaches_and_names_the_others(client, node2, project, said):
    deployed_on_two_nodes(client, node2, project)
    client.nodes.add("node-3", "10.0.0.3", hostname="n3")
    for engine in (client, node2):
        engine.volumes.add("lab_data")
        engine.volumes.add("lab_a-home")
        engine.volumes.add("other_data")
    ENGINE.down(project, volumes=True)
    assert [v.name for v in client.volumes.list()] == ["other_data"] == [v.name for v in node2.volumes.list()]
    assert said[-1] == ("note: nodes n3 are out of reach (no devbox.docker-host label): volumes of lab there stay; "
                        "remove them on each with `docker volume rm lab_a-home lab_b-home lab_data`")


def test_down_volumes_waits_for_the_workers_container_and_retries_a_volume_still_in_use(client, node2, project,
                                                                                       monkeypatch, said):  # fmt: skip
    """On a real two-node swarm the worker lets its task's container go a moment after the
    service is removed, and its engine refuses the volume while it goes (409 "volume is in use")."""
    import docker.errors

    moved = deployed_on_two_nodes(client, node2, project)
    client.workers = []  # the worker's container outlives its service...
    volume = node2.volumes.add("lab_b-home")
    listed = []
    list_containers = node2.containers.list

    def slowly_gone(*args: Any, **kwargs: Any) -> Any:
        listed.append(1)
        if len(listed) == 3 and moved in node2.containers.items:  # ...for two more looks
            node2.containers.items.remove(moved)
        return list_containers(*args, **kwargs)

    monkeypatch.setattr(node2.containers, "list", slowly_gone)
    refusals = [docker.errors.APIError("409 Client Error: Conflict (\"remove lab_b-home: volume is in use - [x]\")")]
    remove = volume.remove

    def refused_once(force: bool = False) -> None:
        """In use while the container is there, and once more after (the engine lets go late)."""
        if moved in node2.containers.items:
            raise docker.errors.APIError("409 Client Error: Conflict (remove lab_b-home: volume is in use)")
        if refusals:
            raise refusals.pop()
        remove(force=force)

    monkeypatch.setattr(volume, "remove", refused_once)
    operations.down(project, volumes=True)
    assert moved not in node2.containers.items and len(listed) >= 3
    assert refusals == [] and node2.volumes.list() == []


def test_down_asks_about_files_in_a_host_on_another_node(client, node2, make_project):
    from devbox.errors import PreflightError

    moved = deployed_on_two_nodes(client, node2, make_project())
    moved.attrs["Diff"] = [{"Path": "/opt/notes.txt", "Kind": 1}]
    with pytest.raises(PreflightError, match=r"^b: files outside the volumes would be lost by down"):
        operations.down(make_project(), volumes=False)  # nobody to ask
    assert len(client.services.list()) == 2


def test_validate_notes_volumes_of_unpinned_hosts(make_project):
    _problems, notes = swarm_spec_problems(make_project().spec)
    assert any(n.startswith("hosts.a: on a swarm of several nodes its named volumes") for n in notes)


def test_volumes_of_hosts_that_may_move_between_nodes_are_warned_of(client, node2, project):
    [warning] = volume_warnings(project.spec, read_nodes(client))  # b is pinned: no warning
    assert warning.startswith("hosts.a: its volumes (") and warning.endswith("may run on 2 nodes: moved, it finds "
                                                                             "them empty; pin it with node:")
    client.nodes.get("node-2").attrs["Spec"]["Availability"] = "drain"
    assert volume_warnings(project.spec, read_nodes(client)) == []  # one node left to run on


# --------------------------------------------------------------------------- GPU hosts: network anchors


def test_a_gpu_host_gets_a_network_anchor_on_its_nodes_before_its_own_task(client, node2, make_project):
    client.nodes.add("node-3", "10.0.0.3", [{"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": "GPU-a"}}],
                     hostname="n3")  # fmt: skip
    project = make_project(hosts={"c": {"ssh_port": 4434, "bind_address": "0.0.0.0", "gpus": 1}})
    deploy(project, list(project.spec.hosts), project.render())
    created = [(call["name"], call.get("constraints")) for call in client.called("services.create")]
    n3 = next(n for n in read_nodes(client) if n.hostname == "n3")
    assert created == [(anchor_name(project.spec, n3), ["node.id==node-3"]), ("lab_c", None)]
    assert client.called("services.create")[0]["networks"] == ["lab_net"]
    deploy(project, list(project.spec.hosts), project.render())  # the anchor is made once
    assert [c["name"] for c in client.called("services.create")].count(anchor_name(project.spec, n3)) == 1
    assert set(ENGINE.reach(project).containers) == {"c"}  # no host
    ENGINE.down(project, volumes=False)
    assert client.services.list() == [] and client.networks.list() == []


def test_hosts_without_gpus_get_no_anchor(client, node2, project):
    deploy(project, list(project.spec.hosts), project.render())
    assert sorted(c["name"] for c in client.called("services.create")) == ["lab_a", "lab_b"]


# --------------------------------------------------------------------------- doctor


def test_doctor_names_nodes_that_are_not_ready_and_hosts_it_cannot_place(client, node2, project):
    client.nodes.get("node-2").attrs["Spec"]["Availability"] = "drain"
    lines = {(c.subject, c.name): c for c in doctor(project)}
    assert lines[("swarm", "nodes")].ok is False
    assert lines[("swarm", "nodes")].detail == "not ready and active: n2 (ready, not active) (see `docker node ls`)"
    assert lines[("swarm", "placement")].detail.startswith("hosts.b.node: node 'n2' is not ready and active")


def test_doctor_says_which_gpu_nodes_and_whether_their_toolkit_honours_swarm(client, make_project):
    gpu = [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}]
    client.nodes.add("node-3", "10.0.0.3", gpu, hostname="n3", engine={"Labels": {"nvidia-container-toolkit": "1.17.8"}})
    client.nodes.add("node-4", "10.0.0.4", gpu, hostname="n4", engine={"Labels": {"nvidia-container-toolkit": "1.19.0"}})
    client.nodes.add("node-5", "10.0.0.5", gpu, hostname="n5")
    project = make_project(hosts={"c": {"ssh_port": 4434, "gpus": 1}})
    lines = {(subject, name): (ok, detail) for subject, name, ok, detail in gpu_lines(project.spec, read_nodes(client))}
    assert lines[("swarm", "gpu nodes")] == (True, "n3: 2 NVIDIA-GPU, n4: 2 NVIDIA-GPU, n5: 2 NVIDIA-GPU")
    assert lines[("n3", "nvidia toolkit")][0] is False and "1.17.8: before 1.19 it ignores" in lines[("n3", "nvidia toolkit")][1]
    assert lines[("n4", "nvidia toolkit")] == (True, "1.19.0")
    assert lines[("n5", "nvidia toolkit")][0] is None and "version not shown" in lines[("n5", "nvidia toolkit")][1]


def test_doctor_finds_a_pinned_hosts_port_taken_on_its_node(client, node2, project):
    other = client.services.add("web", tasks=[{"NodeID": "node-2", "DesiredState": "running",
                                               "Status": {"State": "running"}}])  # fmt: skip
    other.attrs["Endpoint"] = {"Ports": [{"PublishedPort": 4433, "PublishMode": "host"}]}
    node2.containers.add("squatter", host_config={"PortBindings": {"22/tcp": [{"HostPort": "4433"}]}})
    [(host, _name, ok, detail)] = port_lines(project, read_nodes(client), "node-1")
    assert (host, ok) == ("b", False)
    assert detail == "4433 on n2 taken by service web (host), container squatter: pick another ssh_port"
    other.task_list[0]["NodeID"] = "node-1"  # its task on another node: n2's port is its own
    node2.containers.items.clear()
    assert port_lines(project, read_nodes(client), "node-1")[0][2:] == (True, "4433 free on n2")
    other.attrs["Endpoint"]["Ports"][0]["PublishMode"] = "ingress"  # the routing mesh: on every node
    assert port_lines(project, read_nodes(client), "node-1")[0][2] is False


def test_doctor_without_a_registry_needs_the_image_on_every_node(client, node2, project, monkeypatch):
    from devbox.engines.swarm_doctor import image_lines

    nodes = read_nodes(client)
    [(_s, _n, ok, detail)] = image_lines(client, project.spec, "devbox-lab:abc", nodes, "node-1")
    assert ok is False and detail.startswith("not built yet, and hosts may run on other nodes (n2")
    client.images.add("devbox-lab:abc")
    client.services.job_outcomes["node-2"] = ("rejected", "No such image: devbox-lab:abc")
    [(_s, _n, ok, detail)] = image_lines(client, project.spec, "devbox-lab:abc", nodes, "node-1")
    assert (ok, detail) == (False, "missing on nodes a host may run on (n2: No such image: devbox-lab:abc): "
                                   "set image.registry")  # fmt: skip


def test_check_compares_the_gpus_swarm_assigned_with_the_spec(client, make_project):
    from devbox.checks import _gpus

    project = make_project(hosts={"c": {"ssh_port": 4434, "gpus": 2}})
    host = project.spec.hosts[0]
    given = client.containers.add("c", env=["DOCKER_RESOURCE_NVIDIA-GPU=GPU-a,GPU-b"])
    [check, *_rest] = _gpus(host, given, False, engine_assigns=True)
    assert (check.name, check.ok, check.detail) == ("gpu assignment", True, "swarm assigned GPU-a,GPU-b (NVIDIA-GPU), spec 2")
    short = client.containers.add("d", env=["DOCKER_RESOURCE_NVIDIA-GPU=1"])
    assert next(iter(_gpus(host, short, False, engine_assigns=True))).ok is False
