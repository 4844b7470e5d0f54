"""Hardening on a real engine: sshd passes ssh-audit, no account reads the secrets (even when the
operator has its UID), mounts that give the machine away warn, password guessing is slow."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devbox.probe import Target, login

from .conftest import DEVBOX, machine_path, new_project_name

pytestmark = pytest.mark.e2e

ALLOWED = Path(__file__).with_name("ssh_audit_allowed.yaml")


# --------------------------------------------------------------------------- ssh-audit


def audit_findings(report: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(failures, warnings) of an ssh-audit JSON report: [fail] and [warn] notes of each
    algorithm, CVEs (always failures), and the additional notes (as warnings)."""
    failures, warnings = [], []
    for section in ("kex", "key", "enc", "mac"):
        for algorithm in report.get(section) or []:
            notes = algorithm.get("notes") or {}
            failures += [f"{section} {algorithm['algorithm']}: {text}" for text in notes.get("fail", [])]
            warnings += [f"{section} {algorithm['algorithm']}: {text}" for text in notes.get("warn", [])]
    failures += [f"cve {cve.get('name')}: {cve.get('description')}" for cve in report.get("cves") or []]
    warnings += [f"note: {text}" for text in report.get("additional_notes") or []]
    return failures, warnings


def test_ssh_audit_finds_no_failure_and_no_warning_without_a_reason(make_stack):
    stack = make_stack(1)
    stack.devbox("up")
    run = subprocess.run([sys.executable, "-m", "ssh_audit", "-j", "-t", "10", "-p", str(stack.port("master")),
                          "127.0.0.1"], capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert run.returncode in (0, 2, 3), run.stderr  # good, warnings, failures: all reported in the JSON
    report = json.loads(run.stdout)
    failures, warnings = audit_findings(report)
    allowed = yaml.safe_load(ALLOWED.read_text())
    assert all(entry.get("reason") for entry in allowed), "every allowed finding says why"
    unexplained = [w for w in warnings if not any(w.startswith(entry["finding"]) for entry in allowed)]
    assert not failures, "\n".join(failures)
    assert not unexplained, "\n".join(unexplained)
    # what the configuration promises, as ssh-audit saw it
    names = {section: [a["algorithm"] for a in report[section]] for section in ("kex", "key", "enc", "mac")}
    assert names["key"] == ["ssh-ed25519"]
    assert set(names["enc"]) <= {"chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com"}
    assert all(mac.endswith("-etm@openssh.com") for mac in names["mac"])
    assert "kex-strict-s-v00@openssh.com" in names["kex"] or "chacha20-poly1305@openssh.com" not in names["enc"]
    assert names["kex"][0].startswith(("mlkem768x25519", "sntrup761x25519")), names["kex"]
    # devbox's own probe (paramiko) still logs in (OpenSSH 9.8+ may first penalise the audit's connections)
    assert _login_when_allowed(stack.target("master")) == "in"


# --------------------------------------------------------------------------- secrets


@dataclass
class Operator:
    """A non-root user of this machine running devbox, with the Docker socket's group."""

    uid: int
    gid: int
    home: Path

    def devbox(self, folder: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # setpriv, unshare and the mount script find their tools on the system's PATH; devbox itself
        # gets the tests' own PATH (env, last before it), as every devbox the e2e tests run does.
        env = {"PATH": SYSTEM_PATH, "HOME": str(self.home), "LANG": "C.UTF-8"}
        result = subprocess.run(_as_operator(self, [*DEVBOX, *args]), cwd=folder, env=env,
                                capture_output=True, text=True, timeout=600, check=False, stdin=subprocess.DEVNULL)  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"devbox {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result


SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _hidden_behind() -> tuple[Path, Path] | None:
    """(folder, child) when this interpreter lives under a folder other users cannot enter (e.g.
    pyenv in /root): the operator then sees that folder as an empty tmpfs holding only ``child``."""
    prefix = Path(sys.prefix).resolve()
    for folder in [*reversed(prefix.parents)][1:]:
        if not folder.stat().st_mode & stat.S_IXOTH:
            return folder, folder / prefix.relative_to(folder).parts[0]
    return None


def _as_operator(operator: Operator, argv: list[str]) -> list[str]:
    """argv run with the operator's UID, GID and the Docker socket's group (setpriv), in a mount
    namespace of its own when the interpreter is out of the operator's reach otherwise."""
    socket_gid = os.stat("/var/run/docker.sock").st_gid
    become = ["setpriv", f"--reuid={operator.uid}", f"--regid={operator.gid}", f"--groups={socket_gid}", "--",
              "env", f"PATH={machine_path()}"]  # fmt: skip
    hidden = _hidden_behind()
    if hidden is None:
        return [*become, *argv]
    folder, child = hidden
    stash = operator.home.parent / "stash"
    script = ('set -e; mkdir -p "$3"; mount --bind "$2" "$3"; mount -t tmpfs -o mode=755 devbox-e2e "$1"; '
              'mkdir -p "$2"; mount --bind "$3" "$2"; shift 3; exec "$@"')  # fmt: skip
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            str(folder), str(child), str(stash), *become, *argv]  # fmt: skip


@pytest.fixture
def operator(docker_client) -> Iterator[Operator]:
    """UID 1000 (most desktops' first user) with a home of its own; no account is created."""
    workspace = Path(tempfile.mkdtemp(prefix="devbox-e2e-operator-"))
    home = workspace / "home"
    home.mkdir()
    for path in (workspace, home):
        os.chown(path, 1000, 1000)
    try:
        yield Operator(1000, 1000, home)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def test_no_account_reads_the_secrets_when_the_operator_has_its_uid(operator, base_image, free_port, docker_client):
    name = new_project_name()
    folder = operator.home / name
    folder.mkdir()
    spec = {"project": name, "image": {"base": base_image, "uid": "auto"},
            "defaults": {"limits": {"cpus": 0.5, "memory": "256m"}}, "hosts": {"master": {"ssh_port": free_port()}}}  # fmt: skip
    (folder / "devbox.yaml").write_text(yaml.safe_dump(spec))
    for path in (folder, folder / "devbox.yaml"):
        os.chown(path, operator.uid, operator.gid)
    try:
        operator.devbox(folder, "up")
        state = folder / ".devbox"
        # the dangerous case: the files behind the secrets belong to the account's own UID
        host_key, passwords = state / "hostkeys" / "master" / "ssh_host_ed25519_key", state / "secrets" / "master" / "passwords"
        assert host_key.stat().st_uid == passwords.stat().st_uid == 1000
        password = yaml.safe_load((state / "credentials.yaml").read_text())["master"]["developer"]["password"]
        known = (state / "known_hosts").read_text().split(" ", 1)[1].strip()
        target = Target("master", "127.0.0.1", spec["hosts"]["master"]["ssh_port"], "developer", password, known)
        probe = (
            "id -u; if ls /run/secrets >/dev/null 2>&1; then echo 'READ /run/secrets'; fi; "
            "for f in /run/secrets/devbox_host_key /run/secrets/devbox_passwords /run/secrets/devbox_sshd_config "
            "/etc/ssh/ssh_host_ed25519_key /run/devbox-environment; do "
            "if cat \"$f\" >/dev/null 2>&1; then echo \"READ $f\"; fi; done; echo done"
        )  # fmt: skip
        result = login(target, command=probe, timeout=10)
        assert result.ok, result.detail  # the host works: a real login with the real password
        lines = result.output.splitlines()
        assert lines[0] == "1000" and lines[-1] == "done", result.output
        assert not [line for line in lines if line.startswith("READ")], result.output
        # root inside still has them (the entrypoint applied them: the login above used them)
        container = docker_client.containers.list(filters={"label": f"devbox.project={name}"})[0]
        listing = container.exec_run(["stat", "-c", "%a %U", "/run/secrets"]).output.decode().strip()
        assert listing == "700 root", listing
    finally:
        operator.devbox(folder, "down", "--volumes", "--yes", check=False)


# --------------------------------------------------------------------------- warnings


def test_mounts_that_give_the_machine_away_warn_at_render_and_up(make_stack):
    stack = make_stack(1)
    stack.spec["hosts"]["master"]["volumes"] = ["/var/run/docker.sock:/var/run/docker.sock", "/:/host:ro",
                                                "/etc:/hostetc:ro"]  # fmt: skip
    stack.write_spec()
    wanted = ["hosts.master.volumes: /run/docker.sock:/var/run/docker.sock gives the host's users a container "
              "engine's socket, which is root on this machine",
              "hosts.master.volumes: /:/host gives the host's users /: the machine's whole file system",
              "hosts.master.volumes: /etc:/hostetc gives the host's users /etc: the machine's configuration"]  # fmt: skip
    for command in ("render", "up"):
        result = stack.devbox(command)
        for warning in wanted:
            assert warning in result.stderr, f"{command}: {result.stderr}"
    assert stack.ssh("master", "test -S /var/run/docker.sock && echo socket").strip() == "socket"


# --------------------------------------------------------------------------- brute force


def _effective(container: Any) -> dict[str, str]:
    """sshd's effective settings in the running host (`sshd -T`), lower-case names."""
    text = container.exec_run(["/usr/sbin/sshd", "-T"]).output.decode()
    return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)


