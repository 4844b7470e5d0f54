"""Swarm: two specs on one swarm cannot share a GPU (issue 22; README "One machine, one ledger").

On a swarm devbox does not choose GPUs: each GPU host's service reserves ``NVIDIA-GPU`` generic
resources and the managers hand out the GPUs the nodes advertise (named resources, by UUID). This
checks, on the real three-node rig (its GPU node advertises one fake GPU), what the README says of
that: a GPU is given to one task of the whole swarm at a time, whatever service or spec it is of;
the second waits, pending, until the first lets it go, and then gets that GPU.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

import pytest
from docker.types import Resources

from .conftest_swarm import Rig, multinode_swarm  # noqa: F401  (the fixture)
from .test_multinode_rig import QUICK_STOP, pushed_image, rig_clients, tasks_left, wait_until  # noqa: F401

pytestmark = pytest.mark.e2e

RESOURCE_ENV = "DOCKER_RESOURCE_NVIDIA-GPU"


def task_of(manager: Any, service: Any) -> dict[str, Any] | None:
    tasks = service.tasks(filters={"desired-state": "running"})
    return tasks[0] if tasks else None


def given_gpus(clients: dict[str, Any], service: Any) -> str | None:
    """The GPUs the swarm gave the service's task (what its container is told), once it runs."""
    for client in clients.values():
        for container in client.containers.list(filters={"label": f"com.docker.swarm.service.id={service.id}"}):
            env = dict(item.partition("=")[::2] for item in container.attrs["Config"]["Env"] or [])
            if RESOURCE_ENV in env:
                return env[RESOURCE_ENV]
    return None


def test_two_specs_on_one_swarm_never_share_a_gpu(multinode_swarm, rig_clients, pushed_image):  # noqa: F811
    rig = multinode_swarm
    assert rig.gpu_count == 1, "the rig's GPU node advertises one GPU"
    manager = rig_clients[rig.manager.name]
    prefix = f"rig-{secrets.token_hex(3)}"
    services: list[Any] = []

    def gpu_host(spec: str) -> Any:
        """A GPU host of a spec of its own, as devbox's swarm engine makes it: a count of NVIDIA-GPUs."""
        services.append(manager.services.create(
            pushed_image, ["sleep", "600"], name=f"{prefix}-{spec}", labels={"devbox.project": f"{prefix}-{spec}"},
            resources=Resources(generic_resources={"NVIDIA-GPU": 1}), **QUICK_STOP,
        ))  # fmt: skip
        return services[-1]

    try:
        first = gpu_host("a")
        try:
            first_gpu = wait_until(lambda: given_gpus(rig_clients, first), "the first spec's GPU host")
        except AssertionError:
            raise AssertionError(f"the first spec's GPU host never ran: {task_of(manager, first)}") from None
        second = gpu_host("b")
        # the second waits, pending: the swarm has no GPU left for it
        pending = wait_until(lambda: (t := task_of(manager, second)) and "insufficient resources" in
                             (t["Status"].get("Err") or "") and t, "the second task to be refused a GPU", 60)  # fmt: skip
        assert pending["Status"]["State"] == "pending", pending["Status"]
        assert given_gpus(rig_clients, second) is None
        # the first spec goes down: the second gets its GPU
        services.remove(first)
        first.remove()
        assert wait_until(lambda: given_gpus(rig_clients, second), "the second spec's GPU host", 120) == first_gpu
        assert first_gpu.startswith("GPU-")  # a named resource: the UUID the GPU node advertises
    finally:
        for service in services:
            with contextlib.suppress(Exception):
                service.remove()
        wait_until(lambda: not tasks_left(rig_clients, prefix), "the tasks to go", 60)
