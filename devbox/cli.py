"""The click layer: parse options, call the spec/render/operations layers, print results.

Only click is imported at module level so `devbox --help` stays fast; each command imports what
it needs. Every DevboxError becomes one red line per problem and its exit code, never a traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from devbox.spec import Spec

DEFAULT_SPEC = "devbox.yaml"


class Context:
    """What the group options select: the spec file, the output folder and the GPU switch."""

    def __init__(self, spec_file: str, out: str | None, gpu: bool, engine: str | None = None) -> None:
        self.spec_file = spec_file
        self.out = out
        self.gpu = gpu
        self.engine = engine

    def spec(self) -> Spec:
        from devbox.engines import load_spec

        spec = load_spec(self.spec_file, gpu=None if self.gpu else False, engine=self.engine)
        for warning in spec.warnings:
            warn(f"{spec.source}: {warning}")
        return spec

    def folder(self, spec: Spec) -> Path:
        from devbox.state import output_dir

        return output_dir(spec, self.out)


def warn(message: str) -> None:
    click.secho(f"warning: {message}", fg="yellow", err=True)


class DevboxGroup(click.Group):
    """The one error boundary: every DevboxError a command raises becomes one red line per
    problem and the error's exit code (2 for bad input, like click's usage errors), never a
    traceback. Library errors (Docker, HTTP, SSH) were translated into DevboxErrors where
    devbox calls those libraries."""

    def invoke(self, ctx: click.Context) -> Any:
        from devbox.errors import DevboxError

        try:
            return super().invoke(ctx)
        except DevboxError as exc:
            raise ReportedError(exc.lines(), exc.exit_code) from None
        except KeyboardInterrupt:
            raise ReportedError(["interrupted"], 130) from None


class ReportedError(click.ClickException):
    """A devbox error as click shows it: one ``error:`` line per problem."""

    def __init__(self, lines: list[str], exit_code: int) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines
        # click 8.5 types exit_code as a class variable; click reads it from the instance
        setattr(self, "exit_code", exit_code)  # noqa: B010

    def show(self, file: Any = None) -> None:
        for line in self.lines:
            click.secho(f"error: {line}", fg="red", err=True)


pass_context = click.make_pass_decorator(Context)


@click.group(cls=DevboxGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
def init(ctx: Context, directory: str, project: str | None, force: bool) -> None:
    """Write a commented devbox.yaml (or the -f file; two GPU hosts) and a .gitignore for secrets."""
    from devbox.gpus import units_here
    from devbox.project import engine_names_in_use
    from devbox.scaffold import init_project

    folder, name, option = Path(directory), DEFAULT_SPEC, ""
    if ctx.spec_file != DEFAULT_SPEC:  # devbox -f lab.yaml init: the commands after it read lab.yaml
        spec_path = folder / ctx.spec_file
        folder, name, option = spec_path.parent, spec_path.name, f" -f {ctx.spec_file}"
    written = init_project(folder, project, force=force, spec_name=name, taken=engine_names_in_use(),
                           say=click.echo, gpu_units=units_here())
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"next: edit {written[0]}, then `devbox{option} validate` and `devbox{option} up`")


@cli.command()
@pass_context
def validate(ctx: Context) -> None:
    """Check the spec and print every problem found."""
    from devbox.operations import validate as run_validate

    project = _project(ctx, opt_in_warnings=False)
    spec = project.spec
    for note in run_validate(project):
        click.echo(f"note: {note}")
    gpus = sum(1 for host in spec.hosts if host.gpus.wanted)
    click.echo(f"{spec.source}: valid ({len(spec.hosts)} hosts, {gpus} with GPUs)")


@cli.command(name="render")
@pass_context
def render_cmd(ctx: Context) -> None:
    """Write Dockerfile, entrypoint.sh, docker-compose.yml and secrets to the output folder."""
    from devbox.operations import render

    project = _project(ctx)
    folder = project.folder
    files, changed = render(project)
    unchanged = len(files) - len(changed)
    for path in changed:
        click.echo(f"wrote {folder / path}")
    click.echo(f"{folder}: {len(changed)} written, {unchanged} unchanged")


cli.add_command(render_cmd, name="generate")


def _project(ctx: Context, yes: bool = False, opt_in_warnings: bool = True) -> Any:
    """The spec's project, holding its engine (connected only when a command needs it); the
    spec's opt-in hazards are said first (``opt_in_warnings``: not by validate, which only reads)."""
    from devbox import hazards
    from devbox.engines import open_project

    spec = ctx.spec()
    for warning in hazards.opt_in_warnings(spec) if opt_in_warnings else ():
        warn(warning)
    return open_project(spec, ctx.folder(spec), say=click.echo, confirm=_asker(yes))


