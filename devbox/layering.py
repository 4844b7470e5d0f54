"""Which of the spec's packages and requirements go in which image layer: the one before plus a delta.

An image layer is rebuilt when its RUN line or any layer before it changes. One RUN with every
package (or one `pip install -r` of the whole file) installs the whole list again for one more
package: on `devbox init`'s spec that is git, perl and python3 again, as long as a cold build of
the packages. So the layers are planned from the ones the last render used:

- the earlier layers are kept, text for text, so the builder takes them from its cache;
- what the spec wants beyond them is one new layer after them (adding a package anywhere in the
  list, or a line anywhere in the requirements, installs that package alone);
- what the spec no longer wants is removed by a layer of its own (``-name`` entries): the step
  purges those packages and the dependencies only they needed, so the image holds the packages
  a fresh install of the list would; the packages after them are not installed again. Where
  dropping the last layers alone gives the spec's list (a package added, then removed), they
  are dropped instead: the builder has the image before them in its cache;
- past ``LIMIT`` layers, everything is one layer again (one full install every so many edits;
  this also drops the bytes that removed packages left in the layers under their removal).

The plan depends on what was rendered before, not only on the spec: a fresh render elsewhere
(no earlier layers) installs the same packages in one layer. Pure: no files, no engine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from devbox.spec.fields import PACKAGE

LIMIT = 8  # layers of each kind before they are merged into one again
REMOVED = "-"  # marks a removal layer's entries (a Debian package name starts with a letter or digit)

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
            return cls(_package_layers(data.get("packages")), _layers(data.get("requirements")))
        except (ValueError, AttributeError, TypeError):
            return cls()


def _layers(value: object) -> Layers:
    if not isinstance(value, list) or not all(
        isinstance(layer, list) and layer and all(isinstance(item, str) and item for item in layer) for layer in value
    ):
        raise ValueError("not a list of layers")
    return tuple(tuple(layer) for layer in value)


def _package_layers(value: object) -> Layers:
    """Package layers as written: each entry a package (as the spec's rules allow) or, in a
    removal layer, a package name after ``REMOVED`` (they are written into the Dockerfile)."""
    layers = _layers(value)
    for layer in layers:
        removal = is_removal(layer)
        for entry in layer:
            if entry.startswith(REMOVED) != removal or not PACKAGE.match(entry[len(REMOVED) :] if removal else entry):
                raise ValueError(f"not a package layer entry: {entry!r}")
    return layers


def plan(packages: Sequence[str], requirements: Sequence[str], before: ImageLayers) -> ImageLayers:
    """The layers for the spec's ``packages`` and ``requirements`` (lines) after ``before``."""
    return ImageLayers(package_layers(packages, before.packages), requirement_layers(requirements, before.requirements))


def package_layers(wanted: Sequence[str], before: Layers) -> Layers:
    """Layers that leave installed exactly the ``wanted`` packages (new ones in the spec's order)."""
    wanted = list(dict.fromkeys(wanted))
    kept, installed_after = _replayed(wanted, before)
    for length in range(len(kept), 0, -1):
        if set(installed_after[length - 1]) == set(wanted):
            return _capped(kept[:length], tuple(wanted))
    installed = installed_after[-1] if kept else []
    unwanted = [entry for entry in installed if entry not in wanted]
    if unwanted:
        kept.append(tuple(dict.fromkeys(REMOVED + package_name(entry) for entry in unwanted)))
        installed = [entry for entry in installed if entry not in unwanted]
    rest = tuple(entry for entry in wanted if entry not in installed)
    if rest:
        kept.append(rest)
    return _capped(kept, tuple(wanted))


def _replayed(wanted: list[str], before: Layers) -> tuple[list[tuple[str, ...]], list[list[str]]]:
    """The longest run of ``before`` that can stay as it was, and the spec entries installed after
    each of its layers. A layer installing what is already installed ends the run (only a damaged
    record has one), as does a removal of a package the spec wants again (the layers before it
    hold that package)."""
    kept: list[tuple[str, ...]] = []
    installed_after: list[list[str]] = []
    installed: list[str] = []
    for layer in before:
        if is_removal(layer):
            names = {entry[len(REMOVED) :] for entry in layer}
            leaving = [entry for entry in installed if package_name(entry) in names]
            if any(entry in wanted for entry in leaving):
                break
            installed = [entry for entry in installed if entry not in leaving]
        elif set(layer) & set(installed):
            break
        else:
            installed = installed + list(layer)
        kept.append(layer)
        installed_after.append(installed)
    return kept, installed_after


def is_removal(layer: Sequence[str]) -> bool:
    """A layer that removes packages (its entries are ``-name``) rather than installing them."""
    return bool(layer) and layer[0].startswith(REMOVED)


def package_name(entry: str) -> str:
    """The package an entry of the spec's list names (``name`` or ``name=version``)."""
    return entry.split("=", 1)[0]


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
