"""Issue 29, the smaller cases, in their pure parts: the terminal question, an empty credentials
file, a host the spec dropped in `status`, a GPU the machine lacks, a damaged ledger read, exec's user."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from devbox import cli as cli_module
from devbox.cli import cli
from devbox.errors import PreflightError, UsageError
from devbox.gpus import LEDGER_FILE, Assignment, Gpu, Ledger, Machine, read_ledger
from devbox.operations import gpu_devices, orphan_status
from devbox.state import Credentials

from .fake_docker import FakeDockerClient


def _answering(monkeypatch: pytest.MonkeyPatch, *answers: Any) -> list[str]:
    asked: list[str] = []
    pending = list(answers)

    def fake_input(prompt: str = "") -> str:
        asked.append(prompt)
        answer = pending.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return str(answer)

    monkeypatch.setattr(builtins, "input", fake_input)
    return asked


def test_ctrl_c_at_the_question_goes_on_as_an_interrupt_not_an_abort(monkeypatch):
    """click.confirm turned ^C into Abort ("Aborted!", exit 1); the CLI turns KeyboardInterrupt
    into 130 after the host states are said."""
    _answering(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        cli_module._ask("go on?")


def test_the_question_is_no_by_default_and_at_the_end_of_input(monkeypatch):
    asked = _answering(monkeypatch, "", EOFError(), "maybe", "YES", "n")
    assert cli_module._ask("go on?") is False
    assert cli_module._ask("go on?") is False
    assert cli_module._ask("go on?") is True  # "maybe" is asked again
    assert cli_module._ask("go on?") is False
    assert asked[0] == "go on? [y/N]: " and len(asked) == 5


def test_down_volumes_without_a_terminal_refuses_before_anything(tmp_path):
    (tmp_path / "devbox.yaml").write_text("project: lab\nimage: {base: debian:bookworm}\nhosts: {a: {ssh_port: 4432}}\n")
    result = CliRunner().invoke(cli, ["-f", str(tmp_path / "devbox.yaml"), "down", "--volumes"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: down --volumes deletes the hosts' homes and volumes, and there is no terminal to ask: pass --yes "
        "to delete them"]  # fmt: skip


def test_exec_takes_root_or_a_user_not_both(tmp_path):
    (tmp_path / "devbox.yaml").write_text("project: lab\nimage: {base: debian:bookworm}\nhosts: {a: {ssh_port: 4432}}\n")
    result = CliRunner().invoke(cli, ["-f", str(tmp_path / "devbox.yaml"), "exec", "--root", "-u", "x", "a", "true"])
    assert result.exit_code == 2 and "pass --root or -u USER, not both" in result.output
    helped = CliRunner().invoke(cli, ["exec", "--help"]).output
    assert "login user" in helped and "--root" in helped and "/root" in helped


@pytest.mark.parametrize("text", ["", "\n", "# devbox credentials: the passwords of your hosts' accounts.\n"])
def test_an_empty_credentials_file_is_damaged(tmp_path: Path, text: str):
    (tmp_path / "credentials.yaml").write_text(text)
    with pytest.raises(UsageError, match=r"credentials.yaml: empty \(cut short\?\); restore it from a copy, or "
                                         r"remove it to generate new passwords"):  # fmt: skip
        Credentials.load(tmp_path)


def test_no_credentials_file_is_no_passwords_yet(tmp_path: Path):
    assert Credentials.load(tmp_path).data == {}


def test_a_host_the_spec_dropped_is_shown_with_its_port_and_the_fix():
    client = FakeDockerClient()
    container = client.containers.add("lab-old-1", labels={"devbox.project": "lab", "devbox.host": "old"},
                                      host_config={"PortBindings": {"22/tcp": [{"HostIp": "127.0.0.1",
                                                                                "HostPort": "4439"}]},
                                                   "DeviceRequests": [{"Driver": "nvidia", "DeviceIDs": ["GPU-1"]}],
                                                   "NanoCpus": 2_000_000_000})  # fmt: skip
    entry = orphan_status("old", container)
    assert entry["host"] == "old" and entry["state"] == "running" and entry["in_spec"] is False
    assert entry["note"] == "not in the spec; `up --yes` removes it"
    assert (entry["ssh_port"], entry["bind_address"]) == (4439, "127.0.0.1")
    assert entry["gpus"][0]["device_ids"] == ["GPU-1"] and entry["limits"]["cpus"] == 2


def test_status_lists_the_dropped_host_after_the_specs(make_project, monkeypatch):
    from devbox import operations
    from devbox.watch_service import add_idle

    from .fake_docker import serve

    client = serve(monkeypatch, FakeDockerClient())
    project = make_project()
    name = project.spec.project
    client.containers.add(f"{name}-gone-1", labels={"devbox.project": name, "devbox.host": "gone"})
    entries = operations.status(project)
    assert [e["host"] for e in entries] == [*(h.name for h in project.spec.hosts), "gone"]
    assert entries[-1]["in_spec"] is False and entries[-1]["state"] == "running"
    add_idle(project, entries)
    assert entries[-1]["idle"] == "-"


def _ledger(*units: str) -> Ledger:
    machine = Machine((Gpu(0, "GPU-aaa", "A100", 81920), Gpu(1, "GPU-bbb", "A100", 81920)))
    return Ledger(machine, (Assignment("master", "2", units),))


def test_a_gpu_the_machine_no_longer_has_is_missing():
    now = Machine((Gpu(0, "GPU-aaa", "A100", 81920),))  # GPU-bbb left
    assert gpu_devices(_ledger("GPU-aaa", "GPU-bbb"), "master", now) == [
        {"index": 0, "uuid": "GPU-aaa", "name": "A100"},
        {"index": 1, "uuid": "GPU-bbb", "name": "A100", "missing": True},
    ]
    # without the machine read (no nvidia-smi here) nothing is called missing
    assert all("missing" not in d for d in gpu_devices(_ledger("GPU-aaa", "GPU-bbb"), "master"))


def test_the_status_table_says_a_gpu_is_missing():
    text = cli_module._devices_text([{"index": 1, "uuid": "GPU-bbbbbbbbbbbb", "name": "A100", "missing": True}])
    assert text == "#1 (GPU-bbbbbb) A100 MISSING: not on this machine now"


def test_a_damaged_ledger_is_read_as_empty_with_a_warning_naming_it(tmp_path: Path):
    (tmp_path / LEDGER_FILE).write_text('{"version": 1, "hosts"')
    warned: list[str] = []
    assert read_ledger(tmp_path, warned.append) == Ledger()
    assert len(warned) == 1 and warned[0].startswith(f"{tmp_path / LEDGER_FILE}: not a GPU ledger (")
    assert "remove it and the next `devbox up` assigns GPUs afresh" in warned[0]


def test_a_refused_volume_question_removes_nothing(make_project, monkeypatch):
    from devbox import operations

    from .fake_docker import serve

    serve(monkeypatch, FakeDockerClient())
    project = make_project()
    project.confirm = lambda question: False
    with pytest.raises(PreflightError, match=r"nothing removed \(its volumes and hosts stay\); pass --yes"):
        operations.down(project, volumes=True, ask=True)