def _asker(yes: bool) -> Any:
    """How a command asks before discarding files: --yes says yes; a terminal is asked; with
    neither the answer is no (the command refuses and changes nothing)."""

    def confirm(question: str) -> bool:
        if yes:
            return True
        return sys.stdin.isatty() and _ask(question)

    return confirm


def _ask(question: str) -> bool:
    """Ask on the terminal, no by default. Ctrl-C goes on as KeyboardInterrupt (click.confirm
    turns it into Abort: "Aborted!", exit 1), so the command says each host's state and exits
    130, as everywhere else; end of input (Ctrl-D) is no."""
    while True:
        try:
            answer = input(f"{question} [y/N]: ").strip().lower()
        except EOFError:
            click.echo()
            return False
        except KeyboardInterrupt:
            click.echo()  # the host states start on a line of their own, after the ^C
            raise
        if answer in ("", "n", "no"):
            return False
        if answer in ("y", "yes"):
            return True
        click.echo("answer y or n")


def _size(value: float | None) -> str:
    if not value:
        return "-"
    for unit, scale in (("g", 1024**3), ("m", 1024**2)):
        if value >= scale:
            return f"{value / scale:.4g}{unit}"
    return f"{value:.0f}b"


def _gpus_text(host: Any, devices: list[dict[str, Any]]) -> str:
    """A host's GPUs: the devices it was allocated, else its request (a swarm assigns them).

    Never a bare index or count: `0` read as "no GPU" in the first screen users see (issue 21),
    so a device is `#0 (GPU-5d5ba0d6)` and a request `1 GPU`, `2 GPUs` or `all GPUs`.
    """
    if not host.gpus.wanted:
        return "-"
    if devices:
        return _devices_text(devices)
    if host.gpus.device_ids:
        return ", ".join(_device_id_text(device_id) for device_id in host.gpus.device_ids)
    return _count_text(host.gpus.count)


def _device_id_text(device_id: str) -> str:
    """A device as Docker names it: an index is shown as `#0`, a UUID or MIG id as it is."""
    return f"#{device_id}" if device_id.isdigit() else device_id


def _count_text(count: int | None) -> str:
    if count is None or count == -1:
        return "all GPUs"
    return f"{count} GPU" + ("" if count == 1 else "s")


def _requests_text(requests: list[dict[str, Any]]) -> str:
    """GPU requests as Docker applied them: `all GPUs`, `2 GPUs`, or ids `#0, #1` (never `-1`)."""
    parts = []
    for request in requests:
        ids = request.get("device_ids")
        parts.append(", ".join(map(_device_id_text, ids)) if ids else _count_text(request.get("count")))
    return "; ".join(parts) or "-"


def _devices_text(devices: list[dict[str, Any]]) -> str:
    """The ledger's GPUs of a host: index, short UUID and model, e.g. `#0 (GPU-6f2b1c) A100`."""
    shown = []
    for device in devices:
        words = [f"#{device['index']}"]
        if device["uuid"]:
            words.append(f"({device['uuid'][:10]})")
        if device["name"]:
            words.append(device["name"])
        if device.get("missing"):
            words.append("MISSING: not on this machine now")
        shown.append(" ".join(words))
    return ", ".join(shown)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


