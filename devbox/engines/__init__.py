"""The engines devbox runs hosts on, behind one interface (devbox.engines.base.Engine).

This is the one place that picks an engine by the spec's ``engine:`` name; everything else
asks the engine it was given.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from devbox import spec as specs
from devbox.engines.base import Engine
from devbox.project import Project
from devbox.spec import Spec

# Each engine by the name a spec gives it: its module and class, imported when a spec names it
# (a compose project never pays for importing the swarm engine).
ENGINES: dict[str, tuple[str, str]] = {
    "compose": ("devbox.engines.compose", "ComposeEngine"),
    "swarm": ("devbox.engines.swarm", "SwarmEngine"),
}


def engine_class(name: str) -> type[Engine]:
    module, cls = ENGINES[name]
    engine: type[Engine] = getattr(importlib.import_module(module), cls)
    return engine


_MADE: dict[str, Engine] = {}


def engine_for(spec: Spec) -> Engine:
    """The engine the (validated) spec names; engines hold no state, so each is made once."""
    if spec.engine not in _MADE:
        _MADE[spec.engine] = engine_class(spec.engine)()
    return _MADE[spec.engine]


def open_project(spec: Spec, folder: Path, **options: Any) -> Project:
    """The project of ``spec`` in ``folder``, holding its engine: the one place a command's
    engine is picked (``options``: Project's say, environ, confirm)."""
    return Project(spec, folder, _engine=engine_for(spec), **options)


def spec_rules(spec: Spec) -> tuple[list[str], list[str]]:
    """What the spec's engine cannot do of it: (problems, notes)."""
    return engine_for(spec).spec_problems(spec)


def load_spec(path: str | os.PathLike[str], *, gpu: bool | None = None, engine: str | None = None) -> Spec:
    """A spec valid for the engine it runs on (devbox.spec.load_spec with that engine's rules)."""
    return specs.load_spec(path, gpu=gpu, engine=engine, rules=spec_rules)


__all__ = ["ENGINES", "Engine", "engine_class", "engine_for", "load_spec", "open_project", "spec_rules"]
