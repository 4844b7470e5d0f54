"""Nothing a user makes is lost (issue 13): homes kept in volumes, consent before discarding a
container's own files, one owner per project, state that survives damage and interruption."""

from __future__ import annotations

import pytest

from .conftest import DEVBOX, devbox_env

pytestmark = pytest.mark.e2e


def _devbox_in(folder, *args):
    """devbox run in another folder than a stack's own (a second spec of the same name)."""
    import subprocess

    return subprocess.run([*DEVBOX, *args], cwd=folder, capture_output=True, text=True,
                          timeout=600, check=False, env=devbox_env(), stdin=subprocess.DEVNULL)  # fmt: skip


def _volumes(docker_client, project):
    return sorted(v.name for v in docker_client.volumes.list() if v.name.startswith(f"{project}_"))


def test_home_is_kept_across_recreation_and_down_until_down_volumes(make_stack, docker_client):
    stack = make_stack(["master", "worker"], defaults={"home_volume": True})
    stack.spec["hosts"]["worker"]["home_volume"] = False
    stack.write_spec()
    stack.devbox("up")
    assert _volumes(docker_client, stack.name) == [f"{stack.name}_master-home"]
    stack.ssh("master", "echo kept > ~/notes.txt")
    old = stack.container(docker_client, "master").id
    stack.spec["defaults"]["environment"] = {"ADDED": "1"}  # recreates every host
    stack.write_spec()
    stack.devbox("up")
    assert stack.container(docker_client, "master").id != old
    assert stack.ssh("master", "cat ~/notes.txt").strip() == "kept"
    assert stack.ssh("master", "test -f ~/.bashrc && stat -c %U ~").strip() == "developer"
    stack.devbox("down")
    stack.devbox("up")
    assert stack.ssh("master", "cat ~/notes.txt").strip() == "kept"
    stack.devbox("down", "--volumes", "--yes")
    assert _volumes(docker_client, stack.name) == []
    stack.devbox("up")
    assert stack.ssh("master", "ls -A ~; test ! -e ~/notes.txt && echo fresh").split()[-1] == "fresh"
    assert ".bashrc" in stack.ssh("master", "ls -A ~")  # seeded from the skeleton again


def test_home_follows_a_changed_uid(make_stack, docker_client):
    stack = make_stack(1, image={"uid": 2000, "gid": 2000})
    stack.devbox("up")
    stack.ssh("master", "mkdir -p ~/code && echo x > ~/code/a.py")
    stack.spec["image"]["uid"] = 2001
    stack.spec["image"]["gid"] = 2001
    stack.write_spec()
    stack.devbox("up")
    assert stack.ssh("master", "id -u; stat -c %u:%g ~ ~/code/a.py; cat ~/code/a.py").split() == [
        "2001", "2001:2001", "2001:2001", "x"]


