"""Issue 14: what validates, runs; what you wrote, the container gets.

Each case the issue lists, as a unit test: a value reaches the host as written, and a spec the
engine would refuse at `up` is refused by `validate` instead (exit 2, with the fix).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devbox.engines import spec_rules
from devbox.errors import SpecError
from devbox.spec import build_spec, parse_yaml

from .helpers import make_spec


def problems(**changes) -> list[str]:
    with pytest.raises(SpecError) as info:
        make_spec(**changes)
    return info.value.problems


def from_yaml(text: str, directory: Path = Path("/nonexistent")):
    return build_spec(parse_yaml(text, "devbox.yaml"), directory, rules=spec_rules)


# --------------------------------------------------------------------------- YAML 1.1 rewrites

SPEC_TEXT = """
project: lab
image: {base: "debian:bookworm"}
common: &common
  ssh_port: 4432
hosts:
  on:
    <<: *common
    environment: {VER: 3.10, UMASK: 0022, T: 1:30, H: 0x1F, X: yes, N: no, E: 1e3, Q: "3.10",
                  YES: 1, OFF: 2, D: 2024-01-01, B: true, EQ: =}
"""


def test_numbers_and_yes_no_keep_their_written_form_where_text_is_expected():
    spec = from_yaml(SPEC_TEXT.replace("common: &common\n  ssh_port: 4432\n", "").replace(
        "<<: *common", "ssh_port: 4432"))  # fmt: skip
    (host,) = spec.hosts
    assert host.name == "on"
    env = dict(host.environment)
    assert env == {"VER": "3.10", "UMASK": "0022", "T": "1:30", "H": "0x1F", "X": "yes", "N": "no", "E": "1e3",
                   "Q": "3.10", "YES": "1", "OFF": "2", "D": "2024-01-01", "B": "true", "EQ": "="}  # fmt: skip


def test_merge_keys_work_and_own_keys_win():
    data = parse_yaml("a: &a {x: 1, y: 2}\nb: {<<: *a, y: 3}\n", "devbox.yaml")
    assert data["b"] == {"x": 1, "y": 3}
    text = SPEC_TEXT.replace("common: &common", "x-common: &common")
    with pytest.raises(SpecError) as info:  # an unknown top key is still reported...
        from_yaml(text)
    assert info.value.problems == ["x-common: unknown key (known keys: version, project, engine, network, image, "
                                   "gpu, defaults, hosts)"]  # fmt: skip
    # ...and the anchor may live in defaults-like places a spec allows: a host merging another
    text = SPEC_TEXT.replace("common: &common\n  ssh_port: 4432\n", "").replace(
        "hosts:\n", "hosts:\n  base: &common {ssh_port: 4431}\n").replace("<<: *common", "<<: *common\n    ssh_port: 4432")
    spec = from_yaml(text)
    assert [(h.name, h.ssh_port) for h in spec.hosts] == [("base", 4431), ("on", 4432)]


def test_numbers_still_count_where_numbers_are_expected():
    spec = from_yaml("project: lab\nimage: {base: 'debian:bookworm'}\n"
                     "hosts: {a: {ssh_port: 4432, limits: {cpus: 2.50}, gpus: [0, 1], privileged: true}}\n")
    (host,) = spec.hosts
    assert host.ssh_port == 4432 and host.limits.cpus == 2.5 and host.gpus.device_ids == ("0", "1") and host.privileged


def test_yes_is_not_a_boolean_and_the_problem_says_so():
    with pytest.raises(SpecError) as info:
        from_yaml("project: lab\nimage: {base: 'debian:bookworm'}\nhosts: {a: {ssh_port: 4432, privileged: yes}}\n")
    assert info.value.problems == ["hosts.a.privileged: must be true or false, not 'yes'"]


def test_sexagesimal_is_not_a_port():
    with pytest.raises(SpecError) as info:
        from_yaml("project: lab\nimage: {base: 'debian:bookworm'}\nhosts: {a: {ssh_port: 1:30}}\n")
    assert "'1:30' is not a TCP port" in info.value.problems[0]


# --------------------------------------------------------------------------- addresses and ssh


@pytest.mark.parametrize(("address", "why"), [
    ("192.0.2.1", "a documentation address"), ("2001:db8::1", "a documentation address"),
    ("224.0.0.1", "a multicast address"), ("ff02::1", "a multicast address"),
    ("255.255.255.255", "a broadcast address"), ("240.0.0.1", "a reserved address"),
    ("0.0.0.1", "not an address of any machine"), ("fe80::1", "IPv6 link-local needs an interface"),
])  # fmt: skip
def test_addresses_nothing_can_listen_on_are_refused(address, why):
    assert problems(defaults={"bind_address": address}) == [
        f"defaults.bind_address: {address!r} cannot be listened on: {why} (use 127.0.0.1, 0.0.0.0 or an "
        "address of this machine)"]  # fmt: skip


def test_ipv6_wildcard_is_reached_on_ipv6_loopback():
    from devbox.render import connect_address, render_ssh_config

    spec = make_spec(defaults={"bind_address": "::"})
    assert {connect_address(host) for host in spec.hosts} == {"::1"}
    assert "HostName ::1" in render_ssh_config(spec, "/k")
    v4 = make_spec(defaults={"bind_address": "0.0.0.0"})  # noqa: S104 - spec text
    assert {connect_address(host) for host in v4.hosts} == {"127.0.0.1"}


def test_devbox_ssh_quotes_a_known_hosts_path_with_a_space():
    from devbox.render import ssh_argv

    spec = make_spec()
    argv = ssh_argv(spec, spec.hosts[0], "/my project/.devbox/known_hosts", ("--", "true"))
    assert 'UserKnownHostsFile="/my project/.devbox/known_hosts"' in argv
    assert argv[-3:] == ["127.0.0.1", "--", "true"] and argv[argv.index("-l") + 1] == "developer"


# --------------------------------------------------------------------------- project names

# Docker's reference grammar for a repository path component (distribution/reference).
DOCKER_NAME = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"


@pytest.mark.parametrize("project", ["a-_b", "x___y", "x-", "x_", "a__b", "lab", "0", "a-b"])
def test_every_project_name_gives_an_image_name_the_engine_accepts(project):
    import re

    from devbox.render import image_repository, render_project

    from .helpers import fake_material

    spec = make_spec(project=project)
    tag = render_project(spec, fake_material(spec)).image_tag
    name, _, _ = tag.partition(":")
    assert re.fullmatch(DOCKER_NAME, name), tag
    assert name == image_repository(project)
    if re.fullmatch(DOCKER_NAME, f"devbox-{project}"):
        assert name == f"devbox-{project}"  # names that were valid keep their image
    assert image_repository("a-_b") != image_repository("a-b")


@pytest.mark.parametrize(("folder", "project"), [("ünï", "uni"), ("Café Lab", "cafe-lab"), ("a-_b", "a-_b"),
                                                 ("___", "devbox"), ("x" * 62 + "-y", "x" * 62)])  # fmt: skip
def test_init_derives_a_readable_project_name_from_the_folder(tmp_path, folder, project):
    from devbox.scaffold import default_project_name

    assert default_project_name(tmp_path / folder) == project


@pytest.mark.parametrize("folder", ["实验", "Ωmega", "проект"])
def test_init_asks_for_a_project_name_when_the_folder_has_none_in_ascii(tmp_path, folder):
    from devbox.errors import UsageError
    from devbox.scaffold import init_project

    with pytest.raises(UsageError, match=r"devbox init --project NAME"):
        init_project(tmp_path / folder, None, force=False)
    assert init_project(tmp_path / folder, "lab", force=False)


# --------------------------------------------------------------------------- specs the engine refuses at up


@pytest.mark.parametrize("user", ["daemon", "sudo", "bin", "nobody", "sshd", "users", "ubuntu"])
def test_an_image_user_the_base_already_has_is_refused(user):
    assert problems(image={"base": "debian:bookworm", "user": user}) == [
        f"image.user: {user!r} is an account or group the base image already has (choose another name, "
        "e.g. developer)"]  # fmt: skip


@pytest.mark.parametrize(("setting", "value"), [("limits", {"memory": "99999999999g"}),
                                                ("reservations", {"memory": "9999999999999999999"})])  # fmt: skip
def test_a_size_beyond_what_the_engine_reads_is_refused(setting, value):
    assert problems(defaults={setting: value}) == [
        f"defaults.{setting}.memory: {value['memory']!r} is too large (at most 8388608g)"]


def test_a_shared_memory_size_beyond_what_the_engine_reads_is_refused():
    assert problems(defaults={"shm_size": "99999999999g"}) == [
        "defaults.shm_size: '99999999999g' is too large (at most 8388608g)"]


@pytest.mark.parametrize(("ulimits", "problem"), [
    ({"nofile": 2**40}, "ulimits.nofile: the kernel takes at most {nr_open} for nofile (lower it; -1 is not possible)"),
    ({"nofile": -1}, "ulimits.nofile: the kernel takes at most {nr_open} for nofile (lower it; -1 is not possible)"),
    ({"nice": 41}, "ulimits.nice: the kernel takes at most 40 for nice (lower it)"),
    ({"rtprio": {"soft": 1, "hard": 100}}, "ulimits.rtprio: the kernel takes at most 99 for rtprio (lower it)"),
])  # fmt: skip
def test_ulimits_beyond_the_kernel_range_are_refused(ulimits, problem):
    nr_open = Path("/proc/sys/fs/nr_open").read_text().strip()
    assert problems(defaults={"ulimits": ulimits}) == [f"defaults.{problem.format(nr_open=nr_open)}"]
    assert make_spec(defaults={"ulimits": {"nofile": 1024, "memlock": -1, "nice": 40}})


def test_a_backwards_cpu_range_is_refused():
    assert problems(defaults={"cpuset": "1-0"}) == ["defaults.cpuset: 1-0 is backwards (write the lower CPU first: 0-1)"]


@pytest.mark.parametrize(("volume", "why"), [
    ("data:/", "it would replace the container's whole file system"),
    ("data:/.", "it would replace the container's whole file system"),
    ("data:/proc", "the kernel's process files"), ("data:/proc/x", "the kernel's process files"),
    ("data:/sys/", "the kernel's sysfs"), ("data:/dev/shm", "the container's devices"),
    ("data:/etc/hosts", "a file the engine writes"), ("data:/run/secrets", "devbox's secrets"),
])  # fmt: skip
def test_volume_targets_the_engine_refuses_are_refused(volume, why):
    target = volume.split(":", 1)[1]
    assert problems(defaults={"volumes": [volume]}) == [
        f"defaults.volumes[0]: {target!r} cannot be a mount target: {why} (mount it on another path, e.g. /data)"]
    assert make_spec(defaults={"volumes": ["data:/data", "data2:/etc/devices", "dd:/procfs"]})


BACKSLASH = "\\"


@pytest.mark.parametrize(("line", "problem"), [
    ("RUN apt-get install -y " + BACKSLASH, "ends in " + BACKSLASH),
    ("RUN echo a " + BACKSLASH + " \t", "ends in " + BACKSLASH),
    ("RUN x\nRUN y", "must be one line each"),
    ("RUN x\r", "must be one line each"),
])  # fmt: skip
def test_extra_lines_that_would_run_into_the_next_instruction_are_refused(line, problem):
    (found,) = problems(image={"base": "debian:bookworm", "extra_lines": [line]})
    assert found.startswith(f"image.extra_lines[0]: {problem}")
    assert make_spec(image={"base": "debian:bookworm", "extra_lines": ["RUN echo a" + BACKSLASH + "b"]})


def test_an_environment_larger_than_the_kernel_passes_is_refused():
    big = "x" * 140_000
    assert problems(hosts={"master": {"ssh_port": 4432, "environment": {"BIG": big}}}) == [
        "hosts.master.environment.BIG: is 140005 bytes, more than the kernel passes in one variable (131072; "
        "put it in a file, e.g. a volume)"]  # fmt: skip
    many = {f"V{i}": "y" * 100_000 for i in range(11)}
    assert problems(defaults={"environment": many}) == [
        "defaults.environment: host master's variables take 1100045 bytes, more than a process can safely be "
        "started with (1048576; put large values in files)",
        "defaults.environment: host worker's variables take 1100045 bytes, more than a process can safely be "
        "started with (1048576; put large values in files)"]  # fmt: skip
    assert make_spec(defaults={"environment": {"OK": "z" * 120_000}})


def test_a_hostname_that_names_another_host_is_refused():
    assert problems(hosts={"master": {"ssh_port": 4432}, "worker": {"ssh_port": 4433, "hostname": "master"}}) == [
        "hosts.worker.hostname: 'master' is already the hostname of 'master'"]
    assert problems(hosts={"master": {"ssh_port": 4432, "hostname": "head"},
                           "worker": {"ssh_port": 4433, "hostname": "master"}}) == [
        "hosts.worker.hostname: 'master' is the name of host 'master', which other hosts reach by that name "
        "(choose another hostname)"]  # fmt: skip
    assert problems(hosts={"master": {"ssh_port": 4432, "hostname": "worker"}, "worker": {"ssh_port": 4433}}) == [
        "hosts.worker.hostname: 'worker' is already the hostname of 'master'"]
    swapped = {"a": {"ssh_port": 1, "hostname": "b"}, "b": {"ssh_port": 2, "hostname": "a"}}
    assert len(problems(hosts=swapped)) == 2


# --------------------------------------------------------------------------- other things found


def test_status_shows_gpus_as_all_and_a_list_of_ids():
    from devbox.cli import _requests_text

    assert _requests_text([{"count": -1, "device_ids": None}]) == "all GPUs"
    assert _requests_text([{"count": 0, "device_ids": ["0", "1"]}]) == "#0, #1"
    assert _requests_text([{"count": 1, "device_ids": None}]) == "1 GPU"
    assert _requests_text([]) == "-"


def test_the_gpus_column_never_shows_a_bare_index_that_reads_as_no_gpu():
    # issue 21: the demo's master showed `0` (its GPU index) beside a CPU host's `-`
    from devbox.cli import _devices_text

    assert _devices_text([{"index": "0", "uuid": "GPU-5d5ba0d6-aaaa", "name": ""}]) == "#0 (GPU-5d5ba0)"
    assert _devices_text([{"index": "1", "uuid": "", "name": ""}]) == "#1"


def test_a_one_letter_volume_name_compose_takes_for_a_drive_is_refused():
    # found by tests/e2e/test_accepted_up.py (seed 7): the engine refused 'o:/mnt/o' as a relative path
    assert problems(defaults={"volumes": ["o:/mnt/o"]}) == [
        "defaults.volumes[0]: 'o': Compose reads a one-letter volume name before ':' as a Windows drive (name "
        "the volume with two or more characters)"]  # fmt: skip
    assert make_spec(defaults={"volumes": ["o1:/mnt/o"]})
