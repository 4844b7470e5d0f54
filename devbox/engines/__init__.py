"""The engines devbox runs hosts on, behind one interface (devbox.engines.base.Engine).

This is the one place that picks an engine by the spec's ``engine:`` name; everything else
asks the engine it was given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devbox.engines.base import Engine
from devbox.engines.compose import ComposeEngine
from devbox.engines.swarm import SwarmEngine

if TYPE_CHECKING:
    from devbox.spec import Spec

ENGINES: dict[str, type[Engine]] = {engine.name: engine for engine in (ComposeEngine, SwarmEngine)}


def engine_for(spec: Spec) -> Engine:
    """The engine the (validated) spec names."""
    return ENGINES[spec.engine]()


__all__ = ["ENGINES", "Engine", "engine_for"]
