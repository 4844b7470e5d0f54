"""What a container holds outside its volumes (devbox.changes), from the engine's diff."""

from __future__ import annotations

from devbox.changes import Changes, collapse, kept_paths


def diff(*paths):
    return [{"Path": p, "Kind": 1} for p in paths]


def test_only_what_someone_made_is_named():
    found = kept_paths(diff(
        "/usr", "/usr/local", "/usr/local/bin", "/usr/local/bin/tool", "/tmp/x", "/var/log/wtmp",
        "/var/lib/apt/lists/a", "/var/lib/dpkg/status", "/etc/ssh/ssh_host_ed25519_key", "/run/sshd",
        "/etc/ssh/sshd_config.d/05-devbox-environment.conf", "/etc/shadow", "/home", "/home/developer",
        "/data/file", "/etc/motd",
    ), ["/home/developer", "/data"])  # fmt: skip
    assert found == ("/etc/motd", "/usr/local/bin/tool")  # sorted: the same order every run


def test_big_directories_are_collapsed_in_the_line():
    paths = ("/usr/local/bin/tool", *(f"/opt/conda/lib/f{i}" for i in range(1240)))
    line = Changes("worker", paths).line()
    assert line == "worker: 1,241 files outside its volumes: /opt/conda/lib (1,240 files), /usr/local/bin/tool"


def test_a_file_deleted_from_the_image_is_not_lost():
    """Issue 29: `rm /etc/motd` is in the diff (Kind 2), but recreating brings it back."""
    found = kept_paths([{"Path": "/etc", "Kind": 0}, {"Path": "/etc/motd", "Kind": 2},
                        {"Path": "/etc/issue", "Kind": 0}, {"Path": "/opt/gone", "Kind": 2}], [])  # fmt: skip
    assert found == ("/etc/issue",)


def test_only_apts_caches_are_left_out_of_var_cache():
    found = kept_paths(diff("/var/cache/apt/pkgcache.bin", "/var/cache/apt/archives/x.deb",
                            "/var/cache/debconf/config.dat", "/var/cache/myapp/index.db"), [])  # fmt: skip
    assert found == ("/var/cache/myapp/index.db",)


def test_every_file_is_named_however_many_there_are():
    """Six files were "5 entries, and 1 more" (issue 29): now every one is named, or counted in
    its folder, and the order never depends on the engine's."""
    six = ["/usr/local/bin/mytool", "/etc/a", "/etc/b", "/opt/x/1", "/srv/y", "/root/.bashrc"]
    assert collapse(six) == sorted(six)
    many = [f"/etc/conf{i}" for i in range(5)] + ["/usr/local/bin/mytool", "/usr/local/lib/libx.so", "/opt/a/b/c",
                                                 "/srv/data", "/var/lib/x/y"]  # fmt: skip
    shown = collapse(many)
    assert shown == ["/etc (5 files)", "/opt/a/b/c", "/srv/data", "/usr/local/bin/mytool",
                     "/usr/local/lib/libx.so", "/var/lib/x/y"]
    assert collapse(list(reversed(many))) == shown
    top = [f"/d{i}/f{j}" for i in range(12) for j in range(2)]  # more top folders than SHOWN: all shown
    assert collapse(top) == [f"/d{i} (2 files)" for i in sorted(range(12), key=str)]


def test_the_line_names_the_file_listing_every_path_when_it_counts_some():
    paths = tuple(f"/opt/conda/f{i}" for i in range(20))
    assert Changes("w", paths).line("/p/.devbox/outside-volumes.txt") == (
        "w: 20 files outside its volumes: /opt/conda (20 files) (every file: /p/.devbox/outside-volumes.txt)")
    assert Changes("w", ("/etc/motd",)).line("/p/x.txt") == "w: 1 file outside its volumes: /etc/motd"
