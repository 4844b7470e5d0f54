"""The click layer: init/validate/render behaviour, exit codes, one line per problem."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from devbox.cli import cli


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")  # offline: init still works

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke


def test_init_writes_spec_and_gitignore_then_refuses_to_overwrite(run, tmp_path):
    result = run("init")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "devbox.yaml").read_text().startswith("# devbox.yaml")
    assert ".devbox/" in (tmp_path / ".gitignore").read_text().splitlines()
    (tmp_path / "devbox.yaml").write_text("# mine\n")
    again = run("init")
    assert again.exit_code == 2 and "already exists (pass --force" in again.output
    assert (tmp_path / "devbox.yaml").read_text() == "# mine\n"
    assert run("init", "--force").exit_code == 0
    assert (tmp_path / "devbox.yaml").read_text() != "# mine\n"


def test_init_appends_to_an_existing_gitignore(run, tmp_path):
    (tmp_path / ".gitignore").write_text("*.pyc")
    run("init")
    assert (tmp_path / ".gitignore").read_text().startswith("*.pyc\n")
    run("init", "--force")
    assert (tmp_path / ".gitignore").read_text().count(".devbox/") == 1


def test_init_into_a_folder_uses_its_name(run, tmp_path):
    assert run("init", "My Lab").exit_code == 0
    assert "project: my-lab" in (tmp_path / "My Lab" / "devbox.yaml").read_text()


def test_init_picks_a_free_project_name_when_the_folders_is_taken_on_the_engine(run, tmp_path, monkeypatch):
    from .fake_docker import FakeDockerClient, serve

    client = serve(monkeypatch, FakeDockerClient())
    client.containers.add("lab-master-1", labels={"devbox.project": "lab"}, status="exited")
    client.volumes.add("lab-2_data", labels={"com.docker.compose.project": "lab-2"})
    result = run("init", "lab")
    assert result.exit_code == 0, result.output
    assert "project name 'lab' is taken on the engine by another project: using 'lab-3'" in result.output
    assert "project: lab-3" in (tmp_path / "lab" / "devbox.yaml").read_text()
    assert "project: free" in (run("init", "free") and (tmp_path / "free" / "devbox.yaml").read_text())
    assert "project: lab\n" in (run("init", "--project", "lab", "named") and
                                (tmp_path / "named" / "devbox.yaml").read_text())  # asked for by name: kept


def test_init_writes_the_file_that_dash_f_names(run, tmp_path):
    result = run("-f", "lab.yaml", "init")
    assert result.exit_code == 0 and "`devbox -f lab.yaml validate`" in result.output
    assert (tmp_path / "lab.yaml").is_file() and not (tmp_path / "devbox.yaml").exists()
    assert run("-f", "lab.yaml", "validate").exit_code == 0


def test_logs_tail_takes_a_number_or_all(run):
    result = run("logs", "--tail", "-5", "master")
    assert result.exit_code == 2 and "'-5' is not a number of lines" in result.output


def test_validate_reports_every_problem_with_exit_2(run, tmp_path):
    (tmp_path / "devbox.yaml").write_text(
        "project: lab\nhosts:\n  worker:\n    ssh_port: 99999\n    limits: {memory: 16GB}\n"
    )
    result = run("validate")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == [
        "error: devbox.yaml: hosts.worker.limits.memory: '16GB' is not a size (use a whole number "
        "with a unit b, k, m or g, e.g. 16g, 16000M, 512m)",
        "error: devbox.yaml: hosts.worker.ssh_port: 99999 is out of range for a TCP port (1-65535)",
    ]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("machine", "with_gpus", "master_line"), [
    ("four", "2 with GPUs", None),
    ("two", "2 with GPUs", None),
    ("one", "1 with GPUs", "    gpus: 1                  # the machine's one GPU"),
    ({"gpus": [], "compute_apps": []}, "0 with GPUs", None),
])
def test_init_writes_a_spec_that_validates_on_the_machine_it_was_written_on(run, tmp_path, monkeypatch,
                                                                            machine, with_gpus, master_line):
    """The example gives master and worker a GPU each; a one-GPU server (or one whose nvidia-smi
    sees none) gets what it has, so `init` then `validate` is not an error there (issue 30)."""
    from .test_gpus import smi_env

    for key, value in smi_env(tmp_path, machine).items():
        monkeypatch.setenv(key, value)
    assert run("init").exit_code == 0
    result = run("validate")
    assert result.exit_code == 0, result.output
    assert f"valid (2 hosts, {with_gpus})" in result.output
    written = (tmp_path / "devbox.yaml").read_text()
    assert (master_line in written.splitlines()) if master_line else "the machine's one GPU" not in written


def test_validate_a_good_spec(run):
    run("init")
    result = run("validate")
    assert result.exit_code == 0 and "valid (2 hosts, 2 with GPUs)" in result.output
    assert "enforces CPU limits but not CPU reservations" in result.output
    assert "0 with GPUs" in run("--no-gpu", "validate").output


def test_render_and_generate_alias(run, tmp_path):
    run("init")
    first = run("render")
    assert first.exit_code == 0, first.output
    assert "generated passwords for master/developer, worker/developer" in first.output
    for name in ("Dockerfile", "entrypoint.sh", "docker-compose.yml", "secrets/master/passwords"):
        assert (tmp_path / ".devbox" / name).is_file()
    again = run("generate")
    assert again.exit_code == 0 and "0 written" in again.output


def test_render_to_a_chosen_folder(run, tmp_path):
    run("init")
    assert run("--out", "build", "render").exit_code == 0
    assert (tmp_path / "build" / "docker-compose.yml").is_file()


def test_render_warns_about_opt_ins(run, tmp_path):
    (tmp_path / "devbox.yaml").write_text(
        "project: lab\nimage: {base: 'debian:bookworm'}\n"
        "hosts:\n  a: {ssh_port: 2222, docker_socket: true, privileged: true}\n"
    )
    result = run("render")
    assert result.exit_code == 0
    assert "docker_socket: the host's users get the Docker socket, which is root" in result.output
    assert "privileged: the container can do anything" in result.output


def test_missing_spec_is_a_clean_error(run):
    result = run("validate")
    assert result.exit_code == 2 and "devbox init" in result.output


def test_help_does_not_import_heavy_modules():
    code = "import sys; from devbox.cli import cli; print(sorted(m for m in ('docker','jinja2','paramiko','yaml') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_looking_at_a_stack_imports_no_login_render_or_engine_modules():
    """status, exec and ssh (issue 18: each within 2 x `docker compose ps`) import only what they use."""
    heavy = ("paramiko", "invoke", "jinja2", "passlib", "devbox.engines")
    code = ("import sys; import devbox.cli, devbox.operations, devbox.project; from devbox.docker_api import sdk; "
            f"sdk(); print(sorted(m for m in {heavy!r} if m in sys.modules), 'docker' in sys.modules)")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["[]", "True"]
    # an engine reached over SSH still gets the SDK's SSH transport
    code = "from devbox.docker_api import sdk; import docker.transport as t; print(hasattr(sdk().transport, 'SSHHTTPAdapter'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**env, "DOCKER_HOST": "ssh://nobody@localhost"})  # fmt: skip
    assert out.stdout.strip() == "True"


def test_the_sdk_comes_without_requests_character_detection_and_says_nothing_of_it():
    """requests then takes UTF-8 for a response without a charset (the engine's API speaks it)."""
    code = ("import sys, warnings; warnings.simplefilter('error'); from devbox.docker_api import sdk; sdk(); "
            "import requests, requests.compat as c; r = requests.Response(); r._content = 'é'.encode(); "
            "print(c.chardet, r.apparent_encoding, r.text, 'charset_normalizer' in sys.modules)")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["None", "utf-8", "é", "False"] and out.stderr == ""


def test_the_installed_command_ends_as_an_exit_would(tmp_path):
    """main() ends without the interpreter's teardown (os._exit): the output still arrives whole,
    the exit code is the command's, and a reader that left early costs no traceback."""
    devbox = [sys.executable, "-c", "from devbox.cli import main; main()"]
    out = subprocess.run([*devbox, "--version"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "devbox" in out.stdout and out.stderr == ""
    out = subprocess.run([*devbox, "-f", str(tmp_path / "none.yaml"), "validate"], capture_output=True, text=True,
                         check=False)  # fmt: skip
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    reader = subprocess.Popen([*devbox, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None and reader.stdout.read(1)
    reader.stdout.close()  # `devbox --help | head -c 1`
    _, errors = reader.communicate(timeout=30)
    assert b"Traceback" not in errors


def test_every_problem_of_an_error_gets_its_own_error_line(run, monkeypatch):
    from devbox.errors import PreflightError

    def failing(*_args, **_kwargs):
        raise PreflightError("first problem (fix one)\nsecond problem (fix two)")

    monkeypatch.setattr("devbox.cli.Context.spec", failing)
    result = run("validate")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["error: first problem (fix one)", "error: second problem (fix two)"]


def test_docker_errors_are_one_line_where_devbox_calls_the_sdk():
    import docker.errors

    from devbox.docker_api import talks_to_engine
    from devbox.errors import EngineError

    @talks_to_engine
    def refused():
        raise docker.errors.APIError("500 Server Error: conflict\nmore detail")

    @talks_to_engine
    def streaming():
        yield b"first"
        raise docker.errors.NotFound("no such container")

    with pytest.raises(EngineError, match=r"^Docker engine: 500 Server Error: conflict \(check `devbox doctor`\)$"):
        refused()
    with pytest.raises(EngineError, match="no such container"):
        list(streaming())


def test_the_engine_names_agree_everywhere():
    from devbox.cli import cli as group
    from devbox.engines import ENGINES, engine_class
    from devbox.spec import ENGINES as SPEC_ENGINES

    option = next(p for p in group.params if p.name == "engine")
    assert sorted(option.type.choices) == sorted(ENGINES) == sorted(SPEC_ENGINES)
    assert all(engine_class(name).name == name for name in ENGINES)
