"""Build secrets end to end: a private pip index served by the test that refuses requests without
its token, a `git+ssh://` requirement cloned from an SSH server the test runs, through an ssh
agent the test starts (the key is never in the build), a build step that checks a secret it reads
from /run/secrets; then the values and the key are searched for, and not found, in the image's
history, every layer of `docker save`, its inspect data, the rendered files and .devbox/, and the
build's own output. A new value alone builds nothing; a new step that uses it does."""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import json
import secrets
import socket
import subprocess
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paramiko
import pytest

pytestmark = pytest.mark.e2e

PACKAGE = "devbox_e2e_private"
WHEEL = f"{PACKAGE}-1.0-py3-none-any.whl"


def wheel_files(package: str) -> dict[str, str]:
    """The files of a pure-Python wheel of ``package`` 1.0 (one module, ANSWER = 42)."""
    files = {
        f"{package}.py": "ANSWER = 42\n",
        f"{package}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n",
        f"{package}-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: devbox-e2e\nRoot-Is-Purelib: true\n"
                                         "Tag: py3-none-any\n",
    }  # fmt: skip
    record = "".join(
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
        f"{len(text.encode())}\n" for name, text in files.items()
    )
    files[f"{package}-1.0.dist-info/RECORD"] = record + f"{package}-1.0.dist-info/RECORD,,\n"
    return files


