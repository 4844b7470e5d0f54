"""Issue 14, "how to prove it", on the real engine: a sample of the specs `validate` accepts in the
hostile-input property tests goes through `up`, which must never meet an engine refusal.

A small fixed number per run (SAMPLE accepted specs, from up to 100 times as many draws), drawn from a seed that is printed (and named in every
failure): DEVBOX_SAMPLE_SEED=<seed> replays a run. What this machine decides, and validate cannot
know, is made tame: the local base image, no extra packages (apt names are not checked offline),
free ports on 127.0.0.1, small limits, a UID in the usual range."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
import yaml
from hypothesis import Phase, given, seed, settings

from devbox.engines import spec_rules
from devbox.errors import SpecError
from devbox.spec import build_spec

from ..unit.test_hostile import accepted_specs
from .conftest import Stack, new_project_name

pytestmark = pytest.mark.e2e

SAMPLE = 2
SEED = int(os.environ.get("DEVBOX_SAMPLE_SEED") or random.SystemRandom().randrange(2**32))
print(f"tests/e2e/test_accepted_up.py: DEVBOX_SAMPLE_SEED={SEED}")  # noqa: T201 - the seed to replay with


def for_this_machine(data: dict[str, Any], base_image: str, ports: list[int], name: str) -> dict[str, Any]:
    image = {**data["image"], "base": base_image, "packages": [], "docker_cli": False}
    if image.get("uid") is not None:
        image["uid"] = 1000 + image["uid"] % 59000
    hosts = {host: {**settings_, "ssh_port": port, "bind_address": "127.0.0.1"}
             for (host, settings_), port in zip(data["hosts"].items(), ports, strict=False)}  # fmt: skip
    return {**data, "project": f"{name}-{data['project']}"[:63], "image": image, "hosts": hosts,
            "defaults": {"limits": {"cpus": 0.5, "memory": "256m"}}}  # fmt: skip


@pytest.fixture(scope="module")
def seen() -> list[str]:
    return []


@seed(SEED)
@settings(max_examples=100 * SAMPLE, deadline=None, database=None, phases=[Phase.generate])
@given(data=accepted_specs())
def test_a_sample_of_accepted_specs_comes_up(data, tmp_path_factory, base_image, free_port, seen):
    if len(seen) >= SAMPLE:
        return  # the sample is complete: the other draws only make sure enough were accepted
    name = new_project_name()
    spec = for_this_machine(data, base_image, [free_port() for _ in range(3)], name)
    directory = tmp_path_factory.mktemp(name)
    try:
        build_spec(spec, directory, rules=spec_rules)
    except SpecError:
        return  # refused by validate: nothing to bring up
    stack = Stack(directory, spec["project"], spec)
    (directory / "devbox.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    seen.append(spec["project"])
    try:
        result = stack.devbox("up", check=False, timeout=900)
        assert result.returncode == 0, (f"seed {SEED}: `up` of an accepted spec failed:\n{result.stdout}\n"
                                        f"{result.stderr}\nspec:\n{yaml.safe_dump(spec)}")  # fmt: skip
    finally:
        stack.devbox("down", "--volumes", "--yes", check=False, timeout=300)


def test_the_sample_was_complete(seen):
    assert len(seen) == SAMPLE, f"seed {SEED}: only {len(seen)} of the draws were accepted specs"
