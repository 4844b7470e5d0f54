"""Renderers: a validated Spec (plus the keys and hashes devbox generated) in, file texts out.

Everything here is pure and deterministic: the same inputs give the same bytes, so `render` can
skip files that did not change and `up` can tell when nothing changed. The Dockerfile and the
entrypoint come from Jinja2 templates shipped in the package; docker-compose.yml is built as data
and dumped with PyYAML, never text-templated, so no spec value can break its structure.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from devbox.labels import GPU_SHARE_LABEL, LABEL_PREFIX, OWNER_LABEL
from devbox.layering import REMOVED, ImageLayers, is_removal, plan, requirement_lines
from devbox.layout import (
    COMPOSE_FILE,
    DOCKERIGNORE,
    IMAGE_FILE_MODES,
    IMAGE_FILES,
    KNOWN_HOSTS,
    host_secret,
    passwords_path,
    secret_sources,
)
from devbox.spec import Host, Spec
from devbox.spec.rules import STEPS_OF_USE

if TYPE_CHECKING:
    import jinja2


BASE_PACKAGES = ("ca-certificates", "openssh-server", "sudo")  # gpgv (in apt) verifies signatures


class Assignment(Protocol):
    """The devices one GPU host was given (devbox.gpus.Assignment): the renderer needs only its
    part of the compose GPU reservation, so it does not depend on how GPUs are allocated."""

    def compose_fields(self) -> dict[str, Any]: ...


class Allocation(Protocol):
    """Every GPU host's devices (devbox.gpus.Allocation), and what to tell the user about them."""

    @property
    def notes(self) -> tuple[str, ...]: ...

    def of(self, host: str) -> Assignment | None: ...


@dataclass(frozen=True)
class RenderedFile:
    """One output file: its path relative to the output folder, its text and its mode."""

    path: str
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class HostMaterial:
    """What devbox generated once for a host and keeps with the project (see devbox.state)."""

    password_hashes: tuple[tuple[str, str], ...]
    host_public_key: str


@functools.lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    """One Jinja2 environment for the package's templates; imported lazily to keep startup fast."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("devbox", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - renders Dockerfiles and shell, not HTML
    )


def render_template(name: str, **context: Any) -> str:
    return _templates().get_template(name).render(**context)


# --------------------------------------------------------------------------- image


def setup_packages(spec: Spec) -> list[str]:
    """The setup layer's packages: what sshd and sudo need, the login shell (and curl, which the
    Docker CLI's layer after it uses)."""
    wanted = [*BASE_PACKAGES, spec.image.shell]
    if spec.image.docker_cli:
        wanted.append("curl")
    return list(dict.fromkeys(wanted))


def own_packages(spec: Spec) -> list[str]:
    """The spec's own packages (and pip for its requirements), installed in layers of their own
    after the setup one (devbox.layering): adding a package then rebuilds none of sshd and the user."""
    setup = setup_packages(spec)
    wanted = [*spec.image.packages, *(["python3-pip"] if spec.image.pip_requirements else [])]
    return [package for package in dict.fromkeys(wanted) if package not in setup]


def image_packages(spec: Spec) -> list[str]:
    """Every package the image installs, setup layer first."""
    return [*setup_packages(spec), *own_packages(spec)]


def apt_cache_id(spec: Spec) -> str:
    """The BuildKit cache mounts' id for apt: one per base image, since `apt-get update` drops
    the lists of every source its own image does not name (another distribution's)."""
    return "devbox-apt-" + hashlib.sha256(spec.image.base.encode()).hexdigest()[:12]


def _origin(spec: Spec) -> str:
    """The spec's file name for headers: the same bytes on every machine and in every folder.

    It lands in comment lines of the Dockerfile, the entrypoint and the compose file, so a name
    holding a newline (or other control character) is shown escaped, never as a new line.
    """
    name = PurePath(spec.source).name
    return name if name.isprintable() else repr(name)


