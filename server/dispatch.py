"""The request path for module routes: match, one call into C, answer.

Module routes skip Flask entirely: a werkzeug router picks the handler and
the request goes to C as one packed buffer in one foreign call. Anything
that is not a module route falls through to the Flask app (reserved
``/_hotplate/`` paths, 404s).
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import threading
from http import HTTPStatus

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule

from . import runtime
from .config import ServerConfig
from .modules import ModuleSet, Route

log = logging.getLogger("hotplate")
REASONS = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}
HEADER_KEYS = ("CONTENT_TYPE", "CONTENT_LENGTH")
# Result codes of hp_rt_dispatch (server/runtime/host_api.h).
RT_OK, RT_HANDLER_ERROR, RT_CRASHED, RT_TIMED_OUT = 0, 1, 2, 3


class Dispatcher:
    """The WSGI app gunicorn serves. Modules are attached per worker process."""

    def __init__(self, fallback, config: ServerConfig):
        self.fallback = fallback
        self.config = config
        self.modules: ModuleSet | None = None
        self.routes: list[Route] = []
        self.adapter = None
        self.local = threading.local()
        self.ids = itertools.count(1)
        self.retiring = False

    def attach(self, modules: ModuleSet) -> None:
        """Serve this module set (called once, in the worker, after loading)."""
        self.routes = modules.routes
        rules = [Rule(r.path, methods=r.methods, endpoint=i) for i, r in enumerate(self.routes)]
        self.adapter = Map(rules).bind("")
        self.modules = modules

    def __call__(self, environ, start_response):
        if self.adapter is None:
            return self.fallback(environ, start_response)
        try:
            index, params = self.adapter.match(environ["PATH_INFO"], environ["REQUEST_METHOD"])
        except NotFound:
            return self.fallback(environ, start_response)
        except HTTPException as e:  # 405 with Allow, 308 for a missing trailing slash
            return e(environ, start_response)
        return self.call(self.routes[index], params, environ, start_response)

    def call(self, route: Route, params: dict, environ, start_response):
        request_id = environ.get("HTTP_X_REQUEST_ID") or f"{os.getpid():x}-{next(self.ids)}"
        if not route.module.ok:
            return self.error(start_response, 503, route, request_id,
                              f"module {route.module.name} is not loaded: {route.module.error}")
        body = self.read_body(environ)
        if isinstance(body, int):
            return self.error(start_response, body, route, request_id,
                              "request body too large" if body == 413 else "bad Content-Length")
        path = environ["PATH_INFO"]
        if "\0" in path:
            return self.error(start_response, 400, route, request_id, "NUL in path")
        headers = [(k[5:] if k.startswith("HTTP_") else k, v) for k, v in environ.items()
                   if k.startswith("HTTP_") or k in HEADER_KEYS]
        parts = [environ["REQUEST_METHOD"], path, environ.get("QUERY_STRING", ""),
                 environ.get("REMOTE_ADDR", ""), request_id, route.path]
        for k, v in params.items():
            parts += (k, v if isinstance(v, str) else str(v))
        for k, v in headers:
            parts += (k, v)
        blob = ("\0".join(parts) + "\0").encode("latin-1", "replace")
        return self.invoke(route, blob, len(params), len(headers), body, request_id, environ, start_response)

    def invoke(self, route, blob, nparams, nheaders, body, request_id, environ, start_response):
        ffi, lib = runtime.load()
        out = getattr(self.local, "result", None)
        if out is None:
            out = self.local.result = ffi.new("hp_rt_result *")
        rc = lib.hp_rt_dispatch(route.module.handle, route.address, blob, len(blob), nparams, nheaders,
                                body, len(body), route.timeout_ms, out)
        try:
            if rc != RT_OK:
                return self.failed(rc, out.signal, route, request_id, start_response)
            raw = ffi.unpack(out.headers, out.headers_len).split(b"\0")
            payload = ffi.unpack(out.body, out.body_len) if environ["REQUEST_METHOD"] != "HEAD" else b""
            headers = [(raw[i].decode("latin-1"), raw[i + 1].decode("latin-1")) for i in range(0, len(raw) - 1, 2)]
            headers.append(("Content-Length", str(out.body_len)))
            start_response(REASONS.get(out.status) or f"{out.status} Unknown", headers)
            return [payload]
        finally:
            lib.hp_rt_release(out)

    def read_body(self, environ) -> bytes | int:
        """The request body, or 413/400 as an int."""
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH")
        if length:
            try:
                n = int(length)
            except ValueError:
                return 400
            return 413 if n > self.config.max_body else stream.read(n)
        if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
            data = stream.read(self.config.max_body + 1)
            return 413 if len(data) > self.config.max_body else data
        return b""

    def failed(self, rc: int, signo: int, route: Route, request_id: str, start_response):
        where = f"module={route.module.name} route={route.path} req={request_id}"
        if rc == RT_HANDLER_ERROR:
            log.warning("[%s] handler %s returned HP_ERROR", where, route.handler)
            return self.error(start_response, 500, route, request_id, f"handler {route.handler} failed")
        if rc == RT_CRASHED:
            name = signal.Signals(signo).name if signo else "a signal"
            log.error("[%s] handler %s crashed with %s; this worker will be replaced", where, route.handler, name)
            self.retire()
            return self.error(start_response, 500, route, request_id, f"handler {route.handler} crashed ({name})")
        if rc == RT_TIMED_OUT:
            log.error("[%s] handler %s ran past its %d ms limit; this worker will be replaced",
                      where, route.handler, route.timeout_ms)
            self.retire()
            return self.error(start_response, 504, route, request_id,
                              f"handler {route.handler} did not answer within {route.timeout_ms} ms")
        return self.error(start_response, 500, route, request_id, "out of memory")

    def retire(self) -> None:
        """Ask gunicorn to replace this worker once its other requests are done:
        a crashed or interrupted handler may have left locks or heap corrupt."""
        if not self.retiring:
            self.retiring = True
            os.kill(os.getpid(), signal.SIGTERM)

    @staticmethod
    def error(start_response, status: int, route: Route, request_id: str, message: str):
        body = json.dumps({"error": message, "module": route.module.name, "route": route.path,
                           "request_id": request_id}).encode()
        start_response(REASONS[status], [("Content-Type", "application/json"),
                                         ("Content-Length", str(len(body))), ("X-Request-Id", request_id)])
        return [body]
