"""What devbox generates once and keeps with the project, and how output files are written.

The output folder (``.devbox/`` beside the spec) holds the rendered files and this state:
``credentials.yaml`` (0600: generated passwords and their SHA-512 crypt hashes) and
``hostkeys/<host>/`` (each host's SSH host key). State survives re-renders, ``down``/``up`` and
rebuilds, so passwords and host keys never change behind the user's back.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from devbox.errors import SpecError, UsageError
from devbox.layout import (
    APPLIED_PASSWORDS_FILE,
    COMPOSE_FILE,
    CREDENTIALS_FILE,
    DEFAULT_OUTPUT,
    DEFAULT_SPEC_NAME,
    LOCK_FILE,
    OWNER_FILE,
    SECRETS_DIR,
    host_key_path,
)
from devbox.render import HostMaterial, RenderedFile
from devbox.spec import Host, Spec

PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 24
# SHA-512 crypt rounds. A generated password has 143 random bits: no stretching makes guessing it
# any harder, so it gets glibc's default (3 ms). A password a person chose gets 20 times more.
HASH_ROUNDS_GENERATED = 5_000
HASH_ROUNDS_CHOSEN = 100_000
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def output_dir(spec: Spec, out: str | os.PathLike[str] | None = None) -> Path:
    """The output folder: ``out`` if given (relative to the current directory), else a folder of
    the spec file's own beside it: ``.devbox/`` for devbox.yaml, ``.devbox-<stem>/`` for any
    other (two specs in one folder never share passwords, host keys or the compose file).

    A spec other than devbox.yaml that an older devbox rendered into ``.devbox/`` keeps it, so
    an upgrade changes no password or host key.
    """
    if out:
        return Path(out).resolve()
    name = Path(spec.source).name
    shared = spec.directory / DEFAULT_OUTPUT
    if name == DEFAULT_SPEC_NAME:
        return shared
    own = spec.directory / f"{DEFAULT_OUTPUT}-{Path(name).stem}"
    if not own.exists() and _rendered_from(shared, name):
        return shared
    return own


def _rendered_from(folder: Path, spec_name: str) -> bool:
    """Whether ``folder``'s compose file was rendered from the spec file called ``spec_name``."""
    try:
        with open(folder / COMPOSE_FILE, encoding="utf-8") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return first.startswith(f"# Rendered by devbox from {spec_name}:")


@dataclass(frozen=True)
class Account:
    """One account's password on one host, and where the plaintext comes from."""

    password: str | None
    hashed: str
    source: str  # "generated" or "env:VARIABLE"


def hash_password(password: str, rounds: int = HASH_ROUNDS_CHOSEN) -> str:
    from passlib.hash import sha512_crypt

    return str(sha512_crypt.using(rounds=rounds).hash(password))


def _verifies(password: str, hashed: str) -> bool:
    from passlib.hash import sha512_crypt

    try:
        return bool(sha512_crypt.verify(password, hashed))
    except (ValueError, TypeError):
        return False


def generate_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


_ENTRY_KEYS = ("source", "password", "hash")


def _credentials_problem(data: object) -> str | None:
    """What is wrong with the shape of credentials.yaml (host -> account -> source, password,
    hash; each a string), as the rest of a one-line error with its fix; None when it is sound."""
    remove = "or remove it to generate new passwords"
    if not isinstance(data, dict):
        return f"not a credentials file (a mapping of hosts); fix it, {remove}"
    for host, accounts in data.items():
        if not isinstance(accounts, dict):
            return f"{host}: must map account names to their passwords; fix it, {remove}"
        for user, entry in accounts.items():
            where = f"{host}.{user}"
            if not isinstance(entry, dict) or set(entry) - set(_ENTRY_KEYS):
                return (f"{where}: must hold only {', '.join(_ENTRY_KEYS)}; fix it, or delete the entry "
                        "to generate a new password")  # fmt: skip
            for key, value in entry.items():
                if not isinstance(value, str):
                    return (f"{where}.{key}: {value!r} is not text (quote it: {key}: '{value}'), or delete "
                            "the entry to generate a new password")  # fmt: skip
            if entry.get("source", "generated") == "generated" and "password" in entry and not entry["password"]:
                return f"{where}.password: empty (write one, or delete the entry to generate a new password)"
    return None


