"""The GPU ledger: which host holds which GPU, kept so that no two hosts share one by accident.

Docker turns ``count: N`` into the devices ``0 … N-1`` and remembers nothing, so every host that
asks for one GPU gets GPU 0. devbox resolves each count to concrete devices instead, once, and
keeps the answer in ``.devbox/gpus.json`` so the next `up` gives every host the same GPUs.

Three layers, each usable on its own:

- **reading the machine** (``discover``, ``read_usage``, ``read_compute_apps``, ``read_cgroup``):
  the only code here that runs ``nvidia-smi`` or opens ``/proc``; its parsers are pure;
- **allocation** (``allocate``): pure; hosts in spec order + the machine's units + the previous
  ledger in, concrete device ids per host out;
- **attribution** (``attribute``): pure; who holds each GPU and whose processes run on it, for
  `devbox gpus` (``gpu_report`` reads what it needs and calls it).

A *unit* is what one host can be given: a whole GPU, or, for a GPU in MIG mode, one of its MIG
devices (a GPU in MIG mode is never handed out whole). ``gpus: N`` means N units.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devbox.errors import PreflightError, SpecError, UsageError
from devbox.layout import LEDGER_FILE
from devbox.state import write_if_changed

LEDGER_VERSION = 1
NVIDIA_SMI_TIMEOUT = 30.0
DISCOVERY_QUERY = ["--query-gpu=index,uuid,name,memory.total,mig.mode.current", "--format=csv,noheader,nounits"]
USAGE_QUERY = ["--query-gpu=index,uuid,memory.used,utilization.gpu", "--format=csv,noheader,nounits"]
APPS_QUERY = ["--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv,noheader,nounits"]
SHARE_HINT = "set gpu_share: true on a host that may use GPUs others hold"
FREE_HINT = "free them (`devbox down` in that folder, or remove that container)"
DRIVER_HINT = "check the NVIDIA driver with `nvidia-smi`, or run CPU-only with `devbox --no-gpu`"

# A function that runs nvidia-smi with these arguments and returns what it printed.
Run = Callable[[Sequence[str]], str]


# --------------------------------------------------------------------------- the machine


@dataclass(frozen=True)
class MigDevice:
    """One MIG device (a slice of a GPU in MIG mode), as `nvidia-smi -L` lists it."""

    uuid: str
    profile: str
    slot: int


@dataclass(frozen=True)
class Gpu:
    """One physical GPU. In MIG mode its ``mig_devices`` are the units, not the GPU itself."""

    index: int
    uuid: str
    name: str
    memory_mib: int | None = None
    mig: bool = False
    mig_devices: tuple[MigDevice, ...] = ()

    @property
    def units(self) -> tuple[str, ...]:
        return tuple(device.uuid for device in self.mig_devices) if self.mig else (self.uuid,)


@dataclass(frozen=True)
class Machine:
    """The GPUs one machine has, in nvidia-smi's index order."""

    gpus: tuple[Gpu, ...] = ()

    @property
    def units(self) -> tuple[str, ...]:
        """What can be handed out, in machine order: whole GPUs, and MIG devices of MIG-mode GPUs."""
        return tuple(unit for gpu in self.gpus for unit in gpu.units)

    def resolve(self, ident: str) -> tuple[str, ...] | None:
        """The units an id names: an index or GPU UUID names a GPU (all its MIG devices when it is
        in MIG mode), a MIG UUID one MIG device; None when this machine has no such device."""
        for gpu in self.gpus:
            if ident in (str(gpu.index), gpu.uuid):
                return gpu.units
            if ident in gpu.units:
                return (ident,)
        return None

    def gpu_of(self, unit: str) -> Gpu | None:
        return next((gpu for gpu in self.gpus if unit in gpu.units or unit == gpu.uuid), None)

    def describe(self) -> str:
        """What the machine has, for error messages: '2 GPUs (0: NVIDIA A100, 1: NVIDIA A100)'."""
        if not self.gpus:
            return "no GPUs"
        parts = [f"{gpu.index}: {gpu.name}" + (f" (MIG mode: {len(gpu.mig_devices)} MIG devices)" if gpu.mig else "")
                 for gpu in self.gpus]  # fmt: skip
        units = len(self.units)
        counted = f"{units} GPU{'s' if units != 1 else ''}"
        if any(gpu.mig for gpu in self.gpus):
            counted = f"{units} GPU unit{'s' if units != 1 else ''}"
        return f"{counted} ({', '.join(parts)})"


def find_nvidia_smi(environ: Mapping[str, str]) -> str | None:
    """nvidia-smi's path, or None when it cannot describe the engine's machine: not installed,
    or the engine is remote (DOCKER_HOST over tcp/ssh: the GPUs there are not the ones here)."""
    docker_host = environ.get("DOCKER_HOST", "")
    if docker_host and not docker_host.startswith("unix://"):
        return None
    return shutil.which("nvidia-smi", path=environ.get("PATH", os.defpath))


def nvidia_smi_runner(binary: str, environ: Mapping[str, str] | None = None) -> Run:
    """Run nvidia-smi (in ``environ``, default ours); a failure (driver not loaded, timeout) is a
    PreflightError in one line."""
    import subprocess

    def run(args: Sequence[str]) -> str:
        try:
            result = subprocess.run([binary, *args], capture_output=True, text=True,  # noqa: S603 - argument list
                                    timeout=NVIDIA_SMI_TIMEOUT, check=False,
                                    env=None if environ is None else dict(environ))  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PreflightError(f"nvidia-smi did not run ({exc}); {DRIVER_HINT}") from None
        if result.returncode != 0:
            said = next((line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()), "")
            raise PreflightError(f"nvidia-smi failed (exit {result.returncode}: {said[:200] or 'no output'}); "
                                 f"{DRIVER_HINT}")  # fmt: skip
        return result.stdout

    return run