@dataclass(frozen=True)
class SshdHardening:
    """sshd's algorithms, best first, and its limits: Mozilla's OpenSSH guideline ("modern") and
    ssh-audit's hardening guides, without what ssh-audit flags (NIST curves, finite-field DH,
    SHA-1, encrypt-and-MAC, 64-bit tags). The image keeps the names its sshd knows, so one list
    serves OpenSSH 8.9 (Ubuntu 22.04), 9.2 (Debian 12), 9.6 (Ubuntu 24.04) and 10 alike.

    curve25519 stays after the post-quantum hybrids: devbox's own login probe (paramiko) and
    clients older than OpenSSH 8.5 have nothing else. The AEAD ciphers need no MAC; the MACs
    (encrypt-then-MAC only) are what a client without AEAD would be offered, and paramiko has
    AES-GCM since 3.5.
    """

    kex: tuple[str, ...] = (
        "mlkem768x25519-sha256", "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com",
        "curve25519-sha256", "curve25519-sha256@libssh.org",
    )  # fmt: skip
    ciphers: tuple[str, ...] = ("chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com")
    macs: tuple[str, ...] = (
        "hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "umac-128-etm@openssh.com",
    )  # fmt: skip
    host_keys: tuple[str, ...] = ("ssh-ed25519",)
    # Password guessing and connection floods: 4 tries per connection (a client offering many
    # agent keys still reaches the password prompt), 30 s to log in, at most 10 logins in
    # progress before sshd starts dropping new ones (all of them at 40), LogLevel VERBOSE
    # records each key's fingerprint (Mozilla).
    limits: tuple[str, ...] = (
        "MaxAuthTries 4", "LoginGraceTime 30", "MaxStartups 10:30:40", "LogLevel VERBOSE",
    )  # fmt: skip
    # Only where this sshd accepts them: 5 logins in progress per source address (8.5+), and
    # penalties (9.8+) that refuse a source for a while after failed logins.
    if_accepted: tuple[str, ...] = (
        "PerSourceMaxStartups 5",
        "PerSourcePenalties authfail:10 noauth:1 grace-exceeded:20 max:600 min:15",
    )  # fmt: skip


SSHD_HARDENING = SshdHardening()


# Where a build secret's use finds it in a step (by BuildKit's secret mount, for that step
# only); a use not listed reads /run/secrets/NAME.
SECRET_TARGETS = {
    ("netrc", "pip"): "/root/.netrc",
    ("netrc", "packages"): "/etc/apt/auth.conf.d/devbox-{name}.conf",
    ("pip_config", "pip"): "/root/.config/pip/pip.conf",
    ("known_hosts", "pip"): "/root/.ssh/known_hosts",
    ("apt_source", "packages"): "/etc/apt/sources.list.d/devbox-{name}.list",
}
PIP_URL_VARIABLES = {"pip_index_url": "PIP_INDEX_URL", "pip_extra_index_url": "PIP_EXTRA_INDEX_URL"}


def build_mounts(spec: Spec, step: str) -> list[str]:
    """The secret (and SSH agent) mounts of one step devbox writes ("packages" or "pip"): each
    secret only where its use needs it, required (a build without it fails instead of
    installing from the wrong place). Names only: values never reach the Dockerfile."""
    mounts = []
    for secret in spec.image.build_secrets:
        if step in STEPS_OF_USE.get(secret.use or "", ()):
            target = SECRET_TARGETS.get((secret.use or "", step))
            where = f",target={target.format(name=secret.name)}" if target else ""
            mounts.append(f"--mount=type=secret,id={secret.name}{where},required=true")
    if step == "pip" and spec.image.build_ssh:
        mounts.append("--mount=type=ssh,required=true")
    return mounts


def pip_variables(spec: Spec) -> str:
    """pip's index URLs read from their secrets as the step runs (a variable of pip's process:
    not in the Dockerfile, a layer or a command line; pip masks the password when it logs one)."""
    urls: dict[str, list[str]] = {}
    for secret in spec.image.build_secrets:
        if secret.use in PIP_URL_VARIABLES:
            urls.setdefault(PIP_URL_VARIABLES[secret.use], []).append(f"$(cat /run/secrets/{secret.name})")
    return "".join(f'{variable}="{" ".join(values)}" ' for variable, values in urls.items())


