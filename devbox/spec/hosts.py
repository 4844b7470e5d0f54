"""Reading one host: each setting from the host first, then from ``defaults``.

A host's mapping settings (limits, environment, ...) merge key by key; every other setting is
taken whole from the first layer that has it. Where each came from is kept in ``Host.origins``,
so a problem names the line to change (``defaults.gpus`` or ``hosts.worker.gpus``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from devbox.spec.fields import HOST
from devbox.spec.host_model import MISSING_PORT, Host, host_settings
from devbox.spec.model import DEFAULT_SHM, THREAD_VARIABLES, Gpus, Resources, Size
from devbox.spec.options import ABSENT, Entry, Field, Reading, join, mapping_entries

Layers = list[tuple[Mapping, str]]  # (settings as written, where: "hosts.NAME" or "defaults")


def read_host(name: str, layers: Layers, gpu_enabled: bool, reading: Reading) -> Host | None:
    """The host called ``name``, or None (reported) when it has no SSH port to be reached on."""
    port = _lookup(layers, "ssh_port")
    if port is None or port[0] is None:
        reading.add(join(port[1] if port else f"hosts.{name}", "ssh_port"), MISSING_PORT)
        return None
    origins: dict[str, str] = {}
    values = {item.name: _setting(item, layers, origins, reading) for item in HOST.fields.values()}
    return _assemble(name, values, origins, gpu_enabled, reading)


def _lookup(layers: Layers, key: str) -> tuple[Any, str] | None:
    for node, where in layers:
        if key in node:
            return node[key], where
    return None


def _setting(item: Field, layers: Layers, origins: dict[str, str], reading: Reading) -> Any:
    """One setting's value, read where it is written (or its default), its origin recorded."""
    if item.option.merges:
        return item.option.read_entries(_merged(layers, item.name, origins, reading), reading)  # type: ignore[attr-defined]
    found = _lookup(layers, item.name)
    if found is None:
        default = item.default
        return None if default is ABSENT else item.option.read(default, join(layers[0][1], item.name), reading)
    value, where = found
    origins[item.name] = where
    return item.option.read(value, join(where, item.name), reading)


def _merged(layers: Layers, key: str, origins: dict[str, str], reading: Reading) -> list[Entry]:
    """The entries of a mapping setting, host first; an entry's origin is kept as "key.entry"."""
    seen: set[str] = set()
    entries = []
    for node, where in layers:
        if key not in node:
            continue
        origins.setdefault(key, where)
        for entry in mapping_entries(node[key], join(where, key), reading):
            if entry.key not in seen:
                seen.add(entry.key)
                origins[f"{key}.{entry.key}"] = where
                entries.append(entry)
    return entries


def _assemble(name: str, v: dict[str, Any], origins: dict[str, str], gpu_enabled: bool, reading: Reading) -> Host:
    """The Host from its read settings: each by its declared model (``devbox.spec.host_model``),
    left out (or unreadable, already reported) as the model's default, and those declared
    ``model=None`` by their rule in RULES; then the checks that tie settings together."""
    built: dict[str, Any] = {}
    for key, declared, default in host_settings():
        if declared.model is not None:
            built[key] = default if v[key] is None else declared.model(v[key])
    _check_reservations(name, built["limits"], built["reservations"], reading)
    context = _Context(name, v, built, origins, gpu_enabled, reading)
    for key, rule in RULES.items():
        built[key] = rule(context)
    host = Host(name=name, **built, origins=tuple(sorted(origins.items())))
    _check_environment(name, host.environment, origins, reading)
    _note_unlimited_pids(host, reading)
    if not host.password_auth and not host.authorized_keys:
        reading.add(join(origins.get("password_auth", f"hosts.{name}"), "password_auth"), "password_auth is false "
                    "but no authorized_keys are given: nobody could log in")  # fmt: skip
    return host


class _Context(NamedTuple):
    """What a rule builds its attribute from: the settings as read (``v``) and the attributes
    built by their declared models so far (``built``)."""

    name: str
    v: dict[str, Any]
    built: dict[str, Any]
    origins: dict[str, str]
    gpu_enabled: bool
    reading: Reading


