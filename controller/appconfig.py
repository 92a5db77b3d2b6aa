"""App config and secrets, Heroku-style: ``hotplate config set KEY=VALUE``.

Two sources, merged at each deploy, the operator's winning:

- the operator's set, outside git, in ``STATE/config/operator.age``;
- ``config.yaml`` next to ``deploy.yaml``, committed: a mapping of keys to
  values, each plain or encrypted with age to this controller's recipient
  (``hotplate config recipient``), SOPS-style.

Everything at rest is encrypted with age (pyrage) to the controller's own
identity (``STATE/config/identity``, 0600: the workers' account cannot read
it). A deploy seals the merged set under its digest (``sets/<digest>.age``)
and the release records only the digest, so a rollback restores exactly the
set that release ran with. Workers read a set as plaintext JSON from a tmpfs
directory the controller renders (:attr:`State.config_render`), never from disk.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pwd
import re
import shutil
import stat
import threading
from pathlib import Path

import pyrage
import yaml
from pyrage import x25519

from hotplate.server.contract.layout import write_atomic

from .errors import HotplateError, RetryableError, StalledError
from .plan import safe_load
from .state import State

log = logging.getLogger("hotplate.controller")
#: The committed file, next to deploy.yaml.
COMMITTED = "config.yaml"
KEY = re.compile(r"[A-Z_][A-Z0-9_]{0,127}\Z")
MAX_KEYS = 256
MAX_VALUE = 64 * 1024
ARMOR = "-----BEGIN AGE ENCRYPTED FILE-----"
#: the controller is the one process that writes the operator's set (it holds the state lock)
_CHANGING = threading.Lock()


class ConfigError(HotplateError):
    """A config key or value the operator gave is not acceptable."""

    reason = "BadConfig"


def check(key: str, value: str) -> None:
    """:raises ConfigError: for a key or value modules could not read back."""
    if not KEY.match(key):
        raise ConfigError(f"config key {key!r}: use upper-case letters, digits and _ (like an environment variable), "
                          "not starting with a digit, at most 128 characters")
    if "\0" in value or len(value.encode()) > MAX_VALUE:
        raise ConfigError(f"config {key}: a value is text without NUL bytes, at most {MAX_VALUE} bytes")


def digest(values: dict[str, str]) -> str | None:
    """The digest a release records for a set; None for no config (so a
    release of an app without config keeps its id)."""
    if not values:
        return None
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


class ConfigStore:
    """The operator's set, the controller's identity, sealed and rendered sets."""

    def __init__(self, state: State):
        self.state = state
        self.dir = state.config

    # -- the identity ------------------------------------------------------

    def identity(self) -> x25519.Identity:
        """The controller's age identity, made on first use (0600)."""
        path = self.dir / "identity"
        if not path.exists():
            self.dir.mkdir(mode=0o700, exist_ok=True)
            self.dir.chmod(0o700)
            write_atomic(path, str(x25519.Identity.generate()) + "\n", mode=0o600)
        try:
            return x25519.Identity.from_str(path.read_text().strip())
        except (OSError, pyrage.IdentityError) as e:
            raise RetryableError(f"{path}: not an age identity ({e}); restore it from a backup", "ConfigUnreadable") \
                from None

    def recipient(self) -> str:
        """The public key to encrypt committed values to (``age -r``)."""
        return str(self.identity().to_public())

    def encrypt(self, text: str) -> str:
        """``text`` encrypted to this controller, ASCII-armored for config.yaml."""
        return pyrage.encrypt(text.encode(), [self.identity().to_public()], armored=True).decode()

    def _seal(self, path: Path, data: dict) -> None:
        blob = pyrage.encrypt(json.dumps(data, sort_keys=True).encode(), [self.identity().to_public()])
        fd = os.open(f"{path}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(f"{path}.tmp", path)

    def _open(self, path: Path) -> dict:
        try:
            return json.loads(pyrage.decrypt(path.read_bytes(), [self.identity()]))
        except (OSError, ValueError, pyrage.DecryptError, pyrage.IdentityError) as e:
            raise RetryableError(f"{path} cannot be read with {self.dir / 'identity'}: {e}; restore both from "
                                "a backup, or remove the file and set the config again", "ConfigUnreadable") from None

    # -- the operator's set --------------------------------------------------

    def operator(self) -> dict[str, dict]:
        """``{KEY: {"value": ..., "secret": bool}}`` as ``hotplate config`` left it."""
        path = self.dir / "operator.age"
        return self._open(path) if path.exists() else {}

    def change(self, set_: dict[str, str] | None = None, unset: list[str] | None = None,
               secret: bool = False) -> dict[str, dict]:
        """Set and unset keys of the operator's set; return it. One change at
        a time: the API serves calls on several threads, and two read-modify-
        writes at once would lose one's keys."""
        with _CHANGING:
            return self._change(set_, unset, secret)

    def _change(self, set_, unset, secret) -> dict[str, dict]:
        current = self.operator()
        for key, value in (set_ or {}).items():
            check(key, value)
            current[key] = {"value": value, "secret": secret}
        missing = [k for k in unset or [] if k not in current]
        if missing:
            raise ConfigError(f"not set: {', '.join(missing)} (hotplate config list shows what is)")
        for key in unset or []:
            del current[key]
        if len(current) > MAX_KEYS:
            raise ConfigError(f"at most {MAX_KEYS} config keys")
        self.identity()  # makes the directory
        self._seal(self.dir / "operator.age", current)
        return current

    # -- a deploy's set --------------------------------------------------------

    def committed(self, text: str | None) -> dict[str, str]:
        """The values of a committed config.yaml, decrypted.

        :raises StalledError: with the key and what to do, for a file this
            controller cannot read (the commit's fault).
        """
        if text is None:
            return {}
        try:
            data = safe_load(text)
        except yaml.YAMLError as e:
            raise StalledError(f"{COMMITTED}: not valid YAML: {e}", "BadConfig") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise StalledError(f"{COMMITTED}: expected a mapping of KEY: value", "BadConfig")
        values = {}
        for key, value in data.items():
            if not isinstance(value, (str, int, float, bool)):
                raise StalledError(f"{COMMITTED}: {key}: a value is a string (or a number)", "BadConfig")
            value = str(value)
            if value.startswith(ARMOR):
                try:
                    value = pyrage.decrypt(value.encode(), [self.identity()]).decode()
                except (pyrage.DecryptError, UnicodeDecodeError) as e:
                    raise StalledError(f"{COMMITTED}: {key}: cannot decrypt ({e}): encrypt it to this controller's "
                                       "recipient (hotplate config encrypt VALUE)", "BadConfig") from None
            try:
                check(str(key), value)
            except ConfigError as e:
                raise StalledError(f"{COMMITTED}: {e}", "BadConfig") from None
            values[str(key)] = value
        return values

    def merged(self, committed_text: str | None) -> dict[str, str]:
        """The set a deploy gives its release: committed values under the operator's."""
        return {**self.committed(committed_text), **{k: v["value"] for k, v in self.operator().items()}}

    def seal(self, values: dict[str, str]) -> str | None:
        """Keep a deploy's set, encrypted, under its digest; return the digest."""
        d = digest(values)
        if d is not None:
            (self.dir / "sets").mkdir(parents=True, exist_ok=True)
            path = self.dir / "sets" / f"{d}.age"
            if not path.exists():
                self._seal(path, values)
        return d

    def share(self, d: str, recipients: list[str]) -> bytes:
        """Sealed set ``d`` encrypted to the fleet's hosts (their
        ``recipient``s, this one's included) instead of to this controller:
        what a leader publishes with a release."""
        values = self._open(self.dir / "sets" / f"{d}.age")
        keys = [x25519.Recipient.from_str(r) for r in {*recipients, self.recipient()}]
        return pyrage.encrypt(json.dumps(values, sort_keys=True).encode(), keys)

    def adopt(self, d: str, blob: bytes) -> None:
        """Keep set ``d`` as a leader shared it: it must open with this
        host's identity and have digest ``d`` (no one can swap its values).

        :raises StalledError: otherwise, saying which."""
        path = self.dir / "sets" / f"{d}.age"
        if path.exists():
            return
        try:
            values = json.loads(pyrage.decrypt(blob, [self.identity()]))
        except (ValueError, pyrage.DecryptError) as e:
            raise StalledError(f"config set {d} was not shared with this host ({e}): it joined after the release "
                                "was published; the next deploy shares it (a push, or `hotplate config set` on "
                                "the leader)", "ConfigNotShared") from None
        if not isinstance(values, dict) or digest(values) != d:
            raise StalledError(f"config set {d} arrived with other values; nothing was installed", "DigestMismatch")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._seal(path, values)

    def render(self, d: str | None) -> None:
        """Put set ``d`` where the workers read it (tmpfs): a directory of
        root's that nobody else may write (so module code cannot plant a
        link where root writes), each set a file made anew, readable by
        the workers' group only.

        :raises StalledError: if the set was never sealed here."""
        dfd = self._render_dir()  # made even for no set: the name must be root's before module code can take it
        try:
            if d is None:
                return
            sealed = self.dir / "sets" / f"{d}.age"
            name = f"{d}.json"
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                    return
                os.unlink(name, dir_fd=dfd)
            except FileNotFoundError:
                pass
            if not sealed.exists():
                raise StalledError(f"config set {d} is not in {sealed.parent}: the release was made by another "
                                    "controller; deploy a new commit", "ConfigMissing")
            data = json.dumps(self._open(sealed)).encode()
            tmp = f".{name}.{os.getpid()}.{threading.get_ident()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400,
                         dir_fd=dfd)
            try:
                os.write(fd, data)
                if self.state.worker_user:
                    os.fchown(fd, -1, pwd.getpwnam(self.state.worker_user).pw_gid)
                    os.fchmod(fd, 0o440)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        finally:
            os.close(dfd)

    def _render_dir(self) -> int:
        """A descriptor of the render directory, made if missing. Its name
        is known in advance in a directory anyone can write (/dev/shm): one
        that is not this process's own, private directory was planted, and
        is removed (and said so) before a real one is made."""
        path = self.state.config_render
        for _ in range(3):
            try:
                os.mkdir(path, 0o711)
            except FileExistsError:
                pass
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                fd = None
            if fd is not None:
                st = os.fstat(fd)
                if st.st_uid == os.geteuid() and not st.st_mode & 0o022:
                    return fd
                os.close(fd)
            log.warning("%s was not made by hotplate (a link, a file, or another account's directory); removing it",
                        path)
            _remove(path)
        raise RetryableError(f"{path}: something keeps replacing the directory of rendered config sets; "
                            "find the process that makes it", "ConfigUnreadable")

    def forget_rendered(self) -> None:
        """Remove every rendered set (the instance stops: no plaintext stays behind)."""
        path = self.state.config_render
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
            shutil.rmtree(path, ignore_errors=True)

    def listing(self, committed_text: str | None) -> list[dict]:
        """Every key with its source; secrets' values hidden. Committed
        values that were encrypted count as secret."""
        rows = {}
        try:
            data = safe_load(committed_text or "") or {}
        except yaml.YAMLError:
            data = {}
        for key, value in (data.items() if isinstance(data, dict) else ()):
            secret = str(value).startswith(ARMOR)
            rows[str(key)] = {"key": str(key), "value": None if secret else str(value), "secret": secret,
                              "source": COMMITTED}
        for key, v in self.operator().items():
            rows[key] = {"key": key, "value": None if v["secret"] else v["value"], "secret": v["secret"],
                         "source": "hotplate config"}
        return sorted(rows.values(), key=lambda r: r["key"])


def _remove(path: Path) -> None:
    """Remove whatever is at ``path``, never following a link (shutil.rmtree does not)."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
