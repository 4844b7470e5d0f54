"""The click layer: parse options, call the spec/render/state/runner layers, print results.

Only click is imported at module level so `devbox --help` stays fast; each command imports what
it needs. Every DevboxError becomes one red line per problem and its exit code, never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from devbox.render import RenderedFile
    from devbox.spec import Spec

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_SPEC = "devbox.yaml"


class Context:
    """What the group options select: the spec file, the output folder and the GPU switch."""

    def __init__(self, spec_file: str, out: str | None, gpu: bool, engine: str | None = None) -> None:
        self.spec_file = spec_file
        self.out = out
        self.gpu = gpu
        self.engine = engine

    def spec(self) -> Spec:
        from devbox.engine import local_gpu_count
        from devbox.spec import gpu_count_warnings, load_spec

        spec = load_spec(self.spec_file, gpu=None if self.gpu else False, engine=self.engine)
        warnings = list(spec.warnings)
        if any(host.gpus.wanted for host in spec.hosts):
            available = local_gpu_count()
            if available is not None:
                warnings += gpu_count_warnings(spec.hosts, available)
        for warning in warnings:
            warn(f"{spec.source}: {warning}")
        return spec

    def folder(self, spec: Spec) -> Path:
        from devbox.state import output_dir

        return output_dir(spec, self.out)


def warn(message: str) -> None:
    click.secho(f"warning: {message}", fg="yellow", err=True)


def fail(lines: list[str], code: int) -> None:
    for line in lines:
        click.secho(f"error: {line}", fg="red", err=True)
    sys.exit(code)


def reports_errors(func: F) -> F:
    """Turn DevboxError (and Docker SDK errors) into one line each and the error's exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from devbox.errors import DevboxError

        try:
            return func(*args, **kwargs)
        except DevboxError as exc:
            fail(exc.lines(), exc.exit_code)
        except KeyboardInterrupt:
            fail(["interrupted"], 130)
        except Exception as exc:
            if type(exc).__module__.startswith(("docker.", "requests.", "paramiko")):
                fail([f"Docker engine: {exc} (check `devbox doctor`)"], 1)
            raise

    return wrapper  # type: ignore[return-value]


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-f", "--file", "spec_file", default=DEFAULT_SPEC, show_default=True,
              envvar="DEVBOX_FILE", help="The spec file.")  # fmt: skip
@click.option("--out", default=None, envvar="DEVBOX_OUT",
              help="Output folder for rendered files and state [default: .devbox beside the spec].")  # fmt: skip
@click.option("--no-gpu", is_flag=True, help="Run every host CPU-only, whatever the spec asks.")
@click.option("--engine", type=click.Choice(["compose", "swarm"]), default=None, envvar="DEVBOX_ENGINE",
              help="compose (one machine) or swarm (services of an existing swarm) [default: the spec's].")
@click.version_option(package_name="devbox")
@click.pass_context
def cli(ctx: click.Context, spec_file: str, out: str | None, no_gpu: bool, engine: str | None) -> None:
    """Carve one GPU server into isolated, SSH-able development hosts."""
    ctx.obj = Context(spec_file, out, gpu=not no_gpu, engine=engine)


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--project", default=None, help="Project name [default: the folder's name].")
@click.option("--force", is_flag=True, help="Overwrite an existing spec.")
@pass_context
@reports_errors
def init(ctx: Context, directory: str, project: str | None, force: bool) -> None:
    """Write a commented devbox.yaml (or the -f file; two GPU hosts) and a .gitignore for secrets."""
    from devbox.project import init_project

    folder, name, option = Path(directory), DEFAULT_SPEC, ""
    if ctx.spec_file != DEFAULT_SPEC:  # devbox -f lab.yaml init: the commands after it read lab.yaml
        spec_path = folder / ctx.spec_file
        folder, name, option = spec_path.parent, spec_path.name, f" -f {ctx.spec_file}"
    written = init_project(folder, project, force=force, spec_name=name)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"next: edit {written[0]}, then `devbox{option} validate` and `devbox{option} up`")


