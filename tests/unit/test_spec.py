"""The spec model: defaults, merging, and one clear line per problem with its spec path."""

from __future__ import annotations

from pathlib import Path

import pytest

from devbox.errors import SpecError
from devbox.spec import DEFAULT_BASE_IMAGE, THREAD_VARIABLES, build_spec, load_spec, parse_yaml

from .helpers import make_spec, spec_data


def problems(**changes) -> list[str]:
    with pytest.raises(SpecError) as info:
        make_spec(**changes)
    return info.value.problems


def test_minimal_spec_gets_safe_defaults():
    spec = build_spec({"project": "lab", "hosts": {"a": {"ssh_port": 2222}}}, Path("."))
    host = spec.hosts[0]
    assert spec.image.base == DEFAULT_BASE_IMAGE and "latest" not in DEFAULT_BASE_IMAGE
    assert spec.image.user == "developer" and spec.image.shell == "zsh"
    assert spec.image.docker_cli is False
    assert host.bind_address == "127.0.0.1"
    assert host.root_login is False and host.docker_socket is False and host.privileged is False
    assert host.gpus.wanted is False
    assert spec.network.name == "net"


def test_defaults_are_overridden_per_host_key_by_key():
    spec = make_spec(
        defaults={"limits": {"cpus": 8, "memory": "16000M"}, "gpus": 1, "environment": {"A": "1"}},
        hosts={
            "master": {"ssh_port": 4432, "limits": {"memory": "64000M"}, "environment": {"B": 2}},
            "worker": {"ssh_port": 4433, "gpus": 0},
        },
    )
    master, worker = spec.hosts
    assert master.limits.cpus == 8 and master.limits.memory.text == "64000M"
    assert master.limits.memory.bytes == 64000 * 1024**2
    assert dict(master.environment)["A"] == "1" and dict(master.environment)["B"] == "2"
    assert master.gpus.count == 1 and not worker.gpus.wanted


def test_thread_variables_follow_the_cpu_limit_unless_set():
    spec = make_spec(hosts={
        "a": {"ssh_port": 1, "limits": {"cpus": 2.7}, "environment": {"OMP_NUM_THREADS": "1"}},
        "b": {"ssh_port": 2, "limits": {"cpus": 0.5}},
        "c": {"ssh_port": 3},
    })  # fmt: skip
    a, b, c = (dict(host.environment) for host in spec.hosts)
    assert a["OMP_NUM_THREADS"] == "1" and a["MKL_NUM_THREADS"] == "2"
    assert all(b[name] == "1" for name in THREAD_VARIABLES)
    assert not any(name in c for name in THREAD_VARIABLES)


@pytest.mark.parametrize(
    ("gpus", "count", "ids"),
    [(0, 0, ()), (2, 2, ()), ("all", "all", ()), ([0, "1"], 0, ("0", "1")),
     (["GPU-6f2b1c3d-aaaa-bbbb"], 0, ("GPU-6f2b1c3d-aaaa-bbbb",))],
)  # fmt: skip
def test_gpu_forms(gpus, count, ids):
    host = make_spec(hosts={"a": {"ssh_port": 1, "gpus": gpus}}).hosts[0]
    assert (host.gpus.count, host.gpus.device_ids) == (count, ids)


def test_gpu_switch_off_and_no_gpu_flag():
    data = spec_data(defaults={"gpus": "all"})
    assert not any(h.gpus.wanted for h in build_spec({**data, "gpu": "off"}, Path(".")).hosts)
    assert not any(h.gpus.wanted for h in build_spec(data, Path("."), gpu=False).hosts)
    assert all(h.gpus.wanted for h in build_spec(data, Path(".")).hosts)