def discover(environ: Mapping[str, str] | None = None, run: Run | None = None) -> Machine | None:
    """This machine's GPUs per nvidia-smi, or None when there is no nvidia-smi to ask.

    Raises PreflightError when nvidia-smi fails or prints something that cannot be read.
    """
    if run is None:
        binary = find_nvidia_smi(os.environ if environ is None else environ)
        if binary is None:
            return None
        run = nvidia_smi_runner(binary, environ)
    return parse_machine(run(DISCOVERY_QUERY), run(["-L"]))


def units_here() -> int | None:
    """How many GPUs (or MIG instances) nvidia-smi sees here, for init's example; None when it is
    absent or fails (init still works: validate and up say what is wrong with the driver)."""
    try:
        machine = discover()
    except PreflightError:
        return None
    return None if machine is None else len(machine.units)


def _garbage(what: str, line: str) -> PreflightError:
    return PreflightError(f"nvidia-smi printed {what} devbox cannot read: {line[:120]!r}; {DRIVER_HINT}")


def _csv_rows(text: str, fields: int, what: str, name_at: int | None = None) -> list[list[str]]:
    """nvidia-smi's csv rows; the field at ``name_at`` (a GPU's name) may itself hold commas."""
    rows = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("No running processes found"):
            continue
        cells = [cell.strip() for cell in line.split(",")]
        extra = len(cells) - fields
        if extra > 0 and name_at is not None:
            cells = cells[:name_at] + [", ".join(cells[name_at : name_at + extra + 1])] + cells[name_at + extra + 1 :]
        if len(cells) != fields:
            raise _garbage(what, line)
        rows.append(cells)
    return rows


def _number(cell: str, line: str, what: str) -> int | None:
    """A number of nvidia-smi's, None for its [N/A] / [Not Supported]."""
    if cell.startswith("[") or cell in ("N/A", ""):
        return None
    try:
        return int(float(cell))
    except ValueError:
        raise _garbage(what, line) from None


_GPU_LINE = re.compile(r"^GPU (\d+): (.*?) \(UUID: (GPU-[0-9A-Za-z-]+)\)\s*$")
_MIG_LINE = re.compile(r"^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: (MIG-[^)\s]+)\)\s*$")


def parse_mig_devices(text: str) -> dict[str, tuple[MigDevice, ...]]:
    """`nvidia-smi -L`: the MIG devices listed under each GPU, by the GPU's UUID."""
    devices: dict[str, list[MigDevice]] = {}
    parent: str | None = None
    for line in text.splitlines():
        gpu, mig = _GPU_LINE.match(line), _MIG_LINE.match(line)
        if gpu:
            parent = gpu.group(3)
            devices[parent] = []
        elif mig and parent is not None:
            devices[parent].append(MigDevice(mig.group(3), mig.group(1), int(mig.group(2))))
        elif line.strip():
            raise _garbage("a device list", line)
    return {uuid: tuple(found) for uuid, found in devices.items()}


def parse_machine(query: str, listing: str) -> Machine:
    """The machine from `nvidia-smi --query-gpu=index,uuid,name,memory.total,mig.mode.current`
    and `nvidia-smi -L`. Raises PreflightError naming the line it cannot read."""
    mig_devices = parse_mig_devices(listing)
    gpus = []
    for index, uuid, name, memory, mig in _csv_rows(query, 5, "a GPU list", name_at=2):
        line = ", ".join((index, uuid, name, memory, mig))
        if not index.isdigit() or not uuid.startswith("GPU-") or not (mig in ("Enabled", "Disabled", "N/A")
                                                                      or mig.startswith("[")):
            raise _garbage("a GPU list", line)
        gpus.append(Gpu(int(index), uuid, name, _number(memory, line, "a GPU list"), mig == "Enabled",
                        mig_devices.get(uuid, ()) if mig == "Enabled" else ()))  # fmt: skip
    return Machine(tuple(sorted(gpus, key=lambda gpu: gpu.index)))


# --------------------------------------------------------------------------- the engine: who holds what


@dataclass(frozen=True)
class Holding:
    """What one container on the engine holds of the machine's GPUs, read from its attributes.

    ``device_ids`` as its requests name them (indexes, GPU or MIG UUIDs); ``count`` as moby maps
    a count (N: the devices 0 … N-1; -1: all). devbox's labels say whose host it is (``project``,
    ``host``, ``owner``, the spec's state ``folder``); a container without them is another tool's.
    ``shared``: a devbox host with gpu_share, which may use GPUs others hold and holds none.
    """

    id: str
    name: str
    device_ids: tuple[str, ...] = ()
    count: int = 0
    project: str | None = None
    host: str | None = None
    owner: str | None = None
    folder: str | None = None
    shared: bool = False
    running: bool = True

    @property
    def is_devbox(self) -> bool:
        return self.project is not None and self.host is not None

    def describe(self) -> str:
        """Who this is, for refusals and `devbox gpus`: 'gpu-lab/master (folder /srv/lab)' or
        'container "trainer" (not devbox)'."""
        if not self.is_devbox:
            return f'container "{self.name}" (not devbox)'
        where = f" (folder {spec_folder(self.folder)})" if self.folder else ""
        return f"{self.project}/{self.host}{where}"


# A container in these states never runs again: it holds nothing.
_GONE_STATES = ("dead", "removing")
# What a swarm tells a task's container of the GPUs it was given (generic resources).
SWARM_GPU_ENV = "DOCKER_RESOURCE_NVIDIA-GPU"
COMPOSE_FILES_LABEL = "com.docker.compose.project.config_files"


