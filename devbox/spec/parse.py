"""YAML to Python data, safely: duplicate keys, alias bombs and syntax errors become SpecErrors.

Every failure names the file and, where YAML knows it, the line and column.
"""

from __future__ import annotations

from typing import Any

import yaml

from devbox.errors import SpecError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)  # type: ignore[no-untyped-call]
        try:
            hash(key)
        except TypeError:
            continue  # construct_mapping reports the unhashable key with its line
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


MAX_YAML_NODES = 100_000  # far above any real spec; stops "billion laughs" alias bombs


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many nodes ``node`` stands for once every alias is expanded (a cycle counts once)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[id(node)] = min(total, MAX_YAML_NODES + 1)
    return memo[id(node)]


def _compose_and_construct(text: str, source: str) -> Any:
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_YAML_NODES:
            raise SpecError(source, [f"too large once its aliases are expanded (over {MAX_YAML_NODES} values)"])
        return None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML safely; syntax errors become a SpecError naming the file and line."""
    try:
        return _compose_and_construct(text, source)
    except RecursionError:
        raise SpecError(source, ["nested too deeply"]) from None
    except ValueError as exc:  # e.g. a number with more digits than Python converts
        raise SpecError(source, [f"not valid YAML ({str(exc).split(':')[0]})"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise SpecError(source, [f"{where}: {exc.problem or exc.context}"]) from None
    except yaml.reader.ReaderError as exc:
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise SpecError(source, [f"character {exc.position + 1}: {char} is not allowed ({exc.reason})"]) from None
    except yaml.YAMLError as exc:
        raise SpecError(source, [f"not valid YAML ({' '.join(str(exc).split())})"]) from None