def _gpus(c: _Context) -> Gpus:
    """The GPU request with its capabilities; none at all when the spec's GPUs are off."""
    count, ids = c.v["gpus"]
    capabilities = tuple(c.v["gpu_capabilities"]) or ("gpu",)
    return Gpus(count, ids, capabilities) if c.gpu_enabled else Gpus(0, capabilities=capabilities)


# The attributes declared ``model=None``: each built by its rule, from this and other settings.
RULES: dict[str, Callable[[_Context], Any]] = {
    "ssh_port": lambda c: c.v["ssh_port"] or 0,  # unreadable: already reported
    "hostname": lambda c: c.v["hostname"] or c.name,
    "gpus": _gpus,
    "environment": lambda c: _environment(c.v["environment"], c.built["limits"]),
    "shm_size": lambda c: _shm(c.v["shm_size"], join(c.origins.get("shm_size", f"hosts.{c.name}"), "shm_size"),
                               c.built["limits"], c.reading),
}  # fmt: skip


def _note_unlimited_pids(host: Host, reading: Reading) -> None:
    """`pids_limit: unlimited` is allowed, but said: it is what lets one host take down the others."""
    if host.pids_limit != -1:
        return
    note = (f"{join(host.origin('pids_limit'), 'pids_limit')}: unlimited: a fork bomb or runaway build in this "
            "host can exhaust the machine's process table, and then no other host (nor the engine) can start "
            "a process")  # fmt: skip
    if note not in reading.notes:
        reading.notes.append(note)


def _check_reservations(name: str, limits: Resources, reservations: Resources, reading: Reading) -> None:
    path = f"hosts.{name}.reservations"
    if limits.cpus and reservations.cpus and reservations.cpus > limits.cpus:
        reading.add(f"{path}.cpus", f"{reservations.cpus:g} is above the limit "
                    f"{limits.cpus:g} (a reservation must fit within the limit)")  # fmt: skip
    if limits.memory and reservations.memory and reservations.memory.bytes > limits.memory.bytes:
        reading.add(f"{path}.memory", f"{reservations.memory.text} is above the limit "
                    f"{limits.memory.text} (a reservation must fit within the limit)")  # fmt: skip


def _environment(env: dict[str, str], limits: Resources) -> tuple[tuple[str, str], ...]:
    """The host's variables, plus thread counts that follow its CPU limit unless it sets them."""
    env = dict(env)
    if limits.cpus:
        threads = str(max(1, int(limits.cpus)))
        for variable in THREAD_VARIABLES:
            env.setdefault(variable, threads)
    return tuple(sorted(env.items()))


MAX_ARG_STRLEN = 128 * 1024  # the kernel's limit on one NAME=value string handed to a process
MAX_ENVIRONMENT = 1024 * 1024  # half the usual ARG_MAX (2 MiB), leaving room for the image's own


def _check_environment(name: str, env: tuple[tuple[str, str], ...], origins: dict[str, str], reading: Reading) -> None:
    """Variables the kernel would not hand to a process: the host would fail at start with
    "argument list too long"."""
    total = 0
    for key, value in env:
        size = len(f"{key}={value}".encode()) + 1
        total += size
        if size > MAX_ARG_STRLEN:
            where = join(join(origins.get(f"environment.{key}", f"hosts.{name}"), "environment"), key)
            reading.add(where, f"is {size} bytes, more than the kernel passes in one variable "
                        f"({MAX_ARG_STRLEN}; put it in a file, e.g. a volume)")  # fmt: skip
    if total > MAX_ENVIRONMENT:
        where = join(origins.get("environment", f"hosts.{name}"), "environment")
        reading.add(where, f"host {name}'s variables take {total} bytes, more than a process can safely "
                    f"be started with ({MAX_ENVIRONMENT}; put large values in files)")  # fmt: skip


def _shm(size: Size | None, path: str, limits: Resources, reading: Reading) -> Size:
    """Shared memory (/dev/shm): as asked (within the memory limit), else 2g or half a memory limit below 4g."""
    if size is None:
        if limits.memory and limits.memory.bytes < 2 * DEFAULT_SHM.bytes:
            half = limits.memory.bytes // 2 // 1024**2
            return Size(f"{half}m", half * 1024**2)
        return DEFAULT_SHM
    if limits.memory and size.bytes > limits.memory.bytes:
        reading.add(path, f"{size.text} is above the memory limit {limits.memory.text}"
                    " (shared memory counts against it)")  # fmt: skip
    return size