def container_holding(attrs: Mapping[str, Any]) -> Holding | None:
    """The GPUs a container holds, from its attributes as `docker inspect` gives them; None when
    it holds none. Pure: the one place that decides what holding a GPU means on the engine.

    A container that exists holds its GPUs whether it runs or not (a stopped one starts again,
    by hand or by its restart policy, with the same devices); one that is dead or being removed
    holds nothing, and so does a devbox host the idle watcher stopped (devbox.idle.reclaimed:
    not running, restart policy no; `devbox up` allocates again before it starts it). Read:
    NVIDIA device requests (``--gpus``, compose's ``devices``), a swarm task's generic resources
    (``DOCKER_RESOURCE_NVIDIA-GPU``) and the older ``--runtime nvidia`` with
    ``NVIDIA_VISIBLE_DEVICES``.
    """
    from devbox.idle import reclaimed
    from devbox.labels import GPU_SHARE_LABEL, LABEL_PREFIX, OWNER_FOLDER_LABEL, OWNER_LABEL

    state = attrs.get("State") or {}
    status = str(state.get("Status", "running") if isinstance(state, dict) else state)
    if status in _GONE_STATES or reclaimed(attrs):
        return None
    config, host_config = attrs.get("Config") or {}, attrs.get("HostConfig") or {}
    ids, count = _requested(host_config, _environment(config.get("Env")))
    if not ids and not count:
        return None
    labels = config.get("Labels") or {}
    files = str(labels.get(COMPOSE_FILES_LABEL, ""))
    folder = labels.get(OWNER_FOLDER_LABEL) or (str(Path(files.split(",")[0]).parent) if files else None)
    return Holding(str(attrs.get("Id", "")), str(attrs.get("Name", "")).lstrip("/"), tuple(ids), count,
                   labels.get(f"{LABEL_PREFIX}project"), labels.get(f"{LABEL_PREFIX}host"), labels.get(OWNER_LABEL),
                   folder, labels.get(GPU_SHARE_LABEL) == "true", status == "running")  # fmt: skip


def _environment(env: Any) -> dict[str, str]:
    return dict(str(item).partition("=")[::2] for item in env or [])


def _requested(host_config: Mapping[str, Any], env: Mapping[str, str]) -> tuple[list[str], int]:
    """(device ids, count) of a container's GPU requests; count -1 is all."""
    ids: list[str] = []
    count = 0
    for request in host_config.get("DeviceRequests") or []:
        capabilities = {c for group in request.get("Capabilities") or [] for c in group}
        if request.get("Driver") != "nvidia" and "gpu" not in capabilities:
            continue  # another vendor's devices
        ids += [str(i) for i in request.get("DeviceIDs") or []]
        wanted = int(request.get("Count") or 0)
        count = -1 if -1 in (wanted, count) else max(count, wanted)  # moby: the devices 0 … N-1
    ids += [i.strip() for i in env.get(SWARM_GPU_ENV, "").split(",") if i.strip()]
    visible = env.get("NVIDIA_VISIBLE_DEVICES", "").strip()
    if host_config.get("Runtime") == "nvidia" and visible not in ("", "none", "void"):
        if visible == "all":
            count = -1
        else:
            ids += [i.strip() for i in visible.split(",") if i.strip()]
    return list(dict.fromkeys(ids)), count


def spec_folder(state_folder: str) -> str:
    """The folder a user knows a spec by: the one holding its ``.devbox`` state folder."""
    path = Path(state_folder)
    return str(path.parent) if path.name.startswith(".devbox") else str(path)


def held_units(holding: Holding, machine: Machine | None) -> tuple[str, ...]:
    """The units a holding takes, as the NVIDIA hook resolves its request: UUIDs of ``machine``
    (an id it does not have is dropped), or, where the machine is unknown, the ids as given and
    the indexes of a count ("*": every GPU)."""
    named = list(holding.device_ids) + [str(i) for i in range(max(holding.count, 0))]
    if machine is None:
        return ("*",) if holding.count == -1 else tuple(dict.fromkeys(named))
    if holding.count == -1:
        return machine.units
    units: list[str] = []
    for ident in named:
        units += [u for u in machine.resolve(ident) or () if u not in units]
    return tuple(units)


def taken_by_others(holdings: Iterable[Holding], machine: Machine | None,
                    ours: Callable[[Holding], bool]) -> dict[str, tuple[Holding, ...]]:  # fmt: skip
    """Unit -> the containers holding it that are not the spec's own (``ours``), sharing hosts
    left out: what `up` may not give a host of this spec. Pure."""
    taken: dict[str, list[Holding]] = {}
    for holding in holdings:
        if holding.shared or ours(holding):
            continue
        for unit in held_units(holding, machine):
            taken.setdefault(unit, []).append(holding)
    return {unit: tuple(found) for unit, found in taken.items()}


def owned_by(project: str, owner: str | None, folder: Path) -> Callable[[Holding], bool]:
    """Whether a holding is a host of this spec: its project, and its owner (or, for a container
    an older devbox made without an owner label, this very folder or none)."""

    def ours(holding: Holding) -> bool:
        if holding.project != project:
            return False
        if holding.owner:
            return holding.owner == owner
        return holding.folder is None or os.path.realpath(holding.folder) == os.path.realpath(folder)

    return ours


def also_held(holdings: Sequence[Holding], machine: Machine | None,
              ours: Callable[[Holding], bool]) -> dict[str, list[str]]:  # fmt: skip
    """This spec's host -> who else holds one of its GPUs (another spec's host, shared or made by an
    older devbox, or another tool's container), for `devbox status` to mark. Pure."""
    others = [(h, set(held_units(h, machine))) for h in holdings if not ours(h)]
    found: dict[str, list[str]] = {}
    for holding in holdings:
        if not ours(holding) or holding.host is None:
            continue
        mine = set(held_units(holding, machine))
        for other, theirs in others:
            if mine & theirs or (mine and "*" in theirs) or (theirs and "*" in mine):
                found.setdefault(holding.host, []).append(other.describe() + (" shared" if other.shared else ""))
    return found


def engine_holdings(client: Any) -> list[Holding]:
    """Every container on the engine that holds GPUs, any state, any project, any tool."""
    from devbox.docker_api import list_containers

    return [found for container in list_containers(client, all=True)
            if (found := container_holding(container.attrs)) is not None]  # fmt: skip


