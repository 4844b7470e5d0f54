"""Renderers: seed-001 parity, one shared image, escaping, determinism.

(Compose itself reads the rendered files in tests/tools/test_compose_config.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devbox.project import render_to
from devbox.render import compose_data, image_files, image_tag, render_dockerfile, render_entrypoint, render_project
from devbox.scaffold import init_project
from devbox.spec import load_spec

from .helpers import fake_material, make_spec

# Copies of shared/reference/ (seed 001's files), kept here so the tests need nothing outside the repo.
REFERENCE = Path(__file__).resolve().parents[1] / "reference"


@pytest.fixture
def seed_spec(tmp_path):
    init_project(tmp_path, "lab", force=False)
    return load_spec(tmp_path / "devbox.yaml")


def compose(spec):
    return compose_data(spec, image_tag(spec, image_files(spec)))


def test_compose_says_what_seed_001_says(seed_spec):
    reference_file = REFERENCE / "seed-001.docker-compose.yml"
    if not reference_file.exists():
        pytest.fail(f"reference file missing: {reference_file}")
    reference = yaml.safe_load(reference_file.read_text())
    # YAML 1.1 reads the seed's unquoted 4432:22 as a base-60 number; read ports as text.
    as_text = yaml.load(reference_file.read_text(), Loader=yaml.BaseLoader)  # noqa: S506
    for name, service in reference["services"].items():
        service["ports"] = as_text["services"][name]["ports"]
    ours = compose(seed_spec)
    assert set(ours["services"]) == set(reference["services"])
    for name, theirs in reference["services"].items():
        mine = ours["services"][name]
        # plus the PIDs limit every host gets (see test_every_host_has_a_pids_limit_and_rotated_logs)
        assert mine["deploy"]["resources"]["limits"].pop("pids") == 4096
        assert mine["deploy"] == theirs["deploy"], name
        assert mine["ports"] == theirs["ports"]
        assert mine["restart"] == theirs["restart"]
        assert mine["networks"] == theirs["networks"]
        # the named volume, minus docker.sock (opt-in only), plus the home kept in a volume
        assert mine["volumes"] == [v for v in theirs["volumes"] if "docker.sock" not in v] + [
            f"{name}-home:/home/developer"]
        # minus plaintext passwords: the environment holds no password at all
        assert not any("PASSWORD" in key for key in mine.get("environment", {}))
    # plus the project's (and, once rendered into a folder, the owner's) labels: see compose_data
    owned = {"labels": {"devbox.project": seed_spec.project}}
    assert ours["networks"] == {name: {**network, **owned} for name, network in reference["networks"].items()}
    assert ours["volumes"] == {name: owned for name in [*reference["volumes"],
                                                       *(f"{name}-home" for name in reference["services"])]}


def test_all_hosts_share_one_built_image(seed_spec):
    services = compose(seed_spec)["services"]
    assert [name for name, service in services.items() if "build" in service] == ["master"]
    assert len({service["image"] for service in services.values()}) == 1
    assert services["worker"]["pull_policy"] == "never"


def test_no_plaintext_password_reaches_compose_or_image(tmp_path, seed_spec):
    files = render_to(seed_spec, tmp_path / ".devbox", {})[0].files
    credentials = yaml.safe_load((tmp_path / ".devbox" / "credentials.yaml").read_text())
    password = credentials["master"]["developer"]["password"]
    rendered = {file.path: file.content for file in files}
    assert not any(password in text for text in rendered.values())
    assert rendered["secrets/master/passwords"].startswith("developer:$6$")  # SHA-512 crypt
    assert (tmp_path / ".devbox" / "secrets/master/passwords").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / ".devbox" / "credentials.yaml").stat().st_mode & 0o777 == 0o600


def test_dockerfile_follows_the_seed_order_without_apt_key(seed_spec):
    text = render_dockerfile(seed_spec)
    order = ["FROM nvidia/cuda:", "ARG DEBIAN_FRONTEND=noninteractive", "ENV TZ=UTC",
             "rm -f /etc/apt/sources.list.d/cuda", "--no-install-recommends", "rm -f /etc/ssh/ssh_host_*",
             "sshd_config.d", "useradd -l -m -s /bin/zsh developer", "usermod -aG sudo developer",
             "COPY entrypoint.sh /entrypoint.sh", "EXPOSE 22", 'ENTRYPOINT ["/entrypoint.sh"]']  # fmt: skip
    positions = [text.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert "apt-key" not in text and "chpasswd" not in text
    assert "rm -f /etc/ssh/ssh_host_*" in text


def _layers(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    return [step for step in text.replace("\\\n", " ").splitlines() if step and not step.startswith("#")]


def test_the_specs_packages_and_requirements_are_layers_of_their_own_after_the_setup(tmp_path):
    (tmp_path / "requirements.txt").write_text("six\n")
    image = {"base": "debian:bookworm", "packages": ["jq", "sudo"], "pip_requirements": "requirements.txt"}
    one = make_spec(tmp_path, image=image)
    more = make_spec(tmp_path, image={**image, "packages": ["jq", "sudo", "less"]})
    before, after = _layers(render_dockerfile(one)), _layers(render_dockerfile(more))
    setup = next(i for i, step in enumerate(before) if "usermod -aG sudo" in step)
    own = next(i for i, step in enumerate(before) if "set -- jq python3-pip" in " ".join(step.split()))
    pip = next(i for i, step in enumerate(before) if "pip install" in step)
    assert setup < own < pip and " jq " not in before[setup] and "sudo" not in before[own].split("set --")[1]
    # one more package changes that layer only: every step before it stays, so the builder's cache serves them
    assert before[:own] == after[:own] and before[own] != after[own] and before[own + 1:] == after[own + 1:]
    # apt's lists come from the cache mount the setup layer fills; a lost or stale one is fetched again
    for step in (before[setup], before[own]):
        assert "--mount=type=cache,id=devbox-apt-" in step and "target=/var/lib/apt/lists" in step
    assert "update" not in before[own].split("||")[0] and "rm -rf /var/lib/apt/lists" not in before[setup]


def test_no_package_layer_without_packages_of_the_specs_own():
    text = render_dockerfile(make_spec(image={"base": "debian:bookworm", "packages": ["sudo"]}))
    assert "set --" not in text and text.count("RUN ") == 1


def test_docker_cli_is_opt_in_and_uses_a_keyring():
    plain = render_dockerfile(make_spec())
    with_cli = render_dockerfile(make_spec(image={"base": "debian:bookworm", "docker_cli": True}))
    assert "docker-ce-cli" not in plain
    assert "signed-by=/etc/apt/keyrings/docker.asc" in with_cli and "apt-key" not in with_cli


def test_uid_and_gid_reach_useradd():
    text = render_dockerfile(make_spec(image={"base": "debian:bookworm", "uid": 1500, "gid": 1600}))
    assert "groupadd -o -g 1600 developer" in text and "-o -u 1500 -g 1600 developer" in text


def test_dollar_signs_are_escaped_for_compose():
    spec = make_spec(hosts={"a": {"ssh_port": 1, "environment": {"PRICE": "$HOME ${X} $$"}}})
    assert compose(spec)["services"]["a"]["environment"]["PRICE"] == "$$HOME $${X} $$$$"


def test_gpu_requests_use_count_or_ids_never_both():
    spec = make_spec(hosts={
        "a": {"ssh_port": 1, "gpus": "all"}, "b": {"ssh_port": 2, "gpus": [0, 2]},
        "c": {"ssh_port": 3, "gpus": 0}, "d": {"ssh_port": 4, "gpus": 2, "gpu_capabilities": "compute,utility"},
    })  # fmt: skip
    services = compose(spec)["services"]
    device = lambda name: services[name]["deploy"]["resources"]["reservations"]["devices"][0]  # noqa: E731
    assert device("a") == {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    assert device("b") == {"driver": "nvidia", "device_ids": ["0", "2"], "capabilities": ["gpu"]}
    assert "reservations" not in services["c"]["deploy"]["resources"]
    assert device("d") == {"driver": "nvidia", "count": 2, "capabilities": ["compute", "utility"]}


def test_opt_ins_render_only_when_asked():
    spec = make_spec(hosts={
        "a": {"ssh_port": 1},
        "b": {"ssh_port": 2, "docker_socket": True, "privileged": True, "ipc": "host",
              "cap_add": ["sys_ptrace"], "devices": ["/dev/ttyUSB0"], "ulimits": {"memlock": -1},
              "bind_address": "::1", "hostname": "bee"},
    })  # fmt: skip
    a, b = compose(spec)["services"].values()
    assert not {"privileged", "ipc", "cap_add", "devices", "ulimits"} & set(a)
    assert a["volumes"] == ["a-home:/home/developer"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in b["volumes"]
    assert b["privileged"] is True and b["ipc"] == "host" and b["cap_add"] == ["SYS_PTRACE"]
    assert b["ulimits"] == {"memlock": -1} and b["devices"] == ["/dev/ttyUSB0"]
    assert a["ports"] == ["127.0.0.1:1:22"] and b["ports"] == ["[::1]:2:22"]
    assert b["networks"] == {"net": {"aliases": ["bee"]}}


def test_config_hash_follows_the_settings_files_but_not_the_passwords():
    """A changed sshd setting needs a new container; a new password is applied in place."""
    spec = make_spec()
    material = fake_material(spec)
    before = render_project(spec, material)
    material["master"] = material["master"].__class__((("developer", "$6$other"),), material["master"].host_public_key)
    new_password = render_project(spec, material)
    assert new_password.config_hashes == before.config_hashes
    assert new_password.password_digests["master"] != before.password_digests["master"]
    with_a_key = render_project(make_spec(defaults={"authorized_keys": ["ssh-ed25519 AAAAC3Nza me"]}), material)
    assert with_a_key.config_hashes["master"] != before.config_hashes["master"]


def test_rendering_is_deterministic_and_skips_unchanged_files(tmp_path, seed_spec):
    first, changed, _ = render_to(seed_spec, tmp_path / "out", {})
    assert len(changed) == len(first.files)
    second, changed_again, _ = render_to(seed_spec, tmp_path / "out", {})
    assert changed_again == [] and first == second


def test_entrypoint_applies_hashes_and_runs_sshd(seed_spec):
    text = render_entrypoint(seed_spec)
    assert "chpasswd -e" in text and text.rstrip().endswith("exec /usr/sbin/sshd -D -e")
    assert "SetEnv" in text and "05-devbox-environment.conf" in text


def test_build_context_keeps_secrets_out():
    files = {f.path: f.content for f in render_project(make_spec(), fake_material(make_spec())).files}
    assert files[".dockerignore"].splitlines()[0] == "*"
    assert "!Dockerfile" in files[".dockerignore"] and "secrets" not in files[".dockerignore"]


def test_ssh_config_refuses_a_path_that_could_add_directives():
    from devbox.errors import UsageError
    from devbox.render import render_ssh_config

    spec = make_spec()
    assert 'UserKnownHostsFile "/my dir/known_hosts"' in render_ssh_config(spec, "/my dir/known_hosts")
    with pytest.raises(UsageError):
        render_ssh_config(spec, '/x"\n    ProxyCommand evil/known_hosts')


def test_unchanged_image_inputs_reuse_the_files_on_disk(tmp_path, seed_spec, monkeypatch):
    import devbox.render

    render_to(seed_spec, tmp_path / "out", {})
    calls = []
    monkeypatch.setattr(devbox.render, "image_files", lambda spec: calls.append(spec) or [])
    again, changed, _ = render_to(seed_spec, tmp_path / "out", {})
    assert calls == [] and changed == []
    assert {f.path for f in again.files} >= {"Dockerfile", "entrypoint.sh"}
    # a different image setting renders them again
    changed_spec = load_spec_with(tmp_path, timezone="Europe/Berlin")
    monkeypatch.undo()
    _, changed, _ = render_to(changed_spec, tmp_path / "out", {})
    assert "Dockerfile" in changed


def load_spec_with(tmp_path, **image):
    init_project(tmp_path / "other", "lab", force=False)
    path = tmp_path / "other" / "devbox.yaml"
    data = yaml.safe_load(path.read_text())
    data["image"].update(image)
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def test_render_never_overwrites_files_it_did_not_write(tmp_path, seed_spec):
    from devbox.errors import UsageError

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "Dockerfile").write_text("FROM my-own\n")
    with pytest.raises(UsageError) as info:
        render_to(seed_spec, tmp_path / "mine", {})
    assert "holds files devbox did not write (Dockerfile)" in str(info.value)
    assert (tmp_path / "mine" / "Dockerfile").read_text() == "FROM my-own\n"
    assert not (tmp_path / "mine" / "credentials.yaml").exists()
    # its own output folder it renders again, also after a hand edit
    render_to(seed_spec, tmp_path / "out", {})
    (tmp_path / "out" / "Dockerfile").write_text("edited\n")
    render_to(seed_spec, tmp_path / "out", {})


def test_home_lives_in_a_volume_unless_switched_off_or_mounted_already(seed_spec):
    from dataclasses import replace

    master, worker = seed_spec.hosts[:2]
    spec = replace(seed_spec, hosts=(replace(master, home_volume=False), worker, *seed_spec.hosts[2:]))
    data = compose(spec)
    assert not any("/home/" in v for v in data["services"][master.name]["volumes"])
    assert f"{worker.name}-home:/home/developer" in data["services"][worker.name]["volumes"]
    assert f"{master.name}-home" not in data["volumes"]


def test_the_named_volumes_of_the_spec_are_the_login_users_unless_it_says_root():
    """Issue 29, case 5: Docker makes a new named volume root's; the entrypoint hands the ones in
    the host's devbox_volumes secret to the user while they are empty. Read-only ones, bind mounts
    and `owner: root` stay as they are; the home is handed over on its own."""
    spec = make_spec(hosts={"master": {"ssh_port": 2201, "volumes": [
        "data:/data", "cache:/cache:ro", {"source": "sys", "target": "/srv/sys", "owner": "root"},
        {"source": "opt", "target": "/opt", "owner": "user"}, "/tmp:/code"]}})  # fmt: skip
    files = {f.path: f.content for f in render_project(spec, fake_material(spec)).files}
    assert files["secrets/master/volumes"] == "/data\n/opt\n"
    entrypoint = render_entrypoint(spec)
    assert 'done < "$secrets/devbox_volumes"' in entrypoint and 'chown "$user:$group" "$volume"' in entrypoint
