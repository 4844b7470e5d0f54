"""The GPU ledger on a real engine: a count is GPUs of the host's own, never "the first N".

No GPU here: the engine's nvidia hook is a double (scripts/engine.sh), and so is nvidia-smi
(tests/doubles/nvidia-smi, describing a machine from tests/doubles/machines/*.json), so what
devbox asks of the engine and what each container sees are real; only the hardware is not.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import machine_path
from .test_gpu_hardware import init_environment

# The nvidia-smi double's GPUs: the engine's hook must be a double (not on a real GPU server).
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("hook_double")]

DOUBLES = Path(__file__).resolve().parents[1] / "doubles"
TWO_GPUS = json.loads((DOUBLES / "machines" / "two.json").read_text())


def gpu_machine(tmp_path: Path, machine: dict[str, Any]) -> dict[str, str]:
    """The environment of a devbox run on a machine with these GPUs (nvidia-smi's double on PATH)."""
    described = tmp_path / "machine.json"
    described.write_text(json.dumps(machine))
    return {"PATH": f"{nvidia_smi_folder(tmp_path)}{os.pathsep}{machine_path()}", "DEVBOX_TEST_NVIDIA_SMI": str(described)}


def nvidia_smi_folder(tmp_path: Path) -> Path:
    """A folder holding only nvidia-smi's double, run by this Python (the tests' PATH has no python3)."""
    folder = tmp_path / "gpu-bin"
    folder.mkdir(exist_ok=True)
    wrapper = folder / "nvidia-smi"
    wrapper.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{DOUBLES / 'nvidia-smi'}' \"$@\"\n")
    wrapper.chmod(0o755)
    return folder


def device_request(container: Any) -> dict[str, Any]:
    (request,) = container.attrs["HostConfig"]["DeviceRequests"]
    return request


def test_two_hosts_asking_for_one_gpu_each_get_different_gpus(make_stack, docker_client, tmp_path):
    stack = make_stack(2, defaults={"gpus": 1})
    up = stack.devbox("up")
    assert "GPUs are assigned by index" in up.stdout  # no nvidia-smi here: said, not hidden
    gpus_column = {line.split()[0]: line for line in up.stdout.splitlines() if line.startswith(("master ", "worker "))}
    assert " #0" in gpus_column["master"] and " #1" in gpus_column["worker"], up.stdout  # never a bare `0`
    seen = {host: init_environment(stack.container(docker_client, host))["NVIDIA_VISIBLE_DEVICES"]
            for host in ("master", "worker")}  # fmt: skip
    assert seen == {"master": "0", "worker": "1"}
    assert {tuple(device_request(stack.container(docker_client, h))["DeviceIDs"]) for h in seen} == {("0",), ("1",)}
    status = {e["host"]: e for e in json.loads(stack.devbox("status", "--json").stdout)}
    assert [d["index"] for d in status["worker"]["gpu_devices"]] == ["1"]

    # On the GPU machine, the same spec resolves to the machine's UUIDs, each host keeping its GPU.
    on_machine = gpu_machine(tmp_path, TWO_GPUS)
    stack.devbox("up", env=on_machine)
    uuids = [gpu["uuid"] for gpu in TWO_GPUS["gpus"]]
    for host, uuid in zip(("master", "worker"), uuids, strict=True):
        container = stack.container(docker_client, host)
        assert device_request(container)["DeviceIDs"] == [uuid]
        assert init_environment(container)["NVIDIA_VISIBLE_DEVICES"] == uuid
    table = stack.devbox("status", env=on_machine).stdout
    assert "#0 (GPU-5d5ba0) NVIDIA GeForce RTX 4090" in table and "#1 (GPU-6f2b1e) NVIDIA GeForce RTX 4090" in table
    check = stack.devbox("check", env=on_machine, check=False)
    assert "PASS  worker     gpu request" in check.stdout, check.stdout


def test_a_third_gpu_host_on_a_two_gpu_machine_is_refused_and_nothing_starts(make_stack, docker_client, tmp_path):
    stack = make_stack(3, defaults={"gpus": 1})
    refused = stack.devbox("up", env=gpu_machine(tmp_path, TWO_GPUS), check=False)
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert "master (1), worker (1), third (1) ask for 3 GPUs of their own but this machine has 2 GPUs" in line
    assert "gpu_share: true" in line
    assert all(stack.container_or_none(docker_client, host) is None for host in ("master", "worker", "third"))
    assert not (stack.state / "gpus.json").exists()
    valid = stack.devbox("validate", env=gpu_machine(tmp_path, TWO_GPUS), check=False)
    assert valid.returncode == 2 and "ask for 3 GPUs" in valid.stderr


def test_devbox_gpus_names_the_host_whose_process_uses_a_gpu(make_stack, docker_client, tmp_path):
    stack = make_stack(2, defaults={"gpus": 1})
    machine = dict(TWO_GPUS)
    env = gpu_machine(tmp_path, machine)
    stack.devbox("up", env=env)
    worker = stack.container(docker_client, "worker")
    worker.exec_run(["sleep", "3017"], detach=True)  # the "GPU job"; its host PID is what nvidia-smi reports
    pid = None
    for _ in range(50):  # the exec starts a moment after it returns
        pid = next((int(row[0]) for row in worker.top(ps_args="-o pid,args")["Processes"]
                    if row[-1] == "sleep 3017"), None)  # fmt: skip
        if pid:
            break
        time.sleep(0.1)
    assert pid, "the job did not start"
    worker_gpu = device_request(worker)["DeviceIDs"][0]
    machine["compute_apps"] = [{"pid": pid, "gpu_uuid": worker_gpu, "used_memory": 1234}]
    (tmp_path / "machine.json").write_text(json.dumps(machine))
    rows = json.loads(stack.devbox("gpus", "--json", env=env).stdout)
    by_uuid = {row["uuid"]: row for row in rows}
    assert [p["host"] for p in by_uuid[worker_gpu]["processes"]] == ["worker"]
    assert [h["host"] for h in by_uuid[worker_gpu]["holders"]] == ["worker"]
    table = stack.devbox("gpus", env=env).stdout
    assert f"{pid}" in table and "worker" in table
