"""A host's settings, each declared once, on the model itself: the ``Host`` dataclass, and the
``Spec`` holding its hosts.

Modelled on mkdocs' ``config/defaults.py``, where each setting is a typed class attribute: a
setting of ``Host`` is one attribute, declared with ``setting(option, doc, default, model=...)``
(its option type, one-line doc and default as written in ``devbox.yaml``, and how the value read
becomes the attribute). ``devbox.spec.fields`` derives the settings table from these
declarations, in their order (the ``defaults`` and host key lists, the JSON Schema and the
README's "Every setting"); ``devbox.spec.hosts`` builds a Host from them. ``model``:

- a plain converter (``same``, ``tuple``, ...) of the one value read: ``hosts.py`` applies it
  generically, and a setting left out (or not readable, already reported) keeps the attribute's
  default, ``model`` applied to the setting's default;
- ``None``: built by a rule in ``devbox.spec.hosts`` (``RULES``), from this and other settings
  (GPUs and their capabilities, variables that follow the CPU limit, ...).

A new simple setting is one attribute here plus its renderers (and each engine's claim).
Attributes that are not settings (``name``, ``origins``) are plain dataclass fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from devbox.idle import IdlePolicy
from devbox.spec.idle_setting import IdleSetting
from devbox.spec.model import (
    DEFAULT_LOGGING,
    DEFAULT_PIDS_LIMIT,
    DEFAULT_SHM,
    Gpus,
    Image,
    Logging,
    Network,
    Resources,
    Size,
    Ulimit,
    Volume,
)
from devbox.spec.options import (
    ABSENT,
    Choice,
    Cpus,
    Field,
    Flag,
    Integer,
    ListOf,
    MapOf,
    Nullable,
    Option,
    Table,
    Text,
    any_case,
    js_pattern,
)
from devbox.spec.options import Size as SizeOption
from devbox.spec.values import (
    DNS_LABEL,
    ENV_KEY,
    USER_NAME,
    Address,
    CpuSet,
    Device,
    EnvName,
    EnvValue,
    GpuId,
    GpuRequest,
    MemoryLimit,
    PidsLimit,
    PublicKeys,
    RestartPolicy,
    UlimitValue,
    VolumeSpec,
)

GPU_CAPABILITIES = ("gpu", "compute", "utility", "graphics", "video", "display", "compat32")
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
MISSING_PORT = "missing (the host port for SSH, e.g. 4432)"
# A swarm node's hostname or ID, a node label's key and value: what a placement constraint
# (node.hostname==X, node.labels.K==V) can hold without another operator sneaking in.
NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
NODE_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
NODE_LABEL_VALUE = re.compile(r"^[A-Za-z0-9._/:-]{1,253}$")

RESOURCES = (
    Field("cpus", Cpus(), "CPU cores, fractions allowed (8, 0.5)."),
    Field("memory", SizeOption(), "Memory: a whole number with a unit b, k, m or g (16g, 16000M)."),
)
LIMITS = Table([RESOURCES[0], Field("memory", MemoryLimit(), RESOURCES[1].doc)], merges=True)
RESERVATIONS = Table(RESOURCES, merges=True)
LOG_DRIVERS = ("local", "json-file")  # the drivers that keep what `docker logs` reads, and rotate
LOGGING = Table([
    Field("driver", Choice(LOG_DRIVERS, "{value!r} is not supported (use local or json-file: both rotate, and "
                           "`devbox logs` reads them)"), "local (compressed) or json-file.", DEFAULT_LOGGING.driver),
    Field("max_size", SizeOption(), "The size at which a log file is rotated.", DEFAULT_LOGGING.max_size.text),
    Field("max_files", Integer(1, 100, "a number of files"), "How many log files are kept.",
          DEFAULT_LOGGING.max_files),
], merges=True)  # fmt: skip


def same(value: Any) -> Any:
    """The value as read: most settings' model."""
    return value