@cli.command()
@click.argument("hosts", nargs=-1)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for SSH logins.")
@click.option("--yes", is_flag=True, help="Recreate hosts even when that discards files outside their volumes.")
@pass_context
def up(ctx: Context, hosts: tuple[str, ...], timeout: float, yes: bool) -> None:
    """Build once, start the hosts, and wait until each accepts an SSH login."""
    from devbox.operations import gpu_devices
    from devbox.operations import up as run_up

    project = _project(ctx, yes)
    reached = run_up(project, list(hosts) or None, wait_seconds=timeout)
    ledger = None
    if project.wants_gpus():  # the GPU code is not imported for a spec without GPUs
        from devbox.gpus import load_ledger

        ledger = load_ledger(project.folder)
    logins = {target.name: (target, result) for target, result in reached}
    rows = [["HOST", "SSH", "PORT", "GPUS", "CPUS", "MEMORY", "LOGIN"]]
    for host in project.spec.hosts:
        if host.name not in logins:
            continue
        target, result = logins[host.name]
        rows.append([
            host.name, f"ssh -p {host.ssh_port} {project.spec.image.user}@{target.address}",
            str(host.ssh_port), _gpus_text(host, gpu_devices(ledger, host.name) if ledger else []),
            f"{host.limits.cpus:g}" if host.limits.cpus else "-",
            host.limits.memory.text if host.limits.memory else "-", f"ok {result.seconds:.1f}s",
        ])  # fmt: skip
    click.echo(_table(rows))


@cli.command()
@click.option("--volumes", is_flag=True, help="Also delete named volumes (the hosts' data).")
@click.option("--yes", is_flag=True, help="Do not ask before deleting volumes or files outside them.")
@pass_context
def down(ctx: Context, volumes: bool, yes: bool) -> None:
    """Remove the hosts' containers and network; named volumes survive unless --volumes."""
    from devbox.errors import UsageError
    from devbox.operations import down as run_down

    if volumes and not yes and not sys.stdin.isatty():
        raise UsageError("down --volumes deletes the hosts' homes and volumes, and there is no terminal to ask: "
                         "pass --yes to delete them")  # fmt: skip
    project = _project(ctx, yes)
    run_down(project, volumes, ask=True)
    click.echo(f"{project.spec.project}: down" + (" (volumes deleted)" if volumes else ""))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--disk", "with_disk", is_flag=True,
              help="Also what each host holds on disk (home, volumes, container layer) against its budget.")
@pass_context
def status(ctx: Context, as_json: bool, with_disk: bool) -> None:
    """Each host's state, health, SSH port, applied limits and GPUs (--disk: and its disk use)."""
    import json

    from devbox.operations import status as run_status
    from devbox.watch_service import add_idle

    project = _project(ctx)
    entries = run_status(project, disk=with_disk, warn=warn)
    watched = add_idle(project, entries)
    if with_disk:
        _disk_warnings(project, entries)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    rows = [["HOST", "STATE", "HEALTH", "PORT", "CPUS", "MEMORY", "GPUS"]]
    for entry in entries:
        limits = entry.get("limits", {})
        gpus = _devices_text(entry["gpu_devices"]) or _requests_text(entry.get("gpus", []))
        if entry.get("gpus_also_held_by"):
            gpus += f" (also held by {', '.join(entry['gpus_also_held_by'])})"
        state = entry["state"] + (f" ({entry['note']})" if entry.get("note") else "")
        rows.append([
            entry["host"], state, entry.get("health") or "-", str(entry["ssh_port"] or "-"),
            f"{limits['cpus']:g}" if limits.get("cpus") else "-", _size(limits.get("memory")), gpus,
        ])  # fmt: skip
    if any("node" in entry for entry in entries):  # a swarm: where each host's task runs, and its state
        rows[0][1:1] = ["NODE", "TASK"]
        for row, entry in zip(rows[1:], entries, strict=True):
            row[1:1] = [entry.get("node") or "-", entry.get("task") or "-"]
    if watched:  # the idle column only where a host has an idle policy
        rows[0].append("IDLE")
        for row, entry in zip(rows[1:], entries, strict=True):
            row.append(entry["idle"])
    if with_disk:
        rows[0] += ["HOME", "VOLUMES", "LAYER", "DISK"]
        for row, entry in zip(rows[1:], entries, strict=True):
            row += _disk_cells(entry["disk"]) if "disk" in entry else ["-"] * 4
    if any("node" in entry for entry in entries):  # the login line at the node's address
        rows[0].append("SSH")
        for row, entry in zip(rows[1:], entries, strict=True):
            row.append(entry.get("ssh") or "-")
    click.echo(_table(rows))


def _disk_cells(use: dict[str, Any]) -> list[str]:
    """A host's disk columns: home, other volumes, container layer, the total against its budget."""
    from devbox.disk import size_text

    total = size_text(use["total"])
    if use["budget"]:
        total += f" of {size_text(use['budget'])} ({use['used_percent']:.0f} %)"
    volumes = sum(use["volumes"].values()) if use["volumes"] else None
    return [size_text(use["home"]), size_text(volumes), size_text(use["layer"]), total]


