"""The wheel carries the templates: an installed devbox can render without the source tree."""

from __future__ import annotations

import zipfile

from .helpers import REPO, run


def test_wheel_contains_templates_and_console_script(tmp_path, python_module):
    result = run([*python_module("build"), "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(REPO)])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = tmp_path.glob("devbox-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for template in ("Dockerfile.j2", "entrypoint.sh.j2", "devbox.yaml.j2"):
        assert f"devbox/templates/{template}" in names
    assert "devbox/schema/devbox.schema.json" in names and "devbox/spec/__init__.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "devbox = devbox.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
