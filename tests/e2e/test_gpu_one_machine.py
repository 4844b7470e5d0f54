"""One machine, one ledger: a GPU is held by one host across every spec on the engine (issue 22).

Specs in folders of their own, on the real engine with the NVIDIA hook double and the nvidia-smi
double (see test_gpu_ledger.py). Other test runs share this engine and their containers hold GPUs
too (by UUID of their machine, or by index: a count, or `device_ids: ["0"]` rendered without
nvidia-smi). So each test describes a machine of its own (fresh UUIDs) on which exactly two GPUs
are free of those others (``fresh_machine``), and asserts on relations: which of *its* GPUs each
host got, and which holders a refusal names.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

from devbox.gpus import engine_holdings, held_units

from ..conftest import Lacking
from .conftest import DEVBOX, devbox_env, new_project_name
from .test_gpu_ledger import device_request, gpu_machine

# The nvidia-smi double's GPUs: the engine's hook must be a double (not on a real GPU server).
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("hook_double")]

ROUNDS = 3  # concurrent `up`s in two folders, each round from empty ledgers


def fresh_machine(client: Any, free: int = 2) -> dict[str, Any]:
    """A machine description (nvidia-smi double) with GPUs no other container holds but ``free``
    of them: UUIDs made now, and enough GPUs that the indexes others hold (counts, index ids)
    leave ``free`` untouched. ``machine["free"]``: their indexes."""
    taken: set[str] = set()
    for holding in engine_holdings(client):
        if not holding.shared:
            taken.update(held_units(holding, None))
    if "*" in taken:
        Lacking()("a container of another test run holds every GPU of the engine (remove it: .ci/run starts empty)")
    gpus, free_indexes = [], []
    while len(free_indexes) < free:
        if str(len(gpus)) not in taken:
            free_indexes.append(len(gpus))
        gpus.append({"uuid": f"GPU-{uuid.uuid4()}", "name": "NVIDIA GeForce RTX 4090", "memory_total": 24564,
                     "memory_used": 0, "utilization": 0, "mig": None})  # fmt: skip
    return {"gpus": gpus, "compute_apps": [], "free": free_indexes}


def others_by_index(client: Any, but: tuple[str, ...] = ()) -> set[str]:
    """What the engine's containers (not of the projects ``but``) hold by index or count ("*": all)."""
    return {unit for h in engine_holdings(client) if not h.shared and h.project not in but
            for unit in held_units(h, None)}  # fmt: skip


def uuids(machine: dict[str, Any]) -> list[str]:
    """The machine's free GPUs' UUIDs, in index order."""
    return [machine["gpus"][i]["uuid"] for i in machine["free"]]


def index_of(machine: dict[str, Any], gpu: str) -> int:
    return next(i for i, g in enumerate(machine["gpus"]) if g["uuid"] == gpu)


def gpu_of(stack: Any, client: Any, host: str = "solo") -> str:
    (device,) = device_request(stack.container(client, host))["DeviceIDs"]
    return str(device)


def holder(stack: Any, host: str = "solo") -> str:
    """How refusals and `devbox gpus` name a host of another spec."""
    return f"{stack.name}/{host} (folder {stack.directory})"


def images_of(client: Any, project: str) -> list[Any]:
    return list(client.images.list(filters={"label": f"devbox.project={project}"}))


