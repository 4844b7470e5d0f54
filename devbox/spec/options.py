"""Reusable option types: what one setting accepts, how it is read, and its JSON Schema.

Modelled on mkdocs' ``config_options``: each type is a small object whose ``read`` turns a YAML
value into a clean one (or reports a problem at the setting's path and returns None) and whose
``schema`` says the same thing to an editor. ``devbox.spec.fields`` lists the settings with them.
Reading never stops at the first problem: every problem is collected, each with its spec path.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from devbox.spec.model import Size as SizeValue

SIZE_HELP = "use a whole number with a unit b, k, m or g, e.g. 16g, 16000M, 512m"
_SIZE = re.compile(r"^([0-9]{1,30})([bkmg]?)$", re.IGNORECASE)
MAX_SIZE = 2**53  # 8 PiB: far above any machine, exact in the engine's float parsing, no int64 overflow
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
# Where a misplaced key of a host most likely belongs (``memory:`` at the top of a host).
_NESTED_HINTS = {"cpus": "limits.cpus", "memory": "limits.memory"}
Schema = dict[str, Any]


class Problems:
    """Collects problems as ``path: message`` lines, without repeats, in the order found."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        line = f"{path}: {message}" if path else message
        if not line.isprintable():  # one problem, one line: escape newlines and control characters
            line = "".join(char if char.isprintable() else repr(char)[1:-1] for char in line)
        if line not in self.items:
            self.items.append(line)

    def __bool__(self) -> bool:
        return bool(self.items)


@dataclass
class Reading:
    """What every option reads with: where problems go, the spec's folder, notes for the user."""

    directory: Path
    problems: Problems = field(default_factory=Problems)
    notes: list[str] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.problems.add(path, message)


class Entry(NamedTuple):
    """One key of a mapping setting, with its path and the path of the mapping holding it."""

    key: str
    value: Any
    path: str
    parent: str


def join(path: str, key: str | int) -> str:
    """The spec path of ``key`` below ``path``: ``a.b``, ``a[0]``; odd keys are quoted."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not key.isprintable():
        key = repr(key)
    return f"{path}.{key}" if path else key


def type_name(value: Any) -> str:
    """How a problem names a YAML value's type."""
    return {
        dict: "a mapping", list: "a list", str: "a string", bool: "true/false",
        int: "a number", float: "a number", type(None): "empty",
    }.get(type(value), type(value).__name__)  # fmt: skip


def check_keys(node: Mapping, allowed: tuple[str, ...], path: str, problems: Problems) -> None:
    """Report keys not in ``allowed``, suggesting the closest known key (or nested key)."""
    for key in node:
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        if "limits" in allowed:
            nested = difflib.get_close_matches(str(key), list(_NESTED_HINTS), n=1, cutoff=0.6)
            close = [_NESTED_HINTS[nested[0]]] if nested else close
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(allowed)})"
        problems.add(join(path, str(key)), f"unknown key{hint}")


def js_pattern(pattern: re.Pattern[str]) -> str:
    """A Python full-match pattern as a JSON Schema (ECMA 262) pattern, anchored at both ends."""
    body = pattern.pattern.removeprefix("^").removesuffix("$")
    return f"^(?:{body})$"


