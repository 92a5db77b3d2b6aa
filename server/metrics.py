"""The workers' metrics, with prometheus_client in multiprocess mode (issue 12).

Each worker writes its own files under ``STATE/run/metrics``
(``PROMETHEUS_MULTIPROC_DIR``, which the controller sets for the server);
the controller's ``/metrics`` merges them, exited workers' counts included.
(The per-worker counters that ``status`` and the health gate read are the
worker's report: server/report.py.) Names and labels are in the README.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Request durations, in seconds: a C handler answers in microseconds, a slow one in seconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

HTTP_REQUESTS = Counter("hotplate_http_requests", "Requests to module routes, by status class",
                        ["module", "route", "code"])
HTTP_DURATION = Histogram("hotplate_http_request_duration_seconds", "Time in a module route's handler call",
                          ["module", "route"], buckets=BUCKETS)
HANDLER_CRASHES = Counter("hotplate_handler_crashes", "Handler calls that crashed (each replaces its worker)",
                          ["module"])
HANDLER_TIMEOUTS = Counter("hotplate_handler_timeouts", "Handler calls stopped at their time limit", ["module"])
WS_EVENTS = Counter("hotplate_websocket_connections_events", "WebSocket connections opened, closed, moved in "
                    "and out (between worker generations)", ["event"])
WS_MESSAGES = Counter("hotplate_websocket_messages", "WebSocket messages to module handlers", ["module", "route"])
WS_CONNECTIONS = Gauge("hotplate_websocket_connections", "Open WebSocket connections", multiprocess_mode="livesum")


def request(module: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(module, route, f"{status // 100}xx").inc()
    HTTP_DURATION.labels(module, route).observe(seconds)


def requests(module: str, route: str, classes: list[int], buckets: list[int], seconds: float) -> None:
    """Many requests at once, as the fast path counted them (server/fastpath.py):
    per status class (1xx first), per duration bucket (each request in the
    first that holds it, +Inf last) and their total time. prometheus_client
    keeps its histogram that way too, but offers only observe(), one request
    at a time: its per-bucket values are added to directly."""
    for i, n in enumerate(classes):
        if n:
            HTTP_REQUESTS.labels(module, route, f"{i + 1}xx").inc(n)
    child = HTTP_DURATION.labels(module, route)
    for i, n in enumerate(buckets):
        if n:
            child._buckets[i].inc(n)
    child._sum.inc(seconds)
