"""YAML to Python data, safely: duplicate keys, alias bombs and syntax errors become SpecErrors.

Every failure names the file and, where YAML knows it, the line and column.

Values keep the text they were written as. PyYAML follows YAML 1.1, which turns ``3.10`` into
3.1, ``0022`` into 18, ``1:30`` into 90 and ``yes``/``on`` into true: an environment variable,
a host name or a package would then not be what the spec says. So the loader resolves plain
scalars by the YAML 1.2 core schema (booleans are only true/false, no sexagesimal or 0-octal
numbers, no timestamps), a number remembers its source text (``str()`` gives it back, so where a
setting expects text it gets ``3.10``, not ``3.1``), and mapping keys are always their text
(``YES:`` is a variable named YES, a host ``on`` is named on). Merge keys (``<<: *common``) work.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from devbox.errors import SpecError

_MERGE = "tag:yaml.org,2002:merge"


class _Written:
    """A number that remembers how it was written: str() (and so the container) gets that back."""

    text: str

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__


class WrittenInt(_Written, int):
    """An integer as written (``0022``, ``0x1F``)."""

    def __new__(cls, value: int, text: str) -> WrittenInt:
        number = int.__new__(cls, value)
        number.text = text
        return number

    def __reduce__(self) -> tuple[Any, ...]:
        return WrittenInt, (int(self), self.text)


class WrittenFloat(_Written, float):
    """A float as written (``3.10``, ``1e3``)."""

    def __new__(cls, value: float, text: str) -> WrittenFloat:
        number = float.__new__(cls, value)
        number.text = text
        return number

    def __reduce__(self) -> tuple[Any, ...]:
        return WrittenFloat, (float(self), self.text)


# The YAML 1.2 core schema's plain scalars (https://yaml.org/spec/1.2.2/#1032-tag-resolution).
_CORE_RESOLVERS = (
    ("tag:yaml.org,2002:null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", r"true|True|TRUE|false|False|FALSE", list("tTfF")),
    ("tag:yaml.org,2002:int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", list("-+0123456789")),
    ("tag:yaml.org,2002:float", r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
     r"|[-+]?(?:\.inf|\.Inf|\.INF)|\.nan|\.NaN|\.NAN", list("-+.0123456789")),  # fmt: skip
    (_MERGE, r"<<", ["<"]),
)


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars, numbers that keep their text, text keys, and no
    duplicate mapping keys (PyYAML silently keeps the last one)."""

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}


for _tag, _pattern, _first in _CORE_RESOLVERS:
    _SpecLoader.add_implicit_resolver(_tag, re.compile(f"^(?:{_pattern})$"), _first)


def _bad_scalar(node: yaml.ScalarNode, what: str) -> yaml.constructor.ConstructorError:
    return yaml.constructor.ConstructorError(None, None, f"{node.value!r} is not {what}", node.start_mark)


def _construct_int(loader: _SpecLoader, node: yaml.ScalarNode) -> int:
    text = str(node.value)
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text.removeprefix("+"))
    base = {"0o": 8, "0x": 16}.get(body[:2].lower(), 10)
    if not re.fullmatch("[0-9a-fA-F]+", body[2:] if base != 10 else body):
        raise _bad_scalar(node, "an integer")
    return WrittenInt(sign * int(body[2:] if base != 10 else body, base), text)  # over 4300 digits: ValueError


def _construct_float(loader: _SpecLoader, node: yaml.ScalarNode) -> float:
    text = str(node.value)
    special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}.get(text.lower())
    try:
        return WrittenFloat(special if special is not None else float(text), text)
    except ValueError:  # an explicit !!float on something else
        raise _bad_scalar(node, "a number") from None


def _construct_bool(loader: _SpecLoader, node: yaml.ScalarNode) -> bool:
    text = str(node.value).lower()
    if text not in ("true", "false"):
        raise _bad_scalar(node, "true or false")
    return text == "true"


def _key(loader: _SpecLoader, node: yaml.Node) -> Any:
    """A mapping key: a scalar is its text as written; anything else is constructed (and then
    refused where a spec reads it, or reported as unhashable)."""
    if isinstance(node, yaml.ScalarNode):
        return str(node.value)
    return loader.construct_object(node)  # type: ignore[no-untyped-call]


def _construct_mapping(loader: _SpecLoader, node: yaml.MappingNode) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE:
            continue
        key = _key(loader, key_node)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, "found unhashable key", key_node.start_mark
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    loader.flatten_mapping(node)  # type: ignore[no-untyped-call]  # merge keys: own keys win
    return {_key(loader, k): loader.construct_object(v) for k, v in node.value}  # type: ignore[no-untyped-call]


_SpecLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_SpecLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_SpecLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
_SpecLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


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
    loader = _SpecLoader(text)
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