def test_gpu_capabilities_as_comma_string():
    host = make_spec(hosts={"a": {"ssh_port": 1, "gpus": 1, "gpu_capabilities": "compute,utility"}}).hosts[0]
    assert host.gpus.capabilities == ("compute", "utility")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"hosts": {"worker": {"ssh_port": 1, "memroy": "1g"}}},
         "hosts.worker.memroy: unknown key (did you mean 'limits.memory'?)"),
        ({"hosts": {"worker": {"ssh_port": 1, "limits": {"memory": "16GB"}}}},
         "hosts.worker.limits.memory: '16GB' is not a size (use a whole number with a unit b, k, m or g"),
        ({"hosts": {"w": {"ssh_port": 1, "limits": {"memory": "1g"}, "reservations": {"memory": "2g"}}}},
         "hosts.w.reservations.memory: 2g is above the limit 1g"),
        ({"hosts": {"w": {"ssh_port": 1, "limits": {"cpus": 2}, "reservations": {"cpus": 4}}}},
         "hosts.w.reservations.cpus: 4 is above the limit 2"),
        ({"hosts": {"a": {"ssh_port": 4432}, "b": {"ssh_port": 4432}}},
         "hosts.b.ssh_port: 4432 is already used by host 'a'"),
        ({"hosts": {"Bad_Name": {"ssh_port": 1}}}, "hosts.Bad_Name: invalid host name"),
        ({"hosts": {"a": {"ssh_port": 1, "hostname": "x_y"}}}, "hosts.a.hostname: 'x_y' is not valid"),
        ({"hosts": {"a": {"ssh_port": 70000}}}, "hosts.a.ssh_port: 70000 is out of range for a TCP port"),
        ({"hosts": {"a": {"ssh_port": "ssh"}}}, "hosts.a.ssh_port: 'ssh' is not a TCP port"),
        ({"hosts": {"a": {"ssh_port": 1, "gpus": ["zero"]}}}, "hosts.a.gpus[0]: 'zero' is not a GPU id"),
        ({"hosts": {"a": {"ssh_port": 1, "gpus": "many"}}}, "hosts.a.gpus: 'many' is not a GPU count"),
        ({"hosts": {"a": {"ssh_port": 1, "gpu_capabilities": ["warp"]}}},
         "hosts.a.gpu_capabilities[0]: 'warp' is not a GPU capability"),
        ({"image": {"pip_requirements": "missing.txt"}},
         "image.pip_requirements: file 'missing.txt' does not exist"),
        ({"hosts": {"a": {"ssh_port": 1, "volumes": ["./nope:/data"]}}},
         "hosts.a.volumes[0]: bind source './nope' does not exist"),
        ({"hosts": {"a": {"ssh_port": 1, "volumes": ["data:relative"]}}},
         "hosts.a.volumes[0]: 'relative' is not an absolute container path (write it as SOURCE:/path"),
        ({"hosts": {"a": {"ssh_port": 1, "volumes": [{"source": "data", "target": "/d", "owner": "me"}]}}},
         "hosts.a.volumes[0].owner: 'me' is not an owner (use user: the login user's, or root: as Docker makes it)"),
        ({"hosts": {"a": {"ssh_port": 1, "volumes": [{"source": "/tmp", "target": "/d", "owner": "root"}]}}},
         "hosts.a.volumes[0].owner: a bind mount keeps the owner its folder has on this machine"),
        ({"hosts": {"a": {"ssh_port": 1, "authorized_keys": ["~/nokey.pub"]}}},
         "hosts.a.authorized_keys[0]: file '~/nokey.pub' does not exist"),
        ({"hosts": {"a": {"ssh_port": 1, "bind_address": "everywhere"}}},
         "hosts.a.bind_address: 'everywhere' is not an IP address"),
        ({"hosts": {"a": {"ssh_port": 1, "restart": "sometimes"}}}, "hosts.a.restart: 'sometimes' is not a restart policy"),
        ({"hosts": {"a": {"ssh_port": 1, "environment": {"BAD-KEY": "x"}}}},
         "hosts.a.environment.BAD-KEY: is not a variable name"),
        ({"hosts": {"a": {"ssh_port": 1, "environment": {"K": "two\nlines"}}}},
         "hosts.a.environment.K: must be one line"),
        ({"hosts": {"a": {"ssh_port": 1, "cap_add": ["FLY"]}}}, "hosts.a.cap_add[0]: 'FLY' is not a Linux capability"),
        ({"hosts": {"a": {"ssh_port": 1, "devices": ["/etc/passwd"]}}}, "hosts.a.devices[0]: '/etc/passwd' is not a device"),
        ({"hosts": {"a": {"ssh_port": 1, "ulimits": {"memlok": -1}}}}, "hosts.a.ulimits.memlok: unknown ulimit"),
        ({"hosts": {"a": {"ssh_port": 1, "cpuset": "0-9999"}}}, "hosts.a.cpuset: CPU 9999 does not exist here"),
        ({"hosts": {"a": {"ssh_port": 1, "shm_size": "8g", "limits": {"memory": "4g"}}}},
         "hosts.a.shm_size: 8g is above the memory limit 4g"),
        ({"hosts": {"a": {"ssh_port": 1, "password_auth": False}}},
         "hosts.a.password_auth: password_auth is false but no authorized_keys are given"),
        ({"hosts": {"a": {}}}, "hosts.a.ssh_port: missing"),
        ({"hosts": {}}, "hosts: no hosts defined"),
        ({"project": "Big Lab"}, "project: 'Big Lab' is not valid"),
        ({"project": None}, "project: missing"),
        ({"image": {"base": "ubuntu"}}, "image.base: 'ubuntu' is not pinned"),
        ({"image": {"base": "ubuntu:latest"}}, "image.base: 'ubuntu:latest' is not pinned"),
        ({"image": {"shell": "fish"}}, "image.shell: 'fish' is not supported (use zsh or bash)"),
        ({"image": {"user": "root"}}, "image.user: must not be root"),
        ({"image": {"packages": ["ok", "rm -rf /"]}}, "image.packages[1]: 'rm -rf /' is not valid"),
        ({"image": {"extra_lines": ["RUN a\nRUN b"]}}, "image.extra_lines[0]: must be one line each"),
        ({"network": {"driver": "overlay"}}, "network.driver: 'overlay' is not supported (use bridge)"),
        ({"network": {"subnet": "10.0.0.1/8"}}, "network.subnet: '10.0.0.1/8' is not a subnet"),
        ({"defaults": {"limits": {"memory": "lots"}}}, "defaults.limits.memory: 'lots' is not a size"),
        ({"hostz": {}}, "hostz: unknown key (did you mean 'hosts'?)"),
        ({"version": "1"}, "version: '1' is not supported (write it as a number: version: 1)"),
        ({"hosts": {"a": {"ssh_port": 1, "limits": {"memory": 512}}}},
         "hosts.a.limits.memory: 512 is below Docker's smallest memory limit, 6m (a size without a unit is bytes"),
        ({"defaults": {"password_env": {"developr": "PW"}}},
         "defaults.password_env.developr: host master has no account 'developr' that gets a password (use developer)"),
        ({"hosts": {"a": {"ssh_port": 1, "password_env": {"root": "PW"}}}},
         "hosts.a.password_env.root: host a has no account 'root' that gets a password (use developer, root only "
         "with root_login: true)"),
    ],
)  # fmt: skip
def test_bad_input_names_the_spec_path(changes, expected):
    found = problems(**changes)
    assert any(line.startswith(expected) for line in found), found


