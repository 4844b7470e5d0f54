"""The fake Docker client answers as the engine does, for the parts devbox's unit tests rely on."""

from __future__ import annotations

import docker.errors
import pytest

from devbox.docker_api import connect

from .fake_docker import FakeDockerClient, serve


@pytest.fixture
def client():
    return FakeDockerClient()


def test_containers_are_listed_by_label_and_only_running_ones_unless_all(client):
    up = client.containers.add("lab-a", labels={"devbox.project": "lab", "devbox.host": "a"})
    down = client.containers.add("lab-b", labels={"devbox.project": "lab", "devbox.host": "b"}, status="exited")
    client.containers.add("other", labels={"devbox.project": "other"})
    assert client.containers.list(filters={"label": "devbox.project=lab"}) == [up]
    assert client.containers.list(all=True, filters={"label": ["devbox.project=lab"]}) == [up, down]
    assert client.containers.list(all=True, filters={"label": ["devbox.project=lab", "devbox.host=b"]}) == [down]
    assert len(client.containers.list(all=True, filters={"label": "devbox.host"})) == 2
    assert (up.name, up.status, up.labels["devbox.host"]) == ("lab-a", "running", "a")
    assert client.called("containers.list")[0] == {"all": False, "filters": {"label": "devbox.project=lab"}}


def test_a_filter_the_fake_does_not_know_is_refused_not_ignored(client):
    with pytest.raises(NotImplementedError):
        client.containers.list(filters={"ancestor": "debian"})


def test_exec_answers_logs_and_removal(client):
    container = client.containers.add("c", log=b"one\ntwo\nthree\n", execs={("hostname",): (0, b"c\n")})
    assert container.exec_run(["hostname"]) == (0, b"c\n")
    code, output = container.exec_run(["nvidia-smi", "-L"])
    assert code == 126 and b"executable file not found" in output
    assert container.logs(tail=2) == b"two\nthree\n" and list(container.logs(stream=True)) == [b"one\n", b"two\n", b"three\n"]
    with pytest.raises(docker.errors.APIError):
        container.remove()
    container.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("c")


def test_a_set_error_is_raised_by_every_call_of_that_name(client):
    client.images.add("probe:1")
    client.errors["container.start"] = docker.errors.APIError("could not select device driver")
    container = client.containers.create("probe:1", network_mode="none")
    with pytest.raises(docker.errors.APIError, match="device driver"):
        container.start()
    assert container.status == "created"
    with pytest.raises(docker.errors.ImageNotFound):
        client.containers.create("missing:1")


def test_images_match_by_reference(client):
    image = client.images.add("devbox-lab:abc")
    assert client.images.list(name="devbox-lab:abc") == [image] == client.images.list(name="devbox-lab")
    assert client.images.list(name="devbox-lab:other") == [] == client.images.list(name="devbox")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("devbox-lab:other")


def test_a_service_runs_a_task_and_a_container_and_removing_it_removes_both(client):
    client.swarm_manager("n1")
    service = client.services.create("img:1", name="lab_a", labels={"devbox.project": "lab"},
                                     container_labels={"devbox.project": "lab", "devbox.host": "a"})  # fmt: skip
    assert [t["Status"]["State"] for t in service.tasks(filters={"desired-state": "running"})] == ["running"]
    assert client.containers.list(filters={"label": "devbox.host=a"})[0].labels["com.docker.swarm.service.name"] == "lab_a"
    with pytest.raises(docker.errors.APIError):
        client.services.create("img:1", name="lab_a")
    service.remove()
    assert client.services.list() == [] and client.containers.list(all=True) == []


def test_a_secret_in_use_cannot_be_removed(client):
    secret = client.secrets.create("s1", b"x", labels={"devbox.project": "lab"})
    client.services.create("img:1", name="lab_a", secrets=[{"SecretID": secret.id, "SecretName": "s1"}])
    with pytest.raises(docker.errors.APIError, match="in use"):
        secret.remove()
    assert client.secrets.list(filters={"names": ["s1"]}) == [secret]


def test_volumes_match_part_of_a_name_as_the_engine_does(client):
    client.volumes.add("lab_data")
    client.volumes.add("lab_data2")
    assert [v.name for v in client.volumes.list(filters={"name": "lab_data"})] == ["lab_data", "lab_data2"]


def test_nodes_and_info(client):
    client.nodes.add("n2", "10.0.0.2")
    assert client.nodes.get("n2").attrs["Status"]["Addr"] == "10.0.0.2"
    with pytest.raises(docker.errors.NotFound):
        client.nodes.get("n3")
    info = client.info()
    info["NCPU"] = 1
    assert client.info()["NCPU"] == 8  # a copy, as a new answer from the engine would be


def test_devbox_connects_to_the_served_fake(client, monkeypatch):
    serve(monkeypatch, client)
    assert connect() is client  # (the real SDK asks the engine its API version as it connects)
