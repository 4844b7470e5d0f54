"""The watcher's pure parts: SSH sessions among a container's processes, CPU in % of one core,
nvidia-smi's output, a host's GPU signal, the login notice, what counts as reclaimed; the idle
folder; and `devbox usage`'s summary and page."""

from __future__ import annotations

import subprocess

from devbox.idle import Decision, IdlePolicy, Sample, reclaimed
from devbox.idle_files import IdleFolder
from devbox.usage import html_page, summarise
from devbox.watcher import (
    Watcher,
    _mtime,
    cpu_percent,
    disk_usage,
    gpu_signal,
    notice_script,
    parse_gpu_apps,
    parse_gpu_usage,
    ssh_sessions,
)


def test_ssh_sessions_are_sshd_session_processes_only():
    commands = ["sshd: /usr/sbin/sshd -D -e [listener] 0 of 10-100 startups", "sshd: developer [priv]",
                "sshd: developer@pts/0", "-zsh", "sshd: developer@notty", "/usr/lib/openssh/sftp-server",
                "sshd-session: root@pts/1", "sshd: [accepted]", "sshd: developer [net]"]  # fmt: skip
    assert ssh_sessions(commands) == 3


def test_cpu_in_percent_of_one_core():
    # 2 cores: 10 s of machine time is 20 s of system time; 5 s of CPU is 50% of one core
    assert cpu_percent(15e9, 40e9, 2, (10e9, 20e9)) == 50.0
    assert cpu_percent(1e9, 1e9, 2, None) == 0.0


def test_nvidia_smi_output_and_the_gpu_signal():
    usage = parse_gpu_usage("0, GPU-a, 3, 100\n1, GPU-b, 90, 2000\n2, GPU-c, [N/A], 5\n")
    apps = parse_gpu_apps("4242, GPU-b, 1500\n31337, GPU-a, 10\n")
    assert usage["GPU-b"] == (90.0, 2000.0) and usage["0"] == (3.0, 100.0) and usage["2"] == (None, 5.0)
    assert gpu_signal(["GPU-a"], set(), usage, apps) == (3.0, None)  # its own GPU, quiet
    assert gpu_signal(["GPU-a"], {4242}, usage, apps) == (90.0, 1500.0)  # its process on a busy GPU
    assert gpu_signal([], set(), usage, apps) == (None, None)  # no GPU at all: not a signal


def test_the_engines_times():
    assert _mtime("2026-12-02T08:00:00Z") == 1796198400.0
    assert _mtime("2026-12-02T09:00:00.5+01:00") == 1796198400.5
    assert _mtime("yesterday") is None


def test_the_login_notice_prints_its_lines_safely(tmp_path):
    script = tmp_path / "notice.sh"
    script.write_bytes(notice_script(["it's idle; $(reboot) `x`", "second"]))
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=True)  # noqa: S603, S607
    assert done.stderr == "it's idle; $(reboot) `x`\nsecond\n"


def test_reclaimed_is_a_stopped_devbox_host_with_restart_policy_no():
    def attrs(running, restart, labels=None):
        return {"State": {"Running": running}, "HostConfig": {"RestartPolicy": {"Name": restart}},
                "Config": {"Labels": {"devbox.host": "a"} if labels is None else labels}}  # fmt: skip

    assert reclaimed(attrs(False, "no"))
    assert not reclaimed(attrs(True, "no"))
    assert not reclaimed(attrs(False, "unless-stopped"))
    assert not reclaimed(attrs(False, "no", labels={}))  # not a devbox host: not ours to judge


def test_the_idle_folder_keeps_samples_a_file_a_day_and_prunes_after_30_days(tmp_path):
    folder = IdleFolder(tmp_path)
    day = 86400.0
    old, new = 1_800_000_000.0, 1_800_000_000.0 + 31 * day
    folder.add_samples({"a": Sample(at=old, cpu_percent=50)})
    folder.add_samples({"a": Sample(at=new, ssh_sessions=1), "b": Sample(at=new, running=False)})
    assert [s.cpu_percent for s in folder.samples(old)["a"]] == [50, 0]
    folder.prune(new)
    assert list(folder.samples(old)) == ["a", "b"] and len(folder.samples(old)["a"]) == 1
    (folder.path / "samples" / "2027-01-01.jsonl").write_text("not json\n")
    assert len(folder.samples(old)["a"]) == 1  # a damaged line is skipped, not an error
    folder.set_hold("a", new + 3600)
    assert folder.holds() == {"a": new + 3600}


def test_usage_summary_and_page():
    t0, minute = 1_800_000_000.0, 60.0
    samples = {"gpu": [Sample(at=t0 + i * minute, gpu_percent=80 if i < 30 else 0) for i in range(60)],
               "quiet": [Sample(at=t0 + i * minute, ssh_sessions=1 if i == 3 else 0) for i in range(60)]}
    hosts = {"gpu": {"policy": IdlePolicy(3600).as_dict(), "gpus": ["GPU-a", "GPU-b"]},
             "quiet": {"policy": IdlePolicy(3600).as_dict(), "gpus": []}}  # fmt: skip
    events = [{"at": t0, "host": "quiet", "event": "reclaimed"}]
    rows = {r["host"]: r for r in summarise(samples, events, hosts, minute)}
    assert rows["gpu"]["gpu_hours_held"] == 2.0 and rows["gpu"]["gpu_hours_used"] == 1.0
    assert rows["gpu"]["idle_hours"] == 0.5 and rows["gpu"]["reclaims"] == 0
    assert rows["quiet"]["last_login"] == t0 + 3 * minute and rows["quiet"]["reclaims"] == 1
    page = html_page("lab<x>", list(rows.values()), samples, hosts, t0, t0 + 3600, minute)
    assert page.count("<section class='timeline'") == 2 and "lab&lt;x&gt;" in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched from anywhere


