"""The JSON Schema of devbox.yaml: generated from the settings table, shipped, and faithful.

Faithful both ways where a schema can be: every spec `validate` accepts in this suite (the golden
specs, what `init` writes, the test specs, hypothesis' accepted specs) is accepted by the schema,
and the unknown keys and wrong types `validate` rejects are rejected by it too. Rules a schema
cannot say (a bind source that must exist, a port used twice) stay with `validate`.

The package ships the schema as devbox/schema/devbox.schema.json. After changing a setting,
refresh it and review the diff:

    python -m devbox schema > devbox/schema/devbox.schema.json
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from hypothesis import given, settings

from devbox.cli import cli
from devbox.errors import SpecError
from devbox.scaffold import init_project
from devbox.spec import HOST_ONLY, HOST_SETTINGS, IMAGE_KEYS, NETWORK_KEYS, TOP_KEYS, build_spec, parse_yaml
from devbox.spec.schema import SCHEMA_FILE, SPEC_SCHEMA_NAME, json_schema, modeline, reference, schema_text

from .helpers import spec_data, with_value
from .test_hostile import HYPOTHESIS, accepted_specs, hostile_specs

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
README = Path(__file__).resolve().parents[2] / "README.md"
VALIDATOR = jsonschema.Draft7Validator(json_schema())


def schema_accepts(data: Any) -> bool:
    return VALIDATOR.is_valid(data)


def validate_accepts(data: Any, directory: Path = Path("/nonexistent-devbox-dir")) -> bool:
    try:
        build_spec(copy.deepcopy(data), directory)
    except SpecError:
        return False
    return True


def test_the_shipped_schema_is_the_generated_one():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "refresh it: python -m devbox schema > devbox/schema/devbox.schema.json"
    )


def test_the_readme_lists_every_setting_from_the_table():
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- settings: devbox.spec.schema.reference() -->\n", 1)[1].split("<!-- end", 1)[0]
    assert block == reference(), "paste devbox.spec.schema.reference() into README's settings block"


def test_the_schema_is_a_valid_draft_7_schema_with_a_doc_for_every_setting():
    schema = json_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert list(schema["properties"]) == list(TOP_KEYS)
    assert list(schema["properties"]["network"]["properties"]) == list(NETWORK_KEYS)
    assert list(schema["properties"]["image"]["properties"]) == list(IMAGE_KEYS)
    assert list(schema["properties"]["defaults"]["properties"]) == list(HOST_SETTINGS)
    host = schema["properties"]["hosts"]["additionalProperties"]
    assert list(host["properties"]) == [*HOST_SETTINGS, *HOST_ONLY]
    for section in (schema, schema["properties"]["image"], host):
        assert all(prop["description"] for prop in section["properties"].values())


def golden_specs() -> dict[str, Path]:
    return {path.parent.name: path for path in sorted(GOLDEN.glob("*/devbox.yaml"))}


@pytest.mark.parametrize("case", sorted(golden_specs()))
def test_the_schema_accepts_the_golden_specs(case):
    path = golden_specs()[case]
    data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    assert validate_accepts(data, path.parent)
    VALIDATOR.validate(data)


def test_the_schema_accepts_what_init_writes_and_init_points_editors_at_it(tmp_path):
    written = init_project(tmp_path, "lab", force=False)
    text = (tmp_path / "devbox.yaml").read_text(encoding="utf-8")
    assert modeline() in text.splitlines()
    assert tmp_path / SPEC_SCHEMA_NAME in written
    assert (tmp_path / SPEC_SCHEMA_NAME).read_text(encoding="utf-8") == schema_text()
    VALIDATOR.validate(parse_yaml(text, "devbox.yaml"))


# Specs the spec tests accept (tests/unit/test_spec.py, test_swarm.py): every form of every setting.
ACCEPTED = [
    spec_data(),
    {"project": "lab", "hosts": {"a": {"ssh_port": 2222}}},
    spec_data(engine="swarm", defaults={"bind_address": "0.0.0.0"}, hosts={"master": {
        "ssh_port": 4432, "hostname": "boss", "gpus": 2, "restart": "on-failure:3", "cap_add": ["SYS_PTRACE"],
        "limits": {"cpus": 1.5, "memory": "2g"}, "reservations": {"cpus": 0.5, "memory": "1g"},
        "volumes": ["data:/data:ro"], "environment": {"A": "$literal"}, "shm_size": "512m"}}),
    spec_data(defaults={"limits": {"cpus": 8, "memory": "16000M"}, "gpus": 1, "environment": {"A": "1"}},
              hosts={"master": {"ssh_port": 4432, "limits": {"memory": "64000M"}, "environment": {"B": 2}},
                     "worker": {"ssh_port": 4433, "gpus": 0}}),
    spec_data(hosts={"a": {"ssh_port": 1, "limits": {"cpus": 2.7}, "environment": {"OMP_NUM_THREADS": "1"}},
                     "b": {"ssh_port": 2, "limits": {"cpus": 0.5}}, "c": {"ssh_port": 3}}),
    *[spec_data(hosts={"a": {"ssh_port": 1, "gpus": gpus}})
      for gpus in (0, 2, "all", "none", [0, "1"], ["GPU-6f2b1c3d-aaaa-bbbb"])],
    spec_data(defaults={"gpus": "all"}, gpu="off"),
    spec_data(defaults={"gpus": "all"}, gpu=False),
    spec_data(hosts={"a": {"ssh_port": 1, "gpus": 1, "gpu_capabilities": "compute,utility"}}),
    spec_data(image={"base": "debian:bookworm", "uid": "auto", "gid": 1500, "docker_cli": True, "shell": "bash"}),
    spec_data(hosts={"a": {"ssh_port": "22", "limits": {"memory": "1g", "cpus": "2"}, "ulimits": {"nofile": 1024},
                           "volumes": [{"source": "data", "target": "/data"}, "cache:/cache:rw"], "restart": False,
                           "ipc": "private", "cpuset": 0, "devices": ["/dev/null"], "password_auth": True,
                           "password_env": {"developer": "PW"}, "root_login": True}}),
    spec_data(network={"name": "net", "driver": "bridge", "subnet": None}, image=None, defaults=None),
    # validate normalises these spellings; the schema must not refuse them
    spec_data(hosts={"a": {"ssh_port": 1, "cap_add": ["sys_ptrace", "CAP_NET_ADMIN"], "shm_size": " 1g "}}),
]  # fmt: skip


@pytest.mark.parametrize("data", ACCEPTED, ids=range(len(ACCEPTED)))
def test_the_schema_accepts_the_specs_the_tests_accept(data):
    assert validate_accepts(data)
    VALIDATOR.validate(data)


@settings(HYPOTHESIS, max_examples=150)
@given(accepted_specs())
def test_the_schema_accepts_the_most_awkward_accepted_specs(data):
    if validate_accepts(data):
        VALIDATOR.validate(data)


@HYPOTHESIS
@given(hostile_specs())
def test_whatever_validate_accepts_the_schema_accepts(data):
    if validate_accepts(data):
        VALIDATOR.validate(data)


REJECTED = [
    # unknown keys, at every level
    (("hostz",), {}), (("network", "mode"), "x"), (("image", "packages_extra"), []),
    (("defaults", "ssh_port"), 22), (("defaults", "memroy"), "1g"), (("hosts", "master", "memory"), "1g"),
    (("hosts", "master", "limits"), {"cpu": 2}), (("hosts", "master", "reservations"), {"mem": "1g"}),
    (("hosts", "master", "volumes"), [{"source": "a", "target": "/a", "mode": "ro"}]),
    (("hosts", "master", "ulimits"), {"nofile": {"soft": 1, "hard": 2, "max": 3}}),
    (("hosts", "master", "ulimits"), {"memlok": -1}), (("hosts", "Bad_Name"), {"ssh_port": 1}),
    # wrong types and values
    (("version",), "1"), (("version",), 2), (("project",), ["lab"]), (("project",), "Big Lab"), (("project",), True),
    (("engine",), "k8s"), (("gpu",), "maybe"), (("network",), "net"), (("network", "driver"), "overlay"),
    (("image",), ["debian"]), (("image", "packages"), "vim"), (("image", "packages"), ["rm -rf /"]),
    (("image", "shell"), "fish"), (("image", "docker_cli"), "yes"), (("image", "uid"), "me"),
    (("image", "extra_lines"), "RUN x"), (("hosts",), ["master"]), (("hosts",), {}),
    (("hosts", "master", "ssh_port"), "ssh"), (("hosts", "master", "ssh_port"), 70000),
    (("hosts", "master", "ssh_port"), None), (("hosts", "master"), None), (("hosts", "master", "limits"), "8"),
    (("hosts", "master", "limits"), {"memory": "16GB"}), (("hosts", "master", "limits"), {"cpus": "eight"}),
    (("hosts", "master", "gpus"), "many"), (("hosts", "master", "gpus"), 65), (("hosts", "master", "gpus"), ["zero"]),
    (("hosts", "master", "gpu_capabilities"), ["warp"]), (("hosts", "master", "bind_address"), "everywhere"),
    (("hosts", "master", "volumes"), "data:/data"), (("hosts", "master", "volumes"), ["data:relative"]),
    (("hosts", "master", "volumes"), [3]), (("hosts", "master", "environment"), {"BAD-KEY": "x"}),
    (("hosts", "master", "environment"), {"A": {"b": 1}}), (("hosts", "master", "environment"), {"A": None}),
    (("hosts", "master", "environment"), ["A=1"]), (("hosts", "master", "restart"), "sometimes"),
    (("hosts", "master", "root_login"), "yes"), (("hosts", "master", "password_auth"), None),
    (("hosts", "master", "authorized_keys"), "ssh-ed25519 AAAA"), (("hosts", "master", "password_env"), {"x y": "PW"}),
    (("hosts", "master", "password_env"), {"developer": 1}), (("hosts", "master", "shm_size"), "lots"),
    (("hosts", "master", "ulimits"), {"nofile": "many"}), (("hosts", "master", "devices"), ["/etc/passwd"]),
    (("hosts", "master", "cap_add"), ["FLY"]), (("hosts", "master", "ipc"), "none"),
    (("hosts", "master", "cpuset"), "all"), (("hosts", "master", "hostname"), "x_y"),
    (("hosts", "master", "privileged"), 1), (("hosts", "master", "docker_socket"), "no"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value"), REJECTED, ids=lambda v: repr(v)[:40])
def test_the_schema_rejects_the_unknown_keys_and_wrong_types_validate_rejects(path, value):
    data = with_value(path, value)
    assert not validate_accepts(data)
    assert not schema_accepts(data)


def test_the_schema_command_prints_or_writes_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    printed = CliRunner().invoke(cli, ["schema"], catch_exceptions=False)
    assert printed.exit_code == 0 and json.loads(printed.output) == json_schema()
    written = CliRunner().invoke(cli, ["-f", "lab/devbox.yaml", "schema", "--write"], catch_exceptions=False)
    assert written.exit_code == 0 and written.output == f"wrote {Path('lab') / SPEC_SCHEMA_NAME}\n"
    assert (tmp_path / "lab" / SPEC_SCHEMA_NAME).read_text(encoding="utf-8") == printed.output
