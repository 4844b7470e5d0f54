"""Option types of devbox's own settings (a volume, a GPU request, a restart policy, ...).

The generic types (a string, a size, a list of ...) are in ``options``; these add what one
setting means: each reports the same problem, with the same fix, wherever the setting is written.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from devbox.spec.model import SECRET_USES, Volume
from devbox.spec.options import (
    Choice,
    Flag,
    Integer,
    Option,
    Reading,
    Schema,
    Size,
    Text,
    check_keys,
    join,
    js_pattern,
    type_name,
)

MIN_MEMORY_LIMIT = 6 * 1024**2  # the engine refuses less
RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
VOLUME_OWNERS = ("user", "root")  # a named volume's `owner:` (Volume.owner)
# A build secret's name: its id in `--mount=type=secret,id=NAME` and its file in /run/secrets
SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_GPU_UUID = re.compile(r"^(GPU|MIG)-[0-9a-fA-F-]{8,}$")
_CPUSET = re.compile(r"^[0-9]{1,9}(-[0-9]{1,9})?(,[0-9]{1,9}(-[0-9]{1,9})?)*$")
SSH_KEY = re.compile(
    r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
    # the comment: anything but control characters and the line breaks str.splitlines() knows,
    # so one accepted key is exactly one line of authorized_keys
    r" [A-Za-z0-9+/=]+( [^\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]*)?$"
)
_ONE_LINE = r"^[^\n\r\x00]*$"
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


def existing(directory: Path, text: str, is_kind: Callable[[Path], bool]) -> Path | None:
    """``text`` resolved against the spec's folder (~ expanded), if it exists as asked."""
    try:
        found = (directory / os.path.expanduser(text)).resolve()
        return found if is_kind(found) else None
    except (OSError, ValueError):  # NUL byte, name too long
        return None


def existing_file(value: Any, path: str, reading: Reading) -> Path | None:
    """A file named relative to the spec, reported if it is not there."""
    text = Text().read(value, path, reading)
    if text is None:
        return None
    file = existing(reading.directory, text, Path.is_file)
    if file is None:
        reading.add(path, f"file {text!r} does not exist (paths are relative to the spec)")
    return file


class Version(Option):
    """The spec format: 1, written as a number."""

    def read(self, value: Any, path: str, reading: Reading) -> Any:
        if value != 1:
            hint = "write it as a number: version: 1" if str(value).strip() == "1" else "use 1"
            reading.add(path, f"{value!r} is not supported ({hint})")
        return value

    def schema(self) -> Schema:
        return {"const": 1}


class ImageRef(Text):
    """An image reference pinned to a tag other than latest (or to a digest)."""

    def read(self, value: Any, path: str, reading: Reading) -> str | None:
        base = super().read(value, path, reading)
        if base and (":" not in base.rsplit("/", 1)[-1] and "@" not in base or base.endswith(":latest")):
            reading.add(path, f"{base!r} is not pinned (name a tag other than latest)")
        return base


# Accounts and groups Debian and Ubuntu base images (and what the Dockerfile installs: sshd,
# the docker group) already have: useradd fails on them, so the build would.
BASE_ACCOUNTS = frozenset((
    "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy", "www-data",
    "backup", "list", "irc", "gnats", "nobody", "_apt", "ubuntu", "sshd", "messagebus", "systemd-network",
    "systemd-resolve", "systemd-timesync", "systemd-journal", "adm", "tty", "disk", "kmem", "dialout", "fax",
    "voice", "cdrom", "floppy", "tape", "sudo", "audio", "dip", "operator", "src", "shadow", "utmp", "video",
    "sasl", "plugdev", "staff", "users", "nogroup", "input", "kvm", "render", "sgx", "_ssh", "ssh",
    "crontab", "netdev", "docker", "lxd",
))  # fmt: skip


class ImageUser(Text):
    """The image's login user: an account name, never root, nor an account or group the base
    image already has."""

    def read(self, value: Any, path: str, reading: Reading) -> str | None:
        user = super().read(value, path, reading)
        if user == "root":
            reading.add(path, "must not be root (root login is a separate opt-in)")
        elif user in BASE_ACCOUNTS:
            reading.add(path, f"{user!r} is an account or group the base image already has "
                        "(choose another name, e.g. developer)")  # fmt: skip
        return user


