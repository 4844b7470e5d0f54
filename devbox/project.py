"""A project: a spec, its output folder, and (once connected) the engine it runs on.

``Project`` is the context every command works in: it renders the spec into the folder (files
named by devbox.layout), holds the project's lock, and finds the project's containers by
devbox's labels, refusing those another spec made. It knows nothing of compose or swarm: the
engines (devbox.engines) act on a Project.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox import probe
from devbox.docker_api import StartWatch, connect
from devbox.errors import PreflightError, UsageError
from devbox.layout import IMAGE_FILE_MODES, OUTPUT_NAMES, STATE_MARKERS, Layout
from devbox.render import (
    LABEL_PREFIX,
    RenderedFile,
    RenderedProject,
    host_key_alias,
    image_file_names,
    image_inputs_key,
    render_project,
)
from devbox.spec import Host, Spec
from devbox.state import Credentials, prepare, project_lock, write_files, write_if_changed

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

Say = Callable[[str], None]


@dataclass
class Project:
    """A spec, its output folder, and (once connected) the engine and compose it runs on."""

    spec: Spec
    folder: Path
    say: Say = print
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    _client: Any = None

    @property
    def layout(self) -> Layout:
        return Layout(self.folder)

    @property
    def compose_file(self) -> str:
        return str(self.layout.compose_file)

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect()
        return self._client

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """This project's lock; says so when another devbox command holds it."""
        return project_lock(self.folder, on_wait=lambda: self.say(
            f"waiting for another devbox command on {self.spec.project} to finish..."))

    def rendered_once(self) -> None:
        """Render only if nothing was rendered yet: looking at a stack needs its known_hosts, not
        fresh secrets (which may need variables that are not set now)."""
        if not self.layout.known_hosts.is_file() or not self.layout.compose_file.is_file():
            self.render()

    def render(self) -> RenderedProject:
        rendered, _changed, created = render_to(self.spec, self.folder, self.environ)
        note = generated_note(self.folder, created)
        if note:
            self.say(note)
        return rendered

    def start_watch(self) -> StartWatch:
        """This project's container starts as they happen, so each host is probed from its own."""
        return StartWatch(self.client, f"{LABEL_PREFIX}project={self.spec.project}", f"{LABEL_PREFIX}host")

    def containers(self, host: str | None = None) -> dict[str, Container]:
        """This project's containers by host name (running or not; a running one wins); only
        ``host``'s when one is named.

        Found by devbox's own labels, which compose and swarm containers both carry; those of
        another spec under the same project name are refused here, for every command. One list
        call, then only the containers returned are inspected, side by side: the SDK's own list
        inspects every container one after another (33 requests in a row for 32 hosts).
        """
        label = f"{LABEL_PREFIX}project={self.spec.project}"
        found = self.client.containers.list(all=True, sparse=True, filters={"label": [label]})
        self._refuse_foreign([summary_labels(c) for c in found])
        if host is not None:
            found = [c for c in found if summary_labels(c).get(f"{LABEL_PREFIX}host") == host]
        inspect_all(found)
        found.sort(key=lambda c: c.status == "running")
        return {c.labels.get(f"{LABEL_PREFIX}host", c.name): c for c in found}

    def check_owner(self, containers: Mapping[str, Container]) -> None:
        """Refuse to act on containers another spec made under the same project name.

        Compose knows a project only by its name: a second spec with the same ``project:`` (say,
        `devbox init` in two folders of the same name) would remove the first one's hosts at
        `up` and their volumes at `down --volumes`. Compose labels each container with its file.
        """
        self._refuse_foreign([container.labels for container in containers.values()])

    def _refuse_foreign(self, labels: list[Mapping[str, str]]) -> None:
        ours = os.path.realpath(self.compose_file)
        for container_labels in labels:
            theirs = container_labels.get("com.docker.compose.project.config_files", "")
            if theirs and os.path.realpath(theirs) != ours:
                raise PreflightError(f"project {self.spec.project!r} already runs from {Path(theirs).parent}, "
                                     f"another spec's: give {self.spec.source} another `project:` name, or run "
                                     "devbox with that spec")  # fmt: skip

    def container(self, host: str) -> Container:
        self.host(host)
        container = self.containers(host).get(host)
        if container is None:
            raise UsageError(f"host {host!r} has no container (run `devbox up {host}`)")
        return container

    def host(self, name: str) -> Host:
        try:
            return self.spec.host(name)
        except KeyError:
            known = ", ".join(h.name for h in self.spec.hosts)
            raise UsageError(f"no host {name!r} in {self.spec.source} (hosts: {known})") from None

    def targets(self, hosts: list[Host], addresses: Mapping[str, str]) -> list[probe.Target]:
        """Login targets for SSH probes: ``addresses`` (where the engine says each host is
        reached), its port, the user's password, the expected host key."""
        credentials = Credentials.load(self.folder)
        known = dict(line.split(" ", 1) for line in self.layout.known_hosts.read_text().splitlines() if line)
        return [
            probe.Target(
                host.name, addresses[host.name], host.ssh_port, self.spec.image.user,
                credentials.account(host.name, self.spec.image.user, self.environ).password,
                known[host_key_alias(self.spec, host)], key_only=not host.password_auth,
            )
            for host in hosts
        ]  # fmt: skip


def summary_labels(container: Container) -> Mapping[str, str]:
    """A container's labels, also from a sparse listing (where the SDK's ``labels`` raises)."""
    return container.attrs.get("Labels") or (container.attrs.get("Config") or {}).get("Labels") or {}


def inspect_all(containers: list[Container]) -> None:
    """Inspect listed containers side by side (``reload``): the engine answers each in a few ms,
    and one after another they made a 32-host `status` wait on 32 round trips."""
    if len(containers) < 2:
        for container in containers:
            container.reload()
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, len(containers))) as pool:
        list(pool.map(lambda container: container.reload(), containers))


# --------------------------------------------------------------------------- rendering to disk


def generated_note(folder: Path, created: list[str]) -> str | None:
    """What to tell the user when a render generated passwords: where to read them."""
    if not created:
        return None
    return f"generated passwords for {', '.join(created)}: read them in {Layout(folder).credentials} (mode 0600)"


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
    write_if_changed(Layout(folder).image_key, key + "\n", 0o644)
    return rendered, changed, created


def _refuse_foreign_files(folder: Path) -> None:
    """Never overwrite files devbox did not write: `--out .` in a folder with a hand-written
    Dockerfile or docker-compose.yml (seed 001's, say) would replace them."""
    if not folder.is_dir() or any((folder / marker).exists() for marker in STATE_MARKERS):
        return
    found = [name for name in OUTPUT_NAMES if (folder / name).exists()]
    if found:
        raise UsageError(f"{folder}: it holds files devbox did not write ({', '.join(found)}); render into "
                         "another folder (--out) or move them away")  # fmt: skip


def _image_files_on_disk(spec: Spec, folder: Path, key: str) -> list[RenderedFile] | None:
    """The image files as last rendered, if they were rendered from these very inputs."""
    try:
        if Layout(folder).image_key.read_text(encoding="utf-8").strip() != key:
            return None
        return [
            RenderedFile(name, (folder / name).read_text(encoding="utf-8"), IMAGE_FILE_MODES[name])
            for name in image_file_names(spec)
        ]
    except (OSError, UnicodeDecodeError):
        return None
