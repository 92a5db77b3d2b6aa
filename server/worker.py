"""The gunicorn worker: gthread, with module routes answered by C.

Every connection is first C's (server/core.py, server/runtime/serve.c):
its own threads accept on the fast path, and otherwise a pool thread hands
C the connection and the bytes read so far. What C gives back is not a
module route: WebSocket handshakes are answered here, and the socket is
then taken from gunicorn and given to the worker's hub
(server/websocket/hub.py); everything else (Flask's routes, heads gunicorn
refuses) goes the ordinary WSGI way through ``ThreadWorker.handle_request``.
"""
from __future__ import annotations

import html
import logging
import os
import selectors
import socket
import threading
import time
from functools import partial
from http import HTTPStatus
from pathlib import Path

from gunicorn import util
from gunicorn.workers.gthread import TConn, ThreadWorker

from . import metrics
from .contract import report
from .config import RESERVED_PREFIX
from .core import RequestCore
from .libhotplate import CONN_IDLE, CONN_PYTHON, RT_HANDLER_ERROR
from .websocket import calls, handshake

log = logging.getLogger("hotplate")
#: Seconds past a handler's deadline after which the runtime has stopped
#: trying to jump out of it (GRACE_TICKS x TICK_NS in server/runtime/host.c),
#: plus a margin: the call is stuck outside module code for good.
STUCK_AFTER_S = 1.5
HEAD_CHUNK = 65536
REASONS = {s.value: s.phrase for s in HTTPStatus}


def head_ends(data: bytes) -> bool:
    """Whether a request head is all there: an empty line, CRLF or a bare LF
    (which gunicorn then refuses with 400, as the fast path does: one
    answer, at once, on both paths)."""
    return b"\r\n\r\n" in data or b"\n\n" in data or b"\n\r\n" in data


