"""A worker's WebSocket connections, on one event loop thread.

The hub owns the connections, the topics they subscribe to, the bus to the
other workers and the socket on which moved connections arrive. Gunicorn's
threads talk to it only through ``*_threadsafe`` methods. When the worker
retires, :meth:`Hub.retire` moves every connection to a worker of the
newest release.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import threading
from collections import defaultdict, deque
from pathlib import Path

from wsproto import ConnectionType
from wsproto.connection import Connection as Protocol
from wsproto.events import CloseConnection

from ..config import ServerConfig
from . import transfer
from .bus import Bus
from .calls import Session
from .connection import Connection

log = logging.getLogger("hotplate")
MOVE_WAIT = 2.0  # seconds to wait for every connection to reach a message boundary
REPLAY_WINDOW = 5.0  # seconds of publications kept for connections arriving from other workers
REPLAY_MAX = 10_000


class Hub:
    """One per worker process; see the module docstring."""

    def __init__(self, dispatcher, config: ServerConfig, run_dir: Path, current: Path):
        self.dispatcher = dispatcher
        self.config = config
        self.run_dir = Path(run_dir)
        self.current = Path(current)
        self.sockets = {s.path: s for s in dispatcher.modules.sockets}
        self.connections: set[Connection] = set()
        self.topics: dict[str, set[Connection]] = defaultdict(set)
        self.loop = asyncio.new_event_loop()
        self.bus = Bus(self.loop, self.run_dir, self.deliver)
        self.inbox: socket.socket | None = None
        self.retiring = False
        self.moving = asyncio.Lock()
        self.seq = 0
        self.pauses: list[float] = []  # handoff pauses of connections that arrived, not yet logged
        self.recent: deque[tuple[float, int, int, str, int, bytes]] = deque()

    def start(self) -> None:
        """Run the loop on its own thread; return once both sockets listen."""
        ready = threading.Event()
        thread = threading.Thread(target=self.run, args=(ready,), name="hotplate-ws", daemon=True)
        thread.start()
        ready.wait()

    def run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.set_exception_handler(self.report_error)
        self.inbox = transfer.bind(self.run_dir)
        self.loop.add_reader(self.inbox, self.arrive)
        self.loop.run_until_complete(self.bus.start())
        self.loop.create_task(self.keepalive())
        ready.set()
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
              paused_at: float | None = None) -> None:
        sock.setblocking(False)
        self.loop.create_task(self.loop.connect_accepted_socket(
            lambda: Connection(self, route, session, pending, actions, paused_at), sock))

    def arrive(self) -> None:
        """Connections moved here by a retiring worker."""
        try:
            moved = transfer.receive(self.inbox)
        except OSError as e:
            log.error("ws: %s", e)
            return
        for fd, meta in moved:
            sock = socket.socket(fileno=fd)
            session = Session.from_wire(meta)
            route = self.sockets.get(session.route)
            if route is None or not route.module.ok:
                why = ("the route was removed by a deploy" if route is None
                       else f"module {route.module.name} is not loaded")
                self.refuse(sock, session, why)
                continue
            self.adopt(sock, route, session, [], bytes.fromhex(meta["pending"]), meta["paused_at"])
        if moved and not self.pauses:
            self.loop.call_later(0.5, self.log_pauses)

    def log_pauses(self) -> None:
        """One line per burst of arrivals: how long the moved connections
        went unread (from the old worker's last read to this one's first)."""
        pauses, self.pauses = sorted(self.pauses), []
        if pauses:
            log.info("ws: %d connections arrived; handoff pause p50 %.1f ms, p99 %.1f ms, max %.1f ms",
                     len(pauses), pauses[len(pauses) // 2] * 1000, pauses[int(len(pauses) * 0.99)] * 1000,
                     pauses[-1] * 1000)

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

    def register(self, conn: Connection) -> None:
        self.connections.add(conn)
        for topic in conn.session.topics:
            self.topics[topic].add(conn)
        for _, origin, seq, topic, kind, data in self.recent:
            if topic in conn.session.topics:
                conn.publication(origin, seq, kind, data)
        if self.retiring:
            self.loop.create_task(self.retire())

    def unregister(self, conn: Connection) -> None:
        self.connections.discard(conn)
        for topic in conn.session.topics:
            subscribers = self.topics.get(topic)
            if subscribers is not None:
                subscribers.discard(conn)
                if not subscribers:
                    del self.topics[topic]

    def subscribe(self, conn: Connection, topic: str) -> None:
        conn.session.topics.add(topic)
        if conn in self.connections:
            self.topics[topic].add(conn)

    def unsubscribe(self, conn: Connection, topic: str) -> None:
        conn.session.topics.discard(topic)
        subscribers = self.topics.get(topic)
        if subscribers is not None:
            subscribers.discard(conn)
            if not subscribers:
                del self.topics[topic]

    def publish(self, topic: str, kind: int, data: bytes) -> None:
        self.seq += 1
        self.deliver(os.getpid(), self.seq, topic, kind, data)
        self.bus.send(self.seq, topic, kind, data)

    def deliver(self, origin: int, seq: int, topic: str, kind: int, data: bytes) -> None:
        """Send a publication to this worker's subscribers, and keep it a
        while: a connection moving here from a retiring worker may have
        missed it there (it left first) and here (it arrived later). When
        it arrives, :meth:`register` replays what it has not seen."""
        now = self.loop.time()
        recent = self.recent
        recent.append((now, origin, seq, topic, kind, data))
        while recent and (recent[0][0] < now - REPLAY_WINDOW or len(recent) > REPLAY_MAX):
            recent.popleft()
        for conn in list(self.topics.get(topic, ())):
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
        """Move every connection to a worker of the newest release, each at
        a message boundary; close them with 1001 if there is none."""
        async with self.moving:
            self.retiring = True
            deadline = self.loop.time() + MOVE_WAIT
            while True:
                for conn in self.connections:
                    conn.start_move()
                if all(c.ready_to_move for c in self.connections) or self.loop.time() > deadline:
                    break
                await asyncio.sleep(0.002)
            ready = [c for c in self.connections if c.ready_to_move]
            for conn in self.connections - set(ready):
                conn.close(1001, "server restarting; reconnect")
            targets = transfer.targets(self.run_dir, os.path.basename(os.path.realpath(self.current)))
            if targets:
                self.move(ready, targets)
            else:
                for conn in ready:
                    conn.close(1001, "server shutting down; reconnect")

    def move(self, ready: list[Connection], targets: list[int]) -> None:
        """Hand connections round-robin to ``targets``; all in one loop step,
        so nothing is written to a connection between its check and its move."""
        shares: dict[int, list[tuple[int, dict]]] = defaultdict(list)
        for i, conn in enumerate(ready):
            shares[targets[i % len(targets)]].append(conn.detach())
        for pid, moving in shares.items():
            try:
                transfer.send(self.run_dir, pid, moving)
            except OSError as e:
                log.error("ws: could not move %d connections to worker %d: %s; they are dropped",
                          len(moving), pid, e)
            finally:
                for fd, _ in moving:
                    os.close(fd)
