"""What keeps one host from taking down the others: PIDs, logs and disk, as the spec reads them and
as compose and swarm services render them."""

from __future__ import annotations

import pytest

from devbox.engines.swarm import pids_problems, service_definition
from devbox.errors import SpecError
from devbox.render import compose_data

from .helpers import make_spec


def services(spec):
    return compose_data(spec, "devbox-lab:abc")["services"]


def test_every_host_has_a_pids_limit_and_rotated_logs():
    service = services(make_spec())["master"]
    assert service["deploy"]["resources"]["limits"] == {"pids": 4096}
    assert service["logging"] == {"driver": "local", "options": {"max-size": "10m", "max-file": "3"}}


def test_pids_limit_and_logging_are_settable_in_defaults_and_per_host():
    spec = make_spec(defaults={"pids_limit": 512, "logging": {"max_size": "1m", "max_files": 2}}, hosts={
        "master": {"ssh_port": 1, "logging": {"driver": "json-file"}},
        "worker": {"ssh_port": 2, "pids_limit": "unlimited"},
    })  # fmt: skip
    master, worker = services(spec).values()
    assert master["deploy"]["resources"]["limits"]["pids"] == 512
    assert master["logging"] == {"driver": "json-file", "options": {"max-size": "1m", "max-file": "2"}}
    assert worker["deploy"]["resources"]["limits"]["pids"] == -1
    assert worker["logging"]["driver"] == "local"


def test_an_unlimited_pids_limit_is_noted_where_it_is_written():
    spec = make_spec(defaults={"pids_limit": -1})
    [note] = [line for line in spec.notes if "pids_limit" in line]
    assert note.startswith("defaults.pids_limit: unlimited: a fork bomb")


@pytest.mark.parametrize(("settings", "problem"), [
    ({"pids_limit": 8}, "hosts.master.pids_limit: 8 is out of range for a process count (32-4194304)"),
    ({"pids_limit": "lots"}, "hosts.master.pids_limit: 'lots' is not a process count (32-4194304)"),
    ({"logging": {"driver": "syslog"}}, "hosts.master.logging.driver: 'syslog' is not supported (use local or "
                                        "json-file: both rotate, and `devbox logs` reads them)"),
    ({"logging": {"max_size": "big"}}, "hosts.master.logging.max_size: 'big' is not a size"),
    ({"logging": {"max_files": 0}}, "hosts.master.logging.max_files: 0 is out of range"),
    ({"logging": {"rotate": True}}, "hosts.master.logging.rotate: unknown key"),
])  # fmt: skip
def test_bad_neighbour_settings_are_one_line_each_with_the_path(settings, problem):
    with pytest.raises(SpecError) as info:
        make_spec(hosts={"master": {"ssh_port": 1, **settings}})
    assert any(line.startswith(problem) for line in info.value.problems), info.value.problems


def test_swarm_services_get_the_pids_limit_and_the_log_driver():
    spec = make_spec(engine="swarm", defaults={"bind_address": "0.0.0.0", "logging": {"max_size": "5m"}}, hosts={
        "master": {"ssh_port": 1, "pids_limit": 100}, "worker": {"ssh_port": 2, "pids_limit": "unlimited"}})
    master, worker = (service_definition(spec, host, "img", "hash", {}) for host in spec.hosts)
    assert master["resources"]["Limits"] == {"Pids": 100}
    assert worker["resources"]["Limits"] == {"Pids": 0}  # the service API's unlimited
    assert master["log_driver"] == "local"
    assert master["log_driver_options"] == {"max-size": "5m", "max-file": "3"}


def test_a_swarm_manager_older_than_docker_20_10_is_refused_for_pids_limits():
    spec = make_spec(engine="swarm", defaults={"bind_address": "0.0.0.0"})
    assert pids_problems(spec, "1.41") == []
    [problem] = pids_problems(spec, "1.40")
    assert problem.startswith("hosts.master.pids_limit: this swarm's engine (API 1.40) cannot limit")
    unlimited = make_spec(engine="swarm", defaults={"bind_address": "0.0.0.0", "pids_limit": "unlimited"})
    assert pids_problems(unlimited, "1.40") == []
