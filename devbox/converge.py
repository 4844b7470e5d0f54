"""The convergence sequence of `up`, written once for every engine.

observe -> plan -> preflight -> build (meanwhile, reading the files that replaced containers hold)
-> consent -> remove dropped hosts -> passwords -> publish -> apply -> prune. Each step asks the
project's engine for one primitive (devbox.engines.base.Engine: ``observe``, ``plan``,
``remove_host``, ``host_problems``, ``gpu_problems``, ``publish``, ``apply``), the way
docker/compose 1.x runs ``convergence_plan`` then ``execute_convergence_plan`` and
dockerspawner's swarm spawner overrides only the object primitives. Waiting for logins follows
in devbox.operations.up.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from devbox.changes import read_meanwhile
from devbox.docker_api import engine_facts
from devbox.engines.base import build_image, prune_images
from devbox.engines.preflight import raise_all

if TYPE_CHECKING:
    from devbox.engines.base import Observed
    from devbox.project import Project
    from devbox.render import RenderedProject
    from devbox.spec import Host


def survey(project: Project) -> tuple[list[str], Observed]:
    """What an interrupted run left half done (or was removed behind devbox's back) put right,
    said, and the project as the engine has it then: one read of its containers, unless a
    repair changed them, also within the caller's ``reusing_containers`` (devbox.operations.up)."""
    engine = project.engine
    with project.reusing_containers():
        repaired = engine.repair(project)
        for line in repaired:
            project.say(line)
        raise_all(engine.preflight(project))
        return repaired, engine.observe(project)


def converge(project: Project, hosts: list[Host], rendered: RenderedProject, *, only: bool,
             surveyed: tuple[list[str], Observed] | None = None) -> Converged:  # fmt: skip
    """Make ``hosts`` run as rendered: build the image if missing, (re)create what changed,
    remove hosts the spec dropped (not when ``only``: the user named the hosts to touch), leave
    the rest alone. Refusals (the engine itself, ports, resources, placement, GPUs) come before
    anything is built or (re)created; files a container would lose are asked about before
    anything is removed or replaced (read while the image builds: devbox.changes.read_meanwhile).
    ``surveyed``: what ``survey`` found, when the caller made it. Returns whether it left
    everything as it found it (logins begun before it then still prove the hosts:
    devbox.operations.up) and, after a build, the removal of older images it began (the
    caller finishes it: Pruning.finish)."""
    engine = project.engine
    repaired, seen = surveyed or survey(project)
    wanted = {host.name for host in project.spec.hosts}
    dropped = [] if only else sorted(name for name in seen.objects if name not in wanted)
    seen = replace(seen, leaving=tuple(dropped))
    plan = engine.plan(project, hosts, rendered, seen)
    losing = {name: seen.containers[name] for name in [*dropped, *plan.recreate] if name in seen.containers}
    starting = [host for host in hosts if host.name in plan.start]
    if starting:
        _refuse(project, starting, seen)
    with read_meanwhile(losing) as discarded:  # after the refusals: the engine's diffs hold up inspects
        if plan.build:
            build_image(project, plan.tag)
        project.consent_to_discard(losing, "recreating", found=discarded())
    if dropped:
        project.say(f"removing {', '.join(dropped)}: no longer in {project.spec.source} (named volumes stay)")
        for name in dropped:
            engine.remove_host(project, name, seen)
    renewed = engine.renew_passwords(project, [h for h in hosts if h.name in plan.unchanged], seen, rendered)
    if renewed:
        project.say(f"new passwords applied in the running hosts: {', '.join(renewed)}")
    if plan.nothing_to_do:
        more = "else " if renewed or repaired else ""
        project.say(f"nothing {more}changed: {len(plan.unchanged)} hosts already up to date")
        return Converged(not (renewed or repaired or dropped))
    image = engine.publish(project, rendered)
    engine.apply(project, plan, starting, rendered, image, seen, only=only)
    return Converged(False, Pruning(project, plan.tag) if plan.build else None)


@dataclass(frozen=True)
class Converged:
    """What converge did: whether it left everything as it found it, and the removal of older
    images it began (None: nothing was built)."""

    untouched: bool
    pruning: Pruning | None = None


class Pruning:
    """The project's older images removed in a thread of their own (prune_images), begun once
    the hosts are applied: the logins are waited for meanwhile, not after the engine has
    deleted the old layers (over a second on a slow disk)."""

    def __init__(self, project: Project, current: str) -> None:
        self.project, self.current = project, current
        self._removed: list[str] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._prune, daemon=True, name="devbox-prune")
        self._thread.start()

    def _prune(self) -> None:
        try:
            self._removed = prune_images(self.project, self.current)
        except Exception as exc:  # raised again in the caller's thread, by finish()
            self._error = exc

    def finish(self) -> None:
        """Wait for the removal, say what it removed; raise what it raised."""
        while self._thread.is_alive():
            self._thread.join(0.2)  # short joins: Ctrl-C reaches the main thread at once
        if self._error is not None:
            raise self._error
        if self._removed:
            self.project.say(f"removed older images: {', '.join(self._removed)} (kept {self.current} and the one "
                             "before it)")  # fmt: skip


def _refuse(project: Project, starting: list[Host], seen: Observed) -> None:
    """What the engine and machine cannot give the hosts that start: one line each, before
    anything is built, removed or replaced."""
    engine = project.engine
    facts = engine_facts(project.client)
    raise_all(engine.host_problems(project, starting, seen, facts))
    raise_all(engine.gpu_problems(project, facts))
