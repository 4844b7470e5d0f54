"""Package and requirement layers: a delta on the last render's layers, a full install on removal."""

from __future__ import annotations

import re

from devbox.layering import LIMIT, ImageLayers, package_layers, requirement_layers, requirement_lines
from devbox.project import render_to
from devbox.render import render_dockerfile
from tests.unit.helpers import make_spec

INIT = ("net-tools", "iputils-ping", "curl", "wget", "git", "python3-pip")


def test_a_first_render_installs_the_list_in_one_layer():
    assert package_layers(INIT, ()) == (INIT,)


def test_a_package_added_anywhere_is_one_layer_after_the_ones_before():
    for edited in (("jq", *INIT), (*INIT[:3], "jq", *INIT[3:]), (*INIT, "jq")):
        assert package_layers(edited, (INIT,)) == (INIT, ("jq",))


def test_reordering_the_list_changes_no_layer():
    assert package_layers(("jq", *reversed(INIT)), (INIT, ("jq",))) == (INIT, ("jq",))


def test_removing_a_package_is_a_removal_layer_after_the_ones_before():
    assert package_layers(INIT[:-1], (INIT,)) == (INIT, ("-python3-pip",))
    wanted = ("jq", *INIT[1:])
    assert package_layers(wanted, (INIT, ("jq",))) == (INIT, ("jq",), ("-net-tools",))
    # removed and added in one edit: the removal first, then the new package
    assert package_layers(("bc", *INIT[1:]), (INIT,)) == (INIT, ("-net-tools",), ("bc",))


def test_removing_what_the_last_layers_added_drops_them():
    """The image before them is in the builder's cache: no step runs at all."""
    assert package_layers(INIT, (INIT, ("jq",))) == (INIT,)
    assert package_layers(INIT, (INIT, ("jq",), ("bc",))) == (INIT,)
    no_wget = tuple(package for package in INIT if package != "wget")
    assert package_layers(no_wget, (INIT, ("-wget",), ("jq",))) == (INIT, ("-wget",))


def test_a_package_removed_then_wanted_again_drops_its_removal():
    removed = (INIT, ("-wget",))
    assert package_layers(INIT, removed) == (INIT,)
    assert package_layers((*INIT, "jq"), (*removed, ("jq",))) == (INIT, ("jq",))
    assert package_layers(INIT, (*removed, ("jq",))) == (INIT,)


def test_a_new_version_of_a_package_removes_the_old_one_by_name():
    assert package_layers(("git=1:2.40",), (("git=1:2.39",),)) == (("git=1:2.39",), ("-git",), ("git=1:2.40",))
    # kept as it is on the next render
    layers = (("git=1:2.39",), ("-git",), ("git=1:2.40",))
    assert package_layers(("git=1:2.40",), layers) == layers


def test_removals_count_towards_the_limit():
    wanted = list(INIT)
    layers: tuple[tuple[str, ...], ...] = (INIT,)
    for number in range(LIMIT):
        wanted = [*wanted[1:], f"p{number}"]
        layers = package_layers(wanted, layers)
    assert layers == (tuple(wanted),)


def test_past_the_limit_the_layers_are_merged():
    layers: tuple[tuple[str, ...], ...] = ()
    wanted: list[str] = []
    for number in range(LIMIT + 1):
        wanted.append(f"p{number}")
        layers = package_layers(wanted, layers)
    assert layers == (tuple(wanted),)


def test_no_packages_no_layers():
    assert package_layers((), (INIT,)) == ()


def test_requirements_grow_by_whole_lists():
    first = requirement_layers(["six"], ())
    assert first == (("six",),)
    assert requirement_layers(["tomli", "six"], first) == (("six",), ("tomli", "six"))
    assert requirement_layers(["six"], (("six",), ("tomli", "six"))) == (("six",),)
    assert requirement_layers(["tomli"], (("six",), ("tomli", "six"))) == (("tomli",),)
    assert requirement_layers([], (("six",),)) == ()


def test_requirement_lines_as_pip_reads_them():
    text = "# a comment\nsix  # pinned later\n\nnumpy>=2 \\\n  ; python_version > '3'\n--trusted-host pypi.org\n"
    assert requirement_lines(text) == ["six", "numpy>=2   ; python_version > '3'", "--trusted-host pypi.org"]


def test_an_unreadable_record_is_no_earlier_layers():
    damaged = ('{"packages": [["-a", "b"]]}', '{"packages": [["a; rm -rf /"]]}', '{"packages": [["--x"]]}')
    for text in ("", "[]", '{"packages": [["a", 1]]}', '{"packages": [[]]}', "{", *damaged):
        assert ImageLayers.from_text(text) == ImageLayers()
    layers = ImageLayers((INIT, ("jq",)), (("six",),))
    assert ImageLayers.from_text(layers.to_text()) == layers


def _run_steps(dockerfile: str) -> list[str]:
    return re.findall(r"^RUN .*?(?<!\\)$", dockerfile, re.MULTILINE | re.DOTALL)


def test_an_added_package_leaves_every_earlier_step_as_it_was(tmp_path):
    """The builder's cache is keyed by each step's text and the steps before it: the edit's
    Dockerfile must start with the last one's steps, byte for byte, then add one."""
    folder = tmp_path / ".devbox"
    (tmp_path / "requirements.txt").write_text("six\n")
    image = {"base": "debian:bookworm", "packages": list(INIT), "pip_requirements": "requirements.txt"}
    spec = make_spec(tmp_path, image=image)
    before = _run_steps(render_dockerfile(spec))
    render_to(spec, folder, {})
    edited = make_spec(tmp_path, image={**image, "packages": ["jq", *INIT]})
    render_to(edited, folder, {})
    after = _run_steps((folder / "Dockerfile").read_text())
    assert after[: len(before) - 1] == before[:-1]  # setup and the six packages, then the new one
    assert "jq" in after[len(before) - 1] and "git" not in after[len(before) - 1]
    (tmp_path / "requirements.txt").write_text("six\ntomli\n")
    render_to(edited, folder, {})
    again = _run_steps((folder / "Dockerfile").read_text())
    assert again[:-1] == after and "tomli" in again[-1]
