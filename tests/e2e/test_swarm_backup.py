"""Backups on a swarm (issue 25): a swarm host's volumes are copied on the engine of its node.

A single-node swarm on the main engine: the host's odd tree (names with spaces, newlines and
unicode, modes, setuid, links, a sparse 1 GiB file, root's files) goes through `backup` (its
task paused on the node, the same task running after), `down --volumes`, `restore` and `up`
and comes back identical; a `restore --force` over a running host scales its service to 0 and
back, and leaves the service as `up` made it. On the multi-node rig (scripts/swarm.sh), a host
pinned to a worker node is backed up and restored through that node's engine.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest_swarm import multinode_swarm  # noqa: F401  (the fixture)
from .test_backup import POPULATE, TREE

pytestmark = pytest.mark.e2e


@pytest.fixture
def shared_swarm(docker_client: Any) -> Iterator[Any]:
    """The main engine as a swarm manager: the swarm another test made is used as it is (and
    left); one made here is left again at the end only when no service but ours is on it."""
    info = docker_client.info().get("Swarm") or {}
    made = info.get("LocalNodeState") != "active"
    if made:
        docker_client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    elif not info.get("ControlAvailable"):
        pytest.fail("the engine is a swarm worker; these tests need a manager")
    try:
        yield docker_client
    finally:
        if made and not docker_client.services.list():
            with contextlib.suppress(Exception):
                docker_client.swarm.leave(force=True)


def _root(stack: Any, command: str) -> str:
    return stack.devbox("exec", "--root", "master", "--", "sh", "-c", command).stdout


def _task_containers(client: Any, stack: Any) -> list[str]:
    return [c.id for c in client.containers.list(filters={"label": [f"devbox.project={stack.name}",
                                                                     "devbox.host=master"]})]  # fmt: skip


def test_a_swarm_hosts_backup_down_volumes_restore_up_gives_the_same_tree(shared_swarm, make_stack, tmp_path):
    stack = make_stack(["master"], engine="swarm", defaults={"bind_address": "0.0.0.0", "volumes": ["data:/data"]})
    stack.devbox("up")
    _root(stack, POPULATE)
    before = _root(stack, TREE)
    [task] = _task_containers(shared_swarm, stack)

    folder = tmp_path / "backups"
    made = stack.devbox("backup", "--to", str(folder))
    assert "paused for" in made.stderr and "during the copy on node" in made.stderr, made.stderr
    assert _task_containers(shared_swarm, stack) == [task]  # the same task runs on: paused, not replaced
    assert shared_swarm.containers.get(task).status == "running"
    [name] = [p.name for p in folder.iterdir()]
    assert name.startswith(f"{stack.name}-master-") and name.endswith(".tar.zst")
    listed = stack.devbox("backups", "--in", str(folder)).stdout
    row = next(line for line in listed.splitlines() if line.startswith("master "))
    assert "complete" in row and any(set(word.split(",")) == {"master-home", "data"} for word in row.split()), listed

    stack.devbox("down", "--volumes", "--yes")
    assert not shared_swarm.volumes.list(filters={"name": f"{stack.name}_master-home"})
    restored = stack.devbox("restore", str(folder / name))
    assert "login ok" in restored.stdout, restored.stdout + restored.stderr
    assert _root(stack, TREE) == before
    assert int(_root(stack, "du -k /home/developer/sparse | cut -f1").strip()) < 1024  # still sparse
    assert stack.ssh("master", "cat ~/'odd dir/with space.txt'") == "x"

    # over a running host (--force): its service scaled to 0 for the restore and back, unchanged
    service = shared_swarm.services.get(f"{stack.name}_master")
    stack.ssh("master", "echo changed > ~/'odd dir/with space.txt'")
    again = stack.devbox("restore", "--force", str(folder / name))
    said = again.stdout + again.stderr
    assert "scaling its service to 0 for the restore on node" in said and "scaled back to 1" in said, said
    assert "login ok" in again.stdout, said
    assert stack.ssh("master", "cat ~/'odd dir/with space.txt'") == "x"
    assert _root(stack, TREE) == before
    assert shared_swarm.services.get(f"{stack.name}_master").id == service.id
    assert "nothing changed" in stack.devbox("up").stdout  # the service is as `up` made it
    status = {e["host"]: e for e in json.loads(stack.devbox("status", "--json").stdout)}
    assert status["master"]["state"] == "running"
    assert Path(folder / name).is_file()


def test_on_the_rig_a_host_pinned_to_another_node_is_backed_up_and_restored_on_that_node(multinode_swarm, make_stack,  # noqa: F811
                                                                                        tmp_path):  # fmt: skip
    """devbox talks to the manager (n1); the host runs on n2, whose engine holds its volumes: the
    copies go through n2's engine (its devbox.docker-host label), in both directions."""
    rig = multinode_swarm
    rig.load("devbox-test/bookworm:base", rig.manager.name)
    stack = make_stack(["b"], engine="swarm", image={"registry": f"{rig.registry}/e2e"},
                       defaults={"bind_address": "0.0.0.0", "volumes": ["data:/data"]})  # fmt: skip
    stack.spec["hosts"]["b"]["node"] = "n2"
    stack.write_spec()
    env = {"DOCKER_HOST": rig.manager.docker_host}

    def run(*args: str, check: bool = True) -> Any:
        return stack.devbox(*args, env=env, check=check)

    def tree() -> str:
        return str(run("exec", "--root", "b", "--", "sh", "-c", TREE).stdout)

    def volumes(node: str) -> list[str]:
        client = rig.client(node)
        try:
            return sorted(v.name for v in client.volumes.list(filters={"name": stack.name}))
        finally:
            client.close()

    try:
        run("up")
        run("exec", "--root", "b", "--", "sh", "-c", POPULATE)
        before = tree()
        folder = tmp_path / "backups"
        made = run("backup", "--to", str(folder))
        assert "during the copy on node n2" in made.stderr and "on node n2" in made.stderr, made.stderr
        [name] = [p.name for p in folder.iterdir()]

        run("down", "--volumes", "--yes")
        assert volumes("n2") == [] and volumes("n1") == []
        restored = run("restore", str(folder / name))
        assert "login ok" in restored.stdout and rig.nodes["n2"].address in restored.stdout, restored.stdout
        assert volumes("n2") == [f"{stack.name}_b-home", f"{stack.name}_data"] and volumes("n1") == []
        assert tree() == before
    finally:
        run("down", "--volumes", "--yes", check=False)
        for node in rig.nodes:
            client = rig.client(node)
            for volume in client.volumes.list(filters={"name": stack.name}):
                with contextlib.suppress(Exception):
                    volume.remove(force=True)
            client.close()
