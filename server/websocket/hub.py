"""A worker's WebSocket connections, on one event loop thread.

The hub owns the connections, the topics they subscribe to, the bus to the
other workers and the socket on which moved connections arrive. Gunicorn's
threads talk to it only through ``*_threadsafe`` methods. When the worker
retires, :meth:`Hub.retire` moves every connection to a worker of the
newest release.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import itertools
import logging
import os
import socket
import threading
import time
from collections import defaultdict, deque

from wsproto import ConnectionType
from wsproto.connection import Connection as Protocol
from wsproto.events import CloseConnection

from .. import metrics
from ..config import ServerConfig
from ..contract.layout import Layout
from ..contract.report import WS_CLOSED, WS_MOVED_IN, WS_MOVED_OUT, WS_OPENED
from . import calls, transfer
from .bus import Bus
from .calls import Session
from .fleet import FleetBus, forget_gone, origin
from .jobs import PREFIX as JOB_PREFIX, JobFeed
from .connection import Connection

log = logging.getLogger("hotplate")
MOVE_WAIT = 2.0  # seconds to wait for a connection to reach a message boundary
MOVE_BATCH = 16  # connections per move: one datagram; the next batch waits for its ack
TARGET_WAIT = 3.0  # seconds a retiring worker waits for another one to move its connections to
REPLAY_MAX = 10_000  # publications kept (ws_replay_seconds) for connections arriving or resuming, at most
REPLAY_BYTES = 16 << 20  # ... and of this size in all
SEEN_MAX = 32  # publishers remembered per connection before the dead ones are forgotten


class Hub:
    """One per worker process; see the module docstring."""

    def __init__(self, dispatcher, config: ServerConfig, layout: Layout, host: int):
        self.dispatcher = dispatcher
        self.config = config
        self.layout = layout
        self.sockets = {s.spec.path: s for s in dispatcher.modules.sockets}
        self.connections: set[Connection] = set()
        self.topics: dict[str, set[Connection]] = defaultdict(set)
        self.loop = asyncio.new_event_loop()
        self.bus = Bus(self.loop, layout, self.deliver)
        self.inbox: socket.socket | None = None
        self.moving = asyncio.Lock()
        self.seq = 0
        self.pauses: list[float] = []  # handoff pauses of connections that arrived, not yet logged
        self.pauses_logged: asyncio.TimerHandle | None = None
        self.acks: dict[int, asyncio.Future] = {}  # batches sent, by number, awaiting the taker's ack
        self.batches = itertools.count(1)
        self.recent: deque[tuple[float, int, int, str, int, bytes]] = deque()
        self.recent_bytes = 0
        self.jobs = JobFeed(self, layout.jobs_db)
        self.me = origin(host)
        self.fleet = FleetBus(config.nats, dispatcher.modules.spec.app, self.me, self.deliver) if config.nats else None

    def start(self) -> None:
        """Run the loop on its own thread; return once both sockets listen.

        :raises OSError: when they cannot (the thread has then ended).
        """
        ready: concurrent.futures.Future = concurrent.futures.Future()
        threading.Thread(target=self.run, args=(ready,), name="hotplate-ws", daemon=True).start()
        ready.result()

    def run(self, ready: concurrent.futures.Future) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.set_exception_handler(self.report_error)
        try:
            self.inbox = transfer.bind(self.layout)
            self.loop.add_reader(self.inbox, self.arrive)
            self.loop.run_until_complete(self.bus.start())
        except OSError as e:
            ready.set_exception(e)
            return
        if self.fleet is not None:
            self.loop.create_task(self.fleet.start())
        self.loop.create_task(self.keepalive())
        ready.set_result(None)
        self.loop.run_forever()

    @staticmethod
    def report_error(loop, context: dict) -> None:
        """A bug on the loop goes to the server log, not to asyncio's default stderr."""
        log.error("websocket hub: %s", context.get("message"), exc_info=context.get("exception"))

    # From gunicorn's threads

    def open_threadsafe(self, sock: socket.socket, route, session: Session, actions: list, pending: bytes) -> None:
        """Serve a connection whose handshake a request thread just answered."""
        self.loop.call_soon_threadsafe(self.adopt, sock, route, session, actions, pending)

    def publish_threadsafe(self, topic: str, kind: int, data: bytes) -> None:
        self.loop.call_soon_threadsafe(self.publish, topic, kind, data)

    def retire_threadsafe(self) -> concurrent.futures.Future:
        """Move every connection away; the future is done when they are gone."""
        return asyncio.run_coroutine_threadsafe(self.retire(), self.loop)

    # On the loop

    def adopt(self, sock: socket.socket, route, session: Session, actions: list, pending: bytes,
              paused_at: float | None = None) -> asyncio.Task:
        """Serve a socket: a new connection, or one moved here (``paused_at`` set)."""
        sock.setblocking(False)
        return self.loop.create_task(self.loop.connect_accepted_socket(
            lambda: Connection(self, route, session, pending, actions, paused_at), sock))

    def arrive(self) -> None:
        """Batches of connections moved here by a retiring worker, and
        acknowledgements of the batches this one sent."""
        while True:
            try:
                received = transfer.receive(self.inbox, self.layout)
            except OSError as e:
                log.error("ws: %s", e)
                return  # called again while more is waiting
            if received is None:
                return
            message, fds = received
            if "ack" in message:
                waiter = self.acks.pop(message["ack"], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
                continue
            self.loop.create_task(self.take(message, fds))

    async def take(self, message: dict, fds: list[int]) -> None:
        """Serve a batch of moved connections, then tell the sender, which
        pauses its next batch only then."""
        adopting = []
        for fd, meta in zip(fds, message["connections"]):
            sock = socket.socket(fileno=fd)
            session = Session.from_wire(meta)
            if len(session.seen) > SEEN_MAX:  # publishers of deploys long gone: bound what moves
                session.seen = forget_gone(session.seen, self.me, SEEN_MAX)
            route = self.sockets.get(session.route)
            if route is None or not route.module.ok:
                why = ("the route was removed by a deploy" if route is None
                       else f"module {route.module.name} is not loaded")
                self.refuse(sock, session, why)
                continue
            adopting.append(self.adopt(sock, route, session, [], base64.b64decode(meta["pending"]),
                                       meta["paused_at"]))
        await asyncio.gather(*adopting, return_exceptions=True)
        try:
            transfer.send(self.layout, message["sender"], {"ack": message["batch"]})
        except OSError:
            pass  # the sender is gone: nothing waits for this
        if not self.pauses_logged:
            self.pauses_logged = self.loop.call_later(0.5, self.log_pauses)

    def log_pauses(self) -> None:
        """One line per burst of arrivals: how long the moved connections
        went unread (from the old worker's last read to this one's first)."""
        pauses, self.pauses, self.pauses_logged = sorted(self.pauses), [], None
        if pauses:
            log.info("ws: %d connections arrived; handoff pause p50 %.1f ms, p99 %.1f ms, max %.1f ms, "
                     "%d over 50 ms", len(pauses), pauses[len(pauses) // 2] * 1000,
                     pauses[int(len(pauses) * 0.99)] * 1000, pauses[-1] * 1000, sum(x > 0.05 for x in pauses))

    def refuse(self, sock: socket.socket, session: Session, why: str) -> None:
        """Close a moved connection that this release cannot serve (1001)."""
        log.info("[req=%s] closing WebSocket on %s with 1001: %s", session.id, session.route, why)
        ws = Protocol(ConnectionType.SERVER)
        try:
            sock.setblocking(True)
            sock.settimeout(1.0)
            sock.sendall(ws.send(CloseConnection(1001, why[:123])))
        except OSError:
            pass
        finally:
            sock.close()

    def register(self, conn: Connection, moved_in: bool) -> None:
        self.dispatcher.counters.add(WS_MOVED_IN if moved_in else WS_OPENED)
        metrics.WS_EVENTS.labels("moved_in" if moved_in else "opened").inc()
        metrics.ws_connections().inc()
        self.connections.add(conn)
        for topic in conn.session.topics:
            self.topics[topic].add(conn)
        if any(topic.startswith(JOB_PREFIX) for topic in conn.session.topics):
            self.jobs.wake()
        if moved_in and conn.session.topics:  # a new connection has no topics yet: nothing to replay
            self.replay(conn, lambda at, publisher, since: at >= since)
        if self.dispatcher.retirement.started:  # it arrived as the worker goes: moved on too
            self.loop.create_task(self.retire())

    def unregister(self, conn: Connection, moved_out: bool) -> None:
        self.dispatcher.counters.add(WS_MOVED_OUT if moved_out else WS_CLOSED)
        metrics.WS_EVENTS.labels("moved_out" if moved_out else "closed").inc()
        metrics.ws_connections().dec()
        self.connections.discard(conn)
        for topic in conn.session.topics:
            subscribers = self.topics.get(topic)
            if subscribers is not None:
                subscribers.discard(conn)
                if not subscribers:
                    del self.topics[topic]

    def subscribe(self, conn: Connection, topic: str) -> None:
        conn.session.topics.setdefault(topic, time.time())
        if conn in self.connections:
            self.topics[topic].add(conn)
        if topic.startswith(JOB_PREFIX):
            self.jobs.wake()

    def unsubscribe(self, conn: Connection, topic: str) -> None:
        conn.session.topics.pop(topic, None)
        subscribers = self.topics.get(topic)
        if subscribers is not None:
            subscribers.discard(conn)
            if not subscribers:
                del self.topics[topic]

    def resume(self, conn: Connection, token: str) -> None:
        """hp_ws_resume: send a reconnected client the publications on its
        topics it has not had since its position (made here or on another
        host of the fleet), from those this worker keeps."""
        try:
            made, seen = calls.parse_position(token)
        except ValueError:
            log.info("[req=%s] hp_ws_resume: not a position; nothing replayed", conn.session.id)
            return
        mine = conn.session.seen
        for publisher, seq in seen.items():
            mine[publisher] = max(mine.get(publisher, 0), seq)
        conn.resumed = lambda at, publisher, since: publisher in seen or at >= made
        self.replay(conn, conn.resumed)

    def replay(self, conn: Connection, wanted) -> None:
        """Send ``conn`` the publications kept here on its topics that
        ``wanted(at, publisher, subscribed_at)``, unless it had them already."""
        topics = conn.session.topics
        for at, publisher, seq, topic, kind, data in list(self.recent):
            since = topics.get(topic)
            if since is not None and wanted(at, publisher, since):
                conn.publication(publisher, seq, kind, data)

    def publish(self, topic: str, kind: int, data: bytes) -> None:
        self.seq += 1
        at = time.time()
        self.deliver(at, self.me, self.seq, topic, kind, data)
        self.bus.send(at, self.me, self.seq, topic, kind, data)
        if self.fleet is not None:
            self.loop.create_task(self.fleet.send(at, self.seq, topic, kind, data))

    def deliver(self, at: float, origin: int, seq: int, topic: str, kind: int, data: bytes) -> None:
        """Send a publication (made at wall-clock time ``at``) to this
        worker's subscribers, and keep it a while: a connection moving here
        from a retiring worker may have missed it there (it left first) and
        here (it arrived later). When it arrives, :meth:`register` replays
        what it has not seen and was subscribed to when it was published.
        A client that resumed gets what it missed even when it arrives here
        after its replay: another worker's publication may still be on the
        bus when the client comes back."""
        recent = self.recent
        recent.append((at, origin, seq, topic, kind, data))
        self.recent_bytes += len(data)
        while recent and (recent[0][0] < at - self.config.ws_replay_seconds or len(recent) > REPLAY_MAX
                          or self.recent_bytes > REPLAY_BYTES):
            self.recent_bytes -= len(recent.popleft()[5])
        for conn in list(self.topics.get(topic, ())):
            since = conn.session.topics.get(topic, at)
            # not one published before it subscribed, arriving late, unless the client resumed from before it
            if at >= since or (conn.resumed is not None and conn.resumed(at, origin, since)):
                conn.publication(origin, seq, kind, data)

    async def keepalive(self) -> None:
        """Ping quiet connections; drop those silent past the ping timeout."""
        interval, timeout = self.config.ws_ping_interval, self.config.ws_ping_timeout
        while True:
            await asyncio.sleep(max(interval / 4, 0.05))
            now = self.loop.time()
            for conn in list(self.connections):
                quiet = now - conn.heard
                if quiet > interval + timeout:
                    log.info("[req=%s] no answer to ping in %d s; dropping", conn.session.id, timeout)
                    conn.transport.abort()
                elif quiet > interval and not conn.pinged:
                    conn.ping()

    async def retire(self) -> None:
        """Move every connection to a worker of the newest release, a batch at
        a time, each at a message boundary; close them with 1001 if there is
        no worker to take them. Batches keep each connection's pause short:
        it stops being read just before it leaves, not when the first does."""
        async with self.moving:
            targets = await self.targets() if self.connections else []
            sent = 0
            while self.connections:
                batch = list(self.connections)[:MOVE_BATCH]
                for conn in batch:
                    conn.start_move()
                deadline = self.loop.time() + MOVE_WAIT
                while not all(c.ready_to_move or c.ended for c in batch) and self.loop.time() < deadline:
                    await asyncio.sleep(0.001)
                ready = [c for c in batch if c.ready_to_move]
                for conn in set(batch) - set(ready):
                    conn.close(1001, "server restarting; reconnect")
                    conn.end(1001, "server restarting")
                if not targets:
                    for conn in ready:
                        conn.close(1001, "server shutting down; reconnect")
                        conn.end(1001, "server shutting down")
                    continue
                await self.move(ready, targets[sent % len(targets)])
                sent += 1

    async def targets(self) -> list[int]:
        """Workers to move to. After a plain SIGHUP the new workers start as
        the old ones stop, so wait a little (TARGET_WAIT) for one to report;
        during a roll they are there already, and at shutdown none comes."""
        release = os.path.basename(os.path.realpath(self.layout.current))
        deadline = self.loop.time() + TARGET_WAIT
        while not (found := transfer.targets(self.layout, release)) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        return found

    async def move(self, ready: list[Connection], pid: int) -> None:
        """Hand connections to worker ``pid`` and wait (at most MOVE_WAIT) until
        it serves them. Detaching happens in one loop step, so nothing is
        written to a connection between its check and its move."""
        moving = [conn.detach() for conn in ready]
        batch = next(self.batches)
        taken = self.acks[batch] = self.loop.create_future()
        try:
            transfer.send(self.layout, pid, {"sender": os.getpid(), "batch": batch,
                                              "connections": [meta for _, meta in moving]},
                          [fd for fd, _ in moving])
        except OSError as e:
            log.error("ws: could not move %d connections to worker %d: %s; they are dropped", len(moving), pid, e)
            taken.set_result(None)
        finally:
            for fd, _ in moving:
                os.close(fd)
        try:
            await asyncio.wait_for(taken, MOVE_WAIT)
        except asyncio.TimeoutError:
            log.warning("ws: worker %d did not confirm %d moved connections within %.0f s", pid, len(moving),
                        MOVE_WAIT)
        finally:
            self.acks.pop(batch, None)