# --------------------------------------------------------------------------- allocation


@dataclass(frozen=True)
class Request:
    """What one host asks for: ``count`` (an int, or ``"all"``) or explicit ``device_ids``;
    ``share``: it may use GPUs other hosts hold, and holds none itself."""

    host: str
    count: int | str = 0
    device_ids: tuple[str, ...] = ()
    share: bool = False

    @property
    def wanted(self) -> bool:
        return bool(self.device_ids) or self.count != 0

    @property
    def key(self) -> str:
        """The request as the ledger records it: an assignment is kept only for the same key."""
        what = "ids " + ",".join(self.device_ids) if self.device_ids else str(self.count)
        return what + (" shared" if self.share else "")

    @property
    def text(self) -> str:
        """The request as error messages show it: '2', 'all', '[0, GPU-6f2b…]'."""
        return f"[{', '.join(self.device_ids)}]" if self.device_ids else str(self.count)


def requests_of(hosts: Iterable[Any]) -> list[Request]:
    """Requests from spec hosts (``host.gpus.count``/``.device_ids``, ``host.gpu_share``)."""
    return [Request(host.name, host.gpus.count, tuple(host.gpus.device_ids), bool(getattr(host, "gpu_share", False)))
            for host in hosts]  # fmt: skip


@dataclass(frozen=True)
class Assignment:
    """The devices one host gets: ``device_ids`` (UUIDs when the machine is known, else indexes),
    or every GPU (``all``: rendered as ``count: all``). ``request`` is the Request.key it is for."""

    host: str
    request: str
    device_ids: tuple[str, ...] = ()
    all: bool = False
    shared: bool = False

    def compose_fields(self) -> dict[str, Any]:
        """The part of a compose GPU reservation (or a DeviceRequest) this decides."""
        return {"count": "all"} if self.all else {"device_ids": list(self.device_ids)}


@dataclass(frozen=True)
class Allocation:
    """Every GPU host's assignment, in spec order. ``by_index``: the machine could not be read, so
    counts became indexes in host order (``up`` on the GPU machine resolves them to UUIDs)."""

    assignments: tuple[Assignment, ...] = ()
    by_index: bool = False
    notes: tuple[str, ...] = ()

    def of(self, host: str) -> Assignment | None:
        return next((a for a in self.assignments if a.host == host), None)


@dataclass(frozen=True)
class Ledger:
    """What `up` last decided: the machine's GPUs as seen then, and each host's assignment."""

    machine: Machine | None = None
    assignments: tuple[Assignment, ...] = ()

    def of(self, host: str) -> Assignment | None:
        return next((a for a in self.assignments if a.host == host), None)


def allocate(requests: Sequence[Request], machine: Machine | None, previous: Ledger | None = None,
             source: str = "devbox.yaml",
             taken: Mapping[str, tuple[Holding, ...]] | None = None) -> Allocation:  # fmt: skip
    """Concrete devices for every host that wants GPUs, never overlapping between non-sharing hosts,
    nor with what other containers on the engine hold (``taken``: devbox.gpus.taken_by_others).

    Pure and deterministic. Explicit ids are honoured (and taken out of the pool); a host whose
    request is unchanged keeps its previous devices whatever happens to the other hosts; a new or
    changed host takes free units in machine order (a changed one its own old units first);
    ``share`` hosts take the least-held units and are never holders. ``machine=None`` allocates
    indexes in host order. Raises SpecError (every problem, one line each) on oversubscription,
    clashing pins, ids the machine does not have, or GPUs others hold (naming each holder).
    """
    return _Allocator(machine, previous or Ledger(), source, dict(taken or {})).run(requests)


