"""What keeps one host from taking down the others: PIDs, logs and disk, as the spec reads them and
as compose and swarm services render them."""

from __future__ import annotations

import pytest

from devbox.engines.swarm import pids_problems, service_definition
from devbox.errors import SpecError
from devbox.render import compose_data

from .helpers import make_spec


def services(spec):
    return compose_data(spec, "devbox-lab:abc")["services"]


def test_every_host_has_a_pids_limit_and_rotated_logs():
    service = services(make_spec())["master"]
    assert service["deploy"]["resources"]["limits"] == {"pids": 4096}
    assert service["logging"] == {"driver": "local", "options": {"max-size": "10m", "max-file": "3"}}


def test_pids_limit_and_logging_are_settable_in_defaults_and_per_host():
    spec = make_spec(defaults={"pids_limit": 512, "logging": {"max_size": "1m", "max_files": 2}}, hosts={
        "master": {"ssh_port": 1, "logging": {"driver": "json-file"}},
        "worker": {"ssh_port": 2, "pids_limit": "unlimited"},
    })  # fmt: skip
    master, worker = services(spec).values()
    assert master["deploy"]["resources"]["limits"]["pids"] == 512
    assert master["logging"] == {"driver": "json-file", "options": {"max-size": "1m", "max-file": "2"}}
    assert worker["deploy"]["resources"]["limits"]["pids"] == -1
    assert worker["logging"]["driver"] == "local"


def test_an_unlimited_pids_limit_is_noted_where_it_is_written():
    spec = make_spec(defaults={"pids_limit": -1})
    [note] = [line for line in spec.notes if "pids_limit" in line]
    assert note.startswith("defaults.pids_limit: unlimited: a fork bomb")


@pytest.mark.parametrize(("settings", "problem"), [
    ({"pids_limit": 8}, "hosts.master.pids_limit: 8 is out of range for a process count (32-4194304)"),
    ({"pids_limit": "lots"}, "hosts.master.pids_limit: 'lots' is not a process count (32-4194304)"),
    ({"logging": {"driver": "syslog"}}, "hosts.master.logging.driver: 'syslog' is not supported (use local or "
                                        "json-file: both rotate, and `devbox logs` reads them)"),
    ({"logging": {"max_size": "big"}}, "hosts.master.logging.max_size: 'big' is not a size"),
    ({"logging": {"max_files": 0}}, "hosts.master.logging.max_files: 0 is out of range"),
    ({"logging": {"rotate": True}}, "hosts.master.logging.rotate: unknown key"),
])  # fmt: skip
def test_bad_neighbour_settings_are_one_line_each_with_the_path(settings, problem):
    with pytest.raises(SpecError) as info:
        make_spec(hosts={"master": {"ssh_port": 1, **settings}})
    assert any(line.startswith(problem) for line in info.value.problems), info.value.problems


def test_swarm_services_get_the_pids_limit_and_the_log_driver():
    spec = make_spec(engine="swarm", defaults={"bind_address": "0.0.0.0", "logging": {"max_size": "5m"}}, hosts={
        "master": {"ssh_port": 1, "pids_limit": 100}, "worker": {"ssh_port": 2, "pids_limit": "unlimited"}})
    master, worker = (service_definition(spec, host, "img", "hash", {}) for host in spec.hosts)
    assert master["resources"]["Limits"] == {"Pids": 100}
    assert worker["resources"]["Limits"] == {"Pids": 0}  # the service API's unlimited
    assert master["log_driver"] == "local"
    assert master["log_driver_options"] == {"max-size": "5m", "max-file": "3"}


def test_a_swarm_manager_older_than_docker_20_10_is_refused_for_pids_limits():
    spec = make_spec(engine="swarm", defaults={"bind_address": "0.0.0.0"})
    assert pids_problems(spec, "1.41") == []
    [problem] = pids_problems(spec, "1.40")
    assert problem.startswith("hosts.master.pids_limit: this swarm's engine (API 1.40) cannot limit")
    unlimited = make_spec(engine="swarm", defaults={"bind_address": "0.0.0.0", "pids_limit": "unlimited"})
    assert pids_problems(unlimited, "1.40") == []


# --------------------------------------------------------------------------- disk

