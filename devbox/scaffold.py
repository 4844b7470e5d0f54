"""`devbox init`: a commented spec to start from, and a .gitignore that keeps secrets out of git."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

from devbox.errors import UsageError
from devbox.render import render_template
from devbox.spec.schema import SPEC_SCHEMA_NAME, modeline, schema_text
from devbox.state import write_if_changed

GITIGNORE_LINES = ("# devbox: rendered files, generated passwords and host keys", ".devbox/", ".devbox-*/")


def default_project_name(directory: Path) -> str:
    """A valid project name from the folder's name: accents dropped (``ünï`` is ``uni``),
    lowercase, ``-`` for anything else.

    Raises UsageError when the name has letters with no ASCII form (``实验``): dropping them would
    leave a name that says nothing (or collides), so `init` asks for --project instead."""
    folder = directory.resolve().name
    ascii_name = unicodedata.normalize("NFKD", folder).encode("ascii", "ignore").decode()
    lost = [char for char in unicodedata.normalize("NFKD", folder)
            if not char.isascii() and unicodedata.category(char).startswith(("L", "N"))]  # fmt: skip
    if lost:
        raise UsageError(f"the folder name {folder!r} has no project name in a-z, 0-9, - and _ "
                         "(name one: devbox init --project NAME)")  # fmt: skip
    name = re.sub(r"[^a-z0-9_-]+", "-", ascii_name.lower()).strip("-_")
    return name[:63].rstrip("-_") or "devbox"


def free_project_name(name: str, taken: Callable[[str], bool]) -> str:
    """``name``, or the first of ``name-2``, ``name-3``, ... that ``taken`` says is free."""
    candidate, number = name, 2
    while taken(candidate):
        suffix = f"-{number}"
        candidate, number = name[: 63 - len(suffix)].rstrip("-_") + suffix, number + 1
    return candidate


def init_project(directory: Path, project: str | None, *, force: bool, spec_name: str = "devbox.yaml",
                 taken: Callable[[str], bool] | None = None,
                 say: Callable[[str], None] | None = None, gpu_units: int | None = None) -> list[Path]:  # fmt: skip
    """Write the spec (devbox.yaml unless named) and make .gitignore ignore the output folder.

    ``taken``: whether the engine already holds a project of that name (None: it cannot be
    asked, offline); a name derived from the folder that is taken becomes a free one (``-2``,
    ``-3``...) and ``say`` hears so: two folders of the same name would otherwise share (and
    refuse) one project. Raises UsageError instead of overwriting an existing spec without
    ``force``; an existing .gitignore is only ever appended to.

    ``gpu_units``: how many GPUs this machine has (None: unknown, no nvidia-smi). The example gives
    master and worker a GPU each; on a machine with fewer it gives what there is, so the spec init
    writes validates and comes up on the machine it was written on.
    """
    directory.mkdir(parents=True, exist_ok=True)
    spec_path = directory / spec_name
    if spec_path.exists() and not force:
        raise UsageError(f"{spec_path} already exists (pass --force to overwrite it)")
    name = project or default_project_name(directory)
    if project is None and taken is not None:
        free = free_project_name(name, taken)
        if free != name and say:
            say(f"project name {name!r} is taken on the engine by another project: using {free!r} "
                "(or pass --project NAME)")  # fmt: skip
        name = free
    if not re.match(r"^[a-z0-9][a-z0-9_-]{0,62}$", name):
        raise UsageError(f"--project: {name!r} is not a project name (lowercase letters, digits, - and _)")
    gitignore = directory / ".gitignore"
    if gitignore.exists() and not gitignore.is_file():
        raise UsageError(f"{gitignore}: not a file; move it away, or add `.devbox/` to your ignore rules "
                         "yourself and run init again")  # fmt: skip
    spec_path.write_text(render_template("devbox.yaml.j2", project=name, modeline=modeline(),
                                         gpu_units=gpu_units), encoding="utf-8")
    written = [spec_path, write_schema(directory)]
    existing = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
    missing = [line for line in GITIGNORE_LINES[1:] if line not in existing.splitlines()]
    if missing:
        prefix = existing if not existing or existing.endswith("\n") else existing + "\n"
        lines = [GITIGNORE_LINES[0], *missing] if len(missing) == len(GITIGNORE_LINES) - 1 else missing
        write_if_changed(gitignore, prefix + "\n".join(lines) + "\n", 0o644)
        written.append(gitignore)
    return written


def write_schema(directory: Path) -> Path:
    """Write the spec's JSON Schema beside it, where the modeline `init` writes points editors:
    a relative path works offline, on every machine, and in a cloned repository."""
    path = directory / SPEC_SCHEMA_NAME
    write_if_changed(path, schema_text(), 0o644)
    return path
