"""Passwords in running hosts: set where they changed, without recreating anything.

A host reads its passwords file (a secret) at every start; a new password (`devbox passwd`, a
changed ``password_env``) reaches a running host here, on ``chpasswd -e``'s input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from devbox.docker_api import exec_with_input, parse_docker_time, talks_to_engine
from devbox.errors import EngineError, UsageError
from devbox.render import chpasswd_lines
from devbox.spec import Host
from devbox.state import AppliedPasswords, Credentials

if TYPE_CHECKING:
    from docker.models.containers import Container

    from devbox.project import Project

# A file's mtime comes from the kernel's coarse clock, a container's StartedAt from the engine's
# and is taken after its mounts: a file this close to a start may not be the one it read.
CLOCK_SLACK_SECONDS = 1.0


def renew_passwords(project: Project, hosts: list[Host], ours: Mapping[str, Container],
                    digests: Mapping[str, str]) -> list[str]:  # fmt: skip
    """Give running hosts the passwords devbox has now (a changed password_env, rendered by
    `render` or this `up`; a `devbox passwd` cut short); returns "host/user" of each one changed.

    A container reads its passwords file at every start: one that started after the file's
    last write (by more than a clock's slack) has it. Only the others are asked, once: the
    answer goes into the project's AppliedPasswords record.
    """
    record = AppliedPasswords(project.folder)
    credentials: Credentials | None = None
    renewed = []
    for host in hosts:
        container, digest = ours[host.name], digests[host.name]
        if record.holds(host.name, container.id, digest):
            continue
        written = project.layout.passwords(host.name).stat().st_mtime
        if written > parse_docker_time(container.attrs["State"]["StartedAt"]) - CLOCK_SLACK_SECONDS:
            credentials = credentials or Credentials.load(project.folder)
            hashes = credentials.hashes(project.spec, host)
            renewed += [f"{host.name}/{user}" for user in apply_passwords(project, host, container, hashes)]
        record.note(host.name, container.id, digest)
    record.save()
    return renewed


def reapply_passwords(project: Project, hosts: list[Host], digests: Mapping[str, str]) -> list[str]:
    """Set devbox's passwords again in running hosts that refused them at login (`up`: see
    devbox.operations._reapply_refused); returns "host/user" of each one set. A host out of
    reach (a swarm node this machine cannot look into) is left: its login error names the fix."""
    containers = project.engine.reach(project).containers
    credentials = Credentials.load(project.folder)
    record = AppliedPasswords(project.folder)
    changed = []
    for host in hosts:
        container = containers.get(host.name)
        if container is None or container.status != "running":
            continue
        changed += [f"{host.name}/{user}" for user in
                    apply_passwords(project, host, container, credentials.hashes(project.spec, host))]  # fmt: skip
        record.note(host.name, container.id, digests[host.name])
    record.save()
    return changed


@talks_to_engine
def rotate_password(project: Project, host: str, user: str) -> bool:
    """A new generated password for one account, applied to the running host at once.

    Returns whether a running container was updated (else it applies at the next `up`).
    """
    target = project.host(host)
    if user not in project.spec.accounts(target):
        accounts = ", ".join(project.spec.accounts(target))
        raise UsageError(f"{host} has no account {user!r} with a password (accounts: {accounts})")
    if user in dict(target.password_env):
        raise UsageError(f"the password of {host}/{user} comes from ${dict(target.password_env)[user]}: change "
                         "the variable and run `devbox up`")  # fmt: skip
    with project.lock():
        # the engine answers (and they are ours) before anything changes; a host out of reach
        # (a swarm node this machine cannot look into) gets its password at the next `up`
        containers = project.engine.reach(project).containers
        credentials = Credentials.load(project.folder)
        credentials.rotate(host, user)
        credentials.save()
        rendered = project.render(save_gpus=False)  # the GPUs `up` gave out, none given out here
        container = containers.get(host)
        if container is None or container.status != "running":
            return False
        apply_passwords(project, target, container, credentials.hashes(project.spec, target))
        record = AppliedPasswords(project.folder)
        record.note(host, container.id, rendered.password_digests[host])
        record.save()
        return True


def apply_passwords(project: Project, host: Host, container: Container,
                    hashes: tuple[tuple[str, str], ...]) -> list[str]:  # fmt: skip
    """Set the host's passwords (``hashes``: devbox's, by account) in its running container
    where they differ; returns the accounts changed.

    The container keeps its passwords file as it was at start (a new one is a new file). The
    hashes go to ``chpasswd -e`` on its input: in an argument list, anyone on the machine could
    read them (ps, `docker events`), and a person's chosen password can be guessed from its hash.
    """
    wanted = dict(hashes)
    _, output = container.exec_run(["getent", "shadow", *wanted])
    current = dict(line.split(":")[:2] for line in output.decode(errors="replace").splitlines() if ":" in line)
    changed = [user for user, hashed in wanted.items() if current.get(user) != hashed]
    if changed:
        lines = chpasswd_lines((user, wanted[user]) for user in changed).encode()
        code, detail = exec_with_input(container.client, container.id, ["chpasswd", "-e"], lines)
        if code != 0:
            raise EngineError(f"could not set the passwords of {', '.join(changed)} in {host.name}: "
                              f"{detail.strip() or f'chpasswd exited with {code}'}")  # fmt: skip
    return changed
