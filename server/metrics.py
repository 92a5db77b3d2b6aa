"""The workers' metrics, with prometheus_client in multiprocess mode (issue 12).

Each worker writes its own files under ``STATE/run/metrics``
(``PROMETHEUS_MULTIPROC_DIR``, which the controller sets for the server);
the controller's ``/metrics`` merges them, exited workers' counts included.
(The per-worker counters that ``status`` and the health gate read are the
worker's report: server/contract/report.py.) Names and labels: docs/reference/metrics.md.

The directory is root's: the master makes a worker's files before it drops
root (:func:`prepare`), and the controller reads them as untrusted
(:class:`WorkerMetrics`): a file module code filled with garbage costs its
own series, never the scrape. The master itself maps none of them, so a
full disk cannot fault it.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import struct
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from . import untrusted

log = logging.getLogger("hotplate")

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


@functools.cache
def ws_connections() -> Gauge:
    """Open WebSocket connections. Made on first use, in a worker: a gauge
    without labels maps its file as soon as it exists, and the master must
    map none."""
    return Gauge("hotplate_websocket_connections", "Open WebSocket connections", multiprocess_mode="livesum")


def declare(routes) -> None:
    """Every module's crash and timeout series, and every route's 5xx, at 0
    from a worker's start: an alert on a series that is missing never fires."""
    for route in routes:
        HANDLER_CRASHES.labels(route.module.name)
        HANDLER_TIMEOUTS.labels(route.module.name)
        HTTP_REQUESTS.labels(route.module.name, route.spec.path, "5xx")


def request(module: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(module, route, f"{status // 100}xx").inc()
    HTTP_DURATION.labels(module, route).observe(seconds)


def requests(module: str, route: str, classes: list[int], buckets: list[int], seconds: float) -> None:
    """Many requests at once, as the fast path counted them (server/core.py):
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


#: The file kinds a worker writes (prometheus_client names them KIND_PID.db).
KINDS = ("counter", "histogram", "gauge_livesum")
#: What the master allocates for each (prometheus_client's own first size).
INITIAL_SIZE = 1 << 16
#: The largest file a scrape reads (each doubles as it fills).
MAX_FILE = 64 << 20
_FILE = re.compile(r"(counter|histogram|gauge_livesum)_([1-9][0-9]{0,9})\.db")


def prepare(directory: Path, pid: int, uid: int | None) -> None:
    """Make worker ``pid``'s metric files, each new (never through a link),
    allocated now and handed to the worker's account (``uid``; None: this
    process's own), in the new worker before it drops root."""
    dfd = untrusted.open_dir(directory)
    try:
        for kind in KINDS:
            name = f"{kind}_{pid}.db"
            try:
                os.unlink(name, dir_fd=dfd)  # a dead worker's of the same pid: its counts are history
            except FileNotFoundError:
                pass
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            try:
                os.posix_fallocate(fd, 0, INITIAL_SIZE)
                if uid is not None:
                    os.fchown(fd, uid, -1)
            finally:
                os.close(fd)
    finally:
        os.close(dfd)


class WorkerMetrics:
    """The workers' files merged as prometheus_client merges them, each read
    as untrusted: a file that is not what prometheus_client writes is
    skipped, logged with its name."""

    def __init__(self, directory: Path):
        self.directory = directory

    def collect(self):
        metrics: dict[str, Metric] = {}
        try:
            dfd = untrusted.open_dir(self.directory)
        except OSError:
            return []
        try:
            for name in sorted(os.listdir(dfd)):
                if m := _FILE.fullmatch(name):
                    try:
                        _add(metrics, m[1], m[2], _entries(untrusted.read(dfd, name, MAX_FILE) or b""))
                    except (ValueError, struct.error) as e:
                        log.warning("metrics: %s skipped: %s", name, e)
        finally:
            os.close(dfd)
        return MultiProcessCollector._accumulate_metrics(metrics, True)


def _entries(data: bytes) -> list[tuple[str, str, tuple, str, float, float]]:
    """Every (metric, sample name, labels, help, value, timestamp) of one
    file in prometheus_client's layout, bounds checked at each step.

    :raises ValueError: for anything else."""
    if len(data) < 8:
        return []
    used, out, pos = struct.unpack_from("i", data, 0)[0], [], 8
    if not 8 <= used <= len(data):
        raise ValueError(f"it says {used} bytes are used, of {len(data)}")
    while pos < used:
        n = struct.unpack_from("i", data, pos)[0]
        padded = n + (8 - (n + 4) % 8)
        if n <= 0 or pos + 4 + padded + 16 > used:
            raise ValueError(f"a key of {n} bytes at offset {pos} does not fit")
        metric, sample, labels, help_text = json.loads(data[pos + 4:pos + 4 + n].decode())
        if not (isinstance(metric, str) and isinstance(sample, str) and isinstance(help_text, str)
                and isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values())):
            raise ValueError(f"a key at offset {pos} is not a metric's")
        if "le" in labels:
            float(labels["le"])
        value, timestamp = struct.unpack_from("dd", data, pos + 4 + padded)
        out.append((metric, sample, tuple(sorted(labels.items())), help_text, value, timestamp))
        pos += 4 + padded + 16
    return out


def _add(metrics: dict[str, Metric], kind: str, pid: str, entries) -> None:
    """Add one file's entries as prometheus_client's _read_metrics does."""
    for metric_name, sample, labels, help_text, value, timestamp in entries:
        typ = kind.split("_")[0]
        metric = metrics.get(metric_name)
        if metric is None:
            metric = metrics[metric_name] = Metric(metric_name, help_text, typ)
        if metric.type != typ:
            continue
        if typ == "gauge":
            metric._multiprocess_mode = kind.split("_", 1)[1]
            metric.add_sample(sample, labels + (("pid", pid),), value, timestamp)
        else:
            metric.add_sample(sample, labels, value)
