"""Swarm mode, the pure parts: what a spec may ask of a swarm, and the service it becomes."""

from __future__ import annotations

import pytest

from devbox.engines.swarm import secret_name, service_definition, service_hash
from devbox.errors import SpecError
from devbox.layout import secret_sources
from devbox.render import render_project

from .helpers import fake_material, make_spec


def swarm_problems(**changes) -> list[str]:
    with pytest.raises(SpecError) as info:
        make_spec(engine="swarm", **changes)
    return info.value.problems


def test_swarm_rejects_what_services_cannot_do_where_it_is_asked():
    found = swarm_problems(defaults={"privileged": True}, hosts={
        "a": {"ssh_port": 1, "devices": ["/dev/null"], "cpuset": "0"},
        "b": {"ssh_port": 2, "gpus": [0]},
    })  # fmt: skip
    assert "hosts.a.devices: not supported by swarm services (use engine: compose)" in found
    assert "hosts.a.cpuset: not supported by swarm services (use engine: compose)" in found
    assert "defaults.privileged: not supported by swarm services (use engine: compose)" in found
    assert any(line.startswith("hosts.b.gpus: swarm hands out GPUs by count only") for line in found)


def test_unknown_engine_is_a_spec_error():
    with pytest.raises(SpecError) as info:
        make_spec(engine="k8s")
    assert info.value.problems == ["engine: 'k8s' is not an engine (use compose or swarm)"]


def test_service_definition_carries_the_hosts_settings():
    spec = make_spec(engine="swarm", defaults={"bind_address": "0.0.0.0"}, hosts={"master": {
        "ssh_port": 4432, "hostname": "boss", "gpus": 2, "restart": "on-failure:3", "cap_add": ["SYS_PTRACE"],
        "limits": {"cpus": 1.5, "memory": "2g"}, "reservations": {"cpus": 0.5, "memory": "1g"},
        "volumes": ["data:/data:ro"], "environment": {"A": "$literal"}, "shm_size": "512m",
    }})  # fmt: skip
    host = spec.hosts[0]
    definition = service_definition(spec, host, "devbox-lab:abc", "hash1", {"devbox_passwords": "lab_master_pw"})
    assert definition["name"] == "lab_master" and definition["hostname"] == "boss"
    assert "A=$literal" in definition["env"]  # the SDK passes values as they are: no $ escaping
    assert definition["endpoint_spec"]["Ports"] == [
        {"Protocol": "tcp", "PublishedPort": 4432, "TargetPort": 22, "PublishMode": "host"}]
    resources = definition["resources"]
    assert resources["Limits"] == {"NanoCPUs": 1_500_000_000, "MemoryBytes": 2 * 1024**3, "Pids": 4096}
    assert resources["Reservations"]["NanoCPUs"] == 500_000_000
    assert resources["Reservations"]["GenericResources"] == [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}]
    assert definition["restart_policy"] == {"Condition": "on-failure", "Delay": 0, "MaxAttempts": 3, "Window": 0}
    mounts = {m["Target"]: m for m in definition["mounts"]}
    assert mounts["/dev/shm"]["TmpfsOptions"]["SizeBytes"] == 512 * 1024**2
    assert mounts["/data"]["Source"] == "lab_data" and mounts["/data"]["ReadOnly"] is True
    assert definition["container_labels"]["devbox.host"] == "master"
    assert definition["labels"]["devbox.config-hash"] == "hash1"
    assert definition["cap_add"] == ["SYS_PTRACE"]


def test_secrets_are_named_by_content():
    spec = make_spec(engine="swarm")
    host = spec.hosts[0]
    assert set(secret_sources(host.name).values()) == {"devbox_passwords", "devbox_sshd_config",
                                                  "devbox_authorized_keys", "devbox_volumes", "devbox_host_key"}  # fmt: skip
    first = secret_name(spec, host, "devbox_passwords", b"a")
    assert first == secret_name(spec, host, "devbox_passwords", b"a")
    assert first != secret_name(spec, host, "devbox_passwords", b"b")
    assert first.startswith("lab_master_passwords_")


def test_a_new_password_is_a_new_service_on_a_swarm():
    """Tasks read passwords from immutable secrets: unlike compose, the service must change."""
    spec = make_spec(engine="swarm")
    host = spec.hosts[0]
    material = fake_material(spec)
    before = service_hash(render_project(spec, material), host)
    material["master"] = material["master"].__class__((("developer", "$6$other"),), material["master"].host_public_key)
    assert service_hash(render_project(spec, material), host) != before
