"""devbox as users install it: the wheel, installed into a fresh environment outside the checkout.

Everything here runs the *installed* package, never the source tree: a module left out of the
wheel (a subpackage the discovery misses, a template, the schema) fails these tests, as it would
fail a user (issue 21: a hand-written package list once shipped a devbox whose every command but
``init`` crashed, and 793 tests run from the checkout did not see it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from .helpers import REPO, run

SOURCE_MODULES = sorted(
    ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    for path in (REPO / "devbox").rglob("*.py")
    if path.name != "__main__.py"
)


# What a fresh clone does not have: a stale build/lib of an earlier build would hide a package the
# discovery misses (setuptools copies it into the wheel from there).
NOT_IN_A_CLONE = {"build", "dist", ".git", ".venv", ".ci-demo", "devbox-demo", "devbox.egg-info"}


def _fresh_copy(target: Path) -> Path:
    """The checkout's sources copied as a fresh clone has them, to build from."""

    def ignored(folder: str, names: list[str]) -> set[str]:
        top = Path(folder).resolve() == REPO
        return {n for n in names if (top and n in NOT_IN_A_CLONE) or n in ("__pycache__", "results")}

    shutil.copytree(REPO, target, ignore=ignored, symlinks=True)
    return target


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory, python_module) -> Path:
    """The wheel, built once from a fresh copy of the sources (as `pip install .` builds it)."""
    out = tmp_path_factory.mktemp("wheel")
    source = _fresh_copy(tmp_path_factory.mktemp("clone") / "devbox")
    result = run([*python_module("build"), "--wheel", "--no-isolation", "--outdir", str(out), str(source)])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (built,) = out.glob("devbox-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh virtual environment holding only the wheel and its dependencies; its bin folder.

    The environment sees the machine's site-packages for the dependencies (no download per run),
    but devbox itself comes from the wheel: `pip install --no-deps` of the wheel alone.
    """
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(home)
    bin_dir = home / "bin"
    result = run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall",
                  "--ignore-installed", str(wheel)], cwd=home)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return bin_dir


def _outside(bin_dir: Path, argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a program of the fresh environment from a folder outside the checkout, PYTHONPATH unset."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=300)


def test_wheel_contains_templates_schema_and_console_script(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for template in ("Dockerfile.j2", "entrypoint.sh.j2", "devbox.yaml.j2"):
        assert f"devbox/templates/{template}" in names
    assert "devbox/schema/devbox.schema.json" in names
    for module in SOURCE_MODULES:
        package_file = module.replace(".", "/") + "/__init__.py"
        assert f"{module.replace('.', '/')}.py" in names or package_file in names, f"{module} is not in the wheel"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "devbox = devbox.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_devbox_is_the_wheel_and_every_module_imports(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import importlib, json, sys\n"
        "import devbox\n"
        "bad = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as error:\n"
        "        bad[name] = f'{type(error).__name__}: {error}'\n"
        "print(json.dumps({'file': devbox.__file__, 'bad': bad}))\n"
    )
    result = _outside(installed, [str(installed / "python"), "-c", probe, *SOURCE_MODULES], tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bad"] == {}, report["bad"]
    site = Path(report["file"]).resolve()
    assert "site-packages" in site.parts and installed.parent.resolve() in site.parents, site
    assert REPO not in site.parents, f"devbox was imported from the checkout: {site}"


def test_installed_console_script_runs_every_command(installed: Path, tmp_path: Path) -> None:
    devbox = str(installed / "devbox")
    project = tmp_path / "a project"
    project.mkdir()
    for argv in (["init", "--project", "wheelcheck"], ["validate"], ["render"], ["schema"]):
        result = _outside(installed, [devbox, *argv], project)
        assert result.returncode == 0, f"devbox {' '.join(argv)}: {result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr
    assert (project / ".devbox" / "docker-compose.yml").is_file()
    assert json.loads(_outside(installed, [devbox, "schema"], project).stdout)["type"] == "object"
    listing = _outside(installed, [devbox, "--help"], project)
    assert listing.returncode == 0, listing.stderr
    commands = _commands(listing.stdout)
    assert {"init", "validate", "render", "up", "down", "status", "ssh", "check", "doctor"} <= commands
    for command in sorted(commands):
        shown = _outside(installed, [devbox, command, "--help"], project)
        assert shown.returncode == 0 and "Usage:" in shown.stdout, f"devbox {command} --help: {shown.stderr}"


def _commands(help_text: str) -> set[str]:
    """The command names click lists under "Commands:" in `devbox --help`."""
    lines = help_text.split("Commands:", 1)[1].splitlines()
    return {line.split()[0] for line in lines if line.startswith("  ") and line.strip()}


def test_this_test_run_uses_the_installed_devbox_in_ci() -> None:
    """Under CI the console script next to this Python is a real install, not an editable one."""
    if os.environ.get("CI", "").lower() != "true":
        pytest.skip("outside CI a developer may work from `pip install -e`")
    script = Path(sys.executable).parent / "devbox"
    assert script.is_file(), f"no devbox console script beside {sys.executable}"
    where = subprocess.run([sys.executable, "-c", "import devbox; print(devbox.__file__)"], cwd="/",
                           capture_output=True, text=True, check=True, timeout=60).stdout.strip()  # fmt: skip
    assert REPO not in Path(where).resolve().parents, f"CI runs devbox from the checkout ({where}), not as installed"


def test_pipx_install_gives_a_devbox_whose_commands_work(wheel: Path, tmp_path: Path, python_module) -> None:
    """`pipx install` (an isolated environment of its own, with its dependencies) works as well."""
    pipx = python_module("pipx")
    env = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")},
           "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin"),
           "PIPX_MAN_DIR": str(tmp_path / "man")}  # fmt: skip
    installed = subprocess.run([*pipx, "install", str(wheel)], env=env, capture_output=True, text=True,
                               check=False, timeout=600)  # fmt: skip
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    devbox = str(tmp_path / "bin" / "devbox")
    project = tmp_path / "project"
    project.mkdir()
    for argv in (["init", "--project", "pipxcheck"], ["validate"], ["render"], ["doctor", "--help"]):
        result = subprocess.run([devbox, *argv], cwd=project, env=env, capture_output=True, text=True,
                                check=False, timeout=120)  # fmt: skip
        assert result.returncode == 0 and "Traceback" not in result.stderr, f"devbox {argv}: {result.stderr}"
