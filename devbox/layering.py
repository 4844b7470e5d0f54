"""Which of the spec's packages and requirements go in which image layer: the one before plus a delta.

An image layer is rebuilt when its RUN line or any layer before it changes. One RUN with every
package (or one `pip install -r` of the whole file) installs the whole list again for one more
package: on `devbox init`'s spec that is git, perl and python3 again, as long as a cold build of
the packages. So the layers are planned from the ones the last render used:

- the longest run of earlier layers that the spec still wants whole is kept, text for text, so
  the builder takes them from its cache;
- what the spec wants beyond them is one new layer after them (adding a package anywhere in the
  list, or a line anywhere in the requirements, installs that package alone);
- a removal drops the layer that held it and every one after it; the rest of the list is then
  installed in one layer again, so nothing removed stays in the image;
- past ``LIMIT`` layers, everything is one layer again (one full install every so many edits).

The plan depends on what was rendered before, not only on the spec: a fresh render elsewhere
(no earlier layers) installs the same packages in one layer. Pure: no files, no engine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

LIMIT = 8  # layers of each kind before they are merged into one again

Layers = tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class ImageLayers:
    """The image's package layers (each a list of apt packages, installed in that order) and its
    requirements layers (each a full requirements list, a superset of the one before: pip installs
    what the one before did not)."""

    packages: Layers = ()
    requirements: Layers = ()

    def to_text(self) -> str:
        return json.dumps({"packages": self.packages, "requirements": self.requirements}, indent=1) + "\n"

    @classmethod
    def from_text(cls, text: str) -> ImageLayers:
        """What an earlier render wrote; anything unreadable is no earlier layers (a full install)."""
        try:
            data = json.loads(text)
            return cls(_layers(data.get("packages")), _layers(data.get("requirements")))
        except (ValueError, AttributeError, TypeError):
            return cls()


def _layers(value: object) -> Layers:
    if not isinstance(value, list) or not all(
        isinstance(layer, list) and layer and all(isinstance(item, str) and item for item in layer) for layer in value
    ):
        raise ValueError("not a list of layers")
    return tuple(tuple(layer) for layer in value)


def plan(packages: Sequence[str], requirements: Sequence[str], before: ImageLayers) -> ImageLayers:
    """The layers for the spec's ``packages`` and ``requirements`` (lines) after ``before``."""
    return ImageLayers(package_layers(packages, before.packages), requirement_layers(requirements, before.requirements))


def package_layers(wanted: Sequence[str], before: Layers) -> Layers:
    """Disjoint layers whose packages are ``wanted`` (in the spec's order within a new layer)."""
    wanted = list(dict.fromkeys(wanted))
    kept: list[tuple[str, ...]] = []
    covered: set[str] = set()
    for layer in before:
        if not set(layer) <= set(wanted) or covered & set(layer):
            break
        kept.append(layer)
        covered |= set(layer)
    rest = tuple(package for package in wanted if package not in covered)
    if rest:
        kept.append(rest)
    return _capped(kept, tuple(wanted))


def requirement_layers(lines: Sequence[str], before: Layers) -> Layers:
    """Growing requirement lists, the last one holding exactly ``lines`` (as a set)."""
    current = tuple(dict.fromkeys(lines))
    if not current:
        return ()
    kept: list[tuple[str, ...]] = []
    for version in before:
        if not set(version) <= set(current) or (kept and not set(kept[-1]) <= set(version)):
            break
        kept.append(version)
    if not kept or set(kept[-1]) != set(current):
        kept.append(current)
    return _capped(kept, current)


def _capped(layers: list[tuple[str, ...]], whole: tuple[str, ...]) -> Layers:
    if not whole:
        return ()
    return tuple(layers) if len(layers) <= LIMIT else (whole,)


def requirement_lines(text: str) -> list[str]:
    """A requirements file as pip reads it, one logical line each: continuation lines joined,
    comments and blank lines left out (they install nothing, and a layer is made of lines)."""
    lines, pending = [], ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        line, pending = pending + raw, ""
        if line.lstrip().startswith("#"):
            continue
        line = line.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if line:
            lines.append(line)
    if pending.strip():
        lines.append(pending.strip())
    return lines