def make_wheel() -> bytes:
    """A pure-Python wheel, made here: the private index needs no network to have something."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        for name, text in wheel_files(PACKAGE).items():
            wheel.writestr(name, text)
    return buffer.getvalue()


class PrivateIndex:
    """A PEP 503 index on ``address`` that answers only requests carrying ``token`` (basic auth)."""

    def __init__(self, address: str, token: str) -> None:
        wheel, expected = make_wheel(), "Basic " + base64.b64encode(f"token:{token}".encode()).decode()
        self.refused = self.served = 0
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.headers.get("Authorization") != expected:
                    index.refused += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="private"')
                    self.end_headers()
                    return
                index.served += 1
                name = PACKAGE.replace("_", "-")
                if self.path.rstrip("/") in (f"/simple/{name}", f"/simple/{PACKAGE}"):
                    body, kind = f'<a href="/files/{WHEEL}">{WHEEL}</a>'.encode(), "text/html"
                elif self.path == f"/files/{WHEEL}":
                    body, kind = wheel, "application/octet-stream"
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bridge_gateway(docker_client) -> str:
    """Where the build's RUN steps reach this machine: BuildKit runs them on the engine's default
    bridge, whose gateway is an address of this machine (its loopback is not theirs). Serving
    there exposes the index to containers on that bridge only, for this test, behind a token."""
    entry = next(e for e in docker_client.networks.get("bridge").attrs["IPAM"]["Config"] if ":" not in e["Subnet"])
    # dockerd leaves the default bridge's Gateway out of its IPAM data: docker0 has the first address
    return entry.get("Gateway") or str(next(ipaddress.ip_network(entry["Subnet"]).hosts()))

GIT_PACKAGE = "devbox_e2e_git"
MOUNTED = ("root/.netrc", "root/.config/pip/pip.conf", "root/.ssh/known_hosts")  # the secrets' targets
GIT_PATH = "/team/tool.git"  # the repository's path in the git+ssh:// URL


def make_repository(where: Path) -> Path:
    """A git repository whose tag v1 is a package pip builds with no network: its build backend is
    in the tree (pyproject's backend-path) and needs nothing installed (requires = [])."""
    files = wheel_files(GIT_PACKAGE)
    backend = (
        "import os\nimport zipfile\n\n"
        f"FILES = {files!r}\n\n\n"
        "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n"
        f"    name = '{GIT_PACKAGE}-1.0-py3-none-any.whl'\n"
        "    with zipfile.ZipFile(os.path.join(wheel_directory, name), 'w') as wheel:\n"
        "        for path, text in FILES.items():\n"
        "            wheel.writestr(path, text)\n"
        "    return name\n"
    )
    where.mkdir()
    (where / "backend.py").write_text(backend)
    (where / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n')
    git = ["git", "-C", str(where), "-c", "user.name=e2e", "-c", "user.email=e2e@example.invalid"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "v1"], ["tag", "v1"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    return where


class GitOverSsh:
    """An SSH server on ``address`` (paramiko's, in this process) that lets one key, the agent's,
    run git-upload-pack on one repository: what a git host does for `git clone ssh://...`."""

    def __init__(self, address: str, repository: Path, allowed: str) -> None:
        self.host_key = paramiko.ECDSAKey.generate()
        self.repository, self.allowed = repository, allowed
        self.clones = 0
        self.listener = socket.create_server((address, 0))
        self.port = self.listener.getsockname()[1]
        self.known_hosts = f"[{address}]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(connection,), daemon=True).start()

    def _session(self, connection: socket.socket) -> None:
        server = self

        class Server(paramiko.ServerInterface):
            command = b""
            asked = threading.Event()

            def get_allowed_auths(self, username: str) -> str:
                return "publickey"

            def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
                ok = username == "git" and key.get_base64() == server.allowed
                return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

            def check_channel_request(self, kind: str, chanid: int) -> int:
                return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

            def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
                self.command = command
                self.asked.set()
                return True

        transport = paramiko.Transport(connection)
        transport.add_server_key(self.host_key)
        session = Server()
        try:
            transport.start_server(server=session)
            channel = transport.accept(30)
            if channel is None or not session.asked.wait(30):
                return
            if session.command != f"git-upload-pack '{GIT_PATH}'".encode():
                channel.sendall_stderr(b"only git-upload-pack of the one repository\n")
                channel.send_exit_status(1)
                return
            self.clones += 1
            self._upload_pack(channel)
            channel.close()
            deadline = time.monotonic() + 10  # the client closes the connection: closing it first breaks its last write
            while transport.is_active() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            transport.close()

    def _upload_pack(self, channel: paramiko.Channel) -> None:
        process = subprocess.Popen(["git-upload-pack", str(self.repository)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
        assert process.stdin is not None and process.stdout is not None

        def feed() -> None:
            assert process.stdin is not None
            try:
                while data := channel.recv(65536):
                    process.stdin.write(data)
                    process.stdin.flush()
            except (OSError, EOFError):
                pass
            finally:
                process.stdin.close()

        threading.Thread(target=feed, daemon=True).start()
        with process.stdout:
            while data := process.stdout.read1(65536):
                channel.sendall(data)
        channel.send_exit_status(process.wait())

    def close(self) -> None:
        self.listener.close()


class Agent:
    """An ssh-agent of the test's own, holding a key made for this test; the key's files are
    deleted once the agent has it (the build gets the agent, never a key on disk)."""

    def __init__(self, folder: Path) -> None:
        key = folder / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e", "-f", str(key)], check=True)
        self.public = key.with_suffix(".pub").read_text().split()[1]
        # A line of the key's body to search for: the middle one, made of the key's own bytes (the
        # first body line is the same for every OpenSSH ed25519 key, so it is in every host key too)
        body = key.read_text().splitlines()[1:-1]
        self.private = body[len(body) // 2]
        self.socket = str(folder / "agent.sock")
        self.process = subprocess.Popen(["ssh-agent", "-D", "-a", self.socket], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not Path(self.socket).exists():
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.05)
        subprocess.run(["ssh-add", "-q", str(key)], check=True, env={"SSH_AUTH_SOCK": self.socket},
                       capture_output=True)  # fmt: skip
        key.unlink()
        key.with_suffix(".pub").unlink()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def test_build_secrets_reach_the_build_and_nothing_keeps_them(make_stack, docker_client, bridge_gateway, tmp_path_factory):
    token, licence = secrets.token_hex(16), secrets.token_hex(16)
    outside = tmp_path_factory.mktemp("outside-the-project")
    agent = Agent(outside)
    index = PrivateIndex(bridge_gateway, token)
    git = GitOverSsh(bridge_gateway, make_repository(outside / "tool"), agent.public)
    try:
        stack = make_stack(hosts=1, image={
            "packages": ["git"],
            "pip_requirements": "requirements.txt",
            "build_ssh": True,
            "build_secrets": {
                "index": {"env": "E2E_INDEX_URL", "as": "pip_index_url"},
                "pipconf": {"file": "pip.conf", "as": "pip_config"},
                "hosts": {"file": "known_hosts", "as": "known_hosts"},
                "licence": {"env": "E2E_LICENCE"},
            },
            "extra_lines": [
                licence_check(licence),
                f"RUN python3 -c 'import {PACKAGE}, {GIT_PACKAGE}; assert {PACKAGE}.ANSWER == {GIT_PACKAGE}.ANSWER == 42'",
            ],
        })  # fmt: skip
        (stack.directory / "requirements.txt").write_text(
            f"{PACKAGE}==1.0\n{GIT_PACKAGE.replace('_', '-')} @ git+ssh://git@{bridge_gateway}:{git.port}{GIT_PATH}@v1\n")
        # pip refuses a plain-HTTP index unless trusted: pip's own config, from a file secret
        (stack.directory / "pip.conf").write_text(f"[global]\ntrusted-host = {bridge_gateway}\n")
        (stack.directory / "known_hosts").write_text(git.known_hosts)  # ssh in the build checks the git host
        stack.write_spec()
        env = {"E2E_INDEX_URL": f"http://token:{token}@{bridge_gateway}:{index.port}/simple",
               "E2E_LICENCE": licence, "SSH_AUTH_SOCK": agent.socket}  # fmt: skip
        missing = stack.devbox("validate", check=False, env={"SSH_AUTH_SOCK": ""})
        said = missing.stdout + missing.stderr
        assert missing.returncode == 2 and "E2E_INDEX_URL is not set" in said and "no SSH agent" in said
        assert "not when its value does" in stack.devbox("validate", env=env).stdout
        up = stack.devbox("up", env=env, timeout=1200)
        assert index.served >= 2, "pip never fetched from the private index"
        assert git.clones >= 1, "pip never cloned the git+ssh:// requirement"
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as refused:  # without the token: refused
            urllib.request.urlopen(f"http://{bridge_gateway}:{index.port}/simple/{PACKAGE}/", timeout=5)  # noqa: S310
        assert refused.value.code == 401
        image_id = docker_client.images.get(stack.container(docker_client, "master").attrs["Config"]["Image"]).id

        # A new value alone builds nothing (the image has what the old one fetched) ...
        new_licence = secrets.token_hex(16)
        again = stack.devbox("up", env={**env, "E2E_LICENCE": new_licence})
        assert "building image" not in again.stdout and "nothing changed" in again.stdout, again.stdout
        # ... a change to what uses it does, and the step gets the value of now
        stack.spec["image"]["extra_lines"][0] = licence_check(new_licence)
        stack.write_spec()
        rebuilt = stack.devbox("up", env={**env, "E2E_LICENCE": new_licence}, timeout=1200)
        assert "building image" in rebuilt.stdout, rebuilt.stdout
    finally:
        index.close()
        git.close()
        agent.close()
    container = stack.container(docker_client, "master")
    image = docker_client.images.get(container.attrs["Config"]["Image"])
    assert image.id != image_id
    places = {
        "docker history --no-trunc": json.dumps(image.history()),
        "docker inspect": json.dumps(image.attrs) + json.dumps(container.attrs),
        "the build logs": "".join(run.stdout + run.stderr for run in (up, again, rebuilt)),
    }
    for path in stack.directory.rglob("*"):
        if path.is_file() and path.name not in ("pip.conf", "known_hosts"):
            places[str(path.relative_to(stack.directory))] = path.read_bytes().decode(errors="replace")
    layers = io.BytesIO(b"".join(image.save()))
    with tarfile.open(fileobj=layers) as saved:
        for member in saved.getmembers():
            if member.isfile():
                data = saved.extractfile(member).read()  # type: ignore[union-attr]
                places[f"docker save: {member.name}"] = data.decode("latin-1")
                if member.name.endswith("layer.tar"):
                    with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                        # a mount's target may stay as an empty file (BuildKit's mount point): no content
                        kept = [f"{f.name} ({f.size} bytes)" for f in layer.getmembers()
                                if f.name.lstrip("./") in MOUNTED and f.size]  # fmt: skip
                    assert not kept, f"{member.name} keeps {kept}"
    assert len([p for p in places if p.startswith("docker save")]) > 3
    for where, text in places.items():
        for value in (token, licence, new_licence, agent.private):
            assert value not in text, f"a secret's value is in {where}"


def licence_check(licence: str) -> str:
    """A step that checks the licence secret by its digest: the value itself is in no line."""
    return ("RUN --mount=type=secret,id=licence,required=true test \"$(sha256sum < /run/secrets/licence | "
            f"cut -d' ' -f1)\" = {hashlib.sha256(licence.encode()).hexdigest()}")
