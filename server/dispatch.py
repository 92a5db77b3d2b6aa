"""The request path for module routes: match, one call into C, answer.

Module routes skip Flask entirely: a static-path dict or a werkzeug router
picks the handler and the request goes to C as one packed buffer in one
foreign call. Anything that is not a module route falls through to the Flask
app (reserved ``/_hotplate/`` paths, 404s).

:meth:`Dispatcher.handle` is independent of WSGI: the WSGI adapter
(:meth:`Dispatcher.__call__`) and the gunicorn worker's direct path
(:mod:`server.worker`) both feed it.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import threading
import time
from http import HTTPStatus
from pathlib import Path

from gunicorn.http.errors import InvalidChunkSize
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule

from . import libhotplate, metrics, sanitize
from .config import RESERVED_PREFIX, ServerConfig
from .contract.layout import Layout
from .contract.release import RELEASE_HEADER
from .contract.report import CRASHES, ERRORS_5XX, REQUESTS, TIMEOUTS, Counters
from .modules import ModuleSet, Route, Socket
from .libhotplate import RT_CRASHED, RT_HANDLER_ERROR, RT_OK, RT_TIMED_OUT
from .websocket.calls import PUBLISH, parse_outbox

log = logging.getLogger("hotplate")
REASONS = {s.value: s.phrase for s in HTTPStatus}
#: why a request body was refused (read_body), by status
BODY_ERRORS = {400: "bad Content-Length", 408: "the request body did not arrive in time", 413: "request body too large"}

#: (status, headers, body): a response, whatever carries it to the client;
#: headers None: the handler streamed it to the client already (server/worker.py Stream).
Reply = tuple[int, list[tuple[str, str]] | None, bytes]


class ChunkTooLarge(ValueError):
    """A chunk's size line names more than the body cap."""


def cap_chunks(stream, limit: int) -> None:
    """Refuse a chunk whose size line is over ``limit`` as soon as it is
    read, instead of waiting for data that would be refused anyway (the
    fast path does the same: serve.c)."""
    reader = getattr(stream, "reader", None)
    parse = getattr(reader, "parse_chunk_size", None)
    if parse is None:
        return

    def bounded(unreader, data=None):
        size, rest = parse(unreader, data)
        if size >= 1 << 64:  # not a size at all (the fast path's parser says so too): malformed, 400
            raise InvalidChunkSize(b"%x" % size)
        if size > limit:
            raise ChunkTooLarge(f"a chunk of {size} bytes")
        return size, rest
    reader.parse_chunk_size = bounded


def transfer_error(codings: list[str]) -> tuple[int, str] | None:
    """What a module route answers for a request's Transfer-Encoding
    (RFC 9112 6.1), the fast path's rule too: only ``chunked`` alone is
    served; chunked after other codings is 501 (none is supported; gunicorn
    refuses the malformed lists and HTTP/1.0 with 400 before this)."""
    if codings and codings != ["chunked"]:
        return 501, f"transfer coding {', '.join(codings)} is not supported; send chunked alone"
    return None