@dataclass
class _Allocator:
    machine: Machine | None
    previous: Ledger
    source: str
    taken: dict[str, tuple[Holding, ...]] = field(default_factory=dict)  # unit -> others' containers on it
    held: dict[str, str] = field(default_factory=dict)  # unit -> non-sharing host holding it
    result: dict[str, Assignment] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def run(self, requests: Sequence[Request]) -> Allocation:
        wanted = [r for r in requests if r.wanted]
        holders = [r for r in wanted if not r.share]
        self._pinned([r for r in holders if r.device_ids])
        self._every([r for r in holders if r.count == "all"], holders)
        counted = [r for r in holders if isinstance(r.count, int) and not r.device_ids and r.count > 0]
        if self._fits(holders, counted):
            self._counted(counted)
        self._shared([r for r in wanted if r.share])
        if self.problems:
            raise SpecError(self.source, self.problems)
        order = [r.host for r in wanted]
        notes: tuple[str, ...] = ()
        if self.machine is None and any(not a.all for a in self.result.values()):
            notes = ("nvidia-smi is not available here: GPUs are assigned by index in host order; "
                     "`devbox up` on the GPU machine assigns them by UUID",)  # fmt: skip
        return Allocation(tuple(self.result[host] for host in order), self.machine is None, notes)

    # -- what each kind of request gets

    def _pinned(self, requests: list[Request]) -> None:
        for request in requests:
            units = self._resolve_pins(request)
            for unit in units:
                if self._others(unit):
                    self.problems.append(f"hosts.{request.host}.gpus: {self._gpu(unit)} is held by "
                                         f"{self._holders(unit)}; pin another, free it, or {SHARE_HINT}")  # fmt: skip
                elif unit in self.held:
                    self.problems.append(f"hosts.{request.host}.gpus: GPU {unit} is also pinned to host "
                                         f"{self.held[unit]}; pin another, or {SHARE_HINT}")  # fmt: skip
            self._hold(request, units)

    def _every(self, requests: list[Request], holders: list[Request]) -> None:
        """``all`` without sharing holds every unit: any other holder would share one."""
        for request in requests:
            others = [f"{r.host} ({r.text})" for r in holders if r.host != request.host]
            if others:
                self.problems.append(f"hosts.{request.host}.gpus: all gives {request.host} every GPU, so "
                                     f"{', '.join(others)} would share them; give {request.host} a count, or "
                                     f"set gpu_share: true on {request.host}")  # fmt: skip
            elif self.taken:
                self.problems.append(f"hosts.{request.host}.gpus: all gives {request.host} every GPU, but others "
                                     f"hold some: {self._taken_text()}; {FREE_HINT}, give {request.host} a "
                                     f"count, or set gpu_share: true on {request.host}")  # fmt: skip
            self.result[request.host] = Assignment(request.host, request.key, all=True)
            for unit in self.machine.units if self.machine else ():
                self.held.setdefault(unit, request.host)

    def _fits(self, holders: list[Request], counted: list[Request]) -> bool:
        """Refuse, naming every holder, when the counts need more units than the machine has free."""
        if self.problems:
            return False  # clashing pins or an `all`: reported already, counting would only add noise
        needed = sum(int(r.count) for r in counted)
        asked = ", ".join(f"{r.host} ({r.text})" for r in holders)
        if self.machine is None:
            if needed and "*" in self.taken:
                self.problems.append(f"hosts.*.gpus: {asked} ask for GPUs of their own but {self._holders('*')} "
                                     f"holds every GPU; {FREE_HINT}, or {SHARE_HINT}")  # fmt: skip
                return False
            return True
        free = len([u for u in self.machine.units if not self._busy(u)])
        if needed <= free:
            return True
        total = needed + len([u for u in self.machine.units if u in self.held])
        if any(self._others(u) for u in self.machine.units):
            self.problems.append(f"hosts.*.gpus: {asked} ask for {total} GPUs of their own but only {free} of this "
                                 f"machine's {self.machine.describe()} {'is' if free == 1 else 'are'} free, held: "
                                 f"{self._taken_text()}; {FREE_HINT}, ask for fewer, or {SHARE_HINT}")  # fmt: skip
        else:
            self.problems.append(f"hosts.*.gpus: {asked} ask for {total} GPUs of their own but this machine has "
                                 f"{self.machine.describe()}; ask for fewer, or {SHARE_HINT}")  # fmt: skip
        return False

    def _counted(self, requests: list[Request]) -> None:
        changed = []
        for request in requests:  # unchanged hosts first: they keep theirs, whatever the others do
            kept = self._previous(request, need_free=True)
            if kept is not None and len(kept) == request.count:
                self._hold(request, kept)
            else:
                changed.append(request)
        for request in changed:  # a changed host takes back what it still can, before the pool is shared out
            mine = self._previous(request, need_free=True, same_request=False) or ()
            self._hold(request, [u for u in mine if u not in self.held][: int(request.count)])
        for request in changed:
            taken = list(self.result[request.host].device_ids)
            taken += self._free(int(request.count) - len(taken))
            self._hold(request, taken)

    def _shared(self, requests: list[Request]) -> None:
        """Sharing hosts: kept if still valid, else the least-held units (ties: machine order)."""
        load = Counter(self.held.keys())  # every held unit has one holder of the spec's
        load.update({unit: len(found) for unit, found in self.taken.items()})  # and others' containers
        fresh = []
        for request in requests:
            if request.count == "all":
                self.result[request.host] = Assignment(request.host, request.key, all=True, shared=True)
                continue
            units = self._resolve_pins(request) if request.device_ids else self._previous(request, need_free=False)
            if units is not None:
                self._give(request, units, load)
            else:
                fresh.append(request)
        for request in fresh:
            pool = list(self.machine.units) if self.machine else self._index_pool(int(request.count))
            if self.machine is not None and int(request.count) > len(pool):
                self.problems.append(f"hosts.{request.host}.gpus: asks for {request.count} GPUs but this machine "
                                     f"has {self.machine.describe()}; ask for fewer")  # fmt: skip
                continue
            order = {unit: i for i, unit in enumerate(pool)}
            self._give(request, sorted(pool, key=lambda u: (load[u], order[u]))[: int(request.count)], load)

    # -- helpers

    def _give(self, request: Request, units: Sequence[str], load: Counter[str]) -> None:
        self.result[request.host] = Assignment(request.host, request.key, tuple(units), shared=True)
        load.update(units)

    def _hold(self, request: Request, units: Sequence[str]) -> None:
        self.result[request.host] = Assignment(request.host, request.key, tuple(units))
        for unit in units:
            self.held.setdefault(unit, request.host)

    def _busy(self, unit: str) -> bool:
        """Held by a host of this spec, or by another container on the engine."""
        return unit in self.held or self._others(unit)

    def _others(self, unit: str) -> bool:
        return unit in self.taken or "*" in self.taken

    def _gpu(self, unit: str) -> str:
        """'GPU 1', or 'GPU 0 (MIG-c6d4f1ef)' for a MIG device, for refusals."""
        if unit == "*":
            return "every GPU"
        gpu = self.machine.gpu_of(unit) if self.machine else None
        if gpu is None:
            return f"GPU {unit}"
        return f"GPU {gpu.index}" + (f" ({unit[:12]})" if gpu.mig else "")

    def _holders(self, unit: str) -> str:
        found = self.taken.get(unit) or self.taken.get("*") or ()
        return " and ".join(dict.fromkeys(holding.describe() for holding in found))

    def _taken_text(self) -> str:
        """Every unit others hold, in machine order: 'GPU 0: lab/master (folder /srv/lab), GPU 1: …'."""
        order = {unit: i for i, unit in enumerate(self.machine.units)} if self.machine else {}
        units = sorted(self.taken, key=lambda u: (order.get(u, len(order)), u))
        return ", ".join(f"{self._gpu(unit)}: {self._holders(unit)}" for unit in units)

    def _resolve_pins(self, request: Request) -> tuple[str, ...]:
        """Explicit ids as units: UUIDs (an index becomes its GPU's UUID) when the machine is known."""
        if self.machine is None:
            return request.device_ids
        units: list[str] = []
        for ident in request.device_ids:
            found = self.machine.resolve(ident)
            if found is None:
                self.problems.append(f"hosts.{request.host}.gpus: GPU {ident} does not exist on this machine "
                                     f"(it has {self.machine.describe()})")  # fmt: skip
            else:
                units += [unit for unit in found if unit not in units]
        return tuple(units)

    def _previous(self, request: Request, *, need_free: bool, same_request: bool = True) -> tuple[str, ...] | None:
        """The host's devices from the ledger, as current units; None when it has no usable record.

        Indexes recorded where the machine was unknown become that index's UUID here. With
        ``need_free``, units another host holds by now are dropped (and the record is unusable).
        """
        before = self.previous.of(request.host)
        if before is None or before.all or (same_request and before.request != request.key):
            return None
        units = []
        for ident in before.device_ids:
            unit = self._current(ident)
            if unit is None or (need_free and self._busy(unit)):
                if same_request:
                    return None
                continue
            units.append(unit)
        return tuple(units)

    def _current(self, ident: str) -> str | None:
        if self.machine is None:
            return ident
        if ident in self.machine.units:
            return ident
        found = self.machine.resolve(ident) if ident.isdigit() else None
        return found[0] if found and len(found) == 1 else None

    def _free(self, count: int) -> list[str]:
        """The first ``count`` units nobody holds, in machine order (indexes when it is unknown)."""
        if self.machine is not None:
            return [u for u in self.machine.units if not self._busy(u)][:count]
        found: list[str] = []
        index = 0
        while len(found) < count:
            if not self._busy(str(index)):
                found.append(str(index))
            index += 1
        return found

    def _index_pool(self, count: int) -> list[str]:
        """Indexes a sharing host may use where the machine is unknown: those known to exist."""
        highest = max((int(u) for u in [*self.held, *self.taken] if u.isdigit()), default=-1)
        return [str(i) for i in range(max(highest + 1, count))]


