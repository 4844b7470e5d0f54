"""Edit -> ready (issue 28): a package removed from the spec leaves the image with the packages a
fresh install of the list has, without installing the others again.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

INSTALLED = "dpkg-query -W -f '${db:Status-Status} ${Package} ${Version}\\n' | grep '^installed ' | sort"
MANUAL = "apt-mark showmanual | sort"


def _packages(stack, host="master"):
    return stack.ssh(host, INSTALLED), stack.ssh(host, MANUAL)


def test_a_removed_package_leaves_what_a_fresh_install_has(make_stack):
    """jq brings libjq1 and libonig5, which nothing else needs: all three go, wget stays."""
    edited = make_stack(hosts=1, image={"packages": ["iputils-ping", "jq", "wget"]})
    edited.devbox("up", "--yes")
    assert " jq " in edited.ssh("master", INSTALLED)
    edited.spec["image"]["packages"] = ["iputils-ping", "wget"]
    edited.write_spec()
    edited.devbox("up", "--yes")
    dockerfile = (edited.state / "Dockerfile").read_text()
    assert "        jq \\\n" in dockerfile and "apt-mark auto" in dockerfile  # the first layer kept, then a removal
    installed, manual = _packages(edited)
    for gone in ("jq", "libjq1", "libonig5"):
        assert f" {gone} " not in installed
    assert " wget " in installed
    fresh = make_stack(hosts=1, image={"packages": ["iputils-ping", "wget"]})
    fresh.devbox("up", "--yes")
    assert "apt-mark auto" not in (fresh.state / "Dockerfile").read_text()
    assert _packages(fresh) == (installed, manual)
    # wanted again: the removal goes and the image is the first one, from the builder's cache
    edited.spec["image"]["packages"] = ["iputils-ping", "jq", "wget"]
    edited.write_spec()
    edited.devbox("up", "--yes")
    assert "apt-mark auto" not in (edited.state / "Dockerfile").read_text()
    assert " libjq1 " in edited.ssh("master", INSTALLED)
