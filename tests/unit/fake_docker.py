"""A fake of the docker SDK's high-level ``DockerClient``: the subset devbox uses, in memory.

Modelled on docker-py's own ``tests/unit/fake_api_client.py`` (canned answers instead of an
engine), but with state a test sets and reads back instead of a MagicMock: containers (attrs,
labels, status, logs, ``exec_run`` answers), images by name, services with tasks, nodes,
secrets, networks, volumes and ``info()``. Objects read their fields from ``attrs`` the way the
SDK's models do, list filters match the way the engine's do, and a missing object raises
``docker.errors.NotFound`` (``ImageNotFound`` for images).

Every call is recorded in ``client.calls`` as ``(name, kwargs)``; ``client.errors[name] = exc``
makes every later call of that name raise ``exc`` (e.g. ``"container.start"``). A filter this fake
does not know raises NotImplementedError rather than being ignored.

``serve(monkeypatch, client)`` makes ``docker.from_env`` hand out the fake, so devbox connects to
it through its own code path.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import docker.errors
from docker.models.containers import ExecResult

ExecAnswer = tuple[int, bytes]
NOT_FOUND_EXEC = 126  # what `docker exec` gives for a program the container does not have
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"  # on every task container of a service


def _labels_match(labels: dict[str, str], wanted: str | list[str]) -> bool:
    """The engine's ``label`` filter: every "key" or "key=value" must hold."""
    for item in [wanted] if isinstance(wanted, str) else wanted:
        key, eq, value = item.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


def _known(filters: dict[str, Any] | None, allowed: set[str]) -> dict[str, Any]:
    filters = filters or {}
    unknown = set(filters) - allowed
    if unknown:
        raise NotImplementedError(f"the fake client does not filter by {sorted(unknown)}")
    return filters


