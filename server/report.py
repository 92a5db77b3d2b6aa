"""What each worker tells the controller, through files in the run directory.

``<pid>.json``: the release this worker serves and each module's state,
written at boot, and marked retiring once it stops accepting connections. ``<pid>.stats``: request counters in a small shared
memory file, updated on every request and read by the controller's health
gate and metrics without asking the worker anything.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
import time
from pathlib import Path

#: Counter fields and their Prometheus names (hotplate_<name>_total).
METRICS = {
    "requests": "http_requests", "errors_5xx": "http_errors_5xx", "crashes": "http_crashes",
    "timeouts": "http_timeouts", "ws_opened": "websocket_opened", "ws_closed": "websocket_closed",
    "ws_moved_in": "websocket_moved_in", "ws_moved_out": "websocket_moved_out", "ws_messages": "websocket_messages",
}
FIELDS = tuple(METRICS)
REQUESTS, ERRORS_5XX, CRASHES, TIMEOUTS, WS_OPENED, WS_CLOSED, WS_MOVED_IN, WS_MOVED_OUT, WS_MESSAGES = \
    range(len(FIELDS))
_SIZE = 8 * len(FIELDS)


class Counters:
    """Monotonic counters, in memory or in a shared file (one writer: this worker)."""

    def __init__(self, path: Path | None = None):
        self.values = [0] * len(FIELDS)
        if path is None:
            self.buf = bytearray(_SIZE)
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, _SIZE)
            self.buf = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)

    def add(self, field: int) -> None:
        self.values[field] += 1
        struct.pack_into("<Q", self.buf, field * 8, self.values[field])


def read_counters(path: Path) -> dict[str, int]:
    """A worker's counters, or zeros if it has none (yet)."""
    try:
        data = path.read_bytes()
    except OSError:
        return dict.fromkeys(FIELDS, 0)
    if len(data) < _SIZE:
        return dict.fromkeys(FIELDS, 0)
    return dict(zip(FIELDS, struct.unpack_from(f"<{len(FIELDS)}Q", data)))


def publish(directory: Path, release: str | None, modules: list[dict], error: str | None = None,
            hub: bool = False) -> None:
    """Write this worker's boot report (atomically: the controller polls it).

    :param hub: whether the worker takes WebSocket connections and publications
        from other workers (server/websocket/).
    """
    directory.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    info = {"pid": pid, "release": release, "modules": modules, "error": error, "booted_at": time.time(),
            "retiring": False, "hub": hub}
    tmp = directory / f".{pid}.json.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, directory / f"{pid}.json")


def retire(directory: Path) -> None:
    """Mark this worker as no longer accepting connections (it drains, then exits)."""
    path = directory / f"{os.getpid()}.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    info["retiring"] = True
    tmp = directory / f".{os.getpid()}.json.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def remove(directory: Path) -> None:
    for suffix in (".json", ".stats"):
        try:
            (directory / f"{os.getpid()}{suffix}").unlink()
        except OSError:
            pass


def pid_alive(pid: int) -> bool:
    """Whether a process (a worker, the server) still runs: a zombie does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def read_reports(directory: Path) -> dict[int, dict]:
    """Every worker report in the directory, by pid."""
    reports = {}
    for path in directory.glob("*.json"):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        info["counters"] = read_counters(directory / f"{info['pid']}.stats")
        reports[info["pid"]] = info
    return reports