def _guess_until_dropped(port: int, tries: int = 20) -> tuple[list[float], str]:
    """Wrong passwords on one connection until sshd drops it: how long each refusal took, and
    how the connection ended ("dropped", "refused: ..." before any try, or "never dropped")."""
    import paramiko

    logging.getLogger("paramiko").propagate = False  # refusals are the point here, not news
    try:
        transport = paramiko.Transport(socket.create_connection(("127.0.0.1", port), timeout=10))
        transport.start_client(timeout=10)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        return [], f"refused: {exc}"
    answers: list[float] = []
    try:
        for attempt in range(tries):
            started = time.monotonic()
            with contextlib.suppress(paramiko.AuthenticationException):
                transport.auth_password("developer", f"wrong-{attempt}")
            answers.append(time.monotonic() - started)
            if not transport.is_active():
                return answers, "dropped"
    except (paramiko.SSHException, OSError, EOFError):
        return answers, "dropped"
    finally:
        transport.close()
    return answers, "never dropped"


def _flood(port: int, count: int) -> list[bytes]:
    """``count`` connections at once, none logging in: what sshd says first on each."""
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
    time.sleep(1)
    said = []
    for sock in sockets:
        try:
            said.append(sock.recv(32))
        except OSError:
            said.append(b"")
        finally:
            sock.close()
    return said