def requirements_of(spec: Spec) -> list[str]:
    """The spec's pip requirements, one logical line each (none without a requirements file)."""
    if not spec.image.pip_requirements:
        return []
    return requirement_lines(spec.image.pip_requirements.read_text("utf-8"))


def image_layers(spec: Spec, before: ImageLayers | None = None) -> ImageLayers:
    """The spec's package and requirement layers after those of the last render (``before``;
    None: a first render, one layer of each)."""
    return plan(own_packages(spec), requirements_of(spec), before or ImageLayers())


def package_step(layer: tuple[str, ...]) -> tuple[bool, tuple[str, ...]]:
    """A package layer as the Dockerfile's step takes it: whether it removes, and the packages."""
    if is_removal(layer):
        return True, tuple(entry[len(REMOVED) :] for entry in layer)
    return False, layer


def render_dockerfile(spec: Spec, layers: ImageLayers | None = None) -> str:
    layers = layers if layers is not None else image_layers(spec)
    requirements = [[shlex.quote(line) for line in version] for version in layers.requirements]
    return render_template(
        "Dockerfile.j2", image=spec.image, setup_packages=setup_packages(spec),
        package_layers=[package_step(layer) for layer in layers.packages],
        requirement_layers=requirements, apt_cache=apt_cache_id(spec), source=_origin(spec), sshd=SSHD_HARDENING,
        build_mounts={step: build_mounts(spec, step) for step in ("packages", "pip")},
        pip_variables=pip_variables(spec),
    )  # fmt: skip


def render_entrypoint(spec: Spec) -> str:
    return render_template("entrypoint.sh.j2", user=spec.image.user, source=_origin(spec))


def image_file_names(spec: Spec) -> list[str]:
    """The build context's files (the requirements are written into the Dockerfile, by layer)."""
    return list(IMAGE_FILE_MODES)


def image_files(spec: Spec, layers: ImageLayers | None = None) -> list[RenderedFile]:
    """The build context: only these files are sent to the engine (.dockerignore keeps secrets out)."""
    return [
        RenderedFile("Dockerfile", render_dockerfile(spec, layers)),
        RenderedFile("entrypoint.sh", render_entrypoint(spec), IMAGE_FILE_MODES["entrypoint.sh"]),
    ]


def image_inputs_key(spec: Spec, layers: ImageLayers | None = None) -> str:
    """A digest of everything the image files are made from: this module, the templates, the image
    settings, the requirements. Equal keys mean equal files, so they need not be rendered again
    (which spares importing Jinja2 on every `up`)."""
    from importlib import resources

    digest = hashlib.sha256(Path(__file__).read_bytes())
    for template in ("Dockerfile.j2", "entrypoint.sh.j2"):
        digest.update(resources.files("devbox").joinpath("templates").joinpath(template).read_bytes())
    digest.update(f"{spec.image!r}\0{_origin(spec)}\0{layers if layers is not None else image_layers(spec)!r}".encode())
    return digest.hexdigest()


_IMAGE_NAME = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


