"""Every setting of devbox.yaml, declared once: its key, option type, one-line doc and default.

Modelled on mkdocs' ``config/defaults.py``. The key lists (and so the "known keys" and "did you
mean" hints), the defaults, the JSON Schema and its descriptions all come from these tables;
``devbox.spec.load`` reads a spec with them and builds the model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from devbox.spec.idle_setting import IdleSetting
from devbox.spec.model import DEFAULT_BASE_IMAGE, DEFAULT_LOGGING, DEFAULT_PACKAGES, DEFAULT_PIDS_LIMIT
from devbox.spec.options import (
    Choice,
    Cpus,
    Field,
    Flag,
    Integer,
    ListOf,
    MapOf,
    Nullable,
    Option,
    Reading,
    Schema,
    Size,
    Table,
    Text,
    any_case,
    js_pattern,
    type_name,
)
from devbox.spec.values import (
    DNS_LABEL,
    ENV_KEY,
    SECRET_NAME,
    USER_NAME,
    VOLUME_NAME,
    AccountId,
    Address,
    BuildSecretSource,
    CpuSet,
    Device,
    EnvName,
    EnvValue,
    GpuId,
    GpuRequest,
    ImageRef,
    ImageUser,
    MemoryLimit,
    OneLine,
    PidsLimit,
    PublicKeys,
    RestartPolicy,
    Subnet,
    TextFile,
    UlimitValue,
    Version,
    VolumeSpec,
)

ENGINES = ("compose", "swarm")
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
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# name[=[epoch:]version] as Debian policy spells them; no '~' after '=' or ':', where bash (the
# RUN shell when docker_cli is on) would expand it like a home directory
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=([0-9]+:)?[A-Za-z0-9][A-Za-z0-9.+~-]*)?$")
TIMEZONE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")
IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
MISSING_PORT = "missing (the host port for SSH, e.g. 4432)"
# A swarm node's hostname or ID, a node label's key and value: what a placement constraint
# (node.hostname==X, node.labels.K==V) can hold without another operator sneaking in.
NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
NODE_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
NODE_LABEL_VALUE = re.compile(r"^[A-Za-z0-9._/:-]{1,253}$")
# HOST[:PORT][/PATH]: where `up` pushes the image on a swarm (a repository path below it is devbox's)
REGISTRY = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")

NETWORK = Table([
    Field("name", Text(VOLUME_NAME, "letters, digits, _ . -"), "The network's name.", "net"),
    Field("driver", Choice(("bridge",), "{value!r} is not supported (use bridge)"), "Only bridge.", "bridge"),
    Field("subnet", Nullable(Subnet()), "Its IP range in CIDR form, e.g. 172.28.0.0/16 (default: Docker picks)."),
])  # fmt: skip

IMAGE = Table([
    Field("base", ImageRef(IMAGE_REF, "an image reference such as nvidia/cuda:12.6.3-cudnn-devel-ubuntu22.04"),
          "Base image, pinned to a tag (latest is refused).", DEFAULT_BASE_IMAGE),
    Field("timezone", Text(TIMEZONE, "a tz database name such as UTC or Europe/Berlin"),
          "tz database name.", "UTC"),
    Field("packages", ListOf(Text(PACKAGE, "a Debian package name")),
          "apt packages, name or name=version.", list(DEFAULT_PACKAGES)),
    Field("pip_requirements", Nullable(TextFile()), "A requirements.txt to pip install, relative to the spec."),
    Field("shell", Choice(("zsh", "bash"), "{value!r} is not supported (use zsh or bash)", fallback="zsh"),
          "The user's login shell.", "zsh"),
    Field("user", ImageUser(USER_NAME, "lowercase letters, digits, _ and -, at most 32"),
          "The login user, with sudo (never root).", "developer"),
    Field("uid", AccountId("SUDO_UID", os.getuid), "The user's UID, or auto for yours (for bind mounts)."),
    Field("gid", AccountId("SUDO_GID", os.getgid), "The user's GID, or auto for yours."),
    Field("docker_cli", Flag(), "Install the docker CLI (use it with docker_socket).", False),
    Field("extra_lines", ListOf(OneLine()), "Verbatim Dockerfile lines, an escape hatch.", []),
    Field("registry", Nullable(Text(REGISTRY, "HOST:PORT/PATH, e.g. registry.lab:5000/devbox")),
          "Swarm: a registry (HOST:PORT/PATH) up pushes the image to, so every node runs it by digest."),
    Field("build_secrets", MapOf(SECRET_NAME.fullmatch, "is not a secret name (letters, digits, _ and -)",
                                 {"pattern": js_pattern(SECRET_NAME)}, BuildSecretSource()),
          "Secrets only the build reads, never stored in the image: {NAME: {env: VARIABLE} or {file: PATH}, "
          "as: netrc, pip_config, pip_index_url, pip_extra_index_url, apt_source or known_hosts}."),
    Field("build_ssh", Flag(), "Lend the build your SSH agent (git+ssh:// requirements): no key on disk.", False),
])  # fmt: skip

RESOURCES = (
    Field("cpus", Cpus(), "CPU cores, fractions allowed (8, 0.5)."),
    Field("memory", Size(), "Memory: a whole number with a unit b, k, m or g (16g, 16000M)."),
)
LIMITS = Table([RESOURCES[0], Field("memory", MemoryLimit(), RESOURCES[1].doc)], merges=True)
RESERVATIONS = Table(RESOURCES, merges=True)
LOG_DRIVERS = ("local", "json-file")  # the drivers that keep what `docker logs` reads, and rotate
LOGGING = Table([
    Field("driver", Choice(LOG_DRIVERS, "{value!r} is not supported (use local or json-file: both rotate, and "
                           "`devbox logs` reads them)"), "local (compressed) or json-file.", DEFAULT_LOGGING.driver),
    Field("max_size", Size(), "The size at which a log file is rotated.", DEFAULT_LOGGING.max_size.text),
    Field("max_files", Integer(1, 100, "a number of files"), "How many log files are kept.",
          DEFAULT_LOGGING.max_files),
], merges=True)  # fmt: skip

# Settings a host takes from itself first, then from defaults (mappings merge key by key).
HOST_SETTINGS_FIELDS = (
    Field("limits", LIMITS, "CPU and memory the host may use at most."),
    Field("reservations", RESERVATIONS, "CPU and memory set aside for the host (within its limits)."),
    Field("gpus", GpuRequest(ListOf(GpuId(), unique=(str, "lists a GPU id twice"))),
          "GPUs: 0, a count of the host's own, all, or a list of indexes or UUIDs (GPU-..., MIG-...).", 0),
    Field("gpu_share", Flag(), "May use GPUs other hosts hold (a light notebook host); holds none itself.",
          False),
    Field("gpu_capabilities", ListOf(Choice(GPU_CAPABILITIES, "{value!r} is not a GPU capability (use "
                                            f"{', '.join(GPU_CAPABILITIES)})", normalize=lambda v: str(v).strip()),
                                     split=","),
          "NVIDIA driver capabilities, a list or comma-separated.", ["gpu"]),
    Field("bind_address", Address(), "Where the SSH port listens: 127.0.0.1 (this machine) or 0.0.0.0.",
          "127.0.0.1"),
    Field("volumes", ListOf(VolumeSpec(), unique=(lambda v: v.target, "mounts two volumes on the same container path")),
          "Named volumes (NAME:/path) or bind mounts (./dir:/path), optionally :ro.", []),
    Field("environment", MapOf(ENV_KEY.fullmatch, "is not a variable name (letters, digits and _)",
                               {"pattern": js_pattern(ENV_KEY)}, EnvValue()),
          "Environment variables of the host and its SSH logins."),
    Field("restart", RestartPolicy(), "no, always, unless-stopped or on-failure[:N].", "unless-stopped"),
    Field("root_login", Flag(), "Allow root over SSH, with its own password.", False),
    Field("password_auth", Flag(), "Allow password logins (false: keys only).", True),
    Field("authorized_keys", ListOf(PublicKeys()), "Public SSH keys, or files of them relative to the spec.", []),
    Field("password_env", MapOf(USER_NAME.fullmatch, "is not an account name",
                                {"pattern": js_pattern(USER_NAME)}, EnvName()),
          "Take an account's password from an environment variable: {account: VARIABLE}."),
    Field("docker_socket", Flag(), "Mount the engine's socket: root on the machine.", False),
    Field("privileged", Flag(), "Lift every restriction on the container.", False),
    Field("shm_size", Nullable(Size()), "Shared memory, /dev/shm (default 2g, or half the memory limit below 4g)."),
    Field("ulimits", MapOf(ULIMIT_NAMES.__contains__, f"unknown ulimit (use {', '.join(ULIMIT_NAMES)})",
                           {"enum": list(ULIMIT_NAMES)}, UlimitValue()),
          "Process limits, e.g. {memlock: -1, nofile: {soft: 1024, hard: 65536}}."),
    Field("devices", ListOf(Device()), "Devices to pass through: /dev/x or /dev/host:/dev/container[:rwm].", []),
    Field("cap_add", ListOf(Choice(CAPABILITIES, "{value!r} is not a Linux capability (e.g. SYS_PTRACE, IPC_LOCK)",
                                   normalize=lambda v: str(v).upper().removeprefix("CAP_"),
                                   spelled=any_case(CAPABILITIES, "CAP_"))),
          "Linux capabilities to add, e.g. SYS_PTRACE.", []),
    Field("ipc", Nullable(Choice(("host", "private", "shareable"),
                                 "{value!r} is not supported (use host, private or shareable)")),
          "IPC namespace: host, private or shareable."),
    Field("cpuset", Nullable(CpuSet()), "Pinned CPUs, e.g. 0-3 or 0,2,4: hard CPU isolation."),
    Field("home_volume", Flag(), "Keep the user's home in a named volume of its own (HOST-home): it survives "
          "recreation and down, only down --volumes deletes it.", True),
    Field("node", Nullable(Text(NODE_NAME, "a swarm node's hostname or ID")),
          "Swarm: the node (hostname or ID) the host runs on; its volumes stay there."),
    Field("node_labels", MapOf(NODE_LABEL_KEY.fullmatch, "is not a node label (letters, digits, . _ -)",
                               {"pattern": js_pattern(NODE_LABEL_KEY)}, Text(NODE_LABEL_VALUE,
                               "letters, digits, . _ / : -")),
          "Swarm: run only on nodes with these labels, e.g. {gpu: a100}."),
    Field("idle", IdleSetting(), "Stop the host when idle: {after: 24h, gpu_below: 5, cpu_below: 10, warn: 1h} "
          "(off unless set; see Idle hosts)."),
    Field("pids_limit", PidsLimit(), "Processes and threads the host may have at once (-1 or unlimited: no "
          "limit), so a fork bomb in one host cannot starve the others.", DEFAULT_PIDS_LIMIT),
    Field("disk", Nullable(Size()), "The host's disk budget, e.g. 200g: its home, named volumes and container "
          "layer together; status shows use against it, up and doctor warn above 90 % (see Neighbours)."),
    Field("logging", LOGGING, "How much of the host's output the engine keeps: rotated at max_size, "
          "max_files kept."),
)  # fmt: skip
# Settings only a host itself can have.
HOST_ONLY_FIELDS = (
    Field("ssh_port", Integer(1, 65535, "a TCP port"), "The port on this machine for the host's SSH.",
          missing=MISSING_PORT),
    Field("hostname", Text(DNS_LABEL, "a DNS label: lowercase letters, digits and -"),
          "The host's hostname (default: its name)."),
)


class Layer(Table):
    """Host settings as written in ``defaults`` or in one host: read as they are (unknown keys
    reported), since each host reads its settings from both layers (see devbox.spec.load)."""

    def read(self, value: Any, path: str, reading: Reading) -> Any:
        return self.node(value, path, reading)


class Hosts(Option):
    """The hosts: a mapping of host names (DNS labels) to their settings, read one by one."""

    def read(self, value: Any, path: str, reading: Reading) -> Mapping:
        if value is None or (isinstance(value, Mapping) and not value):
            reading.add(path, "no hosts defined (add at least one under hosts:)")
            return {}
        if not isinstance(value, Mapping):
            reading.add(path, f"must be a mapping of host names, not {type_name(value)}")
            return {}
        return value

    def schema(self) -> Schema:
        return {"type": "object", "minProperties": 1, "propertyNames": {"pattern": js_pattern(DNS_LABEL)},
                "additionalProperties": {**HOST.schema(), "type": "object"}}  # fmt: skip


DEFAULTS = Layer(HOST_SETTINGS_FIELDS)
HOST = Layer((*HOST_SETTINGS_FIELDS, *HOST_ONLY_FIELDS))
SPEC = Table([
    Field("version", Version(), "The spec format: 1.", 1),
    Field("project", Text(PROJECT_NAME, "lowercase letters, digits, - and _; starts with a letter or digit"),
          "Project name: names the containers, network and volumes.",
          missing="missing (name the project, e.g. project: gpu-lab)"),
    Field("engine", Choice(ENGINES, "{value!r} is not an engine (use compose or swarm)"),
          "compose (this machine) or swarm (services of an existing swarm).", "compose"),
    Field("network", NETWORK, "The one bridge network every host joins.", None),
    Field("image", IMAGE, "The one image every host runs, built once.", None),
    Field("gpu", Choice(("on", "off", True, False), "{value!r} is not a GPU switch (use on or off)"),
          "off: the same stack CPU-only, whatever the hosts ask (like --no-gpu).", "on"),
    Field("defaults", DEFAULTS, "Host settings every host gets unless it sets them itself.", None),
    Field("hosts", Hosts(), "The hosts, by name (a DNS label).",
          missing="no hosts defined (add at least one under hosts:)"),
])  # fmt: skip

TOP_KEYS = SPEC.keys
NETWORK_KEYS = NETWORK.keys
IMAGE_KEYS = IMAGE.keys
HOST_SETTINGS = DEFAULTS.keys
HOST_ONLY = tuple(item.name for item in HOST_ONLY_FIELDS)
RESOURCE_KEYS = RESERVATIONS.keys


def allowed_keys(section: str) -> tuple[str, ...]:
    """The keys a section of the spec accepts: "" (the top), network, image, defaults, a host
    ("hosts.NAME"), limits, reservations or logging."""
    tables = {"": SPEC, "network": NETWORK, "image": IMAGE, "defaults": DEFAULTS, "limits": LIMITS,
              "reservations": RESERVATIONS, "logging": LOGGING}  # fmt: skip
    return HOST.keys if section.startswith("hosts.") else tables[section].keys