def test_a_reclaimed_host_holds_no_gpu_on_the_machine_ledger():
    from devbox.gpus import container_holding

    def attrs(running, restart):
        return {"Id": "c1", "Name": "/lab-a-1", "State": {"Status": "running" if running else "exited",
                                                          "Running": running},
                "Config": {"Labels": {"devbox.project": "lab", "devbox.host": "a"}, "Env": []},
                "HostConfig": {"DeviceRequests": [{"Driver": "nvidia", "DeviceIDs": ["GPU-1"]}],
                               "RestartPolicy": {"Name": restart}}}  # fmt: skip

    assert container_holding(attrs(False, "no")) is None  # the watcher stopped it: its GPU is free
    assert container_holding(attrs(False, "unless-stopped")) is not None  # stopped by hand: still held
    assert container_holding(attrs(True, "no")) is not None


def test_disk_per_host_is_its_own_layer_and_the_volumes_it_mounts():
    mib = 1024 * 1024
    df = {"Containers": [{"Id": "c1", "SizeRw": 2 * mib, "Mounts": [{"Type": "volume", "Name": "lab_home"},
                                                                   {"Type": "bind", "Name": ""}]},
                         {"Id": "c2", "SizeRw": None, "Mounts": []}],
          "Volumes": [{"Name": "lab_home", "UsageData": {"Size": 40 * mib}}, {"Name": "x", "UsageData": {"Size": -1}}]}
    assert disk_usage(df) == {"c1": 42.0, "c2": 0.0}
    sample = Sample(at=1.0, disk_mib=42.0)
    assert Sample.from_dict(sample.as_dict()) == sample
    assert Sample.from_dict({"at": 1.0}).disk_mib is None  # a sample written before disk was read


class _Container:
    id, name = "c1", "lab-a-1"

    def __init__(self):
        self.calls = []

    def update(self, **kwargs):
        self.calls.append(("update", kwargs))

    def put_archive(self, path, data):
        self.calls.append(("notice", data))

    def stop(self, timeout):
        self.calls.append(("stop", timeout))


def test_a_reclaimed_host_gets_restart_policy_no_and_the_notice_of_its_stop_before_the_stop(tmp_path):
    watcher = Watcher(client=None, folder=IdleFolder(tmp_path), interval=60, nvidia_smi=None, say=lambda line: None)
    container = _Container()
    watcher.reclaim("a", Decision("stop", "idle 1m", 100.0, 160.0), container, 1_800_000_000.0)
    assert [call[0] for call in container.calls] == ["update", "notice", "stop"]
    assert container.calls[0][1] == {"restart_policy": {"Name": "no"}}
    assert b"this host was stopped at 2027-01-15 08:00 UTC (idle 1m)" in container.calls[1][1]
    state = watcher.folder.states()["a"]
    assert state["reclaimed_at"] == 1_800_000_000.0 and state["reclaimed_why"] == "idle 1m"
    assert [e["event"] for e in watcher.folder.events()] == ["reclaimed"]


def test_a_host_brought_back_is_told_on_which_gpus():
    from devbox.gpus import Gpu, Machine
    from devbox.watch_service import device_ids, gpus_text

    machine = Machine(tuple(Gpu(i, f"GPU-{i}", "RTX", 24564) for i in range(3)))
    assert gpus_text(["GPU-0"], ["GPU-0"], machine) == "; on its GPU 0 again"
    assert gpus_text(["GPU-0"], ["GPU-2"], machine) == "; its GPU 0 is taken now: on GPU 2 (free)"
    assert gpus_text(["GPU-0", "GPU-1"], ["GPU-1", "GPU-2"], None) == \
        "; its GPUs GPU-0, GPU-1 are taken now: on GPUs GPU-1, GPU-2 (free)"  # fmt: skip
    assert gpus_text([], [], machine) == ""
    attrs = {"HostConfig": {"DeviceRequests": [{"Driver": "nvidia", "DeviceIDs": ["GPU-0"]}]}}
    assert device_ids(attrs) == ["GPU-0"] and device_ids({"HostConfig": {"DeviceRequests": None}}) == []


def test_the_disk_is_read_in_a_thread_of_its_own_every_ten_rounds_at_most():
    calls = []

    class Client:
        def df(self):
            calls.append(1)
            return {"Containers": [{"Id": "c1", "SizeRw": 1024 * 1024, "Mounts": []}], "Volumes": []}

    watcher = Watcher(client=Client(), folder=None, interval=4, nvidia_smi=None, say=lambda line: None)
    watcher._disk_readings(100.0)
    watcher.disk_thread.join(5)
    assert watcher.disk == {"c1": 1.0}
    watcher._disk_readings(110.0)  # within 10 rounds: not again
    watcher._disk_readings(140.0)
    watcher.disk_thread.join(5)
    assert len(calls) == 2