class FakeDockerClient:
    """The fake client; its collections mirror ``client.containers``, ``client.services``, ..."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.errors: dict[str, BaseException] = {}
        self.info_data: dict[str, Any] = {
            "NCPU": 8, "MemTotal": 16 * 1024**3, "Runtimes": {"runc": {}}, "Name": "fake-engine",
            "ServerVersion": "27.0.0", "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "ControlAvailable": False},
        }  # fmt: skip
        self.events_data: list[dict[str, Any]] = []
        # the engines of the swarm's other nodes (a removed service's containers go there too)
        self.workers: list[FakeDockerClient] = []
        self.version_data: dict[str, Any] = {"ApiVersion": "1.41", "Version": "20.10.24"}
        # what `docker system df` answers: containers with SizeRw, volumes with UsageData.Size
        self.df_data: dict[str, Any] = {"Containers": [], "Volumes": [], "Images": [], "LayersSize": 0}
        self.ids = (f"{n:064x}" for n in itertools.count(1))
        self.containers = Containers(self)
        self.images = Images(self)
        self.services = Services(self)
        self.secrets = Secrets(self)
        self.networks = Networks(self)
        self.volumes = Volumes(self)
        self.nodes = Nodes(self)
        self.api = Api(self)

    def record(self, call: str, /, **kwargs: Any) -> None:
        """Note a call, then raise the error set for it, if any."""
        self.calls.append((call, kwargs))
        if call in self.errors:
            raise self.errors[call]

    def called(self, name: str) -> list[dict[str, Any]]:
        """The keyword arguments of each call of ``name``, in order."""
        return [kwargs for called, kwargs in self.calls if called == name]

    def ping(self) -> bool:
        self.record("ping")
        return True

    def info(self) -> dict[str, Any]:
        self.record("info")
        return copy.deepcopy(self.info_data)

    def version(self) -> dict[str, Any]:
        self.record("version")
        return copy.deepcopy(self.version_data)

    def df(self) -> dict[str, Any]:
        self.record("df")
        return copy.deepcopy(self.df_data)

    def events(self, **kwargs: Any) -> Events:
        """The canned events (``events_data``), then the stream ends, as a closed connection does."""
        self.record("events", **kwargs)
        return Events(list(self.events_data))

    def close(self) -> None:
        self.record("close")

    def swarm_manager(self, node_id: str = "node-1") -> None:
        """Make the engine an active swarm manager on node ``node_id``."""
        self.info_data["Swarm"] = {"LocalNodeState": "active", "NodeID": node_id, "ControlAvailable": True}


@dataclass
class Events:
    items: list[dict[str, Any]]
    closed: bool = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.items)

    def close(self) -> None:
        self.closed = True


# --------------------------------------------------------------------------- containers


@dataclass(eq=False)
class Container:
    """A container; ``name``, ``status`` and ``labels`` come from ``attrs`` as in the SDK's model.

    ``execs`` answers ``exec_run`` by argument list; ``on_exec`` (if set) answers the rest;
    anything else is a program the container does not have.
    """

    client: FakeDockerClient
    attrs: dict[str, Any]
    log: bytes = b""
    execs: dict[tuple[str, ...], ExecAnswer] = field(default_factory=dict)
    on_exec: Callable[[list[str]], ExecAnswer | None] | None = None

    @property
    def id(self) -> str:
        return str(self.attrs["Id"])

    @property
    def name(self) -> str:
        return str(self.attrs["Name"]).lstrip("/")

    @property
    def status(self) -> str:
        return str(self.attrs["State"]["Status"])

    @property
    def labels(self) -> dict[str, str]:
        return self.attrs["Config"].get("Labels") or {}

    def reload(self) -> None:
        self.client.record("container.reload", name=self.name)
        if self not in self.client.containers.items:
            raise docker.errors.NotFound(f"No such container: {self.id}")

    def diff(self) -> list[dict[str, Any]]:
        """The container layer's changes as the engine lists them (``attrs["Diff"]``, set by a test)."""
        self.client.record("container.diff", name=self.name)
        return list(self.attrs.get("Diff") or [])

    def exec_run(self, cmd: list[str], **kwargs: Any) -> ExecResult:
        self.client.record("container.exec_run", name=self.name, cmd=list(cmd), **kwargs)
        argv = list(cmd)
        answer = self.execs.get(tuple(argv)) or (self.on_exec(argv) if self.on_exec else None)
        if answer is None:
            answer = (NOT_FOUND_EXEC, f'exec: "{argv[0]}": executable file not found in $PATH'.encode())
        return ExecResult(*answer)

    def logs(self, **kwargs: Any) -> bytes | Iterator[bytes]:
        self.client.record("container.logs", name=self.name, **kwargs)
        lines = self.log.splitlines(keepends=True)
        if isinstance(kwargs.get("tail"), int):
            lines = lines[-kwargs["tail"] :] if kwargs["tail"] else []
        return iter(lines) if kwargs.get("stream") else b"".join(lines)

    def rename(self, name: str) -> None:
        self.client.record("container.rename", name=self.name, new=name)
        if any(c.name == name for c in self.client.containers.items):
            raise docker.errors.APIError(f"Conflict. The container name \"/{name}\" is already in use")
        self.attrs["Name"] = f"/{name}"

    def start(self) -> None:
        self.client.record("container.start", name=self.name)
        self.attrs["State"]["Status"] = "running"

    def pause(self) -> None:
        self.client.record("container.pause", name=self.name)
        self.attrs["State"]["Status"] = "paused"

    def unpause(self) -> None:
        self.client.record("container.unpause", name=self.name)
        self.attrs["State"]["Status"] = "running"

    def remove(self, force: bool = False) -> None:
        self.client.record("container.remove", name=self.name, force=force)
        if self.status == "running" and not force:
            raise docker.errors.APIError(f"cannot remove container {self.name}: it is running (stop it or force)")
        self.client.containers.items.remove(self)