def _disk_warnings(project: Any, entries: list[dict[str, Any]]) -> None:
    """Hosts near their budget and a nearly full engine disk, as `up` and `doctor` say them."""
    from devbox import disk

    measured = [disk.HostDisk.from_dict(entry["host"], entry["disk"]) for entry in entries if "disk" in entry]
    for line in disk.warnings(project.client, project.spec, measured):
        warn(line)


cli.add_command(status, name="ps")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_context
def ssh(ctx: Context, host: str, command: tuple[str, ...]) -> None:
    """Log in to HOST with the system ssh client (host key checked): devbox ssh HOST [-- CMD]."""
    import shutil

    from devbox.errors import UsageError
    from devbox.operations import ssh_argv

    project = _project(ctx)
    binary = shutil.which("ssh")
    if binary is None:
        raise UsageError("no ssh client on PATH (install openssh-client)")
    os.execv(binary, ssh_argv(project, host, command))  # noqa: S606 - replaces devbox with ssh, argument list only


@cli.command(name="ssh-config")
@click.option("--address", default=None, help="Address clients use to reach this machine "
              "[default: the bind address, or 127.0.0.1].")  # fmt: skip
@click.option("--write", is_flag=True, help="Write ~/.ssh/devbox/<project>.conf instead of printing.")
@pass_context
def ssh_config(ctx: Context, address: str | None, write: bool) -> None:
    """Host entries for OpenSSH and VS Code Remote-SSH, with host keys verified."""
    from devbox.operations import ssh_config as config_text
    from devbox.state import write_if_changed

    if address is not None:
        _check_address(address)
    project = _project(ctx)
    text = config_text(project, address)
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
def logs(ctx: Context, host: str | None, follow: bool, tail: str) -> None:
    """Show a host's logs (all hosts when none is named)."""
    from devbox.operations import all_logs, stream_logs

    project = _project(ctx)
    if host is None:
        all_logs(project, follow, tail)
        return
    out = sys.stdout.buffer
    for chunk in stream_logs(project, host, follow, tail):
        out.write(chunk)
        out.flush()


@cli.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-u", "--user", default=None, help="Run as this user [default: the login user, image.user].")
@click.option("--root", is_flag=True, help="Run as root (~ is then /root, outside the home volume).")
@pass_context
def exec_cmd(ctx: Context, host: str, command: tuple[str, ...], user: str | None, root: bool) -> None:
    """Run a command in HOST as its login user (HOME its home, the volume that survives
    recreating), streaming its output; exits with the command's exit code. --root or -u USER
    runs it as another user."""
    from devbox.errors import UsageError
    from devbox.operations import exec_in

    if root and user is not None:
        raise UsageError("pass --root or -u USER, not both")
    if root:
        user = "root"

    out = sys.stdout.buffer

    def write(chunk: bytes) -> None:
        out.write(chunk)
        out.flush()

    sys.exit(exec_in(_project(ctx), host, list(command), user, write))


def _print_checks(checks: Any) -> bool:
    """One line per check; returns whether every check passed or was skipped."""
    colours = {"PASS": "green", "FAIL": "red", "SKIP": "yellow", "WARN": "yellow"}
    ok = True
    for check in checks:
        word = click.style(check.word, fg=colours[check.word])
        click.echo(f"{word}  {check.subject:<10} {check.name}: {check.detail}")
        ok = ok and check.ok is not False
    return ok


@cli.command()
@click.option("--deep", is_flag=True, help="Also probe a GPU framework (torch.cuda) if installed.")
@pass_context
def check(ctx: Context, deep: bool) -> None:
    """Prove the running stack matches the spec: logins, network, limits, volumes, GPUs."""
    from devbox.checks import check_stack

    project = _project(ctx)
    project.rendered_once()
    if not _print_checks(check_stack(project, deep)):
        sys.exit(1)


@cli.command()
@pass_context
def doctor(ctx: Context) -> None:
    """Check that this machine can run the spec: engine, compose, ports, resources, GPUs."""
    from devbox.checks import doctor as run_doctor

    if not _print_checks(run_doctor(_project(ctx))):
        sys.exit(1)


