"""The swarm engine on a fake Docker client: which services are stale, what `deploy` asks the
engine for, what `down` removes, and where each host is reached."""

from __future__ import annotations

from typing import Any

import pytest

from devbox.engines.swarm import SwarmEngine, deploy, node_addresses, service_hash, stale_hosts
from devbox.errors import EngineError
from devbox.project import Project, recreating_note
from devbox.state import Credentials

from .fake_docker import FakeDockerClient, serve
from .helpers import make_spec

ENGINE = SwarmEngine()

SWARM_HOSTS = {"master": {"ssh_port": 4432, "bind_address": "0.0.0.0", "volumes": ["data:/data"]},
               "worker": {"ssh_port": 4433, "bind_address": "0.0.0.0"}}  # fmt: skip


@pytest.fixture
def client(monkeypatch):
    client = serve(monkeypatch, FakeDockerClient())
    client.swarm_manager("node-1")
    client.nodes.add("node-1", "10.0.0.1")
    return client


@pytest.fixture
def said():
    return []


@pytest.fixture
def make_project(tmp_path, said):
    def make(hosts: dict[str, Any] | None = None, **changes: Any) -> Project:
        spec = make_spec(tmp_path, engine="swarm", hosts=hosts or SWARM_HOSTS, **changes)
        return Project(spec, tmp_path / ".devbox", say=said.append, environ={})

    return make


@pytest.fixture
def project(make_project):
    return make_project()


def deployed(project: Project) -> Any:
    """Render and deploy every host; returns what was rendered."""
    rendered = project.render()
    deploy(project, list(project.spec.hosts), rendered)
    return rendered


# --------------------------------------------------------------------------- preflight


def test_an_engine_that_is_no_swarm_manager_is_refused(client, project):
    client.info_data["Swarm"] = {"LocalNodeState": "inactive"}
    [problem] = ENGINE.preflight(project)
    assert problem.startswith("engine: swarm, but this engine is not a swarm manager")


def test_gpus_need_a_node_that_offers_them(client, make_project):
    project = make_project(hosts={"master": {"ssh_port": 4432, "bind_address": "0.0.0.0", "gpus": 1}})
    [problem] = ENGINE.gpu_problems(project, {})
    assert "no swarm node offers NVIDIA-GPU generic resources" in problem
    client.nodes.add("gpu-node", "10.0.0.9", [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}])
    assert ENGINE.gpu_problems(project, {}) == []


# --------------------------------------------------------------------------- plan


def test_every_host_without_a_service_is_stale(client, project):
    assert [h.name for h in stale_hosts(project, list(project.spec.hosts), project.render())] == ["master", "worker"]


def test_nothing_is_stale_once_deployed(client, project):
    rendered = deployed(project)
    assert stale_hosts(project, list(project.spec.hosts), rendered) == []


def test_a_changed_or_not_running_service_is_stale(client, make_project):
    deployed(make_project())
    changed = make_project(hosts={**SWARM_HOSTS, "worker": {**SWARM_HOSTS["worker"], "hostname": "w1"}})
    assert [h.name for h in stale_hosts(changed, list(changed.spec.hosts), changed.render())] == ["worker"]
    (master,) = client.services.list(filters={"name": "lab_master"})
    master.task_list[0]["Status"]["State"] = "failed"
    assert [h.name for h in stale_hosts(changed, list(changed.spec.hosts), changed.render())] == ["master", "worker"]


# --------------------------------------------------------------------------- deploy


def test_deploy_creates_the_network_the_secrets_and_one_service_per_host(client, project, said):
    rendered = deployed(project)
    (network,) = client.called("networks.create")
    assert network["name"] == "lab_net" and network["driver"] == "overlay" and network["attachable"] is True
    assert network["labels"] == {"devbox.project": "lab"}
    created = {call["name"]: call for call in client.called("services.create")}
    assert list(created) == ["lab_master", "lab_worker"]
    master = created["lab_master"]
    assert master["image"] == rendered.image_tag
    assert master["labels"]["devbox.config-hash"] == service_hash(rendered, project.spec.hosts[0])
    assert master["container_labels"]["devbox.host"] == "master"
    # the empty authorized_keys is no secret (swarm refuses empty ones); the entrypoint reads none
    assert sorted(ref["File"]["Name"] for ref in master["secrets"]) == [
        "devbox_host_key", "devbox_passwords", "devbox_sshd_config"]  # fmt: skip
    assert {ref["SecretName"] for ref in master["secrets"]} <= {s.name for s in client.secrets.list()}
    assert all(ref["File"]["Mode"] == 0o400 for ref in master["secrets"])
    assert [(n["Target"], n["Aliases"]) for n in master["networks"]] == [("lab_net", ["master"])]
    assert master["mounts"][1]["Source"] == "lab_data"
    assert said[1:] == ["starting service lab_master", "starting service lab_worker"]  # after the render's note


def test_a_redeploy_replaces_the_service_and_drops_the_secrets_no_service_uses(client, project, said):
    deployed(project)
    before = {s.name for s in client.secrets.list()}
    first = project.render()
    credentials = Credentials.load(project.folder)
    credentials.rotate("master", "developer")
    credentials.save()
    rendered = project.render()
    assert rendered.password_digests["master"] != first.password_digests["master"]
    said.clear()
    deploy(project, [project.spec.hosts[0]], rendered)
    assert said == [recreating_note(["lab_master"]), "starting service lab_master"]
    after = {s.name for s in client.secrets.list()}
    assert len(before - after) == 1 and next(iter(before - after)).startswith("lab_master_passwords_")
    assert len(client.services.list()) == 2


def test_a_service_whose_task_fails_says_why(client, project):
    client.services.new_task_state = "failed"
    client.services.new_task_error = "no suitable node (insufficient resources on 1 node)"
    with pytest.raises(EngineError) as info:
        deployed(project)
    assert str(info.value) == "service lab_master failed to start: no suitable node (insufficient resources on 1 node)"


# --------------------------------------------------------------------------- down


def test_down_removes_services_secrets_and_network_and_keeps_volumes(client, project):
    deployed(project)
    client.volumes.add("lab_data")
    ENGINE.down(project, volumes=False)
    assert client.services.list() == [] and client.secrets.list() == [] and client.networks.list() == []
    assert client.containers.list(all=True) == [] and [v.name for v in client.volumes.list()] == ["lab_data"]


def test_down_with_volumes_removes_the_projects_named_volumes(client, project):
    deployed(project)
    client.volumes.add("lab_data")
    client.volumes.add("other_cache")
    ENGINE.down(project, volumes=True)
    assert [v.name for v in client.volumes.list()] == ["other_cache"]
    assert client.called("volume.remove") == [{"name": "lab_data", "force": True}]


# --------------------------------------------------------------------------- addresses


def test_a_host_on_this_node_is_reached_here_and_one_elsewhere_at_its_node(client, project):
    client.nodes.add("node-2", "10.0.0.2")
    deployed(project)
    (worker,) = client.services.list(filters={"name": "lab_worker"})
    worker.task_list[0]["NodeID"] = "node-2"
    assert node_addresses(project, list(project.spec.hosts)) == {"master": "127.0.0.1", "worker": "10.0.0.2"}
    assert ENGINE.addresses(project, list(project.spec.hosts)) == {"master": "127.0.0.1", "worker": "10.0.0.2"}


def test_a_host_without_a_service_is_reached_at_its_own_address(client, project):
    assert node_addresses(project, list(project.spec.hosts)) == {"master": "127.0.0.1", "worker": "127.0.0.1"}
