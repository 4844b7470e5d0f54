"""End-to-end fixtures: the real engine, and real devbox projects on it, removed after each test.

``scripts/engine.sh`` provides the engine, the local base image and Compose v2; .ci/run calls it
before pytest. A missing engine fails these tests under CI=true and skips them elsewhere (see
``lacking`` in tests/conftest.py). Every project gets its own name (e2e-<random>) and free ports
on 127.0.0.1; teardown runs `devbox down --volumes` and removes the project's images by label,
so tests leave nothing behind.
"""

from __future__ import annotations

import contextlib
import gc
import os
import secrets
import shutil
import socket
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devbox.docker_api import list_containers
from devbox.probe import Target, login

from ..conftest import link_programs, own_path

# --------------------------------------------------------------------------- the engine

REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINE_SCRIPT = REPO_ROOT / "scripts" / "engine.sh"
BASE_IMAGE = "devbox-test/bookworm:base"
# debootstrap on a fresh machine takes well under a minute here; allow slack.
ENGINE_SCRIPT_TIMEOUT_S = 1200
ENGINE_FIX = "run `bash scripts/engine.sh` first"
# The devbox users run: the console script installed beside this Python (issue 21), not
# `python -m devbox`, so the e2e tests drive the package as `pip install .` installed it.
DEVBOX = [str(Path(sys.executable).with_name("devbox"))]
# The programs a devbox process runs: the Docker CLI (and its compose plugin), a v2 docker-compose,
# and ssh (`devbox ssh`). Nothing else is on the PATH the tests give it.
DEVBOX_PROGRAMS = ("docker", "docker-compose", "ssh")


def machine_path() -> str:
    """The PATH of every devbox the e2e tests run: only the programs devbox runs (see ``own_path``).
    A test that wants an nvidia-smi puts its double in front (``gpu_machine`` in test_gpu_ledger.py)."""
    return own_path(DEVBOX_PROGRAMS)


