"""Load and validate a spec: ``load_spec(path)`` and ``build_spec(data)`` give a Spec or raise
one SpecError listing every problem, each with its spec path (``hosts.worker.limits.memory``).

Pure: it reads the spec (and checks that files it names exist), nothing else. What each
setting accepts is declared in ``devbox.spec.fields``; this module puts the sections together.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from devbox.errors import SpecError
from devbox.spec.fields import HOST, SPEC
from devbox.spec.host_model import Host, Spec
from devbox.spec.hosts import read_host
from devbox.spec.model import DEFAULT_BASE_IMAGE, BuildSecret, Image, Network
from devbox.spec.options import Reading, join, type_name
from devbox.spec.parse import parse_yaml
from devbox.spec.rules import check_build_secrets, check_password_accounts, check_socket_mounts, cross_checks
from devbox.spec.values import DNS_LABEL

# An engine's rules for a valid spec: (problems, notes), each "path: text".
EngineRules = Callable[[Spec], tuple[list[str], list[str]]]


def load_spec(path: str | os.PathLike[str], *, gpu: bool | None = None, engine: str | None = None,
              rules: EngineRules | None = None) -> Spec:  # fmt: skip
    """Read and validate a spec file. Raises SpecError listing every problem.

    ``gpu=False`` turns every GPU request off (``--no-gpu``), whatever the spec says; ``engine``
    (``--engine``) overrides the spec's ``engine:``.
    """
    spec_path = Path(path)
    try:
        text = spec_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(
            str(spec_path), ["no such file (run `devbox init` to create one, or pass --file)"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(spec_path), [f"cannot read it ({exc})"]) from None
    data = parse_yaml(text, str(spec_path))
    return build_spec(data, spec_path.resolve().parent, source=str(spec_path), gpu=gpu, engine=engine, rules=rules)


def build_spec(
    data: Any, directory: Path, *, source: str = "devbox.yaml", gpu: bool | None = None, engine: str | None = None,
    rules: EngineRules | None = None,
) -> Spec:  # fmt: skip
    """Validate already-parsed spec data. Raises SpecError listing every problem.

    ``rules``: what the spec's engine cannot do of a valid spec (devbox.engines gives it), as
    (problems, notes); its problems are reported with the others, all at once.
    """
    reading = Reading(directory)
    if engine is not None and isinstance(data, Mapping):
        data = {**data, "engine": engine}
    spec = _read_spec(data, gpu, reading)
    if spec is not None and rules is not None:
        problems, notes = rules(spec)
        for line in problems:
            reading.add("", line)
        spec = dataclasses.replace(spec, notes=(*spec.notes, *notes))
    if reading.problems or spec is None:
        raise SpecError(source, reading.problems.items)
    return dataclasses.replace(spec, source=source)


def _read_spec(data: Any, gpu: bool | None, reading: Reading) -> Spec | None:
    """The Spec if every setting is valid (rules across hosts may still add problems)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        reading.add("", f"the spec must be a mapping of settings, not {type_name(data)}")
        return None
    top = SPEC.read(data, "", reading)
    image = _image(top["image"])
    gpu_enabled = top["gpu"] in ("on", True) and gpu is not False
    hosts = _hosts(top.get("hosts") or {}, top["defaults"], gpu_enabled, reading)
    check_password_accounts(hosts, image, reading)
    check_build_secrets(image, reading)
    if reading.problems or top.get("project") is None:
        return None
    cross_checks(hosts, reading)
    check_socket_mounts(hosts, reading)
    network = top["network"]
    return Spec(
        project=top["project"], engine=top["engine"], image=image, hosts=tuple(hosts), directory=reading.directory,
        network=Network(name=network["name"] or "devbox", driver="bridge", subnet=network.get("subnet")),
        gpu_enabled=gpu_enabled, notes=tuple(reading.notes),
    )  # fmt: skip


def _image(values: dict[str, Any]) -> Image:
    secrets = sorted((values.get("build_secrets") or {}).items())
    return Image(
        base=values["base"] or DEFAULT_BASE_IMAGE,
        timezone=values["timezone"] or "UTC",
        packages=tuple(values["packages"]),
        pip_requirements=values.get("pip_requirements"),
        shell=values["shell"],
        user=values["user"] or "developer",
        uid=values.get("uid"),
        gid=values.get("gid"),
        docker_cli=bool(values["docker_cli"]),
        extra_lines=tuple(line for line in values["extra_lines"] if line),
        registry=values.get("registry"),
        build_secrets=tuple(BuildSecret(name, **found) for name, found in secrets),
        build_ssh=bool(values["build_ssh"]),
    )


def _hosts(raw: Mapping, defaults: Mapping, gpu_enabled: bool, reading: Reading) -> list[Host]:
    """Every host whose name is valid and that has an SSH port; the others are reported."""
    hosts = []
    for name, node in raw.items():
        path = join("hosts", str(name))
        if not isinstance(name, str) or not DNS_LABEL.fullmatch(name):
            reading.add(path, "invalid host name (lowercase letters, digits and -, "
                        "at most 63, not starting or ending with -)")  # fmt: skip
            continue
        host = read_host(name, [(HOST.read(node, path, reading), path), (defaults, "defaults")], gpu_enabled, reading)
        if host is not None:
            hosts.append(host)
    return hosts
