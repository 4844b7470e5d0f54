"""Hardening without an engine: warnings for mounts that give the machine away, and ssh-config's
refusal of addresses that could add directives to the user's SSH config."""

from __future__ import annotations

import stat

import pytest
from click.testing import CliRunner

from devbox.cli import cli
from devbox.hazards import mount_hazard, mount_warnings
from devbox.spec import Volume
from tests.unit.helpers import make_spec


def bind(source: str, read_only: bool = False) -> Volume:
    return Volume("bind", source, "/mnt/x", read_only)


@pytest.mark.parametrize("source", [
    "/", "/etc", "/etc/shadow", "/root", "/root/.ssh", "/boot", "/proc", "/proc/1", "/sys", "/dev",
    "/run", "/run/docker.sock", "/var/run", "/var/lib/docker", "/var/lib/docker/volumes", "/var",
    "/var/lib", "/srv/engine/docker.sock", "/run/containerd/containerd.sock",
])  # fmt: skip
@pytest.mark.parametrize("read_only", [False, True])
def test_machine_paths_their_parents_and_engine_sockets_warn_even_read_only(source, read_only):
    assert mount_hazard(bind(source, read_only))


@pytest.mark.parametrize("source", ["/usr", "/usr/local/bin", "/bin", "/lib64", "/var/spool/cron"])
def test_system_folders_warn_when_writable_only(source):
    assert "write access" in (mount_hazard(bind(source)) or "")
    assert mount_hazard(bind(source, read_only=True)) is None


@pytest.mark.parametrize("volume", [
    bind("/home/alice/code"), bind("/data/datasets"), bind("/srv/models"), bind("/opt/tools"),
    bind("/mnt/scratch"), bind("/etc/localtime", read_only=True), bind("/etc/timezone", read_only=True),
    bind("/etcetera"), bind("/rooted"), bind("/devices"), bind("/runs/exp1"), bind("/variance"),
    Volume("volume", "data", "/etc"),
])  # fmt: skip
def test_ordinary_mounts_do_not_warn(volume):
    assert mount_hazard(volume) is None


def test_a_writable_localtime_still_warns():
    assert mount_hazard(bind("/etc/localtime")) == (
        "part of /etc: the machine's configuration, password hashes and keys")


def test_warnings_name_the_host_the_mount_and_what_it_gives(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    spec = make_spec(tmp_path, hosts={"master": {"ssh_port": 4432, "volumes": [
        "/:/host", "/etc:/hostetc:ro", f"{code}:/code", "data:/data"]}})  # fmt: skip
    assert mount_warnings(spec.hosts[0]) == [
        "hosts.master.volumes: /:/host gives the host's users /: the machine's whole file system",
        "hosts.master.volumes: /etc:/hostetc gives the host's users /etc: the machine's configuration, "
        "password hashes and keys",
    ]


def test_render_warns_about_the_docker_socket_mounted_as_a_volume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "devbox.yaml").write_text(
        "project: lab\nimage: {base: 'debian:bookworm'}\n"
        "hosts: {master: {ssh_port: 4432, volumes: ['/proc:/hostproc:ro']}}\n"
    )
    result = CliRunner().invoke(cli, ["render"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "warning: hosts.master.volumes: /proc:/hostproc gives the host's users /proc" in result.output


# --------------------------------------------------------------------------- ssh-config


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "devbox.yaml").write_text("project: lab\nimage: {base: 'debian:bookworm'}\n"
                                          "hosts: {master: {ssh_port: 4432}}\n")  # fmt: skip
    return tmp_path


@pytest.mark.parametrize("address", [
    "gpu1\n    ProxyCommand touch /tmp/pwned", "gpu1 -oProxyCommand=x", "-oProxyCommand=x", "", "a..b",
    'gpu"1', "fe80::1%eth0\nProxyCommand x", "gpu_1", "x" * 254,
])  # fmt: skip
def test_ssh_config_refuses_an_address_that_is_not_a_host_name_or_ip(project, address):
    result = CliRunner().invoke(cli, ["ssh-config", "--address", address])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error: --address")
    assert not (project / ".devbox").exists()


@pytest.mark.parametrize("address", ["gpu1", "gpu1.example.org", "gpu1.example.org.", "192.0.2.10",
                                     "2001:db8::1", "fe80::1%eth0", "xn--bcher-kva.example"])  # fmt: skip
def test_ssh_config_takes_host_names_and_ip_addresses(project, address):
    result = CliRunner().invoke(cli, ["ssh-config", "--address", address], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"    HostName {address}\n" in result.output


def test_ssh_config_write_makes_a_missing_dot_ssh_private(project):
    result = CliRunner().invoke(cli, ["ssh-config", "--write"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for folder in (project / "home" / ".ssh", project / "home" / ".ssh" / "devbox"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((project / "home" / ".ssh" / "devbox" / "lab.conf").stat().st_mode) == 0o600


def test_ssh_config_write_leaves_an_existing_dot_ssh_as_it_is(project):
    (project / "home" / ".ssh").mkdir(mode=0o750)
    (project / "home" / ".ssh").chmod(0o750)
    assert CliRunner().invoke(cli, ["ssh-config", "--write"], catch_exceptions=False).exit_code == 0
    assert stat.S_IMODE((project / "home" / ".ssh").stat().st_mode) == 0o750
