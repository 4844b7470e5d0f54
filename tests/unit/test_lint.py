"""Lint without tools: no Python code in devbox hands a command line to a shell, every lint rule
the templates ignore says why, and the golden seed is what `devbox init` writes.

The linters themselves (ruff, mypy, shellcheck, hadolint) run in tests/tools/test_lint.py.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from devbox.scaffold import init_project

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
PACKAGE = REPO / "devbox"
TEMPLATES = PACKAGE / "templates"


def test_the_golden_seed_is_what_init_writes(tmp_path):
    init_project(tmp_path, "lab", force=False)
    assert (tmp_path / "devbox.yaml").read_text() == (GOLDEN / "seed001" / "devbox.yaml").read_text()


PRAGMA = re.compile(r"#\s*(hadolint ignore|shellcheck disable)=")


@pytest.mark.parametrize("template", sorted(p.name for p in TEMPLATES.glob("*.j2")))
def test_every_ignored_lint_rule_has_a_reason(template):
    lines = (TEMPLATES / template).read_text().splitlines()
    for number, line in enumerate(lines):
        if PRAGMA.search(line):
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") and not PRAGMA.search(above) and len(above) > 10, (
                f"{template}:{number + 1}: {line.strip()!r} needs a comment above it saying why"
            )


SOURCES = sorted(PACKAGE.rglob("*.py"))
SHELL_TEXT = re.compile(
    r"shell\s*=\s*True|os\.system\s*\(|os\.popen\s*\(|getstatusoutput|getoutput|create_subprocess_shell"
)
PROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output", "exec_run", "create_subprocess_exec"}
SHELL_CALLS = {"system", "popen", "getoutput", "getstatusoutput", "create_subprocess_shell"}


def test_sources_are_found():
    assert PACKAGE / "cli.py" in SOURCES and PACKAGE / "render.py" in SOURCES


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_no_shell_is_handed_a_command_line(source):
    """Grep, then the syntax tree: no shell=True, os.system/popen, and no `sh -c` snippet made
    from an f-string or formatting (a fixed snippet with "$1" arguments is how to pass values)."""
    text = source.read_text(encoding="utf-8")
    hits = [
        f"{source.name}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if SHELL_TEXT.search(line)
    ]
    assert not hits, hits
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            assert name not in SHELL_CALLS, f"{source.name}:{node.lineno}: {name}()"
            for keyword in node.keywords:
                # (Image(shell=...) is the login shell; only process-starting calls matter here)
                if keyword.arg == "shell" and name in PROCESS_CALLS:
                    assert isinstance(keyword.value, ast.Constant) and keyword.value.value is False, (
                        f"{source.name}:{node.lineno}: shell= must be False"
                    )
        if isinstance(node, ast.List | ast.Tuple):
            items = node.elts
            for first, second in zip(items, items[1:], strict=False):
                if isinstance(first, ast.Constant) and first.value == "-c":
                    built = isinstance(second, ast.JoinedStr | ast.BinOp) or (
                        isinstance(second, ast.Call) and getattr(second.func, "attr", "") == "format"
                    )
                    assert not built, f"{source.name}:{node.lineno}: a shell snippet built from values"
