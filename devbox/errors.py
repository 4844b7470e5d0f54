"""One exception tree for devbox.

Lower layers raise these and never print; the CLI prints each as one line and exits with
``exit_code``. Bad input (a spec problem, a refused overwrite) exits 2, like click's usage errors.
"""

from __future__ import annotations


class DevboxError(Exception):
    """Base of every error devbox reports to the user."""

    exit_code = 1

    def lines(self) -> list[str]:
        """The message, one problem per line (a message may carry several, one per line)."""
        return str(self).splitlines() or [type(self).__name__]


class UsageError(DevboxError):
    """The user asked for something that cannot be done as asked (e.g. overwrite without --force)."""

    exit_code = 2


class SpecError(DevboxError):
    """The spec is invalid. Carries every problem found, each naming its spec path."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        source = self.source if self.source.isprintable() else repr(self.source)
        return [f"{source}: {problem}" for problem in self.problems]


class EngineError(DevboxError):
    """Docker (engine or compose) is missing, unreachable or refused an operation."""


class PreflightError(DevboxError):
    """A check before `up` failed; the message says how to fix it."""


class HostCheckError(DevboxError):
    """A running host failed a check (SSH login, reachability, limits)."""