def devbox_in(folder: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """devbox run in a folder without a spec."""
    folder.mkdir(exist_ok=True)
    return subprocess.run([*DEVBOX, *args], cwd=folder, capture_output=True, text=True, timeout=120, check=True,
                          env=devbox_env(env), stdin=subprocess.DEVNULL)  # fmt: skip


def start_job(container: Any) -> int:
    """A "GPU job" in a host: its PID on the machine (what nvidia-smi reports)."""
    container.exec_run(["sleep", "3019"], detach=True)
    for _ in range(50):  # the exec starts a moment after it returns
        found = [int(row[0]) for row in container.top(ps_args="-o pid,args")["Processes"] if row[-1] == "sleep 3019"]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError("the job did not start")


def json_holders(output: str, gpu: str) -> list[dict[str, Any]]:
    return next(row["holders"] for row in json.loads(output) if row["uuid"] == gpu)


def test_two_specs_get_different_gpus_a_third_is_refused_until_one_is_down(make_stack, docker_client, tmp_path):
    machine = fresh_machine(docker_client)
    env = gpu_machine(tmp_path, machine)
    first, second, third = (make_stack(["solo"], defaults={"gpus": 1}) for _ in range(3))
    first.devbox("up", env=env)
    second.devbox("up", env=env)
    held = {s.name: gpu_of(s, docker_client) for s in (first, second)}
    assert sorted(held.values()) == sorted(uuids(machine)), held  # different GPUs, both of the free ones

    # a job in the second spec's host: `devbox gpus` anywhere attributes it to that spec's host
    pid = start_job(second.container(docker_client, "solo"))
    machine["compute_apps"] = [{"pid": pid, "gpu_uuid": held[second.name], "used_memory": 1234}]
    (tmp_path / "machine.json").write_text(json.dumps(machine))

    # `devbox gpus` from one folder, and from no spec at all, names the other spec's host
    for where, gpus in (("a spec's folder", lambda *a: first.devbox(*a, env=env)),
                        ("no spec", lambda *a: devbox_in(tmp_path / "nowhere", *a, env=env))):  # fmt: skip
        table = gpus("gpus").stdout
        for stack in (first, second):
            index = index_of(machine, held[stack.name])
            row = next(line for line in table.splitlines() if line.startswith(f"{index} "))
            assert f"{stack.name}/solo (folder {stack.directory})" in row, (where, table)
        data = gpus("gpus", "--json").stdout
        for stack in (first, second):
            [found] = json_holders(data, held[stack.name])
            assert (found["project"], found["host"], found["folder"]) == (stack.name, "solo", str(stack.directory))
        [job] = next(row["processes"] for row in json.loads(data) if row["uuid"] == held[second.name])
        assert (job["pid"], job["project"], job["host"]) == (pid, second.name, "solo"), where

    # a third spec on the full machine: one line naming both holders, and nothing built or replaced
    before = {s.name: s.container(docker_client, "solo").id for s in (first, second)}
    refused = third.devbox("up", env=env, check=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    [line] = refused.stderr.strip().splitlines()
    for stack in (first, second):
        assert f"GPU {index_of(machine, held[stack.name])}: {holder(stack)}" in line, line
    assert "devbox down" in line and "gpu_share: true" in line
    assert third.container_or_none(docker_client, "solo") is None
    assert images_of(docker_client, third.name) == []
    assert not (third.state / "gpus.json").exists()
    assert {s.name: s.container(docker_client, "solo").id for s in (first, second)} == before

    # one spec's `down` frees its GPU: the third gets that one, the second keeps its own
    first.devbox("down", env=env)
    third.devbox("up", env=env)
    assert gpu_of(third, docker_client) == held[first.name]
    assert gpu_of(second, docker_client) == held[second.name]
    assert second.container(docker_client, "solo").id == before[second.name]
    # the spec that is down holds nothing, also as `devbox gpus` in its own folder tells it
    [found] = json_holders(first.devbox("gpus", "--json", env=env).stdout, held[first.name])
    assert (found["project"], found["folder"]) == (third.name, str(third.directory))


@pytest.fixture
def plain_container(docker_client, base_image):
    """Factory: a container of no devbox, as `docker run --gpus device=N` makes it; removed after."""
    made: list[Any] = []

    def run(index: int) -> Any:
        request = docker.types.DeviceRequest(device_ids=[str(index)], capabilities=[["gpu"]])
        container = docker_client.containers.run(base_image, ["sleep", "infinity"], name=f"{new_project_name()}-trainer",
                                                 device_requests=[request], detach=True)  # fmt: skip
        made.append(container)
        return container

    yield run
    for container in made:
        container.remove(force=True)


def test_a_plain_docker_run_gpu_is_never_given_to_a_devbox_host(make_stack, docker_client, tmp_path,
                                                                plain_container):  # fmt: skip
    machine = fresh_machine(docker_client)
    env = gpu_machine(tmp_path, machine)
    free_gpu, plain_gpu = uuids(machine)
    trainer = plain_container(machine["free"][1])  # `docker run --gpus device=1` on a machine of its own
    pair = make_stack(["master", "worker"], defaults={"gpus": 1})
    refused = pair.devbox("up", env=env, check=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert f'GPU {machine["free"][1]}: container "{trainer.name}" (not devbox)' in line, line
    assert all(pair.container_or_none(docker_client, host) is None for host in ("master", "worker"))

    solo = make_stack(["solo"], defaults={"gpus": 1})
    solo.devbox("up", env=env)
    assert gpu_of(solo, docker_client) == free_gpu != plain_gpu

    # stopped, it still holds its GPU (it can start again): a second spec is refused, naming it
    trainer.stop(timeout=1)
    other = make_stack(["solo"], defaults={"gpus": 1})
    refused = other.devbox("up", env=env, check=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f'container "{trainer.name}" (not devbox)' in refused.stderr and holder(solo) in refused.stderr
    assert other.container_or_none(docker_client, "solo") is None
    rows = json.loads(solo.devbox("gpus", "--json", env=env).stdout)
    assert [h["container"] for h in json_holders(json.dumps(rows), plain_gpu)] == [trainer.name]


def test_two_concurrent_ups_in_two_folders_end_on_different_gpus(make_stack, docker_client, tmp_path):
    machine = fresh_machine(docker_client)
    env = gpu_machine(tmp_path, machine)
    stacks = [make_stack(["solo"], defaults={"gpus": 1}) for _ in range(2)]
    for round_ in range(ROUNDS):
        for stack in stacks:  # empty ledgers: both want the machine's first free GPU
            (stack.state / "gpus.json").unlink(missing_ok=True)
        ups = [subprocess.Popen([*DEVBOX, "up"], cwd=stack.directory, env=devbox_env(env), text=True,  # noqa: S603
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
               for stack in stacks]  # fmt: skip
        outputs = [up.communicate(timeout=600)[0] for up in ups]
        assert [up.returncode for up in ups] == [0, 0], f"round {round_}:\n" + "\n".join(outputs)
        got = [gpu_of(stack, docker_client) for stack in stacks]
        assert sorted(got) == sorted(uuids(machine)), (round_, got, outputs)
        for stack in stacks:
            stack.devbox("down", env=env)


def test_status_marks_a_host_whose_gpu_a_sharing_host_of_another_spec_also_holds(make_stack, docker_client,
                                                                                  tmp_path):  # fmt: skip
    machine = fresh_machine(docker_client)
    env = gpu_machine(tmp_path, machine)
    lab = make_stack(["solo"], defaults={"gpus": 1})
    lab.devbox("up", env=env)
    gpu = gpu_of(lab, docker_client)
    notebook = make_stack(["notebook"])
    notebook.spec["hosts"]["notebook"].update({"gpus": [gpu], "gpu_share": True})
    notebook.write_spec()
    notebook.devbox("up", env=env)
    assert gpu_of(notebook, docker_client, "notebook") == gpu
    [entry] = json.loads(lab.devbox("status", "--json", env=env).stdout)
    assert entry["gpus_also_held_by"] == [f"{holder(notebook, 'notebook')} shared"]
    assert f"also held by {holder(notebook, 'notebook')} shared" in lab.devbox("status", env=env).stdout
    [entry] = json.loads(notebook.devbox("status", "--json", env=env).stdout)
    assert entry["gpus_also_held_by"] == [holder(lab)]


def test_without_nvidia_smi_two_specs_still_get_different_gpus(make_stack, docker_client):
    # no nvidia-smi (a laptop's view, a remote engine): counts become indexes, and the engine's
    # containers are still read, so an index another container holds is not given again
    held_by_index = others_by_index(docker_client)
    if "*" in held_by_index:
        Lacking()("a container of another test run holds every GPU of the engine (remove it: .ci/run starts empty)")
    first, second = (make_stack(["solo"], defaults={"gpus": 1}) for _ in range(2))
    for stack in (first, second):
        assert "GPUs are assigned by index" in stack.devbox("up").stdout
    got = [gpu_of(stack, docker_client) for stack in (first, second)]
    held_all_along = held_by_index & others_by_index(docker_client, but=(first.name, second.name))
    assert all(g.isdigit() and g not in held_all_along for g in got) and got[0] != got[1], (got, held_all_along)
    [holder_of_first] = [h for h in engine_holdings(docker_client) if h.project == first.name]
    assert holder_of_first.device_ids == (got[0],)