@cli.command()
@pass_context
@reports_errors
def validate(ctx: Context) -> None:
    """Check the spec and print every problem found."""
    spec = ctx.spec()
    gpus = sum(1 for host in spec.hosts if host.gpus.wanted)
    for note in spec.notes:
        click.echo(f"note: {note}")
    click.echo(f"{spec.source}: valid ({len(spec.hosts)} hosts, {gpus} with GPUs)")


def _render(ctx: Context) -> tuple[Spec, Path, list[RenderedFile], list[str]]:
    from devbox.project import generated_note, render_to

    spec = ctx.spec()
    folder = ctx.folder(spec)
    rendered, changed, created = render_to(spec, folder, os.environ)
    for warning in _opt_in_warnings(spec):
        warn(warning)
    note = generated_note(folder, created)
    if note:
        click.echo(note)
    return spec, folder, rendered.files, changed


def _opt_in_warnings(spec: Spec) -> list[str]:
    """What the spec opens up that the user should hear about every time."""
    from devbox.hazards import mount_warnings

    warnings = []
    for host in spec.hosts:
        warnings += mount_warnings(host)
        if host.docker_socket:
            warnings.append(f"hosts.{host.name}.docker_socket: the host's users get the Docker "
                            "socket, which is root on this machine")  # fmt: skip
        if host.privileged:
            warnings.append(f"hosts.{host.name}.privileged: the container can do anything the "
                            "machine's root can")  # fmt: skip
    return warnings


@cli.command(name="render")
@pass_context
@reports_errors
def render_cmd(ctx: Context) -> None:
    """Write Dockerfile, entrypoint.sh, docker-compose.yml and secrets to the output folder."""
    _spec, folder, files, changed = _render(ctx)
    unchanged = len(files) - len(changed)
    for path in changed:
        click.echo(f"wrote {folder / path}")
    click.echo(f"{folder}: {len(changed)} written, {unchanged} unchanged")


cli.add_command(render_cmd, name="generate")


def _project(ctx: Context) -> Any:
    from devbox.runner import Project

    spec = ctx.spec()
    for warning in _opt_in_warnings(spec):
        warn(warning)
    return Project(spec, ctx.folder(spec), say=click.echo)


def _size(value: float | None) -> str:
    if not value:
        return "-"
    for unit, scale in (("g", 1024**3), ("m", 1024**2)):
        if value >= scale:
            return f"{value / scale:.4g}{unit}"
    return f"{value:.0f}b"


def _gpus_text(host: Any) -> str:
    if not host.gpus.wanted:
        return "-"
    return ",".join(host.gpus.device_ids) if host.gpus.device_ids else str(host.gpus.count)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


@cli.command()
@click.argument("hosts", nargs=-1)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for SSH logins.")
@pass_context
@reports_errors
def up(ctx: Context, hosts: tuple[str, ...], timeout: float) -> None:
    """Build once, start the hosts, and wait until each accepts an SSH login."""
    from devbox.runner import up as run_up

    project = _project(ctx)
    reached = run_up(project, list(hosts) or None, wait_seconds=timeout)
    logins = {target.name: (target, result) for target, result in reached}
    rows = [["HOST", "SSH", "PORT", "GPUS", "CPUS", "MEMORY", "LOGIN"]]
    for host in project.spec.hosts:
        if host.name not in logins:
            continue
        target, result = logins[host.name]
        rows.append([
            host.name, f"ssh -p {host.ssh_port} {project.spec.image.user}@{target.address}",
            str(host.ssh_port), _gpus_text(host), f"{host.limits.cpus:g}" if host.limits.cpus else "-",
            host.limits.memory.text if host.limits.memory else "-", f"ok {result.seconds:.1f}s",
        ])  # fmt: skip
    click.echo(_table(rows))


