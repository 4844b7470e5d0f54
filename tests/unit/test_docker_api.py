"""Docker plumbing on the fake client: what a shared engine does to devbox while it looks."""

from __future__ import annotations

import docker.errors

from devbox.docker_api import list_containers

from .fake_docker import FakeDockerClient


def test_a_container_removed_while_listing_is_left_out_not_an_error():
    client = FakeDockerClient()
    kept = client.containers.add("kept", labels={"devbox.project": "lab"})
    gone = client.containers.add("gone", labels={"devbox.project": "lab"})

    def vanish() -> None:  # another user of the engine removed it after the listing
        raise docker.errors.NotFound("No such container: gone")

    gone.reload = vanish  # type: ignore[method-assign]
    assert list_containers(client, all=True, filters={"label": "devbox.project=lab"}) == [kept]