class Credentials:
    """Passwords per host and account, kept in ``credentials.yaml`` (mode 0600).

    Generated passwords are stored in plaintext there (it is the one place to read them); a
    password taken from an environment variable is never written, only its hash.
    """

    def __init__(self, path: Path, data: dict[str, dict[str, dict[str, str]]]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def load(cls, folder: Path) -> Credentials:
        path = folder / CREDENTIALS_FILE
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)  # noqa: S506 - safe loader
        except FileNotFoundError:
            data = {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            why = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"{path}: cannot read it ({why}); fix it, or remove it to generate new "
                             "passwords") from None  # fmt: skip
        # An empty file (cut short to nothing: a full disk, a crash mid-write, `> credentials.yaml`) is
        # damaged, like any other: taken as "no passwords yet", every host got new ones, applied at `up`.
        problem = _credentials_problem(data) if data is not None else (
            "empty (cut short?); restore it from a copy, or remove it to generate new passwords "
            "(the next `devbox up` applies them to running hosts)")  # fmt: skip
        if problem:
            raise UsageError(f"{path}: {problem}")
        return cls(path, data)

    def account(self, host: str, user: str, environ: Mapping[str, str] | None = None) -> Account:
        """The account's current password (None if it comes from an unset variable) and hash."""
        entry = self.data.get(host, {}).get(user, {})
        source = entry.get("source", "generated")
        password = entry.get("password")
        if source.startswith("env:"):
            password = (environ if environ is not None else os.environ).get(source[4:])
        return Account(password, entry.get("hash", ""), source)

    def ensure(self, spec: Spec, environ: Mapping[str, str], *, edited: bool = False,
               changed: list[str] | None = None) -> list[str]:  # fmt: skip
        """Give every account a password and a hash; returns 'host/user' of newly generated ones.

        ``edited``: the file may have been edited by hand since the last render (see
        ``edited_since_render``): each generated password is checked against its hash, and one
        that no longer matches gets a new hash (so `up` applies it), noted in ``changed``.
        Checking costs ~8 ms an account, so it is done only then. Raises SpecError when a
        password_env variable is not set.
        """
        problems, created = [], []
        changed = changed if changed is not None else []
        for host in spec.hosts:
            from_env = dict(host.password_env)
            entries = self.data.setdefault(host.name, {})
            for user in spec.accounts(host):
                entry = dict(entries.get(user, {}))
                if user in from_env:
                    password = environ.get(from_env[user], "")
                    if not password:
                        problems.append(f"hosts.{host.name}.password_env.{user}: environment "
                                        f"variable {from_env[user]} is not set (export it, or "
                                        "remove the entry to get a generated password)")  # fmt: skip
                        continue
                    entry = {"source": f"env:{from_env[user]}", "hash": entry.get("hash", "")}
                elif entry.get("source", "generated") == "generated" and entry.get("password"):
                    password = entry["password"]
                    if edited and entry.get("hash") and not _verifies(password, entry["hash"]):
                        entry["hash"] = ""  # edited by hand: hashed again below, applied by `up`
                        changed.append(f"{host.name}/{user}")
                else:
                    password = generate_password()
                    entry = {"source": "generated", "password": password}
                    created.append(f"{host.name}/{user}")
                # A stored hash is reused while it still matches, so renders stay byte-identical.
                # Generated pairs are written together by devbox: only a variable's value can drift.
                if not entry.get("hash") or (user in from_env and not _verifies(password, entry["hash"])):
                    rounds = HASH_ROUNDS_CHOSEN if user in from_env else HASH_ROUNDS_GENERATED
                    entry["hash"] = hash_password(password, rounds)
                entries[user] = entry
            for stale in set(entries) - set(spec.accounts(host)):
                del entries[stale]
        for stale in set(self.data) - {host.name for host in spec.hosts}:
            del self.data[stale]
        if problems:
            raise SpecError(spec.source, problems)
        return created

    def rotate(self, host: str, user: str) -> str:
        """A new generated password for one account; returns it."""
        password = generate_password()
        self.data.setdefault(host, {})[user] = {
            "source": "generated", "password": password, "hash": hash_password(password, HASH_ROUNDS_GENERATED),
        }  # fmt: skip
        return password

    def hashes(self, spec: Spec, host: Host) -> tuple[tuple[str, str], ...]:
        return tuple((user, self.data[host.name][user]["hash"]) for user in spec.accounts(host))

    def save(self) -> None:
        header = ("# devbox credentials: the passwords of your hosts' accounts. Keep it private;\n"
                  "# `devbox passwd HOST` rotates one. Passwords from environment variables are not "
                  "stored here.\n")  # fmt: skip
        text = header + yaml.dump(self.data, Dumper=_YAML_DUMPER, sort_keys=True, default_flow_style=False)
        write_if_changed(self.path, text, 0o600)


