"""The C fast path inside a gunicorn worker (server/runtime/serve.c).

In each worker that has a release, C threads accept on the worker's
listening sockets and answer module routes from accept to write; gunicorn
keeps the process (spawn, roll, retire, signals) and this worker's Python
side gets what C hands back:

- connections that are not for a module route (Flask, ``/_hotplate/``,
  WebSocket handshakes, heads C refuses), with the bytes already read: they
  go on as gunicorn connections (server/worker.py);
- the publications of HTTP handlers (``hp_publish``), for the hub;
- faults (a crash, a timeout, HP_ERROR), to log, count and retire for, as
  on the Python path.

The C side counts requests per route; :meth:`FastPath.flush` folds those
counts into the worker's counters and metrics a few times a second.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

from . import libhotplate, metrics
from .contract.report import ERRORS_5XX, REQUESTS

log = logging.getLogger("hotplate")
#: Seconds an idle kept-alive connection stays open once the worker drains
#: (gunicorn's STOP_KEEPALIVE_LINGER): a request arriving meanwhile is
#: answered with Connection: close rather than dropped.
LINGER_S = 2.0


class FastPath:
    def __init__(self, worker, dispatcher):
        self.worker, self.dispatcher = worker, dispatcher
        self.ffi, self.lib = ffi, lib = libhotplate.load()
        config = dispatcher.config
        if len(metrics.BUCKETS) != lib.HP_RT_BUCKETS:
            raise RuntimeError("server/metrics.py's BUCKETS and serve.c's HP_RT_BUCKETS differ")
        self.routes = [i for i, r in enumerate(dispatcher.routes) if r.module.ok and lib.hp_rt_serve_route(
            ",".join(r.spec.methods).encode(), r.spec.path.encode(), r.module.handle, r.address,
            r.spec.handler.encode(), r.spec.timeout_ms, i) == 0]
        self.config = ffi.new("hp_rt_serve_config *", {
            "threads": config.threads, "max_body": config.max_body, "head_limit": worker.head_limit,
            "max_request_line": config.max_request_line, "max_header_size": config.max_header_size,
            "max_header_fields": config.max_header_fields,
            "header_timeout_ms": config.header_timeout * 1000, "body_timeout_ms": config.body_timeout * 1000,
            "keepalive_ms": config.keepalive * 1000, "linger_ms": int(LINGER_S * 1000),
            "access_log_fd": access_log_fd(worker),
            "max_requests": worker.max_requests if worker.max_requests < 2 ** 63 else 0,
            "release": dispatcher.modules.release_id.encode()})
        listeners = ffi.new("int[]", [s.fileno() for s in worker.sockets])
        self.fd = lib.hp_rt_serve_start(listeners, len(worker.sockets), self.config,
                                        ffi.new("double[]", metrics.BUCKETS))
        if self.fd < 0:
            raise OSError("the fast path did not start")
        self.event, self.stuck_event = ffi.new("hp_rt_event *"), ffi.new("hp_rt_event *")
        self.draining = self.drained = False
        self.stats = ffi.new("hp_rt_route_stats *")
        self.folding = threading.Lock()  # the watchdog's folds and the worker's last one share self.stats
        log.info("worker %d: %d of %d module routes on the fast path", os.getpid(), len(self.routes),
                 len(dispatcher.routes))

    def accept(self, enabled: bool) -> None:
        self.lib.hp_rt_serve_accept(int(enabled))

    def drain(self) -> None:
        """Stop accepting and close connections as they go idle. Until C
        says it is drained, the worker counts one connection more, so that
        gunicorn's drain goes on taking what C hands over meanwhile."""
        if not self.draining:
            self.draining = True
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
                    self.worker.adopt(socket.socket(fileno=ev.fd), (ffi.string(ev.client).decode(), ev.port), data)
                elif ev.kind == lib.HP_RT_EV_PUBLISH:
                    self.dispatcher.publish(data)
                elif ev.kind == lib.HP_RT_EV_DRAINED:  # (max_requests drains C before Python drains)
                    self.drained = True
                    self.worker.nr_conns -= 1 if self.draining else 0
                elif ev.kind == lib.HP_RT_EV_LIMIT:
                    log.info("worker %d: %d requests served (max_requests); replacing it", os.getpid(),
                             self.requests())
                    self.worker.alive = False
                else:
                    self.fault(ev)
            except Exception:
                log.exception("fast path: handling an event failed")
            finally:
                lib.hp_rt_serve_event_free(ev)

    def fault(self, ev) -> None:
        """Log, count and (for a crash or timeout) retire, as the Python path does."""
        route = self.dispatcher.routes[ev.route]
        self.dispatcher.fault(ev.result, ev.signal, route.module.name, route.spec.path, route.spec.handler,
                              self.ffi.string(ev.request_id).decode(errors="replace"), route.spec.timeout_ms,
                              streamed=bool(ev.streamed), trapped=self.ffi.string(ev.trapped).decode())

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
        """A call stuck past its deadline outside module code, answered 504 by C: (route, request id), or None."""
        if not self.lib.hp_rt_serve_abandon_stuck(int(after_s * 1000), self.stuck_event):
            return None
        ev = self.stuck_event
        return self.dispatcher.routes[ev.route], self.ffi.string(ev.request_id).decode(errors="replace")


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
