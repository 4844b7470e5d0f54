"""`devbox usage --html` in a real browser: headless Chromium (Debian's `chromium`, installed by
scripts/engine.sh) loads the page offline, shows one timeline per host, and draws something."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from devbox.idle import IdlePolicy, Sample
from devbox.idle_files import POLICY_FILE, IdleFolder

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


def _project_with_samples(folder: Path) -> Path:
    spec = {"project": "lab", "image": {"base": "debian:bookworm"},
            "hosts": {"alice": {"ssh_port": 4432, "gpus": 1, "idle": {"after": "1h"}},
                      "bob": {"ssh_port": 4433, "idle": {"after": "1h"}}}}  # fmt: skip
    (folder / "devbox.yaml").write_text(yaml.safe_dump(spec))
    idle = IdleFolder(folder / ".devbox")
    policy = IdlePolicy(3600).as_dict()
    idle.write(POLICY_FILE, {"project": "lab", "hosts": {"alice": {"policy": policy, "gpus": ["GPU-a"]},
                                                          "bob": {"policy": policy, "gpus": []}}})  # fmt: skip
    now = time.time()
    for i in range(120):
        at = now - (120 - i) * 60
        idle.add_samples({"alice": Sample(at=at, gpu_percent=90 if i < 60 else 0, cpu_percent=40 if i < 60 else 1),
                          "bob": Sample(at=at, running=i < 100, ssh_sessions=1 if i < 20 else 0)})  # fmt: skip
    return folder


def test_the_usage_page_shows_a_timeline_per_host_in_chromium(tmp_path, program):
    chromium = program("chromium")
    folder = _project_with_samples(tmp_path)
    page = tmp_path / "usage.html"
    subprocess.run([sys.executable, "-m", "devbox", "usage", "--since", "1d", "--html", str(page)], cwd=folder,
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    profile = tmp_path / "profile"
    url = page.as_uri()
    env = {**os.environ, "HOME": str(tmp_path)}
    dom = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120, env=env, check=True).stdout  # fmt: skip
    assert dom.count("class=\"timeline\"") == 2, dom[:2000]
    assert 'data-host="alice"' in dom and 'data-host="bob"' in dom and "<svg" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}",
                    "--window-size=1000,700", url], capture_output=True, timeout=120, env=env, check=True)  # fmt: skip
    colours = _colours(shot)
    assert len(colours) > 3, f"the screenshot is blank: {colours}"


def _colours(png: Path) -> set[tuple[int, ...]]:
    """The distinct colours of a PNG (Chromium writes 8-bit RGBA), read with zlib alone."""
    import struct
    import zlib

    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks, header = 8, [], b""
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        offset += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    channels = {2: 3, 6: 4}[colour]
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    seen: set[tuple[int, ...]] = set()
    previous = bytearray(stride)
    position = 0
    for _row in range(height):
        kind, line = raw[position], bytearray(raw[position + 1:position + 1 + stride])
        position += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        if _row % 7 == 0:
            seen.update(tuple(line[i:i + 3]) for i in range(0, stride, channels * 5))
        previous = line
    return seen
