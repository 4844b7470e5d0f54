"""One spec across a real three-node swarm (scripts/swarm.sh) with a real registry: hosts pinned
to each node come up from the pushed image, log in at their node's address with host keys
checked, reach each other by name across nodes, keep their volume on their node across
down/up; a changed setting replaces only its host; bad placements and registries are refused
before anything is deployed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devbox.docker_api import list_containers
from devbox.probe import Target, login

from .conftest_swarm import Rig, multinode_swarm  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e
PLACED = {"a": "n1", "b": "n2", "c": "n3"}


@pytest.fixture
def rig_stack(multinode_swarm: Rig, make_stack: Any) -> Iterator[Any]:  # noqa: F811
    """A spec of three hosts, one pinned to each node, deploying through the registry; devbox
    talks to the manager. Removed with its volumes (on every node) afterwards."""
    multinode_swarm.load("devbox-test/bookworm:base", multinode_swarm.manager.name)
    stack = make_stack(list(PLACED), engine="swarm",
                       image={"registry": f"{multinode_swarm.registry}/e2e"},
                       defaults={"bind_address": "0.0.0.0", "volumes": ["data:/data"]})  # fmt: skip
    for host, node in PLACED.items():
        stack.spec["hosts"][host]["node"] = node
    stack.spec["hosts"]["c"]["gpus"] = 1  # only n3 advertises a (fake) NVIDIA-GPU
    stack.write_spec()
    env = {"DOCKER_HOST": multinode_swarm.manager.docker_host}
    stack.run = lambda *args, check=True: stack.devbox(*args, env=env, check=check)  # type: ignore[attr-defined]
    yield stack
    stack.devbox("down", env=env, check=False, timeout=300)
    wait_for(lambda: not any(node_containers(multinode_swarm, stack).values()), "every node's containers to go")
    for node in multinode_swarm.nodes:
        client = multinode_swarm.client(node)
        for volume in client.volumes.list(filters={"name": stack.name}):
            volume.remove(force=True)
        client.close()


def target(rig: Rig, stack: Any, host: str) -> Target:
    return Target(host, rig.nodes[PLACED[host]].address, stack.port(host), "developer", stack.password(host),
                  stack.host_key(host))  # fmt: skip


def ssh(rig: Rig, stack: Any, host: str, command: str) -> str:
    result = login(target(rig, stack, host), command=command, timeout=10)
    assert result.ok, f"{host}: {result.detail}"
    return result.output


def node_containers(rig: Rig, stack: Any) -> dict[str, list[str]]:
    """Each node's containers of the stack (by host label)."""
    found = {}
    for node in rig.nodes:
        client = rig.client(node)
        found[node] = sorted(c.labels["devbox.host"] for c in list_containers(
            client, all=True, filters={"label": f"devbox.project={stack.name}"}))  # fmt: skip
        client.close()
    return found


def wait_for(check: Any, what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)
    return value


