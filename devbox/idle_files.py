"""The idle folder, ``.devbox/idle/``: what `up`, the watcher, `keep`, `status` and `usage` share.

- ``policy.json``: written by `up`: the hosts with an idle policy, their GPUs, the login user.
- ``samples/YYYY-MM-DD.jsonl``: one line per host per sample (every minute), a file a day (UTC);
  files older than ``KEEP_DAYS`` are deleted, so the folder stays bounded (about 300 bytes a
  line: 1,440 lines a host a day, some 13 MB a host for 30 days).
- ``events.jsonl``: warned, stopped (reclaimed), kept, released; the last ``MAX_EVENTS`` kept.
- ``state.json``: the watcher's latest decision per host, for `status`.
- ``keep.json``: `devbox keep` holds: host -> until (epoch seconds).

Standard library only: the watcher's container carries this module with devbox.idle and
devbox.watcher alone. Writes are atomic (a temporary file renamed over the old one) so a reader
never sees half a file, whoever is writing.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from devbox.idle import Sample

IDLE_DIR = "idle"
POLICY_FILE = "policy.json"
STATE_FILE = "state.json"
KEEP_HOLDS_FILE = "keep.json"
EVENTS_FILE = "events.jsonl"
SAMPLES_DIR = "samples"
KEEP_DAYS = 30
MAX_EVENTS = 5000


class IdleFolder:
    """The idle folder of one project's state folder (``.devbox/idle``)."""

    def __init__(self, state_folder: Path) -> None:
        self.path = Path(state_folder) / IDLE_DIR

    # -- small JSON files

    def read(self, name: str, default: Any = None) -> Any:
        """A JSON file's content; ``default`` when it is missing or damaged (never an error: a
        half-written or hand-edited file must not stop the watcher or `status`)."""
        try:
            return json.loads((self.path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return default

    def write(self, name: str, data: Any) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        text = json.dumps(data, indent=1, sort_keys=True) + "\n"
        handle, temporary = tempfile.mkstemp(dir=self.path, prefix=f".{name}.")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            os.chmod(temporary, 0o644)
            os.replace(temporary, self.path / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def policy(self) -> dict[str, Any]:
        return self.read(POLICY_FILE, {}) or {}

    def holds(self) -> dict[str, float]:
        """`devbox keep` holds still in force or ended: host -> until."""
        data = self.read(KEEP_HOLDS_FILE, {})
        return {str(host): float(until) for host, until in data.items()} if isinstance(data, dict) else {}

    def set_hold(self, host: str, until: float | None) -> None:
        holds = self.holds()
        if until is None:
            holds.pop(host, None)
        else:
            holds[host] = until
        self.write(KEEP_HOLDS_FILE, holds)

    def states(self) -> dict[str, dict[str, Any]]:
        data = self.read(STATE_FILE, {})
        return data if isinstance(data, dict) else {}

    # -- samples and events, appended

    def _append(self, path: Path, lines: Iterable[dict[str, Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines)
        with open(path, "a", encoding="utf-8") as out:
            out.write(text)

    def add_samples(self, samples: dict[str, Sample]) -> None:
        """One line per host, in the file of the day (UTC) of the sample."""
        by_day: dict[str, list[dict[str, Any]]] = {}
        for host, sample in samples.items():
            day = time.strftime("%Y-%m-%d", time.gmtime(sample.at))
            by_day.setdefault(day, []).append({"host": host, **sample.as_dict()})
        for day, lines in by_day.items():
            self._append(self.path / SAMPLES_DIR / f"{day}.jsonl", lines)

    def samples(self, since: float, until: float | None = None) -> dict[str, list[Sample]]:
        """Every host's samples from ``since`` (epoch seconds), oldest first; damaged lines skipped."""
        found: dict[str, list[Sample]] = {}
        first_day = time.strftime("%Y-%m-%d", time.gmtime(since))
        folder = self.path / SAMPLES_DIR
        days = sorted(p for p in folder.glob("*.jsonl") if p.stem >= first_day) if folder.is_dir() else []
        for path in days:
            for data in _lines(path):
                try:
                    sample = Sample.from_dict(data)
                except (KeyError, TypeError, ValueError):
                    continue
                if sample.at >= since and (until is None or sample.at <= until):
                    found.setdefault(str(data.get("host")), []).append(sample)
        for series in found.values():
            series.sort(key=lambda s: s.at)
        return found

    def prune(self, now: float) -> None:
        """Delete sample files older than KEEP_DAYS, and events beyond MAX_EVENTS."""
        oldest = time.strftime("%Y-%m-%d", time.gmtime(now - KEEP_DAYS * 86400))
        folder = self.path / SAMPLES_DIR
        for path in folder.glob("*.jsonl") if folder.is_dir() else []:
            if path.stem < oldest:
                with contextlib.suppress(OSError):
                    path.unlink()
        events = list(self.events())
        if len(events) > MAX_EVENTS:
            path = self.path / EVENTS_FILE
            path.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in events[-MAX_EVENTS:]),
                            encoding="utf-8")  # fmt: skip

    def add_event(self, at: float, host: str, event: str, reason: str, **details: Any) -> None:
        self._append(self.path / EVENTS_FILE, [{"at": at, "host": host, "event": event, "reason": reason,
                                                **details}])  # fmt: skip

    def events(self) -> Iterator[dict[str, Any]]:
        yield from _lines(self.path / EVENTS_FILE)


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            data = json.loads(line)
            if isinstance(data, dict):
                yield data
