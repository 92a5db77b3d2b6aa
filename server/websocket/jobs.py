"""Background jobs' events to WebSocket clients (hp_ws_subscribe(ws,
"job:ID")): the hub's feed polls the jobs database (server/jobs.py) and
sends each connection the events of the jobs it follows, then the job's end.

Where a connection is in a job's events lives in its session
(``Session.jobs``), so a connection that moves to another worker on a
deploy goes on from there: no event lost, none sent twice. A client that
reconnects subscribes to "job:ID@SEQ" to get those after SEQ.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from pathlib import Path

from . import calls

log = logging.getLogger("hotplate")
PREFIX = "job:"
POLL_S = 0.1
ENDED = ("succeeded", "failed", "cancelled")


def parse(topic: str) -> tuple[str, int] | None:
    """("ID", since) for a job topic, else None."""
    if not topic.startswith(PREFIX):
        return None
    job, _, since = topic[len(PREFIX):].partition("@")
    return (job, int(since)) if since.isdigit() else (job, 0)


class JobFeed:
    def __init__(self, hub, db: Path):
        self.hub, self.db = hub, db
        self.task: asyncio.Task | None = None

    def followers(self) -> dict[str, list]:
        """Each followed job and its connections."""
        jobs: dict[str, list] = {}
        for conn in self.hub.connections:
            for topic in conn.session.topics:
                if (job := parse(topic)) is not None:
                    conn.session.jobs.setdefault(job[0], job[1])
                    jobs.setdefault(job[0], []).append((conn, topic))
        return jobs

    def wake(self) -> None:
        """A connection follows a job now: poll until nobody follows any."""
        if self.task is None or self.task.done():
            self.task = self.hub.loop.create_task(self.run())

    async def run(self) -> None:
        while followers := self.followers():
            since = {job: min(conn.session.jobs[job] for conn, _ in conns) for job, conns in followers.items()}
            try:
                events, states = await self.hub.loop.run_in_executor(None, self.read, since)
            except sqlite3.Error as e:
                log.warning("job events cannot be read from %s: %s", self.db, e)
                events, states = [], {}
            for job, seq, at, data in events:
                message = json.dumps({"job": job, "seq": seq, "at": at, "data": data}).encode()
                for conn, _ in followers[job]:
                    if seq > conn.session.jobs[job]:
                        conn.session.jobs[job] = seq
                        conn.send(calls.TEXT, message)
            for job, (state, error) in states.items():
                if state in ENDED:
                    message = json.dumps({"job": job, "state": state, "error": error}).encode()
                    for conn, topic in followers[job]:
                        conn.send(calls.TEXT, message)
                        self.hub.unsubscribe(conn, topic)
                        conn.session.jobs.pop(job, None)
            await asyncio.sleep(POLL_S)

    def read(self, since: dict[str, int]) -> tuple[list[tuple], dict[str, tuple]]:
        """New events of the followed jobs, in order, and the jobs' states
        (read after the events, so an ended job has no event left to send)."""
        marks = ",".join("?" * len(since))
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)) as db:
            events = db.execute(
                f"SELECT job, seq, at, data FROM events WHERE job IN ({marks}) AND seq > ? ORDER BY seq LIMIT 5000",
                [*since, min(since.values())]).fetchall()
            states = {job: (state, error) for job, state, error in db.execute(
                f"SELECT id, state, error FROM jobs WHERE id IN ({marks})", list(since))}
        if len(events) == 5000:  # more to come: end no job this round
            states = {}
        return events, states
