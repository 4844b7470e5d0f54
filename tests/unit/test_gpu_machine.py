"""One machine, one ledger (issue 22), the pure parts and the lock: what the containers of other
specs and other tools hold (ids, counts, all, MIG), that a spec's own hosts do not count against
themselves, the refusal naming each holder, the status marker, and the machine-wide lock."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devbox.errors import SpecError
from devbox.gpus import (
    FREE_HINT,
    Gpu,
    Holding,
    Ledger,
    Machine,
    MigDevice,
    Request,
    allocate,
    also_held,
    assign,
    container_holding,
    held_units,
    owned_by,
    taken_by_others,
)
from devbox.machine_lock import MachineLock, lock_path

LAB = "/srv/lab/.devbox"  # another spec's state folder: its holders are named by /srv/lab


def plain(count: int) -> Machine:
    return Machine(tuple(Gpu(i, f"GPU-{i}000", "NVIDIA A100", 81920) for i in range(count)))


def mig_machine() -> Machine:
    """GPU 0 in MIG mode with two MIG devices, GPU 1 whole."""
    devices = (MigDevice("MIG-a", "3g.40gb", 0), MigDevice("MIG-b", "3g.40gb", 1))
    return Machine((Gpu(0, "GPU-0000", "NVIDIA A100", 81920, True, devices), Gpu(1, "GPU-1000", "NVIDIA A100")))


def theirs(name: str, ids: tuple[str, ...] = (), count: int = 0, host: str | None = "master", **fields: Any) -> Holding:
    """A container of another spec (``host`` None: of another tool)."""
    if host is None:
        return Holding(name, name, ids, count, **fields)
    return Holding(name, f"lab-{host}-1", ids, count, "lab", host, "lab-owner", LAB, **fields)


def nobody(holding: Holding) -> bool:
    return False


def test_others_hold_ids_counts_all_and_mig_devices_as_the_nvidia_hook_gives_them():
    machine = mig_machine()
    assert held_units(theirs("a", ("1",)), machine) == ("GPU-1000",)  # an index names that GPU
    assert held_units(theirs("b", count=1), machine) == ("MIG-a", "MIG-b")  # count 1: GPU 0, here all its MIG devices
    assert held_units(theirs("c", count=-1), machine) == machine.units  # all
    assert held_units(theirs("d", ("MIG-b",)), machine) == ("MIG-b",)  # one MIG device, not its GPU
    assert held_units(theirs("e", ("GPU-9999",)), machine) == ()  # not this machine's: nothing here
    assert held_units(theirs("f", count=2), None) == ("0", "1")  # machine unknown: the indexes moby maps
    assert held_units(theirs("g", count=-1), None) == ("*",)


def test_taken_by_others_leaves_out_the_specs_own_hosts_and_sharing_hosts():
    machine = plain(4)
    mine = Holding("m", "me-solo-1", ("GPU-0000",), 0, "me", "solo", "me-owner", "/home/me/.devbox")
    other = theirs("o", ("GPU-1000",))
    tool = theirs("trainer", count=3, host=None)  # `docker run --gpus 3`: devices 0, 1, 2
    sharing = theirs("s", ("GPU-3000",), host="notebook", shared=True)
    taken = taken_by_others([mine, other, tool, sharing], machine, owned_by("me", "me-owner", Path("/home/me/.devbox")))
    assert {unit: [h.id for h in found] for unit, found in taken.items()} == {
        "GPU-0000": ["trainer"], "GPU-1000": ["o", "trainer"], "GPU-2000": ["trainer"]}  # fmt: skip


def test_a_spec_owns_its_containers_by_owner_and_an_older_devbox_s_by_folder(tmp_path):
    ours = owned_by("lab", "lab-owner", tmp_path / ".devbox")
    assert ours(theirs("a"))
    assert not ours(Holding("b", "lab-master-1", (), 1, "lab", "master", "someone-else", LAB))  # a copy elsewhere
    assert not ours(Holding("c", "other-master-1", (), 1, "other", "master", "lab-owner", LAB))
    older = Holding("d", "lab-master-1", (), 1, "lab", "master")  # no owner label, no folder: this spec's
    assert ours(older) and ours(Holding("e", "lab-x-1", (), 1, "lab", "x", folder=str(tmp_path / ".devbox")))
    assert not ours(Holding("f", "lab-x-1", (), 1, "lab", "x", folder="/elsewhere/.devbox"))
    assert not ours(theirs("trainer", count=1, host=None))


def test_a_host_keeps_its_gpus_at_every_up_and_a_new_one_takes_a_free_one(tmp_path):
    machine = plain(3)
    first = allocate([Request("solo", 1)], machine)
    assert first.of("solo").device_ids == ("GPU-0000",)  # type: ignore[union-attr]
    # another spec came meanwhile: its host is on GPU 1; ours stays, a new host of ours gets GPU 2
    taken = taken_by_others([theirs("o", ("GPU-1000",))], machine, nobody)
    again = allocate([Request("solo", 1), Request("extra", 1)], machine, Ledger(machine, first.assignments),
                     taken=taken)  # fmt: skip
    assert {a.host: a.device_ids for a in again.assignments} == {"solo": ("GPU-0000",), "extra": ("GPU-2000",)}


def test_a_full_machine_is_refused_in_one_line_naming_every_holder_and_the_fix():
    machine = plain(2)
    holdings = [theirs("o", ("GPU-0000",)), theirs("trainer", ("1",), host=None)]
    with pytest.raises(SpecError) as refused:
        allocate([Request("solo", 1)], machine, taken=taken_by_others(holdings, machine, nobody))
    [line] = refused.value.problems
    assert line == (
        "hosts.*.gpus: solo (1) ask for 1 GPUs of their own but only 0 of this machine's 2 GPUs "
        "(0: NVIDIA A100, 1: NVIDIA A100) are free, held: GPU 0: lab/master (folder /srv/lab), "
        f'GPU 1: container "trainer" (not devbox); {FREE_HINT}, ask for fewer, or set gpu_share: true '
        "on a host that may use GPUs others hold"
    )
    with pytest.raises(SpecError, match=r'hosts\.solo\.gpus: GPU 1 is held by container "trainer" \(not devbox\)'):
        allocate([Request("solo", 0, ("1",))], machine, taken=taken_by_others(holdings, machine, nobody))
    with pytest.raises(SpecError, match=r"all gives solo every GPU, but others hold some: GPU 0: lab/master"):
        allocate([Request("solo", "all")], machine, taken=taken_by_others(holdings[:1], machine, nobody))


def test_a_mig_device_another_spec_holds_leaves_its_sibling_free():
    machine = mig_machine()
    taken = taken_by_others([theirs("o", ("MIG-a",))], machine, nobody)
    got = allocate([Request("x", 1), Request("y", 1)], machine, taken=taken)
    assert {a.host: a.device_ids for a in got.assignments} == {"x": ("MIG-b",), "y": ("GPU-1000",)}


def test_sharing_keeps_its_meaning_across_specs():
    machine = plain(1)
    taken = taken_by_others([theirs("o", ("GPU-0000",))], machine, nobody)
    shared = allocate([Request("nb", 1, share=True)], machine, taken=taken)  # may use what another spec holds
    assert shared.of("nb").device_ids == ("GPU-0000",)  # type: ignore[union-attr]
    sharing = [theirs("s", ("GPU-0000",), host="notebook", shared=True)]  # holds nothing: ours may have it
    assert allocate([Request("solo", 1)], machine, taken=taken_by_others(sharing, machine, nobody)).assignments


def test_without_nvidia_smi_what_others_hold_by_index_or_by_a_uuid_last_seen_is_not_given(tmp_path):
    env = {"PATH": str(tmp_path)}  # no nvidia-smi
    got = assign([Request("solo", 1)], tmp_path / "a", "devbox.yaml", environ=env,
                 holdings=[theirs("trainer", count=1, host=None)])  # fmt: skip
    assert got.of("solo").device_ids == ("1",)  # type: ignore[union-attr]
    # the ledger saw the machine once: another spec's UUID maps to its index
    from devbox.gpus import Assignment, save_ledger

    folder = tmp_path / "b"
    save_ledger(folder, Ledger(plain(2), (Assignment("old", "1", ("GPU-1000",)),)))
    got = assign([Request("solo", 1)], folder, "devbox.yaml", environ=env, holdings=[theirs("o", ("GPU-0000",))])
    assert got.of("solo").device_ids == ("1",)  # type: ignore[union-attr]


def container(requests: list[dict[str, Any]], *, env: list[str] | None = None, runtime: str = "runc",
              status: str = "running", labels: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    return {"Id": "c1", "Name": "/trainer", "State": {"Status": status},
            "Config": {"Labels": labels or {}, "Env": env or []},
            "HostConfig": {"DeviceRequests": requests, "Runtime": runtime, "RestartPolicy": {"Name": "no"}}}  # fmt: skip


def test_what_a_container_of_any_tool_holds():
    gpus = [["gpu"]]
    run_gpus = container([{"Driver": "", "Count": 0, "DeviceIDs": ["1"], "Capabilities": gpus}])  # --gpus device=1
    assert container_holding(run_gpus) == Holding("c1", "trainer", ("1",), 0)
    stopped = container([{"Driver": "", "Count": 2, "Capabilities": gpus}], status="exited")  # still holds
    assert container_holding(stopped) == Holding("c1", "trainer", (), 2, running=False)
    for gone in ("dead", "removing"):
        assert container_holding(container([{"Driver": "nvidia", "Count": -1}], status=gone)) is None
    assert container_holding(container([{"Driver": "other-vendor", "Count": 1, "Capabilities": [["fpga"]]}])) is None
    swarm_task = container([], env=["DOCKER_RESOURCE_NVIDIA-GPU=GPU-0000,GPU-1000"])
    assert container_holding(swarm_task).device_ids == ("GPU-0000", "GPU-1000")  # type: ignore[union-attr]
    old_runtime = container([], runtime="nvidia", env=["NVIDIA_VISIBLE_DEVICES=all"])
    assert container_holding(old_runtime).count == -1  # type: ignore[union-attr]
    composed = container([{"Driver": "nvidia", "Count": 1}],
                         labels={"com.docker.compose.project.config_files": "/srv/other/docker-compose.yml"})  # fmt: skip
    assert container_holding(composed).folder == "/srv/other"  # type: ignore[union-attr]


def test_status_marks_a_host_whose_gpu_another_spec_or_tool_also_holds(tmp_path):
    machine = plain(2)
    ours = owned_by("me", "me-owner", tmp_path)
    mine = [Holding("m", "me-a-1", ("GPU-0000",), 0, "me", "a", "me-owner"),
            Holding("n", "me-b-1", ("GPU-1000",), 0, "me", "b", "me-owner")]  # fmt: skip
    others = [theirs("s", ("GPU-0000",), host="notebook", shared=True), theirs("t", count=-1, host=None)]
    assert also_held([*mine, *others], machine, ours) == {
        "a": ["lab/notebook (folder /srv/lab) shared", 'container "t" (not devbox)'],
        "b": ['container "t" (not devbox)'],
    }
    assert also_held(mine, machine, ours) == {}


# --------------------------------------------------------------------------- the machine lock


def test_the_lock_is_one_file_per_engine_that_every_devbox_finds(tmp_path):
    assert lock_path("ENGINE-A", {}) == lock_path("ENGINE-A", {"HOME": "/home/other"})
    assert lock_path("ENGINE-A", {}).parent == Path("/tmp")
    assert lock_path("ENGINE-A", {}) != lock_path("ENGINE-B", {})
    assert lock_path("ENGINE-A", {"DEVBOX_LOCK_DIR": str(tmp_path)}).parent == tmp_path
    with MachineLock(path := lock_path("ENGINE-A", {"DEVBOX_LOCK_DIR": str(tmp_path)})):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o666  # any user's devbox may open it


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_devbox_waits_for_the_lock_and_a_dead_holder_leaves_none_behind(tmp_path):
    path = tmp_path / "devbox-gpus.lock"
    with MachineLock(path):
        pass  # made it
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        waited: list[float] = []

        def on_wait() -> None:
            waited.append(time.monotonic())
            os.kill(holder.pid, signal.SIGKILL)  # the holder dies mid-way (kill -9): nothing stale is left

        with MachineLock(path, on_wait=on_wait) as lock:
            assert waited, "the lock was free while another process held it"
            assert lock.path == path
    finally:
        holder.kill()
        holder.communicate()  # reaps it and closes its pipe
    with MachineLock(path, on_wait=lambda: pytest.fail("released at the end of the with")):
        pass


def test_release_lets_the_next_devbox_in_before_the_end_of_the_with(tmp_path):
    path = tmp_path / "devbox-gpus.lock"
    with MachineLock(path) as first:
        first.release()
        with MachineLock(path, on_wait=lambda: pytest.fail("still held after release")):
            pass
    with MachineLock(None, on_wait=lambda: pytest.fail("a lock of no path locks nothing")), MachineLock(None):
        pass