def _df(project="lab", homes=None, volumes=None, layers=None):
    """The engine's df answer, as the SDK gives it (client.df()), for the given sizes."""
    found = [{"Name": f"{project}_{host}-home", "UsageData": {"Size": size, "RefCount": 1}}
             for host, size in (homes or {}).items()]
    found += [{"Name": f"{project}_{name}", "UsageData": {"Size": size}} for name, size in (volumes or {}).items()]
    found.append({"Name": "other_master-home", "UsageData": {"Size": 10**12}})  # another project's
    containers = [{"Names": [f"/{project}-{host}-1"], "SizeRw": size,
                   "Labels": {"devbox.project": project, "devbox.host": host}}
                  for host, size in (layers or {}).items()]
    containers.append({"Names": ["/x"], "SizeRw": 10**12, "Labels": {"devbox.project": "other", "devbox.host": "master"}})
    return {"Volumes": found, "Containers": containers, "Images": [], "LayersSize": 0}


def test_disk_use_per_host_is_its_home_its_volumes_and_its_layer():
    from devbox.disk import host_disks

    spec = make_spec(project="lab", hosts={"master": {"ssh_port": 1, "volumes": ["data:/data"], "disk": "1g"},
                                           "worker": {"ssh_port": 2}})  # fmt: skip
    master, worker = host_disks(spec, _df(homes={"master": 100, "worker": 7}, volumes={"data": 50},
                                          layers={"master": 3}))  # fmt: skip
    assert (master.home, dict(master.volumes), master.layer, master.total) == (100, {"data": 50}, 3, 153)
    assert master.budget == 1024**3 and master.as_dict()["used_percent"] == 0.0
    assert (worker.home, worker.layer, worker.budget, worker.used) == (7, None, None, None)


def test_a_volume_the_engine_did_not_measure_counts_as_unknown_not_zero():
    from devbox.disk import host_disks

    master = host_disks(make_spec(project="lab"), _df(homes={"master": -1}))[0]
    assert master.home is None and master.total == 0


def test_a_host_above_90_percent_of_its_budget_is_warned_about_where_the_budget_is_written():
    from devbox.disk import HostDisk, budget_warnings

    spec = make_spec(defaults={"disk": "100m"}, hosts={"master": {"ssh_port": 1}, "worker": {"ssh_port": 2}})
    disks = [HostDisk("master", 100 * 1024**2, home=95 * 1024**2), HostDisk("worker", 100 * 1024**2, layer=1)]
    [line] = budget_warnings(spec, disks)
    assert line.startswith("defaults.disk: master holds 95.0 MiB of its 100m budget (95 %): home 95.0 MiB")


def test_a_nearly_full_engine_disk_names_the_largest_hosts_first():
    from devbox.disk import EngineDisk, HostDisk, engine_disk_warning

    disks = [HostDisk("a", None, home=1), HostDisk("b", None, home=3 * 1024**3), HostDisk("c", None, layer=2 * 1024**2)]
    assert engine_disk_warning(EngineDisk("/d", 100, 11), disks) is None  # 89 %: fine
    line = engine_disk_warning(EngineDisk("/var/lib/docker", 100 * 1024**3, 5 * 1024**3), disks)
    assert line is not None and line.startswith("the engine's disk (/var/lib/docker) is 95 % full (5.0 GiB free")
    assert line.endswith("the largest hosts: b 3.0 GiB, c 2.0 MiB, a 1 B")


def test_the_engine_disk_is_measured_where_devbox_docker_root_points(tmp_path, monkeypatch):
    from devbox.disk import engine_disk

    monkeypatch.setenv("DEVBOX_DOCKER_ROOT", str(tmp_path))
    found = engine_disk(client=None)  # the variable wins: the engine is not asked
    assert found is not None and found.path == str(tmp_path) and 0 < found.free <= found.size
    monkeypatch.setenv("DEVBOX_DOCKER_ROOT", str(tmp_path / "missing"))
    assert engine_disk(client=None) is None


def test_up_asks_the_engine_for_df_only_with_a_budget_or_a_nearly_full_disk(tmp_path, monkeypatch):
    from devbox import disk

    class Client:
        asked = 0

        def df(self):
            Client.asked += 1
            return _df(homes={"master": 10**9})

    monkeypatch.setenv("DEVBOX_DOCKER_ROOT", str(tmp_path))
    assert disk.warnings(Client(), make_spec(project="lab")) == []
    assert Client.asked == 0
    [line] = disk.warnings(Client(), make_spec(project="lab", defaults={"disk": "100m"}))
    assert Client.asked == 1 and line.startswith("defaults.disk: master holds 953.7 MiB of its 100m budget")


@pytest.mark.parametrize(("value", "problem"), [
    ("lots", "hosts.master.disk: 'lots' is not a size"),
    (0, "hosts.master.disk: '0' is not a size"),
])  # fmt: skip
def test_a_bad_disk_budget_is_one_line_with_its_path(value, problem):
    with pytest.raises(SpecError) as info:
        make_spec(hosts={"master": {"ssh_port": 1, "disk": value}})
    assert any(line.startswith(problem) for line in info.value.problems), info.value.problems


