"""The same spec as services of a Docker Swarm (single node here): logins, names, secrets, no-ops."""

from __future__ import annotations

import json

import pytest

from devbox.probe import login

pytestmark = pytest.mark.e2e


def test_spec_runs_as_swarm_services(swarm, make_stack):  # swarm first: its teardown runs last
    stack = make_stack(2, engine="swarm", defaults={"bind_address": "0.0.0.0", "volumes": ["data:/data"]})
    up = stack.devbox("up")
    assert "starting service" in up.stdout
    assert stack.ssh("master", "hostname").strip() == "master"
    assert "1 received" in stack.ssh("master", "ping -c 1 -W 3 worker")
    assert "1 received" in stack.ssh("worker", "ping -c 1 -W 3 master")

    services = {s.name: s for s in swarm.services.list(filters={"label": f"devbox.project={stack.name}"})}
    assert set(services) == {f"{stack.name}_master", f"{stack.name}_worker"}
    secrets = [s.name for s in swarm.secrets.list(filters={"label": f"devbox.project={stack.name}"})]
    # passwords, sshd settings, host key and the named volumes to hand to the user, for each host (no keys given)
    assert len(secrets) == 8
    assert not any(stack.password("master") in json.dumps(s.attrs) for s in services.values())

    again = stack.devbox("up")
    assert "nothing changed" in again.stdout
    check = stack.devbox("check")
    assert "FAIL" not in check.stdout and "PASS  worker     ssh login" in check.stdout
    status = {e["host"]: e for e in json.loads(stack.devbox("status", "--json").stdout)}
    assert status["master"]["state"] == "running" and status["master"]["limits"]["memory"] == 256 * 1024**2

    # a new password is a new secret: the service is recreated with it, the old secret goes
    old = stack.password("master")
    stack.devbox("passwd", "master")
    up = stack.devbox("up")
    assert "recreating" in up.stdout and "files written outside their volumes start fresh" in up.stdout
    assert login(stack.target("master", password=stack.password("master"))).ok
    assert not login(stack.target("master", password=old)).ok
    assert len(swarm.secrets.list(filters={"label": f"devbox.project={stack.name}"})) == 8
    table = stack.devbox("status").stdout.splitlines()
    assert table[0].split()[:3] == ["HOST", "NODE", "TASK"] and table[0].split()[-1] == "SSH"
    assert table[1].split()[0] == "master" and table[1].split()[2] == "running" and "ssh -p" in table[1]

    # a host dropped from the spec is removed at up (its secrets too), the other one left alone
    del stack.spec["hosts"]["worker"]
    stack.write_spec()
    up = stack.devbox("up", "--yes")
    assert "removing worker: no longer in" in up.stdout and "nothing changed: 1 hosts" in up.stdout
    services = {s.name for s in swarm.services.list(filters={"label": f"devbox.project={stack.name}"})}
    assert services == {f"{stack.name}_master"}
    assert len(swarm.secrets.list(filters={"label": f"devbox.project={stack.name}"})) == 4

    stack.devbox("down")
    assert not swarm.services.list(filters={"label": f"devbox.project={stack.name}"})
    assert not swarm.secrets.list(filters={"label": f"devbox.project={stack.name}"})
    assert not swarm.networks.list(names=[f"{stack.name}_net"])


def test_swarm_engine_must_be_a_manager(make_stack, engine_without_gpu):
    stack = make_stack(1)
    result = stack.devbox("--engine", "swarm", "up", env={"DOCKER_HOST": engine_without_gpu}, check=False)
    assert result.returncode == 1
    assert "this engine is not a swarm manager (run `docker swarm init`" in result.stderr
