"""Timing primitives: a timed subprocess with its peak memory, and a rapid SSH-login poller.

Kept free of any knowledge of devbox or compose so both sides of the benchmark are measured by
exactly the same code.
"""

from __future__ import annotations

import os
import socket
import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from devbox import probe

POLL_SECONDS = 0.02  # how often the login poller and the memory sampler look


@dataclass(frozen=True)
class Timed:
    """One finished command: wall seconds, exit code, and its memory high-water marks (bytes)."""

    seconds: float
    returncode: int
    peak_rss: int | None  # the command's own process, sampled (None without psutil)
    tree_maxrss: int  # kernel's ru_maxrss: the largest process of the tree (itself or a child)
    cpu_seconds: float = 0.0  # user + system CPU of the command and the children it waited for


def _sample_rss(pid: int, done: threading.Event, peak: list[int]) -> None:
    """Sample one process's RSS until it exits: ru_maxrss cannot tell devbox from compose."""
    try:
        import psutil
    except ImportError:
        return
    try:
        process = psutil.Process(pid)
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            done.wait(POLL_SECONDS)
    except psutil.Error:
        pass  # it exited between two samples


def run_timed(argv: Sequence[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> Timed:
    """Run a command to the end with its output in ``log``; wall time from fork to reaping.

    ``os.wait4`` (not Popen.wait) so the kernel's rusage of exactly this command comes back.
    """
    import subprocess

    log.parent.mkdir(parents=True, exist_ok=True)
    peak = [0]
    done = threading.Event()
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, env=env)
        sampler = threading.Thread(target=_sample_rss, args=(child.pid, done, peak), daemon=True)
        sampler.start()
        try:
            _pid, status, usage = os.wait4(child.pid, 0)
        except BaseException:  # interrupted: stop the command too, or it outlives the teardown
            child.terminate()
            child.wait()
            done.set()
            raise
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    return Timed(seconds, child.returncode, peak[0] or None, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime)


def banner_ready(address: str, port: int) -> bool:
    """Whether sshd itself answers: Docker's proxy accepts connections long before sshd does."""
    try:
        with socket.create_connection((address, port), timeout=0.5) as sock:
            sock.settimeout(0.5)
            return sock.recv(4) == b"SSH-"
    except OSError:
        return False


@dataclass(frozen=True)
class FirstLogin:
    """When a target first accepted a real login (wall clock), and how long that login took."""

    name: str
    at: float | None  # time.time() when the login completed; None if it never did
    login_seconds: float
    banner_at: float | None = None  # time.time() when sshd first sent its banner


def first_login(target: probe.Target, deadline: float, started: probe.Started) -> FirstLogin:
    """From the moment the target's container starts, poll it every POLL_SECONDS until a password
    login succeeds.

    Polling only after the start matters: a connection that reaches the engine's port proxy
    before the container exists delays that host's first banner by about a second (see
    devbox.docker_api.StartWatch). A cheap banner check gates each full login, so polling this fast
    does not load the CPU.
    """
    while not started(target.name, 1.0):
        if time.monotonic() >= deadline:
            return FirstLogin(target.name, None, 0.0)
    banner_at = None
    while time.monotonic() < deadline:
        if banner_ready(target.address, target.port):
            banner_at = banner_at or time.time()
            result = probe.login(target, timeout=5.0)
            if result.ok:
                return FirstLogin(target.name, time.time(), result.seconds, banner_at)
        time.sleep(POLL_SECONDS)
    return FirstLogin(target.name, None, 0.0, banner_at)


class LoginWatch:
    """Login pollers running in the background (one thread per target) while a stack starts;
    each begins when ``started`` says its container has started."""

    def __init__(self, targets: Sequence[probe.Target], limit_seconds: float, started: probe.Started) -> None:
        deadline = time.monotonic() + limit_seconds
        self.results: dict[str, FirstLogin] = {}
        self._threads = [
            threading.Thread(target=self._watch, args=(target, deadline, started), daemon=True) for target in targets
        ]
        for thread in self._threads:
            thread.start()

    def _watch(self, target: probe.Target, deadline: float, started: probe.Started) -> None:
        self.results[target.name] = first_login(target, deadline, started)

    def join(self) -> dict[str, FirstLogin]:
        for thread in self._threads:
            thread.join()
        return self.results


def first_use_login(address: str, port: int, password: str) -> bool:
    """One password login as `developer` that accepts whatever host key the server shows: how
    users of a hand-written stack log in the first time (devbox's own probe checks its key)."""
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - trust on first use, on purpose
    try:
        client.connect(address, port, "developer", password, timeout=5, banner_timeout=5, auth_timeout=5,
                       allow_agent=False, look_for_keys=False)  # fmt: skip
        return True
    except (paramiko.SSHException, OSError, EOFError):
        return False
    finally:
        client.close()


def wait_first_use_logins(logins: Sequence[tuple[str, str, int, str]], limit_seconds: float) -> list[str]:
    """Log in to every (name, address, port, password) in parallel, retrying every 0.1 s as
    devbox's probe does; returns the names that never accepted a login in time."""
    deadline = time.monotonic() + limit_seconds

    def until_ready(login: tuple[str, str, int, str]) -> bool:
        while not first_use_login(*login[1:]):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    with ThreadPoolExecutor(max_workers=max(1, len(logins))) as pool:
        ready = list(pool.map(until_ready, logins))
    return [login[0] for login, ok in zip(logins, ready, strict=True) if not ok]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None