def test_hosts_pinned_to_three_nodes_come_up_reach_each_other_and_keep_their_volumes(multinode_swarm, rig_stack):  # noqa: F811
    rig, stack = multinode_swarm, rig_stack
    up = stack.run("up")
    assert f"pushing {rig.registry}/e2e/devbox-{stack.name}:" in up.stdout
    for host, node in PLACED.items():
        assert f"developer@{rig.nodes[node].address}" in up.stdout
        assert ssh(rig, stack, host, "hostname").strip() == host  # password login, host key checked
    assert node_containers(rig, stack) == {"n1": ["a"], "n2": ["b"], "n3": ["c"]}
    manager = rig.client(rig.manager.name)
    images = {s.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
              for s in manager.services.list(filters={"label": f"devbox.project={stack.name}"})}  # fmt: skip
    assert len(images) == 1 and "@sha256:" in next(iter(images))  # every node runs the same bytes

    assert_each_host_reached_on_its_node(rig, stack)

    # names across nodes (gossip spreads them: retried a few seconds)
    for host, other in (("a", "c"), ("c", "b"), ("b", "a")):
        wait_for(lambda h=host, o=other: "1 received" in ssh(rig, stack, h, f"ping -c 1 -W 2 {o} || true"),
                 f"{host} to reach {other}", 30)  # fmt: skip

    ssh(rig, stack, "b", "sudo -S sh -c 'echo kept > /data/file' <<EOF\n" + stack.password("b") + "\nEOF")
    ids = {s.name: s.id for s in manager.services.list(filters={"label": f"devbox.project={stack.name}"})}
    stack.spec["hosts"]["b"]["environment"] = {"CHANGED": "yes"}
    stack.write_spec()
    changed = stack.run("up")
    assert f"recreating {stack.name}_b" in changed.stdout
    after = {s.name: s.id for s in manager.services.list(filters={"label": f"devbox.project={stack.name}"})}
    assert after[f"{stack.name}_a"] == ids[f"{stack.name}_a"] and after[f"{stack.name}_c"] == ids[f"{stack.name}_c"]
    assert after[f"{stack.name}_b"] != ids[f"{stack.name}_b"]
    assert ssh(rig, stack, "b", "cat /data/file").strip() == "kept"

    stack.run("down")
    assert not manager.services.list(filters={"label": f"devbox.project={stack.name}"})
    assert not manager.secrets.list(filters={"label": f"devbox.project={stack.name}"})
    assert not manager.networks.list(names=[f"{stack.name}_net"])
    wait_for(lambda: not any(node_containers(rig, stack).values()), "every node's containers to go")
    volumes = {}
    for node in rig.nodes:
        client = rig.client(node)
        volumes[node] = sorted(v.name for v in client.volumes.list(filters={"name": stack.name}))
        client.close()
    # nothing but volumes: each node's host's home and data
    assert volumes == {node: sorted([f"{stack.name}_data", f"{stack.name}_{host}-home"])
                       for host, node in PLACED.items()}  # fmt: skip

    stack.run("up")
    assert ssh(rig, stack, "b", "cat /data/file").strip() == "kept"  # pinned: its node's volume again
    manager.close()

    stack.run("down", "--volumes", "--yes")  # on every node, not only the manager's
    wait_for(lambda: not any(node_containers(rig, stack).values()), "every node's containers to go")
    for node in rig.nodes:
        client = rig.client(node)
        assert client.volumes.list(filters={"name": stack.name}) == []
        client.close()


def assert_each_host_reached_on_its_node(rig: Rig, stack: Any) -> None:
    """status, exec, logs, check, ssh-config and doctor through the manager reach each host on its
    node (the manager's API alone shows only its own node's containers)."""
    status = {e["host"]: e for e in json.loads(stack.run("status", "--json").stdout)}
    assert {h: (e["state"], e["node"]) for h, e in status.items()} == {h: ("running", n) for h, n in PLACED.items()}
    rows = {line.split()[0]: line for line in stack.run("status").stdout.splitlines()[1:]}  # the table too
    for host, node in PLACED.items():
        assert rows[host].split()[1:3] == [node, "running"]
        assert rows[host].endswith(f"developer@{rig.nodes[node].address}")
    assert status["c"]["ssh"].endswith(f"@{rig.nodes['n3'].address}")
    for host in PLACED:
        assert stack.run("exec", host, "--", "hostname").stdout.strip() == host
    # the GPU swarm assigned the task on n3, the only node advertising one
    n3 = rig.client("n3")
    (container,) = n3.containers.list(filters={"label": [f"devbox.project={stack.name}", "devbox.host=c"]})
    assert any(v.startswith("DOCKER_RESOURCE_NVIDIA-GPU=GPU-fa4e") for v in container.attrs["Config"]["Env"])
    n3.close()
    stack.run("exec", "--root", "b", "--", "sh", "-c", "echo marker-on-n2 > /proc/1/fd/1")
    wait_for(lambda: "marker-on-n2" in stack.run("logs", "b").stdout, "b's log line through the manager", 20)
    check = stack.run("check").stdout
    assert "FAIL" not in check and "PASS  c          ssh login" in check and "PASS  a          reach c" in check
    config = stack.run("ssh-config").stdout
    for host, node in PLACED.items():
        assert f"HostName {rig.nodes[node].address}" in config.split(f"Host {stack.name}-{host}", 1)[1].split("Host ")[0]
    doctor = stack.run("doctor").stdout
    assert "PASS  swarm      nodes: 3 ready and active" in doctor and "PASS  swarm      gpu nodes: n3: 1 NVIDIA-GPU" in doctor
    assert f"PASS  swarm      registry: {rig.registry}/e2e answers" in doctor
    assert f"PASS  c          port: {stack.port('c')} free on n3" in doctor


