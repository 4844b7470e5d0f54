"""Rules across hosts, checked on validated hosts: unique ports and hostnames, shared GPUs, and
what a swarm service cannot do. They need only the public Spec/Host API (``Host.origin`` names
where a setting was written)."""

from __future__ import annotations

from devbox.spec.model import Host, Image, Spec
from devbox.spec.options import Reading, join

# What a swarm service cannot express (Docker's service API has no such fields), by host setting.
SWARM_UNSUPPORTED = ("ulimits", "devices", "privileged", "ipc", "cpuset")
_WILDCARDS = ("0.0.0.0", "::")  # noqa: S104 - comparing, not binding


def check_password_accounts(hosts: list[Host], image: Image, reading: Reading) -> None:
    """A password_env entry for an account the host does not have would be silently unused."""
    reported = set()
    for host in hosts:
        accounts = (image.user, *host.accounts)
        for user, _variable in host.password_env:
            path = join(join(host.origin(f"password_env.{user}"), "password_env"), user)
            if user not in accounts and path not in reported:
                reported.add(path)
                root = ", root only with root_login: true" if user == "root" else ""
                reading.add(path, f"host {host.name} has no account {user!r} that gets a password "
                            f"(use {' or '.join(accounts)}{root})")  # fmt: skip


def cross_checks(hosts: list[Host], reading: Reading) -> list[str]:
    """Ports and hostnames unique (reported); returns warnings on shared GPU ids; notes that
    CPU reservations are not enforced by one engine."""
    for i, host in enumerate(hosts):
        for other in hosts[:i]:
            if other.ssh_port == host.ssh_port and _overlap(other.bind_address, host.bind_address):
                reading.add(f"hosts.{host.name}.ssh_port", f"{host.ssh_port} is already "
                            f"used by host {other.name!r} (each host needs its own)")  # fmt: skip
            if other.hostname == host.hostname:
                reading.add(f"hosts.{host.name}.hostname", f"{host.hostname!r} is "
                            f"already the hostname of {other.name!r}")  # fmt: skip
    warnings: list[str] = []
    pinned: dict[str, str] = {}
    for host in hosts:
        for gpu in host.gpus.device_ids:
            if gpu in pinned:
                warnings.append(f"hosts.{host.name}.gpus: GPU {gpu} is also pinned to host {pinned[gpu]!r}; "
                                "they will share it")  # fmt: skip
            pinned.setdefault(gpu, host.name)
    reserving = [host.name for host in hosts if host.reservations.cpus]
    if reserving:
        reading.notes.append(f"reservations.cpus (hosts {', '.join(reserving)}): a single "
                             "Docker engine enforces CPU limits but not CPU reservations; "
                             "set cpuset to pin cores for hard isolation")  # fmt: skip
    return warnings


def _overlap(first: str, second: str) -> bool:
    """Whether two bind addresses collide on one port (a wildcard collides with everything)."""
    return first == second or first in _WILDCARDS or second in _WILDCARDS


def swarm_problems(spec: Spec) -> tuple[list[str], list[str]]:
    """What a swarm service cannot do, as ``path: problem`` lines named where the spec asks for
    it, and notes on what works differently there."""
    problems: list[str] = []
    notes = []
    for host in spec.hosts:
        found = [f"{host.origin(setting)}.{setting}: not supported by swarm services (use engine: compose)"
                 for setting in SWARM_UNSUPPORTED if getattr(host, setting) not in (None, (), False)]  # fmt: skip
        if host.gpus.device_ids or host.gpus.count == "all":
            found.append(f"{host.origin('gpus')}.gpus: swarm hands out GPUs by count only (NVIDIA-GPU generic "
                         "resources): use a number")  # fmt: skip
        problems += [line for line in found if line not in problems]
        if host.bind_address not in _WILDCARDS:
            notes.append(f"hosts.{host.name}.bind_address: swarm publishes ports on every interface "
                         f"of the node, not only {host.bind_address}")  # fmt: skip
    return problems, notes