@cli.command()
@click.option("--volumes", is_flag=True, help="Also delete named volumes (the hosts' data).")
@click.option("--yes", is_flag=True, help="Do not ask before deleting volumes.")
@pass_context
@reports_errors
def down(ctx: Context, volumes: bool, yes: bool) -> None:
    """Remove the hosts' containers and network; named volumes survive unless --volumes."""
    from devbox.runner import down as run_down

    project = _project(ctx)
    if volumes and not yes:
        click.confirm(f"delete the named volumes of {project.spec.project} (all data in them)?", abort=True)
    run_down(project, volumes)
    click.echo(f"{project.spec.project}: down" + (" (volumes deleted)" if volumes else ""))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
@reports_errors
def status(ctx: Context, as_json: bool) -> None:
    """Each host's state, health, SSH port, applied limits and GPUs."""
    import json

    from devbox.runner import status as run_status

    entries = run_status(_project(ctx))
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    rows = [["HOST", "STATE", "HEALTH", "PORT", "CPUS", "MEMORY", "GPUS"]]
    for entry in entries:
        limits = entry.get("limits", {})
        gpus = ",".join(str(g.get("device_ids") or g.get("count")) for g in entry.get("gpus", [])) or "-"
        rows.append([
            entry["host"], entry["state"], entry.get("health") or "-", str(entry["ssh_port"]),
            f"{limits['cpus']:g}" if limits.get("cpus") else "-", _size(limits.get("memory")), gpus,
        ])  # fmt: skip
    click.echo(_table(rows))


cli.add_command(status, name="ps")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_context
@reports_errors
def ssh(ctx: Context, host: str, command: tuple[str, ...]) -> None:
    """Log in to HOST with the system ssh client (host key checked): devbox ssh HOST [-- CMD]."""
    import shutil

    from devbox.render import KNOWN_HOSTS, connect_address, host_key_alias

    project = _project(ctx)
    target = project.host(host)
    binary = shutil.which("ssh")
    if binary is None:
        from devbox.errors import UsageError

        raise UsageError("no ssh client on PATH (install openssh-client)")
    project.rendered_once()
    argv = [
        "ssh", "-p", str(target.ssh_port),
        "-o", f"UserKnownHostsFile={project.folder / KNOWN_HOSTS}",
        "-o", f"HostKeyAlias={host_key_alias(project.spec, target)}",
        "-o", "StrictHostKeyChecking=yes",
        f"{project.spec.image.user}@{connect_address(target)}", *command,
    ]  # fmt: skip
    os.execv(binary, argv)  # noqa: S606 - replaces devbox with ssh, argument list only


@cli.command(name="ssh-config")
@click.option("--address", default=None, help="Address clients use to reach this machine "
              "[default: the bind address, or 127.0.0.1].")  # fmt: skip
@click.option("--write", is_flag=True, help="Write ~/.ssh/devbox/<project>.conf instead of printing.")
@pass_context
@reports_errors
def ssh_config(ctx: Context, address: str | None, write: bool) -> None:
    """Host entries for OpenSSH and VS Code Remote-SSH, with host keys verified."""
    from devbox.render import KNOWN_HOSTS, render_ssh_config
    from devbox.state import write_if_changed

    if address is not None:
        _check_address(address)
    project = _project(ctx)
    project.rendered_once()
    text = render_ssh_config(project.spec, str(project.folder / KNOWN_HOSTS), address)
    if not write:
        click.echo(text, nl=False)
        return
    target = Path.home() / ".ssh" / "devbox" / f"{project.spec.project}.conf"
    for folder in (target.parent.parent, target.parent):  # ~/.ssh holds private keys: 0700 as ssh makes it
        folder.mkdir(exist_ok=True, mode=0o700)
    write_if_changed(target, text, 0o600)
    click.echo(f"wrote {target}")
    click.echo("add this line at the top of ~/.ssh/config (once): Include ~/.ssh/devbox/*.conf")