class OneLine(Text):
    """A string without line breaks (a Dockerfile line)."""

    def read(self, value: Any, path: str, reading: Reading) -> str | None:
        line = super().read(value, path, reading)
        if line is not None and ("\n" in line or "\r" in line):
            reading.add(path, "must be one line each")
        elif line is not None and re.search(r"\\[ \t]*$", line):
            reading.add(path, "ends in \\, which would continue it into the next instruction "
                        "(join the lines into one, or drop the \\)")  # fmt: skip
            return None
        return line

    def schema(self) -> Schema:
        return {"type": "string", "pattern": _ONE_LINE}


class TextFile(Option):
    """A UTF-8 text file, relative to the spec."""

    def read(self, value: Any, path: str, reading: Reading) -> Path | None:
        found = existing_file(value, path, reading)
        try:
            if found is not None:
                found.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            reading.add(path, f"{str(value)!r} is not a readable UTF-8 text file")
            return None
        return found

    def schema(self) -> Schema:
        return {"type": "string"}


class AccountId(Option):
    """A UID or GID: a number, or ``auto`` for the invoking user's (the sudo caller's if any)."""

    def __init__(self, sudo_variable: str, invoking: Callable[[], int]) -> None:
        self.sudo_variable, self.invoking = sudo_variable, invoking
        self.number = Integer(1, 2**31 - 2, "a numeric id or auto")

    def read(self, value: Any, path: str, reading: Reading) -> int | None:
        if value is None:
            return None
        if value != "auto":
            return self.number.read(value, path, reading)
        sudo = os.environ.get(self.sudo_variable, "")
        found = int(sudo) if sudo.isdigit() else int(self.invoking())
        if found == 0:
            reading.notes.append(f"{path}: auto found root (0), which the user must not share; "
                                 "using the image's default id (run devbox as yourself or via sudo)")  # fmt: skip
            return None
        return found

    def schema(self) -> Schema:
        return {"anyOf": [{"const": "auto"}, self.number.schema(), {"type": "null"}]}


class Subnet(Option):
    """An IP network in CIDR form, host bits zero, with room for hosts, in a range a bridge can
    use (a bare address would be a /32 of one address; loopback and multicast route nowhere)."""

    def read(self, value: Any, path: str, reading: Reading) -> str | None:
        text = Text().read(value, path, reading)
        try:
            network = ipaddress.ip_network(text or "", strict=True)
        except ValueError:
            network = None
        if network is None or "/" not in (text or ""):
            reading.add(path, f"{text!r} is not a subnet (e.g. 172.28.0.0/16)")
            return None
        if network.is_loopback or network.is_multicast:
            reading.add(path, f"{text!r} is a loopback or multicast range (use a private one, e.g. 172.28.0.0/16)")
            return None
        if network.max_prefixlen - network.prefixlen < 2:
            reading.add(path, f"{text!r} leaves no room for hosts (use /{network.max_prefixlen - 2} or larger, "
                        "e.g. 172.28.0.0/16)")  # fmt: skip
            return None
        return str(network)

    def schema(self) -> Schema:
        return {"type": "string", "pattern": "^[0-9a-fA-F:.]+/[0-9]{1,3}$"}


