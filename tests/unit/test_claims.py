"""Every host and image setting is claimed by every engine: mapped, or unsupported and why
(docker-py's "raise if any are left"). A new setting claimed by neither fails here, and what an
engine cannot do is refused by `validate` from that one declaration."""

from __future__ import annotations

import pytest

from devbox.engines import ENGINES, engine_class
from devbox.errors import SpecError
from devbox.spec.fields import HOST, IMAGE

from .helpers import make_spec


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_every_host_and_image_setting_is_claimed_by_the_engine(name):
    claims = engine_class(name).claims
    settings = set(HOST.keys) | set(IMAGE.keys)
    assert sorted(settings - set(claims)) == [], f"claimed by neither mapped nor unsupported on {name}"
    assert sorted(set(claims) - settings) == [], f"{name} claims settings the spec does not have"
    assert all(claim.why is None or claim.why.strip() for claim in claims.values())


@pytest.mark.parametrize(("setting", "value"), [("gpu_capabilities", ["gpu", "utility"]), ("gpu_share", True),
                                                ("ipc", "host"), ("privileged", True)])  # fmt: skip
def test_swarm_refuses_what_its_claims_say_it_cannot_do(setting, value):
    hosts = {"a": {"ssh_port": 4432, "gpus": 1, setting: value}}
    with pytest.raises(SpecError) as info:
        make_spec(engine="swarm", hosts=hosts)
    [problem] = info.value.problems
    assert problem.startswith(f"hosts.a.{setting}: not supported by swarm services")
    make_spec(engine="compose", hosts=hosts)  # compose maps it


def test_a_default_is_named_where_it_was_written_and_the_default_value_passes():
    with pytest.raises(SpecError) as info:
        make_spec(engine="swarm", defaults={"gpu_share": True})
    assert info.value.problems == ["defaults.gpu_share: not supported by swarm services: the swarm gives each GPU "
                                   "to one task (use engine: compose)"]  # fmt: skip
    make_spec(engine="swarm", defaults={"gpu_share": False, "gpu_capabilities": ["gpu"]})


def test_a_setting_with_no_effect_on_an_engine_is_noted_not_refused():
    spec = make_spec(engine="compose", hosts={"a": {"ssh_port": 4432, "node": "gpu2"}})
    assert any(note.startswith("hosts.a.node: has no effect: only a swarm places hosts") for note in spec.notes)