class Containers:
    def __init__(self, client: FakeDockerClient) -> None:
        self.client = client
        self.items: list[Container] = []

    def add(self, name: str, *, labels: dict[str, str] | None = None, status: str = "running",
            started_at: str = "2026-01-01T00:00:00.000000000Z", host_config: dict[str, Any] | None = None,
            env: list[str] | None = None, mounts: list[dict[str, Any]] | None = None, image: str = "fake:1",
            **fields: Any) -> Container:  # fmt: skip
        """A container as the engine would show it (``fields``: Container's log, execs, on_exec)."""
        attrs = {
            "Id": next(self.client.ids), "Name": f"/{name}", "Image": image,
            "State": {"Status": status, "StartedAt": started_at},
            "Config": {"Labels": dict(labels or {}), "Env": list(env or []), "Image": image},
            "HostConfig": dict(host_config or {}), "Mounts": list(mounts or []), "RestartCount": 0,
            "NetworkSettings": {"Networks": self._networks_of(labels or {})},
        }  # fmt: skip
        container = Container(self.client, attrs, **fields)
        self.items.append(container)
        return container

    def _networks_of(self, labels: dict[str, str]) -> dict[str, Any]:
        """Compose puts a project's container on the project's network (devbox made it first)."""
        project = labels.get("com.docker.compose.project")
        return {n.name: {"NetworkID": n.id, "Aliases": []} for n in self.client.networks.items
                if project and n.attrs["Labels"].get("com.docker.compose.project") == project}  # fmt: skip

    def list(self, all: bool = False, filters: dict[str, Any] | None = None, sparse: bool = False) -> list[Container]:
        """``sparse``: the real client skips inspecting each container; the fake has no cost to skip."""
        self.client.record("containers.list", all=all, filters=filters)
        wanted = _known(filters, {"label", "status", "name"})
        found = [c for c in self.items if all or c.status == "running"]
        if "label" in wanted:
            found = [c for c in found if _labels_match(c.labels, wanted["label"])]
        if "status" in wanted:
            found = [c for c in found if c.status == wanted["status"]]
        if "name" in wanted:
            found = [c for c in found if wanted["name"] in c.name]
        return found

    def get(self, name_or_id: str) -> Container:
        self.client.record("containers.get", container_id=name_or_id)
        for container in self.items:
            if name_or_id in (container.name, container.id):
                return container
        raise docker.errors.NotFound(f"No such container: {name_or_id}")

    def create(self, image: str, command: Any = None, **kwargs: Any) -> Container:
        """A created (not started) container; what it was asked for is in ``client.calls``."""
        self.client.record("containers.create", image=image, command=command, **kwargs)
        if not any(image in i.tags for i in self.client.images.items):
            raise docker.errors.ImageNotFound(f"No such image: {image}")
        name = kwargs.get("name") or f"fake_{len(self.items)}"
        return self.add(name, status="created", labels=kwargs.get("labels"), image=image)


# --------------------------------------------------------------------------- images


@dataclass(eq=False)
class Image:
    id: str
    tags: list[str]
    labels: dict[str, str] = field(default_factory=dict)
    client: Any = None

    @property
    def attrs(self) -> dict[str, Any]:
        """Created: in the order the images were added (their ids count up)."""
        return {"Id": self.id, "RepoTags": list(self.tags), "Created": self.id, "Config": {"Labels": self.labels}}

    def tag(self, repository: str, tag: str | None = None) -> bool:
        self.client.record("image.tag", id=self.id, repository=repository, tag=tag)
        self.tags.append(f"{repository}:{tag or 'latest'}")
        return True


