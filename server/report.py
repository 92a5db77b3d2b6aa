"""What each worker tells the controller, through files in the run directory.

``<pid>.json``: the release this worker serves and each module's state,
written at boot, and marked retiring once it stops accepting connections.
``<pid>.stats``: request counters in a small shared memory file, updated on
every request and read by the controller's health gate and metrics without
asking the worker anything.

A report is only believed while its process lives: a worker killed with
SIGKILL (the OOM killer) leaves its files behind. The gunicorn master folds
the counters of every dead worker into ``exited.totals`` and removes its
files (:func:`fold_dead`), so crash, timeout and 5xx counts outlive the
workers that had them.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

#: A worker's own counters, for ``status`` and the health gate (the
#: labelled metrics for Prometheus are server/metrics.py's).
FIELDS = ("requests", "errors_5xx", "crashes", "timeouts", "ws_opened", "ws_closed", "ws_moved_in", "ws_moved_out",
          "ws_messages")
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

    def add(self, field: int, n: int = 1) -> None:
        self.values[field] += n
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


#: The version of the ``<pid>.json`` layout; a reader skips reports of another.
FORMAT = 1


@dataclass(frozen=True)
class ModuleReport:
    """One module as a worker loaded it."""

    name: str
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class Report:
    """What one worker says of itself.

    :param hub: whether it takes WebSocket connections and publications from
        other workers (server/websocket/).
    :param retiring: whether it has stopped accepting connections for good.
    :param counters: its request counters (read from ``<pid>.stats``, not stored).
    """

    pid: int
    release: str | None
    modules: tuple[ModuleReport, ...]
    error: str | None
    booted_at: float
    retiring: bool = False
    hub: bool = False
    counters: dict = field(default_factory=dict, compare=False)

    def write(self, directory: Path) -> None:
        """Write atomically: the controller polls these files."""
        data = {"format": FORMAT, **asdict(self)}
        del data["counters"]
        tmp = directory / f".{self.pid}.json.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, directory / f"{self.pid}.json")

    @classmethod
    def read(cls, path: Path) -> "Report | None":
        """A report file, or None if it is unreadable or of another format."""
        try:
            data = json.loads(path.read_text())
            if data.pop("format", None) != FORMAT:
                return None
            data["modules"] = tuple(ModuleReport(**m) for m in data["modules"])
            return cls(**data)
        except (OSError, ValueError, KeyError, TypeError):
            return None


def publish(directory: Path, release: str | None, modules: list[ModuleReport], error: str | None = None,
            hub: bool = False) -> None:
    """Write this worker's boot report."""
    directory.mkdir(parents=True, exist_ok=True)
    Report(os.getpid(), release, tuple(modules), error, time.time(), hub=hub).write(directory)


def retire(directory: Path) -> None:
    """Mark this worker as no longer accepting connections (it drains, then exits)."""
    report = Report.read(directory / f"{os.getpid()}.json")
    if report is not None:
        replace(report, retiring=True).write(directory)


TOTALS = "exited.totals"
#: How many folded pids the totals remember (readers skip their reports).
_FOLDED_PIDS = 4096


def read_totals(directory: Path) -> dict:
    """Counters of every worker that has exited, and which pids they cover."""
    try:
        data = json.loads((directory / TOTALS).read_text())
        return {"counters": {f: int(data["counters"].get(f, 0)) for f in FIELDS}, "pids": list(data["pids"])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {"counters": dict.fromkeys(FIELDS, 0), "pids": []}


def fold_dead(directory: Path) -> None:
    """Add the counters of dead workers to the totals and remove their files.
    The master alone calls this (one writer); totals are written before the
    files go, and readers skip reports of pids the totals already cover."""
    dead = {pid for pid in {int(p.name.split(".")[0]) for p in directory.glob("[0-9]*.*")} if not pid_alive(pid)}
    if not dead:
        return
    totals = read_totals(directory)
    for pid in sorted(dead):
        if pid in totals["pids"]:
            continue
        for name, n in read_counters(directory / f"{pid}.stats").items():
            totals["counters"][name] += n
        totals["pids"].append(pid)
    totals["pids"] = totals["pids"][-_FOLDED_PIDS:]
    tmp = directory / f".{TOTALS}.tmp"
    tmp.write_text(json.dumps(totals))
    os.replace(tmp, directory / TOTALS)
    for pid in dead:
        for suffix in (".json", ".stats"):
            (directory / f"{pid}{suffix}").unlink(missing_ok=True)


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
    """The report of every live worker, by pid (dead workers' files are ignored)."""
    reports = {}
    for path in directory.glob("*.json"):
        report = Report.read(path)
        if report is not None and pid_alive(report.pid):
            reports[report.pid] = replace(report, counters=read_counters(directory / f"{report.pid}.stats"))
    return reports


def read_all(directory: Path) -> tuple[dict[int, dict], dict[str, int]]:
    """Live workers' reports and the exited workers' counter totals, each
    worker counted once even while the master folds it."""
    reports = read_reports(directory)
    totals = read_totals(directory)
    folded = set(totals["pids"])
    return {pid: r for pid, r in reports.items() if pid not in folded}, totals["counters"]
