"""The devbox spec: load ``devbox.yaml``, validate it in one place, return frozen dataclasses.

Validation collects every problem before failing, each with the spec path it concerns
(``hosts.worker.limits.memory: ...``), so a user fixes a file in one pass. Host settings are
looked up in the host first and then in ``defaults``; an error names where the value came from.
This module is pure: it reads the spec (and checks that files it names exist), nothing else.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devbox.errors import SpecError

DEFAULT_BASE_IMAGE = "nvidia/cuda:12.6.3-cudnn-devel-ubuntu22.04"
DEFAULT_PACKAGES = ("net-tools", "iputils-ping", "curl", "wget", "git", "python3-pip")
DEFAULT_SHM_SIZE = "2g"
MIN_MEMORY_LIMIT = 6 * 1024**2  # the engine refuses less
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
)
GPU_CAPABILITIES = ("gpu", "compute", "utility", "graphics", "video", "display", "compat32")
RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")
ULIMIT_NAMES = (
    "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
    "nproc", "rss", "rtprio", "rttime", "sigpending", "stack",
)  # fmt: skip
CAPABILITIES = (
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE",
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER",
    "KILL", "LEASE", "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN",
    "NET_BIND_SERVICE", "NET_BROADCAST", "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP",
    "SETUID", "SYSLOG", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE",
    "SYS_PACCT", "SYS_PTRACE", "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG",
    "WAKE_ALARM",
)  # fmt: skip

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# name[=[epoch:]version] as Debian policy spells them; no '~' after '=' or ':', where bash (the
# RUN shell when docker_cli is on) would expand it like a home directory
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=([0-9]+:)?[A-Za-z0-9][A-Za-z0-9.+~-]*)?$")
_TIMEZONE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")
_IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
_VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_SIZE = re.compile(r"^([0-9]{1,30})([bkmg]?)$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_GPU_UUID = re.compile(r"^(GPU|MIG)-[0-9a-fA-F-]{8,}$")
_CPUSET = re.compile(r"^[0-9]{1,9}(-[0-9]{1,9})?(,[0-9]{1,9}(-[0-9]{1,9})?)*$")
_SSH_KEY = re.compile(
    r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
    # the comment: anything but control characters and the line breaks str.splitlines() knows,
    # so one accepted key is exactly one line of authorized_keys
    r" [A-Za-z0-9+/=]+( [^\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]*)?$"
)
SIZE_HELP = "use a whole number with a unit b, k, m or g, e.g. 16g, 16000M, 512m"


@dataclass(frozen=True)
class Network:
    """The one bridge network every host joins; hosts reach each other by name on it."""

    name: str
    driver: str = "bridge"
    subnet: str | None = None


@dataclass(frozen=True)
class Image:
    """How the single shared image is built. Hosts with this config share one build."""

    base: str = DEFAULT_BASE_IMAGE
    timezone: str = "UTC"
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    pip_requirements: Path | None = None
    shell: str = "zsh"
    user: str = "developer"
    uid: int | None = None
    gid: int | None = None
    docker_cli: bool = False
    extra_lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Size:
    """A memory size as the user wrote it (rendered back verbatim) and in bytes (compared)."""

    text: str
    bytes: int


@dataclass(frozen=True)
class Resources:
    """CPU (in cores) and memory, as a limit or a reservation."""

    cpus: float | None = None
    memory: Size | None = None


@dataclass(frozen=True)
class Gpus:
    """GPU request: ``count`` (an int or ``"all"``) or explicit ``device_ids``, never both."""

    count: int | str = 0
    device_ids: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ("gpu",)

    @property
    def wanted(self) -> bool:
        return bool(self.device_ids) or self.count != 0


@dataclass(frozen=True)
class Volume:
    """A named volume (``kind='volume'``) or a bind mount of a host path (``kind='bind'``)."""

    kind: str
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Ulimit:
    name: str
    soft: int
    hard: int


@dataclass(frozen=True)
class Host:
    """One development host: a container with sshd, its own limits, GPUs, port and volumes."""

    name: str
    hostname: str
    ssh_port: int
    bind_address: str = "127.0.0.1"
    limits: Resources = field(default_factory=Resources)
    reservations: Resources = field(default_factory=Resources)
    gpus: Gpus = field(default_factory=Gpus)
    volumes: tuple[Volume, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    restart: str = "unless-stopped"
    root_login: bool = False
    password_auth: bool = True
    authorized_keys: tuple[str, ...] = ()
    password_env: tuple[tuple[str, str], ...] = ()
    docker_socket: bool = False
    privileged: bool = False
    shm_size: Size = field(default_factory=lambda: Size(DEFAULT_SHM_SIZE, 2 * 1024**3))
    ulimits: tuple[Ulimit, ...] = ()
    devices: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    ipc: str | None = None
    cpuset: str | None = None

    @property
    def accounts(self) -> tuple[str, ...]:
        """Accounts whose passwords devbox manages: root only when root login is allowed."""
        return ("root",) if self.root_login else ()


def gpu_count_warnings(hosts: tuple[Host, ...], available: int) -> list[str]:
    """Hosts asking for more GPUs (or higher indexes) than the machine has."""
    warnings = []
    for host in hosts:
        count = host.gpus.count
        if isinstance(count, int) and count > available:
            warnings.append(f"hosts.{host.name}.gpus: asks for {count} GPUs but this machine has {available}")
        have = f"GPUs 0-{available - 1}" if available else "no GPUs"
        for gpu in host.gpus.device_ids:
            if gpu.isdigit() and int(gpu) >= available:
                warnings.append(f"hosts.{host.name}.gpus: GPU {gpu} does not exist here ({have})")
    return warnings


@dataclass(frozen=True)
class Spec:
    """A validated devbox.yaml. ``directory`` is where relative paths in it are resolved."""

    project: str
    network: Network
    image: Image
    hosts: tuple[Host, ...]
    directory: Path
    engine: str = "compose"  # or "swarm": the same hosts as services of an existing swarm
    source: str = "devbox.yaml"
    gpu_enabled: bool = True
    warnings: tuple[str, ...] = ()  # shown whenever the spec is used
    notes: tuple[str, ...] = ()  # facts worth knowing, shown by `validate` and `check`

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def accounts(self, host: Host) -> tuple[str, ...]:
        """Every account on ``host`` that gets a password: the image user, and root if allowed."""
        return (self.image.user, *host.accounts)


# --------------------------------------------------------------------------- YAML loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)  # type: ignore[no-untyped-call]
        try:
            hash(key)
        except TypeError:
            continue  # construct_mapping reports the unhashable key with its line
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


MAX_YAML_NODES = 100_000  # far above any real spec; stops "billion laughs" alias bombs


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many nodes ``node`` stands for once every alias is expanded (a cycle counts once)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[id(node)] = min(total, MAX_YAML_NODES + 1)
    return memo[id(node)]


def _compose_and_construct(text: str, source: str) -> Any:
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_YAML_NODES:
            raise SpecError(source, [f"too large once its aliases are expanded (over {MAX_YAML_NODES} values)"])
        return None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML safely; syntax errors become a SpecError naming the file and line."""
    try:
        return _compose_and_construct(text, source)
    except RecursionError:
        raise SpecError(source, ["nested too deeply"]) from None
    except ValueError as exc:  # e.g. a number with more digits than Python converts
        raise SpecError(source, [f"not valid YAML ({str(exc).split(':')[0]})"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise SpecError(source, [f"{where}: {exc.problem or exc.context}"]) from None
    except yaml.reader.ReaderError as exc:
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise SpecError(source, [f"character {exc.position + 1}: {char} is not allowed ({exc.reason})"]) from None
    except yaml.YAMLError as exc:
        raise SpecError(source, [f"not valid YAML ({' '.join(str(exc).split())})"]) from None


def load_spec(path: str | os.PathLike[str], *, gpu: bool | None = None, engine: str | None = None) -> Spec:
    """Read and validate a spec file. Raises SpecError listing every problem.

    ``gpu=False`` turns every GPU request off (``--no-gpu``), whatever the spec says; ``engine``
    (``--engine``) overrides the spec's ``engine:``.
    """
    spec_path = Path(path)
    try:
        text = spec_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(
            str(spec_path), ["no such file (run `devbox init` to create one, or pass --file)"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(spec_path), [f"cannot read it ({exc})"]) from None
    data = parse_yaml(text, str(spec_path))
    return build_spec(data, spec_path.resolve().parent, source=str(spec_path), gpu=gpu, engine=engine)


def build_spec(
    data: Any, directory: Path, *, source: str = "devbox.yaml", gpu: bool | None = None, engine: str | None = None
) -> Spec:
    """Validate already-parsed spec data. Raises SpecError listing every problem."""
    problems = _Problems()
    if engine is not None and isinstance(data, Mapping):
        data = {**data, "engine": engine}
    spec = _SpecReader(problems, directory).read(data, gpu)
    if problems or spec is None:
        raise SpecError(source, problems.items)
    return Spec(**{**spec.__dict__, "source": source})


# --------------------------------------------------------------------------- validation


class _Problems:
    """Collects problems as ``path: message`` lines, without repeats, in the order found."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        line = f"{path}: {message}" if path else message
        if not line.isprintable():  # one problem, one line: escape newlines and control characters
            line = "".join(char if char.isprintable() else repr(char)[1:-1] for char in line)
        if line not in self.items:
            self.items.append(line)

    def __bool__(self) -> bool:
        return bool(self.items)


_TOP_KEYS = ("version", "project", "engine", "network", "image", "gpu", "defaults", "hosts")
ENGINES = ("compose", "swarm")
# What a swarm service cannot express (Docker's service API has no such fields), by host setting.
SWARM_UNSUPPORTED = ("ulimits", "devices", "privileged", "ipc", "cpuset")
_NETWORK_KEYS = ("name", "driver", "subnet")
_IMAGE_KEYS = (
    "base", "timezone", "packages", "pip_requirements", "shell", "user", "uid", "gid",
    "docker_cli", "extra_lines",
)  # fmt: skip
_HOST_SETTINGS = (
    "limits", "reservations", "gpus", "gpu_capabilities", "bind_address", "volumes",
    "environment", "restart", "root_login", "password_auth", "authorized_keys", "password_env",
    "docker_socket", "privileged", "shm_size", "ulimits", "devices", "cap_add", "ipc", "cpuset",
)  # fmt: skip
_HOST_ONLY = ("ssh_port", "hostname")
_RESOURCE_KEYS = ("cpus", "memory")
_MERGED_MAPPINGS = ("limits", "reservations", "environment", "ulimits", "password_env")


def _type_name(value: Any) -> str:
    return {
        dict: "a mapping", list: "a list", str: "a string", bool: "true/false",
        int: "a number", float: "a number", type(None): "empty",
    }.get(type(value), type(value).__name__)  # fmt: skip


_NESTED_HINTS = {"cpus": "limits.cpus", "memory": "limits.memory"}


def _check_keys(node: Mapping, allowed: tuple[str, ...], path: str, problems: _Problems) -> None:
    """Report keys not in ``allowed``, suggesting the closest known key (or nested key)."""
    for key in node:
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        if "limits" in allowed:
            nested = difflib.get_close_matches(str(key), list(_NESTED_HINTS), n=1, cutoff=0.6)
            close = [_NESTED_HINTS[nested[0]]] if nested else close
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(allowed)})"
        problems.add(_join(path, str(key)), f"unknown key{hint}")


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not key.isprintable():
        key = repr(key)
    return f"{path}.{key}" if path else key


class _Layers:
    """A host's settings: the host's own mapping over ``defaults``, remembering each origin."""

    def __init__(self, layers: list[tuple[Mapping, str]]) -> None:
        self.layers = layers

    def get(self, key: str) -> tuple[Any, str] | None:
        for node, path in self.layers:
            if key in node:
                return node[key], _join(path, key)
        return None

    def merged(self, key: str, problems: _Problems) -> Iterator[tuple[str, Any, str]]:
        """Yield (subkey, value, path) of a mapping setting merged key by key, host first."""
        seen: set[str] = set()
        for node, path in self.layers:
            if key not in node or node[key] is None:
                continue
            sub = node[key]
            sub_path = _join(path, key)
            if not isinstance(sub, Mapping):
                problems.add(sub_path, f"must be a mapping, not {_type_name(sub)}")
                continue
            for subkey, value in sub.items():
                if str(subkey) not in seen:
                    seen.add(str(subkey))
                    yield str(subkey), value, _join(sub_path, str(subkey))


class _SpecReader:
    """Turns parsed YAML into a Spec, reporting every problem to ``problems``."""

    def __init__(self, problems: _Problems, directory: Path) -> None:
        self.problems = problems
        self.directory = directory
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self._password_env_paths: dict[tuple[str, str], str] = {}

    # -- scalar readers: each returns a clean value or None after reporting a problem

    def _str(self, value: Any, path: str, pattern: re.Pattern[str] | None = None,
             hint: str = "") -> str | None:  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.problems.add(path, f"must be a string, not {_type_name(value)}")
            return None
        text = str(value)
        if pattern is not None and not pattern.fullmatch(text):
            self.problems.add(path, f"{text!r} is not valid ({hint})")
            return None
        return text

    def _bool(self, value: Any, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.problems.add(path, f"must be true or false, not {value!r}")
            return None
        return value

    def _int(self, value: Any, path: str, low: int, high: int, what: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            digits = value.strip() if isinstance(value, str) else ""
            if digits.isascii() and digits.isdigit() and len(digits) <= 30:  # not '²', not 5000 digits
                value = int(digits)
            else:
                self.problems.add(path, f"{value!r} is not {what} ({low}-{high})")
                return None
        if not low <= value <= high:
            self.problems.add(path, f"{value} is out of range for {what} ({low}-{high})")
            return None
        return value

    def _size(self, value: Any, path: str) -> Size | None:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.problems.add(path, f"{value!r} is not a size ({SIZE_HELP})")
            return None
        match = _SIZE.fullmatch(str(value).strip())
        if not match or int(match.group(1)) == 0:
            self.problems.add(path, f"{str(value)!r} is not a size ({SIZE_HELP})")
            return None
        number, unit = match.groups()
        return Size(str(value).strip(), int(number) * _SIZE_UNITS[unit.lower()])

    def _cpus(self, value: Any, path: str) -> float | None:
        try:
            cpus = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError, OverflowError):
            cpus = None
        if cpus is None or not 0.01 <= cpus <= 4096:
            self.problems.add(path, f"{value!r} is not a CPU count (use a number of cores: 8, 0.5)")
            return None
        return cpus

    def _list(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problems.add(path, f"must be a list, not {_type_name(value)}")
            return []
        return value

    def _mapping(self, value: Any, path: str, keys: tuple[str, ...]) -> Mapping:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problems.add(path, f"must be a mapping, not {_type_name(value)}")
            return {}
        _check_keys(value, keys, path, self.problems)
        return value

    def _existing(self, text: str, is_kind: Callable[[Path], bool]) -> Path | None:
        """``text`` resolved against the spec's folder (~ expanded), if it exists as asked."""
        try:
            found = (self.directory / os.path.expanduser(text)).resolve()
            return found if is_kind(found) else None
        except (OSError, ValueError):  # NUL byte, name too long
            return None

    def _existing_file(self, value: Any, path: str) -> Path | None:
        text = self._str(value, path)
        if text is None:
            return None
        file = self._existing(text, Path.is_file)
        if file is None:
            self.problems.add(path, f"file {text!r} does not exist (paths are relative to the spec)")
        return file

    # -- sections

    def read(self, data: Any, gpu: bool | None) -> Spec | None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            self.problems.add("", f"the spec must be a mapping of settings, not {_type_name(data)}")
            return None
        _check_keys(data, _TOP_KEYS, "", self.problems)
        if data.get("version", 1) != 1:
            version = data["version"]
            hint = "write it as a number: version: 1" if str(version).strip() == "1" else "use 1"
            self.problems.add("version", f"{version!r} is not supported ({hint})")
        project = None
        if "project" not in data:
            self.problems.add("project", "missing (name the project, e.g. project: gpu-lab)")
        else:
            hint = "lowercase letters, digits, - and _; starts with a letter or digit"
            project = self._str(data["project"], "project", _PROJECT, hint)
        network = self._network(data.get("network"), project or "devbox")
        image = self._image(data.get("image"))
        gpu_enabled = self._gpu_switch(data, gpu)
        engine = data.get("engine", "compose")
        if engine not in ENGINES:
            self.problems.add("engine", f"{engine!r} is not an engine (use compose or swarm)")
        hosts = self._hosts(data.get("hosts"), data.get("defaults"), gpu_enabled)
        self._check_password_accounts(hosts, image)
        if self.problems or project is None:
            return None
        self._cross_checks(hosts)
        if engine == "swarm":
            self._swarm_checks(hosts, data)
            if self.problems:
                return None
        return Spec(
            project=project, engine=engine, network=network, image=image, hosts=tuple(hosts),
            directory=self.directory, gpu_enabled=gpu_enabled, warnings=tuple(self.warnings),
            notes=tuple(self.notes),
        )  # fmt: skip

    def _gpu_switch(self, data: Mapping, gpu: bool | None) -> bool:
        value = data.get("gpu", "on")
        if value not in ("on", "off", True, False):
            self.problems.add("gpu", f"{value!r} is not a GPU switch (use on or off)")
        enabled = value in ("on", True)
        return enabled if gpu is None else gpu and enabled

    def _network(self, raw: Any, project: str) -> Network:
        node = self._mapping(raw, "network", _NETWORK_KEYS)
        name = self._str(node.get("name", "net"), "network.name", _VOLUME_NAME,
                         "letters, digits, _ . -")  # fmt: skip
        driver = node.get("driver", "bridge")
        if driver != "bridge":
            self.problems.add("network.driver", f"{driver!r} is not supported (use bridge)")
        subnet = None
        if node.get("subnet") is not None:
            text = self._str(node["subnet"], "network.subnet")
            try:
                subnet = str(ipaddress.ip_network(text or "", strict=True))
            except ValueError:
                self.problems.add("network.subnet", f"{text!r} is not a subnet (e.g. 172.28.0.0/16)")
        return Network(name=name or "devbox", driver="bridge", subnet=subnet)

    def _image(self, raw: Any) -> Image:
        node = self._mapping(raw, "image", _IMAGE_KEYS)
        base = self._str(node.get("base", DEFAULT_BASE_IMAGE), "image.base", _IMAGE_REF,
                         "an image reference such as nvidia/cuda:12.6.3-cudnn-devel-ubuntu22.04")  # fmt: skip
        if base and ":" not in base.rsplit("/", 1)[-1] and "@" not in base or (
            base and base.endswith(":latest")
        ):
            self.problems.add("image.base", f"{base!r} is not pinned (name a tag other than latest)")
        packages = [
            self._str(item, _join("image.packages", i), _PACKAGE, "a Debian package name")
            for i, item in enumerate(self._list(node.get("packages", list(DEFAULT_PACKAGES)),
                                                "image.packages"))
        ]  # fmt: skip
        shell = node.get("shell", "zsh")
        if shell not in ("zsh", "bash"):
            self.problems.add("image.shell", f"{shell!r} is not supported (use zsh or bash)")
        user = self._str(node.get("user", "developer"), "image.user", _USER,
                         "lowercase letters, digits, _ and -, at most 32")  # fmt: skip
        if user == "root":
            self.problems.add("image.user", "must not be root (root login is a separate opt-in)")
        extra = [
            self._str(line, _join("image.extra_lines", i))
            for i, line in enumerate(self._list(node.get("extra_lines"), "image.extra_lines"))
        ]
        for i, line in enumerate(extra):
            if line is not None and ("\n" in line or "\r" in line):
                self.problems.add(_join("image.extra_lines", i), "must be one line each")
        requirements = None
        if node.get("pip_requirements") is not None:
            requirements = self._existing_file(node["pip_requirements"], "image.pip_requirements")
            try:
                if requirements is not None:
                    requirements.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                self.problems.add("image.pip_requirements", f"{str(node['pip_requirements'])!r} is "
                                  "not a readable UTF-8 text file")  # fmt: skip
                requirements = None
        return Image(
            base=base or DEFAULT_BASE_IMAGE,
            timezone=self._str(node.get("timezone", "UTC"), "image.timezone", _TIMEZONE,
                               "a tz database name such as UTC or Europe/Berlin") or "UTC",
            packages=tuple(p for p in packages if p),
            pip_requirements=requirements,
            shell=shell if shell in ("zsh", "bash") else "zsh",
            user=user or "developer",
            uid=self._id(node.get("uid"), "image.uid", os.getuid),
            gid=self._id(node.get("gid"), "image.gid", os.getgid),
            docker_cli=bool(self._bool(node.get("docker_cli", False), "image.docker_cli")),
            extra_lines=tuple(line for line in extra if line),
        )  # fmt: skip

    def _id(self, value: Any, path: str, invoking: Any) -> int | None:
        """A UID/GID: a number, or ``auto`` for the invoking user's (the sudo caller's if any)."""
        if value is None:
            return None
        if value == "auto":
            sudo = os.environ.get("SUDO_UID" if path.endswith("uid") else "SUDO_GID", "")
            found = int(sudo) if sudo.isdigit() else int(invoking())
            if found == 0:
                self.notes.append(f"{path}: auto found root (0), which the user must not share; "
                                  "using the image's default id (run devbox as yourself or via sudo)")  # fmt: skip
                return None
            return found
        return self._int(value, path, 1, 2**31 - 2, "a numeric id or auto")

    def _hosts(self, raw: Any, defaults_raw: Any, gpu_enabled: bool) -> list[Host]:
        defaults = self._mapping(defaults_raw, "defaults", _HOST_SETTINGS)
        if raw is None or (isinstance(raw, Mapping) and not raw):
            self.problems.add("hosts", "no hosts defined (add at least one under hosts:)")
            return []
        if not isinstance(raw, Mapping):
            self.problems.add("hosts", f"must be a mapping of host names, not {_type_name(raw)}")
            return []
        hosts = []
        for name, node in raw.items():
            path = _join("hosts", str(name))
            if not isinstance(name, str) or not _DNS_LABEL.fullmatch(name):
                self.problems.add(path, "invalid host name (lowercase letters, digits and -, "
                                  "at most 63, not starting or ending with -)")  # fmt: skip
                continue
            node = self._mapping(node, path, _HOST_SETTINGS + _HOST_ONLY)
            host = self._host(name, _Layers([(node, path), (defaults, "defaults")]), gpu_enabled)
            if host is not None:
                hosts.append(host)
        return hosts

    def _host(self, name: str, layers: _Layers, gpu_enabled: bool) -> Host | None:
        def get(key: str, default: Any = None) -> tuple[Any, str]:
            found = layers.get(key)
            return found if found is not None else (default, _join(f"hosts.{name}", key))

        port_value, port_path = get("ssh_port")
        if port_value is None:
            self.problems.add(port_path, "missing (the host port for SSH, e.g. 4432)")
            return None
        limits = self._resources(layers, "limits")
        reservations = self._resources(layers, "reservations")
        self._check_reservations(name, limits, reservations)
        shm_value, shm_path = get("shm_size")
        host = Host(
            name=name,
            hostname=self._str(get("hostname", name)[0], get("hostname")[1], _DNS_LABEL,
                               "a DNS label: lowercase letters, digits and -") or name,
            ssh_port=self._int(port_value, port_path, 1, 65535, "a TCP port") or 0,
            bind_address=self._address(*get("bind_address", "127.0.0.1")),
            limits=limits,
            reservations=reservations,
            gpus=self._gpus(get("gpus", 0), get("gpu_capabilities", ["gpu"]), gpu_enabled),
            volumes=self._volumes(*get("volumes", [])),
            environment=self._environment(layers, limits),
            restart=self._restart(*get("restart", "unless-stopped")),
            root_login=self._bool(*get("root_login", False)) or False,
            password_auth=self._bool(*get("password_auth", True)) is not False,
            authorized_keys=self._keys(*get("authorized_keys", [])),
            password_env=self._password_env(name, layers),
            docker_socket=self._bool(*get("docker_socket", False)) or False,
            privileged=self._bool(*get("privileged", False)) or False,
            shm_size=self._shm(shm_value, shm_path, limits),
            ulimits=self._ulimits(layers),
            devices=self._devices(*get("devices", [])),
            cap_add=self._cap_add(*get("cap_add", [])),
            ipc=self._ipc(*get("ipc")),
            cpuset=self._cpuset(*get("cpuset")),
        )  # fmt: skip
        if not host.password_auth and not host.authorized_keys:
            self.problems.add(get("password_auth")[1], "password_auth is false but no "
                              "authorized_keys are given: nobody could log in")  # fmt: skip
        return host

    def _resources(self, layers: _Layers, key: str) -> Resources:
        values: dict[str, Any] = {}
        for sub, value, path in layers.merged(key, self.problems):
            if sub not in _RESOURCE_KEYS:
                _check_keys({sub: value}, _RESOURCE_KEYS, path.rsplit(".", 1)[0], self.problems)
            elif sub == "cpus":
                values["cpus"] = self._cpus(value, path)
            else:
                values["memory"] = self._size(value, path)
                if key == "limits" and values["memory"] and values["memory"].bytes < MIN_MEMORY_LIMIT:
                    self.problems.add(path, f"{value!r} is below Docker's smallest memory limit, 6m "
                                      "(a size without a unit is bytes: 512 means 512b; use e.g. 512m)")  # fmt: skip
        return Resources(**values)

    def _check_reservations(self, name: str, limits: Resources, reservations: Resources) -> None:
        path = f"hosts.{name}.reservations"
        if limits.cpus and reservations.cpus and reservations.cpus > limits.cpus:
            self.problems.add(f"{path}.cpus", f"{reservations.cpus:g} is above the limit "
                              f"{limits.cpus:g} (a reservation must fit within the limit)")  # fmt: skip
        if limits.memory and reservations.memory and reservations.memory.bytes > limits.memory.bytes:
            self.problems.add(f"{path}.memory", f"{reservations.memory.text} is above the limit "
                              f"{limits.memory.text} (a reservation must fit within the limit)")  # fmt: skip

    def _address(self, value: Any, path: str) -> str:
        text = self._str(value, path)
        try:
            address = str(ipaddress.ip_address(text or ""))
            if "%" in address:  # a scope id is free text, e.g. "::1%]:9:22"
                raise ValueError(address)
            return address
        except ValueError:
            self.problems.add(path, f"{text!r} is not an IP address (use 0.0.0.0 for every "
                              "interface or 127.0.0.1 for this machine only)")  # fmt: skip
            return "127.0.0.1"

    def _gpus(self, gpus: tuple[Any, str], caps: tuple[Any, str], enabled: bool) -> Gpus:
        value, path = gpus
        capabilities = self._capabilities(*caps)
        if value in (None, 0, "none", False):
            return Gpus(count=0, capabilities=capabilities)
        if value == "all":
            count: int | str = "all"
            ids: tuple[str, ...] = ()
        elif isinstance(value, list):
            ids = tuple(self._gpu_id(item, _join(path, i)) for i, item in enumerate(value))
            if len(set(ids)) != len(ids):
                self.problems.add(path, "lists a GPU id twice")
            count = 0
        else:
            count = self._int(value, path, 0, 64, "a GPU count (or all, or a list of ids)") or 0
            ids = ()
        if not enabled:
            return Gpus(count=0, capabilities=capabilities)
        return Gpus(count=count, device_ids=ids, capabilities=capabilities)

    def _gpu_id(self, value: Any, path: str) -> str:
        text = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
        if not ((text.isascii() and text.isdigit()) or _GPU_UUID.fullmatch(text)):
            self.problems.add(path, f"{value!r} is not a GPU id (use an index like 0 or a "
                              "UUID like GPU-6f2b...)")  # fmt: skip
        return text

    def _capabilities(self, value: Any, path: str) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else self._list(value, path)
        caps = []
        for i, item in enumerate(items):
            cap = str(item).strip()
            if cap not in GPU_CAPABILITIES:
                self.problems.add(_join(path, i), f"{item!r} is not a GPU capability "
                                  f"(use {', '.join(GPU_CAPABILITIES)})")  # fmt: skip
            else:
                caps.append(cap)
        return tuple(caps) or ("gpu",)

    def _volumes(self, value: Any, path: str) -> tuple[Volume, ...]:
        volumes = []
        for i, item in enumerate(self._list(value, path)):
            volume = self._volume(item, _join(path, i))
            if volume is not None:
                volumes.append(volume)
        targets = [v.target for v in volumes]
        if len(set(targets)) != len(targets):
            self.problems.add(path, "mounts two volumes on the same container path")
        return tuple(volumes)

    def _volume(self, item: Any, path: str) -> Volume | None:
        if isinstance(item, str):
            parts = item.split(":")
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
                self.problems.add(path, f"{item!r} is not a volume (use NAME:/path, ./dir:/path "
                                  "or /dir:/path, optionally :ro)")  # fmt: skip
                return None
            source, target = parts[0], parts[1]
            read_only = len(parts) == 3 and parts[2] == "ro"
        elif isinstance(item, Mapping):
            _check_keys(item, ("source", "target", "read_only"), path, self.problems)
            source, target = str(item.get("source", "")), str(item.get("target", ""))
            read_only = bool(self._bool(item.get("read_only", False), _join(path, "read_only")))
        else:
            self.problems.add(path, f"must be a string or a mapping, not {_type_name(item)}")
            return None
        if not target.startswith("/") or "/../" in f"{target}/" or ":" in target or not target.isprintable():
            self.problems.add(path, f"{target!r} is not an absolute container path (write it as "
                              "SOURCE:/path/in/the/host, e.g. data:/opt)")  # fmt: skip
            return None
        if source.startswith(("/", ".", "~")):
            host_path = self._existing(source, Path.exists)
            if host_path is None:
                self.problems.add(path, f"bind source {source!r} does not exist "
                                  "(create it, or use a named volume)")  # fmt: skip
                return None
            if ":" in str(host_path) or not str(host_path).isprintable():
                self.problems.add(path, f"bind source {str(host_path)!r} cannot be mounted (it holds "
                                  "':' or control characters)")  # fmt: skip
                return None
            return Volume("bind", str(host_path), target, read_only)
        if not _VOLUME_NAME.fullmatch(source):
            self.problems.add(path, f"{source!r} is not a volume name (letters, digits, _ . -) "
                              "nor a path (start host paths with / or ./)")  # fmt: skip
            return None
        return Volume("volume", source, target, read_only)

    def _environment(self, layers: _Layers, limits: Resources) -> tuple[tuple[str, str], ...]:
        env: dict[str, str] = {}
        for key, value, path in layers.merged("environment", self.problems):
            if not _ENV_KEY.fullmatch(key):
                self.problems.add(path, "is not a variable name (letters, digits and _)")
            elif isinstance(value, (Mapping, list)) or value is None:
                self.problems.add(path, f"must be a string or a number, not {_type_name(value)}")
            elif any(char in str(value) for char in "\x00\n\r"):
                self.problems.add(path, "must be one line (no newline or NUL characters)")
            else:
                env[key] = _env_text(value)
        if limits.cpus:
            threads = str(max(1, int(limits.cpus)))
            for variable in THREAD_VARIABLES:
                env.setdefault(variable, threads)
        return tuple(sorted(env.items()))

    def _password_env(self, host: str, layers: _Layers) -> tuple[tuple[str, str], ...]:
        pairs = []
        for user, variable, path in layers.merged("password_env", self.problems):
            if not _USER.fullmatch(user):
                self.problems.add(path, "is not an account name")
            elif not isinstance(variable, str) or not _ENV_KEY.fullmatch(variable):
                self.problems.add(path, f"{variable!r} is not an environment variable name")
            else:
                pairs.append((user, variable))
                self._password_env_paths[(host, user)] = path
        return tuple(sorted(pairs))

    def _check_password_accounts(self, hosts: list[Host], image: Image | None) -> None:
        """A password_env entry for an account the host does not have would be silently unused."""
        if image is None:
            return
        reported = set()
        for host in hosts:
            accounts = (image.user, *host.accounts)
            for user, _variable in host.password_env:
                path = self._password_env_paths[(host.name, user)]
                if user not in accounts and path not in reported:
                    reported.add(path)
                    root = ", root only with root_login: true" if user == "root" else ""
                    self.problems.add(path, f"host {host.name} has no account {user!r} that gets a password "
                                      f"(use {' or '.join(accounts)}{root})")  # fmt: skip

    def _restart(self, value: Any, path: str) -> str:
        text = "no" if value is False else str(value)
        policy, _, retries = text.partition(":")
        numeric = retries.isascii() and retries.isdigit()
        if policy not in RESTART_POLICIES or (retries and (policy != "on-failure" or not numeric)):
            self.problems.add(path, f"{value!r} is not a restart policy "
                              "(use no, always, unless-stopped or on-failure[:N])")  # fmt: skip
            return "unless-stopped"
        return text

    def _keys(self, value: Any, path: str) -> tuple[str, ...]:
        keys: list[str] = []
        for i, item in enumerate(self._list(value, path)):
            text = self._str(item, _join(path, i))
            if text is None:
                continue
            text = text.strip()
            if not _SSH_KEY.fullmatch(text):
                file = self._existing_file(text, _join(path, i))
                if file is None:
                    continue
                text = file.read_text(encoding="utf-8", errors="replace").strip()
                if not all(_SSH_KEY.fullmatch(line) for line in text.splitlines() if line.strip()):
                    self.problems.add(_join(path, i), f"{item!r} does not hold public SSH keys")
                    continue
            keys.extend(line.strip() for line in text.splitlines() if line.strip())
        return tuple(keys)

    def _shm(self, value: Any, path: str, limits: Resources) -> Size:
        if value is None:
            default = Size(DEFAULT_SHM_SIZE, 2 * 1024**3)
            if limits.memory and limits.memory.bytes < 2 * default.bytes:
                half = limits.memory.bytes // 2 // 1024**2
                return Size(f"{half}m", half * 1024**2)
            return default
        size = self._size(value, path)
        if size and limits.memory and size.bytes > limits.memory.bytes:
            self.problems.add(path, f"{size.text} is above the memory limit {limits.memory.text}"
                              " (shared memory counts against it)")  # fmt: skip
        return size or Size(DEFAULT_SHM_SIZE, 2 * 1024**3)

    def _ulimits(self, layers: _Layers) -> tuple[Ulimit, ...]:
        ulimits = []
        for name, value, path in layers.merged("ulimits", self.problems):
            if name not in ULIMIT_NAMES:
                self.problems.add(path, f"unknown ulimit (use {', '.join(ULIMIT_NAMES)})")
                continue
            if isinstance(value, Mapping):
                _check_keys(value, ("soft", "hard"), path, self.problems)
                soft, hard = value.get("soft"), value.get("hard")
            else:
                soft = hard = value
            soft_n = self._int(soft, path, -1, 2**62, "a limit (-1 for unlimited)")
            hard_n = self._int(hard, path, -1, 2**62, "a limit (-1 for unlimited)")
            if soft_n is not None and hard_n is not None:
                if hard_n != -1 and (soft_n == -1 or soft_n > hard_n):
                    self.problems.add(path, "soft limit is above the hard limit")
                ulimits.append(Ulimit(name, soft_n, hard_n))
        return tuple(sorted(ulimits, key=lambda u: u.name))

    def _devices(self, value: Any, path: str) -> tuple[str, ...]:
        devices = []
        for i, item in enumerate(self._list(value, path)):
            text = self._str(item, _join(path, i))
            parts = (text or "").split(":")
            ok = (
                text is not None
                and 1 <= len(parts) <= 3
                and all(p.startswith("/dev/") and ".." not in p for p in parts[:2])
                and (len(parts) < 3 or re.fullmatch(r"[rwm]{1,3}", parts[2]) is not None)
            )
            if not ok:
                self.problems.add(_join(path, i), f"{item!r} is not a device (use /dev/ttyUSB0 "
                                  "or /dev/host:/dev/container[:rwm])")  # fmt: skip
            else:
                devices.append(text or "")
        return tuple(devices)

    def _cap_add(self, value: Any, path: str) -> tuple[str, ...]:
        caps = []
        for i, item in enumerate(self._list(value, path)):
            name = str(item).upper().removeprefix("CAP_")
            if name not in CAPABILITIES:
                self.problems.add(_join(path, i), f"{item!r} is not a Linux capability "
                                  "(e.g. SYS_PTRACE, IPC_LOCK)")  # fmt: skip
            else:
                caps.append(name)
        return tuple(caps)

    def _ipc(self, value: Any, path: str) -> str | None:
        if value is None:
            return None
        if value not in ("host", "private", "shareable"):
            self.problems.add(path, f"{value!r} is not supported (use host, private or shareable)")
            return None
        return str(value)

    def _cpuset(self, value: Any, path: str) -> str | None:
        if value is None:
            return None
        text = str(value).replace(" ", "")
        if not _CPUSET.fullmatch(text):
            self.problems.add(path, f"{value!r} is not a CPU list (e.g. 0-3 or 0,2,4)")
            return None
        cores = os.cpu_count() or 1
        highest = max(int(n) for n in re.split(r"[-,]", text))
        if highest >= cores:
            self.problems.add(path, f"CPU {highest} does not exist here (this machine has CPUs "
                              f"0-{cores - 1})")  # fmt: skip
        return text

    def _swarm_checks(self, hosts: list[Host], data: Mapping) -> None:
        """What a swarm service cannot do, named where the spec asks for it."""
        for host in hosts:
            raw = data["hosts"][host.name] or {}
            defaults = data.get("defaults") or {}
            for setting in SWARM_UNSUPPORTED:
                value = getattr(host, setting)
                if value not in (None, (), False):
                    where = f"hosts.{host.name}" if setting in raw else "defaults"
                    self.problems.add(f"{where}.{setting}", "not supported by swarm services (use engine: compose)")
            if host.gpus.device_ids or host.gpus.count == "all":
                where = f"hosts.{host.name}" if "gpus" in raw or "gpus" not in defaults else "defaults"
                self.problems.add(f"{where}.gpus", "swarm hands out GPUs by count only (NVIDIA-GPU generic "
                                  "resources): use a number")  # fmt: skip
            if host.bind_address not in ("0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
                self.notes.append(f"hosts.{host.name}.bind_address: swarm publishes ports on every interface "
                                  f"of the node, not only {host.bind_address}")  # fmt: skip

    def _cross_checks(self, hosts: list[Host]) -> None:
        """Checks across hosts: ports and hostnames unique; warnings on shared GPU ids."""
        for i, host in enumerate(hosts):
            for other in hosts[:i]:
                if other.ssh_port == host.ssh_port and _overlap(other.bind_address, host.bind_address):
                    self.problems.add(f"hosts.{host.name}.ssh_port", f"{host.ssh_port} is already "
                                      f"used by host {other.name!r} (each host needs its own)")  # fmt: skip
                if other.hostname == host.hostname:
                    self.problems.add(f"hosts.{host.name}.hostname", f"{host.hostname!r} is "
                                      f"already the hostname of {other.name!r}")  # fmt: skip
        pinned: dict[str, str] = {}
        for host in hosts:
            for gpu in host.gpus.device_ids:
                if gpu in pinned:
                    self.warnings.append(f"hosts.{host.name}.gpus: GPU {gpu} is also pinned to "
                                         f"host {pinned[gpu]!r}; they will share it")  # fmt: skip
                pinned.setdefault(gpu, host.name)
        reserving = [host.name for host in hosts if host.reservations.cpus]
        if reserving:
            self.notes.append(f"reservations.cpus (hosts {', '.join(reserving)}): a single "
                                 "Docker engine enforces CPU limits but not CPU reservations; "
                                 "set cpuset to pin cores for hard isolation")  # fmt: skip


def _overlap(first: str, second: str) -> bool:
    """Whether two bind addresses collide on one port (a wildcard collides with everything)."""
    wildcards = ("0.0.0.0", "::")  # noqa: S104 - comparing, not binding
    return first == second or first in wildcards or second in wildcards


def _env_text(value: Any) -> str:
    """YAML scalars as the text a container sees (true -> 'true', not 'True')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
