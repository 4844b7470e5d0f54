"""Moving a pinned host to another swarm node with its data.

A named volume lives on the node that made it (README "Volumes live on a node"), so a host whose
``node:`` changed would find empty volumes on its new node. `up` sees which of the host's volumes
are on the node its service ran on, says so and asks (``--yes``), then, once the old service is
stopped (nothing writes any more), copies each one through the two nodes' engines: a helper
container on the old node streams GNU tar of the volume (read-only), a helper on the new node
extracts it into a volume of the same name and labels, and a tree hash (names, modes, owners,
link counts, sizes, times, link targets, contents) taken on both sides must match before the
host starts there. The old volumes stay (the README names the `docker volume rm` line). A
volume that already exists on the new node (``data:`` shared with a host there) is left as it is.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devbox import backup
from devbox.backup_ops import MOUNTS, _mounts, _run, _tar_problem, host_volumes, stream_in, stream_out
from devbox.engines.swarm_nodes import Node
from devbox.engines.swarm_reach import NodeClients, current_task, out_of_reach
from devbox.errors import EngineError, PreflightError

if TYPE_CHECKING:
    from devbox.project import Project
    from devbox.spec import Host

# A tree's hash: one line per entry (names, modes, owners, link counts, sizes, times, link
# targets), then every regular file's content; the same on both nodes or the copy failed.
TREE_HASH = ('cd "$1" && { find . -mindepth 1 -printf "%p|%m|%U|%G|%n|%s|%T@|%l\\n" | LC_ALL=C sort; '
             'find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum; } '
             '| sha256sum | cut -d" " -f1')  # fmt: skip


@dataclass
class Move:
    """One host's volumes to copy from ``old`` to ``new`` (node hostnames)."""

    host: str
    old: Node
    new: Node
    volumes: list[str] = field(default_factory=list)  # engine names to copy
    kept: list[str] = field(default_factory=list)  # already on the new node: left as they are

    def line(self) -> str:
        text = (f"host {self.host} moves from node {self.old.hostname} to {self.new.hostname}: its volumes "
                f"{', '.join(self.volumes)} are on {self.old.hostname} and will be copied "
                "(and kept there)")  # fmt: skip
        if self.kept:
            text += f"; {', '.join(self.kept)} already exist on {self.new.hostname} and stay as they are"
        return text


def _find(nodes: list[Node], wanted: str) -> Node | None:
    return next((n for n in nodes if wanted in (n.hostname, n.id)), None)


def _volume(client: Any, name: str) -> Any:
    # the engine's name filter matches parts of names: the exact one only
    return next((v for v in client.volumes.list(filters={"name": name}) if v.name == name), None)


def planned_moves(project: Project, hosts: list[Host], services: Mapping[str, Any], nodes: list[Node],
                  clients: NodeClients) -> list[Move]:  # fmt: skip
    """The pinned hosts among ``hosts`` whose service last ran on another node that holds their
    volumes. Raises PreflightError when that node's engine is out of reach (nothing changed)."""
    by_id = {node.id: node for node in nodes}
    moves = []
    for host in hosts:
        service = services.get(host.name)
        task = current_task(service) if service is not None and host.node else None
        old = by_id.get(str(task.get("NodeID") or "")) if task else None
        new = _find(nodes, host.node or "")
        if old is None or new is None or old.id == new.id:
            continue
        names = [v.name for v in host_volumes(project, host)]
        old_client, new_client = clients.get(old), clients.get(new)
        if old_client is None or new_client is None:
            node = old if old_client is None else new
            raise PreflightError(f"{project.spec.source}: {out_of_reach(host.name, node)}; its volumes cannot be "
                                 f"copied to {new.hostname} otherwise")  # fmt: skip
        there = [name for name in names if _volume(old_client, name) is not None]
        if not there:
            continue
        move = Move(host.name, old, new)
        for name in there:
            (move.kept if _volume(new_client, name) is not None else move.volumes).append(name)
        if move.volumes:
            moves.append(move)
    return moves


def consent(project: Project, moves: list[Move]) -> None:
    """Say each move and ask once; PreflightError (nothing changed) on no or nobody to ask."""
    if not moves:
        return
    for move in moves:
        project.say(move.line())
    hosts = ", ".join(move.host for move in moves)
    if project.confirm is None or not project.confirm(f"copy the volumes of {hosts} to their new nodes?"):
        raise PreflightError(f"{project.spec.source}: {hosts} would start on a new node without their data; pass "
                             "--yes to copy it there, or set node: back")  # fmt: skip


def _ensure_image(client: Any, image: str) -> None:
    import docker.errors

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        client.images.pull(image)


def copy(project: Project, move: Move, clients: NodeClients, image: str) -> None:
    """Copy the move's volumes (the old service stopped already) and check their tree hashes."""
    source, target = clients.get(move.old), clients.get(move.new)
    if source is None or target is None:  # planned_moves saw both answer
        raise EngineError(f"host {move.host}: a node's engine stopped answering during the move")
    for client in (source, target):
        _ensure_image(client, image)
    for name in move.volumes:
        old = _volume(source, name)
        target.volumes.create(name=name, driver="local", labels=dict(old.attrs.get("Labels") or {}))
        project.say(f"copying volume {name} from {move.old.hostname} to {move.new.hostname}")
        sent, code_in, errors_in = _stream(project, image, name, source, target)
        folder = f"{MOUNTS}/v"
        before = _run(project, image, TREE_HASH, [folder], _mounts([(name, "v")], read_only=True), client=source)
        after = _run(project, image, TREE_HASH, [folder], _mounts([(name, "v")], read_only=True), client=target)
        if code_in != 0 or before != after:
            why = _tar_problem(errors_in, code_in) if code_in != 0 else "the trees differ after the copy"
            raise EngineError(f"copying volume {name} to {move.new.hostname} failed ({why}); the volume on "
                              f"{move.old.hostname} is unchanged: remove the copy with `docker volume rm {name}` "
                              f"on {move.new.hostname} and run up again")  # fmt: skip
        project.say(f"copied {name}: {backup.human_size(sent)}, tree hash {before[0][:12]} on both nodes")


def _stream(project: Project, image: str, name: str, source: Any, target: Any) -> tuple[int, int, str]:
    """tar out of ``name`` on one engine into ``name`` on the other, through a bounded queue;
    (bytes sent, the extracting tar's exit code, its errors). The sending side's failure raises."""
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=64)
    result: dict[str, Any] = {"bytes": 0, "done": False}

    def send() -> None:
        try:
            result["out"] = stream_out(project, image, [*backup.TAR_CREATE, "-C", f"{MOUNTS}/v", "."],
                                       _mounts([(name, "v")], read_only=True), chunks.put, client=source)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = exc
        finally:
            chunks.put(None)

    def received() -> Iterator[bytes]:
        while (chunk := chunks.get()) is not None:
            result["bytes"] += len(chunk)
            yield chunk
        result["done"] = True

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    code_in, errors_in = stream_in(project, image, [*backup.TAR_EXTRACT, "-C", f"{MOUNTS}/v"],
                                   _mounts([(name, "v")], read_only=False), received(), client=target)  # fmt: skip
    while not result["done"] and chunks.get(timeout=120) is not None:  # what tar left unread
        pass
    sender.join()
    if "error" in result:
        raise EngineError(f"copying volume {name}: {result['error']}")
    code_out, errors_out = result["out"]
    if code_out != 0:
        raise EngineError(f"reading volume {name} failed ({_tar_problem(errors_out, code_out)}); nothing was moved")
    return int(result["bytes"]), code_in, errors_in