def test_render_waits_for_the_project_lock(make_stack):
    import fcntl
    import subprocess
    import time

    stack = make_stack(1)
    stack.state.mkdir()
    with open(stack.state / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        render = subprocess.Popen([*DEVBOX, "render"], cwd=stack.directory, env=devbox_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(3)
        assert render.poll() is None, "render did not wait for the lock another command holds"
        assert not (stack.state / "credentials.yaml").exists()
        fcntl.flock(held, fcntl.LOCK_UN)
    out, _ = render.communicate(timeout=60)
    assert render.returncode == 0 and "waiting for another devbox command" in out


@pytest.mark.parametrize(("name", "content", "command"), [
    ("credentials.yaml", "master: [developer]\n", "render"),
    ("credentials.yaml", "master:\n  developer: {source: generated, password: 12345, hash: x}\n", "render"),
    ("credentials.yaml", b"master: \xff\xfe\n", "render"),
    ("known_hosts", "not a known_hosts line\n", "check"),
    ("known_hosts", b"\xff\xfe\x00 devbox\n", "check"),
    ("gpus.json", "{not json", "check"),  # status and gpus warn instead, and still show the hosts
])  # fmt: skip
def test_damaged_state_files_give_one_line_with_the_fix(make_stack, name, content, command):
    stack = make_stack(1)
    stack.devbox("render")
    path = stack.state / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    result = stack.devbox(command, check=False)
    assert result.returncode in (1, 2), result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and name in errors[0], result.stderr
    assert "remove" in errors[0] or "fix" in errors[0] or "quote" in errors[0]


def test_init_refuses_a_gitignore_that_is_a_folder(make_stack):
    stack = make_stack(1)
    folder = stack.directory / "fresh"
    (folder / ".gitignore").mkdir(parents=True)
    result = stack.devbox("init", str(folder), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("error:") == 1 and ".gitignore" in result.stderr
    assert not (folder / "devbox.yaml").exists()


def test_a_password_edited_by_hand_is_applied_by_up(make_stack):
    import yaml

    stack = make_stack(1)
    stack.devbox("up")
    path = stack.state / "credentials.yaml"
    data = yaml.safe_load(path.read_text())
    data["master"]["developer"]["password"] = "chosen-by-hand-1"
    path.write_text(yaml.safe_dump(data))
    result = stack.devbox("up")
    assert "passwords edited" in result.stdout
    assert stack.ssh("master", "echo in", password="chosen-by-hand-1").strip() == "in"


def test_a_lost_host_key_is_derived_or_the_host_restarted_keeping_its_files(make_stack, docker_client):
    import shutil

    stack = make_stack(1)
    stack.devbox("up")
    key = stack.host_key("master")
    container = stack.container(docker_client, "master")
    assert container.exec_run(["touch", "/opt/outside-volumes"]).exit_code == 0
    for public in (stack.state / "hostkeys" / "master").glob("*.pub"):
        public.unlink()
    assert "nothing changed" in stack.devbox("up").stdout
    assert stack.host_key("master") == key  # derived from the kept private key, not a new pair
    stack.ssh("master", "true")
    shutil.rmtree(stack.state / "hostkeys" / "master")
    result = stack.devbox("up")
    assert "restarting master" in result.stdout
    assert stack.host_key("master") != key
    stack.ssh("master", "true")
    assert stack.container(docker_client, "master").id == container.id
    assert container.exec_run(["test", "-e", "/opt/outside-volumes"]).exit_code == 0


def test_a_new_port_another_program_holds_is_refused_before_the_host_is_touched(make_stack, docker_client, free_port):
    import socket

    stack = make_stack(1)
    stack.devbox("up")
    stack.ssh("master", "echo kept > /tmp/x")
    before = stack.container(docker_client, "master")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_port()))
        holder.listen()
        stack.spec["hosts"]["master"]["ssh_port"] = holder.getsockname()[1]
        stack.write_spec()
        result = stack.devbox("up", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "hosts.master.ssh_port" in result.stderr and "already taken" in result.stderr
    after = stack.container(docker_client, "master")
    assert after.id == before.id and after.status == "running"


def test_a_crash_looping_host_is_not_blamed_on_another_program(make_stack, docker_client):
    import time

    stack = make_stack(1, defaults={"restart": "always"})
    stack.devbox("up")
    container = stack.container(docker_client, "master")
    container.exec_run(["sh", "-c", "rm /usr/sbin/sshd && kill 1"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        container.reload()
        if container.attrs.get("RestartCount", 0) >= 2:
            break
        time.sleep(0.5)
    result = stack.devbox("up", "--timeout", "20", check=False)
    assert result.returncode == 1
    assert "another program" not in result.stderr and "already" not in result.stderr, result.stderr
    assert "exited with code" in result.stderr and "sshd" in result.stderr, result.stderr


def test_up_and_down_name_files_outside_volumes_and_ask_first(make_stack, docker_client):
    stack = make_stack(1)
    stack.devbox("up")
    stack.ssh("master", "echo notes > ~/kept-in-home")  # in the home volume: nothing to ask
    container = stack.container(docker_client, "master")
    assert container.exec_run(["sh", "-c", "echo tool > /usr/local/bin/tool"]).exit_code == 0
    stack.spec["defaults"]["environment"] = {"ADDED": "1"}
    stack.write_spec()
    refused = stack.devbox("up", check=False)  # no terminal, no --yes
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "master: 1 file outside its volumes: /usr/local/bin/tool" in refused.stdout
    assert "--yes" in refused.stderr
    assert stack.container(docker_client, "master").id == container.id
    refused = stack.devbox("down", check=False)
    assert refused.returncode == 1 and "/usr/local/bin/tool" in refused.stdout
    assert stack.container(docker_client, "master").status == "running"
    stack.devbox("up", "--yes")
    assert stack.container(docker_client, "master").id != container.id
    assert stack.ssh("master", "cat ~/kept-in-home").strip() == "notes"
    stack.spec["defaults"]["environment"] = {"ADDED": "2"}  # logins and restarts alone: no question
    stack.write_spec()
    stack.devbox("up")
    stack.devbox("down")


def test_two_specs_in_one_folder_keep_their_own_state(make_stack, docker_client, free_port):
    import yaml

    stack = make_stack(1)
    other = {**stack.spec, "project": f"{stack.name}-b", "hosts": {"solo": {"ssh_port": free_port()}}}
    (stack.directory / "a.yaml").write_text(yaml.safe_dump(stack.spec))
    (stack.directory / "b.yaml").write_text(yaml.safe_dump(other))
    try:
        stack.devbox("-f", "a.yaml", "up")
        stack.devbox("-f", "b.yaml", "up")
        b_state = stack.directory / ".devbox-b"
        b_password = yaml.safe_load((b_state / "credentials.yaml").read_text())["solo"]["developer"]["password"]
        stack.devbox("-f", "a.yaml", "up")
        assert yaml.safe_load((b_state / "credentials.yaml").read_text())["solo"]["developer"]["password"] == b_password
        assert "PASS" in stack.devbox("-f", "b.yaml", "check").stdout
        # the same project name from the other file is refused, not taken over
        (stack.directory / "b.yaml").write_text(yaml.safe_dump({**other, "project": stack.name}))
        refused = stack.devbox("-f", "b.yaml", "up", check=False)
        assert refused.returncode == 1 and "already runs" in refused.stderr, refused.stderr
        assert stack.container(docker_client, "master").status == "running"
    finally:
        (stack.directory / "b.yaml").write_text(yaml.safe_dump(other))
        stack.devbox("-f", "b.yaml", "down", "--volumes", "--yes", check=False)
        stack.devbox("-f", "a.yaml", "down", "--volumes", "--yes", check=False)


def test_old_images_go_but_the_one_in_use_and_the_one_before_stay(make_stack, docker_client):
    stack = make_stack(1)
    stack.devbox("up")
    foreign = f"devbox-{stack.name}:not-built-by-devbox"
    docker_client.images.get(stack.spec["image"]["base"]).tag(foreign)
    try:
        tags = []
        for step in range(3):
            stack.spec["image"]["extra_lines"] = [f"RUN echo {step} > /etc/devbox-test-step"]
            stack.write_spec()
            stack.devbox("up")
            tags.append(stack.container(docker_client, "master").attrs["Config"]["Image"])
        built = {t for i in docker_client.images.list(filters={"label": f"devbox.project={stack.name}"}) for t in i.tags}
        assert built == set(tags[-2:])
        assert docker_client.images.list(name=foreign)
    finally:
        docker_client.images.remove(foreign)


def test_a_second_folder_with_the_same_project_name_cannot_touch_the_first_ones_volumes(make_stack, docker_client,
                                                                                        free_port):  # fmt: skip
    """Case 3: with the first spec's hosts down, the second one's up would mount its volumes (and
    read its data) and its down --volumes delete them; both are refused, naming the first folder."""
    import yaml

    first = make_stack(1)
    first.devbox("up")
    first.ssh("master", "echo precious > ~/data.txt")
    first.devbox("down")
    assert _volumes(docker_client, first.name) == [f"{first.name}_master-home"]
    second = first.directory.parent / "second" / first.name
    second.mkdir(parents=True)
    spec = {**first.spec, "hosts": {"master": {"ssh_port": free_port()}}}
    (second / "devbox.yaml").write_text(yaml.safe_dump(spec))
    try:
        for args in (["up"], ["down", "--volumes", "--yes"], ["status"]):
            refused = _devbox_in(second, *args)
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert refused.stderr.strip() == (
                f"error: project {first.name!r} already runs from {first.state}, another spec's (volume "
                f"{first.name}_master-home): give devbox.yaml another `project:` name, or run devbox "
                "with that spec")  # fmt: skip
        assert first.container_or_none(docker_client, "master") is None
        assert _volumes(docker_client, first.name) == [f"{first.name}_master-home"]
        # init in a third folder of that name picks a free one
        third = first.directory.parent / "third" / first.name
        third.mkdir(parents=True)
        init = _devbox_in(third, "init")
        assert init.returncode == 0, init.stderr
        assert f"project name {first.name!r} is taken on the engine by another project: using " \
               f"'{first.name}-2'" in init.stdout
        assert f"project: {first.name}-2\n" in (third / "devbox.yaml").read_text()
        first.devbox("up")
        assert first.ssh("master", "cat ~/data.txt").strip() == "precious"
    finally:
        _devbox_in(second, "down", "--volumes", "--yes")


def _start_devbox(folder, *args):
    import subprocess

    return subprocess.Popen([*DEVBOX, *args], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=devbox_env(), stdin=subprocess.DEVNULL)  # fmt: skip


# sshd that never listens: the container runs, the login wait waits
_SILENT_SSHD = ("RUN mv /usr/sbin/sshd /usr/sbin/sshd.real && printf '#!/bin/sh\\ncase \"$*\" in *-D*) exec sleep "
                "600;; esac\\nexec /usr/sbin/sshd.real \"$@\"\\n' > /usr/sbin/sshd && chmod 755 /usr/sbin/sshd")


def test_one_ctrl_c_in_the_login_wait_stops_up_at_once_and_says_each_hosts_state(make_stack, docker_client):
    """Case 7: one SIGINT during the login wait was ignored for two minutes."""
    import signal
    import time

    stack = make_stack(1, image={"extra_lines": [_SILENT_SSHD]})
    up = _start_devbox(stack.directory, "up", "--timeout", "120")
    deadline = time.monotonic() + 300
    labels = [f"devbox.project={stack.name}", "devbox.host=master"]
    # sparse: no inspect, which a container going between listing and inspecting fails
    while [c.attrs.get("State") for c in docker_client.containers.list(
            all=True, sparse=True, filters={"label": labels})] != ["running"]:  # fmt: skip
        assert up.poll() is None and time.monotonic() < deadline, up.communicate()
        time.sleep(0.2)
    time.sleep(1.5)  # in the login wait now
    sent = time.monotonic()
    up.send_signal(signal.SIGINT)
    out, err = up.communicate(timeout=30)
    assert time.monotonic() - sent < 2.5, (out, err)
    assert up.returncode == 130, (out, err)
    assert "master: running" in out.splitlines() and err.strip().endswith("error: interrupted"), (out, err)


def test_ctrl_c_while_compose_recreates_leaves_no_container_under_a_temporary_name(make_stack, docker_client):
    """Case 7: compose recreates a host as "<id>_<project>-<host>-1", then renames it; cut short
    (subprocess.run killed compose a quarter second after SIGINT) it stayed so. Now compose is
    handed the SIGINT and waited for, and devbox puts right what is left."""
    import re
    import signal
    import threading

    stack = make_stack(["master", "worker"])
    stack.devbox("up")
    stack.spec["defaults"]["environment"] = {"CHANGED": "1"}  # recreates both hosts
    stack.write_spec()
    events = docker_client.events(decode=True, filters={"type": "container", "event": ["create"],
                                                         "label": f"devbox.project={stack.name}"})  # fmt: skip
    up = _start_devbox(stack.directory, "up", "--yes")

    def interrupt_at_the_first_temporary_container() -> None:
        for event in events:
            if re.match(r"^[0-9a-f]{12}_", event["Actor"]["Attributes"].get("name", "")):
                up.send_signal(signal.SIGINT)
                return

    watcher = threading.Thread(target=interrupt_at_the_first_temporary_container, daemon=True)
    watcher.start()
    out, err = up.communicate(timeout=300)
    events.close()
    assert up.returncode == 130, (out, err)
    names = [name.lstrip("/") for c in docker_client.containers.list(
        all=True, sparse=True, filters={"label": f"devbox.project={stack.name}"}) for name in c.attrs["Names"]]
    assert not [name for name in names if re.match(rf"^[0-9a-f]{{12}}_{stack.name}-", name)], (names, out)
    lines = out.splitlines()
    assert all(any(line.startswith(f"{host}: ") for line in lines) for host in ("master", "worker")), out
    stack.devbox("up", "--yes")  # and the next up brings every host up
    stack.ssh("master", "true")
    stack.ssh("worker", "true")
