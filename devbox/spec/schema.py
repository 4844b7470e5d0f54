"""The JSON Schema (draft-07) of devbox.yaml, generated from the settings table.

Like pypa/cibuildwheel's, the schema is not written by hand: ``json_schema()`` builds it from
``devbox.spec.fields``, so a new setting, key or doc reaches editors with no second list to
keep. draft-07, because editors' YAML support (yaml-language-server, which VS Code uses)
implements it fully. The package ships it as ``devbox/schema/devbox.schema.json``; a unit test
checks the shipped file is what this module generates. Refresh it after changing the table::

    python -m devbox schema > devbox/schema/devbox.schema.json

It describes what a spec may hold, not every rule: a bind source that must exist, a port used
twice or a reservation above its limit are left to ``devbox validate``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from devbox.spec.fields import HOST, IMAGE, NETWORK, SPEC
from devbox.spec.options import ABSENT, Field, Table

DRAFT = "http://json-schema.org/draft-07/schema#"
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schema" / "devbox.schema.json"  # the shipped copy
SPEC_SCHEMA_NAME = ".devbox.schema.json"  # the copy beside a spec, which its modeline names


def json_schema() -> dict[str, Any]:
    """The schema as data: the top-level table's, with its title."""
    return {
        "$schema": DRAFT,
        "title": "devbox.yaml",
        "description": "A devbox spec: one GPU server carved into isolated, SSH-able development hosts.",
        **SPEC.schema(),
        "type": "object",
    }


def schema_text() -> str:
    """The schema as the package ships it: indented JSON, keys in table order, one final newline."""
    return json.dumps(json_schema(), indent=2) + "\n"


def modeline(schema_path: str = SPEC_SCHEMA_NAME) -> str:
    """The comment that points yaml-language-server (VS Code's YAML support) at the schema."""
    return f"# yaml-language-server: $schema={schema_path}"


def reference() -> str:
    """The settings as a Markdown table (README's "Every setting"), from the same table."""
    rows = ["| setting | default | what it is |", "| --- | --- | --- |"]
    top = [item for item in SPEC.fields.values() if not isinstance(item.option, Table)]
    for prefix, fields in (("", top), ("network.", NETWORK.fields.values()), ("image.", IMAGE.fields.values()),
                           ("", HOST.fields.values())):  # fmt: skip
        for item in fields:
            rows += _rows(prefix, item)
    return "\n".join(rows) + "\n"


def _rows(prefix: str, item: Field) -> list[str]:
    option = item.option
    if isinstance(option, Table) and option.merges:  # limits.cpus, limits.memory
        return [_row(f"{prefix}{item.name}.", sub) for sub in option.fields.values()]
    return [_row(prefix, item)]


def _row(prefix: str, item: Field) -> str:
    default = item.default
    if item.missing:
        shown = "required"
    elif default is ABSENT or default is None or default == []:
        shown = ""
    elif isinstance(default, list):
        shown = f"`[{', '.join(default)}]`"
    else:
        shown = f"`{json.dumps(default).strip(chr(34))}`"
    doc = item.doc.replace("|", "\\|")
    return f"| `{prefix}{item.name}` | {shown} | {doc} |"