class Images:
    def __init__(self, client: FakeDockerClient) -> None:
        self.client = client
        self.items: list[Image] = []
        self.push_events: list[dict[str, Any]] | None = None  # what the next push reports

    def add(self, *tags: str, labels: dict[str, str] | None = None) -> Image:
        image = Image(f"sha256:{next(self.client.ids)}", list(tags), dict(labels or {}), self.client)
        self.items.append(image)
        return image

    def list(self, name: str | None = None, filters: dict[str, Any] | None = None) -> list[Image]:
        """By reference as the engine matches it: "repo:tag" exactly, "repo" with any tag."""
        self.client.record("images.list", name=name, filters=filters)
        wanted = _known(filters, {"label"})
        found = self.items
        if name:
            found = [i for i in found if any(t == name or (":" not in name and t.split(":")[0] == name) for t in i.tags)]
        if "label" in wanted:
            found = [i for i in found if _labels_match(i.labels, wanted["label"])]
        return found

    def remove(self, image: str, force: bool = False) -> None:
        """Untag ``image`` (a tag or an id); the image goes with its last tag."""
        self.client.record("image.remove", image=image, force=force)
        for found in list(self.items):
            if image in found.tags or image == found.id:
                found.tags = [tag for tag in found.tags if tag != image]
                if not found.tags or image == found.id:
                    self.items.remove(found)

    def push(self, repository: str, tag: str | None = None, stream: bool = False, decode: bool = False) -> Any:
        """The engine's push progress: ``push_events`` if set, else a status and the digest."""
        self.client.record("images.push", repository=repository, tag=tag, stream=stream, decode=decode)
        reference = f"{repository}:{tag}"
        image = next((i for i in self.items if reference in i.tags), None)
        if image is None:
            return iter([{"error": f"An image does not exist locally with the tag: {repository}"}])
        digest = "sha256:" + image.id.removeprefix("sha256:")[-64:].rjust(64, "0")
        return iter(self.push_events if self.push_events is not None else
                    [{"status": "Pushed"}, {"status": f"{tag}: digest: {digest}", "aux": {"Tag": tag, "Digest": digest}}])

    def pull(self, repository: str, tag: str | None = None) -> Image:
        """Pulled from a registry: the image, named by what was pulled (REPO@sha256:... too)."""
        self.client.record("images.pull", repository=repository, tag=tag)
        return self.add(f"{repository}:{tag}" if tag else repository)

    def get(self, name: str) -> Image:
        self.client.record("images.get", name=name)
        for image in self.items:
            if name in image.tags or name == image.id:
                return image
        raise docker.errors.ImageNotFound(f"No such image: {name}")


class Api:
    """The low-level client, for the one call devbox makes on it outside exec_with_input."""

    def __init__(self, client: FakeDockerClient) -> None:
        self.client = client

    def disconnect_container_from_network(self, container: str, net_id: str, force: bool = False) -> None:
        self.client.record("api.disconnect_container_from_network", container=container, net_id=net_id, force=force)
        for found in self.client.containers.items:
            if container in (found.id, found.name):
                networks = found.attrs.get("NetworkSettings", {}).get("Networks", {})
                for name in [n for n, endpoint in networks.items() if endpoint.get("NetworkID") == net_id]:
                    del networks[name]

    def import_image_from_data(self, data: bytes, repository: str, tag: str) -> None:
        self.client.record("api.import_image_from_data", size=len(data), repository=repository, tag=tag)
        self.client.images.add(f"{repository}:{tag}")


# --------------------------------------------------------------------------- swarm


