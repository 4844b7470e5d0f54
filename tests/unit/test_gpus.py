"""The GPU ledger: discovery through an nvidia-smi double, allocation, the ledger file, attribution.

The double (tests/doubles/nvidia-smi) describes the machine named by DEVBOX_TEST_NVIDIA_SMI
(tests/doubles/machines/*.json); a test that needs compute apps writes its own description.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import devbox.gpus
from devbox.cli import cli
from devbox.errors import PreflightError, SpecError, UsageError
from devbox.gpus import (
    LEDGER_FILE,
    Allocation,
    Assignment,
    ComputeApp,
    Gpu,
    Holding,
    Ledger,
    Machine,
    MigDevice,
    Request,
    Usage,
    allocate,
    assign,
    attribute,
    container_holding,
    container_of,
    discover,
    gpu_report,
    ledger_after,
    load_ledger,
    parse_compute_apps,
    parse_machine,
    read_cgroup,
    requests_of,
    save_ledger,
)

from .fake_docker import FakeDockerClient, serve
from .helpers import make_spec

DOUBLES = Path(__file__).resolve().parents[1] / "doubles"
MACHINES = DOUBLES / "machines"


def describe(name: str) -> dict[str, Any]:
    return json.loads((MACHINES / f"{name}.json").read_text())


def smi_env(tmp_path: Path, machine: str | dict[str, Any], **extra: Any) -> dict[str, str]:
    """An environment whose PATH finds the double, describing ``machine`` (a name or a dict)."""
    data = describe(machine) if isinstance(machine, str) else machine
    path = tmp_path / "machine.json"
    path.write_text(json.dumps({**data, **extra}))
    return {"PATH": f"{DOUBLES}{os.pathsep}{os.environ['PATH']}", "DEVBOX_TEST_NVIDIA_SMI": str(path)}


@pytest.fixture
def use_double(tmp_path, monkeypatch):
    """Put the double on PATH for code that reads os.environ; returns a setter for the machine."""

    def use(machine: str | dict[str, Any], **extra: Any) -> None:
        for key, value in smi_env(tmp_path, machine, **extra).items():
            monkeypatch.setenv(key, value)

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    return use


def machine_of(name: str, tmp_path: Path) -> Machine:
    found = discover(smi_env(tmp_path, name))
    assert found is not None
    return found


def plain(count: int) -> Machine:
    return Machine(tuple(Gpu(i, f"GPU-{i}000", "NVIDIA A100", 81920) for i in range(count)))


def ids(allocation: Allocation) -> dict[str, tuple[str, ...]]:
    return {a.host: a.device_ids for a in allocation.assignments}


def reqs(*pairs: tuple[str, Any], share: tuple[str, ...] = ()) -> list[Request]:
    """Requests from (host, count-or-list) pairs; a list is explicit ids."""
    return [
        Request(host, 0, tuple(str(i) for i in want), host in share) if isinstance(want, list)
        else Request(host, want, (), host in share)
        for host, want in pairs
    ]  # fmt: skip


def again(requests: list[Request], machine: Machine | None, before: Allocation) -> Allocation:
    return allocate(requests, machine, ledger_after(before, machine))


# --------------------------------------------------------------------------- discovery


def test_discovery_reads_index_uuid_name_memory_and_mig_mode(tmp_path):
    machine = machine_of("four", tmp_path)
    assert [gpu.index for gpu in machine.gpus] == [0, 1, 2, 3]
    assert machine.gpus[0] == Gpu(0, "GPU-0a1b2c3d-0000-4000-8000-000000000000", "NVIDIA A100-SXM4-80GB", 81920)
    assert machine.units == tuple(gpu.uuid for gpu in machine.gpus)


def test_a_gpu_in_mig_mode_offers_its_mig_devices_not_itself(tmp_path):
    machine = machine_of("mig", tmp_path)
    assert machine.gpus[0].mig and not machine.gpus[1].mig
    assert machine.gpus[0].mig_devices[2] == MigDevice("MIG-0e0b7a37-5e8a-5c0f-a3a6-1c2d3e4f5a6b", "1g.5gb", 2)
    assert machine.units == (
        "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f", "MIG-cba663e8-9bed-5b25-b243-5985ef7c9beb",
        "MIG-0e0b7a37-5e8a-5c0f-a3a6-1c2d3e4f5a6b", "GPU-bb22cc33-dd44-4e55-8f66-0077889900aa",
    )  # fmt: skip
    assert "4 GPU units" in machine.describe() and "MIG mode: 3 MIG devices" in machine.describe()


def test_gpus_without_mig_support_are_whole_units(tmp_path):
    machine = machine_of("two", tmp_path)
    assert not any(gpu.mig for gpu in machine.gpus) and len(machine.units) == 2


def test_no_nvidia_smi_means_an_unknown_machine(tmp_path):
    assert discover({"PATH": str(tmp_path)}) is None


def test_a_remote_engine_is_not_described_by_the_local_nvidia_smi(tmp_path):
    env = smi_env(tmp_path, "four") | {"DOCKER_HOST": "tcp://gpu-server:2376"}
    assert discover(env) is None
    assert discover(smi_env(tmp_path, "four") | {"DOCKER_HOST": "unix:///var/run/docker.sock"}) is not None


def test_a_failing_nvidia_smi_is_one_line_with_its_exit_code_and_the_fix(tmp_path):
    failing = {"gpus": [], "fail": {"exit": 9, "stdout": "NVIDIA-SMI has failed because it couldn't "
                                    "communicate with the NVIDIA driver.\nMake sure ...\n"}}  # fmt: skip
    with pytest.raises(PreflightError) as info:
        discover(smi_env(tmp_path, failing))
    [line] = info.value.lines()
    assert "exit 9" in line and "couldn't communicate with the NVIDIA driver" in line
    assert "--no-gpu" in line and info.value.exit_code == 1


@pytest.mark.parametrize("raw", [
    {"query-gpu": "<html>not csv</html>\n"},
    {"query-gpu": "0, GPU-1, A100, lots, Disabled\n"},
    {"query-gpu": "zero, GPU-1, A100, 100, Disabled\n"},
    {"list": "GPU 0: A100 (UUID: GPU-1)\nSegmentation fault\n"},
])  # fmt: skip
def test_garbage_from_nvidia_smi_names_the_line(tmp_path, raw):
    with pytest.raises(PreflightError) as info:
        discover(smi_env(tmp_path, "two", raw=raw))
    [line] = info.value.lines()
    assert "nvidia-smi printed" in line and "cannot read" in line


def test_a_gpu_name_with_a_comma_is_kept_whole():
    machine = parse_machine("0, GPU-abc, Tesla, rev B, 16384, [N/A]\n", "GPU 0: Tesla, rev B (UUID: GPU-abc)\n")
    assert machine.gpus == (Gpu(0, "GPU-abc", "Tesla, rev B", 16384),)


def test_compute_apps_parse_and_no_processes_is_empty():
    assert parse_compute_apps("") == []
    assert parse_compute_apps("No running processes found\n") == []
    assert parse_compute_apps("4242, GPU-abc, 1024\n") == [ComputeApp(4242, "GPU-abc", 1024)]


# --------------------------------------------------------------------------- allocation


def test_two_hosts_asking_one_gpu_each_get_different_gpus(tmp_path):
    machine = machine_of("two", tmp_path)
    allocation = allocate(reqs(("master", 1), ("worker", 1)), machine)
    assert ids(allocation) == {"master": (machine.units[0],), "worker": (machine.units[1],)}
    assert not allocation.by_index and not allocation.notes


def test_allocation_is_deterministic():
    requests = reqs(("a", 2), ("b", 1), ("c", [3]), ("d", 1), share=("d",))
    assert allocate(requests, plain(4)) == allocate(list(requests), plain(4))


def test_hosts_without_gpus_get_no_assignment():
    allocation = allocate(reqs(("a", 0), ("b", 1)), plain(2))
    assert allocation.of("a") is None and allocation.of("b") is not None


def test_requests_come_from_spec_hosts_in_spec_order():
    spec = make_spec(hosts={"master": {"ssh_port": 1, "gpus": 2}, "worker": {"ssh_port": 2, "gpus": [1]},
                            "cpu": {"ssh_port": 3}})  # fmt: skip
    assert requests_of(spec.hosts) == [Request("master", 2), Request("worker", 0, ("1",)), Request("cpu", 0)]
    shared = SimpleNamespace(name="nb", gpus=SimpleNamespace(count=1, device_ids=()), gpu_share=True)
    assert requests_of([shared]) == [Request("nb", 1, (), True)]


def test_adding_a_host_before_the_others_moves_nobody():
    machine = plain(4)
    before = allocate(reqs(("master", 1), ("worker", 2)), machine)
    after = again(reqs(("new", 1), ("master", 1), ("worker", 2)), machine, before)
    assert ids(after)["master"] == ids(before)["master"] and ids(after)["worker"] == ids(before)["worker"]
    assert ids(after)["new"] == ("GPU-3000",)


def test_removing_a_host_frees_its_gpus_and_moves_nobody_else():
    machine = plain(3)
    before = allocate(reqs(("a", 1), ("b", 1), ("c", 1)), machine)
    after = again(reqs(("a", 1), ("c", 1)), machine, before)
    assert ids(after) == {"a": ("GPU-0000",), "c": ("GPU-2000",)}
    later = again(reqs(("a", 1), ("c", 1), ("d", 1)), machine, after)
    assert ids(later)["d"] == ("GPU-1000",)


def test_reordering_hosts_keeps_every_assignment():
    machine = plain(3)
    before = allocate(reqs(("a", 1), ("b", 1), ("c", 1)), machine)
    after = again(reqs(("c", 1), ("a", 1), ("b", 1)), machine, before)
    assert ids(after) == ids(before)
    assert [a.host for a in after.assignments] == ["c", "a", "b"]


def test_a_host_whose_count_changes_gets_new_gpus_and_the_others_keep_theirs():
    machine = plain(4)
    before = allocate(reqs(("a", 1), ("b", 1)), machine)
    grown = again(reqs(("a", 2), ("b", 1)), machine, before)
    assert ids(grown)["b"] == ids(before)["b"]
    assert ids(grown)["a"] == ("GPU-0000", "GPU-2000")  # its own first, then the first free one
    assert grown.of("a").request == "2"  # type: ignore[union-attr]
    shrunk = again(reqs(("a", 1), ("b", 1)), machine, grown)
    assert ids(shrunk) == {"a": ("GPU-0000",), "b": ("GPU-1000",)}


def test_explicit_ids_are_honoured_and_taken_out_of_the_pool():
    machine = plain(3)
    allocation = allocate(reqs(("a", 1), ("pinned", [0]), ("b", 1)), machine)
    assert ids(allocation) == {"pinned": ("GPU-0000",), "a": ("GPU-1000",), "b": ("GPU-2000",)}


def test_a_new_pin_moves_the_counted_host_that_had_that_gpu():
    machine = plain(2)
    before = allocate(reqs(("a", 1)), machine)
    after = again(reqs(("a", 1), ("pinned", ["GPU-0000"])), machine, before)
    assert ids(after) == {"a": ("GPU-1000",), "pinned": ("GPU-0000",)}


def test_two_hosts_pinning_the_same_gpu_are_refused_unless_one_shares():
    with pytest.raises(SpecError) as info:
        allocate(reqs(("a", [0]), ("b", [0, 1])), plain(2), source="lab.yaml")
    assert info.value.lines() == ["lab.yaml: hosts.b.gpus: GPU GPU-0000 is also pinned to host a; pin another, "
                                  "or set gpu_share: true on a host that may use GPUs others hold"]  # fmt: skip
    shared = allocate(reqs(("a", [0]), ("b", [0, 1]), share=("b",)), plain(2))
    assert ids(shared) == {"a": ("GPU-0000",), "b": ("GPU-0000", "GPU-1000")}


def test_a_pin_the_machine_does_not_have_is_refused():
    with pytest.raises(SpecError) as info:
        allocate(reqs(("a", [7])), plain(2))
    assert "hosts.a.gpus: GPU 7 does not exist on this machine (it has 2 GPUs (0: NVIDIA A100" in info.value.lines()[0]


def test_oversubscription_is_one_line_naming_hosts_requests_machine_and_fix(tmp_path):
    machine = machine_of("two", tmp_path)
    with pytest.raises(SpecError) as info:
        allocate(reqs(("master", 1), ("worker", 1), ("extra", 1)), machine, source="devbox.yaml")
    [line] = info.value.lines()
    assert line == ("devbox.yaml: hosts.*.gpus: master (1), worker (1), extra (1) ask for 3 GPUs of their own but "
                    "this machine has 2 GPUs (0: NVIDIA GeForce RTX 4090, 1: NVIDIA GeForce RTX 4090); ask for "
                    "fewer, or set gpu_share: true on a host that may use GPUs others hold")  # fmt: skip
    assert info.value.exit_code == 2


def test_oversubscription_counts_pinned_gpus():
    with pytest.raises(SpecError) as info:
        allocate(reqs(("a", [0, 1]), ("b", 1)), plain(2))
    assert "a ([0, 1]), b (1) ask for 3 GPUs of their own" in info.value.lines()[0]


def test_sharing_hosts_are_not_holders_and_take_the_least_loaded_gpu():
    machine = plain(3)
    allocation = allocate(reqs(("a", 1), ("b", 1), ("nb", 1), ("nb2", 2), share=("nb", "nb2")), machine)
    assert ids(allocation)["nb"] == ("GPU-2000",)  # the one nobody holds
    assert ids(allocation)["nb2"] == ("GPU-0000", "GPU-1000")  # all held once now: machine order
    assert allocation.of("nb").shared and not allocation.of("a").shared  # type: ignore[union-attr]
    full = allocate(reqs(("a", 1), ("b", 1), ("nb", 2), share=("nb",)), plain(2))  # fits: nb holds nothing
    assert ids(full)["nb"] == ("GPU-0000", "GPU-1000")


def test_a_sharing_host_keeps_its_gpus_and_cannot_ask_for_more_than_exist():
    machine = plain(2)
    before = allocate(reqs(("nb", 1), share=("nb",)), machine)
    after = again(reqs(("a", 1), ("nb", 1), share=("nb",)), machine, before)
    assert ids(after) == {"nb": ("GPU-0000",), "a": ("GPU-0000",)}  # nb stays where it was, a holds it
    with pytest.raises(SpecError, match=r"hosts.nb.gpus: asks for 3 GPUs but this machine has 2 GPUs"):
        allocate(reqs(("nb", 3), share=("nb",)), machine)


def test_all_holds_every_gpu_so_any_other_holder_is_refused():
    assert allocate(reqs(("a", "all")), plain(2)).of("a") == Assignment("a", "all", all=True)
    with pytest.raises(SpecError) as info:
        allocate(reqs(("a", "all"), ("b", 1)), plain(2))
    assert "hosts.a.gpus: all gives a every GPU, so b (1) would share them" in info.value.lines()[0]
    shared = allocate(reqs(("a", "all"), ("b", 1), share=("a",)), plain(2))
    assert shared.of("a") == Assignment("a", "all shared", all=True, shared=True)


def test_on_a_mig_machine_a_count_counts_mig_devices(tmp_path):
    machine = machine_of("mig", tmp_path)
    allocation = allocate(reqs(("a", 2), ("b", 1), ("c", 1)), machine)
    assert ids(allocation)["a"] == machine.units[:2] and ids(allocation)["b"] == machine.units[2:3]
    assert ids(allocation)["c"] == ("GPU-bb22cc33-dd44-4e55-8f66-0077889900aa",)  # the whole GPU not in MIG mode
    with pytest.raises(SpecError, match="ask for 5 GPUs of their own but this machine has 4 GPU units"):
        allocate(reqs(("a", 2), ("b", 3)), machine)


def test_mig_ids_are_honoured_and_pinning_a_mig_gpu_takes_its_mig_devices(tmp_path):
    machine = machine_of("mig", tmp_path)
    allocation = allocate(reqs(("a", 1), ("p", ["MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f"])), machine)
    assert ids(allocation)["p"] == ("MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f",)
    assert ids(allocation)["a"] == ("MIG-cba663e8-9bed-5b25-b243-5985ef7c9beb",)
    whole = allocate(reqs(("p", [0]), ("a", 1)), machine)
    assert ids(whole)["p"] == machine.units[:3] and ids(whole)["a"] == (machine.units[3],)


def test_without_nvidia_smi_counts_become_indexes_in_host_order_and_say_so():
    allocation = allocate(reqs(("a", 1), ("p", [1]), ("b", 2), ("nb", 1), share=("nb",)), None)
    assert ids(allocation) == {"a": ("0",), "p": ("1",), "b": ("2", "3"), "nb": ("0",)}
    assert allocation.by_index and "assigned by index in host order" in allocation.notes[0]
    kept = again(reqs(("new", 1), ("a", 1), ("p", [1]), ("b", 2)), None, allocation)
    assert ids(kept) == {"new": ("4",), "a": ("0",), "p": ("1",), "b": ("2", "3")}


def test_up_on_the_gpu_machine_turns_indexes_from_a_laptop_into_uuids():
    laptop = allocate(reqs(("a", 1), ("b", 1)), None)
    server = again(reqs(("b", 1), ("a", 1)), plain(2), laptop)
    assert ids(server) == {"a": ("GPU-0000",), "b": ("GPU-1000",)}
    assert not server.by_index and not server.notes


def test_gpus_that_left_the_machine_are_replaced():
    before = allocate(reqs(("a", 1), ("b", 1)), plain(3))
    smaller = Machine(tuple(g for g in plain(3).gpus if g.index != 0))
    after = again(reqs(("a", 1), ("b", 1)), smaller, before)
    assert ids(after) == {"a": ("GPU-2000",), "b": ("GPU-1000",)}


host_names = st.sampled_from(["h0", "h1", "h2", "h3", "h4", "h5"])
one_spec = st.dictionaries(host_names, st.tuples(st.integers(0, 3), st.booleans()), max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.lists(one_spec, min_size=1, max_size=5), st.randoms(use_true_random=False))
def test_any_history_of_specs_never_overlaps_and_keeps_unchanged_hosts(specs, rnd):
    """Every spec in a sequence is allocated against the ledger of the one before."""
    machine, ledger = plain(6), Ledger()
    for spec in specs:
        names = list(spec)
        rnd.shuffle(names)
        requests = [Request(name, spec[name][0], (), spec[name][1]) for name in names]
        try:
            allocation = allocate(requests, machine, ledger)
        except SpecError as exc:
            assert sum(r.count for r in requests if not r.share) > 6, exc
            continue
        holders = [a for a in allocation.assignments if not a.shared]
        held = [unit for a in holders for unit in a.device_ids]
        assert len(held) == len(set(held))
        for request in requests:
            got = allocation.of(request.host)
            assert (got is None) == (request.count == 0)
            if got is not None:
                assert len(got.device_ids) == request.count and got.shared == request.share
                assert len(set(got.device_ids)) == request.count and set(got.device_ids) <= set(machine.units)
            before = ledger.of(request.host)
            if got is not None and before is not None and before.request == got.request and not request.share:
                assert got.device_ids == before.device_ids
        ledger = ledger_after(allocation, machine, ledger)


# --------------------------------------------------------------------------- the ledger file


def test_the_ledger_round_trips_and_is_written_atomically(tmp_path):
    machine = Machine((Gpu(0, "GPU-a", "A100", 40960, True, (MigDevice("MIG-x", "1g.5gb", 0),)), Gpu(1, "GPU-b", "A100")))
    allocation = allocate(reqs(("a", 1), ("nb", "all"), share=("nb",)), machine)
    ledger = ledger_after(allocation, machine)
    assert save_ledger(tmp_path, ledger) is True
    assert load_ledger(tmp_path) == ledger
    assert save_ledger(tmp_path, ledger) is False  # unchanged: not rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == [LEDGER_FILE]  # no temporary file left behind
    assert stat.S_IMODE((tmp_path / LEDGER_FILE).stat().st_mode) == 0o644
    data = json.loads((tmp_path / LEDGER_FILE).read_text())
    assert data["hosts"]["a"] == {"request": "1", "device_ids": ["MIG-x"], "all": False, "shared": False}
    assert data["machine"][1]["uuid"] == "GPU-b"


def test_no_ledger_is_an_empty_one_and_an_unknown_machine_keeps_the_last_seen(tmp_path):
    assert load_ledger(tmp_path) == Ledger()
    seen = ledger_after(allocate(reqs(("a", 1)), plain(1)), plain(1))
    assert ledger_after(allocate(reqs(("a", 1)), None, seen), None, seen).machine == plain(1)


@pytest.mark.parametrize("text", ["{not json", '{"version": 1}', '["a"]', '{"version": 9, "hosts": {}}',
                                  '{"version": 1, "hosts": {"a": {"device_ids": []}}}', "\xff\xfe"])  # fmt: skip
def test_a_damaged_ledger_is_one_line_naming_the_file_and_the_fix(tmp_path, text):
    (tmp_path / LEDGER_FILE).write_text(text, encoding="latin-1")
    with pytest.raises(UsageError) as info:
        load_ledger(tmp_path)
    [line] = info.value.lines()
    assert line.startswith(f"{tmp_path / LEDGER_FILE}: not a GPU ledger (")
    assert "remove it and the next `devbox up` assigns GPUs afresh" in line


def test_assign_reads_the_machine_allocates_and_records(tmp_path):
    env = smi_env(tmp_path, "four")
    folder = tmp_path / "out"
    first = assign(reqs(("master", 1), ("worker", 1)), folder, "devbox.yaml", environ=env)
    assert load_ledger(folder).assignments == first.assignments
    assert load_ledger(folder).machine == discover(env)
    again_ = assign(reqs(("worker", 1), ("master", 1)), folder, "devbox.yaml", environ=env)
    assert ids(again_) == ids(first)
    assert first.of("master").compose_fields() == {"device_ids": [describe("four")["gpus"][0]["uuid"]]}  # type: ignore[union-attr]
    assert Assignment("a", "all", all=True).compose_fields() == {"count": "all"}


def test_assign_writes_nothing_when_it_refuses_or_only_checks(tmp_path):
    env = smi_env(tmp_path, "two")
    folder = tmp_path / "out"
    with pytest.raises(SpecError):
        assign(reqs(("a", 2), ("b", 1)), folder, "devbox.yaml", environ=env)
    assign(reqs(("a", 2)), folder, "devbox.yaml", environ=env, save=False)
    assert not (folder / LEDGER_FILE).exists()


# --------------------------------------------------------------------------- attribution

CONTAINER_A = "a" * 64
CONTAINER_B = "b" * 64


@pytest.mark.parametrize("text", [
    f"0::/system.slice/docker-{CONTAINER_A}.scope\n",
    f"12:memory:/docker/{CONTAINER_A}\n11:cpu,cpuacct:/docker/{CONTAINER_A}\n",
    f"0::/docker/{CONTAINER_A}/init.scope\n",
])  # fmt: skip
def test_a_cgroup_file_names_its_container(text):
    assert container_of(text) == CONTAINER_A


def test_a_process_outside_containers_has_none():
    assert container_of("0::/user.slice/user-1000.slice/session-3.scope\n") is None


def fake_proc(root: Path, cgroups: dict[int, str]) -> Path:
    for pid, text in cgroups.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cgroup").write_text(text)
    return root


def test_attribution_names_holders_load_and_the_host_of_each_process(tmp_path):
    machine = plain(2)
    proc = fake_proc(tmp_path / "proc", {100: f"0::/system.slice/docker-{CONTAINER_A}.scope\n",
                                         200: "0::/user.slice/session-1.scope\n"})  # fmt: skip
    ledger = Ledger(machine, (Assignment("master", "1", ("GPU-0000",)), Assignment("nb", "1 shared", ("GPU-0000",), shared=True)))
    containers = [Holding(CONTAINER_A, "lab-master-1", ("GPU-0000",), project="lab", host="master"),
                  Holding(CONTAINER_B, "lab-old-1", count=1, project="lab", host="old"),
                  Holding("c" * 64, "lab-nb-1", ("GPU-0000",), project="lab", host="nb", shared=True)]  # fmt: skip
    usage = [Usage(0, "GPU-0000", 2048, 35), Usage(1, "GPU-1000", 0, 0)]
    apps = [ComputeApp(200, "GPU-0000", 100), ComputeApp(100, "GPU-0000", 1900), ComputeApp(999, "GPU-0000", 5)]
    rows = attribute(machine, usage, apps, ledger, containers, lambda pid: read_cgroup(pid, proc), project="lab")
    first = rows[0].as_dict()
    assert first["memory_used_mib"] == 2048 and first["utilization"] == 35 and first["memory_total_mib"] == 81920
    # "old" asked for `count: 1` and Docker gave it GPU 0, as it gives every count: the ledger's holder shows the clash
    assert [(h["host"], h["shared"]) for h in first["holders"]] == [("master", False), ("nb", True), ("old", False)]
    assert [(p["pid"], p["host"], p["project"], p["used_memory_mib"]) for p in first["processes"]] == [
        (100, "master", "lab", 1900), (200, None, None, 100), (999, None, None, 5)]  # fmt: skip
    assert first["processes"][0]["container"] == "lab-master-1"
    assert rows[1].holders == () and rows[1].processes == ()


def test_attribution_on_a_mig_gpu_lists_each_mig_holder(tmp_path):
    machine = machine_of("mig", tmp_path)
    a, b = machine.units[0], machine.units[1]
    containers = [Holding(CONTAINER_A, "p-a-1", (a,), project="p", host="a"),
                  Holding(CONTAINER_B, "p-b-1", (b,), project="p", host="b", running=False)]  # fmt: skip
    ledger = Ledger(machine, (Assignment("a", "1", (a,)), Assignment("b", "1", (b,))))
    rows = attribute(machine, [], [ComputeApp(7, machine.gpus[0].uuid, 10)], ledger, containers, lambda pid: None,
                     project="p")  # fmt: skip
    assert [(h.host, h.device) for h in rows[0].holders] == [("a", a), ("b", b)]
    assert rows[0].memory_used_mib is None and rows[0].processes[0].host is None


def fake_container(cid: str, host: str | None, requests: list[dict[str, Any]], status: str = "running", *,
                   project: str = "lab", labels: dict[str, str] | None = None, env: list[str] | None = None,
                   runtime: str = "runc", name: str | None = None) -> SimpleNamespace:  # fmt: skip
    """A container as the SDK gives it, inspected: ``host`` None is one devbox did not make."""
    found = dict(labels or {})
    if host is not None:
        found.update({"devbox.project": project, "devbox.host": host})
    attrs = {"Id": cid, "Name": f"/{name or f'{project}-{host}-1'}", "State": {"Status": status},
             "Config": {"Labels": found, "Env": env or []},
             "HostConfig": {"DeviceRequests": requests, "Runtime": runtime}}  # fmt: skip
    return SimpleNamespace(id=cid, name=attrs["Name"][1:], status=status, labels=found, attrs=attrs)


def test_container_holding_reads_device_requests():
    every = fake_container(CONTAINER_A, "a", [{"Driver": "nvidia", "Count": -1, "DeviceIDs": None}])
    assert container_holding(every.attrs) == Holding(CONTAINER_A, "lab-a-1", (), -1, "lab", "a")
    pinned = fake_container(CONTAINER_B, "b", [{"Driver": "nvidia", "Count": 0, "DeviceIDs": ["GPU-1"]}], "exited")
    assert container_holding(pinned.attrs) == Holding(CONTAINER_B, "lab-b-1", ("GPU-1",), 0, "lab", "b", running=False)


def test_gpu_report_reads_the_double_the_ledger_and_the_containers(tmp_path):
    data = describe("four")
    uuid = data["gpus"][2]["uuid"]
    data["gpus"][2].update(memory_used=4096, utilization=87)
    env = smi_env(tmp_path, data, compute_apps=[{"pid": 4242, "gpu_uuid": uuid, "used_memory": 4000}])
    machine = discover(env)
    save_ledger(tmp_path, ledger_after(allocate(reqs(("x", 1), ("y", 1), ("worker", [2])), machine), machine))
    proc = fake_proc(tmp_path / "proc", {4242: f"0::/docker/{CONTAINER_B}\n"})
    containers = [fake_container(CONTAINER_B, "worker", [{"Driver": "nvidia", "DeviceIDs": [uuid]}]),
                  fake_container(CONTAINER_A, "x", [{"Driver": "nvidia", "DeviceIDs": ["0"]}], "exited")]  # fmt: skip
    rows = gpu_report(containers, tmp_path, env, lambda pid: read_cgroup(pid, proc), project="lab")
    # y is in the ledger but has no container (down): it holds nothing, another spec may have its GPU
    assert [[h.host for h in row.holders] for row in rows] == [["x"], [], ["worker"], []]
    assert (rows[2].memory_used_mib, rows[2].utilization) == (4096, 87)
    assert [(p.pid, p.host, p.used_memory_mib) for p in rows[2].processes] == [(4242, "worker", 4000)]


def test_gpu_report_without_nvidia_smi_says_where_to_run_it(tmp_path):
    with pytest.raises(PreflightError, match="nvidia-smi is not on PATH: run `devbox gpus` on the GPU machine"):
        gpu_report([], tmp_path, {"PATH": str(tmp_path)})
    with pytest.raises(PreflightError, match=r"the engine runs elsewhere \(ssh://gpu\)"):
        gpu_report([], tmp_path, {"PATH": str(DOUBLES), "DOCKER_HOST": "ssh://gpu"})


# --------------------------------------------------------------------------- devbox gpus

SPEC = """\
project: gpulab
image: {base: debian:bookworm}
hosts:
  master: {ssh_port: 4432, gpus: 1}
  worker: {ssh_port: 4433, gpus: 1}