@pytest.mark.parametrize(("change", "message"), [
    ({"node": "n9"}, "error: hosts.c.node: no swarm node 'n9' (nodes: n1, n2, n3; name one by hostname or ID)"),
    ({"gpus": 2}, "error: hosts.c.gpus: 2 GPUs, but no swarm node advertises that many NVIDIA-GPU"),
])  # fmt: skip
def test_a_host_no_node_can_take_is_refused_and_nothing_is_deployed(multinode_swarm, rig_stack, change, message):  # noqa: F811
    rig_stack.spec["hosts"]["c"].update(change)
    rig_stack.write_spec()
    result = rig_stack.run("up", check=False)
    assert result.returncode == 1 and result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1
    assert_nothing_deployed(multinode_swarm, rig_stack)


def test_a_registry_that_does_not_answer_is_refused_and_nothing_is_deployed(multinode_swarm, rig_stack):  # noqa: F811
    rig_stack.spec["image"]["registry"] = "10.77.0.1:5099/e2e"
    rig_stack.write_spec()
    result = rig_stack.run("up", check=False)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: image.registry: 10.77.0.1:5099/e2e does not answer (")
    assert_nothing_deployed(multinode_swarm, rig_stack)


def assert_nothing_deployed(rig: Rig, stack: Any) -> None:
    manager = rig.client(rig.manager.name)
    assert not manager.services.list(filters={"label": f"devbox.project={stack.name}"})
    assert not manager.secrets.list(filters={"label": f"devbox.project={stack.name}"})
    manager.close()


def test_a_pinned_host_moved_to_another_node_takes_its_home_and_the_old_volume_stays(multinode_swarm, rig_stack):  # noqa: F811
    rig, stack = multinode_swarm, rig_stack
    stack.run("up")
    ssh(rig, stack, "b", "mkdir -p 'odd dir' && printf 'moved\\n' > 'odd dir/é file' && ln -s 'odd dir' link "
                         "&& truncate -s 64M sparse")  # fmt: skip
    stack.spec["hosts"]["b"]["node"] = "n1"  # from n2 to the manager's node (a's home and data are there)
    stack.write_spec()
    refused = stack.run("up", check=False)  # no terminal, no --yes: nothing changes
    assert refused.returncode == 1 and "pass --yes to copy it there" in refused.stderr
    assert "host b moves from node n2 to n1" in refused.stdout
    assert node_containers(rig, stack)["n2"] == ["b"]

    moved = stack.run("up", "--yes")
    assert f"copying volume {stack.name}_b-home from n2 to n1" in moved.stdout
    assert f"{stack.name}_data already exist on n1 and stay as they are" in moved.stdout
    assert "tree hash" in moved.stdout and f"developer@{rig.nodes['n1'].address}" in moved.stdout
    wait_for(lambda: node_containers(rig, stack)["n1"] == ["a", "b"], "b to run on n1")
    there = Target("b", rig.nodes["n1"].address, stack.port("b"), "developer", stack.password("b"),
                   stack.host_key("b"))  # fmt: skip
    result = login(there, command="cat 'odd dir/é file' link/'é file'; stat -c %s sparse; du -k sparse | cut -f1",
                   timeout=10)  # fmt: skip
    assert result.ok, result.detail
    assert result.output.split() == ["moved", "moved", str(64 << 20), "0"]  # sparse stays sparse
    n2 = rig.client("n2")
    assert [v.name for v in n2.volumes.list(filters={"name": f"{stack.name}_b-home"})] == [f"{stack.name}_b-home"]
    n2.close()
    assert "nothing changed" in stack.run("up").stdout  # moved once; the next up leaves it alone
