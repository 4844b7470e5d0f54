"""A project: a spec, its output folder, and (once connected) the engine it runs on.

``Project`` is the context every command works in: it renders the spec into the folder (files
named by devbox.layout), holds the project's lock, and finds the project's containers by
devbox's labels, refusing those another spec made. It knows nothing of compose or swarm: the
engines (devbox.engines) act on a Project.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox import probe
from devbox.docker_api import StartWatch, connect, list_containers
from devbox.errors import EngineError, PreflightError, UsageError
from devbox.labels import LABEL_PREFIX, OWNER_FOLDER_LABEL, OWNER_LABEL
from devbox.layering import ImageLayers
from devbox.layout import COMPOSE_FILE, IMAGE_FILE_MODES, OUTPUT_NAMES, STATE_MARKERS, Layout
from devbox.render import (
    RenderedFile,
    RenderedProject,
    host_key_alias,
    image_file_names,
    image_inputs_key,
    image_layers,
    render_project,
)
from devbox.spec import Host, Spec
from devbox.state import (
    Credentials,
    owner_id,
    prepare,
    project_lock,
    read_known_hosts,
    write_files,
    write_if_changed,
)

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

    from devbox.changes import Changes
    from devbox.engines.base import Engine
    from devbox.gpus import Allocation, Holding
    from devbox.machine_lock import MachineLock

Say = Callable[[str], None]
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_FILES_LABEL = "com.docker.compose.project.config_files"


@dataclass
class Project:
    """A spec, its output folder, and (once connected) the engine and compose it runs on."""

    spec: Spec
    folder: Path
    say: Say = print
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    # Asks the user a yes/no question (before files are discarded); None: nobody to ask (refuse).
    confirm: Callable[[str], bool] | None = None
    _client: Any = None
    _engine: Any = None
    _checked_volumes: bool = False  # the project's volumes and networks passed the owner check
    _reusing: bool = False  # inside reusing_containers(): one read serves every step
    _read: list[Any] | None = None  # that read, until forget_containers()

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

    @property
    def engine(self) -> Engine:
        """The engine the spec names, given when the project is made (devbox.engines.open_project,
        as docker/compose's ``Project.from_config``): every step of a command asks this one."""
        if self._engine is None:
            raise TypeError("a Project made without its engine: make it with devbox.engines.open_project")
        return self._engine

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """This project's lock; says so when another devbox command holds it."""
        return project_lock(self.folder, on_wait=lambda: self.say(
            f"waiting for another devbox command on {self.spec.project} to finish..."))

    def rendered_once(self) -> None:
        """Render only if nothing was rendered yet: looking at a stack needs its known_hosts, not
        fresh secrets (which may need variables that are not set now)."""
        if not self.layout.known_hosts.is_file() or not self.layout.compose_file.is_file():
            self.render(save_gpus=False)

    def render(self, *, allocate_gpus: bool | None = None, engine_gpus: bool = False,
               save_gpus: bool = True) -> RenderedProject:  # fmt: skip
        """Render into the folder; ``allocate_gpus``: give each GPU host devices of its own (by
        default as the engine does: a swarm hands out GPUs itself, and gets none); ``engine_gpus``:
        none that another container on the engine holds (`up` does this under ``gpu_lock``);
        ``save_gpus``: keep what was given out in the GPU ledger (only `up`, which starts the
        containers that hold them, should; the others render with the ledger as it is)."""
        if allocate_gpus is None:
            allocate_gpus = self.engine.allocates_gpus
        holdings = self.engine_gpu_holdings() if allocate_gpus and engine_gpus else ()
        quota = engine_gpus and self.spec.engine == "compose" and any(h.disk for h in self.spec.hosts) \
            and self._layer_quota()
        rendered, _changed, created = render_to(self.spec, self.folder, self.environ, allocate_gpus=allocate_gpus,
                                                say=self.say, holdings=holdings, save_gpus=save_gpus,
                                                layer_quota=quota)  # fmt: skip
        for line in rendered.notes:
            self.say(f"note: {line}")
        note = generated_note(self.folder, created)
        if note:
            self.say(note)
        return rendered

    def _layer_quota(self) -> bool:
        """Whether this engine caps container layers (a host's disk budget then does); said once."""
        from devbox.disk import layer_quota

        cap = layer_quota(self.client.info())
        if cap:
            self.say(f"note: the engine caps each host's container layer at its disk budget ({cap}); its home "
                     "and volumes are warned about, not capped")  # fmt: skip
        return cap is not None

    def wants_gpus(self) -> bool:
        return any(host.gpus.wanted for host in self.spec.hosts)

    def engine_gpu_holdings(self) -> list[Holding]:
        """What every container on the engine holds of the GPUs (none read when no host wants any)."""
        if not self.wants_gpus():
            return []
        from devbox.gpus import engine_holdings

        return engine_holdings(self.client)

    def gpu_lock(self, allocates_gpus: bool) -> MachineLock:
        """The machine-wide lock on giving out GPUs (devbox.machine_lock.MachineLock), when this spec's
        hosts take GPUs that devbox gives out (a lock that locks nothing otherwise)."""
        from devbox.machine_lock import MachineLock, engine_id, lock_path

        if not (allocates_gpus and self.wants_gpus()):
            return MachineLock(None)
        path = lock_path(engine_id(self.client, self.environ), self.environ)
        return MachineLock(path, on_wait=lambda: self.say(
            f"waiting for another devbox up on this engine to finish giving out GPUs (lock {path})..."))

    def start_watch(self) -> StartWatch:
        """This project's container starts as they happen, so each host is probed from its own."""
        return StartWatch(self.client, f"{LABEL_PREFIX}project={self.spec.project}", f"{LABEL_PREFIX}host")

    @contextlib.contextmanager
    def reusing_containers(self) -> Iterator[None]:
        """Reads of the project's containers give one answer inside this block, until
        ``forget_containers`` (which whatever changes a container in it calls): the first
        steps of `up` each ask, and each read is a listing plus an inspect of every container."""
        outer, self._reusing = self._reusing, True
        try:
            yield
        finally:
            self._reusing = outer
            if not outer:
                self._read = None

    def forget_containers(self) -> None:
        """Something changed the project's containers: the next read asks the engine again."""
        self._read = None

    def listing(self) -> list[Container]:
        """Every container of this project (any state, any name), fully inspected."""
        if self._reusing and self._read is not None:
            return list(self._read)
        label = f"{LABEL_PREFIX}project={self.spec.project}"
        found = list_containers(self.client, all=True, filters={"label": [label]})
        if self._reusing:
            self._read = found
        return list(found)

    def containers(self, host: str | None = None) -> dict[str, Container]:
        """This project's containers by host name (running or not; a running one wins); only
        ``host``'s when one is named.

        Found by devbox's own labels, which compose and swarm containers both carry; those of
        another spec under the same project name are refused here, for every command. One list
        call, then only the containers returned are inspected, side by side: the SDK's own list
        inspects every container one after another (33 requests in a row for 32 hosts).
        """
        label = f"{LABEL_PREFIX}project={self.spec.project}"
        only = None if host is None else lambda labels: labels.get(f"{LABEL_PREFIX}host") == host
        with ThreadPoolExecutor(max_workers=1) as pool:  # the first owner check's lists, meanwhile
            others = None if self._checked_volumes else pool.submit(self._volumes_and_networks)
            if self._reusing:
                found = [c for c in self.listing() if only is None or only(c.labels)]
            else:
                found = list_containers(self.client, all=True, filters={"label": [label]}, keep=only)
            found.sort(key=lambda c: c.status == "running")
            containers = {c.labels.get(f"{LABEL_PREFIX}host", c.name): c for c in found}
            self.check_owner(containers, others.result() if others is not None else None)
        return containers

    @property
    def owner(self) -> str | None:
        """This spec's owner id (devbox.state.owner_id), None before its first render."""
        return owner_id(self.folder, create=False)

    def owner_labels(self) -> dict[str, str]:
        """The labels of an object devbox makes through the SDK: project, owner and its folder."""
        return {f"{LABEL_PREFIX}project": self.spec.project, OWNER_LABEL: str(owner_id(self.folder)),
                OWNER_FOLDER_LABEL: str(self.folder)}  # fmt: skip

    def check_owner(self, containers: Mapping[str, Container],
                    others: list[tuple[str, str, Mapping[str, str]]] | None = None) -> None:  # fmt: skip
        """Refuse to act on a project another spec made under the same project name.

        Compose knows a project only by its name: a second spec with the same ``project:`` (say,
        `devbox init` in two folders of the same name) would remove the first one's hosts at
        `up`, mount its volumes (and read its data) and delete them at `down --volumes`, also
        with the first one's hosts down. So the containers given and (once) the project's
        volumes and networks are checked: each carries its owner's id (OWNER_LABEL); ``others``:
        those, listed already (kind, name, labels).
        """
        found = [("container", c.name, c.labels) for c in containers.values()]
        if not self._checked_volumes:
            found += others if others is not None else self._volumes_and_networks()
        self.check_labels(found)
        self._checked_volumes = True

    def _volumes_and_networks(self) -> list[tuple[str, str, Mapping[str, str]]]:
        """The project's volumes and networks, by compose's project label or devbox's own."""
        found: dict[tuple[str, str], Mapping[str, str]] = {}
        for label in (f"{COMPOSE_PROJECT_LABEL}={self.spec.project}", f"{LABEL_PREFIX}project={self.spec.project}"):
            for volume in self.client.volumes.list(filters={"label": label}):
                found[("volume", volume.name)] = volume.attrs.get("Labels") or {}
            for network in self.client.networks.list(filters={"label": label}):
                found[("network", network.name)] = network.attrs.get("Labels") or {}
        return [(kind, name, labels) for (kind, name), labels in sorted(found.items())]

    def check_labels(self, found: list[tuple[str, str, Mapping[str, str]]]) -> None:
        """Refuse objects (kind, name, labels) of another owner, with one line naming its folder.

        One of this owner id made from another folder that still holds that id belongs to the
        original, not to this copy (refused); made from a folder that is gone, to this moved one.
        An object without an owner label was made by an older devbox (or by compose from a
        render older than the labels on volumes and networks): it is taken as this spec's when
        nothing says otherwise (compose's config-file label names this folder, or nothing
        names any), and said once (noted in the folder's ``adopted`` file).
        """
        legacy, ours = [], self.owner
        for kind, name, labels in found:
            owner, origin = labels.get(OWNER_LABEL), origin_folder(labels)
            if owner and owner == ours and origin is not None and not same_path(origin, self.folder):
                self._refuse_a_copy(origin, kind, name)  # a moved folder (its old one gone) is ours
                continue
            if (owner and owner == ours) or (origin is not None and same_path(origin, self.folder)):
                if not owner:
                    legacy.append(f"{kind} {name}")
                continue  # ours (the same folder after a lost owner file is ours too)
            if owner or origin is not None:
                where = f"{origin}, another spec's" if origin else "another spec (its folder unknown)"
                raise PreflightError(f"project {self.spec.project!r} already runs from {where} ({kind} {name}): "
                                     f"give {self.spec.source} another `project:` name, or run devbox with "
                                     "that spec")  # fmt: skip
            legacy.append(f"{kind} {name}")
        self._note_adopted(legacy)

    def _refuse_a_copy(self, origin: str, kind: str, name: str) -> None:
        """An object of this owner id made from another folder: that folder still holding the same
        owner id means this one is a copy (`cp -a p1 p1copy`), which must not take over, nor
        delete, the original's hosts and volumes; a folder that is gone was moved here (the same
        owner: its hosts are recreated from here by `up`)."""
        try:
            original = owner_id(Path(origin), create=False) if Path(origin).is_dir() else None
        except UsageError:  # a damaged owner file there: not this one's original
            original = None
        if original != self.owner:
            return
        raise PreflightError(
            f"project {self.spec.project!r} runs from {origin} ({kind} {name}), and this folder is a copy of it "
            f"(the same owner id in {self.layout.owner}): to run the copy as a project of its own, give "
            f"{self.spec.source} another `project:` name and remove {self.layout.owner}; to run the original, "
            f"run devbox in {Path(origin).parent}")

    def _note_adopted(self, names: list[str]) -> None:
        """Say once which unowned objects this spec took as its own."""
        path = self.layout.adopted
        try:
            known = set(path.read_text(encoding="utf-8").splitlines())
        except (OSError, UnicodeDecodeError):
            known = set()
        new = [name for name in names if name not in known]
        if not new:
            return
        self.say(f"note: taking {', '.join(new)} as this spec's: they carry no owner label (made by an "
                 "older devbox, or by compose from an older render) and nothing names another spec")  # fmt: skip
        if self.folder.is_dir():  # a command that renders nothing makes no folder
            write_if_changed(path, "".join(f"{name}\n" for name in sorted(known | set(new))), 0o644)

    def consent_to_discard(self, containers: Mapping[str, Container], action: str,
                           found: list[Changes] | None = None) -> None:  # fmt: skip
        """Name the files that ``containers`` hold outside their volumes (devbox.changes), which
        ``action`` ("recreating", "down") would discard, and ask first. ``found``: those files,
        when the caller read them already (`up` reads them while it builds).

        Raises PreflightError (nothing changed yet) when the user says no or nobody can be asked
        (no terminal and no --yes).
        """
        from devbox.changes import changes_of

        if found is None:
            found = changes_of(containers)
        if not found:
            return
        listing = self.layout.outside_volumes
        if any(changes.collapsed for changes in found) and self.folder.is_dir():
            write_if_changed(listing, "".join(f"{c.host}: {path}\n" for c in found for path in c.paths), 0o644)
        for changes in found:
            self.say(changes.line(str(listing)))
        hosts = ", ".join(changes.host for changes in found)
        if self.confirm is None or not self.confirm(f"{action} {hosts} discards these files; go on?"):
            raise PreflightError(f"{hosts}: files outside the volumes would be lost by {action}; copy them into "
                                 "the home or a volume first, or pass --yes to discard them")  # fmt: skip

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
        known = read_known_hosts(self.layout.known_hosts)
        missing = [host.name for host in hosts if host_key_alias(self.spec, host) not in known]
        if missing:
            raise UsageError(f"{self.layout.known_hosts}: no key for {', '.join(missing)}; run `devbox render` "
                             "to write it again from the host keys")  # fmt: skip
        return [
            probe.Target(
                host.name, addresses[host.name], host.ssh_port, self.spec.image.user,
                credentials.account(host.name, self.spec.image.user, self.environ).password,
                known[host_key_alias(self.spec, host)], key_only=not host.password_auth,
            )
            for host in hosts
        ]  # fmt: skip


def origin_folder(labels: Mapping[str, str]) -> str | None:
    """The output folder of the spec an object was made from, when its labels say: devbox's
    own label, or the folder of compose's config file (on containers)."""
    if labels.get(OWNER_FOLDER_LABEL):
        return labels[OWNER_FOLDER_LABEL]
    files = labels.get(COMPOSE_FILES_LABEL, "")
    return str(Path(files.split(",")[0]).parent) if files else None


def same_path(first: str | os.PathLike[str], second: str | os.PathLike[str]) -> bool:
    return os.path.realpath(first) == os.path.realpath(second)


def names_in_use(client: docker.DockerClient) -> Callable[[str], bool]:
    """Whether a project name is taken on the engine: containers, volumes or networks carry it
    (devbox's label or compose's), for `devbox init` to pick another."""

    def taken(name: str) -> bool:
        for label in (f"{LABEL_PREFIX}project={name}", f"{COMPOSE_PROJECT_LABEL}={name}"):
            filters = {"label": label}
            if (client.containers.list(all=True, filters=filters, sparse=True) or client.volumes.list(filters=filters)
                    or client.networks.list(filters=filters)):  # fmt: skip
                return True
        return False

    return taken


def engine_names_in_use() -> Callable[[str], bool] | None:
    """``names_in_use`` on the engine DOCKER_HOST names; None when no engine answers (init works
    offline), and a name is taken as free when the engine stops answering mid-way."""
    from devbox.docker_api import connect, engine_errors

    try:
        with engine_errors():
            client = connect(timeout=5)
    except EngineError:
        return None
    taken = names_in_use(client)

    def asked(name: str) -> bool:
        try:
            with engine_errors():
                return taken(name)
        except EngineError:
            return False

    return asked


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


def render_to(spec: Spec, folder: Path, environ: Mapping[str, str], *, allocate_gpus: bool = True,
              say: Say | None = None, save_gpus: bool = True, holdings: Sequence[Holding] = (),
              layer_quota: bool = False) -> tuple[RenderedProject, list[str], list[str]]:  # fmt: skip
    """Render the spec into ``folder``: (what was rendered, paths that changed, accounts newly generated).

    GPU hosts get devices of their own from the project's GPU ledger (devbox.gpus), unless
    ``allocate_gpus`` is off, and none that another spec's container holds (``holdings``: what
    the engine's containers hold); an oversubscribed spec or a full machine is refused before
    anything is written.
    """
    check_output_folder(folder)
    gpus = allocate_gpus_of(spec, folder, environ, holdings=holdings, save=save_gpus) if allocate_gpus else None
    material, created = prepare(spec, folder, environ, say)
    layers = layers_after_last_render(spec, folder)
    key = image_inputs_key(spec, layers)
    owner = owner_id(folder)
    rendered = render_project(spec, material, _image_files_on_disk(spec, folder, key), gpus, owner,
                              _compose_on_disk(folder), layers, layer_quota)  # fmt: skip
    changed = write_files(folder, rendered.files)
    write_if_changed(Layout(folder).image_layers, layers.to_text(), 0o644)
    write_if_changed(Layout(folder).image_key, key + "\n", 0o644)
    compose_text = next(file.content for file in rendered.files if file.path == COMPOSE_FILE)
    write_if_changed(Layout(folder).compose_key, f"{rendered.compose_key} {_digest(compose_text)}\n", 0o644)
    return rendered, changed, created


def layers_after_last_render(spec: Spec, folder: Path) -> ImageLayers:
    """The image's package and requirement layers: those of the folder's last render kept where
    the spec still wants them whole, one more for what it adds (devbox.layering)."""
    try:
        before = ImageLayers.from_text(Layout(folder).image_layers.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        before = ImageLayers()
    return image_layers(spec, before)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _compose_on_disk(folder: Path) -> tuple[str, str] | None:
    """(compose_key, text) of docker-compose.yml as last rendered, if it is still the file devbox
    wrote (a hand-edited one is rendered anew, and so written over)."""
    layout = Layout(folder)
    try:
        key, digest = layout.compose_key.read_text(encoding="utf-8").split()
        text = layout.compose_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return (key, text) if _digest(text) == digest else None


def allocate_gpus_of(spec: Spec, folder: Path, environ: Mapping[str, str], *, save: bool = True,
                     holdings: Sequence[Holding] = ()) -> Allocation | None:  # fmt: skip
    """The devices of every GPU host (None when no host wants any), kept in the ledger (``save``),
    none that ``holdings`` of other specs and tools hold."""
    if not any(host.gpus.wanted for host in spec.hosts):
        return None
    from devbox.gpus import assign, owned_by, requests_of

    ours = owned_by(spec.project, owner_id(folder, create=False), folder)
    return assign(requests_of(spec.hosts), folder, spec.source, environ=environ, save=save, holdings=holdings,
                  ours=ours)  # fmt: skip


def check_output_folder(folder: Path) -> None:
    """Refuse an output folder devbox cannot use: not a folder, or one holding others' files."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is not a folder (pass --out to choose another output folder)")
    _refuse_foreign_files(folder)


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
