"""The swarm engine on a fake Docker client: which services are stale, what `deploy` asks the
engine for, what `down` removes, and where each host is reached."""

from __future__ import annotations

from typing import Any

import pytest

from devbox.converge import converge
from devbox.engines import open_project
from devbox.engines.swarm import SwarmEngine, deploy, node_addresses, service_hash, stale_hosts
from devbox.errors import EngineError, PreflightError, SpecError
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
def make_project(tmp_path, said):
    """Swarm specs, with this module's hosts unless given others."""

    def make(hosts: dict[str, Any] | None = None, **changes: Any) -> Project:
        spec = make_spec(tmp_path, engine="swarm", hosts=hosts or SWARM_HOSTS, **changes)
        return open_project(spec, tmp_path / ".devbox", say=said.append, environ={})

    return make


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
    project = make_project(hosts={"master": {"ssh_port": 4432, "bind_address": "0.0.0.0", "gpus": 2}})
    [problem] = ENGINE.gpu_problems(project, {})
    assert problem.startswith("hosts.master.gpus: 2 GPUs, but no swarm node advertises that many NVIDIA-GPU")
    client.nodes.add("gpu-node", "10.0.0.9", [{"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": "GPU-a"}}])
    assert ENGINE.gpu_problems(project, {}) != []  # one named GPU is not two
    client.nodes.add("gpu-node2", "10.0.0.8", [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}])
    assert ENGINE.gpu_problems(project, {}) == []


def test_a_node_that_does_not_exist_is_refused_before_anything_is_deployed(client, make_project):
    project = make_project(hosts={"master": {"ssh_port": 4432, "bind_address": "0.0.0.0", "node": "n9"}})
    with pytest.raises(PreflightError) as info:
        converge(project, list(project.spec.hosts), project.render(), only=False)
    assert str(info.value) == "hosts.master.node: no swarm node 'n9' (nodes: node-1; name one by hostname or ID)"
    assert client.called("services.create") == [] and client.called("networks.create") == []


def test_a_drained_node_or_labels_no_node_has_are_refused(client, make_project):
    client.nodes.add("id-2", "10.0.0.2", hostname="n2", availability="drain")
    project = make_project(hosts={"a": {"ssh_port": 4432, "node": "n2"},
                                  "b": {"ssh_port": 4433, "node_labels": {"gpu": "a100"}}})  # fmt: skip
    assert ENGINE.gpu_problems(project, {}) == []
    from devbox.engines.swarm import _placement_problems

    assert _placement_problems(project) == [
        "hosts.a.node: node 'n2' is not ready and active (see `docker node ls`; bring it back, or name another node)",
        "hosts.b.node_labels: no ready, active swarm node has label gpu=a100 (label a node with "
        "`docker node update --label-add`, or change the placement)",
    ]


def test_placement_becomes_constraints_by_hostname_id_and_labels(client, make_project):
    client.nodes.add("abcdef123456", "10.0.0.2", hostname="n2", labels={"gpu": "a100"})
    project = make_project(hosts={"a": {"ssh_port": 4432, "node": "n2"}, "b": {"ssh_port": 4433, "node": "abcdef"},
                                  "c": {"ssh_port": 4434, "node_labels": {"gpu": "a100"}}, "d": {"ssh_port": 4435}})  # fmt: skip
    deployed(project)
    created = {call["name"]: call.get("constraints") for call in client.called("services.create")}
    assert created == {"lab_a": ["node.hostname==n2"], "lab_b": ["node.id==abcdef123456"],
                       "lab_c": ["node.labels.gpu==a100"], "lab_d": None}  # fmt: skip


# --------------------------------------------------------------------------- plan


def test_every_host_without_a_service_is_stale(client, project):
    assert [h.name for h in stale_hosts(project, list(project.spec.hosts), project.render())] == ["master", "worker"]


def test_nothing_is_stale_once_deployed(client, project):
    rendered = deployed(project)
    assert stale_hosts(project, list(project.spec.hosts), rendered) == []


