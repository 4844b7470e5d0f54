"""SSH probes: prove a host accepts a real login, with its host key verified.

A port that accepts TCP proves little (Docker's proxy accepts before sshd runs); devbox logs in
with the account's real password over a real SSH client (paramiko) and checks the host key
against the one it generated, so a probe also catches a wrong or changed key.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

_QUIET = logging.NullHandler()
# started(host name, timeout seconds) -> whether that host's container has started by then
Started = Callable[[str, float], bool]


@dataclass(frozen=True)
class Target:
    """Where and as whom to log in, and the host key the server must present."""

    name: str
    address: str
    port: int
    user: str
    password: str | None
    host_key: str  # "ssh-ed25519 AAAA..."
    key_only: bool = False  # password_auth is off: devbox has no key to log in with


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str
    seconds: float
    output: str = ""
    refused: bool = False  # sshd refused the password itself: asking again cannot help

    @property
    def settled(self) -> bool:
        """Logged in, or refused in a way asking again cannot change (the password, the key)."""
        return self.ok or self.refused or self.detail.startswith("host key mismatch")


def _paramiko() -> ModuleType:
    """paramiko, imported without invoke: paramiko's SSH-config reader imports it only for
    `Match exec` lines, and devbox reads no SSH config; it is 0.06 s of every warm `devbox up`."""
    if "paramiko" not in sys.modules and "invoke" not in sys.modules:
        sys.modules["invoke"] = None  # type: ignore[assignment] # paramiko.config: ImportError -> invoke = None
        try:
            import paramiko
        finally:
            del sys.modules["invoke"]
    import paramiko

    return paramiko


def login(target: Target, command: str | None = None, timeout: float = 5.0) -> Result:
    """One login attempt; runs ``command`` after authenticating if given."""
    paramiko = _paramiko()

    # While sshd starts, paramiko logs each refused attempt with a traceback; the probe reports
    # the outcome itself, so paramiko's own log stays quiet.
    logging.getLogger("paramiko").addHandler(_QUIET)
    logging.getLogger("paramiko").propagate = False

    started = time.monotonic()

    def result(ok: bool, detail: str, output: str = "", refused: bool = False) -> Result:
        return Result(target.name, ok, detail, time.monotonic() - started, output, refused)

    try:
        sock = socket.create_connection((target.address, target.port), timeout=timeout)
    except OSError as exc:
        return result(False, f"cannot connect to {target.address}:{target.port} ({exc.strerror or exc})")
    # paramiko writes the auth request in two small sends: with Nagle's algorithm the second
    # waits for the server's delayed ACK (40 ms of each login's 55). OpenSSH's client sets it too.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = timeout
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        presented = f"{key.get_name()} {key.get_base64()}"
        if presented != target.host_key:
            return result(False, f"host key mismatch: got {presented[:40]}..., expected devbox's key")
        if target.key_only:
            return _offers_keys(transport, target, result)
        if target.password is None:
            return result(False, "no password known for this account (password_env variable unset?)")
        transport.auth_password(target.user, target.password)
        output = _run(transport, command, timeout) if command else ""
        return result(True, f"logged in as {target.user}", output)
    except paramiko.AuthenticationException:
        return result(False, f"login as {target.user} refused (wrong password?)", refused=True)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        return result(False, f"SSH failed: {exc or type(exc).__name__}")
    finally:
        transport.close()


def _offers_keys(transport: object, target: Target, result: Callable[..., Result]) -> Result:
    """For key-only hosts: sshd runs with devbox's host key and asks for a public key."""
    import paramiko

    try:
        transport.auth_none(target.user)  # type: ignore[attr-defined]
    except paramiko.BadAuthenticationType as exc:
        if exc.allowed_types == ["publickey"]:
            return result(True, "host key verified; sshd accepts public keys only")
        return result(False, f"sshd offers {', '.join(exc.allowed_types)} although password_auth is false")
    return result(False, f"sshd let {target.user} in without any credentials")


def _run(transport: object, command: str, timeout: float) -> str:
    channel = transport.open_session(timeout=timeout)  # type: ignore[attr-defined]
    channel.settimeout(timeout)
    channel.exec_command(command)
    chunks = []
    while True:
        data = channel.recv(65536)
        if not data:
            break
        chunks.append(data)
    channel.recv_exit_status()
    return b"".join(chunks).decode("utf-8", "replace")


