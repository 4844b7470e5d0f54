"""The validated spec: frozen dataclasses, built only by ``devbox.spec.build_spec``.

Everything here is plain data with a few derived properties; reading and checking a
``devbox.yaml`` lives in ``options``/``fields`` (what each setting accepts) and ``load``.
``Host`` and ``Spec`` live in ``host_model``: a host's settings are declared on ``Host`` itself,
with the option types that sit above this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE_IMAGE = "nvidia/cuda:12.6.3-cudnn-devel-ubuntu22.04"
DEFAULT_PACKAGES = ("net-tools", "iputils-ping", "curl", "wget", "git", "python3-pip")
DEFAULT_SHM_SIZE = "2g"
DEFAULT_PIDS_LIMIT = 4096  # every thread counts: a PyTorch job has hundreds, a `make -j` a few per core
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
)


@dataclass(frozen=True)
class Network:
    """The one bridge network every host joins; hosts reach each other by name on it."""

    name: str
    driver: str = "bridge"
    subnet: str | None = None


# How a build secret reaches the steps devbox writes (image.build_secrets.NAME.as); without one,
# only extra_lines that mount it (--mount=type=secret,id=NAME) read it.
SECRET_USES = {
    "netrc": "a .netrc: pip and git read it in the pip step, apt (auth.conf.d) in the packages step",
    "pip_config": "pip's own config file (pip.conf) in the pip step",
    "pip_index_url": "pip's index URL, credentials in it (PIP_INDEX_URL) in the pip step",
    "pip_extra_index_url": "an extra index URL, credentials in it (PIP_EXTRA_INDEX_URL) in the pip step",
    "apt_source": "an apt sources.list entry (credentials in its URL) in the packages step",
    "known_hosts": "ssh's known_hosts for git+ssh:// requirements in the pip step",
}


@dataclass(frozen=True)
class BuildSecret:
    """A secret the image build reads through BuildKit (``RUN --mount=type=secret``), never
    stored: its value comes from ``env`` (a variable) or ``file`` when the image is built, and
    reaches only the steps that mount it. ``use``: a key of SECRET_USES, or None."""

    name: str
    env: str | None = None
    file: Path | None = None
    use: str | None = None

    @property
    def source(self) -> str:
        """Where the value comes from, as the user should look for it (never the value)."""
        return f"environment variable {self.env}" if self.env else f"file {self.file}"


@dataclass(frozen=True)
class Image:
    """How the single shared image is built. Hosts with this config share one build."""

    base: str = DEFAULT_BASE_IMAGE
    timezone: str = "UTC"
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    pip_requirements: Path | None = None
    shell: str = "zsh"
    user: str = "developer"
    uid: int | None = None
    gid: int | None = None
    docker_cli: bool = False
    extra_lines: tuple[str, ...] = ()
    registry: str | None = None  # swarm: HOST[:PORT][/PATH] the image is pushed to
    build_secrets: tuple[BuildSecret, ...] = ()
    build_ssh: bool = False  # the user's SSH agent reaches the pip step (git+ssh:// requirements)


@dataclass(frozen=True)
class Size:
    """A memory size as the user wrote it (rendered back verbatim) and in bytes (compared)."""

    text: str
    bytes: int


DEFAULT_SHM = Size(DEFAULT_SHM_SIZE, 2 * 1024**3)


@dataclass(frozen=True)
class Logging:
    """Where a host's output goes and how much of it is kept: the engine rotates the log at
    ``max_size`` and keeps ``max_files`` of them, so one chatty host cannot fill the disk.
    Both drivers keep what `docker logs` (and `devbox logs`) read."""

    driver: str = "local"
    max_size: Size = Size("10m", 10 * 1024**2)
    max_files: int = 3


DEFAULT_LOGGING = Logging()


@dataclass(frozen=True)
class Resources:
    """CPU (in cores) and memory, as a limit or a reservation."""

    cpus: float | None = None
    memory: Size | None = None


@dataclass(frozen=True)
class Gpus:
    """GPU request: ``count`` (an int or ``"all"``) or explicit ``device_ids``, never both."""

    count: int | str = 0
    device_ids: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ("gpu",)

    @property
    def wanted(self) -> bool:
        return bool(self.device_ids) or self.count != 0


@dataclass(frozen=True)
class Volume:
    """A named volume (``kind='volume'``) or a bind mount of a host path (``kind='bind'``).

    ``owner``: who a named volume belongs to while it is empty (a new one): the login user, or
    root as Docker makes it (see VOLUME_OWNERS)."""

    kind: str
    source: str
    target: str
    read_only: bool = False
    owner: str = "user"


@dataclass(frozen=True)
class Ulimit:
    name: str
    soft: int
    hard: int
