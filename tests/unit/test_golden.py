"""Golden files: each case in tests/golden/<case>/ holds a spec and the files it must render to.

Compared byte for byte. To accept a deliberate change, refresh them and review the diff:

    DEVBOX_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devbox.gpus import allocate, requests_of
from devbox.render import render_project
from devbox.spec import load_spec

from .helpers import fake_material

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CASES = sorted(path.name for path in GOLDEN.iterdir() if (path / "devbox.yaml").exists())


@pytest.mark.parametrize("case", CASES)
def test_rendered_files_match_golden(case):
    folder = GOLDEN / case
    spec = load_spec(folder / "devbox.yaml")
    gpus = allocate(requests_of(spec.hosts), machine=None)  # as `render` allocates without nvidia-smi
    files = render_project(spec, fake_material(spec), gpus=gpus).files
    expected_dir = folder / "expected"
    if os.environ.get("DEVBOX_UPDATE_GOLDEN") == "1":
        for file in files:
            target = expected_dir / file.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(file.content, encoding="utf-8")
    produced = {file.path for file in files}
    stored = {str(p.relative_to(expected_dir)) for p in expected_dir.rglob("*") if p.is_file()}
    assert produced == stored, "rendered file list differs from the golden one"
    for file in files:
        assert file.content == (expected_dir / file.path).read_text(encoding="utf-8"), file.path
