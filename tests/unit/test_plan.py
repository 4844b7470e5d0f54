"""Planning and preflight, the pure parts: what `up` must do, and what the machine cannot give."""

from __future__ import annotations

import pytest

from devbox.docker_api import parse_docker_time
from devbox.engines.compose import plan_up
from devbox.engines.preflight import resource_problems

from .helpers import make_spec

WANTED = {"a": "h1", "b": "h2"}


def test_nothing_to_do_when_every_host_runs_its_current_config():
    plan = plan_up(["a", "b"], WANTED, "img:1", True, {"a": ("running", "h1"), "b": ("running", "h2")})
    assert plan.nothing_to_do and plan.unchanged == ("a", "b")


def test_changed_stopped_and_missing_hosts_are_started_and_a_missing_image_built():
    plan = plan_up(["a", "b"], WANTED, "img:1", False, {"a": ("running", "old"), "b": ("exited", "h2")})
    assert plan.build and plan.start == ("a", "b") and not plan.nothing_to_do
    assert plan_up(["a"], WANTED, "img:1", True, {}).start == ("a",)


def test_hosts_made_from_an_older_spec_or_image_are_named_as_recreated():
    running = {"a": ("running", "old"), "b": ("exited", "old")}
    plan = plan_up(["a", "b", "c"], {**WANTED, "c": "h3"}, "img:1", True, running)
    assert plan.start == ("a", "b", "c") and plan.recreate == ("a", "b")
    stopped = plan_up(["a"], WANTED, "img:1", True, {"a": ("exited", "h1")})
    assert stopped.start == ("a",) and stopped.recreate == ()


def test_only_the_named_hosts_are_planned():
    plan = plan_up(["b"], WANTED, "img:1", True, {"a": ("exited", "h1"), "b": ("running", "h2")})
    assert plan.nothing_to_do


def test_resources_the_machine_cannot_give():
    spec = make_spec(hosts={
        "a": {"ssh_port": 1, "limits": {"cpus": 4}, "reservations": {"cpus": 2, "memory": "3g"}},
        "b": {"ssh_port": 2, "reservations": {"cpus": 1.5, "memory": "2g"}},
    })  # fmt: skip
    problems = resource_problems(spec, {"cpus": 2, "memory": 4 * 1024**3})
    assert problems == [
        "hosts.a.limits.cpus: 4 is more than the 2 CPUs of the engine (lower it)",
        "reservations.cpus: the hosts reserve 3.5 CPUs but the engine has 2 (lower the reservations)",
        "reservations.memory: the hosts reserve 5.0 GiB but the engine has 4.0 GiB (lower the reservations)",
    ]
    assert resource_problems(spec, {"cpus": 8, "memory": 64 * 1024**3}) == []


def test_docker_times_keep_their_nanoseconds():
    """A host's start is compared with its passwords file's mtime: sub-second precision matters."""
    fraction = parse_docker_time("2026-11-22T12:49:01.123456789Z") - parse_docker_time("2026-11-22T12:49:01Z")
    assert fraction == pytest.approx(0.123456789, abs=1e-6)
    assert parse_docker_time("1970-01-01T00:00:02Z") == 2.0


def test_a_device_missing_on_this_machine_is_named_before_anything_starts(monkeypatch):
    from devbox.engines.preflight import device_problems

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    spec = make_spec(hosts={"a": {"ssh_port": 1, "devices": ["/dev/null", "/dev/nope0:/dev/ttyUSB0"]}})
    assert device_problems(list(spec.hosts)) == [
        "hosts.a.devices[1]: /dev/nope0 does not exist on this machine (connect it, or remove it from the spec)"]
