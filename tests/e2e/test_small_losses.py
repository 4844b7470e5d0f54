"""Nothing lost, second round, the smaller cases (issue 29): Ctrl-C at the consent question, `down
--volumes` with no terminal, the consent list naming every file, a host the spec dropped still
shown, an empty credentials.yaml, a GPU that left the machine, a damaged GPU ledger, and `devbox
exec` as the login user.

No host here is given a GPU (other tests share the engine and read every container's GPUs): the
GPU cases use a ledger written by hand and, for `devbox gpus`, a container that is created and
never started, holding only a GPU no machine has, removed at once.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import DEVBOX, devbox_env

pytestmark = pytest.mark.e2e

DOUBLES = Path(__file__).resolve().parents[1] / "doubles"
GONE = "GPU-0ff1ce00-dead-4bee-8f00-000000000029"  # a GPU no machine (and no double) has


def _in_container(docker_client, stack, host, script):
    result = stack.container(docker_client, host).exec_run(["sh", "-c", script])
    assert result.exit_code == 0, result.output
    return result.output.decode()


def _change_the_spec(stack, value="1"):
    stack.spec["defaults"]["environment"] = {"CHANGED": value}  # recreates every host
    stack.write_spec()


def _on_a_terminal(stack, args, answers, seconds=300.0):
    """Run devbox on a pseudo-terminal of its own (its controlling terminal: ^C there is SIGINT to
    it, as at a real one); ``answers``: (question, keys) in turn, each typed once its question is
    printed. Returns (exit code, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: devbox, with the pty as its terminal
        try:
            os.chdir(stack.directory)
            os.execve(DEVBOX[0], [*DEVBOX, *args], devbox_env())  # noqa: S606 - no shell, an argument list
        finally:
            os._exit(127)
    output, pending, deadline = b"", list(answers), time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if pending and pending[0][0].encode() in output:
                time.sleep(0.3)  # the prompt is up: input() is reading
                question, keys = pending.pop(0)
                output = output.replace(question.encode(), f"<{question}>".encode())  # asked once: not again
                os.write(fd, keys)
        else:
            os.kill(pid, 9)
            pytest.fail(f"devbox {' '.join(args)} did not end in {seconds:.0f} s:\n{output.decode(errors='replace')}")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace").replace("\r\n", "\n")


def test_ctrl_c_at_the_consent_question_says_each_hosts_state_and_exits_130(make_stack, docker_client):
    """Ctrl-C at "go on?" was click's "Aborted!", exit 1, no host states (README: exit 130)."""
    stack = make_stack(1)
    stack.devbox("up")
    _in_container(docker_client, stack, "master", "echo tool > /usr/local/bin/mytool")
    before = stack.container(docker_client, "master").id
    _change_the_spec(stack)
    code, output = _on_a_terminal(stack, ["up"], [("discards these files; go on?", b"\x03")])
    assert code == 130, output
    assert "Aborted!" not in output, output
    assert "\nmaster: running\n" in output, output
    assert "error: interrupted" in output, output
    assert stack.container(docker_client, "master").id == before
    # the volumes question of `down --volumes` too: Ctrl-C there removes nothing and says the states
    code, output = _on_a_terminal(stack, ["down", "--volumes"], [("discards these files; go on?", b"y\n"),
                                                                  ("delete the named volumes", b"\x03")])  # fmt: skip
    assert "<delete the named volumes>" in output, output  # asked after the container's files
    assert code == 130 and "Aborted!" not in output and "\nmaster: running\n" in output, output
    assert stack.container(docker_client, "master").id == before
    assert docker_client.volumes.get(f"{stack.name}_master-home")


def test_down_volumes_without_a_terminal_refuses_in_one_line_naming_yes(make_stack, docker_client):
    """It asked anyway and ended in click's "Aborted!"; `up` refuses cleanly without a terminal."""
    stack = make_stack(1)
    stack.devbox("up")
    refused = stack.devbox("down", "--volumes", check=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "error: down --volumes deletes the hosts' homes and volumes, and there is no terminal to ask: pass --yes "
        "to delete them"]  # fmt: skip
    assert "Aborted" not in refused.stdout + refused.stderr
    assert stack.container(docker_client, "master").status == "running"
    assert docker_client.volumes.get(f"{stack.name}_master-home")


def test_the_consent_list_names_every_file_a_user_would_lose_and_no_other(make_stack, docker_client):
    """A deleted image file is not lost (recreating brings it back); six entries were "5 and 1
    more" (one never named); /var/cache/* was left out whole, not only apt's caches; the order was
    the engine's."""
    stack = make_stack(1)
    stack.devbox("up")
    _in_container(docker_client, stack, "master", (
        "rm /etc/motd; echo t > /usr/local/bin/mytool; echo c > /etc/myapp.conf; mkdir -p /opt/a /srv/b "
        "/var/cache/myapp; echo 1 > /opt/a/one; echo 2 > /srv/b/two; echo 3 > /root/notes; "
        "echo 4 > /var/cache/myapp/index; echo x > /var/cache/apt/cached.bin"))  # fmt: skip
    _change_the_spec(stack)
    lines = []
    for _ in range(2):
        refused = stack.devbox("up", check=False)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        lines.append(next(line for line in refused.stdout.splitlines() if line.startswith("master: ")))
    assert lines[0] == lines[1]  # the same order every run
    assert lines[0] == ("master: 6 files outside its volumes: /etc/myapp.conf, /opt/a/one, /root/notes, /srv/b/two, "
                        "/usr/local/bin/mytool, /var/cache/myapp/index")  # fmt: skip
    # many more: counted per folder, and every one listed in the file the line names
    _in_container(docker_client, stack, "master", "mkdir -p /opt/many && for i in $(seq 1 30); do "
                                                  "echo $i > /opt/many/f$i; done")  # fmt: skip
    refused = stack.devbox("up", check=False)
    listing = stack.state / "outside-volumes.txt"
    line = next(line for line in refused.stdout.splitlines() if line.startswith("master: "))
    assert line == ("master: 36 files outside its volumes: /etc/myapp.conf, /opt/a/one, /opt/many (30 files), "
                    "/root/notes, /srv/b/two, /usr/local/bin/mytool, /var/cache/myapp/index (every file: "
                    f"{listing})")  # fmt: skip
    listed = listing.read_text().splitlines()
    assert len(listed) == 36 and "master: /opt/many/f30" in listed and "master: /opt/a/one" in listed
    assert listed == sorted(listed)


def test_the_layers_read_by_one_helper_name_what_the_engines_diffs_name(make_stack, docker_client):
    """Issue 28: `up` reads the containers' layers with one helper (0.25 s for 8 hosts) instead of
    the engine's diffs (2.7-5.6 s, which held the build back). It must name exactly what the diffs
    name: odd names, empty files and folders, a chmod, a symlink, a deleted file, devbox's own
    files; and leave no helper container behind."""
    from devbox.changes import container_changes, read_layers

    stack = make_stack(2)
    stack.devbox("up")
    _in_container(docker_client, stack, "master", (
        "mkdir -p '/opt/x/empty dir' && touch /opt/x/empty \"/opt/x/new\nline\" && echo hi > '/opt/ü space' "
        "&& rm /etc/motd && ln -s /etc /opt/link && chmod 600 /etc/issue && echo u > /root/.notes"))  # fmt: skip
    containers = {host: stack.container(docker_client, host) for host in ("master", "worker")}
    layers = read_layers(containers)
    assert layers is not None  # overlay2 here: read from the layers, not a fallback
    for host, container in containers.items():
        assert container_changes(host, container, layers[host]) == container_changes(host, container)
    named = container_changes("master", containers["master"], layers["master"])
    assert named is not None and set(named.paths) == {
        "/etc/issue", "/opt/link", "/opt/x/empty", "/opt/x/empty dir", "/opt/x/new\nline", "/opt/ü space",
        "/root/.notes"}  # fmt: skip
    assert container_changes("worker", containers["worker"], layers["worker"]) is None  # devbox's own files only
    assert not docker_client.containers.list(all=True, filters={"label": "devbox.helper=changes"})


def test_status_shows_a_host_the_spec_dropped_while_it_still_runs(make_stack, docker_client):
    """`up` refused to remove it (files outside its volumes): it runs and holds its port, and
    `status` hid it."""
    stack = make_stack(2)
    stack.devbox("up")
    port = stack.port("worker")
    _in_container(docker_client, stack, "worker", "echo t > /usr/local/bin/mytool")
    del stack.spec["hosts"]["worker"]
    stack.write_spec()
    assert stack.devbox("up", check=False).returncode == 1
    table = stack.devbox("status").stdout.splitlines()
    worker = next(line for line in table if line.startswith("worker "))
    assert "running (not in the spec; `up --yes` removes it)" in worker and f" {port} " in worker, table
    entries = {e["host"]: e for e in json.loads(stack.devbox("status", "--json").stdout)}
    assert entries["worker"]["in_spec"] is False and entries["worker"]["state"] == "running"
    assert entries["worker"]["ssh_port"] == port
    assert entries["worker"]["note"] == "not in the spec; `up --yes` removes it"
    assert "in_spec" not in entries["master"]
    stack.devbox("up", "--yes")
    assert [e["host"] for e in json.loads(stack.devbox("status", "--json").stdout)] == ["master"]


def test_an_empty_credentials_file_is_damaged_not_new_passwords(make_stack):
    """An emptied credentials.yaml was taken as "no passwords yet": new ones, set in the running hosts."""
    stack = make_stack(1)
    stack.devbox("up")
    password = stack.password("master")
    credentials = stack.state / "credentials.yaml"
    for damaged in ("", "# devbox credentials: the passwords of your hosts' accounts. Keep it private;\n"):
        credentials.write_text(damaged)
        for command in (["up"], ["render"]):
            refused = stack.devbox(*command, check=False)
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert refused.stderr.strip().splitlines() == [
                f"error: {credentials}: empty (cut short?); restore it from a copy, or remove it to generate new "
                "passwords (the next `devbox up` applies them to running hosts)"]  # fmt: skip
        assert credentials.read_text() == damaged
    assert stack.ssh("master", "echo still", password=password).strip() == "still"


def _ledger_with(host, device):
    from devbox.gpus import Assignment, Gpu, Ledger, Machine, ledger_json

    machine = Machine((Gpu(0, device, "NVIDIA A100-SXM4-80GB", 81920),))
    return ledger_json(Ledger(machine, (Assignment(host, "1", (device,)),)))


def _machine(tmp_path):
    """The environment of a run on a machine with one GPU (nvidia-smi's double), not ``GONE``."""
    from .test_gpu_ledger import gpu_machine

    return gpu_machine(tmp_path, json.loads((DOUBLES / "machines" / "one.json").read_text()))


def test_a_gpu_that_left_the_machine_is_shown_missing(make_stack, docker_client, tmp_path, base_image):
    """`status` showed the GPU the ledger remembers as if it were there; `devbox gpus` named no
    host holding a GPU the machine lacks."""
    stack = make_stack(1)
    stack.devbox("up")
    (stack.state / "gpus.json").write_text(_ledger_with("master", GONE))
    machine = _machine(tmp_path)
    master = next(line for line in stack.devbox("status", env=machine).stdout.splitlines()
                  if line.startswith("master "))  # fmt: skip
    assert f"#0 ({GONE[:10]}) NVIDIA A100-SXM4-80GB MISSING: not on this machine now" in master, master
    [entry] = json.loads(stack.devbox("status", "--json", env=machine).stdout)
    assert entry["gpu_devices"] == [{"index": 0, "uuid": GONE, "name": "NVIDIA A100-SXM4-80GB", "missing": True}]
    from docker.types import DeviceRequest

    holder = docker_client.containers.create(  # never started: it holds the GPU, as a stopped host does
        base_image, ["true"], name=f"{stack.name}-gpu-holder", restart_policy={"Name": "unless-stopped"},
        labels={"devbox.project": stack.name, "devbox.host": "master-gpu"},
        device_requests=[DeviceRequest(driver="nvidia", device_ids=[GONE], capabilities=[["gpu"]])])  # fmt: skip
    try:
        shown = stack.devbox("gpus", env=machine)
        rows = json.loads(stack.devbox("gpus", "--json", env=machine).stdout)
    finally:
        holder.remove(force=True)
    row = next(line for line in shown.stdout.splitlines() if GONE[:12] in line)
    assert row.split()[:2] == ["-", GONE[:12]] and "missing: not on this machine" in row, shown.stdout
    assert f"{stack.name}/master-gpu" in row
    gone = [r for r in rows if r["uuid"] == GONE]
    assert len(gone) == 1 and gone[0]["missing"] is True and gone[0]["index"] is None


def test_a_damaged_gpu_ledger_is_a_warning_for_reads_and_refused_by_up(make_stack, tmp_path):
    stack = make_stack(1)
    stack.devbox("up")
    ledger = stack.state / "gpus.json"
    ledger.write_text("{")
    machine = _machine(tmp_path)
    fix = "remove it and the next `devbox up` assigns GPUs afresh (running hosts may move to other GPUs)"
    shown = stack.devbox("status", env=machine)
    assert shown.stderr.startswith(f"warning: {ledger}: not a GPU ledger ("), shown.stderr
    assert fix in shown.stderr and len(shown.stderr.strip().splitlines()) == 1
    assert next(line for line in shown.stdout.splitlines() if line.startswith("master ")).split()[1] == "running"
    assert [e["state"] for e in json.loads(stack.devbox("status", "--json", env=machine).stdout)] == ["running"]
    assert stack.devbox("gpus", env=machine).stderr.startswith(f"warning: {ledger}: not a GPU ledger (")
    stack.spec["hosts"]["master"]["gpus"] = 1  # `up` would write the ledger: refused, nothing changed
    stack.write_spec()
    refused = stack.devbox("up", env=machine, check=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.startswith(f"error: {ledger}: not a GPU ledger (") and fix in refused.stderr
    assert ledger.read_text() == "{"


def test_exec_runs_as_the_login_user_in_the_home_and_as_root_when_asked(make_stack):
    """`devbox exec` ran as root: ~ was /root, and `pip install --user` landed outside the home volume."""
    stack = make_stack(1)
    stack.devbox("up")
    said = stack.devbox("exec", "master", "--", "sh", "-c", "id -un; echo $HOME; pwd; echo mine > ~/from-exec")
    assert said.stdout.splitlines() == ["developer", "/home/developer", "/home/developer"]
    assert stack.ssh("master", "cat ~/from-exec").strip() == "mine"  # in the home volume, the login user's
    assert stack.ssh("master", "stat -c %U ~/from-exec").strip() == "developer"
    assert stack.devbox("exec", "--root", "master", "--", "sh", "-c", "id -un; echo $HOME").stdout.split() == [
        "root", "/root"]  # fmt: skip
    assert stack.devbox("exec", "-u", "nobody", "master", "--", "id", "-un").stdout.strip() == "nobody"
    both = stack.devbox("exec", "--root", "-u", "nobody", "master", "--", "true", check=False)
    assert both.returncode == 2 and "--root or -u USER" in both.stderr
    assert "login user" in subprocess.run([*DEVBOX, "exec", "--help"], capture_output=True, text=True,
                                          check=True, env=devbox_env()).stdout  # fmt: skip
