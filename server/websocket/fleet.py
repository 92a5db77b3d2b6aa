"""Publications between hosts, through NATS (``--nats nats://HOST:PORT``).

With hotplate on several hosts, a handler's hp_publish on one host must
reach subscribers on every host. Each worker's hub also publishes to the
NATS subject ``hotplate.<app>.publications`` and delivers what arrives
there from other workers, in the same frames as the local bus
(server/websocket/bus.py), so a connection's per-publisher order and
deduplication work across hosts too: a publisher is its host's id and its
pid (:func:`origin`), unique in the fleet.

No broker, or a broker that is down, changes nothing on one host: the local
bus still carries publications between its workers; hosts meanwhile miss
each other's, and the client reconnects as it would after any outage.
"""
from __future__ import annotations

import logging
import os
import random
import re

from ..contract import report
from .bus import frame, parse

log = logging.getLogger("hotplate")
PID_BITS = 22  # Linux pids are below 2**22


def host_id() -> int:
    """A random id for this server's run, made once in the master."""
    return random.getrandbits(30) + 1


def origin(host: int, pid: int | None = None) -> int:
    """A publisher's id, unique across hosts: the host's id and the worker's pid."""
    return host << PID_BITS | (pid or os.getpid())


def forget_gone(seen: dict[int, int], me: int, keep: int) -> dict[int, int]:
    """A connection's last publication from each publisher, without this
    host's exited workers, and with at most ``keep`` of other hosts' (the
    latest): what a moving connection carries stays bounded."""
    host = me >> PID_BITS
    mine = {o: s for o, s in seen.items() if o >> PID_BITS == host and report.pid_alive(o & (1 << PID_BITS) - 1)}
    others = [(o, s) for o, s in seen.items() if o >> PID_BITS != host]
    return {**mine, **dict(others[-keep:])}


def subject(app: str) -> str:
    return f"hotplate.{re.sub(r'[^A-Za-z0-9_-]', '_', app)}.publications"


class FleetBus:
    def __init__(self, url: str, app: str, me: int, deliver):
        self.url, self.subject, self.me, self.deliver = url, subject(app), me, deliver
        self.nc = None
        self.failure: type[Exception] | tuple = ()  # nats' errors, once it is imported

    async def start(self) -> None:
        """Connect and subscribe; reconnects forever on its own, never raises.
        nats (and what it imports) is loaded here, by a fleet's hosts only:
        a master and its workers are 2 MB smaller without it (issue 23)."""
        import nats
        from nats.errors import Error

        self.failure = Error

        async def error(e):
            log.warning("nats %s: %s; publications stay on this host until it answers", self.url, e)
        try:
            self.nc = await nats.connect(self.url, connect_timeout=2, max_reconnect_attempts=-1,
                                         reconnect_time_wait=1, error_cb=error, allow_reconnect=True)
            await self.nc.subscribe(self.subject, cb=self.received)
        except (OSError, Error) as e:
            log.error("nats %s: %s; publications stay on this host", self.url, e)
            self.nc = None

    async def received(self, msg) -> None:
        at, publisher, seq, topic, kind, data = parse(msg.data)
        if publisher != self.me:  # delivered here when it was published
            self.deliver(at, publisher, seq, topic, kind, data)

    async def send(self, at: float, seq: int, topic: str, kind: int, data: bytes) -> None:
        if self.nc is not None and self.nc.is_connected:
            try:
                await self.nc.publish(self.subject, frame(at, self.me, seq, topic.encode(), kind, data))
            except self.failure as e:
                log.warning("nats %s: a publication to %s did not leave this host: %s", self.url, topic, e)
