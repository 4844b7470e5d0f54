"""Shared by the tools tests: where the repository is, and how a program is run."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
INSTALL_HINT = "install the test extras: pip install -e '.[test]'"


def run(argv: list[str], cwd: Path = REPO, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a program (an argument list, no shell) and keep its output for the assertion."""
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, timeout=300, **kwargs)