def with_null(schema: Schema) -> Schema:
    """``schema`` that also accepts null (an empty YAML value)."""
    if isinstance(schema.get("type"), str):
        return {**schema, "type": [schema["type"], "null"]}
    if isinstance(schema.get("type"), list):
        return {**schema, "type": [*schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


class Option:
    """One kind of setting. ``merges``: a mapping a host merges key by key over ``defaults``."""

    merges = False

    def read(self, value: Any, path: str, reading: Reading) -> Any:
        raise NotImplementedError

    def schema(self) -> Schema:
        raise NotImplementedError


class Nullable(Option):
    """``inner``, or nothing: an empty value (null) means the setting is not set."""

    def __init__(self, inner: Option) -> None:
        self.inner = inner

    def read(self, value: Any, path: str, reading: Reading) -> Any:
        return None if value is None else self.inner.read(value, path, reading)

    def schema(self) -> Schema:
        return with_null(self.inner.schema())


class Text(Option):
    """A string (a number is taken as its text), matching ``pattern`` if one is given."""

    def __init__(self, pattern: re.Pattern[str] | None = None, hint: str = "") -> None:
        self.pattern, self.hint = pattern, hint

    def read(self, value: Any, path: str, reading: Reading) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            reading.add(path, f"must be a string, not {type_name(value)}")
            return None
        text = str(value)
        if self.pattern is not None and not self.pattern.fullmatch(text):
            reading.add(path, f"{text!r} is not valid ({self.hint})")
            return None
        return text

    def schema(self) -> Schema:
        schema: Schema = {"type": ["string", "number"]}
        if self.pattern is not None:
            schema["pattern"] = js_pattern(self.pattern)
        return schema


class Flag(Option):
    """true or false."""

    def read(self, value: Any, path: str, reading: Reading) -> bool | None:
        if not isinstance(value, bool):
            reading.add(path, f"must be true or false, not {value!r}")
            return None
        return value

    def schema(self) -> Schema:
        return {"type": "boolean"}


class Integer(Option):
    """A whole number from ``low`` to ``high`` (digits in a string count too); ``what`` names it."""

    def __init__(self, low: int, high: int, what: str) -> None:
        self.low, self.high, self.what = low, high, what

    def read(self, value: Any, path: str, reading: Reading) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            digits = value.strip() if isinstance(value, str) else ""
            if digits.isascii() and digits.isdigit() and len(digits) <= 30:  # not '²', not 5000 digits
                value = int(digits)
            else:
                reading.add(path, f"{value!r} is not {self.what} ({self.low}-{self.high})")
                return None
        if not self.low <= value <= self.high:
            reading.add(path, f"{value} is out of range for {self.what} ({self.low}-{self.high})")
            return None
        return int(value)

    def schema(self) -> Schema:
        return {"type": ["integer", "string"], "minimum": self.low, "maximum": self.high, "pattern": "^[0-9]+$"}


class Size(Option):
    """A memory size: a whole number with a unit b, k, m or g (none means bytes)."""

    def read(self, value: Any, path: str, reading: Reading) -> Any:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            reading.add(path, f"{value!r} is not a size ({SIZE_HELP})")
            return None
        match = _SIZE.fullmatch(str(value).strip())
        if not match or int(match.group(1)) == 0:
            reading.add(path, f"{str(value)!r} is not a size ({SIZE_HELP})")
            return None
        number, unit = match.groups()
        size = int(number) * _SIZE_UNITS[unit.lower()]
        if size > MAX_SIZE:  # the engine reads sizes into 64-bit numbers: more overflows
            reading.add(path, f"{str(value)!r} is too large (at most {MAX_SIZE // 1024**3}g)")
            return None
        return SizeValue(str(value).strip(), size)

    def schema(self) -> Schema:
        return {"type": ["string", "integer"], "pattern": "^\\s*[0-9]{1,30}[bkmgBKMG]?\\s*$", "minimum": 1}


class Cpus(Option):
    """A number of CPU cores, fractions allowed (8, 0.5)."""

    low, high = 0.01, 4096

    def read(self, value: Any, path: str, reading: Reading) -> float | None:
        try:
            cpus = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError, OverflowError):
            cpus = None
        if cpus is None or not self.low <= cpus <= self.high:
            reading.add(path, f"{value!r} is not a CPU count (use a number of cores: 8, 0.5)")
            return None
        return cpus

    def schema(self) -> Schema:
        return {"type": ["number", "string"], "minimum": self.low, "maximum": self.high,
                "pattern": r"^[0-9]*\.?[0-9]+$"}  # fmt: skip


class Choice(Option):
    """One of ``choices`` (after ``normalize``); ``message`` is a format string of ``value``.
    ``spelled``: a pattern of what ``normalize`` accepts, for the schema (else the choices)."""

    def __init__(self, choices: tuple[Any, ...], message: str, *, fallback: Any = None,
                 normalize: Callable[[Any], Any] | None = None, spelled: str | None = None) -> None:  # fmt: skip
        self.choices, self.message, self.fallback, self.normalize = choices, message, fallback, normalize
        self.spelled = spelled

    def read(self, value: Any, path: str, reading: Reading) -> Any:
        key = self.normalize(value) if self.normalize else value
        if key not in self.choices:
            reading.add(path, self.message.format(value=value))
            return self.fallback
        return key

    def schema(self) -> Schema:
        if self.spelled is not None:
            return {"type": "string", "pattern": self.spelled}
        return {"enum": list(self.choices)}


def any_case(words: tuple[str, ...], prefix: str = "") -> str:
    """A schema pattern of ``words`` in any letter case, each after an optional ``prefix``."""
    def letters(text: str) -> str:
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in text)

    optional = f"(?:{letters(prefix)})?" if prefix else ""
    return f"^{optional}(?:{'|'.join(letters(word) for word in words)})$"


