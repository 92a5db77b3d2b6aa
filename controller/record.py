"""Record: the deploy history and the controller's settings, in SQLite.

Every deploy attempt gets a row: commit, author, message, trigger, timings
per stage, per-module build results with diagnostics, outcome and reason,
and its full log. Settings hold what must survive a restart: which commit is
live, and whether auto-sync is suspended (pinned by a rollback).
"""
from __future__ import annotations

import json
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
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT);
"""
#: Outcomes that mark a commit as failed: it is not retried until a new commit.
FAILED = ("failed", "rolled_back")
COLUMNS = ("id", "commit_sha", "author", "message", "trigger", "started", "finished", "outcome",
           "reason", "detail", "release", "previous_release", "stages", "modules", "log")


class History:
    """The deploy history in ``hotplate.db``. Safe to use from several threads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with closing(self.connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def start(self, trigger: str, commit: dict | None = None, previous_release: str | None = None) -> int:
        commit = commit or {}
        with closing(self.connect()) as db, db:
            cur = db.execute(
                "INSERT INTO deploys (commit_sha, author, message, trigger, started, previous_release) VALUES (?,?,?,?,?,?)",
                (commit.get("sha"), commit.get("author"), commit.get("message"), trigger, time.time(), previous_release))
            return cur.lastrowid

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

    def setting(self, key: str, default: str | None = None) -> str | None:
        with closing(self.connect()) as db:
            row = db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set(self, key: str, value: str | None) -> None:
        with closing(self.connect()) as db, db:
            if value is None:
                db.execute("DELETE FROM settings WHERE key=?", (key,))
            else:
                db.execute("INSERT INTO settings (key, value) VALUES (?, ?) "
                           "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))


def _row(row: tuple) -> dict:
    d = dict(zip(COLUMNS, row))
    d["stages"] = json.loads(d["stages"])
    d["modules"] = json.loads(d["modules"])
    return d
