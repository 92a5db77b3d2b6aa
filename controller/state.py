"""The state directory: everything hotplate keeps, under one root.

Like Piku's settings block: every path is derived here, nowhere else.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pwd
import secrets
from dataclasses import dataclass
from pathlib import Path

from hotplate.server import layout
from hotplate.server.contract import ReleaseSpec
from hotplate.server.layout import WORKTREE, Verified

from .account import check_reachable
from .errors import HotplateError


@dataclass(frozen=True)
class State:
    """Paths under the state root (``.hotplate/`` by default).

    ``repo.git`` the hosted (or mirrored) repository, ``cache/`` build cache,
    ``releases/`` release directories, ``commits/`` one link per deployed
    commit to the release it built, ``current`` the live link (to a commit's
    link, so one readlink says the live commit and its target the live
    release), ``pinned`` a rollback's pin, ``run/`` pid files and worker
    reports, ``data/`` the workers' working directory (module files such as
    SQLite databases), ``hotplate.db`` deploy history.

    :param worker_user: the account the workers run as (controller/account.py),
        which owns ``data/`` and ``run/workers/``; None: the controller's own.
    """

    root: Path
    worker_user: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).resolve())

    @property
    def repo(self) -> Path:
        return self.root / "repo.git"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def sources(self) -> Path:
        return self.root / "src"

    @property
    def commits(self) -> Path:
        return self.root / "commits"

    @property
    def pin_file(self) -> Path:
        return self.root / "pinned"

    @property
    def lock_file(self) -> Path:
        return self.root / "lock"

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def workers(self) -> Path:
        return self.run / "workers"

    @property
    def sanitizer(self) -> Path:
        """Sanitizer reports of a ``dev --sanitize`` server (server/sanitize.py), written by module processes."""
        return self.run / "sanitizer"

    @property
    def verify_file(self) -> Path:
        """The signed-commit policy of ``hotplate up --verify`` (controller/verify.py)."""
        return self.root / "verify.json"

    @property
    def metrics(self) -> Path:
        """The workers' metric files (prometheus_client's multiprocess mode: server/metrics.py)."""
        return self.run / "metrics"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def db(self) -> Path:
        return self.root / "hotplate.db"

    @property
    def server_pid(self) -> Path:
        return self.run / "server.pid"

    @property
    def control_socket(self) -> Path:
        return self.run / "gunicorn.ctl"

    @property
    def controller_info(self) -> Path:
        return self.run / "controller.json"

    @property
    def config(self) -> Path:
        """The app's config and secrets, encrypted (controller/appconfig.py)."""
        return self.root / "config"

    @property
    def config_render(self) -> Path:
        """Where the workers read a release's config set as plaintext: a
        directory in memory (tmpfs), never on disk; one per state directory."""
        tag = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        shm = Path("/dev/shm")
        return shm / f"hotplate-{os.getuid()}-{tag}" if shm.is_dir() and os.access(shm, os.W_OK) \
            else self.run / "config"

    def make(self) -> "State":
        """Create the layout. The token, the history, the repository and the
        build cache are the controller's alone; a separate workers' account
        may only pass through the root (0711) to the releases, and write its
        data (and a sanitizer's reports). The directories of the workers'
        reports and metrics are root's: the gunicorn master makes each
        worker's files there (server/report.py), so module code cannot
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
        path = self.root / "token"
        if not path.exists():
            write_atomic(path, secrets.token_urlsafe(32), mode=0o600)
        return path.read_text().strip()

    def live_release(self) -> str | None:
        """The id of the release ``current`` leads to, if it exists."""
        return layout.live_release(self.root)

    def live_commit(self) -> str | None:
        """The commit ``current`` names (``commits/<sha>``), if it names one."""
        try:
            link = Path(os.readlink(self.current))
        except OSError:
            return None
        return link.name if link.parent.name == "commits" and WORKTREE not in link.name else None

    def release_path(self, release_id: str) -> Path:
        return self.releases / release_id

    def release(self, release_id: str | None) -> ReleaseSpec | None:
        """A retained release's spec, or None if it is not (whole) on disk."""
        try:
            return ReleaseSpec.load(self.release_path(release_id)) if release_id else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def switch(self, release_id: str, commit: str | None) -> None:
        """Point ``current`` at a release atomically (server/layout.py)."""
        layout.switch(self.root, release_id, commit)

    def verified(self) -> Verified | None:
        """The release that last passed everything it had to (server/layout.py)."""
        return Verified.read(self.root)

    def vouch(self, release_id: str, commit: str | None) -> None:
        """Record ``release_id`` as verified for this host."""
        Verified(release_id, commit).write(self.root)

    def prune_commits(self) -> None:
        """Drop commit links whose release was pruned."""
        for link in self.commits.iterdir():
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


write_atomic = layout.write_atomic