class AppliedPasswords:
    """Which passwords each host's container is known to have: ``host -> "container-id digest"``
    (the digest of its passwords file, see RenderedProject.password_digests).

    `up` asks a running container for its passwords only when this record does not already
    vouch for them, so a warm `up` execs into no host, also after a `devbox passwd`.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / APPLIED_PASSWORDS_FILE
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}  # no record (or a damaged one) only costs a question to each host
        self.seen = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def holds(self, host: str, container_id: str, digest: str) -> bool:
        return self.seen.get(host) == f"{container_id} {digest}"

    def note(self, host: str, container_id: str, digest: str) -> None:
        self.seen[host] = f"{container_id} {digest}"

    def save(self) -> None:
        write_if_changed(self.path, json.dumps(self.seen, indent=1, sort_keys=True) + "\n", 0o644)


def write_private(path: Path, text: str) -> None:
    """Write a file that only its owner may read, never world-readable even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def ensure_host_keys(spec: Spec, folder: Path) -> dict[str, str]:
    """Each host's ed25519 host key, generated once; returns the public keys by host name."""
    public = {}
    for host in spec.hosts:
        private_path = folder / host_key_path(host.name)
        public_path = private_path.with_name(private_path.name + ".pub")
        if not private_path.is_file():
            pem, pub = _new_host_key()
            write_private(private_path, pem)
            write_if_changed(public_path, f"{pub} devbox-{spec.project}-{host.name}\n", 0o644)
        elif not public_path.is_file():  # never a new key over an existing private one
            pub = _public_of(private_path)
            write_if_changed(public_path, f"{pub} devbox-{spec.project}-{host.name}\n", 0o644)
        public[host.name] = " ".join(public_path.read_text(encoding="utf-8").split()[:2])
    return public


