"""The C request core inside a gunicorn worker (server/runtime/serve.c).

In each worker that has a release, C answers every module route: its HTTP
rules (parsing, the route table, limits, errors) live in serve.c alone.
Two ways in:

- the fast path (the default): C threads accept on the worker's listening
  sockets and answer from accept to write;
- with it off (``HOTPLATE_FAST_PATH=0``), under ``hotplate dev``, and for
  every connection C handed over, a gunicorn thread gives C the connection
  and the bytes read so far (:meth:`RequestCore.serve`).

gunicorn keeps the process (spawn, roll, retire, signals) and this
worker's Python side gets what C hands back:

- connections that are not for a module route (Flask, ``/_hotplate/``,
  WebSocket handshakes, heads C refuses), with the bytes already read: they
  go on as gunicorn connections (server/worker.py);
- the publications of HTTP handlers (``hp_publish``), for the hub;
- faults (a crash, a timeout, HP_ERROR), to log, count and retire for.

The C side counts requests per route; :meth:`RequestCore.flush` folds
those counts into the worker's counters and metrics a few times a second.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

from . import libhotplate, metrics
from .contract.report import ERRORS_5XX, REQUESTS
from .libhotplate import CONN_PYTHON as PYTHON

log = logging.getLogger("hotplate")
#: Seconds an idle kept-alive connection stays open once the worker drains
#: (gunicorn's STOP_KEEPALIVE_LINGER): a request arriving meanwhile is
#: answered with Connection: close rather than dropped.
LINGER_S = 2.0


class RequestCore:
    """The worker's request core; ``accepting``: with the fast path's own
    threads on the listening sockets."""

    def __init__(self, worker, dispatcher, accepting: bool):
        self.worker, self.dispatcher, self.accepting = worker, dispatcher, accepting
        self.ffi, self.lib = ffi, lib = libhotplate.load()
        config = dispatcher.config
        if len(metrics.BUCKETS) != lib.HP_RT_BUCKETS:
            raise RuntimeError("server/metrics.py's BUCKETS and serve.c's HP_RT_BUCKETS differ")
        self.routes = list(range(len(dispatcher.routes)))
        for i, r in enumerate(dispatcher.routes):
            ok = r.module.ok
            add(lib, ",".join(r.spec.methods), r.spec.path, r.module.name, r.module.handle if ok else ffi.NULL,
                r.address if ok else ffi.NULL, r.spec.handler, r.spec.timeout_ms, i,
                ffi.NULL if ok else str(r.module.error).encode())
        for i, w in enumerate(dispatcher.socket_routes):  # in the one table too: their handshakes go to Python
            add(lib, "GET", w.spec.path, w.module.name, ffi.NULL, ffi.NULL, "", 0, i, ffi.NULL)
        self.config = ffi.new("hp_rt_serve_config *", {
            "threads": config.threads if accepting else 0, "workers": config.workers,
            "share_fd": getattr(worker.app, "shares", -1), "max_body": config.max_body,
            "head_limit": worker.head_limit,
            "max_request_line": config.max_request_line, "max_header_size": config.max_header_size,
            "max_header_fields": config.max_header_fields,
            "header_timeout_ms": config.header_timeout * 1000, "body_timeout_ms": config.body_timeout * 1000,
            "keepalive_ms": config.keepalive * 1000, "linger_ms": int(LINGER_S * 1000),
            "access_log_fd": access_log_fd(worker),
            "max_requests": worker.max_requests if worker.max_requests < 2 ** 63 else 0,
            "release": dispatcher.modules.release_id.encode(),
            "sanitize_dir": (config.sanitize or "").encode()})
        sockets = worker.sockets if accepting else []
        self.fd = lib.hp_rt_serve_start(ffi.new("int[]", [s.fileno() for s in sockets]) if sockets else ffi.NULL,
                                        len(sockets), self.config, ffi.new("double[]", metrics.BUCKETS))
        if self.fd < 0:
            raise OSError("the request core did not start")
        self.event, self.stuck_event = ffi.new("hp_rt_event *"), ffi.new("hp_rt_event *")
        self.local = threading.local()  # each gunicorn thread's event for serve()
        self.holding = self.drained = False  # holding: the worker counts one connection for C's
        self.stats = ffi.new("hp_rt_route_stats *")
        self.folding = threading.Lock()  # the watchdog's folds and the worker's last one share self.stats
        log.info("worker %d: %d module routes in C, %s", os.getpid(), len(self.routes),
                 "on the fast path" if accepting else "driven by gunicorn's threads")

    def serve(self, sock, client: str, data: bytes) -> tuple[int, bytes, tuple | None]:
        """On a gunicorn thread: C answers the connection's module requests
        (``data``: what was read of it already). Returns IDLE (every request
        answered, keep it alive), CLOSE, or PYTHON with the bytes of a
        request that is not a module route, for gunicorn to go on with, and
        the WebSocket route C's table matched for it (:meth:`socket_target`)."""
        try:
            ev = self.local.event
        except AttributeError:
            ev = self.local.event = self.ffi.new("hp_rt_event *")
        outcome = self.lib.hp_rt_serve_conn(sock.fileno(), data, len(data), client.encode(), 0, ev)
        if outcome != PYTHON:
            return outcome, b"", None
        try:
            return outcome, self.ffi.unpack(ev.data, ev.data_len), self.socket_target(ev)
        finally:
            self.lib.hp_rt_serve_event_free(ev)

    def error_answer(self, minor: int, status: int, message: str, route, request_id: str, headers=()) -> bytes:
        """A whole error answer as C writes its own (hp_rt_error_answer), for
        Python's refusals of a WebSocket handshake."""
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers).encode("latin-1")
        text = message.encode()
        out = self.ffi.new("char[]", 4096 + 6 * len(text) + len(extra))
        n = self.lib.hp_rt_error_answer(minor, status, text, route.module.name.encode(), route.spec.path.encode(),
                                        request_id.encode(), extra or self.ffi.NULL, out, len(out))
        return self.ffi.buffer(out, n)[:] if n >= 0 else b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\n"

    def socket_target(self, ev) -> tuple | None:
        """The WebSocket route C matched for a request it handed over, and
        its parameters (as the path spelt them, latin-1 as gunicorn reads
        a path); None for any other request."""
        if ev.route < 0:
            return None
        parts = self.ffi.unpack(ev.params, ev.params_len).decode("latin-1").split("\0")[:-1] if ev.params else []
        return self.dispatcher.socket_routes[ev.route], dict(zip(parts[0::2], parts[1::2]))

    def accept(self, enabled: bool) -> None:
        self.lib.hp_rt_serve_accept(int(enabled))

    def drain(self) -> None:
        """Stop accepting and close connections as they go idle. Until C
        says it is drained, the worker counts one connection more, so that
        gunicorn's drain goes on taking what C hands over meanwhile."""
        if not self.holding:
            self.holding = True
            self.worker.nr_conns += 0 if self.drained else 1
        self.lib.hp_rt_serve_drain()

    def wait(self, seconds: float) -> int:
        """Wait until C's connections are closed; how many are left."""
        return self.lib.hp_rt_serve_wait(max(0, int(seconds * 1000)))

    def requests(self) -> int:
        return self.lib.hp_rt_serve_requests()

    def take(self, _fileobj=None) -> None:
        """On the worker's main loop, when C has queued something for Python."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass
        ffi, lib, ev = self.ffi, self.lib, self.event
        while lib.hp_rt_serve_next(ev):
            try:
                data = ffi.unpack(ev.data, ev.data_len) if ev.data else b""
                if ev.kind == lib.HP_RT_EV_CONNECTION:
                    self.worker.adopt(socket.socket(fileno=ev.fd), (ffi.string(ev.client).decode(), ev.port), data,
                                      self.socket_target(ev))
                elif ev.kind == lib.HP_RT_EV_PUBLISH:
                    self.dispatcher.publish(data)
                elif ev.kind == lib.HP_RT_EV_DRAINED:  # (max_requests drains C before Python drains)
                    self.drained = True
                    self.worker.nr_conns -= 1 if self.holding else 0
                elif ev.kind == lib.HP_RT_EV_LIMIT:
                    log.info("worker %d: %d requests served (max_requests); replacing it", os.getpid(),
                             self.requests())
                    self.dispatcher.retirement.request("max_requests")
                else:
                    self.fault(ev)
            except Exception:
                log.exception("fast path: handling an event failed")
            finally:
                lib.hp_rt_serve_event_free(ev)

    def fault(self, ev) -> None:
        """Log, count and (for a crash or timeout) retire; C answered the client already."""
        route = self.dispatcher.routes[ev.route]
        report = self.ffi.unpack(ev.data, ev.data_len).decode(errors="replace") if ev.data else None
        self.dispatcher.fault(ev.result, ev.signal, route.module.name, route.spec.path, route.spec.handler,
                              self.ffi.string(ev.request_id).decode(errors="replace"), route.spec.timeout_ms,
                              streamed=bool(ev.streamed), trapped=self.ffi.string(ev.trapped).decode(),
                              report=report)

    def flush(self) -> None:
        """Fold what C counted since the last call into the worker's counters and metrics."""
        st, counters = self.stats, self.dispatcher.counters
        with self.folding:
            for i in self.routes:
                n = self.lib.hp_rt_serve_stats(i, st)
                if n:
                    route = self.dispatcher.routes[i]
                    metrics.requests(route.module.name, route.spec.path, list(st.classes), list(st.buckets),
                                     st.seconds)
                    counters.add(REQUESTS, n)
                    counters.add(ERRORS_5XX, st.classes[4])

    def stuck(self, after_s: float):
        """A call stuck past its deadline outside module code, answered 504 by C:
        (route, request id, whether a gunicorn thread holds it), or None."""
        if not self.lib.hp_rt_serve_abandon_stuck(int(after_s * 1000), self.stuck_event):
            return None
        ev = self.stuck_event
        return (self.dispatcher.routes[ev.route], self.ffi.string(ev.request_id).decode(errors="replace"),
                bool(ev.driven))


def add(lib, methods: str, path: str, module: str, handle, handler, name: str, timeout_ms: int, index: int,
        unavailable) -> None:
    """One route into C's table; a pattern it cannot serve fails the worker's
    start (the manifest refuses those: controller/plan.py)."""
    if lib.hp_rt_serve_route(methods.encode(), path.encode(), module.encode(), handle, handler, name.encode(),
                             timeout_ms, index, unavailable):
        raise RuntimeError(f"route {path}: the request core cannot serve this pattern")


def access_log_fd(worker) -> int:
    """Where gunicorn writes its access log (a file or stdout), for C's lines; -1 for none."""
    if not worker.cfg.accesslog:
        return -1
    for handler in worker.log.access_log.handlers:
        stream = getattr(handler, "stream", None)
        if stream is not None:
            stream.flush()
            return stream.fileno()
    return -1