@dataclass(eq=False)
class Service:
    """A service; ``task_list`` holds its tasks as the engine reports them (Status.State, NodeID)."""

    client: FakeDockerClient
    attrs: dict[str, Any]
    task_list: list[dict[str, Any]] = field(default_factory=list)
    log: bytes = b""  # what its tasks logged, on whichever node (the service logs API)

    @property
    def id(self) -> str:
        return str(self.attrs["ID"])

    def logs(self, **kwargs: Any) -> Iterator[bytes]:
        """The service logs API: a stream of chunks, always (as docker-py's ``Service.logs``)."""
        self.client.record("service.logs", name=self.name, **kwargs)
        lines = self.log.splitlines(keepends=True)
        if isinstance(kwargs.get("tail"), int):
            lines = lines[-kwargs["tail"] :] if kwargs["tail"] else []
        return iter(lines)

    @property
    def name(self) -> str:
        return str(self.attrs["Spec"]["Name"])

    def tasks(self, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self.client.record("service.tasks", name=self.name, filters=filters)
        wanted = _known(filters, {"desired-state"})
        found = self.task_list
        if "desired-state" in wanted:
            found = [t for t in found if t.get("DesiredState") == wanted["desired-state"]]
        return copy.deepcopy(found)

    def scale(self, replicas: int) -> bool:
        """Scaling to 0 shuts its tasks down at once, and stops their containers on whichever node."""
        self.client.record("service.scale", name=self.name, replicas=replicas)
        self.attrs["Spec"]["Mode"] = {"Replicated": {"Replicas": replicas}}
        if replicas == 0:
            for task in self.task_list:
                task["DesiredState"] = "shutdown"
                task["Status"]["State"] = "shutdown"
            for engine in (self.client, *self.client.workers):
                for container in engine.containers.items:
                    if container.labels.get(SERVICE_NAME_LABEL) == self.name:
                        container.attrs["State"]["Status"] = "exited"
        elif self.task_list and all(t["DesiredState"] == "shutdown" for t in self.task_list):
            node = self.task_list[-1].get("NodeID", "")  # a new task, where the last one ran
            self.task_list.append({"ID": next(self.client.ids), "NodeID": node, "DesiredState": "running",
                                   "Status": {"State": "running", "Err": ""}})  # fmt: skip
        return True

    def remove(self) -> bool:
        """Removes the service and its task containers (labelled with the service's name)."""
        self.client.record("service.remove", name=self.name)
        self.client.services.items.remove(self)
        for engine in (self.client, *self.client.workers):  # its task's container, on whichever node
            containers = engine.containers
            containers.items = [c for c in containers.items if c.labels.get(SERVICE_NAME_LABEL) != self.name]
        return True


class Services:
    def __init__(self, client: FakeDockerClient) -> None:
        self.client = client
        self.items: list[Service] = []
        # The state of the task each new service gets ("running", "failed", ...), and its error.
        self.new_task_state = "running"
        self.new_task_error = ""
        # A job's task (the image probe) by the node its constraint names: (state, error); default complete.
        self.job_outcomes: dict[str, tuple[str, str]] = {}

    def add(self, name: str, *, labels: dict[str, str] | None = None, secrets: list[dict[str, Any]] | None = None,
            resources: dict[str, Any] | None = None, tasks: list[dict[str, Any]] | None = None) -> Service:  # fmt: skip
        attrs = {"ID": next(self.client.ids), "Spec": {
            "Name": name, "Labels": dict(labels or {}),
            "TaskTemplate": {"ContainerSpec": {"Secrets": list(secrets or [])}, "Resources": dict(resources or {})},
        }}  # fmt: skip
        service = Service(self.client, attrs, list(tasks or []))
        self.items.append(service)
        return service

    def create(self, image: str, command: Any = None, **kwargs: Any) -> Service:
        """The service, one task in ``new_task_state`` and, when that runs, its container."""
        self.client.record("services.create", image=image, command=command, **kwargs)
        name = kwargs["name"]
        if any(s.name == name for s in self.items):
            raise docker.errors.APIError(f"rpc error: code = AlreadyExists desc = name conflicts with an existing object: {name}")
        node = self.client.info_data["Swarm"].get("NodeID", "")
        node = next((c.split("==")[1] for c in kwargs.get("constraints") or [] if c.startswith("node.id==")), node)
        state, error = self.new_task_state, self.new_task_error
        if "Job" in str(kwargs.get("mode")):
            state, error = self.job_outcomes.get(node, ("complete", ""))
        task = {"ID": next(self.client.ids), "NodeID": node, "DesiredState": "running",
                "Status": {"State": state, "Err": error}}  # fmt: skip
        service = self.add(name, labels=kwargs.get("labels"), secrets=kwargs.get("secrets"),
                           resources=kwargs.get("resources"), tasks=[task])  # fmt: skip
        if state == "running":
            labels = {**(kwargs.get("container_labels") or {}), SERVICE_NAME_LABEL: name}
            self.client.containers.add(f"{name}.1.{task['ID'][:25]}", labels=labels, image=image)
        return service

    def list(self, filters: dict[str, Any] | None = None) -> list[Service]:
        self.client.record("services.list", filters=filters)
        wanted = _known(filters, {"label", "name"})
        found = self.items
        if "label" in wanted:
            found = [s for s in found if _labels_match(s.attrs["Spec"]["Labels"], wanted["label"])]
        if "name" in wanted:
            found = [s for s in found if wanted["name"] in s.name]
        return list(found)


@dataclass(eq=False)
class Secret:
    client: FakeDockerClient
    id: str
    name: str
    data: bytes
    labels: dict[str, str]

    def remove(self) -> bool:
        """Refused while a service uses it, as the engine does."""
        self.client.record("secret.remove", name=self.name)
        for service in self.client.services.items:
            if any(ref.get("SecretName") == self.name for ref in service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]):
                raise docker.errors.APIError(f"rpc error: secret '{self.name}' is in use by service '{service.name}'")
        self.client.secrets.items.remove(self)
        return True


