"""Nothing lost, second round (issue 29): a copied or moved project folder, the stack a user
starts with plain compose from the rendered files, the spec's volumes the login user can write."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import yaml

from .conftest import DEVBOX, devbox_env

pytestmark = pytest.mark.e2e


def _devbox_in(folder, *args):
    return subprocess.run([*DEVBOX, *args], cwd=folder, capture_output=True, text=True,
                          timeout=600, check=False, env=devbox_env(), stdin=subprocess.DEVNULL)  # fmt: skip


def _volumes(docker_client, project):
    return sorted(v.name for v in docker_client.volumes.list() if v.name.startswith(f"{project}_"))


def _wait_for_login(stack, host, seconds=60.0):
    from devbox.probe import login

    deadline = time.monotonic() + seconds
    while not login(stack.target(host), command="true", timeout=5).ok:
        assert time.monotonic() < deadline, f"{host}: no login {seconds:.0f} s after its restart"
        time.sleep(0.5)


def test_a_copied_folder_is_refused_and_a_moved_one_keeps_its_hosts_across_restarts(make_stack, docker_client):
    """Cases 1 and 3: `cp -a p1 p1copy` carries p1's owner id, yet must not take over, nor delete,
    p1's hosts and volumes; `mv p1 p1moved` is the same owner, and `up` recreates the hosts whose
    secrets and host keys were bind-mounted from the old path, so a restart no longer fails."""
    stack = make_stack(1)
    stack.devbox("up")
    stack.ssh("master", "echo precious > ~/data.txt")
    before = stack.container(docker_client, "master").id
    copy = stack.directory.parent / "copies" / stack.name
    copy.parent.mkdir()
    subprocess.run(["cp", "-a", str(stack.directory), str(copy)], check=True)
    for args in (["up"], ["down", "--volumes", "--yes"], ["status"]):
        refused = _devbox_in(copy, *args)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert refused.stderr.strip() == (
            f"error: project {stack.name!r} runs from {stack.state} (container {stack.name}-master-1), and "
            f"this folder is a copy of it (the same owner id in {copy / '.devbox' / 'owner'}): to run the copy "
            "as a project of its own, give devbox.yaml another `project:` name and remove "
            f"{copy / '.devbox' / 'owner'}; to run the original, run devbox in {stack.directory}")  # fmt: skip
    assert stack.container(docker_client, "master").id == before
    assert _volumes(docker_client, stack.name) == [f"{stack.name}_master-home"]
    shutil.rmtree(copy)

    moved = stack.directory.parent / "moved" / stack.name
    moved.parent.mkdir()
    stack.directory.rename(moved)
    stack.directory = moved  # the fixture's clean-up runs there
    up = stack.devbox("up")
    assert f"recreating master: made in {moved.parent.parent / stack.name / '.devbox'}, which moved to " \
           f"{stack.state} (named volumes stay)" in up.stdout, up.stdout
    container = stack.container(docker_client, "master")
    assert container.id != before
    container.restart(timeout=5)
    container.reload()
    assert container.status == "running"
    _wait_for_login(stack, "master")
    assert stack.ssh("master", "cat ~/data.txt").strip() == "precious"
    assert "nothing changed: 1 hosts already up to date" in stack.devbox("up").stdout


def test_a_stack_started_with_plain_compose_from_the_rendered_files_is_owned(make_stack, docker_client,
                                                                             free_port):  # fmt: skip
    """Case 2: `devbox render && cd .devbox && docker compose up -d` labels the volumes and the
    network with the owner, so a second folder with the same spec is refused, not handed them."""
    stack = make_stack(1)
    stack.devbox("render")
    subprocess.run(["docker", "compose", "up", "--detach", "--quiet-pull"], cwd=stack.state, check=True,
                   capture_output=True, timeout=600, stdin=subprocess.DEVNULL)  # fmt: skip
    owner = (stack.state / "owner").read_text().strip()
    volume = docker_client.volumes.get(f"{stack.name}_master-home")
    [network] = docker_client.networks.list(filters={"label": f"com.docker.compose.project={stack.name}"})
    for labels in (volume.attrs["Labels"], network.attrs["Labels"]):
        assert labels["devbox.owner"] == owner
        assert labels["devbox.project"] == stack.name
    second = stack.directory.parent / "second" / stack.name
    second.mkdir(parents=True)
    (second / "devbox.yaml").write_text(yaml.safe_dump({**stack.spec, "hosts": {"master": {"ssh_port": free_port()}}}))
    for args in (["up"], ["down", "--volumes", "--yes"]):
        refused = _devbox_in(second, *args)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"already runs from {stack.state}, another spec's" in refused.stderr
    assert _volumes(docker_client, stack.name) == [f"{stack.name}_master-home"]
    # devbox takes over the stack plain compose started from its own files, recreating nothing
    assert "nothing changed" in stack.devbox("up").stdout
