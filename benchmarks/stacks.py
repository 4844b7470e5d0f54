"""The two sides of the benchmark: a devbox project and its hand-written compose baseline.

Both get the same spec, so the same Dockerfile, entrypoint, secrets, host keys, limits and
probe: the ONLY difference is orchestration. devbox builds one image (`docker compose build` of
its first host) and starts the hosts with `docker compose up --no-build`; the baseline is written
the seed-001 way, every service with its own `build: context: .`, and brought up with
`docker compose up -d --build`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.measure import LoginWatch, Timed, run_timed, wait_first_use_logins
from benchmarks.pinned import ENV
from devbox import probe
from devbox.docker_api import StartWatch, find_compose, parse_docker_time
from devbox.engines import open_project
from devbox.operations import login_targets
from devbox.spec import DEFAULT_PACKAGES, load_spec

BASE_IMAGE = "devbox-test/bookworm:base"
LIMITS = {"cpus": 0.25, "memory": "256m"}
# The spec users have: `devbox init`'s packages (the run's own time zone keeps any other image's
# layers from serving as cache; a hit is detected and reported all the same, see cached_steps).
PACKAGES = DEFAULT_PACKAGES
ONE_PACKAGE = ("less",)  # the one-package spec of earlier runs, kept as a second edit row
EDIT_PACKAGE = "jq"  # edit -> ready: the one package added at the end of the list
# edit -> ready rows: (metric, what is done to init's packages); each edit is put back after it.
EDITS = (
    ("edit_start", lambda p: ("bc", *p)),
    ("edit_middle", lambda p: (*p[: len(p) // 2], "tree", *p[len(p) // 2:])),
    ("edit", lambda p: (*p, EDIT_PACKAGE)),
    ("edit_remove", lambda p: tuple(x for x in p if x != "wget")),
)
# pip inside the builds goes through this machine's TLS-intercepting proxy, whose CA the base
# image lacks: the requirements name the hosts as trusted (lines like any user's).
REQUIREMENTS = ("--trusted-host pypi.org", "--trusted-host files.pythonhosted.org", "six")
EDIT_REQUIREMENT = "tomli"
WAIT_SECONDS = 300.0
# Seed 001's own files, the way its users write them today (the "today" comparison).
SEED_DOCKERFILE = Path(__file__).resolve().parent.parent / "tests" / "reference" / "seed-001.Dockerfile"
# What seed 001 installs besides openssh-server, sudo (devbox adds those itself) and zsh (the
# login shell): devbox's default packages are exactly these.
SEED_PACKAGES = DEFAULT_PACKAGES
SEED_ENTRYPOINT = """#!/bin/sh
# seed 001's entrypoint: the passwords from the environment at every start, then sshd.
set -e
echo "root:${ROOT_PASSWORD}" | chpasswd
echo "developer:${DEVELOPER_PASSWORD}" | chpasswd
exec /usr/sbin/sshd -D
"""


class BenchError(Exception):
    """A step of the benchmark failed: the run stops, cleans up and exits non-zero."""


def devbox_command() -> list[str]:
    """The installed console script, as users run it (or the pinned snapshot's launcher)."""
    pinned = os.environ.get(ENV)
    if pinned:
        return [sys.executable, str(Path(__file__).with_name("pinned.py")), pinned]
    beside = Path(sys.executable).with_name("devbox")  # not a pyenv shim, which adds its own startup
    found = str(beside) if beside.is_file() else shutil.which("devbox")
    return [found] if found else [sys.executable, "-m", "devbox"]


def spec_text(project: str, hosts: int, first_port: int, timezone: str = "UTC",
              packages: tuple[str, ...] = PACKAGES, login_shell: str = "zsh",
              requirements: str | None = None) -> str:  # fmt: skip
    """A CPU-only spec with small limits: what a 2-core machine can run 8 of."""
    lines = [
        "version: 1",
        f"project: {project}",
        "gpu: off",
        "image:",
        f"  base: {BASE_IMAGE}",
        f"  timezone: {timezone}",
        f"  shell: {login_shell}",
        f"  packages: [{', '.join(packages)}]",
        *([f"  pip_requirements: {requirements}"] if requirements else []),
        "defaults:",
        "  bind_address: 127.0.0.1",
        "  restart: 'no'",
        "  gpus: 0",
        f"  limits: {{cpus: {LIMITS['cpus']}, memory: {LIMITS['memory']}}}",
        "hosts:",
    ]
    lines += [f"  h{i}: {{ssh_port: {first_port + i}}}" for i in range(hosts)]
    return "\n".join(lines) + "\n"


def compose(*args: str, file: Path, project: str, log: Path, env: dict[str, str] | None = None) -> Timed:
    """One compose command through the same Compose v2 binary devbox itself uses."""
    return run_timed(find_compose().args(str(file), project, *args), log, env=env)


def cached_run_steps(log_text: str) -> int:
    """RUN steps served from cache in a build log (legacy builder or BuildKit): a cold run has 0."""
    legacy = re.findall(r"Step \d+/\d+ : RUN .*\n ---> Using cache", log_text)
    buildkit_runs = set(re.findall(r"^#(\d+) \[[^\]]*\] RUN ", log_text, re.MULTILINE))
    buildkit_cached = set(re.findall(r"^#(\d+) CACHED", log_text, re.MULTILINE))
    return len(legacy) + len(buildkit_runs & buildkit_cached)


def apt_fetch_seconds(log_text: str) -> int | None:
    """How long the build's `apt-get update` took ("Fetched 15.8 MB in 1min 56s"): a slow package
    mirror, not devbox or compose, is what makes an outlier of a cold run."""
    found = re.search(r"Fetched [0-9.]+ [kMG]?B in (?:(\d+)min )?(\d+)s", log_text)
    return int(found.group(1) or 0) * 60 + int(found.group(2)) if found else None


@dataclass
class Stack:
    """One side for one host count: its folder, compose project name and SSH ports."""

    side: str  # "devbox", "devbox-one" (the one-package spec) or "baseline"
    hosts: int
    project: str
    first_port: int
    folder: Path
    logs: Path
    repeat: int = 0  # which repeat is running: each gets its own log files
    # `ENV TZ` comes before the apt layer, so a value unique to the run (an unknown zone, which
    # means UTC) keeps any other image on a shared engine from serving the legacy builder as cache.
    timezone: str = "UTC"
    packages: tuple[str, ...] = PACKAGES
    login_shell: str = "zsh"
    cold_only: bool = False  # measured cold only: after its build it is just another baseline

    @property
    def spec_path(self) -> Path:
        return self.folder / "devbox.yaml"

    @property
    def out(self) -> Path:
        return self.folder / ".devbox"

    @property
    def compose_file(self) -> Path:
        raise NotImplementedError

    def log(self, name: str) -> Path:
        return self.logs / f"{self.project}-r{self.repeat}-{name}.log"

    def prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        text = spec_text(self.project, self.hosts, self.first_port, self.timezone, self.packages, self.login_shell)
        self.spec_path.write_text(text, encoding="utf-8")

    def targets(self) -> list[probe.Target]:
        """Built exactly as devbox's own `up` builds them (devbox.operations.login_targets)."""
        spec = load_spec(self.spec_path, gpu=False)
        return login_targets(open_project(spec, self.out, say=lambda _line: None), list(spec.hosts))

    def image_names(self) -> list[str]:
        raise NotImplementedError

    def cold(self) -> Timed:
        raise NotImplementedError

    def warm(self) -> Timed:
        raise NotImplementedError

    def start(self) -> Timed:
        """Start the stack's containers from its existing image(s), without waiting for logins."""
        raise NotImplementedError

    def down(self, name: str = "down") -> None:
        """Containers, network and volumes go; images stay."""
        if self.compose_file.is_file():
            args = ("down", "--volumes", "--remove-orphans", "--timeout", "2")
            check(compose(*args, file=self.compose_file, project=self.project, log=self.log(name)), "compose down")

    def remove_images(self, client: Any) -> None:
        """Every image this side built (and so its legacy-builder cache, its parent layers)."""
        import docker.errors

        for name in self.image_names():
            for image in client.images.list(name=name):
                for tag in image.tags:
                    with contextlib.suppress(docker.errors.ImageNotFound):
                        client.images.remove(tag, force=True)

    def started_at(self, client: Any) -> dict[str, float]:
        """Each host's container start time (`docker inspect` State.StartedAt) as epoch seconds."""
        found = client.containers.list(all=True, filters={"label": f"com.docker.compose.project={self.project}"})
        return {c.labels["com.docker.compose.service"]: parse_docker_time(c.attrs["State"]["StartedAt"]) for c in found}

    def start_to_login(self, client: Any) -> dict[str, dict[str, float]]:
        """Per host: seconds from container start to sshd's first banner and to the first completed
        login, and that login's own duration. Polled every 20 ms from the container's start event."""
        self.down("down-before-start")
        # By compose's labels, which both sides' containers carry (the baseline has no devbox ones).
        project, service = f"com.docker.compose.project={self.project}", "com.docker.compose.service"
        with StartWatch(client, project, service) as starts:
            watch = LoginWatch(self.targets(), WAIT_SECONDS, starts.wait)
            check(self.start(), f"{self.side} start")
            firsts = watch.join()
        started = self.started_at(client)
        missing = [name for name, first in firsts.items() if first.at is None]
        if missing:
            raise BenchError(f"{self.project}: no login on {', '.join(missing)} within {WAIT_SECONDS:.0f} s")
        return {
            name: {
                "start_to_login": first.at - started[name],
                "start_to_banner": first.banner_at - started[name],
                "login": first.login_seconds,
            }
            for name, first in firsts.items()
            if first.at is not None and first.banner_at is not None
        }


class DevboxStack(Stack):
    """`devbox up`: one image built (compose build, BuildKit), hosts started by compose, logins awaited."""

    @property
    def compose_file(self) -> Path:
        return self.out / "docker-compose.yml"

    def image_names(self) -> list[str]:
        return [f"devbox-{self.project}"]

    def _up(self, name: str) -> Timed:
        argv = [*devbox_command(), "-f", str(self.spec_path), "up", "--timeout", str(int(WAIT_SECONDS))]
        return check(run_timed(argv, self.log(name)), f"devbox up ({name})")

    def cold(self) -> Timed:
        """First `devbox up` of a fresh project: includes generating passwords and host keys."""
        shutil.rmtree(self.out, ignore_errors=True)
        return self._up("cold")

    def warm(self) -> Timed:
        return self._up("warm")

    def edit(self, name: str, packages: tuple[str, ...], requirements: tuple[str, ...] = ()) -> Timed:
        """Edit -> ready: the running stack's spec with ``packages`` (and ``requirements``, lines of
        its pip_requirements), `devbox up` until every host takes a login again."""
        requirements_file = None
        if requirements:
            (self.folder / "requirements.txt").write_text("".join(f"{line}\n" for line in requirements), "utf-8")
            requirements_file = "requirements.txt"
        text = spec_text(self.project, self.hosts, self.first_port, self.timezone, packages, self.login_shell,
                         requirements_file)  # fmt: skip
        self.spec_path.write_text(text, encoding="utf-8")
        return self._up(name)

    def put_back(self) -> Timed:
        """The spec as prepared, brought up again (the next edit starts from it)."""
        return self.edit("put-back", self.packages)

    def command(self, name: str, *args: str, env: dict[str, str] | None = None) -> Timed:
        """One devbox command on this stack, timed (status, exec, ssh: command latency)."""
        argv = [*devbox_command(), "-f", str(self.spec_path), *args]
        return check(run_timed(argv, self.log(name), env=env), f"devbox {' '.join(args)}")

    def compose_command(self, name: str, *args: str) -> Timed:
        """The same compose command a user would type on devbox's own compose file."""
        return check(compose(*args, file=self.compose_file, project=self.project, log=self.log(name)),
                     f"docker compose {' '.join(args)}")  # fmt: skip

    def start(self) -> Timed:
        """The compose command `devbox up` itself runs, without devbox's own login probe: two
        probers would share each host's 0.25 CPU and slow down the very login being timed."""
        args = ("up", "--detach", "--no-build", "--quiet-pull", "--remove-orphans")
        return check(compose(*args, file=self.compose_file, project=self.project, log=self.log("start")),
                      "devbox compose up (start)")  # fmt: skip


class BaselineStack(Stack):
    """Seed 001's way: every service builds its own image; then the same login wait as devbox."""

    @property
    def compose_file(self) -> Path:
        return self.out / "baseline-compose.yml"

    @property
    def env(self) -> dict[str, str] | None:
        """The compose environment: Compose v2's default builder (BuildKit, in the engine here)."""
        return None

    def image_names(self) -> list[str]:
        return [f"{self.project}-h{i}" for i in range(self.hosts)]

    def prepare(self) -> None:
        """Render with devbox (Dockerfile, entrypoint, secrets, host keys), then write the compose
        file by hand-rule: per-service `build: context: .`, no shared image tag, no devbox labels."""
        super().prepare()
        shutil.rmtree(self.out, ignore_errors=True)
        check(run_timed([*devbox_command(), "-f", str(self.spec_path), "render"], self.log("render")),
               "devbox render (baseline files)")  # fmt: skip
        rendered = yaml.safe_load((self.out / "docker-compose.yml").read_text(encoding="utf-8"))
        services = {}
        for name, service in rendered["services"].items():
            kept = {k: v for k, v in service.items() if k not in ("build", "image", "pull_policy", "labels")}
            services[name] = {"build": {"context": ".", "dockerfile": "Dockerfile"}, **kept}
        data = {**rendered, "name": self.project, "services": services}
        self.compose_file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    def _up(self, name: str, *args: str) -> Timed:
        """compose up, then devbox's own parallel login wait; timed as one step."""
        targets = self.targets()
        started = time.perf_counter()
        up = check(compose("up", "--detach", *args, file=self.compose_file, project=self.project,
                            log=self.log(name), env=self.env), f"{self.side} compose up ({name})")  # fmt: skip
        results = probe.wait_for_logins(targets, WAIT_SECONDS)
        failed = [f"{r.name}: {r.detail}" for r in results if not r.ok]
        if failed:
            raise BenchError(f"{self.project}: logins failed: {'; '.join(failed)}")
        return Timed(time.perf_counter() - started, 0, up.peak_rss, up.tree_maxrss)

    def cold(self) -> Timed:
        return self._up("cold", "--build")

    def warm(self) -> Timed:
        return self._up("warm")

    def start(self) -> Timed:
        """compose up alone: the LoginWatch of start_to_login does the waiting."""
        return check(compose("up", "--detach", file=self.compose_file, project=self.project,
                              log=self.log("start")), "baseline compose up (start)")  # fmt: skip


def seed_dockerfile(timezone: str) -> str:
    """Seed 001's Dockerfile as its article writes it, changed only where this machine forces it:
    the local Debian base for nvidia/cuda (no registry here), and without the optional
    docker-ce-cli step (download.docker.com is out of reach; the devbox side leaves it off too)."""
    text = SEED_DOCKERFILE.read_text(encoding="utf-8")
    text = re.sub(r"^FROM .*$", f"FROM {BASE_IMAGE}", text, count=1, flags=re.MULTILINE)
    text = text.replace("ENV TZ=UTC", f"ENV TZ={timezone}")
    docker_step = text.rindex("RUN ", 0, text.index("apt-transport-https"))  # the step that adds Docker's repository
    return text[:docker_step] + text[text.index("COPY entrypoint.sh"):]


@dataclass
class SeedStack(BaselineStack):
    """What users write today: seed 001's own Dockerfile, entrypoint (passwords from the
    environment) and compose layout, `docker compose up -d --build`, then logins that accept the
    host key on first use, as its users do. Measured cold only, against devbox installing the
    same packages."""

    cold_only: bool = True
    passwords: dict[str, str] = field(default_factory=dict)  # developer's, by host

    def prepare(self) -> None:
        import secrets as tokens

        shutil.rmtree(self.folder, ignore_errors=True)
        self.out.mkdir(parents=True)
        (self.out / "Dockerfile").write_text(seed_dockerfile(self.timezone), encoding="utf-8")
        (self.out / "entrypoint.sh").write_text(SEED_ENTRYPOINT, encoding="utf-8")
        self.passwords = {f"h{i}": tokens.token_urlsafe(18) for i in range(self.hosts)}
        services = {
            name: {
                "build": {"context": "."},
                "environment": {"ROOT_PASSWORD": tokens.token_urlsafe(18), "DEVELOPER_PASSWORD": password},
                "restart": "no",
                "deploy": {"resources": {"limits": {"cpus": str(LIMITS["cpus"]), "memory": LIMITS["memory"]}}},
                "ports": [f"127.0.0.1:{self.first_port + i}:22"],
                "networks": ["primary_network"],
            }
            for i, (name, password) in enumerate(self.passwords.items())
        }
        data = {"name": self.project, "services": services, "networks": {"primary_network": {"driver": "bridge"}}}
        self.compose_file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    def cold(self) -> Timed:
        started = time.perf_counter()
        up = check(compose("up", "--detach", "--build", file=self.compose_file, project=self.project,
                            log=self.log("cold")), "seed compose up (cold)")  # fmt: skip
        logins = [(name, "127.0.0.1", self.first_port + i, password)
                  for i, (name, password) in enumerate(self.passwords.items())]  # fmt: skip
        failed = wait_first_use_logins(logins, WAIT_SECONDS)
        if failed:
            raise BenchError(f"{self.project}: no login on {', '.join(failed)} within {WAIT_SECONDS:.0f} s")
        return Timed(time.perf_counter() - started, 0, up.peak_rss, up.tree_maxrss)


def check(timed: Timed, what: str) -> Timed:
    """The command's result, or BenchError when it failed."""
    if timed.returncode != 0:
        raise BenchError(f"{what} exited {timed.returncode}")
    return timed


def prune_build_cache(log: Path) -> None:
    """Empty BuildKit's cache (the baseline's); the legacy builder's cache is the removed images.

    This is engine-wide: other users of the engine lose their BuildKit cache too (accepted).
    """
    check(run_timed(["docker", "builder", "prune", "--all", "--force"], log), "docker builder prune")


def edit_facts(log_text: str) -> dict[str, int]:
    """What an edit -> ready build did: package-list fetches (apt's InRelease files: 0 when the
    cache mount served them), RUN steps served from cache and RUN steps run."""
    runs = set(re.findall(r"^#(\d+) \[[^\]]*\] RUN ", log_text, re.MULTILINE))
    cached = set(re.findall(r"^#(\d+) CACHED", log_text, re.MULTILINE))
    return {"lists_fetched": len(re.findall(r"^#\d+ [0-9.]+ (?:Get|Hit|Ign):\d+ \S+ \S+ InRelease", log_text,
                                            re.MULTILINE)),
            "cached_steps": len(runs & cached), "run_steps": len(runs - cached)}  # fmt: skip


def idle_memory(client: Any, project: str) -> list[dict[str, int]]:
    """Each running host's memory as its cgroup counts it (one-shot stats): ``rss`` (anonymous
    memory: sshd waiting, the entrypoint's shell) and ``usage`` (with page cache)."""
    found = client.containers.list(filters={"label": f"com.docker.compose.project={project}"}, sparse=True)
    out = []
    for container in found:
        stats = client.api.stats(container.id, stream=False, one_shot=True)["memory_stats"]
        detail = stats.get("stats") or {}
        out.append({"rss": int(detail.get("rss", detail.get("anon", 0))), "usage": int(stats.get("usage", 0))})
    return out


def image_facts(client: Any, names: list[str]) -> dict[str, Any]:
    """How many images a side left, each one's size, and whether they share all their layers."""
    images = [image for name in names for image in client.images.list(name=name)]
    layer_sets = {tuple(image.attrs["RootFS"].get("Layers", [])) for image in images}
    return {
        "count": len(images),
        "sizes": [image.attrs["Size"] for image in images],
        "distinct_layer_sets": len(layer_sets),
        "distinct_layers": len({layer for layers in layer_sets for layer in layers}),
    }


def run_text(argv: list[str]) -> str:
    """A short command's output, for machine facts; empty when it fails."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip()