def devbox_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a devbox run: this process's, with the tests' own PATH, then ``extra``."""
    return {**os.environ, "PATH": machine_path(), **(extra or {})}

_engine_script_result: str | None = None  # run scripts/engine.sh at most once


def _connect() -> tuple[Any | None, str]:
    """Return (client, "") if the engine answers a ping, else (None, reason)."""
    import docker

    client = None
    error = ""
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # any failure means "no engine"
        error = f"docker.from_env().ping() failed: {type(exc).__name__}: {exc}"
    if not error:
        return client, ""
    if client is not None:
        client.close()
    # docker-py leaves the failed connection's socket unclosed; collect it now with
    # its ResourceWarning silenced, or filterwarnings=error fails a later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    return None, error


def _run_engine_script() -> str:
    """Run scripts/engine.sh once per session; return "" on success, else why not."""
    global _engine_script_result
    if _engine_script_result is not None:
        return _engine_script_result
    bash = shutil.which("bash")
    if bash is None or not ENGINE_SCRIPT.is_file():
        _engine_script_result = f"cannot run {ENGINE_SCRIPT} (bash or script missing)"
        return _engine_script_result
    try:
        proc = subprocess.run(
            [bash, str(ENGINE_SCRIPT)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=ENGINE_SCRIPT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _engine_script_result = f"{ENGINE_SCRIPT.name} did not complete: {exc}"
        return _engine_script_result
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
        _engine_script_result = f"{ENGINE_SCRIPT.name} exited {proc.returncode}:\n{tail}"
    else:
        _engine_script_result = ""
    return _engine_script_result


@pytest.fixture(scope="session")
def docker_client(lacking: Any) -> Iterator[Any]:
    """A ``docker.DockerClient`` connected to a live engine.

    Outside CI a missing engine is brought up with scripts/engine.sh (needs root), else the test
    skips; under CI=true it fails (see ``lacking`` in tests/conftest.py): .ci/run started it.
    """
    client, reason = _connect()
    if client is None and not lacking.required:
        script_error = _run_engine_script()
        client, reason = _connect()
        if client is None and script_error:
            reason = f"{reason}; {script_error}"
    if client is None:
        lacking(f"no Docker engine: {reason} ({ENGINE_FIX})")
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client: Any, lacking: Any) -> str:
    """Tag of the local Debian bookworm base image, built by scripts/engine.sh."""
    import docker.errors

    try:
        docker_client.images.get(BASE_IMAGE)
        return BASE_IMAGE
    except docker.errors.ImageNotFound:
        pass
    script_error = _run_engine_script()
    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        lacking(f"image {BASE_IMAGE} is missing: {script_error or 'engine.sh did not build it'} ({ENGINE_FIX})")
    return BASE_IMAGE


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """Factory: ``free_port()`` returns a currently free TCP port on 127.0.0.1,
    never the same one twice in a test session (so two hosts in one test
    cannot be handed the same port)."""
    handed_out: set[int] = set()

    def _free_port() -> int:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port not in handed_out:
                handed_out.add(port)
                return port
        raise RuntimeError("could not find an unused TCP port on 127.0.0.1")

    return _free_port


# --------------------------------------------------------------------------- projects


@dataclass
class Stack:
    """A devbox project folder with its spec, and helpers to drive it like a user would."""

    directory: Path
    name: str
    spec: dict[str, Any]

    def devbox(self, *args: str, env: dict[str, str] | None = None, check: bool = True,
               timeout: float = 600) -> subprocess.CompletedProcess[str]:  # fmt: skip
        result = subprocess.run(
            [*DEVBOX, *args], cwd=self.directory, capture_output=True, text=True,
            timeout=timeout, check=False, env=devbox_env(env), stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"devbox {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def write_spec(self) -> None:
        (self.directory / "devbox.yaml").write_text(yaml.safe_dump(self.spec, sort_keys=False))

    @property
    def state(self) -> Path:
        return self.directory / ".devbox"

    def password(self, host: str, user: str = "developer") -> str:
        data = yaml.safe_load((self.state / "credentials.yaml").read_text())
        return str(data[host][user]["password"])

    def host_key(self, host: str) -> str:
        known = dict(line.split(" ", 1) for line in (self.state / "known_hosts").read_text().splitlines())
        return known[f"devbox-{self.name}-{host}"]

    def port(self, host: str) -> int:
        return int(self.spec["hosts"][host]["ssh_port"])

    def target(self, host: str, user: str = "developer", password: str | None = None) -> Target:
        return Target(host, "127.0.0.1", self.port(host), user,
                      password if password is not None else self.password(host, user), self.host_key(host))  # fmt: skip

    def ssh(self, host: str, command: str, **kwargs: Any) -> str:
        """Log in with the real password over SSH and run a command; fails the test if login fails."""
        result = login(self.target(host, **kwargs), command=command, timeout=10)
        assert result.ok, f"{host}: {result.detail}"
        return result.output

    def container_or_none(self, client: Any, host: str) -> Any:
        found = list_containers(client, all=True, filters={"label": [
            f"devbox.project={self.name}", f"devbox.host={host}"]})  # fmt: skip
        return found[0] if found else None

    def container(self, client: Any, host: str) -> Any:
        found = self.container_or_none(client, host)
        assert found is not None, f"no container for {host}"
        return found


# Every project this test session makes is named e2e-<session><random>: the session's clean-up
# removes only its own images, never those of another test run on the same engine.
SESSION = secrets.token_hex(2)


def new_project_name() -> str:
    """A project name of this test session's own (see SESSION)."""
    return f"e2e-{SESSION}{secrets.token_hex(3)}"


