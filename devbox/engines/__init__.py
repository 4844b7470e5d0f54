"""The engines devbox runs hosts on, behind one interface (devbox.engines.base.Engine).

This is the one place that picks an engine by the spec's ``engine:`` name; everything else
asks the engine it was given.
"""

from __future__ import annotations

import os

from devbox import spec as specs
from devbox.engines.base import Engine
from devbox.engines.compose import ComposeEngine
from devbox.engines.swarm import SwarmEngine
from devbox.spec import Spec

ENGINES: dict[str, type[Engine]] = {engine.name: engine for engine in (ComposeEngine, SwarmEngine)}


def engine_for(spec: Spec) -> Engine:
    """The engine the (validated) spec names."""
    return ENGINES[spec.engine]()


def spec_rules(spec: Spec) -> tuple[list[str], list[str]]:
    """What the spec's engine cannot do of it: (problems, notes)."""
    return engine_for(spec).spec_problems(spec)


def load_spec(path: str | os.PathLike[str], *, gpu: bool | None = None, engine: str | None = None) -> Spec:
    """A spec valid for the engine it runs on (devbox.spec.load_spec with that engine's rules)."""
    return specs.load_spec(path, gpu=gpu, engine=engine, rules=spec_rules)


__all__ = ["ENGINES", "Engine", "engine_for", "load_spec", "spec_rules"]
