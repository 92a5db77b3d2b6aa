"""The state directory as the controller keeps it: its paths are the
contract's (server/contract/layout.py, the one place a path under STATE is
built); what only the controller does with them is here."""
from __future__ import annotations

import fcntl
import json
import os
import pwd
import secrets
from dataclasses import dataclass
from pathlib import Path

from hotplate.server.contract.layout import Layout, write_atomic
from hotplate.server.contract.release import ReleaseSpec

from .account import check_reachable
from .errors import HotplateError


@dataclass(frozen=True)
class State(Layout):
    """The state directory as the controller keeps it: its layout
    (server/contract/layout.py, every path) and what only the controller
    does with it (make it, take it, pin, read releases).

    :param worker_user: the account the workers run as (controller/account.py),
        which owns ``data/``; None: the controller's own.
    """

    worker_user: str | None = None

    def make(self) -> "State":
        """Create the layout. The token, the history, the repository and the
        build cache are the controller's alone; a separate workers' account
        may only pass through the root (0711) to the releases, and write its
        data (and a sanitizer's reports). The directories of the workers'
        reports and metrics are root's: the gunicorn master makes each
        worker's files there (server/contract/report.py), so module code cannot
        plant a link, a FIFO or a forged report where root reads."""
        for path in (self.root, self.releases, self.commits, self.run, self.workers, self.metrics, self.data,
                     self.sanitizer):
            path.mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(mode=0o700, exist_ok=True)
        self.cache.chmod(0o700)
        self.root.chmod(0o711)
        for path in (self.run, self.workers, self.metrics):
            _own(path, os.geteuid(), os.getegid(), 0o755)
        if self.worker_user:
            check_reachable(self.worker_user, self.root,
                            "or put the state directory elsewhere (e.g. /var/lib/hotplate)")
            account = pwd.getpwnam(self.worker_user)
            for path in (self.data, self.sanitizer):
                _own(path, account.pw_uid, account.pw_gid, 0o700)
        return self

    def token(self) -> str:
        """The API token for state-changing calls; made on first use, mode 0600."""
        path = self.token_file
        if not path.exists():
            write_atomic(path, secrets.token_urlsafe(32), mode=0o600)
        return path.read_text().strip()

    def session_secret(self) -> str:
        """The key that signs the dashboard's session cookies; made on first
        use, mode 0600. Removing it signs everyone out."""
        path = self.session_key
        if not path.exists():
            write_atomic(path, secrets.token_urlsafe(32), mode=0o600)
        return path.read_text().strip()

    def release_path(self, release_id: str) -> Path:
        return self.releases / release_id

    def release(self, release_id: str | None) -> ReleaseSpec | None:
        """A retained release's spec, or None if it is not (whole) on disk."""
        try:
            return ReleaseSpec.load(self.release_path(release_id)) if release_id else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def build_info(self, release_id: str) -> dict:
        """What ``build.json`` says of a release (its commit, when built), or {}."""
        data = self.read_json(self.release_path(release_id) / "build.json", {})
        return data if isinstance(data, dict) else {}

    def prune_commits(self) -> None:
        """Drop commit and tree links whose release was pruned."""
        for links in (self.commits, self.trees):
            for link in links.iterdir() if links.is_dir() else ():
                if not link.exists():
                    link.unlink(missing_ok=True)

    def pinned(self) -> str | None:
        """The release a rollback pinned live to, if any. A file, not a row:
        it must survive a damaged database."""
        try:
            return self.pin_file.read_text().strip() or None
        except OSError:
            return None

    def pin(self, release_id: str | None) -> None:
        if release_id is None:
            self.pin_file.unlink(missing_ok=True)
        else:
            write_atomic(self.pin_file, release_id + "\n")

    def lock(self, role: str) -> int:
        """Take the state directory for one ``up``, ``dev`` or ``serve``: an
        OS lock, so a killed holder releases it. Returns the descriptor,
        which holds the lock until the process exits.

        :raises HotplateError: when another process holds it.
        """
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise HotplateError(f"{self.root} is in use: already running ({holder}); stop it first, "
                                "or pass another --state") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"hotplate {role}, pid {os.getpid()}".encode())
        return fd

    def read_json(self, path: Path, default=None):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return default


def _own(path: Path, uid: int, gid: int, mode: int) -> None:
    """Give directory ``path`` its owner and mode, never through a link
    (an older layout let the workers' account own some of these)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)

