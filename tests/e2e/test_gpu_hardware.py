"""GPUs and hardware on a real engine without a GPU: what reaches the engine and the container."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from .conftest import copy_image

pytestmark = pytest.mark.e2e

SESSION_VARIABLES = {"HOME", "HOSTNAME", "PWD", "OLDPWD", "SHLVL", "TERM", "USER", "LOGNAME", "SHELL", "MAIL", "_",
                     "SSH_CLIENT", "SSH_CONNECTION", "SSH_TTY", "MOTD_SHOWN"}  # fmt: skip


def init_environment(container) -> dict[str, str]:
    """The environment the container started with (where the engine puts NVIDIA_*)."""
    from devbox.checks import start_environment

    return start_environment(container)


@pytest.mark.usefixtures("hook_double")  # indexes and UUIDs no real machine has
def test_every_gpu_form_reaches_the_engine_and_the_container(make_stack, docker_client):
    stack = make_stack(["one", "every", "ids", "pair"], defaults={"limits": {"cpus": 0.25, "memory": "192m"},
                                                                  "reservations": {"memory": "64m"}})  # fmt: skip
    hosts = stack.spec["hosts"]
    hosts["one"]["gpus"] = 1
    hosts["every"].update(gpus="all", gpu_share=True)  # all of them, beside hosts that hold some
    hosts["ids"]["gpus"] = [0, "GPU-6f2b1c3d-1111-2222-3333-444455556666"]
    hosts["pair"].update(gpus=2, gpu_capabilities="compute,utility")
    stack.write_spec()
    stack.devbox("up")
    # A count is GPUs of the host's own (by index here: no nvidia-smi), after the pinned ones.
    expected = {
        "one": ({"Count": 0, "DeviceIDs": ["1"], "Capabilities": [["gpu"]]}, "1"),
        "every": ({"Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]]}, "all"),
        "ids": ({"Count": 0, "DeviceIDs": ["0", "GPU-6f2b1c3d-1111-2222-3333-444455556666"],
                 "Capabilities": [["gpu"]]}, "0,GPU-6f2b1c3d-1111-2222-3333-444455556666"),  # fmt: skip
        "pair": ({"Count": 0, "DeviceIDs": ["2", "3"], "Capabilities": [["compute", "utility"]]}, "2,3"),
    }
    for host, (request, visible) in expected.items():
        container = stack.container(docker_client, host)
        (applied,) = container.attrs["HostConfig"]["DeviceRequests"]
        assert applied["Driver"] == "nvidia"
        assert {key: applied[key] for key in request} == request, host
        env = init_environment(container)
        assert env["NVIDIA_VISIBLE_DEVICES"] == visible, host
        # SSH sessions see it too (sshd would otherwise start them with a clean environment)
        assert stack.ssh(host, "printenv NVIDIA_VISIBLE_DEVICES").strip() == visible
    assert init_environment(stack.container(docker_client, "pair"))["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    check = stack.devbox("check", check=False)
    assert "PASS  pair       gpu request" in check.stdout and "NVIDIA_VISIBLE_DEVICES=2,3" in check.stdout
    assert "SKIP  pair       nvidia-smi: no nvidia-smi in the container" in check.stdout
    assert check.returncode == 0, check.stdout


def test_engine_without_nvidia_runtime_fails_preflight_and_no_gpu_runs(make_stack, docker_client, engine_without_gpu):
    stack = make_stack(1, defaults={"gpus": 1})
    stack.devbox("render")
    # the image the spec renders to, built on the main engine and copied over (no registry here)
    compose = yaml.safe_load((stack.state / "docker-compose.yml").read_text())
    tag = compose["services"]["master"]["image"]
    stack.devbox("--no-gpu", "up")
    stack.devbox("down")
    copy_image(docker_client, engine_without_gpu, tag)

    env = {"DOCKER_HOST": engine_without_gpu}
    refused = stack.devbox("up", env=env, check=False)
    assert refused.returncode == 1
    assert "hosts master want GPUs but the engine has no NVIDIA runtime" in refused.stderr
    assert "NVIDIA Container Toolkit" in refused.stderr and "--no-gpu" in refused.stderr
    doctor = stack.devbox("doctor", env=env, check=False)
    assert doctor.returncode == 1 and "FAIL  gpus       runtime" in doctor.stdout

    cpu_only = stack.devbox("--no-gpu", "up", env=env)
    assert "ok" in cpu_only.stdout
    assert stack.ssh("master", "echo cpu-only").strip() == "cpu-only"
    stack.devbox("--no-gpu", "down", env=env)


def test_hardware_settings_apply_inside_running_containers(make_stack, docker_client, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 4321, 4322)  # the host user's folder, as on a real machine
    stack = make_stack(1, image={"uid": 4321, "gid": 4322}, defaults={
        "limits": {"cpus": 1.5, "memory": "512m"}, "shm_size": "300m", "cpuset": "0",
        # memlock: -1 (unlimited) is what RDMA wants, but no engine can grant more than its own
        # hard limit, and this one was not started by systemd with LimitMEMLOCK=infinity.
        "ulimits": {"memlock": 4 * 1024**2, "nofile": {"soft": 2048, "hard": 4096}},
        "devices": ["/dev/null:/dev/fake0"], "cap_add": ["SYS_PTRACE"],
        "environment": {"MKL_NUM_THREADS": "3", "PROJECT_NOTE": "kept"},
        "volumes": [f"{shared}:/shared"],
    })  # fmt: skip
    stack.devbox("up")
    container = stack.container(docker_client, "master")

    def run(*argv: str) -> str:
        result = container.exec_run(list(argv))
        assert result.exit_code == 0, result.output
        return result.output.decode().strip()

    env = init_environment(container)
    assert env["OMP_NUM_THREADS"] == "1" and env["OPENBLAS_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "3"
    assert int(run("df", "-B1", "--output=size", "/dev/shm").split()[-1]) == 300 * 1024**2
    assert run("sh", "-c", "ulimit -l") == "4096"  # KiB
    assert run("sh", "-c", "ulimit -n; ulimit -Hn").split() == ["2048", "4096"]
    run("test", "-c", "/dev/fake0")
    cap_eff = int(re.search(r"CapEff:\s+([0-9a-f]+)", run("cat", "/proc/1/status")).group(1), 16)
    assert cap_eff & (1 << 19), "SYS_PTRACE (bit 19) missing"
    assert run("nproc") == "1"  # cpuset 0
    # the user inside has the requested UID/GID: files in bind mounts match on both sides
    stack.ssh("master", "touch /shared/made-inside")
    made = os.stat(shared / "made-inside")
    assert (made.st_uid, made.st_gid) == (4321, 4322)
    # SSH sessions see the same environment as the container's main process
    over_ssh = dict(line.split("=", 1) for line in stack.ssh("master", "env").splitlines() if "=" in line)
    wanted = {k: v for k, v in env.items() if k not in SESSION_VARIABLES}
    assert {k: over_ssh.get(k) for k in wanted} == wanted
    check = stack.devbox("check")
    assert "thread variables: MKL_NUM_THREADS=3" in check.stdout and "FAIL" not in check.stdout


def test_uid_auto_takes_the_invoking_users_id(make_stack, docker_client):
    stack = make_stack(1, image={"uid": "auto", "gid": "auto"})
    stack.devbox("up", env={"SUDO_UID": "2345", "SUDO_GID": "2346"})
    assert stack.ssh("master", "id -u; id -g").split() == ["2345", "2346"]
