"""People, not one shared token: named API tokens, each with a role.

A token is shown once, when it is made (``hotplate token create``), and
kept only as its SHA-256 (a random 256-bit secret needs no slow hash: there
is nothing to guess from its digest). ``STATE/tokens.json`` holds them, a
file of its own beside ``STATE/token`` rather than a table, so that a damaged
history database never locks anyone out. ``STATE/token``, the token of the
first release of hotplate and of the push hook, stays valid as the first
admin, named :data:`FIRST`.

Roles, each including the one before it:

- ``viewer``: read status, history, logs, releases, the diff, the config's keys.
- ``deployer``: also push, sync, retry, roll back, restart, resume, revert.
- ``admin``: also change the config and read the audit log.
"""
from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from hotplate.server.contract.layout import Layout, write_atomic

from .errors import HotplateError

ROLES = ("viewer", "deployer", "admin")
#: The name ``STATE/token`` goes by in the history and the audit log.
FIRST = "admin"
NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
PREFIX = "hp_"  # made tokens say what they are (secret scanners, a glance at a config file)


@dataclass(frozen=True)
class Identity:
    """Who a request is: a token's name and role."""

    name: str
    role: str

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Tokens:
    """The named tokens of one state directory."""

    def __init__(self, state: Layout):
        self.state = state

    def read(self) -> dict[str, dict]:
        """name -> {"role", "sha256", "created"}; {} when there is no file yet.
        A file that is not such a mapping is refused whole, never half-read."""
        try:
            with open(self.state.tokens_file, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise HotplateError(f"{self.state.tokens_file} cannot be read ({e}); named tokens are refused until "
                                f"it is fixed or removed (STATE/token still works)", "TokensUnreadable") from None
        if not isinstance(data, dict) or not all(
                isinstance(v, dict) and v.get("role") in ROLES and isinstance(v.get("sha256"), str)
                for v in data.values()):
            raise HotplateError(f"{self.state.tokens_file} is not a mapping of names to roles and digests; named "
                                "tokens are refused until it is fixed or removed", "TokensUnreadable")
        return data

    def identify(self, secret: str) -> Identity | None:
        """The identity a presented secret belongs to, or None."""
        if not secret:
            return None
        return self.by_digest(digest(secret))

    def by_digest(self, sha: str) -> Identity | None:
        """The identity a token's digest belongs to (a session keeps only the digest)."""
        first = self._first_digest()
        if first and hmac.compare_digest(sha, first):
            return Identity(FIRST, "admin")
        try:
            entries = self.read()
        except HotplateError:
            return None
        for name, entry in entries.items():
            if hmac.compare_digest(sha, entry["sha256"]):
                return Identity(name, entry["role"])
        return None

    def _first_digest(self) -> str | None:
        try:
            return digest(self.state.token_file.read_text().strip())
        except OSError:
            return None

    def create(self, name: str, role: str) -> str:
        """Make a token; returns its secret, which is kept nowhere."""
        if not NAME.fullmatch(name or ""):
            raise HotplateError(f"token name {name!r}: use 1-64 of a-z, 0-9, '.', '_', '@', '-' "
                                "(e.g. alice or ci-deploy)", "BadTokenName")
        if name == FIRST:
            raise HotplateError(f"{FIRST!r} is STATE/token's name; choose another", "BadTokenName")
        if role not in ROLES:
            raise HotplateError(f"role {role!r}: one of {', '.join(ROLES)}", "BadRole")
        secret = PREFIX + secrets.token_urlsafe(32)
        with self._locked() as entries:
            if name in entries:
                raise HotplateError(f"a token named {name!r} exists; revoke it first "
                                    f"(`hotplate token revoke {name}`)", "TokenExists")
            entries[name] = {"role": role, "sha256": digest(secret), "created": time.time()}
        return secret

    def revoke(self, name: str) -> None:
        if name == FIRST:
            raise HotplateError(f"{FIRST!r} is STATE/token: replace that file's content to change it "
                                "(the push hook reads it)", "FirstToken")
        with self._locked() as entries:
            if entries.pop(name, None) is None:
                raise HotplateError(f"no token named {name!r} (`hotplate token list`)", "NoSuchToken")

    def listing(self) -> list[dict]:
        """Every token's name, role and age: never a secret, never a digest."""
        first = {"name": FIRST, "role": "admin", "created": None, "note": "STATE/token"}
        return [first, *({"name": n, "role": e["role"], "created": e.get("created"), "note": ""}
                         for n, e in sorted(self.read().items()))]

    @contextmanager
    def _locked(self) -> Iterator[dict]:
        """The tokens, to change in place: written back when the block ends
        without an error, under a lock (two ``token create`` at once: neither
        loses the other's)."""
        fd = os.open(self.state.tokens_lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            entries = self.read()
            yield entries
            write_atomic(self.state.tokens_file, json.dumps(entries, indent=1), mode=0o600)
        finally:
            os.close(fd)