class Secrets:
    def __init__(self, client: FakeDockerClient) -> None:
        self.client = client
        self.items: list[Secret] = []

    def create(self, name: str, data: bytes, labels: dict[str, str] | None = None) -> Secret:
        self.client.record("secrets.create", name=name, data=data, labels=labels)
        if any(s.name == name for s in self.items):
            raise docker.errors.APIError(f"rpc error: code = AlreadyExists desc = secret {name} already exists")
        secret = Secret(self.client, next(self.client.ids), name, data, dict(labels or {}))
        self.items.append(secret)
        return secret

    def list(self, filters: dict[str, Any] | None = None) -> list[Secret]:
        self.client.record("secrets.list", filters=filters)
        wanted = _known(filters, {"label", "names"})
        found = self.items
        if "label" in wanted:
            found = [s for s in found if _labels_match(s.labels, wanted["label"])]
        if "names" in wanted:
            found = [s for s in found if s.name in wanted["names"]]
        return list(found)


@dataclass(eq=False)
class Node:
    client: FakeDockerClient
    attrs: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.attrs["ID"])


class Nodes:
    def __init__(self, client: FakeDockerClient) -> None:
        self.client = client
        self.items: list[Node] = []

    def add(self, node_id: str, address: str, generic_resources: list[dict[str, Any]] | None = None, *,
            hostname: str | None = None, labels: dict[str, str] | None = None, availability: str = "active",
            state: str = "ready", engine: dict[str, Any] | None = None) -> Node:  # fmt: skip
        """A node at ``address`` (Status.Addr), offering ``generic_resources`` (e.g. GPUs); its
        hostname defaults to its ID."""
        attrs = {"ID": node_id, "Status": {"State": state, "Addr": address},
                 "Spec": {"Availability": availability, "Labels": dict(labels or {})},
                 "Description": {"Hostname": hostname or node_id, "Engine": dict(engine or {}),
                                 "Resources": {"GenericResources": list(generic_resources or [])}}}  # fmt: skip
        node = Node(self.client, attrs)
        self.items.append(node)
        return node

    def list(self, filters: dict[str, Any] | None = None) -> list[Node]:
        self.client.record("nodes.list", filters=filters)
        _known(filters, set())
        return list(self.items)

    def get(self, node_id: str) -> Node:
        self.client.record("nodes.get", node_id=node_id)
        for node in self.items:
            if node.id == node_id:
                return node
        raise docker.errors.NotFound(f"node {node_id} not found")


# --------------------------------------------------------------------------- networks, volumes


