"""What a container holds outside its volumes (devbox.changes), from the engine's diff."""

from __future__ import annotations

from devbox.changes import Changes, collapse, kept_paths, layer_diff, read_layers


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


def _listing(*entries):
    """FIND_LAYERS's output: (layer, type, path, "MODE UID GID SIZE MTIME") each."""
    return b"".join(b"\0".join(field.encode() for field in entry) + b"\0" for entry in entries)


def test_a_layer_is_judged_as_the_engines_diff_judges_it():
    """Read from the layer's own folder (issue 28: 8 diffs cost 2.7-5.6 s, the helper 0.25 s), an
    entry counts as the engine's naive diff counts it: a file copied up unchanged (the same mode,
    owner, size and time as in the image: /etc/passwd under chpasswd) is no change; a folder's
    size and time are not compared; whiteouts are deletions; names with newlines stay whole."""
    layers = _listing(
        ("0", "d", "etc", "755 0 0 4096 1.5"),
        ("0", "f", "etc/passwd", "644 0 0 900 1.0"),          # copied up unchanged
        ("0", "f", "etc/issue", "600 0 0 27 1.0"),            # chmod: changed
        ("0", "f", "etc/hosts.allow", "644 0 0 412 9.0"),     # rewritten: changed
        ("0", "c", "etc/motd", "0 0 0 0 2.0"),                # deleted
        ("1", "d", "opt", "755 0 0 4096 1.0"),
        ("1", "f", "opt/new\nline", "644 1000 1000 0 3.0"),   # added, empty
        ("1", "d", "opt/emptydir", "755 1000 1000 4096 3.0"),
    )
    image = _listing(("/etc", "d 755 0 0 4096 0.5"), ("/etc/passwd", "f 644 0 0 900 1.0"),
                     ("/etc/issue", "f 644 0 0 27 1.0"), ("/etc/hosts.allow", "f 644 0 0 411 1.0"),
                     ("/opt", "d 755 0 0 4096 1.0"))  # fmt: skip
    found = layer_diff(layers, image, ["h0", "h1"])
    assert found == {
        "h0": [{"Path": "/etc/issue", "Kind": 0}, {"Path": "/etc/hosts.allow", "Kind": 0}, {"Path": "/etc/motd", "Kind": 2}],
        "h1": [{"Path": "/opt/new\nline", "Kind": 1}, {"Path": "/opt/emptydir", "Kind": 1}],
    }
    assert kept_paths(found["h0"], []) == ("/etc/hosts.allow", "/etc/issue")
    assert kept_paths(found["h1"], []) == ("/opt/emptydir", "/opt/new\nline")


def test_a_garbled_layer_listing_is_none_so_the_engines_diff_is_asked():
    assert layer_diff(b"0\0f\0etc/passwd\0", b"", ["h0"]) is None  # cut short
    assert layer_diff(_listing(("7", "f", "x", "644 0 0 1 1.0")), b"", ["h0"]) is None  # no such layer


def test_containers_not_on_overlay2_are_not_read_from_their_layers():
    class Stub:
        attrs = {"GraphDriver": {"Name": "btrfs", "Data": None}, "Image": "sha256:1"}
        client = type("Client", (), {"api": type("Api", (), {"base_url": "http+docker://localhost"})()})()

    assert read_layers({"h0": Stub()}) is None


def test_containers_of_several_engines_are_read_by_a_helper_on_each(monkeypatch):
    """A swarm's hosts on other nodes: each node's layers are read on that node's engine and
    compared with the image there (a pulled image keeps whole-second times, a built one has
    nanoseconds: compared across engines, /etc/passwd looked changed on every pulled node)."""
    import devbox.changes as changes

    def stub(client):
        return type("Container", (), {"client": client, "labels": {}, "attrs": {
            "Image": "sha256:1", "GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": f"/u/{id(client)}"}}}})()

    one, two = object(), object()
    ran = []

    def finder(example, uppers):
        ran.append((example.client, len(uppers)))
        return _listing(*[(str(n), "f", "etc/x", "644 0 0 1 1.0") for n in range(len(uppers))]), b""

    monkeypatch.setattr(changes, "_run_finder", finder)
    found = read_layers({"a": stub(one), "b": stub(two), "c": stub(two)})
    assert sorted(ran, key=lambda r: r[1]) == [(one, 1), (two, 2)]
    assert found is not None and set(found) == {"a", "b", "c"}
