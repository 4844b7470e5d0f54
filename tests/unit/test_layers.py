"""The modules' imports form layers (README "Layers"): no cycle, also through imports inside
functions and through the engine registry's imports by name (devbox.engines.ENGINES), which
would hide one from Python until a command runs into it."""

from __future__ import annotations

import ast
from pathlib import Path

from devbox.engines import ENGINES

SOURCE = Path(__file__).resolve().parents[2] / "devbox"


def module_names() -> dict[str, Path]:
    found = {}
    for path in SOURCE.rglob("*.py"):
        name = ".".join(path.relative_to(SOURCE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the devbox modules it imports when it runs (at its top or in a function; what
    only type checkers read is left out)."""
    modules = module_names()

    def resolve(name: str) -> str:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and getattr(block.test, "id", None) == "TYPE_CHECKING" for node in ast.walk(block)}  # fmt: skip
        found = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                found |= {resolve(alias.name) for alias in node.names if alias.name.startswith("devbox")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("devbox"):
                found |= {resolve(f"{node.module}.{alias.name}") for alias in node.names}
        graph[name] = found - {name}
    graph["devbox.engines"] |= {module for module, _cls in ENGINES.values()}
    return graph


def cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from ``start`` back to it, if there is one."""
    paths = [[start]]
    seen = set()
    while paths:
        path = paths.pop()
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                paths.append([*path, nxt])
    return None


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    cycles = [" -> ".join(cycle) for name in sorted(graph) if (cycle := cycle_from(graph, name))]
    assert cycles == []


def test_the_project_and_passwords_do_not_pick_an_engine():
    """The engine is given to the Project (devbox.engines.open_project), never looked up below it."""
    graph = import_graph()
    assert not {m for m in graph["devbox.project"] | graph["devbox.passwords"] if m.startswith("devbox.engines")}
