"""What validate cannot know: the engine's own process limits bound every container's."""

from __future__ import annotations

import docker.errors
import pytest
from docker.types import Ulimit

pytestmark = pytest.mark.e2e


def engine_grants(client, name: str, value: int) -> bool:
    """Ask the engine directly (not through devbox): start a container from the empty probe image
    with the limit; one the engine grants gets as far as the missing program."""
    from devbox.engines.preflight import probe_image

    image = probe_image(client)
    container = client.containers.create(image, entrypoint=["/nothing-here"], network_mode="none",
                                         ulimits=[Ulimit(name=name, soft=value, hard=value)])  # fmt: skip
    try:
        container.start()
    except docker.errors.APIError as exc:
        return "/nothing-here" in str(exc.explanation)
    finally:
        container.remove(force=True)
    return True


def test_a_ulimit_the_engine_cannot_give_is_refused_before_anything_starts(make_stack, docker_client):
    stack = make_stack(1, defaults={"ulimits": {"nice": 40}})
    result = stack.devbox("up", check=False)
    if engine_grants(docker_client, "nice", 40):
        assert result.returncode == 0, result.stderr
        container = stack.container(docker_client, "master")
        assert container.exec_run(["sh", "-c", "ulimit -e"]).output.decode().strip() == "40"
        return
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: defaults.ulimits.nice: the engine cannot give 40/40 (")
    assert stack.container_or_none(docker_client, "master") is None
    doctor = stack.devbox("doctor", check=False)
    assert "FAIL  ulimits" in doctor.stdout
