"""The click layer: parse options, call the spec/render/state/runner layers, print results.

Only click is imported at module level so `devbox --help` stays fast; each command imports what
it needs. Every DevboxError becomes one red line per problem and its exit code, never a traceback.
"""

from __future__ import annotations

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

    def __init__(self, spec_file: str, out: str | None, gpu: bool) -> None:
        self.spec_file = spec_file
        self.out = out
        self.gpu = gpu

    def spec(self) -> Spec:
        from devbox.spec import load_spec

        spec = load_spec(self.spec_file, gpu=None if self.gpu else False)
        for warning in spec.warnings:
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
@click.version_option(package_name="devbox")
@click.pass_context
def cli(ctx: click.Context, spec_file: str, out: str | None, no_gpu: bool) -> None:
    """Carve one GPU server into isolated, SSH-able development hosts."""
    ctx.obj = Context(spec_file, out, gpu=not no_gpu)


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--project", default=None, help="Project name [default: the folder's name].")
@click.option("--force", is_flag=True, help="Overwrite an existing devbox.yaml.")
@reports_errors
def init(directory: str, project: str | None, force: bool) -> None:
    """Write a commented devbox.yaml (two GPU hosts) and a .gitignore for secrets."""
    from devbox.project import init_project

    written = init_project(Path(directory), project, force=force)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo("next: edit devbox.yaml, then `devbox validate` and `devbox up`")


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
    from devbox.project import render_to

    spec = ctx.spec()
    folder = ctx.folder(spec)
    files, changed, created = render_to(spec, folder, os.environ)
    for warning in _opt_in_warnings(spec):
        warn(warning)
    if created:
        click.echo(f"generated passwords for {', '.join(created)}: "
                   f"read them in {folder / 'credentials.yaml'}")  # fmt: skip
    return spec, folder, files, changed


def _opt_in_warnings(spec: Spec) -> list[str]:
    """What the spec opens up that the user should hear about every time."""
    warnings = []
    for host in spec.hosts:
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


def main() -> None:
    cli(prog_name="devbox")
