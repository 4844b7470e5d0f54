"""Where devbox keeps things: every file it writes in a project's output folder, named once.

The output folder (``.devbox/`` beside the spec unless ``--out``) holds what `render` writes
(image files, docker-compose.yml, per-host secrets, known_hosts) and devbox's state (generated
passwords, host keys, records). Paths here are relative to that folder, as the renderers
(pure: they never see the folder) name them; ``Layout`` turns them into real paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_SPEC_NAME = "devbox.yaml"
DEFAULT_OUTPUT = ".devbox"  # beside devbox.yaml; ".devbox-<stem>" beside any other spec file
COMPOSE_FILE = "docker-compose.yml"
KNOWN_HOSTS = "known_hosts"
DOCKERIGNORE = ".dockerignore"
IMAGE_FILES = ("Dockerfile", "entrypoint.sh")  # the pip requirements are in the Dockerfile (devbox.layering)
IMAGE_FILE_MODES = {"Dockerfile": 0o644, "entrypoint.sh": 0o755}
IMAGE_KEY_FILE = ".image-key"
IMAGE_LAYERS_FILE = "image-layers.json"  # the package and requirement layers of the last render
LEDGER_FILE = "gpus.json"  # the GPUs `up` gave each host (devbox.gpus)
COMPOSE_KEY_FILE = ".compose-key"
CREDENTIALS_FILE = "credentials.yaml"
APPLIED_PASSWORDS_FILE = "passwords-applied.json"
LOCK_FILE = ".lock"
OWNER_FILE = "owner"  # the id labelling every engine object this spec makes (devbox.state.owner_id)
ADOPTED_FILE = "adopted"  # objects an older devbox made that this spec took as its own, one a line
SECRETS_DIR = "secrets"
HOSTKEYS_DIR = "hostkeys"

# A host's files the container finds in /run/secrets, by the name it finds them under.
SECRET_FILES = {
    "passwords": "devbox_passwords",
    "sshd_config": "devbox_sshd_config",
    "authorized_keys": "devbox_authorized_keys",
    "volumes": "devbox_volumes",
}
HOST_KEY_SECRET = "devbox_host_key"  # noqa: S105 - a file name, not a secret

# What a render writes at the top of the output folder; the state files mark a folder as devbox's.
OUTPUT_NAMES = (*IMAGE_FILES, DOCKERIGNORE, COMPOSE_FILE, KNOWN_HOSTS, SECRETS_DIR, HOSTKEYS_DIR)
STATE_MARKERS = (IMAGE_KEY_FILE, CREDENTIALS_FILE)


def host_secret(host: str, name: str) -> str:
    """One of the host's secret files (a key of SECRET_FILES), relative to the output folder."""
    return f"{SECRETS_DIR}/{host}/{name}"


def passwords_path(host: str) -> str:
    """Where the host's password hashes live, relative to the output folder."""
    return host_secret(host, "passwords")


def host_key_path(host: str) -> str:
    """Where the host's private SSH key lives, relative to the output folder (see devbox.state)."""
    return f"{HOSTKEYS_DIR}/{host}/ssh_host_ed25519_key"


def secret_sources(host: str) -> dict[str, str]:
    """Every file a host gets as a secret: path in the output folder -> name in /run/secrets.

    The one table both engines mount from (compose file secrets, swarm secrets).
    """
    sources = {host_secret(host, name): target for name, target in SECRET_FILES.items()}
    sources[host_key_path(host)] = HOST_KEY_SECRET
    return sources


@dataclass(frozen=True)
class Layout:
    """A project's output folder, and the path of each file devbox keeps in it."""

    folder: Path

    def path(self, relative: str) -> Path:
        return self.folder / relative

    @property
    def compose_file(self) -> Path:
        return self.folder / COMPOSE_FILE

    @property
    def known_hosts(self) -> Path:
        return self.folder / KNOWN_HOSTS

    @property
    def credentials(self) -> Path:
        return self.folder / CREDENTIALS_FILE

    @property
    def applied_passwords(self) -> Path:
        return self.folder / APPLIED_PASSWORDS_FILE

    @property
    def image_key(self) -> Path:
        return self.folder / IMAGE_KEY_FILE

    @property
    def image_layers(self) -> Path:
        return self.folder / IMAGE_LAYERS_FILE

    @property
    def compose_key(self) -> Path:
        return self.folder / COMPOSE_KEY_FILE

    @property
    def lock(self) -> Path:
        return self.folder / LOCK_FILE

    @property
    def owner(self) -> Path:
        return self.folder / OWNER_FILE

    @property
    def adopted(self) -> Path:
        return self.folder / ADOPTED_FILE

    @property
    def outside_volumes(self) -> Path:
        """Every file the hosts hold outside their volumes, as the last question before
        discarding them counted them (one ``host: path`` a line)."""
        return self.folder / "outside-volumes.txt"

    def host_key(self, host: str) -> Path:
        return self.folder / host_key_path(host)

    def passwords(self, host: str) -> Path:
        return self.folder / passwords_path(host)