@dataclass(eq=False)
class Network:
    client: FakeDockerClient
    name: str
    options: dict[str, Any]

    id: str = ""

    @property
    def attrs(self) -> dict[str, Any]:
        return {"Id": self.id, "Name": self.name, "Labels": dict(self.options.get("labels") or {})}

    def connect(self, container: Container, aliases: list[str] | None = None) -> None:
        self.client.record("network.connect", name=self.name, container=container.name, aliases=aliases)
        container.attrs.setdefault("NetworkSettings", {}).setdefault("Networks", {})[self.name] = {
            "NetworkID": self.id, "Aliases": list(aliases or [])}

    def remove(self) -> None:
        self.client.record("network.remove", name=self.name)
        self.client.networks.items.remove(self)


class Networks:
    def __init__(self, client: FakeDockerClient) -> None:
        self.client = client
        self.items: list[Network] = []

    def create(self, name: str, **options: Any) -> Network:
        self.client.record("networks.create", name=name, **options)
        network = Network(self.client, name, options, next(self.client.ids))
        self.items.append(network)
        return network

    def list(self, names: list[str] | None = None, filters: dict[str, Any] | None = None) -> list[Network]:
        self.client.record("networks.list", names=names, filters=filters)
        wanted = _known(filters, {"label"})
        return [n for n in self.items if (names is None or n.name in names)
                and ("label" not in wanted or _labels_match(n.attrs["Labels"], wanted["label"]))]  # fmt: skip


@dataclass(eq=False)
class Volume:
    client: FakeDockerClient
    name: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def attrs(self) -> dict[str, Any]:
        return {"Name": self.name, "Labels": dict(self.labels) or None}

    def remove(self, force: bool = False) -> None:
        self.client.record("volume.remove", name=self.name, force=force)
        self.client.volumes.items.remove(self)


class Volumes:
    def __init__(self, client: FakeDockerClient) -> None:
        self.client = client
        self.items: list[Volume] = []

    def add(self, name: str, labels: dict[str, str] | None = None) -> Volume:
        volume = Volume(self.client, name, dict(labels or {}))
        self.items.append(volume)
        return volume

    def create(self, name: str, driver: str = "local", labels: dict[str, str] | None = None) -> Volume:
        """As the engine: an existing name gives the existing volume, unchanged."""
        self.client.record("volumes.create", name=name, driver=driver, labels=labels)
        return next((v for v in self.items if v.name == name), None) or self.add(name, labels)

    def list(self, filters: dict[str, Any] | None = None) -> list[Volume]:
        """The engine's ``name`` filter matches part of a name, not the whole."""
        self.client.record("volumes.list", filters=filters)
        wanted = _known(filters, {"name", "label"})
        return [v for v in self.items if ("name" not in wanted or wanted["name"] in v.name)
                and ("label" not in wanted or _labels_match(v.labels, wanted["label"]))]  # fmt: skip

    def get(self, name: str) -> Volume:
        self.client.record("volumes.get", name=name)
        for volume in self.items:
            if volume.name == name:
                return volume
        raise docker.errors.NotFound(f"get {name}: no such volume")


def getent_shadow(shadow: dict[str, str]) -> Callable[[list[str]], ExecAnswer | None]:
    """An ``on_exec`` for a container whose /etc/shadow holds ``shadow`` (user -> hash): answers
    ``getent shadow USER...`` as glibc's getent does (exit 2 when no user is found)."""

    def answer(argv: list[str]) -> ExecAnswer | None:
        if argv[:2] != ["getent", "shadow"]:
            return None
        lines = [f"{user}:{shadow[user]}:19000:0:99999:7:::\n" for user in argv[2:] if user in shadow]
        return (0 if lines else 2), "".join(lines).encode()

    return answer


def serve(monkeypatch: Any, client: FakeDockerClient) -> FakeDockerClient:
    """Make ``docker.from_env`` return ``client``: devbox then connects to it as to an engine."""
    monkeypatch.setattr(docker, "from_env", lambda **_kwargs: client)
    return client
