"""The state directory: every path under it, and the links and records in
it that the controller and the gunicorn master agree on.

Every path under ``STATE`` is built here (:class:`Layout`), nowhere else:
the controller (controller/state.py adds what only it does), the master,
its workers, the smoke check and the job runner all derive theirs from one
root. ``current`` links to ``commits/<sha>``, itself a link to
``releases/<id>``: one readlink gives the live commit, its target the live
release, and :meth:`Layout.switch` replaces both at once. ``verified``
names the release (and commit) that last passed everything it had to: its
own health gate and, in a fleet, the fleet's rollout. The controller
writes both; the master reads them to fence itself when its controller
died mid-deploy (server/gunicorn_app.py: it goes back to ``verified`` by
itself).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: The name part of a link for a tree deployed without a commit (dev, serve).
WORKTREE = "worktree"


@dataclass(frozen=True)
class Verified:
    """The release a host may serve when nobody is deploying."""

    release: str
    commit: str | None = None


@dataclass(frozen=True)
class Layout:
    """Paths under the state root (``.hotplate/`` by default).

    ``repo.git`` the hosted (or mirrored) repository, ``cache/`` build cache,
    ``releases/`` release directories, ``commits/`` one link per deployed
    commit to the release it built, ``current`` the live link, ``verified``
    what this host may serve, ``pinned`` a rollback's pin, ``run/`` pid
    files, the master's socket and the workers' reports and metrics (root's:
    module code never writes there), ``data/`` the workers' working
    directory (module files such as SQLite databases, ``jobs.db``),
    ``hotplate.db`` deploy history.
    """

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).resolve())

    @functools.cached_property  # (each WebSocket move names its socket with it)
    def tag(self) -> str:
        """A short name for this state directory where a path cannot go:
        abstract socket addresses, cgroups, /dev/shm."""
        return hashlib.sha256(str(self.root).encode()).hexdigest()[:12]

    # -- the controller's -------------------------------------------------

    repo = property(lambda self: self.root / "repo.git")
    cache = property(lambda self: self.root / "cache")
    sources = property(lambda self: self.root / "src")
    pin_file = property(lambda self: self.root / "pinned")
    lock_file = property(lambda self: self.root / "lock")
    token_file = property(lambda self: self.root / "token")
    tokens_file = property(lambda self: self.root / "tokens.json", doc="Named API tokens, hashed, with their "
                                                                       "roles (controller/tokens.py).")
    tokens_lock = property(lambda self: self.root / ".tokens.lock")
    session_key = property(lambda self: self.root / "session.key", doc="Signs the dashboard's session cookies.")
    db = property(lambda self: self.root / "hotplate.db")
    config = property(lambda self: self.root / "config", doc="The app's config and secrets, encrypted "
                                                            "(controller/appconfig.py).")
    verify_file = property(lambda self: self.root / "verify.json", doc="The signed-commit policy of "
                                                                       "``hotplate up --verify``.")
    trees = property(lambda self: self.root / "trees", doc="What each tree was released as: a link per tree, "
                                                           "config set and toolchain (controller/recall.py).")

    # -- shared with the master --------------------------------------------

    releases = property(lambda self: self.root / "releases")
    commits = property(lambda self: self.root / "commits")
    current = property(lambda self: self.root / "current")
    verified_file = property(lambda self: self.root / "verified")
    run = property(lambda self: self.root / "run")
    workers = property(lambda self: self.run / "workers", doc="Each worker's report (contract/report.py).")
    metrics = property(lambda self: self.run / "metrics", doc="The workers' metric files (server/metrics.py).")
    sanitizer = property(lambda self: self.run / "sanitizer", doc="Sanitizer reports of ``dev --sanitize``, "
                                                                  "written by module processes.")
    server_pid = property(lambda self: self.run / "server.pid")
    server_log = property(lambda self: self.run / "server.log")
    master_socket = property(lambda self: self.run / "master.sock", doc="The controller's line to the gunicorn "
                                                                         "master (contract/control.py).")
    controller_info = property(lambda self: self.run / "controller.json", doc="The running controller's pid "
                                                                              "and API (removed at its stop).")
    fenced = property(lambda self: self.run / "fenced", doc="Present while the controller that was gating the "
                                                            "live release is gone (the master's fence): only "
                                                            "the verified release may then call itself ready.")
    dev_errors = property(lambda self: self.run / "dev-error.txt")
    data = property(lambda self: self.root / "data")
    jobs_db = property(lambda self: self.data / "jobs.db")
    store = property(lambda self: self.data / "store", doc="The default LMDB store behind hp_kv_*.")

    @property
    def config_render(self) -> Path:
        """Where the workers read a release's config set as plaintext: a
        directory in memory (tmpfs), never on disk; one per state directory."""
        shm = Path("/dev/shm")
        return shm / f"hotplate-{os.getuid()}-{self.tag}" if shm.is_dir() and os.access(shm, os.W_OK) \
            else self.run / "config"

    # -- what is live, and what is verified ----------------------------------

    def live_release(self) -> str | None:
        """The id of the release ``current`` leads to, if it exists."""
        target = Path(os.path.realpath(self.current))
        return target.name if target.parent == self.releases.resolve() and target.is_dir() else None

    def live_commit(self) -> str | None:
        """The commit ``current`` names (``commits/<sha>``), if it names one."""
        try:
            link = Path(os.readlink(self.current))
        except OSError:
            return None
        return link.name if link.parent.name == "commits" and WORKTREE not in link.name else None

    def switch(self, release_id: str, commit: str | None) -> None:
        """Point ``current`` at a release atomically, through the link of the
        commit that built it (``commits/<sha>``; a working tree without git
        has none): readers see the old pair or the new pair, never a mix."""
        name = commit or f"{WORKTREE}-{release_id}"
        link(self.commits / name, os.path.join("..", "releases", release_id))
        link(self.current, os.path.join("commits", name))

    def verified(self) -> Verified | None:
        """The release that last passed everything it had to."""
        try:
            data = json.loads(self.verified_file.read_text())
            return Verified(str(data["release"]), data.get("commit") and str(data["commit"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def vouch(self, release_id: str, commit: str | None) -> None:
        """Record ``release_id`` as verified for this host."""
        write_atomic(self.verified_file, json.dumps({"release": release_id, "commit": commit}) + "\n")

    def ready(self, release: str) -> bool:
        """Whether a worker on ``release`` may take traffic: it is verified,
        or it is live and a living controller gates it."""
        verified = self.verified()
        return (verified is not None and verified.release == release) or \
            (release == self.live_release() and not self.fenced.exists())


def link(path: Path, target: str) -> None:
    """Make ``path`` a symlink to ``target``, replacing any old one atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, path)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a file so readers see the old or the new content, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
