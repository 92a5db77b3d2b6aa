"""The gunicorn worker: gthread, with module routes answered directly.

For a module route, building a WSGI environ and going through
``start_response`` costs more than the C handler itself. This worker takes
gunicorn's already-parsed request, runs it through
:meth:`server.dispatch.Dispatcher.handle` and writes the response in one
``sendall``. Everything else (Flask's routes, 405s, access-logged servers)
goes the ordinary WSGI way through ``ThreadWorker.handle_request``.
"""
from __future__ import annotations

import time

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker
from werkzeug.exceptions import HTTPException

from . import report
from .dispatch import REASONS


class HotplateWorker(ThreadWorker):
    """A gthread worker with a direct path for module routes."""

    _date = (0, "")

    def http_date(self) -> str:
        """The Date header, formatted once per second."""
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, util.http_date(now))
        return self._date[1]

    def set_accept_enabled(self, enabled: bool) -> None:
        """Tell the controller the moment this worker stops taking connections:
        a roll is live only once every old worker has."""
        super().set_accept_enabled(enabled)
        if not enabled:
            report.retire(self.app.reports)

    def handle_request(self, req, conn):
        dispatcher = self.wsgi
        path = util.unquote_to_wsgi_str(req.path)
        try:
            target = None if self.cfg.accesslog else dispatcher.match(req.method, path)
        except HTTPException:
            target = None
        if target is None:
            return super().handle_request(req, conn)
        return self.handle_module_request(req, conn, dispatcher, target, path)

    def handle_module_request(self, req, conn, dispatcher, target, path) -> bool:
        """Answer a module route; return whether to keep the connection open.
        Keep-alive rules follow ThreadWorker.handle_request."""
        self.nr += 1
        close = req.should_close() or not self.alive or not self.cfg.keepalive \
            or len(self.keepalived_conns) >= self.max_keepalived
        if self.nr >= self.max_requests:
            if self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            close = True
        headers, request_id, length, chunked = [], None, None, False
        for name, value in req.headers:
            headers += (name, value)
            if name == "X-REQUEST-ID":
                request_id = value
            elif name == "CONTENT-LENGTH":
                length = value
            elif name == "TRANSFER-ENCODING":
                chunked = "chunked" in value.lower()
        body = dispatcher.read_body(length, chunked, req.body)
        client = conn.client[0] if isinstance(conn.client, tuple) else str(conn.client)
        status, reply_headers, payload = dispatcher.handle(
            target[0], target[1], req.method, path, req.query, client,
            dispatcher.request_id(request_id), headers, body)
        head = [f"HTTP/{req.version[0]}.{req.version[1]} {status} {REASONS.get(status, 'Unknown')}\r\n"
                f"Server: gunicorn\r\nDate: {self.http_date()}\r\n"
                f"Connection: {'close' if close else 'keep-alive'}\r\n"]
        head += [f"{k}: {v}\r\n" for k, v in reply_headers]
        head.append("\r\n")
        conn.sock.sendall("".join(head).encode("latin-1") + payload)
        return not close