@cli.command()
@click.argument("host")
@click.argument("user", required=False)
@pass_context
def passwd(ctx: Context, host: str, user: str | None) -> None:
    """Give HOST's USER (default: the image user) a new generated password."""
    from devbox.passwords import rotate_password

    project = _project(ctx)
    account = user or project.spec.image.user
    live = rotate_password(project, host, account)
    where = project.layout.credentials
    click.echo(f"new password for {host}/{account} is in {where}" + ("" if live else " (applies at `devbox up`)"))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
def gpus(ctx: Context, as_json: bool) -> None:
    """Per GPU of the machine: every container holding it (any spec), memory used, utilisation,
    and its processes by host. Needs no spec: in a folder without devbox.yaml it shows the machine."""
    import json

    from devbox.operations import gpu_usage

    alone = ctx.spec_file == DEFAULT_SPEC and not Path(DEFAULT_SPEC).exists()
    rows = gpu_usage(None if alone else _project(ctx), warn=warn)
    if as_json:
        click.echo(json.dumps([row.as_dict() for row in rows], indent=2))
        return
    table = [["GPU", "UUID", "MODEL", "MEMORY", "UTIL", "HOLDERS"]]
    for row in rows:
        held = [h.text + (f" ({h.device[:12]})" if h.device != row.uuid else "") + (" shared" if h.shared else "")
                + (f" (folder {h.folder})" if h.folder else "") for h in row.holders]  # fmt: skip
        table.append([
            "-" if row.missing else str(row.index), row.uuid[:12], row.name,
            "-" if row.missing else f"{row.memory_used_mib or 0}/{row.memory_total_mib or '?'} MiB",
            "-" if row.utilization is None else f"{row.utilization}%", ", ".join(held) or "-",
        ])  # fmt: skip
    click.echo(_table(table))
    processes = [["PID", "GPU", "HOST", "MEMORY"]]
    processes += [[str(p.pid), str(row.index), p.text,
                   f"{p.used_memory_mib} MiB" if p.used_memory_mib is not None else "-"]
                  for row in rows for p in row.processes]  # fmt: skip
    click.echo("\n" + _table(processes) if len(processes) > 1 else "no processes on the GPUs")


def _progress() -> Any:
    """A copy's progress on a terminal (stderr), one line rewritten in place; None elsewhere."""
    if not sys.stderr.isatty():
        return None
    return lambda line: click.echo(f"\r{line}\033[K", err=True, nl=False)


@cli.command(name="backup")
@click.argument("hosts", nargs=-1)
@click.option("--to", "to", default=None, help="Folder for the archives, or - to stream one to stdout "
              "[default: backups/ beside the spec].")  # fmt: skip
@click.option("--live", is_flag=True, help="Copy running hosts without pausing them (crash-consistent at best).")
@click.option("--keep", type=click.IntRange(min=1), default=None,
              help="Then keep only the N newest backups of each host.")
@pass_context
def backup_cmd(ctx: Context, hosts: tuple[str, ...], to: str | None, live: bool, keep: int | None) -> None:
    """Back up each host's home and named volumes, one archive per host (see README: Your data)."""
    from devbox.backup_ops import backup_hosts
    from devbox.engines import open_project

    spec = ctx.spec()
    streaming = to == "-"
    if streaming and sys.stdout.isatty():
        from devbox.errors import UsageError

        raise UsageError("--to - writes the archive to stdout, which is a terminal; redirect it (> FILE, | ssh ...)")
    project = open_project(spec, ctx.folder(spec), say=lambda line: click.echo(line, err=True))
    out: Any = sys.stdout.buffer if streaming else None
    progress = _progress()
    try:
        backup_hosts(project, list(hosts), to, live=live, keep=keep, progress=progress, stdout=out)
    finally:
        if progress is not None:
            click.echo("", err=True)
    if out is not None:
        out.flush()