def _public_of(private_path: Path) -> str:
    """The public key line of a kept private host key. Raises UsageError when it is damaged."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_ssh_private_key(private_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"{private_path}: not a readable host key ({type(exc).__name__}); remove it (and its "
                         ".pub) to generate a new one: logins then see a new host key") from None  # fmt: skip
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode()


def _new_host_key() -> tuple[str, str]:
    """An ed25519 key pair: (private key in OpenSSH format, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, public


def owner_id(folder: Path, *, create: bool = True) -> str | None:
    """The id of the spec that owns this output folder, generated once and kept in it.

    Every object devbox makes on an engine carries it as a label (devbox.render.OWNER_LABEL), so
    a second spec under the same project name is refused before it mounts, or deletes, this
    spec's volumes. Without ``create``, a folder without one gives None. Raises UsageError when
    the file is damaged.
    """
    path = folder / OWNER_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        if not create:
            return None
        text = secrets.token_hex(8)
        write_if_changed(path, text + "\n", 0o644)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it ({type(exc).__name__}); remove it to make a new one") from None
    if not text.isalnum() or len(text) > 64:
        raise UsageError(f"{path}: not an owner id (letters and digits); remove it to make a new one")
    return text


def edited_since_render(folder: Path) -> bool:
    """Whether credentials.yaml changed after the password files last rendered from it (or some
    are missing): then a password in it may have been edited by hand."""
    try:
        edited = (folder / CREDENTIALS_FILE).stat().st_mtime_ns
    except OSError:
        return False
    try:
        rendered = [path.stat().st_mtime_ns for path in (folder / SECRETS_DIR).glob("*/passwords")]
    except OSError:
        return True
    return not rendered or edited >= min(rendered)


def prepare(spec: Spec, folder: Path, environ: Mapping[str, str],
            say: Callable[[str], None] | None = None) -> tuple[dict[str, HostMaterial], list[str]]:  # fmt: skip
    """Make sure credentials and host keys exist; returns each host's material and new accounts.
    ``say`` hears of passwords edited by hand in credentials.yaml (applied at `up`)."""
    credentials = Credentials.load(folder)
    edited: list[str] = []
    created = credentials.ensure(spec, environ, edited=edited_since_render(folder), changed=edited)
    if edited and say:
        say(f"passwords edited in {credentials.path}: {', '.join(edited)} (`devbox up` applies them)")
    credentials.save()
    public_keys = ensure_host_keys(spec, folder)
    material = {
        host.name: HostMaterial(credentials.hashes(spec, host), public_keys[host.name])
        for host in spec.hosts
    }
    return material, created


def read_known_hosts(path: Path) -> dict[str, str]:
    """known_hosts as devbox writes it ("alias key-type key" lines), by alias.

    Raises UsageError naming the file and the fix when it is missing or damaged (a bad line,
    bytes that are not UTF-8): `devbox render` writes it again from the host keys.
    """
    fix = "run `devbox render` to write it again from the host keys"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"{path}: missing; {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it ({type(exc).__name__}: not devbox's text); remove it and "
                         f"{fix}") from None  # fmt: skip
    known = {}
    for number, line in enumerate(lines, 1):
        words = line.split()
        if not words:
            continue
        if len(words) != 3 or not words[1].startswith(("ssh-", "ecdsa-")):
            raise UsageError(f"{path}:{number}: not a known_hosts line (alias, key type, key); remove the file "
                             f"and {fix}")  # fmt: skip
        known[words[0]] = f"{words[1]} {words[2]}"
    return known


def write_if_changed(path: Path, content: str, mode: int) -> bool:
    """Write only when the text differs, so unchanged files keep their timestamps."""
    try:
        if path.read_text(encoding="utf-8") == content and (path.stat().st_mode & 0o777) == mode:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    if mode & 0o077 == 0:
        write_private(path, content)
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def write_files(folder: Path, files: list[RenderedFile]) -> list[str]:
    """Write rendered files below ``folder``; returns the paths that changed."""
    changed = []
    root = Path(os.path.realpath(folder))
    for file in files:
        target = Path(os.path.realpath(root / file.path))
        if root not in target.parents:
            raise UsageError(f"refusing to write {file.path!r} outside {root}")
        if write_if_changed(target, file.content, file.mode):
            changed.append(file.path)
    return changed


@contextlib.contextmanager
def project_lock(folder: Path, *, wait: bool = True, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Serialise `up`/`down`/`passwd` of one project: a second run waits (or, with ``wait=False``,
    refuses) instead of racing; ``on_wait`` is told once when it has to wait."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "w", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise UsageError(f"another devbox command is working on {folder}; wait for it to finish") from None
            if on_wait:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
