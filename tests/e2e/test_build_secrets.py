"""Build secrets end to end: a private pip index served by the test that refuses requests without
its token, a build step that checks a secret it reads from /run/secrets; then the values are
searched for, and not found, in the image's history, every layer of `docker save`, its inspect
data, the rendered files and .devbox/, and the build's own output."""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import json
import secrets
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytestmark = pytest.mark.e2e

PACKAGE = "devbox_e2e_private"
WHEEL = f"{PACKAGE}-1.0-py3-none-any.whl"


def make_wheel() -> bytes:
    """A pure-Python wheel, made here: the private index needs no network to have something."""
    files = {
        f"{PACKAGE}.py": "ANSWER = 42\n",
        f"{PACKAGE}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 1.0\n",
        f"{PACKAGE}-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: devbox-e2e\nRoot-Is-Purelib: true\n"
                                         "Tag: py3-none-any\n",
    }  # fmt: skip
    record = "".join(
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
        f"{len(text.encode())}\n" for name, text in files.items()
    )
    files[f"{PACKAGE}-1.0.dist-info/RECORD"] = record + f"{PACKAGE}-1.0.dist-info/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        for name, text in files.items():
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


def test_build_secrets_reach_the_build_and_nothing_keeps_them(make_stack, docker_client, bridge_gateway):
    token, licence = secrets.token_hex(16), secrets.token_hex(16)
    index = PrivateIndex(bridge_gateway, token)
    try:
        stack = make_stack(hosts=1, image={
            "packages": [],
            "pip_requirements": "requirements.txt",
            "build_secrets": {
                "index": {"env": "E2E_INDEX_URL", "as": "pip_index_url"},
                "pipconf": {"file": "pip.conf", "as": "pip_config"},
                "licence": {"env": "E2E_LICENCE"},
            },
            "extra_lines": [
                # the step checks the secret's digest: the value itself is in no line
                "RUN --mount=type=secret,id=licence,required=true test \"$(sha256sum < /run/secrets/licence | "
                f"cut -d' ' -f1)\" = {hashlib.sha256(licence.encode()).hexdigest()}",
                f"RUN python3 -c 'import {PACKAGE}; assert {PACKAGE}.ANSWER == 42'",
            ],
        })  # fmt: skip
        (stack.directory / "requirements.txt").write_text(f"{PACKAGE}==1.0\n")
        # pip refuses a plain-HTTP index unless trusted: pip's own config, from a file secret
        (stack.directory / "pip.conf").write_text(f"[global]\ntrusted-host = {bridge_gateway}\n")
        stack.write_spec()
        env = {"E2E_INDEX_URL": f"http://token:{token}@{bridge_gateway}:{index.port}/simple",
               "E2E_LICENCE": licence}  # fmt: skip
        missing = stack.devbox("validate", check=False)
        assert missing.returncode == 2 and "E2E_INDEX_URL is not set" in missing.stdout + missing.stderr
        up = stack.devbox("up", env=env, timeout=1200)
        assert index.served >= 2, "pip never fetched from the private index"
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as refused:  # without the token: refused
            urllib.request.urlopen(f"http://{bridge_gateway}:{index.port}/simple/{PACKAGE}/", timeout=5)  # noqa: S310
        assert refused.value.code == 401
    finally:
        index.close()
    container = stack.container(docker_client, "master")
    image = docker_client.images.get(container.attrs["Config"]["Image"])
    places = {
        "docker history --no-trunc": json.dumps(image.history()),
        "docker inspect": json.dumps(image.attrs) + json.dumps(container.attrs),
        "the build log": up.stdout + up.stderr,
    }
    for path in stack.directory.rglob("*"):
        if path.is_file() and path.name != "pip.conf":
            places[str(path.relative_to(stack.directory))] = path.read_bytes().decode(errors="replace")
    layers = io.BytesIO(b"".join(image.save()))
    with tarfile.open(fileobj=layers) as saved:
        for member in saved.getmembers():
            if member.isfile():
                data = saved.extractfile(member).read()  # type: ignore[union-attr]
                places[f"docker save: {member.name}"] = data.decode("latin-1")
                if member.name.endswith("layer.tar"):
                    with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                        names = layer.getnames()
                    assert not any(n.endswith((".netrc", "pip/pip.conf")) for n in names), member.name
    assert len([p for p in places if p.startswith("docker save")]) > 3
    for where, text in places.items():
        for value in (token, licence):
            assert value not in text, f"a secret's value is in {where}"
    assert "Built" in up.stdout + up.stderr or "building image" in up.stdout
