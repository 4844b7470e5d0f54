"""A host setting is declared once, on the Host model (devbox.spec.host_model), and the settings
table is derived from it: a Host attribute with no declaration, a table key with no attribute or
a rule-built attribute with no rule cannot drift apart unnoticed."""

from __future__ import annotations

import dataclasses

from devbox.spec import DEFAULTS, HOST, HOST_ONLY, HOST_SETTINGS, Host, allowed_keys
from devbox.spec.host_model import host_settings
from devbox.spec.hosts import RULES

from .helpers import make_spec

NOT_SETTINGS = {"name", "origins"}  # bookkeeping: the host's name (its key under hosts:) and origins


def test_every_host_attribute_is_a_declared_setting():
    undeclared = [item.name for item in dataclasses.fields(Host)
                  if item.name not in NOT_SETTINGS and "setting" not in item.metadata]  # fmt: skip
    assert undeclared == [], "declare each with setting(...) in devbox/spec/host_model.py"


def test_every_table_key_is_declared_on_a_host_attribute():
    declared = {item.name for item in dataclasses.fields(Host)}
    settings = {name: setting for name, setting, _ in host_settings()}
    owners = {entry.name: name for name, setting in settings.items() for entry in setting.fields(name)}
    assert list(HOST.keys) == [*HOST_SETTINGS, *HOST_ONLY] == list(allowed_keys("hosts.a"))
    assert list(DEFAULTS.keys) == list(HOST_SETTINGS) == list(allowed_keys("defaults"))
    assert set(HOST.keys) == set(owners)
    assert all(owner in declared for owner in owners.values())
    for key, owner in owners.items():  # a key folded into another attribute is read by that attribute's rule
        if key != owner:
            assert settings[owner].model is None, key


def test_every_rule_built_attribute_has_its_rule_and_every_rule_its_attribute():
    built_by_rule = {name for name, setting, _ in host_settings() if setting.model is None}
    assert set(RULES) == built_by_rule


def test_only_a_host_has_its_host_only_settings():
    assert {name for name, setting, _ in host_settings() if setting.host_only} == set(HOST_ONLY) == {
        "ssh_port", "hostname"}  # fmt: skip


def test_a_host_that_sets_nothing_has_the_declared_defaults():
    # the engines tell a setting that is set from one that is not by comparing with Host's defaults
    host = make_spec(hosts={"a": {"ssh_port": 4432}}).hosts[0]
    assert host == Host(name="a", ssh_port=4432, hostname="a")
