"""Nothing lost, second round (issue 29, cases 4 to 6): a `.devbox/` restored with its times kept,
a password changed inside a host, the spec's named volumes the login user can write, and a project
network (or container, or volume) removed behind devbox's back."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

pytestmark = pytest.mark.e2e


def _timed(stack, *args, **kwargs):
    begun = time.monotonic()
    result = stack.devbox(*args, **kwargs)
    return result, time.monotonic() - begun


def test_a_restored_folder_or_a_password_changed_inside_is_set_again_and_a_refused_one_fails_at_once(
        make_stack, docker_client):  # fmt: skip
    """Case 4: `.devbox/` copied away with its times (cp -a), `devbox passwd`, then the copy put
    back: the host holds the newer password, the record and the file times vouch for the older.
    `up` must not say "nothing changed" and then wait two minutes for a login it cannot get: the
    login proves the password, and `up` sets the folder's password again. The same after
    `passwd` in the host. A password still refused (an expired account) ends the wait at once,
    with a one-line error naming the fix."""
    stack = make_stack(1)
    stack.devbox("up")
    stack.devbox("up")  # a warm up: passwords-applied.json vouches for the host's password now
    saved = stack.directory.parent / "saved-devbox"
    subprocess.run(["cp", "-a", str(stack.state), str(saved)], check=True)
    restored_password = stack.password("master")
    stack.devbox("passwd", "master")
    assert stack.password("master") != restored_password
    shutil.rmtree(stack.state)
    subprocess.run(["cp", "-a", str(saved), str(stack.state)], check=True)
    assert stack.password("master") == restored_password

    up, seconds = _timed(stack, "up")
    credentials = stack.state / "credentials.yaml"
    assert (f"master/developer: refused the password in {credentials} (a restored .devbox/, or `passwd` run in "
            "the host): set it again, as its next start would") in up.stdout, up.stdout  # fmt: skip
    assert seconds < 60, f"up took {seconds:.0f} s"
    assert stack.ssh("master", "echo in").strip() == "in"  # the restored folder's password

    container = stack.container(docker_client, "master")
    code, _ = container.exec_run(["sh", "-c", "echo developer:chosen-inside | chpasswd"])
    assert code == 0
    check = stack.devbox("check", check=False)
    assert ("FAIL  master     ssh login: login as developer refused (wrong password?); `devbox up` sets devbox's "
            "password in it again") in check.stdout, check.stdout  # fmt: skip
    up, seconds = _timed(stack, "up")
    assert "master/developer: refused the password in" in up.stdout, up.stdout
    assert seconds < 60, f"up took {seconds:.0f} s"
    assert stack.ssh("master", "echo in").strip() == "in"
    assert container.id == stack.container(docker_client, "master").id  # its files stay

    # sshd refuses devbox's own password (the account expired): no two-minute wait, the fix named
    code, _ = container.exec_run(["chage", "-E", "0", "developer"])
    assert code == 0
    failed, seconds = _timed(stack, "up", check=False)
    assert failed.returncode != 0
    assert seconds < 30, f"up waited {seconds:.0f} s for a refused password"
    [line] = failed.stderr.strip().splitlines()
    assert line.startswith("error: master: login as developer refused with the password devbox keeps for it "
                           "(run `devbox passwd master` to set a new one)"), line  # fmt: skip
    container.exec_run(["chage", "-E", "-1", "developer"])


def _network(stack):
    return f"{stack.name}_net"


def test_a_network_container_or_volume_removed_behind_devboxs_back_is_put_back(make_stack, docker_client):
    """Case 6: the project network removed (`docker network disconnect -f`, `docker network rm`)
    leaves the hosts running with no port. `doctor` must not call their ports free; `up` must not
    say "nothing changed" and fail with "connection refused": it makes the network again and
    connects the hosts (their files stay). A host whose container and volume were removed, and a
    stopped host whose network was removed, are made or started again too."""
    stack = make_stack(2)
    stack.devbox("up")
    stack.ssh("master", "echo kept > /tmp/outside-volumes")
    master = stack.container(docker_client, "master")
    network = docker_client.networks.get(_network(stack))
    for name in ("master", "worker"):
        network.disconnect(stack.container(docker_client, name), force=True)
    network.remove()

    doctor = stack.devbox("doctor", check=False)
    [ports] = [line for line in doctor.stdout.splitlines() if line.split()[1:2] == ["ports"]]
    master_port, worker_port = stack.port("master"), stack.port("worker")
    assert ports.startswith("FAIL"), doctor.stdout
    assert (f"127.0.0.1:{master_port}: master's container runs but publishes no port (taken off its network, "
            "e.g. by `docker network rm`): `devbox up` connects it again") in ports, ports  # fmt: skip

    up = stack.devbox("up")
    assert f"network {_network(stack)} was missing (removed outside devbox): made it again" in up.stdout, up.stdout
    assert f"master: connected to network {_network(stack)} again" in up.stdout, up.stdout
    assert "nothing else changed: 2 hosts already up to date" in up.stdout, up.stdout
    assert stack.container(docker_client, "master").id == master.id
    assert stack.ssh("master", "cat /tmp/outside-volumes").strip() == "kept"
    assert stack.ssh("worker", "getent hosts master").strip()  # the hosts find each other by name again
    doctor = stack.devbox("doctor")
    assert (f"PASS  ports      held by the hosts: 127.0.0.1:{master_port} held by master (running); "
            f"127.0.0.1:{worker_port} held by worker (running)") in doctor.stdout, doctor.stdout  # fmt: skip

    # a stopped host whose network went; a host whose container and home volume went
    stack.container(docker_client, "worker").stop(timeout=1)
    docker_client.networks.get(_network(stack)).disconnect(stack.container(docker_client, "master"), force=True)
    docker_client.networks.get(_network(stack)).remove()
    stack.container(docker_client, "master").remove(force=True)
    docker_client.volumes.get(f"{stack.name}_master-home").remove()
    doctor = stack.devbox("doctor")
    assert (f"127.0.0.1:{worker_port} held by worker (exited); free: 127.0.0.1:{master_port}") in doctor.stdout
    up = stack.devbox("up")
    assert "starting master, worker" in up.stdout, up.stdout
    for name in ("master", "worker"):
        assert stack.ssh(name, "echo in").strip() == "in"
    assert docker_client.volumes.get(f"{stack.name}_master-home")


def test_the_specs_named_volumes_belong_to_the_login_user_unless_it_says_root(make_stack, docker_client):
    """Case 5: with init's own example (`master:/opt`) the login user could not write /opt:
    Docker makes a new named volume root's. A new (empty) one is the user's now, like the home,
    and so is the folder of one Docker seeded from the image (not the image's files in it);
    `owner: root` leaves one root's; one that holds files is left as it is at every later start."""
    # /seeded holds files of the image (as a CUDA image's /opt does): Docker copies them into the new volume
    stack = make_stack(1, image={"extra_lines": ["RUN mkdir -p /seeded/vendor && touch /seeded/vendor/tool"]})
    stack.spec["hosts"]["master"]["volumes"] = [
        "master:/opt", "kept:/kept", {"source": "system", "target": "/srv/system", "owner": "root"},
        "seeded:/seeded"]  # fmt: skip
    stack.write_spec()
    stack.devbox("up")
    assert stack.ssh("master", "touch /opt/x && stat -c %U /opt /opt/x").split() == ["developer", "developer"]
    # a seeded volume's folder is the user's (they can write there); the image's files in it stay root's
    assert stack.ssh("master", "touch /seeded/x && stat -c %U /seeded /seeded/vendor /seeded/vendor/tool").split() \
        == ["developer", "root", "root"]
    assert stack.ssh("master", "stat -c %U /srv/system; touch /srv/system/x 2>/dev/null || echo denied").split() == [
        "root", "denied"]  # fmt: skip
    container = stack.container(docker_client, "master")
    code, _ = container.exec_run(["sh", "-c", "touch /kept/root-file && chown -R root:root /kept"], user="root")
    assert code == 0
    container.restart(timeout=5)
    _wait_for_login(stack, "master")
    assert stack.ssh("master", "stat -c %U /kept /kept/root-file /opt /opt/x").split() == [
        "root", "root", "developer", "developer"]  # fmt: skip


def _wait_for_login(stack, host, seconds=60.0):
    from devbox.probe import login

    deadline = time.monotonic() + seconds
    while not login(stack.target(host), command="true", timeout=5).ok:
        assert time.monotonic() < deadline, f"{host}: no login {seconds:.0f} s after its restart"
        time.sleep(0.5)
