"""Project files on disk: scaffolding a spec (`init`) and rendering it into the output folder."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from devbox.errors import UsageError
from devbox.render import (
    COMPOSE_FILE,
    IMAGE_FILE_MODES,
    IMAGE_FILES,
    KNOWN_HOSTS,
    RenderedFile,
    RenderedProject,
    image_file_names,
    image_inputs_key,
    render_project,
    render_template,
)
from devbox.spec import Spec
from devbox.spec.schema import SPEC_SCHEMA_NAME, modeline, schema_text
from devbox.state import CREDENTIALS_FILE, prepare, write_files, write_if_changed

GITIGNORE_LINES = ("# devbox: rendered files, generated passwords and host keys", ".devbox/")


def default_project_name(directory: Path) -> str:
    """A valid project name from the folder's name (lowercase, - for anything else)."""
    name = re.sub(r"[^a-z0-9_-]+", "-", directory.resolve().name.lower()).strip("-_")
    return name[:63] or "devbox"


def init_project(directory: Path, project: str | None, *, force: bool, spec_name: str = "devbox.yaml") -> list[Path]:
    """Write the spec (devbox.yaml unless named) and make .gitignore ignore the output folder.

    Raises UsageError instead of overwriting an existing spec without ``force``; an existing
    .gitignore is only ever appended to.
    """
    directory.mkdir(parents=True, exist_ok=True)
    spec_path = directory / spec_name
    if spec_path.exists() and not force:
        raise UsageError(f"{spec_path} already exists (pass --force to overwrite it)")
    name = project or default_project_name(directory)
    if not re.match(r"^[a-z0-9][a-z0-9_-]{0,62}$", name):
        raise UsageError(f"--project: {name!r} is not a project name (lowercase letters, digits, - and _)")
    spec_path.write_text(render_template("devbox.yaml.j2", project=name, modeline=modeline()), encoding="utf-8")
    written = [spec_path, write_schema(directory)]
    gitignore = directory / ".gitignore"
    existing = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
    if ".devbox/" not in existing.splitlines():
        prefix = existing if not existing or existing.endswith("\n") else existing + "\n"
        write_if_changed(gitignore, prefix + "\n".join(GITIGNORE_LINES) + "\n", 0o644)
        written.append(gitignore)
    return written


def write_schema(directory: Path) -> Path:
    """Write the spec's JSON Schema beside it, where the modeline `init` writes points editors:
    a relative path works offline, on every machine, and in a cloned repository."""
    path = directory / SPEC_SCHEMA_NAME
    write_if_changed(path, schema_text(), 0o644)
    return path


def generated_note(folder: Path, created: list[str]) -> str | None:
    """What to tell the user when a render generated passwords: where to read them."""
    if not created:
        return None
    return f"generated passwords for {', '.join(created)}: read them in {folder / CREDENTIALS_FILE} (mode 0600)"


def recreating_note(names: list[str]) -> str:
    """What to tell the user before hosts are replaced: their containers' own files go with them."""
    return (f"recreating {', '.join(names)} from the current spec and image: "
            "files written outside their volumes start fresh")


def render_to(spec: Spec, folder: Path, environ: Mapping[str, str]) -> tuple[RenderedProject, list[str], list[str]]:
    """Render the spec into ``folder``: (what was rendered, paths that changed, accounts newly generated)."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is not a folder (pass --out to choose another output folder)")
    _refuse_foreign_files(folder)
    material, created = prepare(spec, folder, environ)
    key = image_inputs_key(spec)
    rendered = render_project(spec, material, _image_files_on_disk(spec, folder, key))
    changed = write_files(folder, rendered.files)
    write_if_changed(folder / IMAGE_KEY_FILE, key + "\n", 0o644)
    return rendered, changed, created


IMAGE_KEY_FILE = ".image-key"
# What a render writes at the top of the output folder; state files mark a folder as devbox's.
_OUTPUT_NAMES = (*IMAGE_FILES, ".dockerignore", COMPOSE_FILE, KNOWN_HOSTS, "secrets", "hostkeys")
_STATE_MARKERS = (IMAGE_KEY_FILE, CREDENTIALS_FILE)


def _refuse_foreign_files(folder: Path) -> None:
    """Never overwrite files devbox did not write: `--out .` in a folder with a hand-written
    Dockerfile or docker-compose.yml (seed 001's, say) would replace them."""
    if not folder.is_dir() or any((folder / marker).exists() for marker in _STATE_MARKERS):
        return
    found = [name for name in _OUTPUT_NAMES if (folder / name).exists()]
    if found:
        raise UsageError(f"{folder}: it holds files devbox did not write ({', '.join(found)}); render into "
                         "another folder (--out) or move them away")  # fmt: skip


def _image_files_on_disk(spec: Spec, folder: Path, key: str) -> list[RenderedFile] | None:
    """The image files as last rendered, if they were rendered from these very inputs."""
    try:
        if (folder / IMAGE_KEY_FILE).read_text(encoding="utf-8").strip() != key:
            return None
        return [
            RenderedFile(name, (folder / name).read_text(encoding="utf-8"), IMAGE_FILE_MODES[name])
            for name in image_file_names(spec)
        ]
    except (OSError, UnicodeDecodeError):
        return None