def resident_bytes() -> int:
    """This process's resident memory (RSS)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class HotplateWorker(ThreadWorker):
    """A gthread worker whose module routes are C's, with WebSockets handed to the hub."""

    _date = (0, "")
    #: connections whose request head is still coming in (read on the main thread)
    heads: set
    #: resident memory in bytes past which this worker is replaced (0: never);
    #: set per release in server/gunicorn_app.py
    max_rss = 0
    #: the C request core (server/core.py), in a worker that serves a release
    core: RequestCore | None = None

    # -- request heads, read on the main thread (slow clients) ----------------

    def enqueue_req(self, conn) -> None:
        """Read the request's head here, without blocking, before a pool
        thread takes the connection: a client that trickles its headers
        (slowloris) then holds a file descriptor, not one of the few
        threads, and is closed after ``header_timeout`` seconds."""
        if conn.parser is not None and conn.parser.unreader.buf.getvalue():
            return super().enqueue_req(conn)  # pipelined bytes are read already
        try:  # the usual case, a keep-alive request arrived whole: straight to a thread
            if head_ends(conn.sock.recv(HEAD_CHUNK, socket.MSG_PEEK | socket.MSG_DONTWAIT)):
                conn.data_ready = True
                return super().enqueue_req(conn)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return super().enqueue_req(conn)  # the thread meets the error and closes
        conn.head = bytearray()
        conn.head_deadline = time.monotonic() + self.wsgi.config.header_timeout
        conn.sock.setblocking(False)
        self.heads.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_head_readable, conn))

    def on_head_readable(self, conn, _sock) -> None:
        try:
            data = conn.sock.recv(HEAD_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.head += data
        if data and not head_ends(conn.head) and len(conn.head) <= self.head_limit:
            return
        self.drop_head(conn)
        if not conn.head:  # closed before a request
            self.nr_conns -= 1
            conn.close()
            return
        conn.prefetched, conn.data_ready = bytes(conn.head), True
        super().enqueue_req(conn)

    def drop_head(self, conn) -> None:
        self.heads.discard(conn)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def murder_keepalived(self, force: bool = False) -> None:
        """gunicorn's keep-alive timeouts, and ours for heads too slow to come."""
        super().murder_keepalived(force)
        now = time.monotonic()
        for conn in [c for c in self.heads if force or c.head_deadline < now]:
            self.drop_head(conn)
            self.nr_conns -= 1
            conn.close()

    def handle(self, conn):
        """In a pool thread: C answers the module routes, from the head read
        already (and what gunicorn read ahead); gunicorn parses what C
        gives back."""
        head = conn.__dict__.pop("prefetched", None) or b""
        core = None if conn.__dict__.pop("pythons", False) else self.core  # C said so already
        if core is not None and not (self.wsgi.config.dev_errors and Path(self.wsgi.config.dev_errors).exists()):
            conn.init()  # blocking, with gunicorn's parser for what comes back
            try:
                outcome, head, conn.socket_target = core.serve(conn.sock, self.client(conn),
                                                               head + conn.parser.unreader.take_buffered())
            except OSError:
                return False
            if outcome != CONN_PYTHON:
                return outcome == CONN_IDLE and self.alive
        if head:
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(head)
        return super().handle(conn)

    @property
    def head_limit(self) -> int:
        """A head longer than gunicorn allows is handed on for its 431."""
        c = self.wsgi.config
        return c.max_request_line + c.max_header_fields * (c.max_header_size + 2) + 4

    def http_date(self) -> str:
        """The Date header, formatted once per second."""
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, util.http_date(now))
        return self._date[1]

    def set_accept_enabled(self, enabled: bool) -> None:
        """Accept in C when the fast path runs (gunicorn's poller no longer
        sees the listeners). When the worker stops for good, its retirement
        begins (server/retirement.py)."""
        if self.core is None or not self.core.accepting:
            super().set_accept_enabled(enabled)
        elif enabled != self._accepting:
            self.core.accept(enabled)
            self._accepting = enabled
        if not enabled and not self.alive:
            self.wsgi.retirement.begin()

    def adopt(self, sock: socket.socket, client: tuple[str, int], data: bytes, socket_target) -> None:
        """A connection the fast path hands over (not a module route), with
        the bytes it read and the WebSocket route C matched, if any: served
        here like any gunicorn connection, its request not matched again."""
        sock.setblocking(True)
        conn = TConn(self.cfg, sock, client, sock.getsockname())
        conn.prefetched, conn.data_ready, conn.pythons, conn.socket_target = data, True, True, socket_target
        self.nr_conns += 1
        super().enqueue_req(conn)

    def start_core(self) -> None:
        """In a worker with a release: C's request core, accepting on its own
        threads unless the fast path is off or this is ``hotplate dev``
        (whose error page and sanitizer runs want gunicorn's threads)."""
        d = self.wsgi
        if d.modules is None:
            return
        c = d.config
        self.core = RequestCore(self, d, accepting=c.fast_path and not c.dev_errors and not c.sanitize)
        self.poller.register(self.core.fd, selectors.EVENT_READ, self.core.take)

    def retirement_steps(self) -> list:
        """What a worker does as it stops for good, in order: tell the
        controller at once (a roll is live only once every old worker has),
        drain C's core, start moving WebSocket connections to the new
        generation."""
        steps = [] if self.app.channel is None else [self.app.channel.retire]
        if self.core is not None:
            steps.append(self.core.drain)
        if self.wsgi.hub is not None:
            steps.append(self.wsgi.hub.retire_threadsafe)
        return steps

    def is_parent_alive(self) -> bool:
        """A worker whose master died stops for good, like a retired one: it
        reports retiring at once, so that a roll onto the restarted master's
        workers does not wait for it to drain."""
        if super().is_parent_alive():
            return True
        self.alive = False
        return False

    def run(self) -> None:
        """After gunicorn's own drain, move the WebSockets opened meanwhile,
        and exit only once every connection has left."""
        self.abandoned: set = set()
        self.heads = set()
        self.start_core()
        self.wsgi.retirement.steps = self.retirement_steps()
        threading.Thread(target=self.watchdog, name="watchdog", daemon=True).start()
        started = time.monotonic()
        super().run()
        self.wsgi.retirement.begin()  # (a worker whose master died leaves the loop without it)
        if self.core is not None:
            self.core.wait(self.cfg.graceful_timeout - (time.monotonic() - started))
            self.core.flush()  # what C counted since the watchdog's last fold: a crash's own 500, say
        hub = self.wsgi.hub
        if hub is not None:
            moved = hub.retire_threadsafe()
            deadline = time.monotonic() + self.cfg.graceful_timeout
            while not moved.done() and time.monotonic() < deadline:
                self.notify()
                time.sleep(0.01)
        if self.abandoned:
            # A stuck handler thread never ends: exiting normally would wait for it.
            logging.shutdown()
            os._exit(0)

    def watchdog(self) -> None:
        """Answer for handlers stuck past their deadline where the runtime
        cannot reach them (a lock, a restarted system call): 504 to the
        client (C's), and this worker replaced once its other requests are
        done. Replace the worker too once its memory passes its ceiling."""
        while True:
            time.sleep(0.1)
            if self.core is not None:
                self.core.flush()
                if (stuck := self.core.stuck(STUCK_AFTER_S)) is not None:  # C answered its 504
                    route, request_id, driven = stuck
                    self.abandoned.add(request_id)
                    if driven:  # a pool thread holds it for good: gunicorn's drain must not wait for it
                        self.method_queue.defer(self.forget_stuck)
                    self.stuck(route, request_id)
            retirement = self.wsgi.retirement
            if self.max_rss and retirement.reason is None and (rss := resident_bytes()) > self.max_rss:
                log.warning("worker %d uses %d MiB, over its %d MiB ceiling (limits.max_rss); replacing it once "
                            "its requests are done", os.getpid(), rss >> 20, self.max_rss >> 20)
                retirement.request("memory past limits.max_rss")

    def stuck(self, route, request_id: str) -> None:
        """Log and count a handler stuck past its deadline, and replace this worker."""
        log.error("[module=%s route=%s req=%s] handler %s is stuck past its %d ms limit outside the module's "
                  "code (a lock or a system call); answering 504 and replacing this worker",
                  route.module.name, route.spec.path, request_id, route.spec.handler, route.spec.timeout_ms)
        self.wsgi.counters.add(report.TIMEOUTS)
        metrics.HANDLER_TIMEOUTS.labels(route.module.name).inc()
        self.wsgi.retirement.request(f"handler {route.spec.handler} is stuck")

    def forget_stuck(self) -> None:
        """On the main thread: the stuck connection no longer holds up the drain."""
        self.nr_conns -= 1

    def handle_request(self, req, conn):
        dispatcher = self.wsgi
        path = util.unquote_to_wsgi_str(req.path)
        if dispatcher.config.dev_errors and not path.startswith(RESERVED_PREFIX):
            page = dev_error_page(dispatcher.config.dev_errors)
            if page is not None:
                self.nr += 1
                return self.respond(req, conn, 500, [("Content-Type", "text/html; charset=utf-8"),
                                                     ("Content-Length", str(len(page)))], page, False)
        if (socket_target := conn.__dict__.pop("socket_target", None)) is not None:  # C's table matched it
            return self.handle_websocket(req, conn, dispatcher, socket_target, path)
        return super().handle_request(req, conn)

    def respond(self, req, conn, status: int, headers, payload: bytes, keep: bool) -> bool:
        """An answer of Python's own: a refused handshake, the dev error page."""
        head = [f"HTTP/{req.version[0]}.{req.version[1]} {status} {REASONS.get(status, 'Unknown')}\r\n"
                f"Server: gunicorn\r\nDate: {self.http_date()}\r\n"
                f"Connection: {'keep-alive' if keep else 'close'}\r\n"]
        head += [f"{k}: {v}\r\n" for k, v in (*self.wsgi.stamp(), *headers)]
        head.append("\r\n")
        conn.sock.sendall("".join(head).encode("latin-1") + payload)
        return keep

    def refuse(self, req, conn, status: int, route, request_id: str, message: str, headers=()) -> bool:
        """Refuse a handshake with the answer C writes for every error (one shape of it)."""
        conn.sock.sendall(self.core.error_answer(req.version[1], status, message, route, request_id, headers))
        return False

    @staticmethod
    def client(conn) -> str:
        return conn.client[0] if isinstance(conn.client, tuple) else str(conn.client)

    def handle_websocket(self, req, conn, dispatcher, target, path) -> bool:
        """Answer a handshake and give the socket to the hub (never kept by gunicorn)."""
        self.nr += 1
        route, params = target
        flat, by_name = [], {}
        for name, value in req.headers:
            flat += (name, value)
            by_name[name] = f"{by_name[name]}, {value}" if name in by_name else value
        conn_id = dispatcher.request_id(None)
        try:
            reply_headers, subprotocol = handshake.accept(req.method, req.version, by_name, route.spec.subprotocols)
        except handshake.Refused as e:
            return self.refuse(req, conn, e.status, route, conn_id, str(e), e.headers)
        unavailable = (f"module {route.module.name} is not loaded: {route.module.error}" if not route.module.ok
                       else "this worker's WebSocket hub did not start; see the server log" if dispatcher.hub is None
                       else None)
        if unavailable:
            return self.refuse(req, conn, 503, route, conn_id, unavailable)
        blob = dispatcher.blob(req.method, path, req.query, self.client(conn), conn_id, route.spec.path, params, flat)
        session = calls.Session(conn_id, route.spec.path, blob, len(params), len(flat) // 2, subprotocol)
        opened = calls.call(route, session, calls.OPEN)
        if not opened.ok:
            status, message = 403, f"refused by {route.spec.symbols['open']}"
            if opened.result != RT_HANDLER_ERROR:
                status, message = dispatcher.fault(opened.result, opened.signal, route.module.name, route.spec.path,
                                                   route.spec.symbols["open"], conn_id, route.spec.timeout_ms)
            return self.refuse(req, conn, status, route, conn_id, message)
        head = "HTTP/1.1 101 Switching Protocols\r\n" + "".join(f"{k}: {v}\r\n" for k, v in reply_headers) + "\r\n"
        conn.sock.sendall(head.encode("latin-1"))
        pending = conn.parser.unreader.take_buffered()
        sock, conn.sock = conn.sock, socket.socket(socket.AF_UNIX)  # gunicorn closes the stand-in
        dispatcher.hub.open_threadsafe(sock, route, session, opened.actions, pending)
        return False


def dev_error_page(path: str) -> bytes | None:
    """Under ``hotplate dev``, while the latest save does not build: a page
    with what went wrong (the deploy's log, gcc's diagnostics included),
    for every request until a good save removes the file."""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return None
    return (f"<!doctype html><meta charset=utf-8><title>hotplate dev: build failed</title>"
            f"<h1>Your last save did not go live</h1><p>The previous version is still loaded; "
            f"fix this and save again.</p><pre>{html.escape(text)}</pre>").encode()