class Dispatcher:
    """The WSGI app gunicorn serves. Modules are attached per worker process."""

    def __init__(self, fallback, config: ServerConfig):
        self.fallback = fallback
        self.config = config
        self.modules: ModuleSet | None = None
        self.routes: list[Route] = []
        self.static: dict[tuple[str, str], Route] = {}
        self.adapter = None
        self.local = threading.local()
        self.ids = itertools.count(1)
        self.retiring = False
        self.counters = Counters()
        self.socket_adapter = None
        self.socket_routes: list[Socket] = []
        self.layout: Layout | None = None  # the state directory (server/contract/layout.py), set by the server
        self.hub = None  # the worker's WebSocket hub (server/websocket/hub.py), once started

    def attach(self, modules: ModuleSet) -> None:
        """Serve this module set (called once, in the worker, after loading)."""
        self.routes = modules.routes
        rules = [Rule(r.spec.path, methods=r.spec.methods, endpoint=i) for i, r in enumerate(self.routes)]
        self.adapter = Map(rules).bind("")
        # Paths without parameters skip the router: one dict lookup.
        self.static = {(m, r.spec.path): r for r in self.routes if "<" not in r.spec.path
                       for m in r.spec.methods + (("HEAD",) if "GET" in r.spec.methods else ())}
        self.socket_routes = modules.sockets
        self.socket_adapter = Map([Rule(w.spec.path, methods=("GET",), endpoint=i)
                            for i, w in enumerate(self.socket_routes)]).bind("")
        self.pid = f"{os.getpid():x}"
        self.ffi, self.lib = libhotplate.load()
        self.sink = self.ffi.callback("hp_rt_stream_fn", self.stream_part)  # kept: C holds the pointer
        self.lib.hp_rt_set_stream_sink(self.sink)
        self.modules = modules

    def match(self, method: str, path: str) -> tuple[Route, dict] | None:
        """The module route for a request, or None for Flask's routes.

        :raises HTTPException: 405 (with Allow) or a 308 to add a trailing slash.
        """
        route = self.static.get((method, path))
        if route is not None:
            return route, {}
        if self.adapter is None:
            return None
        try:
            index, params = self.adapter.match(path, method)
        except NotFound:
            return None
        return self.routes[index], params

    def match_socket(self, path: str) -> tuple[Socket, dict] | None:
        """The WebSocket route for a GET of ``path``, or None."""
        if not self.socket_routes:
            return None
        try:
            index, params = self.socket_adapter.match(path, "GET")
        except HTTPException:
            return None
        return self.socket_routes[index], params

    def request_id(self, given: str | None) -> str:
        return given or f"{self.pid}-{next(self.ids)}"

    def handle(self, route: Route, params: dict, method: str, path: str, query: str, client: str,
               request_id: str, headers: list[str], body: bytes | int) -> Reply:
        """Run one request through its C handler, and count it.

        :param headers: flat [name, value, ...]; names as WSGI keys
            ("HTTP_USER_AGENT") or HTTP names ("USER-AGENT"), C makes them canonical.
        :param body: the body, or the 4xx status reading it ended with.
        """
        started = time.perf_counter()
        reply = self.run(route, params, method, path, query, client, request_id, headers, body)
        metrics.request(route.module.name, route.spec.path, reply[0], time.perf_counter() - started)
        self.counters.add(REQUESTS)
        if reply[0] >= 500:
            self.counters.add(ERRORS_5XX)
        return reply

    def run(self, route: Route, params: dict, method: str, path: str, query: str, client: str,
            request_id: str, headers: list[str], body: bytes | int) -> Reply:
        if not route.module.ok:
            return self.error(503, route, request_id, f"module {route.module.name} is not loaded: {route.module.error}")
        if body.__class__ is int:
            return self.error(body, route, request_id, BODY_ERRORS[body])
        if "\0" in path:
            return self.error(400, route, request_id, "NUL in path")
        blob = self.blob(method, path, query, client, request_id, route.spec.path, params, headers)
        return self.invoke(route, blob, len(params), len(headers) // 2, body, request_id, method == "HEAD")

    @staticmethod
    def blob(method: str, path: str, query: str, client: str, request_id: str, pattern: str,
             params: dict, headers: list[str]) -> bytes:
        """A request as the runtime reads it (see hp_rt_dispatch in host_api.h)."""
        parts = [method, path, query, client, request_id, pattern]
        for k, v in params.items():
            parts += (k, v if v.__class__ is str else str(v))
        parts += headers
        return ("\0".join(parts) + "\0").encode("latin-1", "replace")

    def invoke(self, route: Route, blob: bytes, nparams: int, nheaders: int, body: bytes,
               request_id: str, head: bool) -> Reply:
        ffi, lib = self.ffi, self.lib
        try:
            out = self.local.result
        except AttributeError:
            out = self.local.result = ffi.new("hp_rt_result *")
        stream = getattr(self.local, "stream", None)
        rc = lib.hp_rt_dispatch(route.module.handle, route.address, blob, len(blob), nparams, nheaders,
                                body, len(body), route.spec.timeout_ms, stream is not None and not head, out)
        try:
            if out.streamed:
                return self.streamed(rc, out, route, request_id, stream)
            if rc != RT_OK:
                return self.failed(rc, out.signal, route, request_id)
            if out.outbox_len:
                self.publish(ffi.unpack(out.outbox, out.outbox_len))
            raw = ffi.unpack(out.headers, out.headers_len).decode("latin-1").split("\0")
            length = out.body_len
            headers = list(zip(raw[0:-1:2], raw[1::2]))
            headers.append(("Content-Length", str(length)))
            return out.status, headers, b"" if head else ffi.unpack(out.body, length)
        finally:
            lib.hp_rt_release(out)

    def streamed(self, rc: int, out, route: Route, request_id: str, stream) -> Reply:
        """End a response the handler streamed: its last part and the end of
        the chunked body, or, if it failed midway, nothing (the connection is
        closed, so the client sees it cut short)."""
        if rc == RT_OK:
            if out.outbox_len:
                self.publish(self.ffi.unpack(out.outbox, out.outbox_len))
            try:
                stream.end(self.ffi.buffer(out.body, out.body_len))
            except OSError:
                stream.broken = True
            return out.status, None, b""
        stream.broken = True
        status, _ = self.fault(rc, out.signal, route.module.name, route.spec.path, route.spec.handler, request_id,
                               route.spec.timeout_ms, streamed=True)
        return status, None, b""

    def stream_part(self, first: int, status: int, headers, headers_len: int, data, length: int) -> int:
        """The runtime's stream sink (hp_rt_stream_fn): never raises into C."""
        stream = getattr(self.local, "stream", None)
        try:
            if first:
                raw = self.ffi.unpack(headers, headers_len).decode("latin-1").split("\0") if headers_len else [""]
                stream.head(status, list(zip(raw[0:-1:2], raw[1::2])))
            else:
                stream.part(self.ffi.buffer(data, length))
            return 0
        except Exception:  # the client went away (or no stream): the handler's writes fail from now on
            if stream is not None:
                stream.broken = True
            return -1

    def publish(self, outbox: bytes) -> None:
        """Carry out an HTTP handler's hp_publish calls."""
        for action, kind, _, topic, data in parse_outbox(outbox):
            if action == PUBLISH and self.hub is not None:
                self.hub.publish_threadsafe(topic.decode(), kind, data)

    def read_body(self, length: str | None, chunked: bool, stream) -> bytes | int:
        """The request body, or 413/400 as an int, within the configured cap.
        A chunk that says it is larger than the cap is refused at once."""
        if chunked:
            cap_chunks(stream, self.config.max_body)
        if length:
            try:
                n = int(length)
            except ValueError:
                return 400
            return 413 if n > self.config.max_body else stream.read(n)
        if chunked:
            try:
                data = stream.read(self.config.max_body + 1)
            except ChunkTooLarge:
                return 413
            return 413 if len(data) > self.config.max_body else data
        return b""

    def failed(self, rc: int, signo: int, route: Route, request_id: str) -> Reply:
        status, message = self.fault(rc, signo, route.module.name, route.spec.path, route.spec.handler, request_id,
                                     route.spec.timeout_ms)
        return self.error(status, route, request_id, message)

    def fault(self, rc: int, signo: int, module: str, path: str, handler: str, request_id: str,
              timeout_ms: int, streamed: bool = False, trapped: str | None = None) -> tuple[int, str]:
        """Log and count a handler call that did not return HP_OK (HTTP or
        WebSocket); return the HTTP status and message that describe it.
        ``streamed``: its response had begun, and is cut short. ``trapped``:
        the forbidden call of a SIGSYS crash on another thread (the fast path's)."""
        status, message = self._fault(rc, signo, module, path, handler, request_id, timeout_ms, trapped)
        if streamed:
            log.warning("[module=%s route=%s req=%s] the streamed response was cut short: %s", module, path,
                        request_id, message)
        return status, message

    def _fault(self, rc: int, signo: int, module: str, path: str, handler: str, request_id: str,
               timeout_ms: int, trapped: str | None) -> tuple[int, str]:
        where = f"module={module} route={path} req={request_id}"
        if rc == RT_HANDLER_ERROR:
            log.warning("[%s] handler %s returned HP_ERROR", where, handler)
            return 500, f"handler {handler} failed"
        if rc == RT_CRASHED:
            name = signal.Signals(signo).name if signo else "a signal"
            if signo == signal.SIGSYS:
                name += (f": it called {trapped or self.ffi.string(self.lib.hp_rt_trapped_call()).decode()}, which modules may "
                         "not (deploy.yaml `unconfined:` lifts the filter)")
            elif self.config.sanitize and (found := sanitize.take_report(Path(self.config.sanitize))):
                name += ", sanitizer report:\n" + found
            log.error("[%s] handler %s crashed with %s; this worker will be replaced", where, handler, name)
            self.counters.add(CRASHES)
            metrics.HANDLER_CRASHES.labels(module).inc()
            self.retire()
            return 500, f"handler {handler} crashed ({name})"
        if rc == RT_TIMED_OUT:
            log.error("[%s] handler %s ran past its %d ms limit; this worker will be replaced",
                      where, handler, timeout_ms)
            self.counters.add(TIMEOUTS)
            metrics.HANDLER_TIMEOUTS.labels(module).inc()
            self.retire()
            return 504, f"handler {handler} did not answer within {timeout_ms} ms"
        return 500, "out of memory"

    def retire(self) -> None:
        """Ask gunicorn to replace this worker once its other requests are done:
        a crashed or interrupted handler may have left locks or heap corrupt."""
        if not self.retiring:
            self.retiring = True
            os.kill(os.getpid(), signal.SIGTERM)

    def stamp(self) -> tuple[tuple[str, str], ...]:
        """The header naming the release that answers (none before one is loaded)."""
        return ((RELEASE_HEADER, self.modules.release_id),) if self.modules is not None else ()

    @staticmethod
    def error(status: int, route: Route | Socket, request_id: str, message: str) -> Reply:
        body = json.dumps({"error": message, "module": route.module.name, "route": route.spec.path,
                           "request_id": request_id}).encode()
        return status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                        ("X-Request-Id", request_id)], body

    def __call__(self, environ, start_response):
        """WSGI: module routes through :meth:`handle`, the rest to Flask."""
        try:
            target = self.match(environ["REQUEST_METHOD"], environ["PATH_INFO"])
        except HTTPException as e:
            return e(environ, start_response)
        if target is None:
            if self.modules is None and not environ["PATH_INFO"].startswith(RESERVED_PREFIX):
                # no release here yet (a host joining a fleet): unavailable, not "no such page", so
                # a load balancer tries another host (and a health check keeps it out)
                body = json.dumps({"error": "no release is live on this host yet", "status": 503}).encode()
                start_response("503 Service Unavailable", [("Content-Type", "application/json"),
                                                          ("Content-Length", str(len(body))), ("Retry-After", "1")])
                return [body]
            return self.fallback(environ, start_response)
        headers = [x for k, v in environ.items() if k[:5] == "HTTP_" for x in (k, v)]
        for k in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if k in environ:
                headers += (k, environ[k])
        codings = [c.strip().lower() for c in environ.get("HTTP_TRANSFER_ENCODING", "").split(",") if c.strip()]
        if (refused := transfer_error(codings)) is not None:
            status, reply_headers, payload = self.error(refused[0], target[0], self.request_id(None), refused[1])
            start_response(f"{status} {REASONS.get(status, 'Unknown')}", [*self.stamp(), *reply_headers])
            return [payload]
        body = self.read_body(environ.get("CONTENT_LENGTH"), bool(codings), environ["wsgi.input"])
        status, reply_headers, payload = self.handle(
            target[0], target[1], environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", ""),
            environ.get("REMOTE_ADDR", ""), self.request_id(environ.get("HTTP_X_REQUEST_ID")), headers, body)
        start_response(f"{status} {REASONS.get(status, 'Unknown')}", [*self.stamp(), *reply_headers])
        return [payload]