def _check_address(address: str) -> None:
    """--address lands in the config as ``HostName``: anything but a host name or an IP address
    (a space, a newline and a ``ProxyCommand``...) could add directives that run on this machine.

    Raises UsageError (exit 2) naming the value.
    """
    import ipaddress
    import re

    from devbox.errors import UsageError

    label = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    if len(address) <= 253 and re.fullmatch(rf"{label}(\.{label})*\.?", address):
        return
    with contextlib.suppress(ValueError):
        # an IPv6 scope (fe80::1%eth0) may be any text to ipaddress: only an interface name here
        if re.fullmatch(r"[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?", address) and ipaddress.ip_address(address):
            return
    raise UsageError(f"--address {address!r} is not a host name or an IP address "
                     "(use e.g. gpu1.example.org or 192.0.2.10)")  # fmt: skip


def _tail(value: str) -> str:
    if value != "all" and not value.isdigit():
        raise click.BadParameter(f"{value!r} is not a number of lines (use e.g. 100, or all)")
    return value


@cli.command()
@click.argument("host", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new output.")
@click.option("--tail", default="all", show_default=True, callback=lambda _ctx, _param, value: _tail(value),
              help="Lines from the end to show (a number, or all).")  # fmt: skip
@pass_context
@reports_errors
def logs(ctx: Context, host: str | None, follow: bool, tail: str) -> None:
    """Show a host's logs (all hosts when none is named)."""
    from devbox.runner import all_logs, stream_logs

    project = _project(ctx)
    if host is None:
        all_logs(project, follow, tail)
        return
    out = click.get_binary_stream("stdout")
    for chunk in stream_logs(project, host, follow, tail):
        out.write(chunk)
        out.flush()


@cli.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-u", "--user", default=None, help="Run as this user [default: root].")
@pass_context
@reports_errors
def exec_cmd(ctx: Context, host: str, command: tuple[str, ...], user: str | None) -> None:
    """Run a command in HOST, streaming its output; exits with the command's exit code."""
    from devbox.runner import exec_in

    out = click.get_binary_stream("stdout")

    def write(chunk: bytes) -> None:
        out.write(chunk)
        out.flush()

    sys.exit(exec_in(_project(ctx), host, list(command), user, write))


def _print_checks(checks: Any) -> bool:
    """One line per check; returns whether every check passed or was skipped."""
    colours = {"PASS": "green", "FAIL": "red", "SKIP": "yellow"}
    ok = True
    for check in checks:
        word = click.style(check.word, fg=colours[check.word])
        click.echo(f"{word}  {check.subject:<10} {check.name}: {check.detail}")
        ok = ok and check.ok is not False
    return ok


@cli.command()
@click.option("--deep", is_flag=True, help="Also probe a GPU framework (torch.cuda) if installed.")
@pass_context
@reports_errors
def check(ctx: Context, deep: bool) -> None:
    """Prove the running stack matches the spec: logins, network, limits, volumes, GPUs."""
    from devbox.checks import check_stack

    project = _project(ctx)
    project.rendered_once()
    if not _print_checks(check_stack(project, deep)):
        sys.exit(1)


@cli.command()
@pass_context
@reports_errors
def doctor(ctx: Context) -> None:
    """Check that this machine can run the spec: engine, compose, ports, resources, GPUs."""
    from devbox.checks import doctor as run_doctor

    if not _print_checks(run_doctor(_project(ctx))):
        sys.exit(1)


@cli.command()
@click.argument("host")
@click.argument("user", required=False)
@pass_context
@reports_errors
def passwd(ctx: Context, host: str, user: str | None) -> None:
    """Give HOST's USER (default: the image user) a new generated password."""
    from devbox.runner import rotate_password
    from devbox.state import CREDENTIALS_FILE

    project = _project(ctx)
    account = user or project.spec.image.user
    live = rotate_password(project, host, account)
    where = project.folder / CREDENTIALS_FILE
    click.echo(f"new password for {host}/{account} is in {where}" + ("" if live else " (applies at `devbox up`)"))


def main() -> None:
    cli(prog_name="devbox")
