"""What a container holds outside its volumes (devbox.changes), from the engine's diff."""

from __future__ import annotations

from devbox.changes import Changes, kept_paths


def diff(*paths):
    return [{"Path": p, "Kind": 1} for p in paths]


def test_only_what_someone_made_is_named():
    found = kept_paths(diff(
        "/usr", "/usr/local", "/usr/local/bin", "/usr/local/bin/tool", "/tmp/x", "/var/log/wtmp",
        "/var/lib/apt/lists/a", "/var/lib/dpkg/status", "/etc/ssh/ssh_host_ed25519_key", "/run/sshd",
        "/etc/ssh/sshd_config.d/05-devbox-environment.conf", "/etc/shadow", "/home", "/home/developer",
        "/data/file", "/etc/motd",
    ), ["/home/developer", "/data"])  # fmt: skip
    assert found == ("/usr/local/bin/tool", "/etc/motd")


def test_big_directories_are_collapsed_in_the_line():
    paths = ("/usr/local/bin/tool", *(f"/opt/conda/lib/f{i}" for i in range(1240)))
    line = Changes("worker", paths).line()
    assert line == "worker: 1,241 files outside its volumes: /usr/local/bin/tool, /opt/conda (1,240 files)"
