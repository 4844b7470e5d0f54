"""Build secrets: what validate says of them (one line each, before any build), where they go in
the Dockerfile and docker-compose.yml, and that no value is ever in a rendered file."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from devbox.cli import cli
from devbox.errors import SpecError
from devbox.render import compose_data, render_dockerfile
from devbox.spec.rules import build_secret_problems

from .helpers import make_spec

VALUE = "s3cr3t-value-never-rendered"


def image(**settings):
    return {"base": "debian:bookworm", "packages": ["git"], **settings}


def problems(**settings) -> list[str]:
    with pytest.raises(SpecError) as info:
        make_spec(image=image(**settings))
    return info.value.problems


def test_an_unknown_secret_in_extra_lines_is_one_line():
    assert problems(extra_lines=["RUN --mount=type=secret,id=nope cat /run/secrets/nope"]) == [
        "image.extra_lines[0]: mounts secret 'nope', which image.build_secrets does not define "
        "(add it there, or correct the id)"
    ]


def test_a_secret_no_step_uses_is_one_line():
    assert problems(build_secrets={"token": {"env": "TOKEN"}}) == [
        "image.build_secrets.token: no build step uses it (give it as: netrc, pip_config, ..., or mount it "
        "in extra_lines: RUN --mount=type=secret,id=token ...)"
    ]
    assert problems(build_secrets={"conf": {"env": "X", "as": "pip_config"}}) == [
        "image.build_secrets.conf: no build step uses it: as: pip_config is for the pip step, and "
        "image.pip_requirements is empty (remove the secret, or add what uses it)"
    ]
    assert problems(build_ssh=True) == [
        "image.build_ssh: no build step uses the SSH agent (set image.pip_requirements, or mount it in "
        "extra_lines: RUN --mount=type=ssh ...)"
    ]


def test_a_source_is_one_of_env_or_file():
    assert problems(build_secrets={"a": {"env": "X", "file": "y"}}) == [
        "image.build_secrets.a: give exactly one source: env: VARIABLE or file: PATH"]
    assert problems(build_secrets={"a": {"env": "X", "as": "pip"}})[0].startswith(
        "image.build_secrets.a.as: 'pip' is not a use of a build secret")
    assert problems(build_secrets={"a,b": {"env": "X"}}) == [
        "image.build_secrets.a,b: is not a secret name (letters, digits, _ and -)"]


def test_missing_variable_file_and_agent_are_one_line_each(tmp_path):
    spec = make_spec(tmp_path, image=image(
        build_secrets={"tok": {"env": "DEVBOX_TEST_TOKEN"}, "netrc": {"file": "netrc", "as": "netrc"}},
        extra_lines=["RUN --mount=type=secret,id=tok --mount=type=ssh true"], build_ssh=True))
    assert build_secret_problems(spec.image, {}) == [
        f"image.build_secrets.netrc.file: '{tmp_path / 'netrc'}' is not a readable file (create it, or correct "
        "the path: relative paths start at the spec)",
        "image.build_secrets.tok.env: environment variable DEVBOX_TEST_TOKEN is not set (export it before "
        "`devbox up`; its value is read at build time only)",
        "image.build_ssh: no SSH agent (SSH_AUTH_SOCK is not set: start one with `eval $(ssh-agent)` and "
        "`ssh-add` your key)",
    ]
    (tmp_path / "netrc").write_text("machine x login a password b\n")
    assert build_secret_problems(spec.image, {"DEVBOX_TEST_TOKEN": VALUE, "SSH_AUTH_SOCK": "/s"}) == []


def test_validate_exits_2_before_any_build(tmp_path, monkeypatch):
    monkeypatch.delenv("DEVBOX_TEST_TOKEN", raising=False)
    spec = {"project": "lab", "image": image(build_secrets={"tok": {"env": "DEVBOX_TEST_TOKEN"}},
                                             extra_lines=["RUN --mount=type=secret,id=tok true"]),
            "hosts": {"a": {"ssh_port": 2222}}}  # fmt: skip
    (tmp_path / "devbox.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["validate"])
    assert result.exit_code == 2
    assert "image.build_secrets.tok.env: environment variable DEVBOX_TEST_TOKEN is not set" in result.output
    monkeypatch.setenv("DEVBOX_TEST_TOKEN", VALUE)
    result = CliRunner().invoke(cli, ["validate"])
    assert result.exit_code == 0, result.output
    assert "not when its value does" in result.output and VALUE not in result.output


def test_secrets_reach_their_steps_by_name_and_compose_by_source(tmp_path):
    (tmp_path / "requirements.txt").write_text("private-pkg\n")
    spec = make_spec(tmp_path, image=image(
        pip_requirements="requirements.txt", build_ssh=True,
        build_secrets={"idx": {"env": "IDX", "as": "pip_index_url"}, "netrc": {"file": "n", "as": "netrc"}}))
    dockerfile = render_dockerfile(spec)
    assert "--mount=type=secret,id=netrc,target=/etc/apt/auth.conf.d/devbox-netrc.conf,required=true" in dockerfile
    assert "--mount=type=secret,id=netrc,target=/root/.netrc,required=true" in dockerfile
    assert "--mount=type=ssh,required=true \\\n    printf" in dockerfile
    assert '&& PIP_INDEX_URL="$(cat /run/secrets/idx)" PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip' in dockerfile
    data = compose_data(spec, "tag:1")
    build = data["services"]["master"]["build"]
    assert build["secrets"] == [{"source": "build.idx", "target": "idx"}, {"source": "build.netrc", "target": "netrc"}]
    assert build["ssh"] == ["default"] and "build" not in data["services"]["worker"]
    assert data["secrets"]["build.idx"] == {"environment": "IDX"}
    assert data["secrets"]["build.netrc"] == {"file": str(tmp_path / "n")}


def test_every_layer_of_a_step_mounts_its_secrets(tmp_path):
    """Packages and requirements come in layers (devbox.layering): each RUN of a step that uses a
    secret mounts it, the layers the last render kept as well as the new one."""
    from devbox.layering import ImageLayers

    (tmp_path / "requirements.txt").write_text("private-pkg\nother-pkg\n")
    spec = make_spec(tmp_path, image=image(
        packages=["git", "curl"], pip_requirements="requirements.txt", build_ssh=True,
        build_secrets={"idx": {"env": "IDX", "as": "pip_index_url"}, "apt": {"file": "a", "as": "apt_source"}}))
    layers = ImageLayers(packages=(("git",), ("curl",)), requirements=(("private-pkg",), ("private-pkg", "other-pkg")))
    dockerfile = render_dockerfile(spec, layers)
    apt_mount = "--mount=type=secret,id=apt,target=/etc/apt/sources.list.d/devbox-apt.list,required=true"
    assert dockerfile.count(apt_mount) == 2
    assert dockerfile.count("--mount=type=ssh,required=true") == 2
    assert dockerfile.count('PIP_INDEX_URL="$(cat /run/secrets/idx)"') == 2


def test_build_secrets_never_recreate_a_host(tmp_path):
    """What builds the image is outside the config hash: a new source recreates no container."""
    plain = compose_data(make_spec(image=image(extra_lines=["RUN true"])), "tag:1")
    secret = compose_data(make_spec(image=image(build_secrets={"t": {"env": "T"}},
                                                extra_lines=["RUN --mount=type=secret,id=t true"])), "tag:1")
    labels = [d["services"]["master"]["labels"]["devbox.config-hash"] for d in (plain, secret)]
    assert labels[0] == labels[1]


def test_a_value_is_in_no_rendered_file(tmp_path, monkeypatch):
    from devbox.render import render_project

    from .helpers import fake_material

    (tmp_path / "netrc").write_text(f"machine x login a password {VALUE}\n")
    monkeypatch.setenv("TOKEN", VALUE)
    spec = make_spec(tmp_path, image=image(build_secrets={"tok": {"env": "TOKEN"}, "n": {"file": "netrc", "as": "netrc"}},
                                           extra_lines=["RUN --mount=type=secret,id=tok true"]))  # fmt: skip
    for file in render_project(spec, fake_material(spec)).files:
        assert VALUE not in file.content, file.path


def test_ids_mounted_in_extra_lines_are_found():
    from devbox.spec.rules import extra_line_mounts, secret_id

    mounts = extra_line_mounts("RUN --mount=type=secret,target=/x/tok --mount=type=cache,target=/c true")
    assert [secret_id(m) for m in mounts] == ["tok", None]


def test_a_new_value_keeps_the_image_and_a_new_use_builds_one(tmp_path, monkeypatch):
    """The image tag names what the build is made of (the Dockerfile names secrets, never their
    values): a new token alone builds nothing, a change to a step that uses it builds again."""
    from devbox.render import render_project

    from .helpers import fake_material

    def tag(line: str = "RUN --mount=type=secret,id=tok true") -> str:
        spec = make_spec(tmp_path, image=image(build_secrets={"tok": {"env": "TOKEN"}}, extra_lines=[line]))
        return render_project(spec, fake_material(spec)).image_tag

    monkeypatch.setenv("TOKEN", VALUE)
    first = tag()
    monkeypatch.setenv("TOKEN", VALUE + "-renewed")
    assert tag() == first
    assert tag("RUN --mount=type=secret,id=tok test -s /run/secrets/tok") != first


def test_a_password_in_a_requirement_url_is_refused(tmp_path):
    """Requirement lines are written in the Dockerfile: a token there would be in the history."""
    (tmp_path / "requirements.txt").write_text(
        "plain==1\nprivate @ https://token:abc123@git.example.com/p.tar.gz\n"
        "ok @ git+ssh://git@git.example.com:22/team/tool.git\nvar @ https://u:${PIP_TOKEN}@example.com/p.whl\n")
    with pytest.raises(SpecError) as info:
        make_spec(tmp_path, image=image(pip_requirements="requirements.txt"))
    assert info.value.problems == [
        "image.pip_requirements: requirement 2 has a password in its URL, which would be in the Dockerfile and the "
        "image's history (give the index as a build secret, as: pip_index_url, or the password in a netrc secret)"
    ]
    assert "abc123" not in str(info.value)
