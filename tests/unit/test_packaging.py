"""The wheel carries the templates: an installed devbox can render without the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contains_templates_and_console_script(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    (wheel,) = tmp_path.glob("devbox-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for template in ("Dockerfile.j2", "entrypoint.sh.j2", "devbox.yaml.j2"):
        assert f"devbox/templates/{template}" in names
    assert "devbox/schema/devbox.schema.json" in names and "devbox/spec/__init__.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "devbox = devbox.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