def wait_for_logins(
    targets: list[Target], deadline_seconds: float = 120.0, started: Started | None = None,
    failing: Callable[[str], str | None] | None = None,
) -> list[Result]:  # fmt: skip
    """Probe every target in parallel until each logs in or the deadline passes.

    A password sshd refuses ends that target's wait at once (``Result.refused``): the entrypoint
    sets the passwords before sshd runs, so waiting cannot make it accepted.
    With ``started``, a target is first probed once its container has started (see
    devbox.engine.StartWatch): an earlier connection would delay that host's first login by
    about a second. With ``failing``, a host whose container keeps dying is given up on at once
    instead of at the deadline. Returns each target's last result, in the order given.
    """
    deadline = time.monotonic() + deadline_seconds
    stop = threading.Event()  # set when the caller is interrupted: every probe gives up

    def until_ready(target: Target) -> Result:
        begun = time.monotonic()
        if started is not None:
            while not started(target.name, min(1.0, max(0.0, deadline - time.monotonic()))):
                if time.monotonic() >= deadline or stop.is_set():
                    break  # still try once: the login's own error says what is wrong
        while not stop.is_set():
            outcome = login(target, timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            # sshd runs only after the entrypoint set the passwords: a refused one stays refused
            if outcome.settled or time.monotonic() >= deadline:
                return Result(outcome.name, outcome.ok, outcome.detail, time.monotonic() - begun,
                              refused=outcome.refused)  # fmt: skip
            dying = failing(target.name) if failing else None
            if dying:
                return Result(outcome.name, False, dying, time.monotonic() - begun)
            stop.wait(0.1)
        return Result(target.name, False, "interrupted", time.monotonic() - begun)

    return _in_parallel(until_ready, targets, stop)


class EarlyLogins:
    """One login to each target, begun before `up` knows whether it will change anything.

    With nothing to change, these logins are the proof: the hosts' sshd (other processes, on
    other cores) answers while devbox reads the engine, instead of after it; only a host whose
    early login did not settle (``Result.settled``) is probed again. With anything changed,
    they are not used and the hosts are probed once they run. The password goes
    only to a server that presented the host's own key (``login``), so a port some other
    program holds learns nothing.
    """

    TIMEOUT = 3.0  # seconds for one early login: past it, the usual probe decides

    def __init__(self, targets: list[Target]) -> None:
        _paramiko()  # in the caller's thread, before it imports the SDK: no two threads import at once
        self.targets = list(targets)
        self._results: list[Result | None] = [None] * len(self.targets)
        self._threads = [threading.Thread(target=self._login, args=(index,), daemon=True,
                                          name=f"devbox-early-{target.name}")
                         for index, target in enumerate(self.targets)]  # fmt: skip
        for thread in self._threads:
            thread.start()

    def _login(self, index: int) -> None:
        self._results[index] = login(self.targets[index], timeout=self.TIMEOUT)

    def results(self) -> list[Result]:
        """Every target's login, once all have ended, in the order given."""
        for thread in self._threads:
            while thread.is_alive():
                thread.join(0.2)  # short joins: Ctrl-C reaches the main thread at once
        return [result or Result(target.name, False, "no early login", 0.0)
                for target, result in zip(self.targets, self._results, strict=True)]  # fmt: skip


def _in_parallel(probe: Callable[[Target], Result], targets: list[Target], stop: threading.Event) -> list[Result]:
    """``probe`` of every target at once, each in a daemon thread; returns the results in order.

    The main thread waits in short joins, so Ctrl-C reaches it at once; it then sets ``stop``
    and leaves the threads behind (daemons: a login blocked in a socket never holds the exit).
    A ThreadPoolExecutor would not: its exit, and the interpreter's, joins every worker, which
    kept one SIGINT waiting for the whole login deadline.
    """
    results: list[Result | None] = [None] * len(targets)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = probe(targets[index])
        except BaseException as exc:  # raised again in the caller's thread, as pool.map would
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True, name=f"devbox-probe-{t.name}")
               for i, t in enumerate(targets)]  # fmt: skip
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except BaseException:
        stop.set()
        raise
    if errors:
        raise errors[0]
    return [result for result in results if result is not None]