# --------------------------------------------------------------------------- the ledger file


def ledger_after(allocation: Allocation, machine: Machine | None, previous: Ledger | None = None) -> Ledger:
    """The ledger to save after an allocation: the machine as seen now (or as last seen)."""
    seen = machine if machine is not None else (previous.machine if previous else None)
    return Ledger(seen, allocation.assignments)


def load_ledger(folder: Path) -> Ledger:
    """The ledger in ``folder`` (empty when there is none). Raises UsageError when it is damaged."""
    path = folder / LEDGER_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Ledger()
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _damaged(path, str(exc).splitlines()[0]) from None
    try:
        return _ledger_from(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _damaged(path, f"unexpected content: {exc}") from None


def read_ledger(folder: Path, warn: Callable[[str], None]) -> Ledger:
    """The ledger for a command that only looks (`status`, `gpus`, `check`): a damaged one is
    ``warn``ed about (the file and its fix, one line) and read as empty, so the command still
    shows the hosts; `up`, which gives GPUs out and writes the ledger, refuses it (load_ledger)."""
    try:
        return load_ledger(folder)
    except UsageError as exc:
        warn(f"{exc}; shown without the GPUs it assigned")
        return Ledger()


def _damaged(path: Path, why: str) -> UsageError:
    return UsageError(f"{path}: not a GPU ledger ({why[:160]}); remove it and the next `devbox up` "
                      "assigns GPUs afresh (running hosts may move to other GPUs)")  # fmt: skip


def _ledger_from(data: Any) -> Ledger:
    if not isinstance(data, dict) or data.get("version") != LEDGER_VERSION:
        raise ValueError(f"version {data.get('version') if isinstance(data, dict) else None!r}, "
                         f"expected {LEDGER_VERSION}")  # fmt: skip
    machine = None
    if data.get("machine") is not None:
        machine = Machine(tuple(
            Gpu(int(g["index"]), str(g["uuid"]), str(g["name"]), g.get("memory_mib"), bool(g.get("mig", False)),
                tuple(MigDevice(str(m["uuid"]), str(m["profile"]), int(m["slot"])) for m in g.get("mig_devices", [])))
            for g in data["machine"]
        ))  # fmt: skip
    assignments = tuple(
        Assignment(str(host), str(a["request"]), tuple(str(i) for i in a.get("device_ids", [])),
                   bool(a.get("all", False)), bool(a.get("shared", False)))
        for host, a in data["hosts"].items()
    )  # fmt: skip
    return Ledger(machine, assignments)


def ledger_json(ledger: Ledger) -> str:
    machine = None
    if ledger.machine is not None:
        machine = [
            {"index": g.index, "uuid": g.uuid, "name": g.name, "memory_mib": g.memory_mib, "mig": g.mig,
             "mig_devices": [{"uuid": m.uuid, "profile": m.profile, "slot": m.slot} for m in g.mig_devices]}
            for g in ledger.machine.gpus
        ]  # fmt: skip
    hosts = {
        a.host: {"request": a.request, "device_ids": list(a.device_ids), "all": a.all, "shared": a.shared}
        for a in ledger.assignments
    }
    return json.dumps({"version": LEDGER_VERSION, "machine": machine, "hosts": hosts}, indent=1, sort_keys=True) + "\n"


def save_ledger(folder: Path, ledger: Ledger) -> bool:
    """Write the ledger atomically (a temporary file renamed over it); returns whether it changed."""
    return write_if_changed(folder / LEDGER_FILE, ledger_json(ledger), 0o644)


def assign(requests: Sequence[Request], folder: Path, source: str, *, environ: Mapping[str, str] | None = None,
           save: bool = True, holdings: Sequence[Holding] = (),
           ours: Callable[[Holding], bool] = lambda holding: False) -> Allocation:  # fmt: skip
    """What `render`/`up` call before writing docker-compose.yml: read the machine and the ledger in
    ``folder``, allocate, and (``save``) record the result, so every later `up` gives the same GPUs.
    `validate` calls it with ``save=False`` to refuse an oversubscribed spec without writing.

    ``holdings``: what the containers on the engine hold (`up` reads them, devbox.gpus.engine_holdings,
    under the machine lock); those not ``ours`` are not given to this spec's hosts. Where nvidia-smi
    cannot describe the machine, the machine last seen (the ledger's) maps their UUIDs to indexes.

    Raises SpecError (oversubscribed, clashing or unknown ids, GPUs others hold), PreflightError
    (nvidia-smi failed), UsageError (damaged ledger). Nothing is written when it raises.
    """
    previous = load_ledger(folder)
    machine = discover(environ)
    taken = taken_by_others(holdings, machine or previous.machine, ours)
    if machine is None and previous.machine is not None:
        taken = {_index_of(previous.machine, unit): found for unit, found in taken.items()}
    allocation = allocate(requests, machine, previous, source, taken)
    if save:
        save_ledger(folder, ledger_after(allocation, machine, previous))
    return allocation


def _index_of(machine: Machine, unit: str) -> str:
    """A whole GPU's index (what a count becomes off the machine), a MIG device as it is."""
    gpu = machine.gpu_of(unit)
    return str(gpu.index) if gpu is not None and not gpu.mig else unit


# --------------------------------------------------------------------------- attribution


@dataclass(frozen=True)
class Usage:
    """One GPU's load now: memory used (MiB) and utilisation (%; None where nvidia-smi has none, MIG)."""

    index: int
    uuid: str
    memory_used_mib: int | None
    utilization: int | None


@dataclass(frozen=True)
class ComputeApp:
    """A process using a GPU, by its PID on the machine (nvidia-smi is not PID-namespace aware)."""

    pid: int
    gpu_uuid: str
    used_memory_mib: int | None


@dataclass(frozen=True)
class Holder:
    """One holder of a GPU as `devbox gpus` shows it: a devbox host (``project``, ``host``, its
    spec ``folder``) or another tool's container (``host`` None, ``container`` its name)."""

    host: str | None
    device: str
    shared: bool = False
    project: str | None = None
    folder: str | None = None
    container: str | None = None

    @property
    def text(self) -> str:
        if self.host is None:
            return f'container "{self.container}" (not devbox)'
        return f"{self.project}/{self.host}" if self.project else self.host

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "project": self.project, "folder": self.folder, "container": self.container,
                "device": self.device, "shared": self.shared}  # fmt: skip