def test_a_disk_budget_renders_nothing_the_engine_would_refuse():
    """Warn only: no storage_opt (the engine refuses it unless overlay2 on xfs with pquota)."""
    service = services(make_spec(defaults={"disk": "200g"}))["master"]
    assert "storage_opt" not in service


def test_status_asks_the_engine_for_df_only_with_disk(monkeypatch, make_project):
    from devbox import operations

    from .fake_docker import FakeDockerClient, serve

    client = serve(monkeypatch, FakeDockerClient())
    client.df_data = _df(project="lab", homes={"master": 4096}, layers={"master": 10})
    project = make_project(project="lab", defaults={"disk": "1m"})
    plain = operations.status(project)[0]
    assert "disk" not in plain and client.called("df") == []
    entry = operations.status(project, disk=True)[0]
    assert entry["disk"] == {"home": 4096, "volumes": {}, "layer": 10, "total": 4106, "budget": 1024**2,
                             "used_percent": 0.4}  # fmt: skip
    assert len(client.called("df")) == 1


XFS_INFO = {"Driver": "overlay2", "DockerRootDir": "/var/lib/docker",
            "DriverStatus": [["Backing Filesystem", "xfs"], ["Supports d_type", "true"]]}  # fmt: skip
MOUNTS = """22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw
40 22 259:2 / /var/lib/docker rw,relatime shared:20 - xfs /dev/nvme1n1 rw,attr2,inode64,{quota}
"""


@pytest.mark.parametrize(("info", "mounts", "able"), [
    (XFS_INFO, MOUNTS.format(quota="prjquota"), True),
    (XFS_INFO, MOUNTS.format(quota="pquota"), True),
    (XFS_INFO, MOUNTS.format(quota="noquota"), False),  # xfs without project quotas: the engine refuses size
    ({**XFS_INFO, "DriverStatus": [["Backing Filesystem", "extfs"]]}, MOUNTS.format(quota="prjquota"), False),
    ({**XFS_INFO, "Driver": "fuse-overlayfs"}, MOUNTS.format(quota="prjquota"), False),
    ({**XFS_INFO, "DockerRootDir": "/srv/docker"}, MOUNTS.format(quota="prjquota"), False),  # on / (ext4)
])  # fmt: skip
def test_the_layer_is_capped_only_on_overlay2_over_xfs_with_project_quotas(info, mounts, able):
    from devbox.disk import quota_filesystem

    assert quota_filesystem(info, mounts) is able


@pytest.mark.parametrize(("info", "cap"), [
    ({"Driver": "btrfs", "DockerRootDir": "/srv/docker"}, "btrfs"),  # its qgroups: no mount option needed
    (XFS_INFO, "overlay2 on xfs"),
    ({**XFS_INFO, "DriverStatus": [["Backing Filesystem", "extfs"]]}, None),
])  # fmt: skip
def test_layer_cap_names_how_the_engine_caps_a_layer(info, cap):
    from devbox.disk import layer_cap

    found = layer_cap(info, MOUNTS.format(quota="pquota"))
    assert found is None if cap is None else found.startswith(cap)


def test_on_btrfs_a_budget_the_image_fills_is_refused_with_its_spec_path():
    from devbox.disk import image_budget_problems

    spec = make_spec(hosts={"master": {"ssh_port": 1, "disk": "100m"}, "worker": {"ssh_port": 2, "disk": "1g"},
                            "third": {"ssh_port": 3}})  # fmt: skip
    problems = image_budget_problems(spec.hosts, 300 * 1024**2)
    assert problems == ["hosts.master.disk: 100m is not more than the image (300.0 MiB), which this engine (btrfs) "
                        "counts in the host's cap; set it above 300.0 MiB plus what the host writes outside its "
                        "volumes"]  # fmt: skip


def test_where_the_engine_can_the_container_layer_is_capped_at_the_budget():
    spec = make_spec(hosts={"master": {"ssh_port": 1, "disk": "200g"}, "worker": {"ssh_port": 2}})
    capped = compose_data(spec, "devbox-lab:abc", layer_quota=True)["services"]
    assert capped["master"]["storage_opt"] == {"size": "200g"}
    assert "storage_opt" not in capped["worker"]  # no budget, no cap
    plain = compose_data(spec, "devbox-lab:abc")["services"]
    assert "storage_opt" not in plain["master"]
    assert plain["master"]["labels"]["devbox.config-hash"] != capped["master"]["labels"]["devbox.config-hash"]
