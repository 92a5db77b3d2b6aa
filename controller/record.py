"""Record: the deploy history, in SQLite.

Every deploy attempt gets a row: commit, author, message, trigger, timings
per stage, per-module build results with diagnostics, outcome and reason,
and its full log. What is live and whether it is pinned are not kept here
(``current`` and ``pinned`` in the state directory say it), so a damaged
database loses history, never the live release or a pin.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS deploys (
    id INTEGER PRIMARY KEY,
    commit_sha TEXT, author TEXT, message TEXT, trigger TEXT NOT NULL,
    started REAL NOT NULL, finished REAL,
    outcome TEXT NOT NULL DEFAULT 'progressing',
    reason TEXT, detail TEXT,
    release TEXT, previous_release TEXT,
    stages TEXT NOT NULL DEFAULT '{}',
    modules TEXT NOT NULL DEFAULT '[]',
    log TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS deploys_commit ON deploys (commit_sha);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT, role TEXT,
    method TEXT NOT NULL, path TEXT NOT NULL, status INTEGER NOT NULL, address TEXT
);
CREATE TABLE IF NOT EXISTS notifications (
    delivery TEXT PRIMARY KEY, deploy INTEGER, event TEXT NOT NULL, target TEXT NOT NULL,
    attempts INTEGER NOT NULL, error TEXT, at REAL NOT NULL
);
"""
#: Outcomes that mark a commit as failed: it is not retried until a new
#: commit (or ``hotplate retry``). ``errored`` deploys are retried.
FAILED = ("failed", "rolled_back")
#: Audit log rows kept; older ones go (a bot hammering a bad token cannot fill the disk).
AUDIT_KEPT = 100_000
#: The first bytes of every SQLite 3 database file.
MAGIC = b"SQLite format 3\0"
COLUMNS = ("id", "commit_sha", "author", "message", "trigger", "actor", "started", "finished", "outcome",
           "reason", "detail", "release", "previous_release", "stages", "modules", "log")