@dataclass(frozen=True)
class GpuProcess:
    """A process on a GPU and the container it runs in (``host``/``project`` when it is devbox's)."""

    pid: int
    host: str | None
    used_memory_mib: int | None
    project: str | None = None
    container: str | None = None

    @property
    def text(self) -> str:
        if self.host is not None:
            return f"{self.project}/{self.host}" if self.project else self.host
        return f'container "{self.container}" (not devbox)' if self.container else "- (not in a container)"

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "host": self.host, "project": self.project, "container": self.container,
                "used_memory_mib": self.used_memory_mib}  # fmt: skip


@dataclass(frozen=True)
class GpuRow:
    """One GPU as `devbox gpus` shows it."""

    index: int
    uuid: str
    name: str
    memory_total_mib: int | None
    memory_used_mib: int | None
    utilization: int | None
    mig: bool
    holders: tuple[Holder, ...]
    processes: tuple[GpuProcess, ...]
    missing: bool = False  # a device containers hold that this machine no longer has (``uuid``: as held)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": None if self.missing else self.index, "uuid": self.uuid, "name": self.name, "mig": self.mig,
            "missing": self.missing,
            "memory_total_mib": self.memory_total_mib, "memory_used_mib": self.memory_used_mib,
            "utilization": self.utilization,
            "holders": [h.as_dict() for h in self.holders],
            "processes": [p.as_dict() for p in self.processes],
        }  # fmt: skip


def parse_usage(text: str) -> list[Usage]:
    """`nvidia-smi --query-gpu=index,uuid,memory.used,utilization.gpu --format=csv,noheader,nounits`."""
    usage = []
    for index, uuid, memory, utilization in _csv_rows(text, 4, "GPU usage"):
        line = ", ".join((index, uuid, memory, utilization))
        if not index.isdigit() or not uuid.startswith("GPU-"):
            raise _garbage("GPU usage", line)
        used, busy = _number(memory, line, "GPU usage"), _number(utilization, line, "GPU usage")
        usage.append(Usage(int(index), uuid, used, busy))
    return usage


def parse_compute_apps(text: str) -> list[ComputeApp]:
    """`nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader,nounits`."""
    apps = []
    for pid, uuid, memory in _csv_rows(text, 3, "a process list"):
        line = ", ".join((pid, uuid, memory))
        if not pid.isdigit() or not uuid.startswith(("GPU-", "MIG-")):
            raise _garbage("a process list", line)
        apps.append(ComputeApp(int(pid), uuid, _number(memory, line, "a process list")))
    return apps


_CONTAINER_ID = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")


def container_of(cgroup: str) -> str | None:
    """The container id a process's /proc/PID/cgroup names (cgroup v1 or v2, cgroupfs
    ``/docker/<id>`` or systemd ``docker-<id>.scope``), or None for a process outside containers."""
    found = _CONTAINER_ID.findall(cgroup)
    return found[-1] if found else None


def read_cgroup(pid: int, proc: Path = Path("/proc")) -> str | None:
    """A process's cgroup file, or None when it is gone or not ours to read."""
    try:
        return (proc / str(pid) / "cgroup").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


@dataclass(frozen=True)
class Known:
    """A container `devbox gpus` can name a process by: its id, name and devbox's labels."""

    id: str
    name: str
    project: str | None = None
    host: str | None = None


