"""Small builders shared by the unit tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from devbox.engines import spec_rules
from devbox.render import HostMaterial
from devbox.spec import Spec, build_spec

BASE: dict[str, Any] = {
    "project": "lab",
    "image": {"base": "debian:bookworm"},
    "hosts": {"master": {"ssh_port": 4432}, "worker": {"ssh_port": 4433}},
}


def spec_data(**changes: Any) -> dict[str, Any]:
    """BASE with top-level keys replaced (a value of None removes the key)."""
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def with_value(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """The base spec data with one value set at ``path`` (mappings made on the way)."""
    data = spec_data()
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return data


def make_spec(directory: Path | None = None, **changes: Any) -> Spec:
    return build_spec(spec_data(**changes), directory or Path("/nonexistent"), rules=spec_rules)


def fake_material(spec: Spec) -> dict[str, HostMaterial]:
    """Deterministic stand-ins for generated hashes and host keys."""
    return {
        host.name: HostMaterial(
            tuple((user, f"$6$rounds=100000$salt{host.name}$hash") for user in spec.accounts(host)),
            f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{host.name}",
        )
        for host in spec.hosts
    }