@pytest.fixture
def make_stack(tmp_path: Path, base_image: str, free_port: Callable[[], int], docker_client: Any) -> Iterator[Callable[..., Stack]]:
    """Factory: make_stack(hosts=2, **host_settings) -> a Stack with a written spec (not yet up)."""
    made: list[Stack] = []

    def factory(hosts: int | list[str] = 2, image: dict[str, Any] | None = None,
                defaults: dict[str, Any] | None = None, **top: Any) -> Stack:  # fmt: skip
        names = hosts if isinstance(hosts, list) else ["master", "worker", "third", "fourth"][:hosts]
        name = new_project_name()
        spec: dict[str, Any] = {
            "project": name,
            "image": {"base": base_image, "packages": ["iputils-ping"], **(image or {})},
            "defaults": {"limits": {"cpus": 0.5, "memory": "256m"}, "reservations": {"memory": "128m"},
                         **(defaults or {})},
            "hosts": {host: {"ssh_port": free_port()} for host in names},
            **top,
        }  # fmt: skip
        directory = tmp_path / name
        directory.mkdir()
        stack = Stack(directory, name, spec)
        stack.write_spec()
        made.append(stack)
        return stack

    yield factory
    for stack in made:
        stack.devbox("down", "--volumes", "--yes", check=False, timeout=300)


@pytest.fixture(scope="session", autouse=True)
def _remove_e2e_images() -> Iterator[None]:
    """At the end of the session, remove the images its e2e projects built (kept until then: the
    layer cache makes every later build of the same Dockerfile instant). Only this session's:
    another test run on the same engine may still need its own."""
    yield
    try:
        import docker

        client = docker.from_env()
        images = client.images.list(filters={"label": "devbox.project"})
    except Exception:  # no engine: nothing was built
        return
    try:
        for image in images:
            if image.labels.get("devbox.project", "").startswith(f"e2e-{SESSION}"):
                for tag in image.tags:
                    # an image a failed teardown left a container on stays: that is fine
                    with contextlib.suppress(docker.errors.APIError):
                        client.images.remove(tag, force=True)
    finally:
        client.close()


NOGPU_ROOT = Path("/run/devbox-e2e-nogpu")
NOGPU_BRIDGE = ("dbx-nogpu0", "172.31.213.1/24")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=False, capture_output=True, timeout=30)


# What dockerd runs from its PATH; nvidia-container-runtime-hook, which makes dockerd register its
# NVIDIA GPU driver, is never among them.
DOCKERD_PROGRAMS = ("containerd", "containerd-shim-runc-v2", "runc", "docker-init", "docker-proxy", "ctr")