def items(value: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A mapping setting as sorted (key, value) pairs: hashable, compared whatever the order."""
    return tuple(sorted(value.items()))


def to_resources(value: Mapping[str, Any]) -> Resources:
    return Resources(**value)


def to_ulimits(value: Mapping[str, tuple[int, int]]) -> tuple[Ulimit, ...]:
    return tuple(Ulimit(key, *pair) for key, pair in sorted(value.items()))


def to_logging(value: Mapping[str, Any]) -> Logging:
    return Logging(**{key: item for key, item in value.items() if item is not None})


def public_keys(value: Iterable[Iterable[str]]) -> tuple[str, ...]:
    """The keys of every entry (a key, or a file of keys), in order."""
    return tuple(key for keys in value for key in keys)


@dataclass(frozen=True)
class Setting:
    """One setting's declaration (see ``setting``): what ``devbox.yaml`` may say, and how the
    model gets it. ``also``: settings a rule folds into the same attribute (gpu_capabilities)."""

    option: Option
    doc: str
    default: Any = ABSENT
    missing: str | None = None
    model: Callable[[Any], Any] | None = same
    host_only: bool = False
    also: tuple[Field, ...] = ()

    def fields(self, name: str) -> tuple[Field, ...]:
        """The table's entries for the attribute ``name``: its own, then those in ``also``."""
        return (Field(name, self.option, self.doc, self.default, self.missing), *self.also)


_DERIVED: Any = object()


def setting(option: Option, doc: str, default: Any = ABSENT, *, model: Callable[[Any], Any] | None = same,
            value: Any = _DERIVED, host_only: bool = False, missing: str | None = None,
            also: tuple[Field, ...] = ()) -> Any:  # fmt: skip
    """A ``Host`` attribute that is a setting: its option type, doc and default as written in
    ``devbox.yaml`` (``default``: ABSENT when leaving it out means "not set"), ``model`` (how
    the value read becomes the attribute; None: a rule of ``devbox.spec.hosts``), ``value``
    (the attribute's default; by default ``model(default)``, or None when there is none; a rule
    with no value is required), ``host_only`` (not allowed in ``defaults``), ``missing`` (the
    problem when it must be given and is not) and ``also`` (more keys the rule reads)."""
    declared = Setting(option, doc, default, missing, model, host_only, also)
    if value is _DERIVED:
        if model is None:
            return field(metadata={"setting": declared})
        value = None if default is ABSENT or default is None else model(default)
    return field(default=value, metadata={"setting": declared})


@dataclass(frozen=True)
class Host:
    """One development host: a container with sshd, its own limits, GPUs, port and volumes.

    ``origins`` records where each setting was written ("hosts.NAME" or "defaults"), so a rule
    checked on the validated spec (an engine's, say) can name the line the user must change. It
    is bookkeeping, not configuration: it takes no part in comparing or hashing hosts.
    """

    name: str
    # Settings only a host itself can have (the table lists them last, in this order).
    ssh_port: int = setting(Integer(1, 65535, "a TCP port"), "The port on this machine for the host's SSH.",
                            missing=MISSING_PORT, model=None, host_only=True)  # fmt: skip
    hostname: str = setting(Text(DNS_LABEL, "a DNS label: lowercase letters, digits and -"),
                            "The host's hostname (default: its name).", model=None, host_only=True)  # fmt: skip
    # Settings a host takes from itself first, then from defaults (mappings merge key by key).
    limits: Resources = setting(LIMITS, "CPU and memory the host may use at most.", model=to_resources,
                                value=Resources())  # fmt: skip
    reservations: Resources = setting(RESERVATIONS, "CPU and memory set aside for the host (within its limits).",
                                      model=to_resources, value=Resources())  # fmt: skip
    gpus: Gpus = setting(
        GpuRequest(ListOf(GpuId(), unique=(str, "lists a GPU id twice"))),
        "GPUs: 0, a count of the host's own, all, or a list of indexes or UUIDs (GPU-..., MIG-...).", 0,
        model=None, value=Gpus(),
        also=(Field("gpu_capabilities", ListOf(Choice(GPU_CAPABILITIES, "{value!r} is not a GPU capability (use "
                                                      f"{', '.join(GPU_CAPABILITIES)})",
                                                      normalize=lambda v: str(v).strip()), split=","),
                    "NVIDIA driver capabilities, a list or comma-separated.", ["gpu"]),),
    )  # fmt: skip
    gpu_share: bool = setting(Flag(), "May use GPUs other hosts hold (a light notebook host); holds none itself.",
                              False)  # fmt: skip
    bind_address: str = setting(Address(), "Where the SSH port listens: 127.0.0.1 (this machine) or 0.0.0.0.",
                                "127.0.0.1")  # fmt: skip
    volumes: tuple[Volume, ...] = setting(
        ListOf(VolumeSpec(), unique=(lambda v: v.target, "mounts two volumes on the same container path")),
        "Named volumes (NAME:/path) or bind mounts (./dir:/path), optionally :ro. A new named volume is the "
        "login user's (its folder, where the image seeded it); {source, target, owner: root} leaves it root's.", [],
        model=tuple)  # fmt: skip
    environment: tuple[tuple[str, str], ...] = setting(
        MapOf(ENV_KEY.fullmatch, "is not a variable name (letters, digits and _)", {"pattern": js_pattern(ENV_KEY)},
              EnvValue()),
        "Environment variables of the host and its SSH logins.", model=None, value=())  # fmt: skip
    restart: str = setting(RestartPolicy(), "no, always, unless-stopped or on-failure[:N].", "unless-stopped")
    root_login: bool = setting(Flag(), "Allow root over SSH, with its own password.", False)
    password_auth: bool = setting(Flag(), "Allow password logins (false: keys only).", True)
    authorized_keys: tuple[str, ...] = setting(ListOf(PublicKeys()), "Public SSH keys, or files of them relative "
                                               "to the spec.", [], model=public_keys)  # fmt: skip
    password_env: tuple[tuple[str, str], ...] = setting(
        MapOf(USER_NAME.fullmatch, "is not an account name", {"pattern": js_pattern(USER_NAME)}, EnvName()),
        "Take an account's password from an environment variable: {account: VARIABLE}.", model=items,
        value=())  # fmt: skip
    docker_socket: bool = setting(Flag(), "Mount the engine's socket: root on the machine.", False)
    privileged: bool = setting(Flag(), "Lift every restriction on the container.", False)
    shm_size: Size = setting(Nullable(SizeOption()), "Shared memory, /dev/shm (default 2g, or half the memory "
                             "limit below 4g).", model=None, value=DEFAULT_SHM)  # fmt: skip
    ulimits: tuple[Ulimit, ...] = setting(
        MapOf(ULIMIT_NAMES.__contains__, f"unknown ulimit (use {', '.join(ULIMIT_NAMES)})",
              {"enum": list(ULIMIT_NAMES)}, UlimitValue()),
        "Process limits, e.g. {memlock: -1, nofile: {soft: 1024, hard: 65536}}.", model=to_ulimits,
        value=())  # fmt: skip
    devices: tuple[str, ...] = setting(ListOf(Device()), "Devices to pass through: /dev/x or "
                                       "/dev/host:/dev/container[:rwm].", [], model=tuple)  # fmt: skip
    cap_add: tuple[str, ...] = setting(
        ListOf(Choice(CAPABILITIES, "{value!r} is not a Linux capability (e.g. SYS_PTRACE, IPC_LOCK)",
                      normalize=lambda v: str(v).upper().removeprefix("CAP_"), spelled=any_case(CAPABILITIES, "CAP_"))),
        "Linux capabilities to add, e.g. SYS_PTRACE.", [], model=tuple)  # fmt: skip
    ipc: str | None = setting(Nullable(Choice(("host", "private", "shareable"),
                                              "{value!r} is not supported (use host, private or shareable)")),
                              "IPC namespace: host, private or shareable.")  # fmt: skip
    cpuset: str | None = setting(Nullable(CpuSet()), "Pinned CPUs, e.g. 0-3 or 0,2,4: hard CPU isolation.")
    home_volume: bool = setting(Flag(), "Keep the user's home in a named volume of its own (HOST-home): it "
                                "survives recreation and down, only down --volumes deletes it.", True)  # fmt: skip
    node: str | None = setting(Nullable(Text(NODE_NAME, "a swarm node's hostname or ID")),
                               "Swarm: the node (hostname or ID) the host runs on; its volumes stay "
                               "there.")  # fmt: skip
    node_labels: tuple[tuple[str, str], ...] = setting(
        MapOf(NODE_LABEL_KEY.fullmatch, "is not a node label (letters, digits, . _ -)",
              {"pattern": js_pattern(NODE_LABEL_KEY)}, Text(NODE_LABEL_VALUE, "letters, digits, . _ / : -")),
        "Swarm: run only on nodes with these labels, e.g. {gpu: a100}.", model=items, value=())  # fmt: skip
    idle: IdlePolicy | None = setting(IdleSetting(), "Stop the host when idle: {after: 24h, gpu_below: 5, "
                                      "cpu_below: 10, warn: 1h} (off unless set; see Idle hosts).")  # fmt: skip
    pids_limit: int = setting(PidsLimit(), "Processes and threads the host may have at once (-1 or unlimited: "
                              "no limit), so a fork bomb in one host cannot starve the others.",
                              DEFAULT_PIDS_LIMIT)  # fmt: skip
    disk: Size | None = setting(Nullable(SizeOption()), "The host's disk budget, e.g. 200g: its home, named "
                                "volumes and container layer together; status shows use against it, up and "
                                "doctor warn above 90 % (see Neighbours).")  # fmt: skip
    logging: Logging = setting(LOGGING, "How much of the host's output the engine keeps: rotated at max_size, "
                               "max_files kept.", model=to_logging, value=DEFAULT_LOGGING)  # fmt: skip
    origins: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    @property
    def accounts(self) -> tuple[str, ...]:
        """Accounts whose passwords devbox manages: root only when root login is allowed."""
        return ("root",) if self.root_login else ()

    def origin(self, setting: str) -> str:
        """Where ``setting`` (e.g. ``gpus``, or ``password_env.developer`` for one entry of a
        mapping) was written: ``hosts.NAME`` or ``defaults``; ``hosts.NAME`` when it was not
        written at all, the place to add it."""
        return dict(self.origins).get(setting, f"hosts.{self.name}")


def host_settings() -> Iterator[tuple[str, Setting, Any]]:
    """Each setting attribute of ``Host`` in declaration order: (name, declaration, its default;
    ``dataclasses.MISSING`` for one that has to be given, which a rule builds)."""
    for item in fields(Host):
        declared = item.metadata.get("setting")
        if declared is not None:
            yield item.name, declared, item.default


def host_fields(*, host_only: bool) -> tuple[Field, ...]:
    """The settings table's entries of a host (``host_only``: those ``defaults`` cannot have)."""
    return tuple(entry for name, declared, _ in host_settings() if declared.host_only == host_only
                 for entry in declared.fields(name))  # fmt: skip


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