def test_every_problem_is_reported_at_once():
    found = problems(hosts={
        "a": {"ssh_port": 0, "limits": {"memory": "16GB"}, "gpus": ["x"]},
        "b": {"ssh_port": 1, "restart": "maybe"},
    })  # fmt: skip
    assert len(found) == 4, found
    assert all(line.startswith("hosts.") for line in found)


def test_a_problem_in_defaults_is_reported_once_at_its_own_path():
    found = problems(defaults={"limits": {"cpus": "eight"}})
    assert found == ["defaults.limits.cpus: 'eight' is not a CPU count (use a number of cores: 8, 0.5)"]


def test_duplicate_yaml_keys_are_an_error():
    with pytest.raises(SpecError) as info:
        parse_yaml("hosts:\n  a: {ssh_port: 1}\n  a: {ssh_port: 2}\n", "devbox.yaml")
    assert "line 3" in info.value.problems[0] and "duplicate key 'a'" in info.value.problems[0]


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "devbox.yaml"
    path.write_text("project: lab\nhosts: [\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.lines()[0].startswith(f"{path}: line ")


def test_missing_spec_file_says_how_to_create_one(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "devbox.yaml")
    assert "devbox init" in info.value.lines()[0]


def test_gpu_share_is_read_per_host_and_from_defaults():
    spec = make_spec(defaults={"gpu_share": True}, hosts={"a": {"ssh_port": 1, "gpus": 1},
                                                          "b": {"ssh_port": 2, "gpus": 1, "gpu_share": False}})  # fmt: skip
    assert [h.gpu_share for h in spec.hosts] == [True, False]
    assert problems(hosts={"a": {"ssh_port": 1, "gpu_share": "yes please"}})


def test_bind_paths_and_key_files_resolve_relative_to_the_spec(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "me.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA me@laptop\n")
    spec = make_spec(tmp_path, hosts={"a": {
        "ssh_port": 1, "volumes": ["./data:/data:ro", "cache:/cache"], "authorized_keys": ["me.pub"],
    }})  # fmt: skip
    host = spec.hosts[0]
    assert host.volumes[0].kind == "bind" and host.volumes[0].source == str(tmp_path / "data")
    assert host.volumes[0].read_only and host.volumes[1].kind == "volume"
    assert host.authorized_keys == ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA me@laptop",)


def test_uid_auto_takes_the_invoking_user(monkeypatch):
    monkeypatch.setenv("SUDO_UID", "1234")
    spec = make_spec(image={"base": "debian:bookworm", "uid": "auto"})
    assert spec.image.uid == 1234


def test_shm_default_fits_a_small_memory_limit():
    host = make_spec(hosts={"a": {"ssh_port": 1, "limits": {"memory": "1g"}}}).hosts[0]
    assert host.shm_size.text == "512m"


def test_a_password_env_entry_in_defaults_is_reported_once():
    found = problems(defaults={"password_env": {"developr": "PW"}})
    assert sum("developr" in line for line in found) == 1, found


@pytest.mark.parametrize(("subnet", "problem"), [
    ("127.0.0.1", "is not a subnet"), ("10.0.0.0/31", "leaves no room for hosts"),
    ("127.0.0.0/8", "loopback or multicast"), ("224.0.0.0/4", "loopback or multicast"),
])  # fmt: skip
def test_a_subnet_is_a_cidr_range_a_bridge_can_use(subnet, problem):
    found = problems(network={"name": "net", "subnet": subnet})
    assert any(line.startswith("network.subnet: ") and problem in line for line in found), found


def test_the_docker_socket_as_a_volume_is_taken_but_not_twice():
    socket = {"ssh_port": 1, "volumes": ["/var/run/docker.sock:/var/run/docker.sock"]}
    assert make_spec(hosts={"a": socket}).hosts[0].volumes[0].target == "/var/run/docker.sock"
    found = problems(hosts={"a": {**socket, "docker_socket": True}})
    assert found == ["hosts.a.volumes: /var/run/docker.sock is mounted by docker_socket: true already "
                     "(remove the volume, or docker_socket)"]  # fmt: skip
