"""The login wait: each target is probed only once its container has started."""

from __future__ import annotations

import threading
import time

from devbox import probe


def target(name: str) -> probe.Target:
    return probe.Target(name, "127.0.0.1", 1, "developer", "secret", "ssh-ed25519 AAAA")


def test_no_host_is_probed_before_its_container_starts(monkeypatch):
    opened: dict[str, float] = {}
    attempts: dict[str, list[float]] = {"early": [], "late": []}
    late_gate = threading.Event()

    def started(name: str, timeout: float) -> bool:
        gate_open = name == "early" or late_gate.wait(timeout)
        if gate_open:
            opened.setdefault(name, time.monotonic())
        return gate_open

    def login(target: probe.Target, command: str | None = None, timeout: float = 5.0) -> probe.Result:
        attempts[target.name].append(time.monotonic())
        return probe.Result(target.name, True, "logged in", 0.0)

    monkeypatch.setattr(probe, "login", login)
    threading.Timer(0.3, late_gate.set).start()
    results = probe.wait_for_logins([target("early"), target("late")], 10.0, started)

    assert [r.ok for r in results] == [True, True]
    assert attempts["early"][0] < opened["late"]  # one host does not wait for the others
    assert attempts["late"][0] >= opened["late"]


def test_a_host_that_never_starts_is_tried_once_at_the_deadline(monkeypatch):
    calls: list[float] = []

    def login(target: probe.Target, command: str | None = None, timeout: float = 5.0) -> probe.Result:
        calls.append(time.monotonic())
        return probe.Result(target.name, False, "cannot connect to 127.0.0.1:1 (Connection refused)", 0.0)

    monkeypatch.setattr(probe, "login", login)
    began = time.monotonic()
    results = probe.wait_for_logins([target("never")], 0.5, lambda _name, timeout: time.sleep(timeout) or False)

    assert not results[0].ok and "cannot connect" in results[0].detail  # the login's own error
    assert len(calls) == 1 and calls[0] - began >= 0.5


def test_a_host_whose_container_keeps_dying_is_given_up_on_at_once(monkeypatch):
    def login(target: probe.Target, command: str | None = None, timeout: float = 5.0) -> probe.Result:
        return probe.Result(target.name, target.name == "fine", "cannot connect (Connection refused)", 0.0)

    monkeypatch.setattr(probe, "login", login)
    began = time.monotonic()
    results = probe.wait_for_logins(
        [target("fine"), target("dying")], 60.0, lambda _name, _timeout: True,
        lambda name: "its container exited with code 127 (2 times)" if name == "dying" else None,
    )  # fmt: skip
    assert [r.ok for r in results] == [True, False]
    assert results[1].detail == "its container exited with code 127 (2 times)"
    assert time.monotonic() - began < 5


def test_ctrl_c_stops_the_login_wait_at_once_and_every_probe_with_it(monkeypatch):
    """Case 7 of issue 13: one SIGINT was ignored until the deadline (the pool joined its workers)."""
    import _thread
    import signal

    import pytest

    tries: list[float] = []

    def login(target: probe.Target, command: str | None = None, timeout: float = 5.0) -> probe.Result:
        tries.append(time.monotonic())
        time.sleep(0.5)  # a connection that hangs, as to a container whose sshd never comes up
        return probe.Result(target.name, False, "cannot connect (Connection refused)", 0.0)

    monkeypatch.setattr(probe, "login", login)
    threading.Timer(0.3, lambda: _thread.interrupt_main(signal.SIGINT)).start()
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        probe.wait_for_logins([target("a"), target("b")], 120.0)
    assert time.monotonic() - began < 0.6
    time.sleep(0.8)
    settled = len(tries)
    time.sleep(0.8)
    assert len(tries) == settled <= 4  # the probes gave up too: nothing keeps trying behind the user's back


def test_a_refused_password_ends_the_wait_at_once(monkeypatch):
    """sshd runs only after the entrypoint set the passwords: one it refuses stays refused, so
    the wait ends there instead of at the deadline (issue 29, case 4)."""
    tries: list[str] = []

    def login(target: probe.Target, command: str | None = None, timeout: float = 5.0) -> probe.Result:
        tries.append(target.name)
        if target.name == "refusing":
            return probe.Result(target.name, False, "login as developer refused (wrong password?)", 0.0, refused=True)
        return probe.Result(target.name, False, "cannot connect to 127.0.0.1:1 (Connection refused)", 0.0)

    monkeypatch.setattr(probe, "login", login)
    began = time.monotonic()
    refusing, down = probe.wait_for_logins([target("refusing"), target("down")], 1.0)
    assert time.monotonic() - began < 2.0
    assert refusing.refused and not refusing.ok and tries.count("refusing") == 1
    assert not down.refused and tries.count("down") > 1  # not yet up: asked until the deadline
