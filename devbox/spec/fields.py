"""Every setting of devbox.yaml, declared once: its key, option type, one-line doc and default.

Modelled on mkdocs' ``config/defaults.py``. The key lists (and so the "known keys" and "did you
mean" hints), the defaults, the JSON Schema and its descriptions all come from these tables;
``devbox.spec.load`` reads a spec with them and builds the model. A host's settings are declared
on the ``Host`` model itself (``devbox.spec.host_model``): ``HOST`` and ``DEFAULTS`` are derived
from it, in its order, so a host setting has no second entry here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from devbox.spec.host_model import LIMITS, LOGGING, RESERVATIONS, host_fields
from devbox.spec.model import DEFAULT_BASE_IMAGE, DEFAULT_PACKAGES
from devbox.spec.options import (
    Choice,
    Field,
    Flag,
    ListOf,
    MapOf,
    Nullable,
    Option,
    Reading,
    Schema,
    Table,
    Text,
    js_pattern,
    type_name,
)
from devbox.spec.values import (
    DNS_LABEL,
    SECRET_NAME,
    USER_NAME,
    VOLUME_NAME,
    AccountId,
    BuildSecretSource,
    ImageRef,
    ImageUser,
    OneLine,
    Subnet,
    TextFile,
    Version,
)

ENGINES = ("compose", "swarm")
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# name[=[epoch:]version] as Debian policy spells them; no '~' after '=' or ':', where bash (the
# RUN shell when docker_cli is on) would expand it like a home directory
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=([0-9]+:)?[A-Za-z0-9][A-Za-z0-9.+~-]*)?$")
TIMEZONE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")
IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
# HOST[:PORT][/PATH]: where `up` pushes the image on a swarm (a repository path below it is devbox's)
REGISTRY = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")

NETWORK = Table([
    Field("name", Text(VOLUME_NAME, "letters, digits, _ . -"), "The network's name.", "net"),
    Field("driver", Choice(("bridge",), "{value!r} is not supported (use bridge)"), "Only bridge.", "bridge"),
    Field("subnet", Nullable(Subnet()), "Its IP range in CIDR form, e.g. 172.28.0.0/16 (default: Docker picks)."),
])  # fmt: skip

IMAGE = Table([
    Field("base", ImageRef(IMAGE_REF, "an image reference such as nvidia/cuda:12.6.3-cudnn-devel-ubuntu22.04"),
          "Base image, pinned to a tag (latest is refused).", DEFAULT_BASE_IMAGE),
    Field("timezone", Text(TIMEZONE, "a tz database name such as UTC or Europe/Berlin"),
          "tz database name.", "UTC"),
    Field("packages", ListOf(Text(PACKAGE, "a Debian package name")),
          "apt packages, name or name=version.", list(DEFAULT_PACKAGES)),
    Field("pip_requirements", Nullable(TextFile()), "A requirements.txt to pip install, relative to the spec."),
    Field("shell", Choice(("zsh", "bash"), "{value!r} is not supported (use zsh or bash)", fallback="zsh"),
          "The user's login shell.", "zsh"),
    Field("user", ImageUser(USER_NAME, "lowercase letters, digits, _ and -, at most 32"),
          "The login user, with sudo (never root).", "developer"),
    Field("uid", AccountId("SUDO_UID", os.getuid), "The user's UID, or auto for yours (for bind mounts)."),
    Field("gid", AccountId("SUDO_GID", os.getgid), "The user's GID, or auto for yours."),
    Field("docker_cli", Flag(), "Install the docker CLI (use it with docker_socket).", False),
    Field("extra_lines", ListOf(OneLine()), "Verbatim Dockerfile lines, an escape hatch.", []),
    Field("registry", Nullable(Text(REGISTRY, "HOST:PORT/PATH, e.g. registry.lab:5000/devbox")),
          "Swarm: a registry (HOST:PORT/PATH) up pushes the image to, so every node runs it by digest."),
    Field("build_secrets", MapOf(SECRET_NAME.fullmatch, "is not a secret name (letters, digits, _ and -)",
                                 {"pattern": js_pattern(SECRET_NAME)}, BuildSecretSource()),
          "Secrets only the build reads, never stored in the image: {NAME: {env: VARIABLE} or {file: PATH}, "
          "as: netrc, pip_config, pip_index_url, pip_extra_index_url, apt_source or known_hosts}."),
    Field("build_ssh", Flag(), "Lend the build your SSH agent (git+ssh:// requirements): no key on disk.", False),
])  # fmt: skip

# A host's settings: declared on the Host model (devbox.spec.host_model), in its order.
HOST_SETTINGS_FIELDS = host_fields(host_only=False)  # a host takes them from itself first, then defaults
HOST_ONLY_FIELDS = host_fields(host_only=True)  # only a host itself can have them


class Layer(Table):
    """Host settings as written in ``defaults`` or in one host: read as they are (unknown keys
    reported), since each host reads its settings from both layers (see devbox.spec.load)."""

    def read(self, value: Any, path: str, reading: Reading) -> Any:
        return self.node(value, path, reading)


class Hosts(Option):
    """The hosts: a mapping of host names (DNS labels) to their settings, read one by one."""

    def read(self, value: Any, path: str, reading: Reading) -> Mapping:
        if value is None or (isinstance(value, Mapping) and not value):
            reading.add(path, "no hosts defined (add at least one under hosts:)")
            return {}
        if not isinstance(value, Mapping):
            reading.add(path, f"must be a mapping of host names, not {type_name(value)}")
            return {}
        return value

    def schema(self) -> Schema:
        return {"type": "object", "minProperties": 1, "propertyNames": {"pattern": js_pattern(DNS_LABEL)},
                "additionalProperties": {**HOST.schema(), "type": "object"}}  # fmt: skip


DEFAULTS = Layer(HOST_SETTINGS_FIELDS)
HOST = Layer((*HOST_SETTINGS_FIELDS, *HOST_ONLY_FIELDS))
SPEC = Table([
    Field("version", Version(), "The spec format: 1.", 1),
    Field("project", Text(PROJECT_NAME, "lowercase letters, digits, - and _; starts with a letter or digit"),
          "Project name: names the containers, network and volumes.",
          missing="missing (name the project, e.g. project: gpu-lab)"),
    Field("engine", Choice(ENGINES, "{value!r} is not an engine (use compose or swarm)"),
          "compose (this machine) or swarm (services of an existing swarm).", "compose"),
    Field("network", NETWORK, "The one bridge network every host joins.", None),
    Field("image", IMAGE, "The one image every host runs, built once.", None),
    Field("gpu", Choice(("on", "off", True, False), "{value!r} is not a GPU switch (use on or off)"),
          "off: the same stack CPU-only, whatever the hosts ask (like --no-gpu).", "on"),
    Field("defaults", DEFAULTS, "Host settings every host gets unless it sets them itself.", None),
    Field("hosts", Hosts(), "The hosts, by name (a DNS label).",
          missing="no hosts defined (add at least one under hosts:)"),
])  # fmt: skip

TOP_KEYS = SPEC.keys
NETWORK_KEYS = NETWORK.keys
IMAGE_KEYS = IMAGE.keys
HOST_SETTINGS = DEFAULTS.keys
HOST_ONLY = tuple(item.name for item in HOST_ONLY_FIELDS)
RESOURCE_KEYS = RESERVATIONS.keys


def allowed_keys(section: str) -> tuple[str, ...]:
    """The keys a section of the spec accepts: "" (the top), network, image, defaults, a host
    ("hosts.NAME"), limits, reservations or logging."""
    tables = {"": SPEC, "network": NETWORK, "image": IMAGE, "defaults": DEFAULTS, "limits": LIMITS,
              "reservations": RESERVATIONS, "logging": LOGGING}  # fmt: skip
    return HOST.keys if section.startswith("hosts.") else tables[section].keys
