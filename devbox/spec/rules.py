"""Rules across hosts, checked on validated hosts: unique ports and hostnames, accounts that get
passwords. What one engine cannot do is that engine's rule (devbox.engines)."""

from __future__ import annotations

import posixpath

from devbox.spec.model import Host, Image
from devbox.spec.options import Reading, join

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


def cross_checks(hosts: list[Host], reading: Reading) -> None:
    """Ports and hostnames unique; a note that one engine does not enforce CPU reservations.
    (Two hosts pinning one GPU is refused where GPUs are allocated: devbox.gpus.)"""
    for i, host in enumerate(hosts):
        for other in hosts[:i]:
            if other.ssh_port == host.ssh_port and _overlap(other.bind_address, host.bind_address):
                reading.add(f"hosts.{host.name}.ssh_port", f"{host.ssh_port} is already "
                            f"used by host {other.name!r} (each host needs its own)")  # fmt: skip
            if other.hostname == host.hostname:
                reading.add(f"hosts.{host.name}.hostname", f"{host.hostname!r} is "
                            f"already the hostname of {other.name!r}")  # fmt: skip
            for named, called in ((host, other), (other, host)):
                if named.hostname == called.name and named.hostname != called.hostname:
                    reading.add(f"hosts.{named.name}.hostname", f"{named.hostname!r} is the name of host "
                                f"{called.name!r}, which other hosts reach by that name "
                                "(choose another hostname)")  # fmt: skip
    reserving = [host.name for host in hosts if host.reservations.cpus]
    if reserving:
        reading.notes.append(f"reservations.cpus (hosts {', '.join(reserving)}): a single "
                             "Docker engine enforces CPU limits but not CPU reservations; "
                             "set cpuset to pin cores for hard isolation")  # fmt: skip


DOCKER_SOCKET = "/var/run/docker.sock"


def check_socket_mounts(hosts: list[Host], reading: Reading) -> None:
    """`docker_socket: true` mounts the engine's socket on /var/run/docker.sock: a volume of
    the host on that path too is two mounts on one target, which the engine refuses at `up`."""
    for host in hosts:
        if host.docker_socket and any(posixpath.normpath(v.target) == DOCKER_SOCKET for v in host.volumes):
            reading.add(join(host.origin("volumes"), "volumes"), f"{DOCKER_SOCKET} is mounted by docker_socket: "
                        "true already (remove the volume, or docker_socket)")  # fmt: skip


def _overlap(first: str, second: str) -> bool:
    """Whether two bind addresses collide on one port (a wildcard collides with everything)."""
    return first == second or first in _WILDCARDS or second in _WILDCARDS
