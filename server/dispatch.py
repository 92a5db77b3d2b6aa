"""What a worker keeps in Python around its module set: the WSGI app for
everything that is not a module route, and the faults to log and count.

Module routes are C's, on every path (server/runtime/serve.c, through
server/core.py): a request reaches this WSGI app only once C's route table
said it is not one of them (Flask's routes, ``/_hotplate/``, 404s). C's
table matches WebSocket routes too; their handshakes are answered in
server/worker.py.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import signal
from pathlib import Path

from . import libhotplate, metrics, sanitize
from .config import RESERVED_PREFIX, ServerConfig
from .contract.layout import Layout
from .contract.release import RELEASE_HEADER
from .contract.report import CRASHES, TIMEOUTS, Counters
from .modules import ModuleSet, Route, Socket
from .retirement import Retirement
from .libhotplate import RT_CRASHED, RT_HANDLER_ERROR, RT_TIMED_OUT
from .websocket.calls import PUBLISH, parse_outbox

log = logging.getLogger("hotplate")


class Dispatcher:
    """The WSGI app gunicorn serves. Modules are attached per worker process."""

    def __init__(self, fallback, config: ServerConfig):
        self.fallback = fallback
        self.config = config
        self.modules: ModuleSet | None = None
        self.routes: list[Route] = []
        self.ids = itertools.count(1)
        self.retirement = Retirement()  # (each worker's own, after the fork)
        self.counters = Counters()
        self.socket_routes: list[Socket] = []
        self.layout: Layout | None = None  # the state directory (server/contract/layout.py), set by the server
        self.hub = None  # the worker's WebSocket hub (server/websocket/hub.py), once started

    def attach(self, modules: ModuleSet) -> None:
        """Serve this module set (called once, in the worker, after loading)."""
        self.routes = modules.routes
        self.socket_routes = modules.sockets
        self.pid = f"{os.getpid():x}"
        self.ffi, self.lib = libhotplate.load()
        self.modules = modules

    def request_id(self, given: str | None) -> str:
        return given or f"{self.pid}-{next(self.ids)}"

    @staticmethod
    def blob(method: str, path: str, query: str, client: str, request_id: str, pattern: str,
             params: dict, headers: list[str]) -> bytes:
        """A WebSocket upgrade request as the runtime reads it (see hp_rt_ws_event in host_api.h)."""
        parts = [method, path, query, client, request_id, pattern]
        for k, v in params.items():
            parts += (k, v if v.__class__ is str else str(v))
        parts += headers
        return ("\0".join(parts) + "\0").encode("latin-1", "replace")

    def publish(self, outbox: bytes) -> None:
        """Carry out an HTTP handler's hp_publish calls."""
        for action, kind, _, topic, data in parse_outbox(outbox):
            if action == PUBLISH and self.hub is not None:
                self.hub.publish_threadsafe(topic.decode(), kind, data)

    def fault(self, rc: int, signo: int, module: str, path: str, handler: str, request_id: str,
              timeout_ms: int, streamed: bool = False, trapped: str | None = None,
              report: str | None = None) -> tuple[int, str]:
        """Log and count a handler call that did not return HP_OK (HTTP or
        WebSocket); return the HTTP status and message that describe it.
        ``streamed``: its response had begun, and is cut short. ``trapped``:
        the forbidden call of a SIGSYS crash on another thread (C's).
        ``report``: the sanitizer's, which C took already."""
        status, message = self._fault(rc, signo, module, path, handler, request_id, timeout_ms, trapped, report)
        if streamed:
            log.warning("[module=%s route=%s req=%s] the streamed response was cut short: %s", module, path,
                        request_id, message)
        return status, message

    def _fault(self, rc: int, signo: int, module: str, path: str, handler: str, request_id: str,
               timeout_ms: int, trapped: str | None, report: str | None) -> tuple[int, str]:
        where = f"module={module} route={path} req={request_id}"
        if rc == RT_HANDLER_ERROR:
            log.warning("[%s] handler %s returned HP_ERROR", where, handler)
            return 500, f"handler {handler} failed"
        if rc == RT_CRASHED:
            name = signal.Signals(signo).name if signo else "a signal"
            if signo == signal.SIGSYS:
                name += (f": it called {trapped or self.ffi.string(self.lib.hp_rt_trapped_call()).decode()}, which modules may "
                         "not (deploy.yaml `unconfined:` lifts the filter)")
            elif self.config.sanitize and (found := report or sanitize.take_report(Path(self.config.sanitize))):
                name += ", sanitizer report:\n" + found
            log.error("[%s] handler %s crashed with %s; this worker will be replaced", where, handler, name)
            self.counters.add(CRASHES)
            metrics.HANDLER_CRASHES.labels(module).inc()
            self.retirement.request(f"handler {handler} crashed")
            return 500, f"handler {handler} crashed ({name})"
        if rc == RT_TIMED_OUT:
            log.error("[%s] handler %s ran past its %d ms limit; this worker will be replaced",
                      where, handler, timeout_ms)
            self.counters.add(TIMEOUTS)
            metrics.HANDLER_TIMEOUTS.labels(module).inc()
            self.retirement.request(f"handler {handler} ran past its deadline")
            return 504, f"handler {handler} did not answer within {timeout_ms} ms"
        return 500, "out of memory"

    def stamp(self) -> tuple[tuple[str, str], ...]:
        """The header naming the release that answers (none before one is loaded)."""
        return ((RELEASE_HEADER, self.modules.release_id),) if self.modules is not None else ()

    def __call__(self, environ, start_response):
        """WSGI, for what C's route table did not take: Flask's routes."""
        if self.modules is None and not environ["PATH_INFO"].startswith(RESERVED_PREFIX):
            # no release here yet (a host joining a fleet): unavailable, not "no such page", so
            # a load balancer tries another host (and a health check keeps it out)
            body = json.dumps({"error": "no release is live on this host yet", "status": 503}).encode()
            start_response("503 Service Unavailable", [("Content-Type", "application/json"),
                                                      ("Content-Length", str(len(body))), ("Retry-After", "1")])
            return [body]
        return self.fallback(environ, start_response)