def test_a_change_only_the_service_definition_sees_makes_the_host_stale(client, make_project):
    client.nodes.add("id-2", "10.0.0.2", hostname="n2")
    deployed(make_project())
    pinned = make_project(hosts={**SWARM_HOSTS, "worker": {**SWARM_HOSTS["worker"], "node": "n2"}})
    rendered = pinned.render()
    assert rendered.config_hashes == make_project().render().config_hashes  # compose's hash does not see it
    assert [h.name for h in stale_hosts(pinned, list(pinned.spec.hosts), rendered)] == ["worker"]


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
    owner = {"devbox.project": "lab", "devbox.owner": project.owner, "devbox.owner-folder": str(project.folder)}
    assert network["labels"] == owner and len(project.owner or "") == 16
    created = {call["name"]: call for call in client.called("services.create")}
    assert list(created) == ["lab_master", "lab_worker"]
    master = created["lab_master"]
    assert master["image"] == rendered.image_tag
    assert master["labels"]["devbox.config-hash"].startswith(service_hash(rendered, project.spec.hosts[0]) + "-")
    assert master["container_labels"]["devbox.host"] == "master"
    # the empty authorized_keys is no secret (swarm refuses empty ones); the entrypoint reads none
    assert sorted(ref["File"]["Name"] for ref in master["secrets"]) == [
        "devbox_host_key", "devbox_passwords", "devbox_sshd_config", "devbox_volumes"]  # fmt: skip
    assert {ref["SecretName"] for ref in master["secrets"]} <= {s.name for s in client.secrets.list()}
    assert all(ref["File"]["Mode"] == 0o400 for ref in master["secrets"])
    assert [(n["Target"], n["Aliases"]) for n in master["networks"]] == [("lab_net", ["master"])]
    assert master["mounts"][1]["Source"] == "lab_data"
    # the owning spec on every object: service, containers, secrets and the volumes mounts make
    assert owner.items() <= master["labels"].items() and owner.items() <= master["container_labels"].items()
    assert master["mounts"][1]["VolumeOptions"]["Labels"] == owner
    assert all(owner.items() <= call["labels"].items() for call in client.called("secrets.create"))
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


def test_each_host_is_reached_at_the_node_that_runs_it(client, project):
    client.nodes.add("node-2", "10.0.0.2")
    deployed(project)
    (worker,) = client.services.list(filters={"name": "lab_worker"})
    worker.task_list[0]["NodeID"] = "node-2"
    assert node_addresses(project, list(project.spec.hosts)) == {"master": "10.0.0.1", "worker": "10.0.0.2"}
    assert ENGINE.addresses(project, list(project.spec.hosts)) == {"master": "10.0.0.1", "worker": "10.0.0.2"}


def test_a_host_without_a_service_is_reached_at_its_own_address(client, project):
    assert node_addresses(project, list(project.spec.hosts)) == {"master": "127.0.0.1", "worker": "127.0.0.1"}


# --------------------------------------------------------------------------- the image on every node


def test_with_a_registry_up_pushes_the_image_and_deploys_it_by_digest(client, make_project, monkeypatch):
    monkeypatch.setattr("devbox.engines.swarm.registry_problems", lambda spec: [])
    client.nodes.add("id-2", "10.0.0.2", hostname="n2")
    project = make_project(image={"base": "debian:bookworm", "registry": "10.0.0.1:5000/team"})
    rendered = project.render()
    client.images.add(rendered.image_tag)
    converge(project, list(project.spec.hosts), rendered, only=False)
    repository = f"10.0.0.1:5000/team/{rendered.image_tag.split(':')[0]}"
    assert client.called("images.push")[0]["repository"] == repository
    images = {call["image"] for call in client.called("services.create")}
    assert len(images) == 1 and next(iter(images)).startswith(f"{repository}@sha256:")
    assert client.called("volume.remove") == [] and "image.remove" not in [c for c, _ in client.calls]


def test_a_push_the_registry_refuses_is_one_line(client, make_project, monkeypatch):
    monkeypatch.setattr("devbox.engines.swarm.registry_problems", lambda spec: [])
    project = make_project(image={"base": "debian:bookworm", "registry": "10.0.0.1:5000"})
    rendered = project.render()
    client.images.add(rendered.image_tag)
    client.images.push_events = [{"error": "unauthorized: authentication required"}]
    with pytest.raises(EngineError) as info:
        converge(project, list(project.spec.hosts), rendered, only=False)
    assert "pushing 10.0.0.1:5000/devbox-lab:" in str(info.value) and "unauthorized" in str(info.value)
    assert client.called("services.create") == []


def test_a_registry_that_does_not_answer_is_refused(make_project):
    from devbox.engines.swarm_nodes import registry_problems

    project = make_project(image={"base": "debian:bookworm", "registry": "127.0.0.1:9"})
    [problem] = registry_problems(project.spec, timeout=2)
    assert problem.startswith("image.registry: 127.0.0.1:9 does not answer (")


