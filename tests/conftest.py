"""What every test folder shares: the folder's marker, and one rule for what a machine lacks.

* ``tests/unit``: no marker. Pure and fast: no Docker engine, no external tool, seconds.
* ``tests/tools``: marker ``tools``. The linters, mypy, the wheel build, ``docker compose config``.
* ``tests/e2e``: marker ``e2e``. The real engine (its fixtures are in ``tests/e2e/conftest.py``).

The marker comes from the folder, so a new test file cannot forget it: ``-m tools`` and
``-m e2e`` select exactly those folders.

When a tools or e2e test needs what this machine lacks (a linter, the engine), it asks the
``lacking`` fixture: under ``CI=true`` (or ``DEVBOX_E2E_REQUIRED=1``; .ci/run sets both) that is a
test *failure*, never a skip, so a broken CI machine cannot hide behind green; elsewhere the
test is skipped with the fix.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

TESTS = Path(__file__).resolve().parent
FOLDER_MARKERS = {"tools": "tools", "e2e": "e2e"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:  # a test outside tests/ (given on the command line)
            continue
        if folder in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[folder])


class Lacking:
    """``lacking("shellcheck is not on PATH (install ...)")`` fails or skips: see the module doc."""

    @property
    def required(self) -> bool:
        """Whether what tests need must be present here (CI), rather than skipped when missing."""
        return os.environ.get("CI", "").lower() == "true" or os.environ.get("DEVBOX_E2E_REQUIRED") == "1"

    def __call__(self, reason: str) -> NoReturn:
        if self.required:
            pytest.fail(f"required under CI=true or DEVBOX_E2E_REQUIRED=1, but {reason}", pytrace=False)
        pytest.skip(reason)


@functools.cache
def own_path(programs: tuple[str, ...]) -> str:
    """A PATH of the tests' own: one folder linking only ``programs`` (those this machine has).

    Built, never filtered from the caller's PATH, so NVIDIA's tools are never found by chance,
    whatever this machine has: a GPU server keeps nvidia-smi and nvidia-container-runtime-hook in
    /usr/bin beside everything else (issue 30). A test that wants an nvidia-smi puts its double in
    front."""
    folder = Path(tempfile.mkdtemp(prefix="devbox-tests-path-"))
    folder.chmod(0o755)  # test_hardening runs devbox as another user
    link_programs(folder, programs)
    return str(folder)


def link_programs(folder: Path, programs: tuple[str, ...]) -> None:
    """Link into ``folder`` each of ``programs`` this machine has (found on this process's PATH)."""
    for name in programs:
        found = shutil.which(name)
        if found is not None:
            (folder / name).symlink_to(Path(found).resolve())


@pytest.fixture(scope="session")
def lacking() -> Lacking:
    return Lacking()


@pytest.fixture(scope="module")
def fast_hashes() -> Iterator[None]:
    """The fewest SHA-512 crypt rounds passlib allows, for a module that renders many specs
    (``pytestmark = pytest.mark.usefixtures("fast_hashes")``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("devbox.state.HASH_ROUNDS_GENERATED", 1000)
        patch.setattr("devbox.state.HASH_ROUNDS_CHOSEN", 1000)
        yield