class Address(Option):
    """An IP address to listen on: a wildcard (0.0.0.0, ::) or one address of this machine.

    Addresses no machine can listen on are refused here, not by the engine at `up`: multicast,
    broadcast, the documentation ranges (192.0.2.0/24, 2001:db8::/32, ...), reserved ones, and
    IPv6 link-local (it needs an interface, which a bind address cannot name)."""

    _UNUSABLE = tuple(ipaddress.ip_network(net) for net in (
        "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "255.255.255.255/32",
    ))  # fmt: skip

    def read(self, value: Any, path: str, reading: Reading) -> str:
        text = Text().read(value, path, reading)
        try:
            address = ipaddress.ip_address(text or "")
            if "%" in str(address):  # a scope id is free text, e.g. "::1%]:9:22"
                raise ValueError(address)
        except ValueError:
            reading.add(path, f"{text!r} is not an IP address (use 0.0.0.0 for every "
                        "interface or 127.0.0.1 for this machine only)")  # fmt: skip
            return "127.0.0.1"
        why = self._unusable(address)
        if why:
            reading.add(path, f"{text!r} cannot be listened on: {why} (use 127.0.0.1, 0.0.0.0 "
                        "or an address of this machine)")  # fmt: skip
            return "127.0.0.1"
        return str(address)

    def _unusable(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        if address.is_multicast:
            return "a multicast address"
        if any(address in net for net in self._UNUSABLE):
            return "a broadcast address" if str(address) == "255.255.255.255" else "a documentation address"
        if str(address) in ("0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
            return ""
        if address.is_unspecified or address in _THIS_NETWORK:
            return "not an address of any machine"
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return f"an IPv4 address written as IPv6 (write {address.ipv4_mapped})"
        if isinstance(address, ipaddress.IPv6Address) and address.is_link_local:
            return "IPv6 link-local needs an interface"
        if isinstance(address, ipaddress.IPv4Address) and address.is_reserved:
            return "a reserved address"
        return ""

    def schema(self) -> Schema:
        return {"type": "string", "pattern": "^[0-9a-fA-F:.]+$"}


class MemoryLimit(Size):
    """A memory limit: a size the engine accepts as one (6m or more)."""

    def read(self, value: Any, path: str, reading: Reading) -> Any:
        size = super().read(value, path, reading)
        if size and size.bytes < MIN_MEMORY_LIMIT:
            reading.add(path, f"{value!r} is below Docker's smallest memory limit, 6m "
                        "(a size without a unit is bytes: 512 means 512b; use e.g. 512m)")  # fmt: skip
        return size


class GpuId(Option):
    """A GPU index or UUID. Always returns the text, so duplicates are found among bad ids too."""

    def read(self, value: Any, path: str, reading: Reading) -> str:
        text = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
        if not ((text.isascii() and text.isdigit()) or _GPU_UUID.fullmatch(text)):
            reading.add(path, f"{value!r} is not a GPU id (use an index like 0 or a UUID like GPU-6f2b...)")
        return text

    def schema(self) -> Schema:
        return {"type": ["integer", "string"], "minimum": 0, "pattern": f"^(?:[0-9]+|{_GPU_UUID.pattern[1:-1]})$"}


class GpuRequest(Option):
    """GPUs: none (0), a count, ``all``, or a list of ids. Returns (count, ids)."""

    count = Integer(0, 64, "a GPU count (or all, or a list of ids)")

    def __init__(self, ids: Option) -> None:
        self.ids = ids

    def read(self, value: Any, path: str, reading: Reading) -> tuple[int | str, tuple[str, ...]]:
        if value in (None, 0, "none", False):
            return 0, ()
        if value == "all":
            return "all", ()
        if isinstance(value, list):
            return 0, tuple(self.ids.read(value, path, reading))
        return self.count.read(value, path, reading) or 0, ()

    def schema(self) -> Schema:
        return {"anyOf": [self.count.schema(), {"enum": ["all", "none", False, None]}, self.ids.schema()]}


# Container paths a volume may not cover: the engine refuses "/", /proc/..., /sys/... and the
# files it writes itself; /dev, /sys and /run/secrets would hide devices, sysfs and devbox's secrets.
_REFUSED_TARGETS = (
    ("/proc", "the kernel's process files"), ("/sys", "the kernel's sysfs"), ("/dev", "the container's devices"),
    ("/run/secrets", "devbox's secrets"), ("/etc/hosts", "a file the engine writes"),
    ("/etc/hostname", "a file the engine writes"), ("/etc/resolv.conf", "a file the engine writes"),
)  # fmt: skip


def _refused_target(target: str) -> str:
    """Why a volume cannot be mounted on ``target`` ("" if it can)."""
    normal = posixpath.normpath(target)
    if normal in ("/", "//"):
        return "it would replace the container's whole file system"
    for prefix, why in _REFUSED_TARGETS:
        if normal == prefix or normal.startswith(prefix + "/"):
            return why
    return ""


class VolumeSpec(Option):
    """A named volume or a bind mount: ``SOURCE:/path[:ro]`` or {source, target, read_only, owner}.

    A named volume belongs to the login user (``owner: user``, the default: the entrypoint hands it
    over while it is empty, and the folder of one the image seeded at its first start) unless the
    spec says ``owner: root`` (as Docker makes it)."""

    keys = ("source", "target", "read_only", "owner")

    def read(self, item: Any, path: str, reading: Reading) -> Volume | None:
        if isinstance(item, str):
            parts = item.split(":")
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
                reading.add(path, f"{item!r} is not a volume (use NAME:/path, ./dir:/path "
                            "or /dir:/path, optionally :ro)")  # fmt: skip
                return None
            source, target, read_only = parts[0], parts[1], len(parts) == 3 and parts[2] == "ro"
            owner = None
        elif isinstance(item, Mapping):
            check_keys(item, self.keys, path, reading.problems)
            source, target = str(item.get("source", "")), str(item.get("target", ""))
            read_only = bool(Flag().read(item.get("read_only", False), join(path, "read_only"), reading))
            owner = item.get("owner")
            if owner is not None and owner not in VOLUME_OWNERS:
                reading.add(join(path, "owner"), f"{owner!r} is not an owner (use user: the login user's, "
                            "or root: as Docker makes it)")  # fmt: skip
                return None
        else:
            reading.add(path, f"must be a string or a mapping, not {type_name(item)}")
            return None
        if not target.startswith("/") or "/../" in f"{target}/" or ":" in target or not target.isprintable():
            reading.add(path, f"{target!r} is not an absolute container path (write it as "
                        "SOURCE:/path/in/the/host, e.g. data:/opt)")  # fmt: skip
            return None
        why = _refused_target(target)
        if why:
            reading.add(path, f"{target!r} cannot be a mount target: {why} (mount it on another path, e.g. /data)")
            return None
        volume = self._source(source, target, read_only, path, reading)
        if volume is None or owner is None:
            return volume
        if volume.kind == "bind":
            reading.add(join(path, "owner"), "a bind mount keeps the owner its folder has on this machine "
                        "(remove owner, or chown the folder)")  # fmt: skip
            return None
        return replace(volume, owner=str(owner))

    def _source(self, source: str, target: str, read_only: bool, path: str, reading: Reading) -> Volume | None:
        if source.startswith(("/", ".", "~")):
            host_path = existing(reading.directory, source, Path.exists)
            if host_path is None:
                reading.add(path, f"bind source {source!r} does not exist (create it, or use a named volume)")
                return None
            if ":" in str(host_path) or not str(host_path).isprintable():
                reading.add(path, f"bind source {str(host_path)!r} cannot be mounted (it holds "
                            "':' or control characters)")  # fmt: skip
                return None
            return Volume("bind", str(host_path), target, read_only)
        if not VOLUME_NAME.fullmatch(source):
            reading.add(path, f"{source!r} is not a volume name (letters, digits, _ . -) "
                        "nor a path (start host paths with / or ./)")  # fmt: skip
            return None
        if len(source) == 1 and source.isalpha():
            reading.add(path, f"{source!r}: Compose reads a one-letter volume name before ':' as a Windows "
                        "drive (name the volume with two or more characters)")  # fmt: skip
            return None
        return Volume("volume", source, target, read_only)

    def schema(self) -> Schema:
        mapping = {
            "type": "object",
            "properties": {"source": {"type": "string"}, "target": {"type": "string", "pattern": "^/"},
                           "read_only": {"type": "boolean"}, "owner": {"enum": list(VOLUME_OWNERS)}},
            "required": ["source", "target"],
            "additionalProperties": False,
        }  # fmt: skip
        return {"anyOf": [{"type": "string", "pattern": "^[^:]+:/[^:]*(:(ro|rw))?$"}, mapping]}


class EnvValue(Option):
    """An environment value: one line of text (numbers and true/false as YAML writes them)."""

    def read(self, value: Any, path: str, reading: Reading) -> str | None:
        if isinstance(value, (Mapping, list)) or value is None:
            reading.add(path, f"must be a string or a number, not {type_name(value)}")
        elif any(char in str(value) for char in "\x00\n\r"):
            reading.add(path, "must be one line (no newline or NUL characters)")
        elif isinstance(value, bool):
            return "true" if value else "false"
        else:
            return str(value)
        return None

    def schema(self) -> Schema:
        return {"type": ["string", "number", "boolean"], "pattern": _ONE_LINE}


class EnvName(Option):
    """The name of an environment variable."""

    def read(self, value: Any, path: str, reading: Reading) -> str | None:
        if not isinstance(value, str) or not ENV_KEY.fullmatch(value):
            reading.add(path, f"{value!r} is not an environment variable name")
            return None
        return value

    def schema(self) -> Schema:
        return {"type": "string", "pattern": js_pattern(ENV_KEY)}


class RestartPolicy(Option):
    """no, always, unless-stopped or on-failure[:N]."""

    def read(self, value: Any, path: str, reading: Reading) -> str:
        text = "no" if value is False else str(value)
        policy, _, retries = text.partition(":")
        numeric = retries.isascii() and retries.isdigit()
        if policy not in RESTART_POLICIES or (retries and (policy != "on-failure" or not numeric)):
            reading.add(path, f"{value!r} is not a restart policy (use no, always, unless-stopped or on-failure[:N])")
            return "unless-stopped"
        return text

    def schema(self) -> Schema:
        return {"anyOf": [{"enum": [*RESTART_POLICIES, False]}, {"type": "string", "pattern": "^on-failure:[0-9]+$"}]}


class PublicKeys(Option):
    """A public SSH key, or a file of them relative to the spec. Returns the keys, one a line."""

    def read(self, item: Any, path: str, reading: Reading) -> tuple[str, ...] | None:
        text = Text().read(item, path, reading)
        if text is None:
            return None
        text = text.strip()
        if not SSH_KEY.fullmatch(text):
            file = existing_file(text, path, reading)
            if file is None:
                return None
            text = file.read_text(encoding="utf-8", errors="replace").strip()
            if not all(SSH_KEY.fullmatch(line) for line in text.splitlines() if line.strip()):
                reading.add(path, f"{item!r} does not hold public SSH keys")
                return None
        return tuple(line.strip() for line in text.splitlines() if line.strip())

    def schema(self) -> Schema:
        return {"type": "string"}


_NR_OPEN_DEFAULT = 1048576


def _ulimit_ceiling(name: str) -> int | None:
    """The most the kernel takes for a limit, where it has a bound: open files up to fs.nr_open
    (this machine's, else the kernel default), nice 0-40, real-time priority 0-99."""
    if name == "nofile":
        try:
            return int(Path("/proc/sys/fs/nr_open").read_text(encoding="ascii"))
        except (OSError, ValueError):
            return _NR_OPEN_DEFAULT
    return {"nice": 40, "rtprio": 99}.get(name)


class UlimitValue(Option):
    """One limit for both soft and hard, or {soft, hard}; -1 is unlimited. Returns (soft, hard)."""

    number = Integer(-1, 2**62, "a limit (-1 for unlimited)")

    def read(self, value: Any, path: str, reading: Reading) -> tuple[int, int] | None:
        if isinstance(value, Mapping):
            check_keys(value, ("soft", "hard"), path, reading.problems)
            soft, hard = value.get("soft"), value.get("hard")
        else:
            soft = hard = value
        soft_n, hard_n = self.number.read(soft, path, reading), self.number.read(hard, path, reading)
        if soft_n is None or hard_n is None:
            return None
        if hard_n != -1 and (soft_n == -1 or soft_n > hard_n):
            reading.add(path, "soft limit is above the hard limit")
        name = path.rsplit(".", 1)[-1]
        high = _ulimit_ceiling(name)
        if high is not None and (max(soft_n, hard_n) > high or (name == "nofile" and -1 in (soft_n, hard_n))):
            reading.add(path, f"the kernel takes at most {high} for {name} (lower it; -1 is not possible)"
                        if name == "nofile" else f"the kernel takes at most {high} for {name} (lower it)")
            return None
        return soft_n, hard_n

    def schema(self) -> Schema:
        number = self.number.schema()
        pair = {"type": "object", "properties": {"soft": number, "hard": number},
                "required": ["soft", "hard"], "additionalProperties": False}  # fmt: skip
        return {"anyOf": [number, pair]}


MIN_PIDS_LIMIT = 32  # sshd, a login shell and the command it runs, with room to type `kill`


class PidsLimit(Option):
    """How many processes and threads a host may have at once (the pids cgroup), or -1 /
    unlimited. Returns the number, -1 for unlimited."""

    number = Integer(MIN_PIDS_LIMIT, 4194304, "a process count")  # 4194304: the kernel's highest pid_max

    def read(self, value: Any, path: str, reading: Reading) -> int | None:
        if value == -1 or (isinstance(value, str) and value.strip().lower() in ("-1", "unlimited")):
            return -1
        return self.number.read(value, path, reading)

    def schema(self) -> Schema:
        return {"anyOf": [self.number.schema(), {"enum": [-1, "-1", "unlimited"]}]}


class Device(Option):
    """A device to pass through: /dev/x, or /dev/host:/dev/container[:rwm]."""

    def read(self, item: Any, path: str, reading: Reading) -> str | None:
        text = Text().read(item, path, reading)
        parts = (text or "").split(":")
        ok = (
            text is not None
            and 1 <= len(parts) <= 3
            and all(p.startswith("/dev/") and ".." not in p for p in parts[:2])
            and (len(parts) < 3 or re.fullmatch(r"[rwm]{1,3}", parts[2]) is not None)
        )
        if not ok:
            reading.add(path, f"{item!r} is not a device (use /dev/ttyUSB0 or /dev/host:/dev/container[:rwm])")
            return None
        return text

    def schema(self) -> Schema:
        return {"type": "string", "pattern": "^/dev/[^:]+(:/dev/[^:]+(:[rwm]{1,3})?)?$"}


class CpuSet(Option):
    """CPUs to pin a host to, as cpuset lists them: 0-3 or 0,2,4, on this machine."""

    def read(self, value: Any, path: str, reading: Reading) -> str | None:
        text = str(value).replace(" ", "")
        if not _CPUSET.fullmatch(text):
            reading.add(path, f"{value!r} is not a CPU list (e.g. 0-3 or 0,2,4)")
            return None
        for low, _, high in (part.partition("-") for part in text.split(",")):
            if high and int(high) < int(low):
                reading.add(path, f"{low}-{high} is backwards (write the lower CPU first: {high}-{low})")
                return None
        cores = os.cpu_count() or 1
        highest = max(int(n) for n in re.split(r"[-,]", text))
        if highest >= cores:
            reading.add(path, f"CPU {highest} does not exist here (this machine has CPUs 0-{cores - 1})")
        return text

    def schema(self) -> Schema:
        return {"type": ["string", "integer"], "pattern": "^[0-9 ,-]+$", "minimum": 0}


class BuildSecretSource(Option):
    """Where a build secret's value comes from, and which step it is for:
    ``{env: VARIABLE}`` or ``{file: PATH}`` (relative to the spec, ~ expanded), with an optional
    ``as`` (a key of SECRET_USES). Returns {"env", "file", "use"}.

    Only the source is read here: whether the variable is set or the file is there is asked
    where the build needs the value (devbox.spec.rules.build_secret_problems), so `status` or
    `down` work on a machine without the token."""

    keys = ("env", "file", "as")
    use = Choice(tuple(SECRET_USES), f"{{value!r}} is not a use of a build secret (use {', '.join(SECRET_USES)}, "
                 "or leave it out and mount the secret in extra_lines)")  # fmt: skip

    def read(self, value: Any, path: str, reading: Reading) -> dict[str, Any] | None:
        if not isinstance(value, Mapping):
            reading.add(path, f"must be a mapping, {{env: VARIABLE}} or {{file: PATH}}, not {type_name(value)}")
            return None
        check_keys(value, self.keys, path, reading.problems)
        if ("env" in value) == ("file" in value):
            reading.add(path, "give exactly one source: env: VARIABLE or file: PATH")
            return None
        use = self.use.read(value["as"], join(path, "as"), reading) if "as" in value else None
        if "env" in value:
            env = EnvName().read(value["env"], join(path, "env"), reading)
            return {"env": env, "file": None, "use": use} if env else None
        text = Text().read(value["file"], join(path, "file"), reading)
        if text is None:
            return None
        if not text or not text.isprintable():
            reading.add(join(path, "file"), f"{text!r} is not a file name")
            return None
        file = Path(os.path.abspath(reading.directory / os.path.expanduser(text)))
        return {"env": None, "file": file, "use": use}

    def schema(self) -> Schema:
        use = {"enum": list(SECRET_USES)}
        return {"oneOf": [
            {"type": "object", "properties": {"env": EnvName().schema(), "as": use}, "required": ["env"],
             "additionalProperties": False},
            {"type": "object", "properties": {"file": {"type": "string"}, "as": use}, "required": ["file"],
             "additionalProperties": False},
        ]}  # fmt: skip