class History:
    """The deploy history in ``hotplate.db``. Safe to use from several threads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.damage: str | None = None
        with closing(self.connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            if "actor" not in {row[1] for row in db.execute("PRAGMA table_info(deploys)")}:
                db.execute("ALTER TABLE deploys ADD COLUMN actor TEXT")  # a history from before named tokens
        self.path.chmod(0o600)

    @classmethod
    def open(cls, path: Path, expected: bool) -> "History":
        """Open the history, setting a damaged file aside for a new one.

        :param expected: whether a database should exist (the state directory
            has releases): a missing one is then reported as lost too.
        The result's :attr:`damage` says what was found and lost, or is None.
        """
        path = Path(path)
        damage = _check(path, expected)
        if damage and path.exists():
            aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
            for suffix in ("", "-wal", "-shm"):
                if Path(f"{path}{suffix}").exists():
                    os.replace(f"{path}{suffix}", f"{aside}{suffix}")
            damage += f"; set aside as {aside.name}"
        history = cls(path)
        if damage:
            history.damage = (f"{path.name} {damage}. Deploy history before now is lost; kept: the releases on "
                              "disk, the live release (`current`) and any rollback pin")
        return history

    def connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable at each checkpoint, never corrupt
        return db

    def start(self, trigger: str, commit: dict | None = None, previous_release: str | None = None,
              actor: str | None = None) -> int:
        """A deploy begins. ``actor``: who asked for it (a token's name, the
        pusher), None when the controller itself did (a poll, its start)."""
        commit = commit or {}
        with closing(self.connect()) as db, db:
            cur = db.execute(
                "INSERT INTO deploys (commit_sha, author, message, trigger, actor, started, previous_release) "
                "VALUES (?,?,?,?,?,?,?)",
                (commit.get("sha"), commit.get("author"), commit.get("message"), trigger, actor, time.time(),
                 previous_release))
            return cur.lastrowid

    def attribute(self, deploy_id: int, actor: str) -> None:
        """Name who asked for a deploy that began before it was known (a push
        whose deploy the moving ref began: its hook says who pushed)."""
        with closing(self.connect()) as db, db:
            db.execute("UPDATE deploys SET actor=? WHERE id=? AND actor IS NULL", (actor, deploy_id))

    def finish(self, deploy_id: int, outcome: str, *, reason: str | None = None, detail: str | None = None,
               release: str | None = None, stages: dict | None = None, modules: list | None = None,
               log: str = "") -> None:
        with closing(self.connect()) as db, db:
            db.execute(
                "UPDATE deploys SET finished=?, outcome=?, reason=?, detail=?, release=?, stages=?, modules=?, log=? WHERE id=?",
                (time.time(), outcome, reason, detail, release, json.dumps(stages or {}), json.dumps(modules or []),
                 log, deploy_id))

    def interrupt_unfinished(self) -> int:
        """Mark deploys a killed controller left open; returns how many."""
        with closing(self.connect()) as db, db:
            return db.execute(
                "UPDATE deploys SET finished=?, outcome='interrupted', reason='ControllerRestarted', "
                "detail='the controller stopped during this deploy; live stayed on the previous release' "
                "WHERE outcome='progressing'", (time.time(),)).rowcount

    def get(self, deploy_id: int) -> dict | None:
        with closing(self.connect()) as db:
            row = db.execute(f"SELECT {','.join(COLUMNS)} FROM deploys WHERE id=?", (deploy_id,)).fetchone()
        return _row(row) if row else None

    def list(self, limit: int = 20) -> list[dict]:
        with closing(self.connect()) as db:
            rows = db.execute(f"SELECT {','.join(COLUMNS)} FROM deploys ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [_row(r) for r in rows]

    def record_delivery(self, delivery: str, deploy: int, event: str, target: str, attempts: int,
                        error: str | None) -> None:
        """One notification's outcome (controller/notify.py): error None when delivered."""
        with closing(self.connect()) as db, db:
            db.execute("INSERT INTO notifications (delivery, deploy, event, target, attempts, error, at) "
                       "VALUES (?,?,?,?,?,?,?)", (delivery, deploy, event, target, attempts, error, time.time()))

    def deliveries(self, limit: int = 50) -> list[dict]:
        """The delivery log, newest first."""
        with closing(self.connect()) as db:
            rows = db.execute("SELECT delivery, deploy, event, target, attempts, error, at FROM notifications "
                              "ORDER BY at DESC LIMIT ?", (limit,)).fetchall()
        keys = ("delivery", "deploy", "event", "target", "attempts", "error", "at")
        return [dict(zip(keys, row)) for row in rows]

    def audit(self, actor: str | None, role: str | None, method: str, path: str, status: int,
              address: str | None) -> None:
        """One API call: who, what, and how it was answered (refusals too)."""
        with closing(self.connect()) as db, db:
            db.execute("INSERT INTO audit (at, actor, role, method, path, status, address) VALUES (?,?,?,?,?,?,?)",
                       (time.time(), actor, role, method, path[:2000], status, address))
            db.execute("DELETE FROM audit WHERE id <= (SELECT MAX(id) FROM audit) - ?", (AUDIT_KEPT,))

    def audit_log(self, limit: int = 100) -> list[dict]:
        """The audit log, newest first."""
        keys = ("at", "actor", "role", "method", "path", "status", "address")
        with closing(self.connect()) as db:
            rows = db.execute(f"SELECT {','.join(keys)} FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(zip(keys, row)) for row in rows]

    def failure(self, commit_sha: str) -> dict | None:
        """The last failed deploy of this commit, if it failed (it is not retried)."""
        with closing(self.connect()) as db:
            row = db.execute(f"SELECT {','.join(COLUMNS)} FROM deploys WHERE commit_sha=? AND outcome IN (?,?) "
                             "ORDER BY id DESC LIMIT 1", (commit_sha, *FAILED)).fetchone()
        return _row(row) if row else None

    def live_releases(self, limit: int = 50) -> list[tuple[str, str | None]]:
        """(release, commit) of the latest successful deploys, newest first."""
        with closing(self.connect()) as db:
            return db.execute("SELECT release, commit_sha FROM deploys WHERE outcome='succeeded' AND release IS NOT NULL "
                              "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()

    def outcomes(self) -> dict[str, int]:
        """How many deploys ended each way."""
        with closing(self.connect()) as db:
            return dict(db.execute("SELECT outcome, COUNT(*) FROM deploys GROUP BY outcome ORDER BY outcome").fetchall())


def _check(path: Path, expected: bool) -> str | None:
    """What is wrong with the database file, or None if it looks sound."""
    if not path.exists():
        return "was missing" if expected else None
    try:
        with path.open("rb") as f:
            head = f.read(len(MAGIC))
    except OSError as e:
        return f"could not be read ({e})"
    if not head:
        return "was empty (0 bytes)"
    if head != MAGIC:
        return "is not an SQLite database"
    try:
        with closing(sqlite3.connect(path, timeout=10)) as db:
            result = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as e:
        return f"is corrupt ({e})"
    return None if result == "ok" else f"is corrupt ({result})"


def _row(row: tuple) -> dict:
    d = dict(zip(COLUMNS, row))
    d["stages"] = json.loads(d["stages"])
    d["modules"] = json.loads(d["modules"])
    return d