def test_password_guessing_is_slow_and_the_right_password_still_works(make_stack, docker_client):
    stack = make_stack(1)
    stack.devbox("up")
    port = stack.port("master")
    settings = _effective(stack.container(docker_client, "master"))
    max_tries, per_source = int(settings["maxauthtries"]), int(settings["persourcemaxstartups"])
    assert max_tries <= 4 and per_source <= 10 and int(settings["logingracetime"]) <= 30, settings

    # three connections guess at once, each wrong password after the other
    results: list[tuple[list[float], str]] = []
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: results.append(_guess_until_dropped(port))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    elapsed = time.monotonic() - started
    guesses = [seconds for answers, _ in results for seconds in answers]
    assert len(results) == 3 and all(end == "dropped" or end.startswith("refused") for _, end in results), results
    assert all(len(answers) <= max_tries for answers, _ in results), results  # then sshd hangs up
    assert all(seconds >= 1.0 for seconds in guesses), guesses  # every wrong password costs time
    assert len(guesses) / elapsed < 2.0, (len(guesses), elapsed)

    # a flood of connections that never log in: sshd turns away those beyond the per-source limit
    said = _flood(port, 2 * per_source + 2)
    banners = [line for line in said if line.startswith(b"SSH-")]
    assert len(banners) <= per_source and len(banners) < len(said), said

    if settings.get("persourcepenalties", "no") != "no":  # OpenSSH 9.8+: the source is penalised
        assert any(line.startswith(b"Not allowed") for line in said) or any(
            end.startswith("refused") for _, end in results), (said, results)  # fmt: skip

    # the right password still works: at once, or once a penalty is over
    assert _login_when_allowed(stack.target("master")) == "in"


def _login_when_allowed(target: Target, seconds: float = 620) -> str:
    """Log in and run `echo in`, waiting out a penalty of OpenSSH 9.8+ (at most PerSourcePenalties'
    max of 600 s) for this source address."""
    deadline = time.monotonic() + seconds
    while not (result := login(target, command="echo in", timeout=10)).ok:
        assert "refused" not in result.detail and time.monotonic() < deadline, result.detail
        time.sleep(5)
    return result.output.strip()