def _dockerd_path(folder: Path) -> str:
    """A PATH of its own for a dockerd that must have no NVIDIA runtime: one folder linking the
    programs dockerd runs, and nothing else, so a hook anywhere on this machine's PATH (a GPU
    server has it in /usr/bin) is never found (issue 30: filtering the caller's PATH missed it)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    link_programs(folder, DOCKERD_PROGRAMS)
    return str(folder)


@contextlib.contextmanager
def side_engine(root: Path, data_root: Path, bridge: tuple[str, str], *options: str) -> Iterator[str]:
    """A dockerd of a test's own beside the machine's, started WITHOUT
    nvidia-container-runtime-hook on its PATH (``_dockerd_path``). Yields its DOCKER_HOST; on
    leaving, its containers are removed and it is stopped.

    It has its own data and exec roots (so its own containerd), a bridge of its own that this
    creates (never `--bridge none`: that makes dockerd delete the host's docker0, which the main
    engine needs) and no iptables rules; published ports work through docker-proxy.
    """
    import atexit
    import time

    import docker

    dockerd = shutil.which("dockerd")
    if dockerd is None:
        pytest.fail("dockerd not found (scripts/engine.sh installs docker.io)")
    root.mkdir(parents=True, exist_ok=True)
    name, address = bridge
    _ip("link", "add", name, "type", "bridge")
    _ip("addr", "add", address, "dev", name)
    _ip("link", "set", name, "up")
    host = f"unix://{root / 'docker.sock'}"
    path = _dockerd_path(root / "bin")
    with open(root / "dockerd.log", "ab") as log:
        process = subprocess.Popen(
            [dockerd, "-H", host, "--data-root", str(data_root), "--exec-root", str(root / "exec"),
             "--pidfile", str(root / "docker.pid"), "--bridge", name, "--iptables=false", "--ip-masq=false",
             *options],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env={"PATH": path, "LANG": "C.UTF-8"},
        )  # fmt: skip

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        _ip("link", "delete", name)

    atexit.register(stop)  # even if pytest ends without finishing its session teardown
    deadline = time.monotonic() + 60
    while True:
        try:  # constructing the client already asks the daemon for its API version
            client = docker.DockerClient(base_url=host, timeout=120)
            client.ping()
            break
        except docker.errors.DockerException:
            if time.monotonic() > deadline or process.poll() is not None:
                stop()
                pytest.fail(f"a dockerd of the tests' own did not start (see {root / 'dockerd.log'})")
            time.sleep(0.5)
    try:
        yield host
        for container in client.containers.list(all=True):
            container.remove(force=True)
    finally:
        client.close()
        stop()


@pytest.fixture(scope="session")
def engine_without_gpu(docker_client: Any) -> Iterator[str]:
    """A second dockerd with no NVIDIA runtime, like a laptop (``side_engine``)."""
    with side_engine(NOGPU_ROOT, Path("/var/lib/devbox-e2e-nogpu"), NOGPU_BRIDGE) as host:
        yield host


HOOK = "nvidia-container-runtime-hook"
HOOK_DOUBLE_MARK = b"devbox test double"  # in engine.sh's and gpu-doubles.sh's hook doubles
ENGINE_PIDFILE = Path("/var/run/docker.pid")  # the local engine's (engine.sh's, and systemd's)


def engine_hook_problem() -> str | None:
    """Why the local engine cannot be given the nvidia-smi double's GPUs, or None when it can.

    dockerd hands GPU requests to the hook it found on its PATH when it started. A double (the
    one scripts/engine.sh starts it with) accepts any device; NVIDIA's real hook, on a GPU server,
    refuses the UUIDs and indexes that only the double describes. Read from dockerd's own
    environment (/proc/PID/environ), never guessed from this process's PATH (issue 30)."""
    try:
        pid = int(ENGINE_PIDFILE.read_text().strip())
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (OSError, ValueError) as exc:
        return f"cannot tell which {HOOK} the engine runs ({ENGINE_PIDFILE}, /proc: {exc})"
    path = next((entry[5:].decode() for entry in environ if entry.startswith(b"PATH=")), os.defpath)
    found = shutil.which(HOOK, path=path)
    if found is None:
        return f"the engine has no {HOOK} on its PATH ({ENGINE_FIX})"
    if HOOK_DOUBLE_MARK not in Path(found).read_bytes()[:4096]:
        return (f"the engine runs NVIDIA's real {found} (a GPU server): it refuses the GPUs of the nvidia-smi "
                f"double; run this test against an engine scripts/engine.sh started with its hook double")
    return None


@pytest.fixture(scope="session")
def hook_double(docker_client: Any, lacking: Any) -> None:
    """For a test that gives hosts the nvidia-smi double's GPUs: the engine's hook must be a double
    (see ``engine_hook_problem``). A real GPU server says so by name: a failure under CI, a skip
    elsewhere (README, Development, lists these tests)."""
    problem = engine_hook_problem()
    if problem is not None:
        lacking(problem)


def copy_image(source: Any, target_host: str, tag: str) -> None:
    """Copy an image between engines (docker save | docker load, through the SDK)."""
    import docker

    target = docker.DockerClient(base_url=target_host, timeout=300)
    try:
        target.images.load(b"".join(source.images.get(tag).save(named=True)))
    finally:
        target.close()


@pytest.fixture
def swarm(docker_client: Any) -> Iterator[Any]:
    """The main engine as a single-node swarm manager (on loopback), for one test; left after."""
    if (docker_client.info().get("Swarm") or {}).get("LocalNodeState") == "active":
        pytest.fail("the engine is already part of a swarm; the swarm tests need to own it")
    docker_client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    try:
        yield docker_client
    finally:
        docker_client.swarm.leave(force=True)