class ListOf(Option):
    """A list of ``item`` (empty: none). ``split``: a string of items joined by it counts too;
    ``unique``: (key of an item, problem when two items share it)."""

    def __init__(self, item: Option, *, split: str | None = None,
                 unique: tuple[Callable[[Any], Any], str] | None = None) -> None:  # fmt: skip
        self.item, self.split, self.unique = item, split, unique

    def read(self, value: Any, path: str, reading: Reading) -> list[Any]:
        if value is None:
            return []
        if self.split is not None and isinstance(value, str):
            value = value.split(self.split)
        if not isinstance(value, list):
            reading.add(path, f"must be a list, not {type_name(value)}")
            return []
        items = [self.item.read(item, join(path, i), reading) for i, item in enumerate(value)]
        items = [item for item in items if item is not None]
        if self.unique is not None:
            keys = [self.unique[0](item) for item in items]
            if len(set(keys)) != len(keys):
                reading.add(path, self.unique[1])
        return items

    def schema(self) -> Schema:
        schema: Schema = {"type": ["array", "null"], "items": self.item.schema()}
        if self.split is not None:
            return {"anyOf": [schema, {"type": "string"}]}
        return schema


def mapping_entries(value: Any, path: str, reading: Reading) -> Iterable[Entry]:
    """The keys of a mapping value as entries; anything else is reported (null is no entries)."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        reading.add(path, f"must be a mapping, not {type_name(value)}")
        return []
    return [Entry(str(key), item, join(path, str(key)), path) for key, item in value.items()]


class MapOf(Option):
    """A mapping of free keys (each passing ``key``, else ``key_problem``) to ``value`` items.

    Merged per key: a host's entries win over the same keys in ``defaults``."""

    merges = True

    def __init__(self, key: Callable[[str], object], key_problem: str, key_schema: Schema, value: Option) -> None:
        self.key, self.key_problem, self.key_schema, self.value = key, key_problem, key_schema, value

    def read(self, value: Any, path: str, reading: Reading) -> dict[str, Any]:
        return self.read_entries(mapping_entries(value, path, reading), reading)

    def read_entries(self, entries: Iterable[Entry], reading: Reading) -> dict[str, Any]:
        found = {}
        for entry in entries:
            if not self.key(entry.key):
                reading.add(entry.path, self.key_problem)
                continue
            item = self.value.read(entry.value, entry.path, reading)
            if item is not None:
                found[entry.key] = item
        return found

    def schema(self) -> Schema:
        return {"type": ["object", "null"], "propertyNames": self.key_schema,
                "additionalProperties": self.value.schema()}  # fmt: skip


ABSENT: Any = object()  # a field's default when leaving it out means "not set"


@dataclass(frozen=True)
class Field:
    """One setting: its key, its option type, a one-line doc, its default and, if it must be
    given, the problem reported when it is missing. The key lists, defaults, docs and the JSON
    Schema all come from tables of these."""

    name: str
    option: Option
    doc: str
    default: Any = ABSENT
    missing: str | None = None


class Table(Option):
    """A mapping with known keys, each a Field. ``merges``: a host merges it key by key over
    ``defaults`` (limits, reservations); otherwise it is read whole."""

    def __init__(self, fields: Iterable[Field], *, merges: bool = False) -> None:
        self.fields = {f.name: f for f in fields}
        self.keys = tuple(self.fields)
        self.merges = merges

    def node(self, value: Any, path: str, reading: Reading) -> Mapping:
        """The mapping itself (empty if null or not a mapping), unknown keys reported."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            reading.add(path, f"must be a mapping, not {type_name(value)}")
            return {}
        check_keys(value, self.keys, path, reading.problems)
        return value

    def read(self, value: Any, path: str, reading: Reading) -> dict[str, Any]:
        node, values = self.node(value, path, reading), {}
        for name, item in self.fields.items():
            if name in node:
                values[name] = item.option.read(node[name], join(path, name), reading)
            elif item.missing is not None:
                reading.add(join(path, name), item.missing)
            elif item.default is not ABSENT:
                values[name] = item.option.read(item.default, join(path, name), reading)
        return values

    def read_entries(self, entries: Iterable[Entry], reading: Reading) -> dict[str, Any]:
        values = {}
        for entry in entries:
            if entry.key not in self.fields:
                check_keys({entry.key: entry.value}, self.keys, entry.parent, reading.problems)
            else:
                values[entry.key] = self.fields[entry.key].option.read(entry.value, entry.path, reading)
        return values

    def schema(self) -> Schema:
        return {
            "type": ["object", "null"],
            "properties": {name: field_schema(item) for name, item in self.fields.items()},
            "additionalProperties": False,
            **({"required": required} if (required := [n for n, f in self.fields.items() if f.missing]) else {}),
        }


def field_schema(item: Field) -> Schema:
    """A field's schema with its doc (``description``) and default."""
    schema = {**item.option.schema(), "description": item.doc}
    if item.default is not ABSENT and item.default is not None:
        schema["default"] = item.default
    return schema
