"""The machine-wide lock on giving out GPUs: one per engine, across every devbox and user of the
machine (devbox.gpus gives the GPUs out under it). Its own module: a spec without GPUs takes the
lock that locks nothing without importing the GPU code.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from devbox.errors import PreflightError

LOCK_DIR = "/tmp"  # noqa: S108 - a lock every user of the machine finds; nothing is read from it
LOCK_DIR_ENV = "DEVBOX_LOCK_DIR"


def lock_path(engine_id: str, environ: Mapping[str, str]) -> Path:
    """The machine lock of one engine: ``/tmp/devbox-gpus-<engine>.lock`` (DEVBOX_LOCK_DIR moves
    it, for machines whose users do not share /tmp). Named by the engine's ID, so every devbox
    that talks to that engine from this machine finds the same file, whoever runs it."""
    digest = hashlib.sha256(engine_id.encode()).hexdigest()[:16]
    return Path(environ.get(LOCK_DIR_ENV) or LOCK_DIR) / f"devbox-gpus-{digest}.lock"


def engine_id(client: Any, environ: Mapping[str, str]) -> str:
    """The engine's own ID (`docker info`), else where it is reached."""
    return str(client.info().get("ID") or environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")


class MachineLock:
    """Serialises giving out GPUs on one engine: from reading what its containers hold to the
    creation of the containers that hold what was given (``release`` then), across every devbox
    on the machine, any spec, any user.

    An flock on a file anyone may open (mode 0666, opened read-only when another user made it:
    flock needs no write access). The kernel drops the lock when its holder's process ends, however
    it ends (Ctrl-C, kill -9), so a lock never outlives its holder and the file itself holds
    nothing. ``path`` None: a lock that locks nothing (a spec that takes no GPUs here).
    """

    def __init__(self, path: Path | None, on_wait: Callable[[], None] | None = None) -> None:
        self.path = path
        self.on_wait = on_wait
        self._fd: int | None = None

    def __enter__(self) -> MachineLock:
        if self.path is None:
            return self
        import fcntl

        self._fd = _open_shared(self.path)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if self.on_wait:
                self.on_wait()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def release(self) -> None:
        """Let the next devbox give out GPUs (closing the file drops the lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _open_shared(path: Path) -> int:
    """Open the lock file, creating it for everyone when it is missing. Read-only when it exists:
    in a sticky /tmp the kernel refuses to open another user's file with O_CREAT."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    problem = "it keeps changing"
    for _ in range(5):
        try:
            return os.open(path, flags)
        except FileNotFoundError:
            pass
        except OSError as exc:
            problem = exc.strerror or str(exc)
            break
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue  # made by another devbox meanwhile: open that one
        except OSError as exc:
            problem = exc.strerror or str(exc)
            break
        os.fchmod(fd, 0o666)
        return fd
    raise PreflightError(f"cannot open the GPU lock {path} ({problem}); set {LOCK_DIR_ENV} to a folder every "
                         "user of this machine can write, or make that file readable by all")  # fmt: skip