def image_tag(spec: Spec, files: list[RenderedFile]) -> str:
    """A tag that names the build context's content, so an unchanged image is never rebuilt."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.path}\0{file.mode}\0{file.content}\0".encode())
    return f"{image_repository(spec.project)}:{digest.hexdigest()[:12]}"


def image_repository(project: str) -> str:
    """The image's name for a project. A project name may hold runs like ``-_`` or ``___`` and end
    in ``-``, which image names may not (separators are one ``.``, ``_``, ``__`` or dashes, between
    letters or digits): such a name gets its separator runs collapsed to one ``-`` and a short hash
    of the project name, so two projects never share an image name."""
    name = f"devbox-{project}"
    if _IMAGE_NAME.fullmatch(name):
        return name
    collapsed = re.sub(r"[-_]+", "-", name).strip("-")
    return f"{collapsed}-{hashlib.sha256(project.encode()).hexdigest()[:6]}"


# --------------------------------------------------------------------------- compose


def _cpus(value: float) -> str:
    return f"{value:g}"


def _gpu_device(host: Host, assignment: Assignment | None) -> dict[str, Any]:
    """The host's GPU reservation: the devices its allocation names (devbox.gpus: a count is N
    GPUs of the host's own, never the engine's "the first N"), or the spec's request as written
    where there is no allocation (a swarm hands out GPUs by count)."""
    device: dict[str, Any] = {"driver": "nvidia"}
    if assignment is not None:
        device.update(assignment.compose_fields())
    elif host.gpus.device_ids:
        device["device_ids"] = list(host.gpus.device_ids)
    else:
        device["count"] = host.gpus.count
    device["capabilities"] = list(host.gpus.capabilities)
    return device


def _resources(host: Host, assignment: Assignment | None = None) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    reservations: dict[str, Any] = {}
    for target, wanted in ((limits, host.limits), (reservations, host.reservations)):
        if wanted.cpus is not None:
            target["cpus"] = _cpus(wanted.cpus)
        if wanted.memory is not None:
            target["memory"] = wanted.memory.text
    limits["pids"] = host.pids_limit  # -1: unlimited, as the user opted out
    if host.gpus.wanted:
        reservations["devices"] = [_gpu_device(host, assignment)]
    resources = {key: value for key, value in (("limits", limits), ("reservations", reservations)) if value}
    return {"resources": resources} if resources else {}


def _port(host: Host) -> str:
    """Seed 001's short form; a wildcard address binds IPv4 and IPv6 alike."""
    if host.bind_address == "0.0.0.0":  # noqa: S104 - the user's explicit choice
        return f"{host.ssh_port}:22"
    address = f"[{host.bind_address}]" if ":" in host.bind_address else host.bind_address
    return f"{address}:{host.ssh_port}:22"


def home_directory(spec: Spec) -> str:
    """The login user's home in every host (useradd's default place)."""
    return f"/home/{spec.image.user}"


def home_volume(spec: Spec, host: Host) -> str | None:
    """The named volume that keeps a host's home across recreation and `down` (``HOST-home``), or
    None: switched off (``home_volume: false``), or a volume of the spec is mounted there already.

    Docker seeds an empty named volume from the image's home (the skeleton useradd copied, with
    its owner) at the first mount; the entrypoint repairs the owner when the UID changed since.
    """
    if not host.home_volume or any(v.target == home_directory(spec) for v in host.volumes):
        return None
    return f"{host.name}-home"


def named_volumes(spec: Spec, host: Host) -> list[str]:
    """The named volumes a host mounts, as the spec names them (the engine prefixes the project)."""
    names = [v.source for v in host.volumes if v.kind == "volume"]
    home = home_volume(spec, host)
    return [*names, home] if home else names


def _volumes(spec: Spec, host: Host) -> list[str]:
    volumes = [f"{v.source}:{v.target}{':ro' if v.read_only else ''}" for v in host.volumes]
    home = home_volume(spec, host)
    if home:
        volumes.append(f"{home}:{home_directory(spec)}")
    if host.docker_socket:
        volumes.append("/var/run/docker.sock:/var/run/docker.sock")
    return volumes


def chpasswd_lines(hashes: Iterable[tuple[str, str]]) -> str:
    """(account, hash) pairs as ``chpasswd -e`` reads them: "user:hash" lines."""
    return "".join(f"{user}:{hashed}\n" for user, hashed in hashes)


def passwords_file(host: Host, material: HostMaterial) -> RenderedFile:
    """The accounts' password hashes for ``chpasswd -e``. Like the settings files below, a
    compose secret of the host: nothing secret is baked into the image."""
    return RenderedFile(passwords_path(host.name), chpasswd_lines(material.password_hashes), 0o600)


def settings_files(spec: Spec, host: Host) -> list[RenderedFile]:
    """The host's sshd settings, authorized keys and the paths of the named volumes its user
    owns (handed over while empty, or seeded by the image at a first start: Docker makes a
    volume root's): the entrypoint applies them at start only."""
    sshd = (
        f"# devbox: settings of host {host.name}\n"
        f"PermitRootLogin {'yes' if host.root_login else 'no'}\n"
        f"PasswordAuthentication {'yes' if host.password_auth else 'no'}\n"
    )
    keys = "".join(f"{key}\n" for key in host.authorized_keys)
    return [
        RenderedFile(host_secret(host.name, "sshd_config"), sshd),
        RenderedFile(host_secret(host.name, "authorized_keys"), keys),
        RenderedFile(host_secret(host.name, "volumes"), "".join(f"{path}\n" for path in user_volumes(host))),
    ]


