"""Rules across hosts, checked on validated hosts: unique ports and hostnames, accounts that get
passwords. What one engine cannot do is that engine's rule (devbox.engines)."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping

from devbox.spec.host_model import Host
from devbox.spec.model import Image
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


# The steps devbox writes that each use of a build secret reaches (see render.build_mounts).
STEPS_OF_USE = {"netrc": ("pip", "packages"), "pip_config": ("pip",), "pip_index_url": ("pip",),
                "pip_extra_index_url": ("pip",), "apt_source": ("packages",), "known_hosts": ("pip",)}  # fmt: skip
# Uses a step reads from one place (a second secret would hide the first).
ONE_OF_A_USE = ("netrc", "pip_config", "pip_index_url", "known_hosts")
_MOUNT = re.compile(r"--mount=([^\s]+)")
# A URL's password (``scheme://user:password@``), unless pip fills it in from a variable (``${NAME}``)
_URL_PASSWORD = re.compile(r"://[^/@\s:]+:(?!\$\{\w+\}@)[^/@\s]+@")


def extra_line_mounts(line: str) -> list[dict[str, str]]:
    """The ``--mount=`` options of a Dockerfile line, each as its key=value pairs."""
    return [dict(part.partition("=")[::2] for part in found.split(",")) for found in _MOUNT.findall(line)]


def secret_id(mount: Mapping[str, str]) -> str | None:
    """The secret a ``--mount`` reads, as BuildKit names it (its id, else its target's file
    name); None if it mounts something else."""
    if mount.get("type") != "secret":
        return None
    return mount.get("id") or posixpath.basename(mount.get("target", "")) or None


def check_build_secrets(image: Image, reading: Reading) -> None:
    """Every secret extra_lines mount is defined, and every secret (and the SSH agent) has a
    step that uses it: one left unused is a spec that does not do what its author thinks."""
    check_requirement_passwords(image, reading)
    names = {secret.name for secret in image.build_secrets}
    used: set[str] = set()
    ssh_used = bool(image.pip_requirements)
    for index, line in enumerate(image.extra_lines):
        for mount in extra_line_mounts(line):
            ssh_used = ssh_used or mount.get("type") == "ssh"
            name = secret_id(mount)
            if name is not None and name not in names:
                reading.add(f"image.extra_lines[{index}]", f"mounts secret {name!r}, which image.build_secrets "
                            "does not define (add it there, or correct the id)")  # fmt: skip
            used.add(name or "")
    for use in ONE_OF_A_USE:
        given = [secret.name for secret in image.build_secrets if secret.use == use]
        if len(given) > 1:
            reading.add("image.build_secrets", f"{' and '.join(given)} are both as: {use}, which a build reads "
                        "from one file (keep one)")  # fmt: skip
    if image.build_secrets:
        reading.notes.append("image.build_secrets: the image is rebuilt when what uses a secret changes, not when "
                             "its value does (a new token alone builds nothing: the image already has what it "
                             "fetched)")  # fmt: skip
    present = {"pip": bool(image.pip_requirements), "packages": bool(image.packages)}
    for secret in image.build_secrets:
        reaches = [step for step in STEPS_OF_USE.get(secret.use or "", ()) if present[step]]
        if secret.name in used or reaches:
            continue
        path = f"image.build_secrets.{secret.name}"
        if secret.use:
            wanted = STEPS_OF_USE[secret.use]
            needs = " or ".join("image.pip_requirements" if step == "pip" else "image.packages" for step in wanted)
            reading.add(path, f"no build step uses it: as: {secret.use} is for the {' and '.join(wanted)} step, "
                        f"and {needs} is empty (remove the secret, or add what uses it)")  # fmt: skip
        else:
            reading.add(path, "no build step uses it (give it as: netrc, pip_config, ..., or mount it in "
                        f"extra_lines: RUN --mount=type=secret,id={secret.name} ...)")  # fmt: skip
    if image.build_ssh and not ssh_used:
        reading.add("image.build_ssh", "no build step uses the SSH agent (set image.pip_requirements, or mount it "
                    "in extra_lines: RUN --mount=type=ssh ...)")  # fmt: skip


def check_requirement_passwords(image: Image, reading: Reading) -> None:
    """No requirement line holds a password in a URL: the lines are written in the Dockerfile
    (devbox.layering), so it would be in the image's history; a build secret carries it instead."""
    from devbox.layering import requirement_lines

    if image.pip_requirements is None or not image.pip_requirements.is_file():
        return
    for number, line in enumerate(requirement_lines(image.pip_requirements.read_text("utf-8")), 1):
        if _URL_PASSWORD.search(line):
            reading.add("image.pip_requirements", f"requirement {number} has a password in its URL, which would be "
                        "in the Dockerfile and the image's history (give the index as a build secret, as: "
                        "pip_index_url, or the password in a netrc secret)")  # fmt: skip


def build_secret_problems(image: Image, environ: Mapping[str, str]) -> list[str]:
    """What the build would miss now: a secret's variable not set, its file not there or not
    readable, no SSH agent for build_ssh. One line each, "path: text", never a value; asked by
    `validate` and before every build, not on every command (`down` needs no token)."""
    problems = []
    for secret in image.build_secrets:
        path = f"image.build_secrets.{secret.name}"
        if secret.env is not None and not environ.get(secret.env):
            problems.append(f"{path}.env: environment variable {secret.env} is not set (export it before "
                            "`devbox up`; its value is read at build time only)")  # fmt: skip
        elif secret.file is not None and not (secret.file.is_file() and os.access(secret.file, os.R_OK)):
            problems.append(f"{path}.file: {str(secret.file)!r} is not a readable file (create it, or correct "
                            "the path: relative paths start at the spec)")  # fmt: skip
    if image.build_ssh and not environ.get("SSH_AUTH_SOCK"):
        problems.append("image.build_ssh: no SSH agent (SSH_AUTH_SOCK is not set: start one with "
                        "`eval $(ssh-agent)` and `ssh-add` your key)")  # fmt: skip
    return problems