def known_container(attrs: Mapping[str, Any]) -> Known:
    from devbox.labels import LABEL_PREFIX

    labels = (attrs.get("Config") or {}).get("Labels") or attrs.get("Labels") or {}
    return Known(str(attrs.get("Id", "")), str(attrs.get("Name") or (attrs.get("Names") or [""])[0]).lstrip("/"),
                 labels.get(f"{LABEL_PREFIX}project"), labels.get(f"{LABEL_PREFIX}host"))  # fmt: skip


def attribute(machine: Machine, usage: Sequence[Usage], apps: Sequence[ComputeApp], ledger: Ledger,
              holdings: Sequence[Holding], cgroup: Callable[[int], str | None], *, project: str | None = None,
              folder: str | None = None, containers: Sequence[Known] = ()) -> list[GpuRow]:  # fmt: skip
    """Per GPU: who holds it (every container on the engine that holds it, running or not, and
    what this spec's ledger gave those of its hosts, ``project`` in ``folder``, whose containers
    hold GPUs now: a host that is down holds nothing), its load, and its processes with the
    container each runs in (via ``cgroup(pid)``; ``containers`` name those that hold no GPU)."""
    holders: dict[str, dict[tuple[str | None, str | None, str], Holder]] = {gpu.uuid: {} for gpu in machine.gpus}
    missing: dict[str, dict[tuple[str | None, str | None, str], Holder]] = {}  # devices the machine lacks
    shared = {a.host for a in ledger.assignments if a.shared}

    def note(holder: Holder) -> None:
        gpu = machine.gpu_of(holder.device)
        key = (holder.project, holder.host or holder.container, holder.device)
        if gpu is not None:
            holders[gpu.uuid].setdefault(key, holder)
        elif holder.device != "*":
            missing.setdefault(holder.device, {}).setdefault(key, holder)

    for holding in holdings:
        # the ids it was given that the machine lacks too: a GPU that left holds the host's container
        gone = [ident for ident in holding.device_ids if machine.resolve(ident) is None]
        for unit in (*held_units(holding, machine), *gone):
            host = holding.host if holding.is_devbox else None
            note(Holder(host, unit, holding.shared, holding.project if host else None,
                        spec_folder(holding.folder) if holding.folder and host else None, holding.name))  # fmt: skip
    holding_now = {holding.host for holding in holdings if holding.is_devbox and holding.project == project}
    for assignment in ledger.assignments:
        if assignment.host not in holding_now:
            continue  # remembered, but holding nothing now (down, reclaimed, not up yet): another host may have it
        for unit in machine.units if assignment.all else assignment.device_ids:
            note(Holder(assignment.host, unit, assignment.host in shared, project,
                        spec_folder(folder) if folder else None))  # fmt: skip
    by_id = {c.id: c for c in containers}
    by_id.update({h.id: Known(h.id, h.name, h.project, h.host) for h in holdings})
    loads = {u.uuid: u for u in usage}
    rows = []
    for gpu in machine.gpus:
        load = loads.get(gpu.uuid)
        processes = tuple(
            _process(app, by_id, cgroup) for app in sorted(apps, key=lambda a: a.pid)
            if app.gpu_uuid == gpu.uuid or app.gpu_uuid in gpu.units
        )  # fmt: skip
        held = tuple(sorted(holders[gpu.uuid].values(), key=lambda h: (h.host is None, h.text, h.device)))
        rows.append(GpuRow(gpu.index, gpu.uuid, gpu.name, gpu.memory_mib, load.memory_used_mib if load else None,
                           load.utilization if load else None, gpu.mig, held, processes))  # fmt: skip
    for device, found in sorted(missing.items()):
        held = tuple(sorted(found.values(), key=lambda h: (h.host is None, h.text, h.device)))
        rows.append(GpuRow(-1, device, "missing: not on this machine", None, None, None, False, held, (), missing=True))
    return rows


def _process(app: ComputeApp, containers: Mapping[str, Known], cgroup: Callable[[int], str | None]) -> GpuProcess:
    text = cgroup(app.pid)
    found = containers.get(container_of(text) or "") if text else None
    if found is None:
        return GpuProcess(app.pid, None, app.used_memory_mib)
    host = found.host if found.project else None
    return GpuProcess(app.pid, host, app.used_memory_mib, found.project if host else None, found.name)


def gpu_report(containers: Iterable[Any], folder: Path | None = None, environ: Mapping[str, str] | None = None,
               cgroup: Callable[[int], str | None] | None = None,
               project: str | None = None, warn: Callable[[str], None] | None = None) -> list[GpuRow]:  # fmt: skip
    """What `devbox gpus` shows, from this machine's nvidia-smi, every container on the engine
    (Docker SDK objects, inspected) and, with a spec, its ledger in ``folder`` (``project``);
    ``cgroup`` reads a PID's cgroup (default: /proc). Raises PreflightError when nvidia-smi
    cannot be asked, UsageError when the ledger is damaged."""
    environ = os.environ if environ is None else environ
    binary = find_nvidia_smi(environ)
    if binary is None:
        where = environ.get("DOCKER_HOST", "")
        raise PreflightError(f"the engine runs elsewhere ({where}): run `devbox gpus` on that machine" if where and
                             not where.startswith("unix://") else "nvidia-smi is not on PATH: run `devbox gpus` on "
                             "the GPU machine, with the NVIDIA driver installed")  # fmt: skip
    run = nvidia_smi_runner(binary, environ)
    machine = discover(run=run) or Machine()
    containers = list(containers)
    holdings = [found for c in containers if (found := container_holding(c.attrs)) is not None]
    ledger = Ledger() if folder is None else load_ledger(folder) if warn is None else read_ledger(folder, warn)
    return attribute(machine, parse_usage(run(USAGE_QUERY)), parse_compute_apps(run(APPS_QUERY)), ledger, holdings,
                     cgroup or read_cgroup, project=project, folder=str(folder) if folder else None,
                     containers=[known_container(c.attrs) for c in containers])  # fmt: skip