def user_volumes(host: Host) -> list[str]:
    """Pure: where the host mounts the spec's named volumes that belong to its login user (not
    read-only, not ``owner: root``); the home is handed over on its own."""
    return [v.target for v in host.volumes if v.kind == "volume" and not v.read_only and v.owner == "user"]


def _secrets(host: Host) -> tuple[list[dict[str, str]], dict[str, dict[str, str]]]:
    """The service's secret mounts and the project-level secret definitions for one host."""
    mounts, definitions = [], {}
    for path, target in secret_sources(host.name).items():
        source = f"{host.name}_{target.removeprefix('devbox_')}"
        mounts.append({"source": source, "target": target})
        definitions[source] = {"file": f"./{path}"}
    return mounts, definitions


HEALTHCHECK: dict[str, Any] = {
    # sshd answers with its banner once it accepts connections; bash and coreutils are in
    # every Debian/Ubuntu base, nc and pgrep are not.
    "test": ["CMD", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/22 && head -c 4 <&3 | grep -q SSH"],
    "interval": "10s",
    "timeout": "3s",
    "retries": 3,
    "start_period": "10s",
}


def _service(spec: Spec, host: Host, tag: str, build: bool, secrets: list[dict[str, str]],
             assignment: Assignment | None = None, layer_quota: bool = False) -> dict:  # fmt: skip
    service: dict[str, Any] = {}
    if build:
        # The labels find devbox's images again (tests, clean-ups, pruning), as on its containers.
        service["build"] = {"context": ".", "dockerfile": "Dockerfile",
                            "labels": {f"{LABEL_PREFIX}project": spec.project}}  # fmt: skip
    service["image"] = tag
    if not build:
        # Built once by the first host; the others must never try to pull it from a registry.
        service["pull_policy"] = "never"
    service["hostname"] = host.hostname
    service["restart"] = host.restart
    volumes = _volumes(spec, host)
    if volumes:
        service["volumes"] = volumes
    if host.environment:
        service["environment"] = dict(host.environment)
    service["secrets"] = secrets
    deploy = _resources(host, assignment)
    if deploy:
        service["deploy"] = deploy
    service["ports"] = [_port(host)]
    network = spec.network.name
    service["networks"] = (
        [network] if host.hostname == host.name else {network: {"aliases": [host.hostname]}}
    )
    service.update(_hardware(host))
    if layer_quota and host.disk is not None:
        # the container layer capped at the whole budget (volumes stay unbounded): only where the
        # engine can (overlay2 on xfs with pquota, devbox.disk.layer_quota); it refuses it elsewhere
        service["storage_opt"] = {"size": host.disk.text}
    service["logging"] = _logging(host)
    service["healthcheck"] = HEALTHCHECK
    return service


def _logging(host: Host) -> dict[str, Any]:
    """The host's log driver, rotated: both drivers keep at most max_files files of max_size."""
    return {"driver": host.logging.driver,
            "options": {"max-size": host.logging.max_size.text, "max-file": str(host.logging.max_files)}}  # fmt: skip


def _hardware(host: Host) -> dict[str, Any]:
    """Shared memory, ulimits, devices, capabilities and the opt-in privileges of one host."""
    options: dict[str, Any] = {"shm_size": host.shm_size.text}
    if host.ulimits:
        options["ulimits"] = {
            u.name: u.soft if u.soft == u.hard else {"soft": u.soft, "hard": u.hard}
            for u in host.ulimits
        }
    if host.devices:
        options["devices"] = list(host.devices)
    if host.cap_add:
        options["cap_add"] = list(host.cap_add)
    if host.privileged:
        options["privileged"] = True
    if host.ipc:
        options["ipc"] = host.ipc
    if host.cpuset:
        options["cpuset"] = host.cpuset
    return options


def config_hash(service: Mapping[str, Any], files: list[RenderedFile]) -> str:
    """A digest of what a host's container is made of: its service and its settings files.

    Compose does not notice a changed secret file; this label does, so `up` recreates the host.
    The passwords file is left out on purpose: a new password is applied to the running host
    (`devbox passwd`, `up`: see devbox.runner.apply_passwords) and read again at every start, so
    rotating one never replaces a container and the files written in it.
    """
    digest = hashlib.sha256(json.dumps(service, sort_keys=True).encode())
    for file in files:
        digest.update(f"{file.path}\0{file.content}".encode())
    return digest.hexdigest()[:16]


def compose_data(spec: Spec, tag: str, gpus: Allocation | None = None, owner: str | None = None,
                 layer_quota: bool = False) -> dict[str, Any]:  # fmt: skip
    """docker-compose.yml as data: every host shares ONE image, built by the first host; ``gpus``:
    the devices each GPU host was allocated; ``owner``: the spec's owner id, a label of its
    containers and image (outside the config hash: an upgrade that adds it recreates nothing);
    ``layer_quota``: the engine can cap a container layer's size (a host's ``disk`` then does).

    Volumes and the network carry the project and owner labels too, so a stack started with
    plain compose from these files (`cd .devbox && docker compose up -d`) leaves objects no other
    folder takes as its own. devbox creates them itself before compose, labelled alike
    (engines.compose) but without compose's config hash, so compose never recreates them for a
    changed definition; the folder is not among these labels (a moved folder changes nothing
    here), and on a stack an older render started with plain compose, compose re-makes the
    network once (its hosts restart) and asks before touching a volume (no terminal: it keeps
    it).
    """
    services: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    owned = {f"{LABEL_PREFIX}project": spec.project, **({OWNER_LABEL: owner} if owner else {})}
    for index, host in enumerate(spec.hosts):
        mounts, definitions = _secrets(host)
        secrets.update(definitions)
        assignment = gpus.of(host.name) if gpus else None
        service = _service(spec, host, tag, build=index == 0, secrets=mounts, assignment=assignment,
                           layer_quota=layer_quota)  # fmt: skip
        digest = config_hash(service, settings_files(spec, host))
        if owner and "build" in service:  # outside the hash, like the service's own label below
            service["build"]["labels"][OWNER_LABEL] = owner
        if "build" in service:  # outside the hash too: what builds the image never recreates a host
            service["build"].update(_build_secrets(spec))
        service["labels"] = {
            f"{LABEL_PREFIX}project": spec.project,
            f"{LABEL_PREFIX}host": host.name,
            f"{LABEL_PREFIX}config-hash": digest,
            **({OWNER_LABEL: owner} if owner else {}),
            **({GPU_SHARE_LABEL: "true"} if host.gpu_share and host.gpus.wanted else {}),
        }
        services[host.name] = service
        for name in named_volumes(spec, host):
            volumes.setdefault(name, {"labels": dict(owned)})
    network: dict[str, Any] = {"driver": spec.network.driver, "labels": dict(owned)}
    if spec.network.subnet:
        network["ipam"] = {"config": [{"subnet": spec.network.subnet}]}
    data: dict[str, Any] = {"name": spec.project, "services": services}
    data["networks"] = {spec.network.name: network}
    if volumes:
        data["volumes"] = volumes
    data["secrets"] = {**secrets, **build_secret_definitions(spec)}
    return escape_interpolation(data)


def build_secret_name(name: str) -> str:
    """A build secret's name in docker-compose.yml: ``build.NAME``, which no host's secrets
    (``HOST_...``, a host name holds no dot) can take."""
    return f"build.{name}"


def _build_secrets(spec: Spec) -> dict[str, Any]:
    """The build's secrets (by the id the Dockerfile mounts) and SSH agent, for compose's build."""
    fields: dict[str, Any] = {}
    if spec.image.build_secrets:
        fields["secrets"] = [{"source": build_secret_name(s.name), "target": s.name} for s in spec.image.build_secrets]
    if spec.image.build_ssh:
        fields["ssh"] = ["default"]  # the agent of SSH_AUTH_SOCK, as compose finds it
    return fields


def build_secret_definitions(spec: Spec) -> dict[str, dict[str, str]]:
    """Where compose reads each build secret when it builds: the variable's name or the file's
    path, never the value (compose hands it to BuildKit over its session, not as an argument)."""
    return {
        build_secret_name(s.name): {"environment": s.env} if s.env else {"file": str(s.file)}
        for s in spec.image.build_secrets
    }


def escape_interpolation(value: Any) -> Any:
    """Double every ``$`` so compose never interpolates a value from the spec."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, Mapping):
        return {escape_interpolation(k): escape_interpolation(v) for k, v in value.items()}
    if isinstance(value, list):
        return [escape_interpolation(item) for item in value]
    return value


class _ComposeDumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """libyaml's emitter when PyYAML has it (4x faster on 100 hosts), else PyYAML's own: both
    write the same bytes for this data, so rendering stays deterministic either way."""


# Compose reads YAML 1.2, where these plain scalars are numbers, booleans or null; PyYAML resolves
# YAML 1.1 and would leave some unquoted (an environment value 1e3 would arrive as 1000, 0o17 as 15).
_YAML12_NOT_A_STRING = re.compile(
    r"[-+]?(0b[01_]+|0o[0-7_]+|0x[0-9a-fA-F_]+|[0-9][0-9_]*)"  # ints, also as Go's ParseInt(s, 0) reads them
    r"|[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"
    r"|true|True|TRUE|false|False|FALSE|null|Null|NULL|~"
)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    """Strings stay strings for every YAML reader: escaped when they hold line breaks or control
    characters (YAML 1.1 breaks such as U+0085 are plain text in 1.2), quoted when 1.2 would not
    read them as text."""
    if not value.isprintable():
        style: str | None = '"'
    else:
        style = "'" if _YAML12_NOT_A_STRING.fullmatch(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ComposeDumper.add_representer(str, _represent_str)


def dump_yaml(data: Any) -> str:
    return yaml.dump(
        data, Dumper=_ComposeDumper, sort_keys=False, default_flow_style=False,
        allow_unicode=True, width=1_000_000,
    )  # fmt: skip


_COMPOSE_HEADER = (
    "# Rendered by devbox from {origin}: edit the spec and run `devbox render`.\n"
    "# Passwords are hashed in secrets/, host keys in hostkeys/; neither is in this file.\n"
)


# --------------------------------------------------------------------------- ssh


def host_key_alias(spec: Spec, host: Host) -> str:
    """The name known_hosts records a host's key under, whatever address and port reach it."""
    return f"devbox-{spec.project}-{host.name}"


def render_known_hosts(spec: Spec, material: Mapping[str, HostMaterial]) -> str:
    return "".join(
        f"{host_key_alias(spec, host)} {material[host.name].host_public_key}\n" for host in spec.hosts
    )


def connect_address(host: Host) -> str:
    """Where a client on this machine reaches a host's SSH port: the loopback of the wildcard's
    family (a port published on :: listens on IPv6 only), else the address itself."""
    wildcards = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - mapping, not binding
    return wildcards.get(host.bind_address, host.bind_address)


def render_ssh_config(spec: Spec, known_hosts: str, address: str | None = None,
                      addresses: Mapping[str, str] | None = None) -> str:  # fmt: skip
    """``Host`` entries for OpenSSH and VS Code Remote-SSH, with host-key checking left ON.
    ``address`` (the user's) wins over ``addresses`` (where the engine says each host is: a
    swarm host at its node's address)."""
    blocks = [f"# devbox hosts of project {spec.project} (generated; `devbox ssh-config`)\n"]
    for host in spec.hosts:
        blocks.append(
            f"Host {spec.project}-{host.name}\n"
            f"    HostName {address or (addresses or {}).get(host.name) or connect_address(host)}\n"
            f"    Port {host.ssh_port}\n"
            f"    User {spec.image.user}\n"
            f"    HostKeyAlias {host_key_alias(spec, host)}\n"
            f"    UserKnownHostsFile {_ssh_quote(known_hosts)}\n"
            "    StrictHostKeyChecking yes\n"
        )
    return "\n".join(blocks)


def ssh_argv(spec: Spec, host: Host, known_hosts: str, command: tuple[str, ...] = (),
             address: str | None = None) -> list[str]:  # fmt: skip
    """The system ssh's arguments for `devbox ssh` (``address``: where the engine says the host
    is reached, e.g. its swarm node). ssh reads each -o through its config parser, which splits
    an unquoted value at spaces (UserKnownHostsFile takes a list of files): a project folder with
    a space in its path would check the host key against no file."""
    return [
        "ssh", "-p", str(host.ssh_port), "-l", spec.image.user,
        "-o", f"UserKnownHostsFile={_ssh_quote(known_hosts)}",
        "-o", f"HostKeyAlias={host_key_alias(spec, host)}",
        "-o", "StrictHostKeyChecking=yes",
        address or connect_address(host), *command,
    ]  # fmt: skip


def _ssh_quote(path: str) -> str:
    """A path as one ssh_config argument. ssh_config has no escape for '"' or line breaks, so
    such a path is refused rather than allowed to add directives."""
    if '"' in path or not path.isprintable():
        from devbox.errors import UsageError

        raise UsageError(f"{path!r}: the output folder's path cannot be written into an ssh config "
                         "(choose another --out)")  # fmt: skip
    return f'"{path}"' if " " in path else path


# --------------------------------------------------------------------------- everything


@dataclass(frozen=True)
class RenderedProject:
    """Every output file, plus what `up` compares with the engine: the image tag, each host's
    config-hash label and a digest of its passwords (a swarm needs a new service for those)."""

    files: list[RenderedFile]
    image_tag: str
    config_hashes: dict[str, str]
    password_digests: dict[str, str]
    notes: tuple[str, ...] = ()  # what the user should know of how it was rendered (GPUs by index)
    compose_key: str = ""  # what docker-compose.yml was made of (compose_key)


def compose_key(spec: Spec, data: Mapping[str, Any]) -> str:
    """What docker-compose.yml is made of, as a digest: JSON is dumped in C, YAML is not."""
    text = json.dumps([_origin(spec), data], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def render_project(
    spec: Spec, material: Mapping[str, HostMaterial], image: list[RenderedFile] | None = None,
    gpus: Allocation | None = None, owner: str | None = None, compose: tuple[str, str] | None = None,
    layers: ImageLayers | None = None, layer_quota: bool = False,
) -> RenderedProject:  # fmt: skip
    """Every file `devbox render` writes, in a stable order. ``image``: the image files, when the
    caller knows them already (see image_inputs_key); ``gpus``: each GPU host's devices;
    ``owner``: the spec's owner id (labels); ``compose``: (compose_key, text) of docker-compose.yml
    as last written, reused when the key is the same (PyYAML's representer took a third of a
    100-host render); ``layers``: the image's package and requirement layers (devbox.layering;
    None: one of each, as a first render makes)."""
    files = list(image) if image is not None else image_files(spec, layers)
    tag = image_tag(spec, files)
    files.append(RenderedFile(DOCKERIGNORE, "*\n" + "".join(f"!{name}\n" for name in IMAGE_FILES)))
    data = compose_data(spec, tag, gpus, owner, layer_quota)
    key = compose_key(spec, data)
    header = _COMPOSE_HEADER.format(origin=_origin(spec))
    text = compose[1] if compose and compose[0] == key else header + dump_yaml(data)
    files.append(RenderedFile(COMPOSE_FILE, text))
    digests = {}
    for host in spec.hosts:
        passwords = passwords_file(host, material[host.name])
        files.extend([passwords, *settings_files(spec, host)])
        digests[host.name] = hashlib.sha256(passwords.content.encode()).hexdigest()[:16]
    files.append(RenderedFile(KNOWN_HOSTS, render_known_hosts(spec, material)))
    hashes = {name: service["labels"][f"{LABEL_PREFIX}config-hash"] for name, service in data["services"].items()}
    return RenderedProject(files, tag, hashes, digests, gpus.notes if gpus else (), key)