def test_without_a_registry_every_node_a_host_may_run_on_must_have_the_image(client, project):
    client.nodes.add("id-2", "10.0.0.2", hostname="n2")
    client.nodes.add("id-3", "10.0.0.3", hostname="n3", availability="drain")  # no host runs there: not asked
    client.services.job_outcomes["id-2"] = ("rejected", "No such image: devbox-lab:abc")
    rendered = project.render()
    client.images.add(rendered.image_tag)
    with pytest.raises(PreflightError) as info:
        converge(project, list(project.spec.hosts), rendered, only=False)
    assert str(info.value).startswith(f"image.registry: not set, and swarm nodes the hosts may run on lack the "
                                      f"image {rendered.image_tag} (n2: No such image: devbox-lab:abc): set image.registry")
    probes = client.called("services.create")
    assert [p["constraints"] for p in probes] == [["node.id==id-2"]]  # one job, on the one other node
    assert client.services.list() == []  # the probe is gone, nothing deployed


def test_without_a_registry_nodes_that_have_the_image_are_enough(client, project):
    client.nodes.add("id-2", "10.0.0.2", hostname="n2")
    rendered = project.render()
    client.images.add(rendered.image_tag)
    converge(project, list(project.spec.hosts), rendered, only=False)
    assert sorted(s.name for s in client.services.list()) == ["lab_master", "lab_worker"]


def test_a_swarm_builds_once_on_the_manager_with_the_build_secrets(client, make_project, monkeypatch):
    """Build secrets on a swarm: the one build is compose's on the manager (the engine devbox
    talks to), from the same docker-compose.yml, so the same secrets reach it; a missing one is
    refused before compose runs and before any service changes."""
    builds: list[tuple[str, ...]] = []

    def run_compose(found: Any, compose_file: Any, project: str, *args: str, quiet: bool = False) -> None:
        builds.append(args)
        client.images.add(rendered.image_tag)  # what the build leaves on the manager

    monkeypatch.setattr("devbox.docker_api.find_compose", lambda: "compose")
    monkeypatch.setattr("devbox.docker_api.run_compose", run_compose)
    project = make_project(image={"base": "debian:bookworm", "build_secrets": {"tok": {"env": "DEVBOX_UNIT_TOKEN"}},
                                  "extra_lines": ["RUN --mount=type=secret,id=tok test -s /run/secrets/tok"]})  # fmt: skip
    rendered = project.render()
    build = next(f for f in rendered.files if f.path == "docker-compose.yml").content
    assert "source: build.tok" in build and "environment: DEVBOX_UNIT_TOKEN" in build
    monkeypatch.delenv("DEVBOX_UNIT_TOKEN", raising=False)
    with pytest.raises(SpecError) as info:
        converge(project, list(project.spec.hosts), rendered, only=False)
    assert info.value.problems[0].startswith("image.build_secrets.tok.env: environment variable DEVBOX_UNIT_TOKEN")
    assert builds == [] and client.called("services.create") == []
    monkeypatch.setenv("DEVBOX_UNIT_TOKEN", "a-value")
    converge(project, list(project.spec.hosts), rendered, only=False)
    assert builds == [("build", "master")]
    assert len(client.called("services.create")) == 2


# --------------------------------------------------------------------------- rendering off `up`


def test_rendering_a_swarm_spec_outside_up_gives_out_no_gpus(client, make_project, tmp_path):
    """`passwd` and the looking commands render as `up` does on a swarm: the swarm places GPU
    hosts itself, so a spec wanting more GPUs than this machine has is no problem, no ledger is
    written and the config hashes are `up`'s."""
    from .test_gpus import smi_env

    hosts = {name: {"ssh_port": 4432 + i, "gpus": 1} for i, name in enumerate(("a", "b", "c"))}
    client.nodes.add("gpu-node", "10.0.0.9", [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 4}}])
    project = make_project(hosts=hosts)
    project.environ = smi_env(tmp_path, "two")
    project.rendered_once()
    assert not (project.folder / "gpus.json").exists()
    from devbox.passwords import rotate_password

    rotate_password(project, "a", "developer")
    assert not (project.folder / "gpus.json").exists()
    assert project.render().config_hashes == project.render(allocate_gpus=False).config_hashes