@cli.command()
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--host", default=None, help="The host to restore into [default: the archive's host].")
@click.option("--force", is_flag=True, help="Replace volumes that hold files (kept until the restore is verified).")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the SSH login after.")
@pass_context
def restore(ctx: Context, archive: Path, host: str | None, force: bool, timeout: float) -> None:
    """Restore a backup into this spec's host, then start it and check its login."""
    from devbox.backup_ops import restore as run_restore
    from devbox.operations import up as run_up

    project = _project(ctx)
    progress = _progress()
    try:
        name = run_restore(project, archive, host, force, progress)
    finally:
        if progress is not None:
            click.echo("", err=True)
    for target, result in run_up(project, [name], wait_seconds=timeout):
        click.echo(f"{target.name}: up, login ok ({result.seconds:.1f} s): ssh -p {target.port} "
                   f"{target.user}@{target.address}")  # fmt: skip


@cli.command()
@click.option("--in", "folder", default=None, help="The folder to look in [default: backups/ beside the spec].")
@pass_context
def backups(ctx: Context, folder: str | None) -> None:
    """The backups in a folder, per host, with dates and sizes."""
    from devbox.backup import find_archives, human_size

    where = Path(folder) if folder else Path(ctx.spec_file).resolve().parent / "backups"
    found = find_archives(where)
    if not found:
        click.echo(f"no backups in {where}")
        return
    rows = [["HOST", "PROJECT", "MADE", "SIZE", "VOLUMES", "STATE", "FILE"]]
    for archive in sorted(found, key=lambda a: (a.host, a.created)):
        rows.append([archive.host, archive.project, archive.created[:19].replace("T", " "), human_size(archive.size),
                     ",".join(v.key for v in archive.volumes), "complete" if archive.trailer else "INCOMPLETE",
                     archive.path.name])  # fmt: skip
    click.echo(_table(rows))


@cli.command()
@click.argument("host")
@click.option("--for", "duration", default=None, help="How long to hold it, e.g. 12h, 2d.")
@click.option("--clear", is_flag=True, help="End the hold.")
@pass_context
def keep(ctx: Context, host: str, duration: str | None, clear: bool) -> None:
    """Hold HOST: the idle watcher does not stop it for that long (--clear ends the hold)."""
    import time

    from devbox.errors import UsageError
    from devbox.operations import hold

    if clear == (duration is not None):
        raise UsageError("say how long (`devbox keep HOST --for 12h`) or `--clear`")
    until = hold(_project(ctx), host, duration)
    if until is None:
        click.echo(f"{host}: no longer held")
    else:
        click.echo(f"{host}: held until {time.strftime('%Y-%m-%d %H:%M', time.localtime(until))}")


@cli.command()
@click.option("--since", default="7d", show_default=True, help="How far back, e.g. 24h, 7d, 30d.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--html", "html_file", default=None, type=click.Path(dir_okay=False),
              help="Write one self-contained page with a timeline per host.")  # fmt: skip
@pass_context
def usage(ctx: Context, since: str, as_json: bool, html_file: str | None) -> None:
    """Per host, from the idle watcher's samples: GPU hours held and used, idle hours, last login, reclaims."""
    import json

    from devbox.operations import usage as run_usage
    from devbox.usage import html_page, table_rows

    spec = ctx.spec()
    report = run_usage(spec, ctx.folder(spec), since)
    rows = report["rows"]
    if html_file:
        page = html_page(spec.project, rows, report["samples"], report["hosts"], report["start"], report["now"],
                         report["interval"])  # fmt: skip
        Path(html_file).write_text(page, encoding="utf-8")
        click.echo(f"wrote {html_file}")
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not html_file:
        click.echo(_table(table_rows(rows)) if rows else "no samples yet (a host needs an idle policy and `devbox up`)")


@cli.command()
@click.option("--write", is_flag=True, help="Write it beside the spec as .devbox.schema.json (what `init` does).")
@pass_context
def schema(ctx: Context, write: bool) -> None:
    """Print the JSON Schema of the spec, for editors to complete and check devbox.yaml."""
    from devbox.scaffold import write_schema
    from devbox.spec.schema import schema_text

    if write:
        click.echo(f"wrote {write_schema(Path(ctx.spec_file).parent)}")
    else:
        click.echo(schema_text(), nl=False)


def main() -> None:
    """The `devbox` command, as installed. It ends without the interpreter's teardown of its
    modules (0.05-0.08 s at the end of every command once the SDK and paramiko are imported,
    memory the kernel frees at once anyway), after what an exit does for the program: the
    threads that are not daemons are joined, the exit handlers run, the output is flushed."""
    try:
        cli(prog_name="devbox")
    except SystemExit as exited:
        _end(exited.code)
    _end(0)


def _end(code: object) -> None:
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # as SystemExit("text") does
        code = 1
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # logging's flush, and whatever a library registered
    status = code or 0
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`devbox status | head -1`)
            status = status or 120  # what the interpreter's own exit returns then
    os._exit(status)