"""


@pytest.fixture
def gpus_cli(tmp_path, monkeypatch, use_double):
    """`devbox gpus` against the double and a fake engine (``engine``: add containers to it)."""
    (tmp_path / "devbox.yaml").write_text(SPEC)
    engine = serve(monkeypatch, FakeDockerClient())

    def run(*args: str, spec: bool = True) -> Any:
        return CliRunner().invoke(cli, [*(["-f", str(tmp_path / "devbox.yaml")] if spec else []), "gpus", *args])

    return SimpleNamespace(run=run, engine=engine, use=use_double, folder=tmp_path / ".devbox",
                           monkeypatch=monkeypatch)


def gpu_container(engine: FakeDockerClient, name: str, ids: list[str] | None = None, count: int = 0,
                  project: str | None = None, host: str | None = None, **fields: Any) -> Any:  # fmt: skip
    """A container holding GPUs on the fake engine (devbox's when ``project`` and ``host`` are given)."""
    labels = {"devbox.project": project, "devbox.host": host} if project and host else {}
    request = {"Driver": "nvidia", "Count": count, "DeviceIDs": ids, "Capabilities": [["gpu"]]}
    return engine.containers.add(name, labels={**labels, **fields.pop("labels", {})},
                                 host_config={"DeviceRequests": [request]}, **fields)  # fmt: skip


def test_devbox_gpus_shows_holders_load_and_processes(gpus_cli, tmp_path):
    data = describe("two")
    first = data["gpus"][0]["uuid"]
    data["gpus"][0].update(memory_used=1536, utilization=42)
    gpus_cli.use(data, compute_apps=[{"pid": 31337, "gpu_uuid": first, "used_memory": 1500}])
    master = gpu_container(gpus_cli.engine, "gpulab-master-1", [first], project="gpulab", host="master")
    cgroup = f"0::/system.slice/docker-{master.id}.scope\n"
    gpus_cli.monkeypatch.setattr(devbox.gpus, "read_cgroup", lambda pid: cgroup if pid == 31337 else None)
    table = gpus_cli.run()
    as_json = gpus_cli.run("--json")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split() == ["GPU", "UUID", "MODEL", "MEMORY", "UTIL", "HOLDERS"]
    assert lines[1].split() == ["0", "GPU-5d5ba0d6", "NVIDIA", "GeForce", "RTX", "4090", "1536/24564", "MiB", "42%",
                                "gpulab/master"]
    assert lines[2].split()[-1] == "-"
    assert lines[4].split() == ["PID", "GPU", "HOST", "MEMORY"]
    assert lines[5].split() == ["31337", "0", "gpulab/master", "1500", "MiB"]
    rows = json.loads(as_json.output)
    assert rows[0]["processes"] == [{"pid": 31337, "host": "master", "project": "gpulab",
                                     "container": "gpulab-master-1", "used_memory_mib": 1500}]  # fmt: skip
    assert rows[0]["holders"] == [{"host": "master", "project": "gpulab", "folder": None,
                                   "container": "gpulab-master-1", "device": first, "shared": False}]  # fmt: skip


def test_devbox_gpus_with_a_broken_driver_is_one_red_line(gpus_cli):
    gpus_cli.use({"gpus": [], "fail": {"exit": 9, "stdout": "NVIDIA-SMI has failed\n"}})
    result = gpus_cli.run()
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith("error: nvidia-smi failed (exit 9: NVIDIA-SMI has failed)")


def test_devbox_gpus_with_a_damaged_ledger_names_it_and_still_shows_the_machine(gpus_cli):
    """Issue 29: a damaged ledger is a warning for a command that only looks (`up` refuses it)."""
    gpus_cli.use("two")
    gpus_cli.folder.mkdir()
    (gpus_cli.folder / LEDGER_FILE).write_text("{")
    result = gpus_cli.run()
    assert result.exit_code == 0, result.output
    assert f"warning: {gpus_cli.folder / LEDGER_FILE}: not a GPU ledger" in result.output
    assert "remove it and the next `devbox up` assigns GPUs afresh" in result.output
    assert any(line.split()[:2] == ["0", "GPU-5d5ba0d6"] for line in result.output.splitlines())


def test_devbox_gpus_names_a_host_holding_a_gpu_the_machine_no_longer_has(gpus_cli):
    """Issue 29: a GPU that left the machine, still held by a host's container, is a row of its own."""
    gpus_cli.use("two")
    gone = "GPU-0ff1ce00-dead-beef-0000-000000000000"
    gpu_container(gpus_cli.engine, "gpulab-master-1", [gone], project="gpulab", host="master")
    table = gpus_cli.run()
    assert table.exit_code == 0, table.output
    row = next(line for line in table.output.splitlines() if "missing" in line)
    assert row.split() == ["-", gone[:12], "missing:", "not", "on", "this", "machine", "-", "-", "gpulab/master"]
    rows = json.loads(gpus_cli.run("--json").output)
    assert rows[-1]["missing"] is True and rows[-1]["index"] is None and rows[-1]["uuid"] == gone
    assert [h["host"] for h in rows[-1]["holders"]] == ["master"]
    assert not any(r["missing"] for r in rows[:-1])
